//! The console's Users page and resets over HTTP: search, filters, sort and paging; the reset
//! of one user, of ticked users and of every user a search finds; CSRF; output escaping.

use provisiond::config::percent_encode as enc;
use provisiond::domain::operators::Role;
use serde_json::json;

use crate::console::Console;
use crate::helpers::TestApp;

/// The rows of a Users page, by userName, in order.
fn rows(html: &str) -> Vec<String> {
    html.split("<tr data-user=\"").skip(1).map(|r| unescape(r.split('"').next().unwrap())).collect()
}

fn unescape(s: &str) -> String {
    s.replace("&#60;", "<").replace("&#62;", ">").replace("&#34;", "\"").replace("&#39;", "'").replace("&#38;", "&")
}

fn user(app: &TestApp, name: &str, display: &str, email: &str) -> String {
    let mut body = json!({"userName": name, "displayName": display, "emails": [{"value": email, "primary": true}]});
    if let Some(family) = display.split(' ').nth(1) {
        body["name"] = json!({"familyName": family});
    }
    let u = app.create_user(&body);
    u["id"].as_str().unwrap().to_string()
}

fn mfa_status(app: &TestApp, id: &str) -> String {
    app.get(&format!("/api/v1/users/{id}/mfa")).body["status"].as_str().unwrap().to_string()
}

#[test]
fn the_users_page_searches_filters_sorts_and_pages_and_shows_an_invalid_filter_inline() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Helpdesk);
    let ada = user(&app, "ada", "Ada Lovelace", "ada@example.org");
    user(&app, "grace", "Grace Hopper", "grace@navy.example");
    user(&app, "alan", "Alan Turing", "alan@example.org");
    crate::mfa::enrol(&app, &ada);
    app.call(
        "PATCH",
        &format!("/scim/v2/Users/{}", user(&app, "zed", "Zed", "zed@example.org")),
        Some(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        })),
    );

    let page = c.get("/console/users");
    assert_eq!(page.status, 200);
    assert_eq!(rows(&page.body), ["ada", "grace", "alan", "zed"], "creation order");
    assert!(page.body.contains("4 users"), "the total");
    // Case-insensitive search of the start of the userName, display name, given or family name, or email.
    assert_eq!(rows(&c.get("/console/users?q=GRACE").body), ["grace"]);
    assert_eq!(rows(&c.get(&format!("/console/users?q={}", enc("ada LOVE"))).body), ["ada"]);
    assert_eq!(rows(&c.get("/console/users?q=Hopper").body), ["grace"], "the family name");
    assert_eq!(rows(&c.get("/console/users?q=grace%40navy").body), ["grace"], "an email address");
    assert_eq!(rows(&c.get("/console/users?q=a").body), ["ada", "alan"]);
    assert!(rows(&c.get("/console/users?q=ovelace").body).is_empty(), "the start, not any part");
    assert_eq!(rows(&c.get("/console/users?mfa=enrolled").body), ["ada"]);
    assert_eq!(rows(&c.get("/console/users?mfa=none").body), ["grace", "alan", "zed"]);
    assert_eq!(rows(&c.get("/console/users?active=false").body), ["zed"]);
    assert_eq!(rows(&c.get("/console/users?source=scim&active=true").body), ["ada", "grace", "alan"]);
    assert!(rows(&c.get("/console/users?source=ldap").body).is_empty());
    assert_eq!(rows(&c.get(&format!("/console/users?filter={}", enc("displayName sw \"A\""))).body), ["ada", "alan"]);
    // Sorting, both ways.
    assert_eq!(rows(&c.get("/console/users?sort=userName").body), ["ada", "alan", "grace", "zed"]);
    assert_eq!(rows(&c.get("/console/users?sort=userName&order=desc").body), ["zed", "grace", "alan", "ada"]);
    assert_eq!(rows(&c.get("/console/users?sort=displayName").body), ["ada", "alan", "grace", "zed"]);

    // An invalid filter is said on the page, not as an error page.
    let bad = c.get(&format!("/console/users?filter={}", enc("userName eq")));
    assert_eq!(bad.status, 200);
    assert!(bad.body.contains("The filter is not valid"), "{}", bad.body);
    assert!(rows(&bad.body).is_empty());
    let unknown = c.get(&format!("/console/users?filter={}", enc("nosuch eq \"x\"")));
    assert_eq!(unknown.status, 200);
    assert!(unknown.body.contains("The filter is not valid") || unknown.body.contains("nosuch"), "{}", unknown.body);

    // Paging: 50 a page, with the total.
    for i in 0..52 {
        user(&app, &format!("p{i:02}"), "Paged", &format!("p{i}@example.org"));
    }
    let first = c.get("/console/users?q=Paged");
    assert_eq!(rows(&first.body).len(), 50);
    assert!(first.body.contains("52 users") && first.body.contains("Page 1 of 2"), "{}", first.body);
    let second = c.get("/console/users?q=Paged&page=2");
    assert_eq!(rows(&second.body), ["p50", "p51"]);
    assert!(second.body.contains("Page 2 of 2"));
    let all = c.get("/console/users?q=Paged&per=200");
    assert_eq!(rows(&all.body).len(), 52);
    assert!(all.body.contains("Page 1 of 1"));
    assert_eq!(rows(&c.get("/console/users?q=Paged&per=7").body).len(), 50, "only the offered page sizes");
}

