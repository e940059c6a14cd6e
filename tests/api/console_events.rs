//! The console's Events page over HTTP, against the real daemon and its deliverer: a webhook
//! whose receiver is down shows its backlog and the connection's error, then its deliveries
//! once the receiver is back; a Shared Signals stream that refuses an event shows the refusal
//! and the drop; what receivers wrote (descriptions, reasons, errors) is shown as text; with
//! no receiver the page says how to add one; signed out it leads to the sign-in page.

use std::time::{Duration, Instant};

use provisiond::config::{SignatureAlgorithm, Ssf};
use provisiond::domain::events::ReceiverState;
use provisiond::domain::operators::Role;
use provisiond::domain::streams::{POLL, PUSH};
use provisiond::domain::tokens::Scope;
use serde_json::{json, Value};

use crate::console::{browser, header, services, Console, Page};
use crate::helpers::TestApp;
use crate::receiver::Receiver;

/// Text as the pages escape it (askama's HTML escaping).
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// The row of the page's table whose `data-{kind}` is `name`.
fn row<'a>(page: &'a Page, kind: &str, name: &str) -> &'a str {
    let start = format!("<tr data-{kind}=\"{name}\">");
    let after = page.body.split(&start).nth(1).unwrap_or_else(|| panic!("no {kind} row {name} in {}", page.body));
    after.split("</tr>").next().unwrap()
}

/// The text of a row's cell of `class` (up to the cell's end).
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let start = format!("<td class=\"{class}");
    let after = row.split(&start).nth(1).unwrap_or_else(|| panic!("no cell {class} in {row}"));
    let after = &after[after.find('>').unwrap() + 1..];
    after.split("</td>").next().unwrap()
}

