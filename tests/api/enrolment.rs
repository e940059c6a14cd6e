//! One-time enrolment links over HTTP: the API that makes them, the page `/enrol/{token}` they
//! open, and every state a link can be in.

use chrono::Duration;
use serde_json::{json, Value};

use crate::console::browser;
use crate::helpers::TestApp;
use provisiond::domain::mfa::Policy;

pub(crate) const PUBLIC_URL: &str = "https://idm.example.com";

/// A daemon whose links start with [`PUBLIC_URL`] (the tests open them on the real port).
pub(crate) fn app() -> TestApp {
    TestApp::spawn_with(|c| c.server.public_url = Some(PUBLIC_URL.into()))
}

pub(crate) fn new_user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name, "displayName": "Barbara <b>Jensen</b>"}))["id"].as_str().unwrap().to_string()
}

/// Creates a link for `id` over the API; its URL on the test daemon.
pub(crate) fn link(app: &TestApp, id: &str, body: &Value) -> String {
    let r = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap();
    let path = url.strip_prefix(PUBLIC_URL).expect("the link starts with server.public_url");
    assert!(path.starts_with("/enrol/") && path.len() == "/enrol/".len() + 64, "{url}");
    format!("{}{path}", app.base)
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

pub(crate) fn open(url: &str) -> Answer {
    let mut res = browser().get(url).call().unwrap();
    Answer { status: res.status().as_u16(), headers: res.headers().clone(), body: res.body_mut().read_to_string().unwrap() }
}

pub(crate) fn send_code(url: &str, code: &str) -> Answer {
    let mut res = browser().post(url).send_form([("code", code)]).unwrap();
    Answer { status: res.status().as_u16(), headers: res.headers().clone(), body: res.body_mut().read_to_string().unwrap() }
}

/// The secret the page shows as text.
pub(crate) fn secret_on(page: &str) -> String {
    page.split("id=\"secret\" class=\"secret\">")
        .nth(1)
        .expect("the secret is on the page")
        .split('<')
        .next()
        .unwrap()
        .to_string()
}

pub(crate) fn code_for(app: &TestApp, secret_b32: &str) -> String {
    let secret = Policy::decode_base32(secret_b32).unwrap();
    Policy::from_config(&app.config.mfa).code_at(&secret, provisiond::clock::Clock::now(&*app.clock).timestamp() as u64)
}

fn mfa_status(app: &TestApp, id: &str) -> String {
    app.get(&format!("/api/v1/users/{id}/mfa")).body["status"].as_str().unwrap().to_string()
}

fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/v1/audit?userId={id}&count=100"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut events = r.body["events"].as_array().cloned().expect("events");
    events.reverse();
    events
}