#[test]
fn an_operator_resets_one_user_then_ticked_users_then_every_user_a_search_finds_each_audited_as_console() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "helen", Role::Helpdesk);
    let ids: Vec<String> =
        ["u1", "u2", "u3", "u4", "v1", "v2"].iter().map(|n| user(&app, n, n, &format!("{n}@example.org"))).collect();
    for id in &ids {
        crate::mfa::enrol(&app, id);
    }

    // One user: the confirmation names the user and what happens; no reason, no reset.
    let confirm = c.get(&format!("/console/users/reset?id={}", ids[0]));
    assert_eq!(confirm.status, 200);
    for text in [
        "Reset user multi-factor authentication",
        "<strong>u1</strong>",
        "backup codes are removed",
        "enrol again",
        "cannot be undone",
    ] {
        assert!(confirm.body.contains(text), "{text}: {}", confirm.body);
    }
    let no_reason = c.post("/console/users/reset", &[("id", &ids[0]), ("reason", "  ")]);
    assert_eq!(no_reason.status, 400);
    assert!(no_reason.body.contains("Reason is required"), "{}", no_reason.body);
    assert_eq!(mfa_status(&app, &ids[0]), "enrolled");

    let done = c.post("/console/users/reset", &[("id", &ids[0]), ("reason", "lost phone"), ("q", "u")]);
    assert_eq!(done.status, 200);
    assert!(done.body.contains("1 reset</strong>: u1"), "{}", done.body);
    assert_eq!(rows(&done.body), ["u1", "u2", "u3", "u4"], "back on the same search");
    assert!(done.body.contains("status-pending\">pending"));
    assert_eq!(mfa_status(&app, &ids[0]), "pending");
    assert_eq!(rows(&c.get("/console/users?mfa=pending").body), ["u1"], "the MFA filter follows the reset");
    assert_eq!(rows(&c.get("/console/users?mfa=enrolled&q=u").body), ["u2", "u3", "u4"]);

    // Ticked users (one of them unknown): the confirmation counts them; the summary names them.
    let confirm = c.post("/console/users/reset/confirm", &[("id", &ids[1]), ("id", &ids[2]), ("id", "gone")]);
    assert!(
        confirm.body.contains("Reset users multi-factor authentication") && confirm.body.contains("3 users"),
        "{}",
        confirm.body
    );
    assert_eq!(mfa_status(&app, &ids[1]), "enrolled", "a confirmation resets nothing");
    let done = c.post("/console/users/reset", &[("id", &ids[1]), ("id", &ids[2]), ("id", "gone"), ("reason", "phones stolen")]);
    assert!(done.body.contains("2 reset</strong>: u2, u3"), "{}", done.body);
    assert!(done.body.contains("1 not found: gone"), "{}", done.body);

    // Every user a search finds.
    let confirm = c.get("/console/users/reset?all=1&q=v");
    assert!(confirm.body.contains("2 users") && confirm.body.contains("v1, v2"), "{}", confirm.body);
    let done = c.post("/console/users/reset", &[("all", "1"), ("q", "v"), ("reason", "team v re-enrols")]);
    assert!(done.body.contains("2 reset</strong>: v1, v2"), "{}", done.body);
    assert_eq!(mfa_status(&app, &ids[3]), "enrolled", "u4 was in no reset");

    let events = app.get("/api/v1/audit?type=mfa.reset").body;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    for e in events {
        assert_eq!((e["origin"].as_str(), e["actor"].as_str()), (Some("console"), Some("helen")), "{e}");
        assert!(e["requestId"].as_str().is_some_and(|id| !id.is_empty()), "the console request is named: {e}");
    }
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"lost phone") && reasons.contains(&"team v re-enrols"), "{reasons:?}");
}

#[test]
fn a_reset_of_more_users_than_the_bulk_limit_is_refused_on_the_confirmation_and_nothing_is_reset() {
    let app = TestApp::spawn_with(|c| c.mfa.max_bulk_reset = 2);
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let ids: Vec<String> = (0..3).map(|i| user(&app, &format!("b{i}"), "B", &format!("b{i}@example.org"))).collect();
    for id in &ids {
        crate::mfa::enrol(&app, id);
    }
    let page = c.get("/console/users");
    assert!(page.body.contains("Narrow the search to at most 2 users"), "{}", page.body);
    let refused = c.post("/console/users/reset", &[("all", "1"), ("reason", "too many")]);
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("at most 2 per request"), "{}", refused.body);
    assert!(ids.iter().all(|id| mfa_status(&app, id) == "enrolled"));
}

