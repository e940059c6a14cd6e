//! The console over HTTP: sign-in, sessions, CSRF and the headers of every page.

use provisiond::domain::mfa::Policy;
use provisiond::domain::operators::Role;

use crate::helpers::TestApp;

/// An agent that shows redirects instead of following them, and keeps no cookies of its own.
pub(crate) fn browser() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).save_redirect_history(false).build().new_agent()
}

pub(crate) struct Operator {
    pub secret: Vec<u8>,
    pub password: &'static str,
}

/// Adds and sets up an admin `name` on the app's database, with the app's key and clock.
pub(crate) fn operator(app: &TestApp, name: &str) -> Operator {
    operator_with_role(app, name, Role::Admin)
}

pub(crate) fn operator_with_role(app: &TestApp, name: &str, role: Role) -> Operator {
    let services = services(app);
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Cli, "test", None);
    let token = services.operators.add(name, role, &actor).unwrap();
    let (_, enrolment) = services.operators.begin_setup(token.expose()).unwrap();
    let secret = Policy::decode_base32(&enrolment.secret_base32).unwrap();
    let op = Operator { secret, password: "correct horse battery staple" };
    services.operators.finish_setup(token.expose(), op.password, &code(app, &op)).unwrap();
    app.clock.advance(chrono::Duration::seconds(30));
    op
}

/// The domain services on the app's database, key and clock.
pub(crate) fn services(app: &TestApp) -> provisiond::domain::Services {
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let sealer = std::sync::Arc::new(provisiond::app::load_sealer(&app.config).unwrap());
    provisiond::domain::Services::new(pool, sealer, &app.config, app.clock.clone())
}

pub(crate) fn code(app: &TestApp, op: &Operator) -> String {
    Policy::from_config(&app.config.mfa).code_at(&op.secret, provisiond::clock::Clock::now(&*app.clock).timestamp() as u64)
}

pub(crate) fn sign_in(app: &TestApp, name: &str, password: &str, code: &str) -> ureq::http::Response<ureq::Body> {
    browser()
        .post(&format!("{}/console/sign-in", app.base))
        .send_form([("name", name), ("password", password), ("code", code)])
        .unwrap()
}

