//! The console's administrators' pages over HTTP, against the real daemon: Directory sync
//! (with and without `[ldap]`, against a real slapd), Tokens and Operators, and the role
//! matrix (a helpdesk operator gets 403 on every one of these routes).

use provisiond::domain::audit::Query;
use provisiond::domain::directory::{RunKind, RunStatus, StartedBy};
use provisiond::domain::operators::Role;
use provisiond::domain::tokens::Scope;
use serde_json::Value;

use crate::console::{browser, services, Console, Page};
use crate::helpers::TestApp;
use crate::slapd::{people, Slapd, PEOPLE};

/// The text of the element with `id`, up to its first tag's end (a `<code id=…>` of a secret).
fn text_of(page: &Page, id: &str) -> String {
    let start = format!("id=\"{id}\">");
    let after = page.body.split(&start).nth(1).unwrap_or_else(|| panic!("no #{id} in {}", page.body));
    after.split('<').next().unwrap().to_string()
}

/// Text as the pages escape it (askama's HTML escaping).
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// A request to the JSON API with `token`.
fn api_status(app: &TestApp, token: &str) -> u16 {
    app.call_with("GET", "/api/v1/sync/runs", None, &[("Authorization", &format!("Bearer {token}"))]).status
}

fn audit_events(app: &TestApp, event_type: &str) -> Vec<Value> {
    let q = Query { event_type: Some(event_type.into()), offset: 0, limit: 100, ..Query::default() };
    services(app).audit.list(&q).unwrap().1
}

const ADMIN_GETS: &[&str] = &[
    "/console/sync",
    "/console/events",
    "/console/tokens",
    "/console/tokens/robot/revoke",
    "/console/operators",
    "/console/operators/carol/disable",
    "/console/operators/carol/reset",
];

const ADMIN_POSTS: &[&str] = &[
    "/console/sync/run",
    "/console/sync/preview",
    "/console/tokens",
    "/console/tokens/robot/revoke",
    "/console/operators",
    "/console/operators/carol/disable",
    "/console/operators/carol/reset",
];

#[test]
fn console_admin_pages_open_for_an_admin_and_a_helpdesk_operator_gets_403_on_every_route_and_no_links() {
    let app = TestApp::spawn();
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Cli, "test", None);
    let svc = services(&app);
    svc.tokens.create("robot", &[Scope::Scim]).unwrap();
    svc.operators.add("carol", Role::Helpdesk, &actor).unwrap();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let helpdesk = Console::sign_in(&app, "harry", Role::Helpdesk);

    let users = admin.get("/console/users");
    for link in ["href=\"/console/sync\"", "href=\"/console/events\"", "href=\"/console/tokens\"", "href=\"/console/operators\""]
    {
        assert!(users.body.contains(link), "an admin's nav lacks {link}");
    }
    for (path, heading) in [
        ("/console/sync", "<h1>Directory sync</h1>"),
        ("/console/events", "<h1>Events</h1>"),
        ("/console/tokens", "<h1>Tokens</h1>"),
        ("/console/operators", "<h1>Operators</h1>"),
    ] {
        let page = admin.get(path);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(heading), "{path}: {}", page.body);
        assert!(page.body.contains("aria-current=\"page\""), "{path}");
        let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(csp, "default-src 'self'; frame-ancestors 'none'; form-action 'self'", "{path}");
        assert!(!page.body.contains("<script>") && !page.body.contains(" style="), "{path}: no inline script or style");
    }
    assert!(admin.get("/console/tokens").body.contains("data-token=\"robot\""));
    assert!(admin.get("/console/operators").body.contains("data-operator=\"carol\""));

    let users = helpdesk.get("/console/users");
    assert_eq!(users.status, 200);
    for link in [
        "/console/sync",
        "/console/events",
        "/console/tokens",
        "/console/operators",
        "Directory sync",
        "Events",
        "Tokens",
        "Operators",
    ] {
        assert!(!users.body.contains(link), "a helpdesk operator's nav shows {link}");
    }
    for path in ADMIN_GETS {
        let page = helpdesk.get(path);
        assert_eq!(page.status, 403, "GET {path}");
        assert!(page.body.contains("This page is for administrators"), "GET {path}: {}", page.body);
    }
    let form = [("full", "true"), ("name", "sneaky"), ("scope", "admin"), ("role", "admin")];
    for path in ADMIN_POSTS {
        let page = helpdesk.post(path, &form);
        assert_eq!(page.status, 403, "POST {path}");
        assert!(page.body.contains("This page is for administrators"), "POST {path}: {}", page.body);
    }
    // Nothing was done.
    let tokens: Vec<String> = svc.tokens.list().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(tokens, ["robot", "test"], "robot still there, none added (test: the suite's own token)");
    let operators = svc.operators.list().unwrap();
    assert!(!operators.iter().any(|o| o.name == "sneaky"));
    let carol = operators.iter().find(|o| o.name == "carol").unwrap();
    assert_eq!(carol.state, provisiond::domain::operators::State::SetupPending);
    assert_eq!(svc.runs.list(0, 10).unwrap().0, 0);
}