/// Waits until the receiver's state, as the domain reads it, passes `done`.
pub(crate) fn wait_for_state(app: &TestApp, receiver: &str, what: &str, done: impl Fn(&ReceiverState) -> bool) -> ReceiverState {
    let outbox = services(app).outbox;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = outbox.receivers().unwrap().into_iter().find(|s| s.receiver == receiver);
        match state {
            Some(s) if done(&s) => return s,
            s if Instant::now() > deadline => panic!("{receiver}: {what} did not happen: {s:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn reset_new_user(app: &TestApp, name: &str) {
    let id = app.create_user(&json!({"userName": name}))["id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "lost phone"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[test]
fn console_events_lists_a_webhook_with_its_backlog_and_last_error_while_its_receiver_is_down_then_its_deliveries() {
    let receiver = Receiver::start();
    receiver.go_down();
    let url = receiver.url("/hook");
    let secret = std::sync::Mutex::new(String::new());
    let app = TestApp::spawn_with(|c| crate::webhooks::configure(c, &url, 1, &secret));
    let admin = Console::sign_in(&app, "alice", Role::Admin);

    let users = admin.get("/console/users");
    assert!(users.body.contains("href=\"/console/events\""), "an admin's nav has Events");
    // Before any event: the webhook is listed, owed nothing.
    let page = admin.get("/console/events");
    assert_eq!(page.status, 200, "{}", page.body);
    let hr = row(&page, "webhook", "hr");
    assert!(hr.contains(&escaped(&url)) && hr.contains("<td>all</td>"), "{hr}");
    assert_eq!((cell(hr, "number backlog"), cell(hr, "last-error")), ("0", "—"));

    // Two resets while the receiver's port is closed: both owed, the refused connection said.
    reset_new_user(&app, "ada");
    reset_new_user(&app, "grace");
    let state = wait_for_state(&app, "webhook:hr", "two owed and a failed attempt", |s| s.backlog == 2 && s.last_error.is_some());
    let error = state.last_error.unwrap();
    assert!(error.to_lowercase().contains("refused"), "{error}");
    let page = admin.get("/console/events");
    let hr = row(&page, "webhook", "hr");
    assert_eq!(cell(hr, "number backlog"), "2", "{hr}");
    assert!(cell(hr, "oldest").starts_with("<span title=\""), "the oldest event's age: {hr}");
    assert!(hr.contains("class=\"last-error problem-cell\""), "a current error is marked: {hr}");
    let last_error = cell(hr, "last-error problem-cell");
    assert!(last_error.contains(&escaped(&error)), "{last_error}");
    assert!(last_error.contains(" UTC\">") && last_error.contains(" s ago</span> · "), "when: {last_error}");
    assert!(last_error.contains("failed attempt"), "how many attempts: {last_error}");
    assert_eq!(cell(hr, "number delivered"), "0");

    // The receiver is back: both delivered, nothing owed, the error no longer current.
    receiver.come_back();
    wait_for_state(&app, "webhook:hr", "both delivered", |s| s.backlog == 0 && s.delivered == 2);
    let page = admin.get("/console/events");
    let hr = row(&page, "webhook", "hr");
    assert_eq!((cell(hr, "number backlog"), cell(hr, "oldest")), ("0", "—"), "{hr}");
    assert!(cell(hr, "number delivered").starts_with("2<br><span class=\"hint\" title=\""), "{hr}");
    assert!(
        cell(hr, "number delivered").contains(" UTC\">last ") && cell(hr, "number delivered").ends_with(" ago</span>"),
        "{hr}"
    );
    assert!(cell(hr, "last-error").contains("delivered since"), "{hr}");
    assert!(!hr.contains("problem-cell"), "{hr}");
    assert_eq!(receiver.received().len(), 2);
}

/// `[ssf]`, so that receivers can create streams and be pushed to; retries after at most 1 s.
pub(crate) fn with_ssf(c: &mut provisiond::config::Config) {
    c.ssf = Some(Ssf {
        issuer: "https://idp.example".into(),
        key_file: c.mfa.key_file.with_file_name("keys/ssf.pem"),
        algorithm: SignatureAlgorithm::Es256,
        previous_key_files: Vec::new(),
    });
    c.events.max_backoff = 1;
}

/// A token of scope `ssf` named `name`, as an administrator gives a receiver.
pub(crate) fn ssf_token(app: &TestApp, name: &str) -> String {
    services(app).tokens.create(name, &[Scope::Ssf]).unwrap().expose().to_string()
}

/// Creates a stream through `POST /ssf/streams` with `token` (for the credential changes,
/// with `fields` added); its id.
pub(crate) fn create_stream(app: &TestApp, token: &str, fields: Value) -> String {
    let mut body = json!({"aud": "https://rp.example", "events_requested": [provisiond::events::set::CREDENTIAL_CHANGE]});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let r = app.call_with("POST", "/ssf/streams", Some(&body), &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["stream_id"].as_str().unwrap().to_string()
}

/// `http://user:hunter2@host…`.
fn with_password(url: &str) -> String {
    url.replacen("http://", "http://user:hunter2@", 1)
}

#[test]
fn console_events_shows_streams_with_the_refusal_of_a_receiver_as_text_and_how_to_add_receivers() {
    // No receiver: each table says how to add one.
    let app = TestApp::spawn();
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/events");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No webhook is configured. Add a <code>[[webhooks]]</code> section"), "{}", page.body);
    assert!(page.body.contains("Add an <code>[ssf]</code> section"), "{}", page.body);
    assert!(page.body.contains("<code>POST /ssf/streams</code>"), "{}", page.body);
    // Signed out: the sign-in page.
    let anonymous = browser().get(&format!("{}/console/events", app.base)).call().unwrap();
    assert_eq!((anonymous.status().as_u16(), header(&anonymous, "location")), (303, "/console/sign-in".into()));
    drop(app);

    // With [ssf]: a pushed stream whose receiver refuses every SET with markup in its reason,
    // and a polled one, paused, whose receiver wrote markup in its description and reason.
    let app = TestApp::spawn_with(with_ssf);
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/events");
    assert!(page.body.contains("A receiver creates one with <code>POST /ssf/streams</code>"), "{}", page.body);
    let receiver = Receiver::start();
    receiver.answer(400, r#"{"err": "invalid_request", "description": "<script>alert(2)</script>"}"#);
    let push_url = with_password(&receiver.url("/events?a=1&b=2"));
    let okta = ssf_token(&app, "okta-rp");
    let push = create_stream(
        &app,
        &okta,
        json!({"description": "Okta's push", "delivery": {"method": PUSH, "endpoint_url": push_url, "authorization_header": "Bearer receiver-secret"}}),
    );
    let hostile = "<script>alert(1)</script>";
    let poll = create_stream(&app, &app.token, json!({"description": hostile, "delivery": {"method": POLL}}));
    let paused =
        app.post("/ssf/status", &json!({"stream_id": poll, "status": "paused", "reason": "<img src=x onerror=alert(3)>"}));
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    reset_new_user(&app, "ada");
    let state = wait_for_state(&app, &format!("stream:{push}"), "the refusal", |s| s.dropped == 1);
    assert_eq!(state.last_error.as_deref(), Some("HTTP 400 invalid_request: <script>alert(2)</script>"));
    wait_for_state(&app, &format!("stream:{poll}"), "its event owed", |s| s.backlog == 1);

    let page = admin.get("/console/events");
    assert!(!page.body.contains("<script>alert") && !page.body.contains("<img src=x"), "markup shown as text: {}", page.body);
    assert!(!page.body.contains("receiver-secret"), "a stream's authorization header is never shown");
    let pushed = row(&page, "stream", &push);
    // Its URL with the password in it hidden.
    assert!(!page.body.contains("hunter2"));
    assert!(pushed.contains(&format!("push to {}", escaped(&push_url.replace("hunter2", "***")))), "{pushed}");
    assert!(pushed.contains(&escaped("Okta's push")) && pushed.contains("<td>okta-rp</td>"), "{pushed}");
    assert!(
        pushed.contains("<span class=\"event-type\" title=\"https://schemas.openid.net/secevent/caep/event-type/credential-change\">credential-change</span>"),
        "{pushed}"
    );
    assert!(pushed.contains("status-stream-enabled\">enabled</span>"), "{pushed}");
    assert_eq!((cell(pushed, "number backlog"), cell(pushed, "number dropped")), ("0", "1"), "{pushed}");
    assert!(
        cell(pushed, "last-error problem-cell").contains(&escaped("HTTP 400 invalid_request: <script>alert(2)</script>")),
        "{pushed}"
    );
    // The paused stream keeps its event until it is enabled again; it polls at its own endpoint.
    let polled = row(&page, "stream", &poll);
    assert!(polled.contains(&format!("poll at https://idp.example/ssf/poll/{poll}")), "{polled}");
    assert!(
        polled.contains(&escaped(hostile)) && polled.contains("<td><span class=\"hint\">an admin token</span></td>"),
        "{polled}"
    );
    assert!(polled.contains("status-stream-paused\">paused</span>"), "{polled}");
    assert!(polled.contains(&escaped("<img src=x onerror=alert(3)>")), "{polled}");
    assert_eq!((cell(polled, "number backlog"), cell(polled, "last-error")), ("1", "—"), "{polled}");
}