#[test]
fn a_reset_without_the_sessions_csrf_token_or_from_another_site_is_refused_with_403() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let other = Console::sign_in(&app, "bob", Role::Admin);
    let id = user(&app, "victim", "Victim", "victim@example.org");
    crate::mfa::enrol(&app, &id);
    let form = [("id", id.as_str()), ("reason", "csrf")];
    assert_eq!(c.post_raw("/console/users/reset", &form).status, 403, "no token");
    let mut with_other = vec![("csrf", other.csrf.as_str())];
    with_other.extend_from_slice(&form);
    assert_eq!(c.post_raw("/console/users/reset", &with_other).status, 403, "another session's token");
    let foreign = crate::console::browser()
        .post(&format!("{}/console/users/reset", app.base))
        .header("cookie", &c.cookie)
        .header("origin", "https://evil.example")
        .send_form([("csrf", c.csrf.as_str()), ("id", id.as_str()), ("reason", "csrf")])
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403, "foreign Origin");
    // The header htmx sends works as well as the form field.
    let by_header = crate::console::browser()
        .post(&format!("{}/console/users/reset", app.base))
        .header("cookie", &c.cookie)
        .header("x-csrf-token", &c.csrf)
        .send_form([("id", id.as_str()), ("reason", "by header")])
        .unwrap();
    assert_eq!(by_header.status().as_u16(), 200);
    assert_eq!(mfa_status(&app, &id), "pending", "only the last, well-formed request reset");
    assert_eq!(app.get("/api/v1/audit?type=mfa.reset").body["events"].as_array().unwrap().len(), 1);
}

#[test]
fn markup_in_user_names_shows_as_text_on_the_list_the_user_page_the_confirmation_and_the_summary() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(1)>";
    let id = user(&app, script, img, "x@example.org");
    let pages = [
        c.get("/console/users"),
        c.get(&format!("/console/users?q={}", enc("<script"))),
        c.get(&format!("/console/users/{id}")),
        c.get(&format!("/console/users/reset?id={id}")),
        c.post("/console/users/reset", &[("id", &id), ("reason", script)]),
        c.get(&format!("/console/users/{id}")),
    ];
    for page in pages {
        assert_eq!(page.status, 200);
        assert!(!page.body.contains(script) && !page.body.contains("<img src=x"), "unescaped markup: {}", page.body);
        assert!(page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the name shows as text: {}", page.body);
    }
}

#[test]
fn a_users_page_shows_its_attributes_factor_and_events() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Helpdesk);
    let u = app.create_user(&json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": "kate", "name": {"givenName": "Kate"}, "title": "Engineer",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Platform"}
    }));
    let id = u["id"].as_str().unwrap();
    crate::mfa::enrol(&app, id);
    let page = c.get(&format!("/console/users/{id}"));
    assert_eq!(page.status, 200);
    for text in [
        "name.givenName",
        "Kate",
        "Engineer",
        "department",
        "Platform",
        "id=\"mfa-status\">enrolled",
        "Backup codes left",
        "mfa.enrolled",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    let missing = c.get("/console/users/no-such-user");
    assert_eq!(missing.status, 404);
}

#[test]
fn a_broad_search_pages_in_creation_order_with_its_total_like_a_narrow_one() {
    // Over a thousand matches take another plan on SQLite (a walk in creation order); the pages
    // and the total must not tell.
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Helpdesk);
    let users = crate::console::services(&app).users;
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Cli, "test", None);
    let names: Vec<String> =
        (0..1_530).map(|i| if i % 3 == 0 { format!("other{i:04}") } else { format!("dense{i:04}") }).collect();
    for name in &names {
        let body = json!({"schemas": [crate::helpers::USER_SCHEMA], "userName": name});
        users.create(&body, provisiond::domain::users::Source::Scim, &actor).unwrap();
    }
    let dense: Vec<String> = names.iter().filter(|n| n.starts_with("dense")).cloned().collect();
    assert_eq!(dense.len(), 1_020);
    let first = c.get("/console/users?q=DENSE&per=1000");
    assert!(first.body.contains("1020 users") && first.body.contains("Page 1 of 2"), "{}", first.body);
    assert_eq!(rows(&first.body), dense[..1000]);
    assert_eq!(rows(&c.get("/console/users?q=dense&per=1000&page=2").body), dense[1000..]);
    let second = c.get("/console/users?active=true&per=1000&page=2");
    assert!(second.body.contains("1530 users"), "{}", second.body);
    assert_eq!(rows(&second.body), names[1000..]);
    assert_eq!(rows(&c.get("/console/users?q=other&per=1000").body).len(), 510, "a narrow search, the other plan");
}
