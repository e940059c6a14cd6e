//! Security keys in a real browser: headless chromium with WebDriver's virtual authenticators
//! (CTAP2 keys in the browser, signing real credentials), on the daemon's enrolment page and in
//! the ceremonies a login front end runs through the API. The page is served from
//! `http://localhost:PORT`, the relying party `localhost`: browsers run WebAuthn on a secure
//! context only, and localhost is one without TLS.

use serde_json::{json, Value};

use provisiond::domain::operators::Role;

use crate::console::operator_with_role;
use crate::console_browser::{console_problems, shoot, sign_in};
use crate::helpers::{Reply, TestApp};
use crate::webdriver::{free_port, Browser};

/// The daemon on a port chosen beforehand, so that its origin can be configured.
fn spawn() -> (TestApp, String) {
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let public_url = origin.clone();
    let app = TestApp::spawn_with(move |c| {
        c.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        // The relying party and its origin follow from the public URL: localhost.
        c.server.public_url = Some(public_url);
    });
    (app, origin)
}

/// Runs `navigator.credentials.create()` or `.get()` (`call`) in the page with the options an
/// API start gave; the credential's JSON, or the browser's error (`name: message`).
fn ceremony(browser: &Browser, call: &str, options: &Value) -> Result<Value, String> {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         const parse = '{call}' === 'create' ? PublicKeyCredential.parseCreationOptionsFromJSON
                                             : PublicKeyCredential.parseRequestOptionsFromJSON;
         navigator.credentials.{call}({{publicKey: parse(arguments[0])}})
           .then(c => done({{ok: c.toJSON()}}), e => done({{error: e.name + ': ' + e.message}}));"
    );
    let v = browser.execute_async(&script, std::slice::from_ref(options));
    match v.get("ok") {
        Some(credential) => Ok(credential.clone()),
        None => Err(v["error"].as_str().unwrap_or_default().to_string()),
    }
}

fn api(id: &str, rest: &str) -> String {
    format!("/api/v1/users/{id}/mfa/webauthn/{rest}")
}

/// A login front end's sign-in with the key in the browser: start, `get()`, finish.
fn sign_in_with_key(app: &TestApp, browser: &Browser, id: &str) -> (Value, Reply) {
    let start = app.post(&api(id, "authentication"), &json!({}));
    assert_eq!(start.status, 200, "{:?}", start.body);
    let assertion = ceremony(browser, "get", &start.body["publicKey"]).expect("the key signs");
    let body = json!({"ceremonyId": start.body["ceremonyId"], "credential": assertion});
    let finish = app.post(&api(id, "authentication/finish"), &body);
    (body, finish)
}

/// A front end registering the key in the browser as `name`: the finish's reply.
fn register_key(app: &TestApp, browser: &Browser, id: &str, name: &str) -> Reply {
    let start = app.post(&api(id, "registration"), &json!({}));
    assert_eq!(start.status, 200, "{:?}", start.body);
    let credential = ceremony(browser, "create", &start.body["publicKey"]).expect("the key registers");
    app.post(
        &api(id, "registration/finish"),
        &json!({"ceremonyId": start.body["ceremonyId"], "name": name, "credential": credential}),
    )
}

/// Screenshots at the window's width and at a phone's 360 px.
fn shoot_both(browser: &Browser, name: &str) {
    shoot(browser, name);
    browser.phone(360, 740);
    shoot(browser, &format!("{name}-360"));
    browser.desktop();
}