pub(crate) fn header(res: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// A browser signed in to the console: its session cookie and CSRF token.
pub(crate) struct Console {
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

/// A page's status, headers and body.
pub(crate) struct Page {
    pub status: u16,
    pub location: String,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

fn page(mut res: ureq::http::Response<ureq::Body>) -> Page {
    let location = header(&res, "location");
    let headers = res.headers().clone();
    let body = res.body_mut().read_to_string().unwrap_or_default();
    Page { status: res.status().as_u16(), location, headers, body }
}

impl Console {
    /// Adds operator `name` with `role`, and signs it in.
    pub(crate) fn sign_in(app: &TestApp, name: &str, role: Role) -> Self {
        let op = operator_with_role(app, name, role);
        let res = sign_in(app, name, op.password, &code(app, &op));
        assert_eq!(res.status().as_u16(), 303, "sign-in of {name}");
        let cookie = header(&res, "set-cookie").split(';').next().unwrap().to_string();
        let mut console = Console { base: app.base.clone(), cookie, csrf: String::new() };
        let users = console.get("/console/users");
        console.csrf = users.body.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        console
    }

    pub(crate) fn get(&self, path: &str) -> Page {
        page(browser().get(&format!("{}{path}", self.base)).header("cookie", &self.cookie).call().unwrap())
    }

    /// A form sent with this session's CSRF token.
    pub(crate) fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let mut fields = vec![("csrf", self.csrf.as_str())];
        fields.extend_from_slice(form);
        self.post_raw(path, &fields)
    }

    /// A form sent as given (no token added).
    pub(crate) fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> Page {
        page(
            browser()
                .post(&format!("{}{path}", self.base))
                .header("cookie", &self.cookie)
                .send_form(form.iter().copied())
                .unwrap(),
        )
    }
}

#[test]
fn every_console_page_carries_the_security_headers_and_the_root_leads_to_it() {
    let app = TestApp::spawn();
    let root = browser().get(&format!("{}/", app.base)).call().unwrap();
    assert_eq!((root.status().as_u16(), header(&root, "location")), (303, "/console".into()));
    let home = browser().get(&format!("{}/console", app.base)).call().unwrap();
    assert_eq!((home.status().as_u16(), header(&home, "location")), (303, "/console/sign-in".into()));
    for res in [home, browser().get(&format!("{}/console/sign-in", app.base)).call().unwrap(), sign_in(&app, "x", "y", "z")] {
        assert_eq!(header(&res, "content-security-policy"), "default-src 'self'; frame-ancestors 'none'; form-action 'self'");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        assert_eq!(header(&res, "referrer-policy"), "same-origin");
        assert_eq!(header(&res, "cache-control"), "no-store");
    }
}

#[test]
fn an_operator_signs_in_with_password_and_code_gets_a_strict_cookie_and_signs_out_with_the_csrf_token() {
    let app = TestApp::spawn();
    let op = operator(&app, "alice");
    // Any wrong part: the same answer, and no cookie.
    for (password, code) in [("wrong horse battery staple", code(&app, &op)), (op.password, "000000".to_string())] {
        let mut res = sign_in(&app, "alice", password, &code);
        assert_eq!(res.status().as_u16(), 401);
        assert!(res.headers().get("set-cookie").is_none());
        assert!(res.body_mut().read_to_string().unwrap().contains("The name, password or code is not right."));
    }
    let res = sign_in(&app, "alice", op.password, &code(&app, &op));
    assert_eq!((res.status().as_u16(), header(&res, "location")), (303, "/console/users".into()));
    let cookie = header(&res, "set-cookie");
    for part in ["provisiond_session=", "HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let mut page = browser().get(&format!("{}/console/users", app.base)).header("cookie", &session).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains("alice · admin"), "{html}");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();

    // Sign-out without the token, with another, or from another site: refused.
    let out = |form: &[(&str, &str)], origin: Option<&str>| {
        let mut req = browser().post(&format!("{}/console/sign-out", app.base)).header("cookie", &session);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send_form(form.iter().copied()).unwrap()
    };
    assert_eq!(out(&[], None).status().as_u16(), 403);
    assert_eq!(out(&[("csrf", "0".repeat(64).as_str())], None).status().as_u16(), 403);
    assert_eq!(out(&[("csrf", &csrf)], Some("https://evil.example")).status().as_u16(), 403);
    let done = out(&[("csrf", &csrf)], None);
    assert_eq!((done.status().as_u16(), header(&done, "location")), (303, "/console/sign-in".into()));
    let after = browser().get(&format!("{}/console", app.base)).header("cookie", &session).call().unwrap();
    assert_eq!(header(&after, "location"), "/console/sign-in", "the session ended with the sign-out");
}

#[test]
fn five_wrong_sign_ins_lock_the_operator_out_with_a_429_page_that_says_how_long_until_the_lockout_ends() {
    let app = TestApp::spawn();
    let op = operator(&app, "alice");
    for _ in 0..5 {
        assert_eq!(sign_in(&app, "alice", "wrong horse battery staple", &code(&app, &op)).status().as_u16(), 401);
    }
    // The fifth failure locked the operator out: the next sign-in is not even checked.
    let mut locked = sign_in(&app, "alice", "wrong horse battery staple", &code(&app, &op));
    assert_eq!(locked.status().as_u16(), 429);
    assert_eq!(header(&locked, "retry-after"), "900");
    assert!(locked.body_mut().read_to_string().unwrap().contains("try again in 15 minutes"));
    // Even the right password and code wait for the end of the lockout.
    let mut right = sign_in(&app, "alice", op.password, &code(&app, &op));
    assert_eq!(right.status().as_u16(), 429);
    app.clock.advance(chrono::Duration::minutes(14));
    let mut right_later = sign_in(&app, "alice", op.password, &code(&app, &op));
    assert!(right_later.body_mut().read_to_string().unwrap().contains("try again in 1 minute."));
    let _ = right.body_mut().read_to_string();
    app.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(sign_in(&app, "alice", op.password, &code(&app, &op)).status().as_u16(), 303, "the lockout ended");
    let events = app.get("/api/v1/audit?type=operator.locked_out").body;
    assert_eq!(events["events"][0]["origin"], "console");
}

#[test]
fn a_session_ends_after_thirty_idle_minutes_after_twelve_hours_and_when_its_operator_is_disabled() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Admin);
    app.clock.advance(chrono::Duration::minutes(29));
    assert_eq!(c.get("/console/users").status, 200, "29 idle minutes");
    app.clock.advance(chrono::Duration::minutes(31));
    let idle = c.get("/console/users");
    assert_eq!((idle.status, idle.location.as_str()), (303, "/console/sign-in"), "31 idle minutes");

    let c = Console::sign_in(&app, "bob", Role::Admin);
    for _ in 0..25 {
        app.clock.advance(chrono::Duration::minutes(29));
        if c.get("/console/users").status != 200 {
            break;
        }
    }
    assert!(c.get("/console/users").status == 303, "no session lives past twelve hours");

    let c = Console::sign_in(&app, "carol", Role::Helpdesk);
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Cli, "test", None);
    services(&app).operators.disable("carol", &actor).unwrap();
    assert_eq!(c.get("/console/users").location, "/console/sign-in", "disabled");
    assert_eq!(sign_in(&app, "carol", "correct horse battery staple", "000000").status().as_u16(), 401);
}