fn header(a: &Answer, name: &str) -> String {
    a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

#[test]
fn a_link_opens_a_page_with_the_qr_code_and_secret_that_enrols_the_user_once_and_shows_the_backup_codes() {
    let app = app();
    let id = new_user(&app, "bjensen@example.com");
    let r = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let expires = chrono::DateTime::parse_from_rfc3339(r.body["expiresAt"].as_str().unwrap()).unwrap();
    let now = provisiond::clock::Clock::now(&*app.clock);
    assert!((expires.with_timezone(&chrono::Utc) - now - Duration::hours(72)).num_seconds().abs() <= 2, "72 h by default");
    let url = link(&app, &id, &json!({}));

    let page = open(&url);
    assert_eq!(page.status, 200, "{}", page.body);
    for (name, value) in [
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-robots-tag", "noindex, nofollow"),
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    ] {
        assert_eq!(header(&page, name), value, "{name}");
    }
    assert!(page.body.contains("<svg") && page.body.contains("id=\"account\">bjensen@example.com<"), "{}", page.body);
    assert!(page.body.contains(">provisiond<"), "the issuer is shown");
    assert!(!page.body.contains("<script>") && !page.body.contains("style="), "no inline script or style");
    let secret = secret_on(&page.body);
    assert_eq!(secret_on(&open(&url).body), secret, "a reload shows the same pending secret");
    assert_eq!(mfa_status(&app, &id), "pending");

    let wrong = send_code(&url, "000000");
    assert_eq!(wrong.status, 400);
    assert!(wrong.body.contains("That code is not right") && secret_on(&wrong.body) == secret, "{}", wrong.body);

    let done = send_code(&url, &code_for(&app, &secret));
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body.matches("<li><code>").count(), 10, "ten backup codes: {}", done.body);
    assert!(done.body.contains("shown only once"), "{}", done.body);
    assert!(done.body.contains("download=\"backup-codes.txt\"") && done.body.contains(">Download (.txt)<"));
    assert!(done.body.contains(">Print<"));
    let first = done.body.split("<li><code>").nth(1).unwrap().split('<').next().unwrap();
    let href = done.body.split("id=\"download-codes\" href=\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(href.starts_with("data:text/plain;charset=utf-8,") && href.contains(first), "the file holds the codes: {href}");
    assert_eq!(header(&done, "cache-control"), "no-store");
    assert_eq!(mfa_status(&app, &id), "enrolled");

    // Used up: the page and the form answer 410 from now on.
    assert_eq!(open(&url).status, 410);
    assert_eq!(send_code(&url, &code_for(&app, &secret)).status, 410);

    // The backup code works at login.
    let verify = app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": first}));
    assert_eq!((verify.status, verify.body["method"].as_str()), (200, Some("backup_code")), "{:?}", verify.body);

    let events = events(&app, &id);
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).cloned().collect::<Vec<_>>();
    let created = of("mfa.enrolment_link.created");
    assert_eq!(created.len(), 2);
    assert_eq!((created[0]["origin"].as_str(), created[0]["actor"].as_str()), (Some("api"), Some("test")));
    let enrolled = of("mfa.enrolled");
    assert_eq!(enrolled.len(), 1);
    assert_eq!((enrolled[0]["origin"].as_str(), enrolled[0]["actor"].as_str()), (Some("link"), Some("bjensen@example.com")));
    assert!(enrolled[0]["requestId"].is_string());
    let wrong = of("mfa.verify.locked_out");
    assert!(wrong.is_empty(), "one wrong code locks nothing");
}

#[test]
fn a_link_ends_when_replaced_reset_expired_or_used_and_every_dead_link_shows_the_same_410_page() {
    let app = app();
    let id = new_user(&app, "replaced");
    let first = link(&app, &id, &json!({}));
    let first_secret = secret_on(&open(&first).body);
    let second = link(&app, &id, &json!({}));
    let replaced = open(&first);
    assert_eq!(replaced.status, 410, "a newer link replaces the older");
    let second_page = open(&second);
    assert_eq!(second_page.status, 200);
    assert_ne!(secret_on(&second_page.body), first_secret, "the secret the replaced link showed ends with it");

    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "new phone"}));
    assert_eq!(r.status, 200);
    let after_reset = open(&second);
    assert_eq!(after_reset.status, 410, "a reset ends the link");

    let short = link(&app, &id, &json!({"ttl": 120}));
    assert_eq!(open(&short).status, 200);
    app.clock.advance(Duration::seconds(121));
    let expired = open(&short);
    assert_eq!(expired.status, 410, "expired");
    assert_eq!(send_code(&short, "123456").status, 410, "an expired link checks no code");

    let unknown = open(&format!("{}/enrol/{}", app.base, "0".repeat(64)));
    let garbage = open(&format!("{}/enrol/%3Cscript%3E", app.base));
    for dead in [&replaced, &after_reset, &expired, &unknown, &garbage] {
        assert_eq!(dead.status, 410);
        assert_eq!(dead.body, unknown.body, "one page for every dead link");
        assert_eq!(header(dead, "referrer-policy"), "no-referrer");
    }
    assert!(unknown.body.contains("This link does not work"), "{}", unknown.body);
    assert!(!garbage.body.contains("<script>"));
}

#[test]
fn links_are_refused_for_enrolled_users_without_a_public_url_and_with_a_ttl_out_of_bounds() {
    let app = app();
    let id = new_user(&app, "enrolled");
    let url = link(&app, &id, &json!({}));
    let secret = secret_on(&open(&url).body);
    assert_eq!(send_code(&url, &code_for(&app, &secret)).status, 200);
    let r = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("reset it first"), "{:?}", r.body);

    let r = app.post("/api/v1/users/nobody/mfa/enrolment-links", &json!({}));
    assert_eq!(r.status, 404);
    let other = new_user(&app, "other");
    for ttl in [json!(59), json!(2_592_001), json!("72h"), json!(-1)] {
        let r = app.post(&format!("/api/v1/users/{other}/mfa/enrolment-links"), &json!({ "ttl": ttl }));
        assert_eq!(r.status, 400, "ttl {ttl}: {:?}", r.body);
    }
    // No body at all is the same as {}.
    let r = app.raw(
        "POST",
        &format!("/api/v1/users/{other}/mfa/enrolment-links"),
        None,
        &[("Authorization", &format!("Bearer {}", app.token))],
    );
    assert_eq!(r.status, 201, "{:?}", r.body);

    let inactive = app.create_user(&json!({"userName": "gone", "active": false}))["id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/api/v1/users/{inactive}/mfa/enrolment-links"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);

    let plain = TestApp::spawn();
    let id = new_user(&plain, "no-url");
    let r = plain.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("server.public_url"), "{:?}", r.body);
}