fn factor_names(app: &TestApp, id: &str) -> Vec<String> {
    let s = crate::mfa::status(app, id);
    s["factors"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn webauthn_browser_a_key_added_on_the_enrolment_page_signs_in_and_a_reset_clears_every_factor() {
    let (app, origin) = spawn();
    let id = app.create_user(&json!({"userName": "ada", "displayName": "Ada Lovelace"}))["id"].as_str().unwrap().to_string();
    let link = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({}));
    assert_eq!(link.status, 201, "{:?}", link.body);
    let link = link.body["url"].as_str().unwrap().to_string();
    assert!(link.starts_with(&format!("{origin}/enrol/")), "{link}");

    // The user opens the link; the page offers a security key next to the QR code.
    let browser = Browser::start();
    let laptop = browser.add_security_key();
    browser.goto(&link);
    browser.wait_text("h1", "Set up your authenticator app");
    browser.wait_text("#webauthn h2", "security key or passkey");
    let shown_secret = browser.find("#secret").text();
    browser.execute("document.getElementById('key-name').value = 'Laptop key';", &[]);
    shoot_both(&browser, "enrolment-page-webauthn");
    browser.find("#add-key-button").click();
    browser.wait_text("h1", "Your security key is set up");
    assert_eq!(browser.find_all("#backup-codes li").len(), 10);
    shoot_both(&browser, "enrolment-security-key-done");
    let held = browser.security_key_credentials(&laptop);
    assert_eq!((held.len(), held[0]["rpId"].as_str()), (1, Some("localhost")), "{held:?}");
    assert_eq!(crate::mfa::status(&app, &id)["status"], "enrolled");
    assert_eq!(factor_names(&app, &id), ["Laptop key"]);
    // The secret the page showed ended with the link: nobody can confirm it later.
    let secret = provisiond::domain::mfa::Policy::decode_base32(&shown_secret).expect("the secret shown is base32");
    let now = provisiond::clock::Clock::now(&*app.clock).timestamp() as u64;
    let code = provisiond::domain::mfa::Policy::from_config(&app.config.mfa).code_at(&secret, now);
    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(console_problems(&browser), Vec::<String>::new(), "no CSP violation or script error");
    browser.goto(&link);
    browser.wait_text("h1", "This link does not work");
    browser.console_log(); // the 410 of the used link, as meant

    // A login front end signs the user in with it through the API; its assertion is used once.
    browser.goto(&format!("{origin}/console/sign-in"));
    let (replayed, r) = sign_in_with_key(&app, &browser, &id);
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("Laptop key")), "{:?}", r.body);
    assert_eq!(app.post(&api(&id, "authentication/finish"), &replayed).status, 409, "a replay is refused");
    assert_eq!(browser.security_key_credentials(&laptop)[0]["signCount"], 2, "registration and one sign-in");

    // The key cannot be registered twice: the browser refuses the excluded credential.
    let start = app.post(&api(&id, "registration"), &json!({}));
    let refused = ceremony(&browser, "create", &start.body["publicKey"]).unwrap_err();
    assert!(refused.starts_with("InvalidStateError"), "{refused}");

    // Another origin (the same daemon at 127.0.0.1) cannot use the relying party localhost.
    browser.goto(&format!("{}/console/sign-in", app.base));
    let start = app.post(&api(&id, "authentication"), &json!({}));
    let refused = ceremony(&browser, "get", &start.body["publicKey"]).unwrap_err();
    assert!(refused.starts_with("SecurityError"), "{refused}");

    // A second key (the laptop's is put away), then a third, the spare.
    browser.goto(&format!("{origin}/console/sign-in"));
    browser.remove_security_key(&laptop);
    let phone = browser.add_security_key();
    let r = register_key(&app, &browser, &id, "Phone");
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.body.get("backupCodes").is_none());
    assert_eq!(sign_in_with_key(&app, &browser, &id).1.status, 200, "the second key signs in");
    browser.remove_security_key(&phone);
    browser.add_security_key();
    assert_eq!(register_key(&app, &browser, &id, "Spare <key>").status, 201);
    crate::mfa::enrol(&app, &id);
    assert_eq!(factor_names(&app, &id), ["Authenticator app", "Laptop key", "Phone", "Spare <key>"]);

    // The console's user page lists the factors and removes one.
    let op = operator_with_role(&app, "helen", Role::Helpdesk);
    sign_in(&browser, &app, "helen", op.password, &op.secret);
    browser.goto(&format!("{}/console/users/{id}", app.base));
    let rows: Vec<String> = browser.find_all("#factors tr").iter().map(|r| r.text()).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows[3].contains("Spare <key>"), "shown as text: {rows:?}");
    shoot_both(&browser, "user-factors");
    browser.goto(&format!("{}/console/users/reset?id={id}", app.base));
    browser.wait_text("body", "security keys, passkeys and backup codes are removed");
    shoot_both(&browser, "reset-confirmation");
    browser.goto(&format!("{}/console/users/{id}", app.base));
    browser.find("button[aria-label='Remove Spare <key>']").click();
    browser.wait("the spare key to go", || (browser.find_all("#factors tr").len() == 3).then_some(()));
    assert_eq!(factor_names(&app, &id), ["Authenticator app", "Laptop key", "Phone"]);

    // A reset clears both keys and the app at once.
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "bag stolen"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    browser.goto(&format!("{}/console/users/{id}", app.base));
    browser.wait_text("#mfa-status", "pending");
    assert!(browser.find("#no-factors").text().contains("no factor"));
    assert!(factor_names(&app, &id).is_empty());
    assert_eq!(app.post(&api(&id, "authentication"), &json!({})).status, 409, "no key signs in any more");
    assert_eq!(console_problems(&browser), Vec::<String>::new(), "no CSP violation or script error");
}