#[test]
fn console_admin_token_is_shown_once_works_on_the_api_and_stops_working_when_revoked() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/tokens");
    for scope in ["scim", "mfa", "admin"] {
        assert!(page.body.contains(&format!("name=\"scope\" value=\"{scope}\"")), "{scope}");
    }

    let created = admin.post("/console/tokens", &[("name", "robot"), ("scope", "admin"), ("scope", "scim")]);
    assert_eq!(created.status, 200, "{}", created.body);
    let secret = text_of(&created, "token-secret");
    assert!(secret.starts_with("pvd_"), "{secret}");
    assert!(created.body.contains("only this once"));
    assert!(created.body.contains("data-copy=\"token-secret\""), "the copy button");
    assert!(!created.body.contains("<script>"), "no inline script");
    assert_eq!(api_status(&app, &secret), 200, "the new token works on the JSON API");

    let list = admin.get("/console/tokens");
    assert!(list.body.contains("data-token=\"robot\""));
    assert!(list.body.contains("scim, admin") || list.body.contains("admin, scim"), "{}", list.body);
    assert!(!list.body.contains(&secret), "the secret is shown once only");

    // Refusals stay on the page with the form as it was.
    let none = admin.post("/console/tokens", &[("name", "empty")]);
    assert_eq!(none.status, 400);
    assert!(none.body.contains("At least one scope is needed"), "{}", none.body);
    let taken = admin.post("/console/tokens", &[("name", "robot"), ("scope", "mfa")]);
    assert_eq!(taken.status, 409);
    assert!(taken.body.contains(&escaped("A token called \"robot\" already exists")), "{}", taken.body);
    assert!(taken.body.contains("value=\"robot\""));

    // Without JavaScript, Revoke leads to a confirmation page; the list has the same as a dialog.
    assert!(list.body.contains("<dialog id=\"revoke-robot\""));
    let confirm = admin.get("/console/tokens/robot/revoke");
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains("Revoke token robot?") && confirm.body.contains("<dialog id=\"revoke-robot\""),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("action=\"/console/tokens/robot/revoke\""));
    assert_eq!(api_status(&app, &secret), 200, "asking is not revoking");

    let revoked = admin.post("/console/tokens/robot/revoke", &[]);
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body.contains("revoked: it no longer works"));
    assert!(!revoked.body.contains("data-token=\"robot\""));
    assert_eq!(api_status(&app, &secret), 401, "a revoked token is refused");
    assert_eq!(admin.post("/console/tokens/robot/revoke", &[]).status, 404);
}

#[test]
fn console_admin_names_with_markup_appear_as_text() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    for name in ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>"] {
        let created = admin.post("/console/tokens", &[("name", name), ("scope", "scim")]);
        assert_eq!(created.status, 200, "{}", created.body);
        let added = admin.post("/console/operators", &[("name", name), ("role", "helpdesk")]);
        assert_eq!(added.status, 200, "{}", added.body);
        for page in [created, added, admin.get("/console/tokens"), admin.get("/console/operators")] {
            assert!(!page.body.contains("<script>alert(1)"), "raw markup in {}", page.body);
            assert!(!page.body.contains("<img src=x"), "raw markup in {}", page.body);
            assert!(page.body.contains("alert(1)"), "the name is shown");
        }
    }
    let tokens = admin.get("/console/tokens").body;
    assert!(tokens.contains(&format!("<td>{}</td>", escaped("<script>alert(1)</script>"))), "{tokens}");
    assert!(tokens.contains(&format!("<td>{}</td>", escaped("\"><img src=x onerror=alert(1)>"))), "{tokens}");
    // The name travels percent-encoded in the paths of its actions.
    let path = "/console/tokens/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/revoke";
    assert!(tokens.contains(&format!("href=\"{path}\"")), "{tokens}");
    assert_eq!(admin.get(path).status, 200);
    assert_eq!(admin.post(path, &[]).status, 200);
    assert!(!services(&app).tokens.list().unwrap().iter().any(|t| t.name == "<script>alert(1)</script>"));
    let operator = "/console/operators/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/disable";
    assert!(admin.get("/console/operators").body.contains(&format!("href=\"{operator}\"")));
    assert_eq!(admin.post(operator, &[]).status, 200);
    let disabled = services(&app).operators.list().unwrap();
    let o = disabled.iter().find(|o| o.name == "\"><img src=x onerror=alert(1)>").unwrap();
    assert_eq!(o.state, provisiond::domain::operators::State::Disabled);

    // A slash in a name is part of the name, not of the path.
    assert_eq!(admin.post("/console/tokens", &[("name", "ops/robot"), ("scope", "mfa")]).status, 200);
    assert!(admin.get("/console/tokens").body.contains("href=\"/console/tokens/ops%2Frobot/revoke\""));
    assert_eq!(admin.post("/console/tokens/ops%2Frobot/revoke", &[]).status, 200);
    assert!(!services(&app).tokens.list().unwrap().iter().any(|t| t.name == "ops/robot"));

    // Names the domain refuses are refused on the page, in its words.
    let refused = admin.post("/console/operators", &[("name", " padded "), ("role", "admin")]);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("Operator name must not begin or end with spaces"), "{}", refused.body);
    let refused = admin.post("/console/tokens", &[("name", &"x".repeat(101)), ("scope", "scim")]);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("Token name must be 1 to 100 characters"), "{}", refused.body);
}