#[test]
fn the_setup_page_shows_a_qr_code_and_the_secret_refuses_weak_passwords_and_wrong_codes_and_shows_backup_codes_once() {
    let app = TestApp::spawn();
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Cli, "test", None);
    let token = services(&app).operators.add("dana", Role::Helpdesk, &actor).unwrap();
    let url = format!("{}/console/setup/{}", app.base, token.expose());
    let get = || browser().get(&url).call().unwrap().body_mut().read_to_string().unwrap();
    let form = get();
    assert!(form.contains("<svg") && form.contains("Set up your sign-in, dana"), "{form}");
    let secret = form.split("id=\"secret\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert_eq!(get().split("id=\"secret\">").nth(1).unwrap().split('<').next().unwrap(), secret, "a reload keeps the secret");
    let op = Operator { secret: Policy::decode_base32(&secret).unwrap(), password: "correct horse battery staple" };
    let post = |password: &str, again: &str, code: &str| {
        let mut res =
            browser().post(&url).send_form([("password", password), ("password_again", again), ("code", code)]).unwrap();
        (res.status().as_u16(), res.body_mut().read_to_string().unwrap())
    };
    let (status, body) = post(op.password, "something else entirely", &code(&app, &op));
    assert_eq!((status, body.contains("The two passwords differ.")), (400, true));
    let (status, body) = post("password1234", "password1234", &code(&app, &op));
    assert!(status == 400 && body.contains("too easy"), "{body}");
    let (status, body) = post(op.password, op.password, "000000");
    assert!(status == 400 && body.contains("does not match"), "{body}");
    let (status, body) = post(op.password, op.password, &code(&app, &op));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("<li><code>").count(), 10, "ten backup codes: {body}");
    let mut used = browser().get(&url).call().unwrap();
    assert_eq!(used.status().as_u16(), 404);
    assert!(used.body_mut().read_to_string().unwrap().contains("unknown, used or expired"));
    app.clock.advance(chrono::Duration::seconds(30));
    assert_eq!(sign_in(&app, "dana", op.password, &code(&app, &op)).status().as_u16(), 303);
}

/// Every console route: method, path, and whether a helpdesk operator may use it.
const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/console/users", true),
    ("GET", "/console/users/reset?id=x", true),
    ("POST", "/console/users/reset/confirm", true),
    ("POST", "/console/users/reset", true),
    ("POST", "/console/users/x/enrolment-link", true),
    ("POST", "/console/users/enrolment-links.csv", true),
    ("GET", "/console/audit", true),
    ("GET", "/console/audit.csv", true),
    ("GET", "/console/sync", false),
    ("POST", "/console/sync/run", false),
    ("POST", "/console/sync/preview", false),
    ("GET", "/console/tokens/x/revoke", false),
    ("GET", "/console/operators/x/disable", false),
    ("GET", "/console/tokens", false),
    ("POST", "/console/tokens", false),
    ("POST", "/console/tokens/x/revoke", false),
    ("GET", "/console/operators", false),
    ("POST", "/console/operators", false),
    ("POST", "/console/operators/x/disable", false),
    ("POST", "/console/operators/x/reset", false),
];

#[test]
fn helpdesk_operators_are_refused_every_administrators_route_and_every_answer_carries_the_security_headers() {
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "ada", Role::Admin);
    let helpdesk = Console::sign_in(&app, "hal", Role::Helpdesk);
    let call = |c: &Console, method: &str, path: &str| match method {
        "GET" => c.get(path),
        _ => c.post(path, &[]),
    };
    for (method, path, helpdesk_may) in ROUTES {
        for (who, c) in [("admin", &admin), ("helpdesk", &helpdesk)] {
            let page = call(c, method, path);
            let allowed = who == "admin" || *helpdesk_may;
            if allowed {
                // Allowed: answered by its handler (an unknown token or operator `x` is a 404 page).
                assert!(![403, 405].contains(&page.status), "{who} {method} {path}: {}", page.status);
            } else {
                assert_eq!(page.status, 403, "{who} {method} {path}");
                assert!(page.body.contains("This page is for administrators"), "{who} {method} {path}: {}", page.body);
            }
            let h = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert_eq!(
                h("content-security-policy"),
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
                "{method} {path}"
            );
            assert_eq!(
                (h("x-content-type-options"), h("referrer-policy"), h("cache-control")),
                ("nosniff".into(), "same-origin".into(), "no-store".into())
            );
        }
        // Signed out: a page leads to the sign-in, a form is refused.
        let anonymous = Console { base: app.base.clone(), cookie: String::new(), csrf: String::new() };
        let page = call(&anonymous, method, path);
        match *method {
            "GET" => assert_eq!((page.status, page.location.as_str()), (303, "/console/sign-in"), "{path}"),
            _ => assert_eq!(page.status, 403, "{path}"),
        }
    }
    let nav = helpdesk.get("/console/users").body;
    for link in ["/console/sync\"", "/console/tokens\"", "/console/operators\""] {
        assert!(!nav.contains(link), "helpdesk sees {link}");
    }
}