#[test]
fn wrong_codes_on_the_page_count_toward_the_users_lockout() {
    let app = app();
    let id = new_user(&app, "guesser");
    let url = link(&app, &id, &json!({}));
    let secret = secret_on(&open(&url).body);
    for _ in 0..4 {
        assert_eq!(send_code(&url, "000000").status, 400);
    }
    let locked = send_code(&url, "000000");
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.body.contains("Too many wrong codes: try again in 15 minutes."), "{}", locked.body);
    assert_eq!(header(&locked, "retry-after"), "900");
    let right_but_locked = send_code(&url, &code_for(&app, &secret));
    assert_eq!(right_but_locked.status, 429, "no code is checked while the lockout holds");
    assert!(open(&url).body.contains("Too many wrong codes"), "the page says so too");
    let events = events(&app, &id);
    let lock = events.iter().find(|e| e["type"] == "mfa.verify.locked_out").expect("the lockout is audited");
    assert_eq!(lock["origin"], "link");

    app.clock.advance(Duration::minutes(15));
    let done = send_code(&url, &code_for(&app, &secret));
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(mfa_status(&app, &id), "enrolled");
}

#[test]
fn scopes_guard_link_creation_and_a_foreign_origin_cannot_post_the_form() {
    let app = app();
    let id = new_user(&app, "scoped");
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let tokens = provisiond::domain::tokens::Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock));
    use provisiond::domain::tokens::Scope;
    for (name, scope, status) in [("s", Scope::Scim, 403), ("m", Scope::Mfa, 201), ("a", Scope::Admin, 201)] {
        let token = tokens.create(name, &[scope]).unwrap();
        let auth = format!("Bearer {}", token.expose());
        let r = app.call_with(
            "POST",
            &format!("/api/v1/users/{id}/mfa/enrolment-links"),
            Some(&json!({})),
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, status, "{name}: {:?}", r.body);
    }
    let url = link(&app, &id, &json!({}));
    let secret = secret_on(&open(&url).body);
    let mut res =
        browser().post(&url).header("origin", "https://evil.example").send_form([("code", code_for(&app, &secret))]).unwrap();
    assert_eq!(res.status().as_u16(), 403, "{}", res.body_mut().read_to_string().unwrap());
    assert_eq!(mfa_status(&app, &id), "pending");
}

#[test]
fn a_confirmation_racing_a_reset_or_a_newer_link_ends_one_way_or_the_other_without_an_error() {
    let app = app();
    let id = new_user(&app, "racer");
    for round in 0..12 {
        let url = link(&app, &id, &json!({}));
        let secret = secret_on(&open(&url).body);
        app.clock.advance(Duration::seconds(30));
        let code = code_for(&app, &secret);
        let (base, token, user) = (app.base.clone(), app.token.clone(), id.clone());
        // Every other round a reset, else a newer link, at the same time as the confirmation.
        let other = std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
            let path = if round % 2 == 0 { "reset" } else { "enrolment-links" };
            let mut res = agent
                .post(format!("{base}/api/v1/users/{user}/mfa/{path}"))
                .header("Authorization", &format!("Bearer {token}"))
                .send_json(json!({"reason": "race"}))
                .unwrap();
            (path, res.status().as_u16(), res.body_mut().read_to_string().unwrap())
        });
        let confirmed = send_code(&url, &code);
        let (path, status, body) = other.join().unwrap();
        assert!([200, 410].contains(&confirmed.status), "round {round}: the page answered {}", confirmed.status);
        let expected: &[u16] = if path == "reset" { &[200] } else { &[201, 409] };
        assert!(expected.contains(&status), "round {round}: {path} answered {status} {body}");
        if mfa_status(&app, &id) == "enrolled" {
            let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "next round"}));
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    }
}