#[test]
fn console_admin_operator_added_gets_a_setup_link_that_opens_the_setup_page_and_is_audited() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.post("/console/operators", &[("name", "bob"), ("role", "helpdesk")]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Operator bob added (helpdesk)"), "{}", page.body);
    let link = text_of(&page, "setup-link");
    let expected = format!("http://{}/console/setup/", app.config.server.listen);
    assert!(link.starts_with(&expected), "{link} (the link the command line prints)");
    let path = &link[link.find("/console/setup/").unwrap()..];
    let mut setup = browser().get(&format!("{}{path}", app.base)).call().unwrap();
    assert_eq!(setup.status().as_u16(), 200);
    let body = setup.body_mut().read_to_string().unwrap();
    assert!(body.contains("bob"), "{body}");

    let list = admin.get("/console/operators");
    assert!(list.body.contains("data-operator=\"bob\""));
    assert!(list.body.contains("setup pending"));
    let events = audit_events(&app, "operator.added");
    let bob = events.iter().find(|e| e["detail"]["operator"] == "bob").expect("operator.added for bob");
    assert_eq!((bob["origin"].as_str(), bob["actor"].as_str()), (Some("console"), Some("alice")));

    let duplicate = admin.post("/console/operators", &[("name", "bob"), ("role", "admin")]);
    assert_eq!(duplicate.status, 409);
    assert!(duplicate.body.contains(&escaped("An operator called \"bob\" already exists")), "{}", duplicate.body);
    let no_role = admin.post("/console/operators", &[("name", "eve"), ("role", "root")]);
    assert_eq!(no_role.status, 400);
    assert!(no_role.body.contains("Choose a role"));
}

#[test]
fn console_admin_disable_ends_the_operators_sessions_reset_gives_a_new_link_and_nobody_acts_on_itself() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let harry = Console::sign_in(&app, "harry", Role::Helpdesk);
    assert_eq!(harry.get("/console/users").status, 200);

    let list = admin.get("/console/operators");
    assert!(list.body.contains("<dialog id=\"disable-harry\""), "{}", list.body);
    let confirm = admin.get("/console/operators/harry/disable");
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Disable operator harry?"));
    assert_eq!(harry.get("/console/users").status, 200, "asking is not disabling");

    let done = admin.post("/console/operators/harry/disable", &[]);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Operator harry disabled"));
    let after = harry.get("/console/users");
    assert_eq!((after.status, after.location.as_str()), (303, "/console/sign-in"), "its session ended");
    let events = audit_events(&app, "operator.disabled");
    assert_eq!((events[0]["origin"].as_str(), events[0]["actor"].as_str()), (Some("console"), Some("alice")));

    // Reset: a new setup link; the operator is set up again through it.
    let reset = admin.post("/console/operators/harry/reset", &[]);
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert!(reset.body.contains("Operator harry reset"));
    let link = text_of(&reset, "setup-link");
    let path = &link[link.find("/console/setup/").unwrap()..];
    assert_eq!(browser().get(&format!("{}{path}", app.base)).call().unwrap().status().as_u16(), 200);

    // Not on itself: no buttons on its row, and a refusal that says why.
    let list = admin.get("/console/operators");
    assert!(!list.body.contains("/console/operators/alice/"), "{}", list.body);
    assert!(list.body.contains("You cannot disable or reset yourself here"));
    for action in ["disable", "reset"] {
        let refused = admin.post(&format!("/console/operators/alice/{action}"), &[]);
        assert_eq!(refused.status, 403);
        assert!(refused.body.contains(&format!("You cannot {action} your own operator from the console")), "{}", refused.body);
        assert_eq!(admin.get(&format!("/console/operators/alice/{action}")).status, 403);
    }
    assert_eq!(admin.get("/console/users").status, 200, "still signed in");
    assert_eq!(admin.post("/console/operators/nobody/disable", &[]).status, 404);
}

#[test]
fn console_admin_sync_page_without_ldap_says_so_and_offers_no_buttons() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/sync");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("LDAP sync is not configured (no [ldap] section in the configuration)"), "{}", page.body);
    for button in ["Run incremental now", "Run full now", "Preview"] {
        assert!(!page.body.contains(button), "{button} shown without [ldap]");
    }
    let refused = admin.post("/console/sync/run", &[("full", "true")]);
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("LDAP sync is not configured"));
}

#[test]
fn console_admin_sync_with_ldap_previews_runs_full_now_and_says_when_a_run_is_in_progress() {
    let slapd = Slapd::start(&people(0..4));
    let app = crate::sync::spawn(&slapd, |l| l.safety.max_deactivate_percent = 50.0);
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/sync");
    for button in ["Run incremental now", "Run full now", "Preview"] {
        assert!(page.body.contains(button), "{button} missing: {}", page.body);
    }
    assert!(page.body.contains("No run yet."));

    // Preview: a dry run listing its actions; nothing written, nothing recorded.
    let preview = admin.post("/console/sync/preview", &[("full", "true")]);
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("Preview of a full run"), "{}", preview.body);
    for i in 0..4 {
        assert!(
            preview.body.contains(&format!("<td>create</td><td>user{i}</td><td>uid=user{i},{PEOPLE}</td>")),
            "{}",
            preview.body
        );
    }
    assert!(preview.body.contains("4 created"));
    assert_eq!(app.filter("userName pr")["totalResults"], 0, "a preview writes nothing");
    assert_eq!(app.get("/api/v1/sync/runs").body["totalResults"], 0, "a preview is not recorded");

    // Run full now: the run starts and appears in the list, started by the console.
    let started = admin.post("/console/sync/run", &[("full", "true")]);
    assert_eq!(started.status, 200, "{}", started.body);
    assert!(started.body.contains("Started a full run"), "{}", started.body);
    let id = started.body.split("(run <code>").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert!(started.body.contains(&format!("data-run=\"{id}\"")), "the started run is in the list");
    let run = crate::sync::wait(&app, &id);
    assert_eq!(
        (run["status"].as_str(), run["startedBy"].as_str(), run["created"].as_i64()),
        (Some("succeeded"), Some("console"), Some(4))
    );
    let page = admin.get("/console/sync");
    assert!(page.body.contains(&format!("data-run=\"{id}\"")));
    assert!(page.body.contains("<span>4 created</span>"), "{}", page.body);
    assert!(page.body.contains(">succeeded<"));
    assert_eq!(app.filter("userName pr")["totalResults"], 4);

    // A departed entry: the preview of a full run names the user it would deactivate.
    slapd.modify(&format!("dn: uid=user3,{PEOPLE}\nchangetype: delete\n"));
    let preview = admin.post("/console/sync/preview", &[("full", "true")]);
    assert_eq!(preview.status, 200, "{}", preview.body);
    let id3 = app.filter("userName eq \"user3\"")["Resources"][0]["id"].as_str().unwrap().to_string();
    assert!(preview.body.contains(&format!("<td>deactivate</td><td>user3 (id {id3})</td>")), "{}", preview.body);
    assert_eq!(app.filter("active eq false")["totalResults"], 0, "a preview deactivates nobody");

    // A run in progress (here: another holder of the lease) is said plainly.
    let runs = services(&app).runs;
    let mut held = runs.begin(RunKind::Incremental, StartedBy::Cli, false, chrono::Duration::minutes(5)).unwrap();
    for path in ["/console/sync/run", "/console/sync/preview"] {
        let busy = admin.post(path, &[("full", "false")]);
        assert_eq!(busy.status, 409, "{path}");
        assert!(busy.body.contains("A sync run is already in progress"), "{}", busy.body);
    }
    assert!(admin.get("/console/sync").body.contains("A sync run is in progress"));
    held.status = RunStatus::Failed;
    held.finished_at = Some(held.started_at);
    runs.finish(&held, false).unwrap();
    let incremental = admin.post("/console/sync/run", &[("full", "false")]);
    assert_eq!(incremental.status, 200);
    assert!(incremental.body.contains("Started an incremental run"), "{}", incremental.body);
}
