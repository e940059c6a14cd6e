//! The console's Events page over HTTP, against the real daemon and its deliverer: a webhook
//! whose receiver is down shows its backlog and the connection's error, then its deliveries
//! once the receiver is back; a Shared Signals stream that refuses an event shows the refusal
//! and the drop; what receivers wrote (descriptions, reasons, errors) is shown as text; with
//! no receiver the page says how to add one; signed out it leads to the sign-in page.

use std::time::{Duration, Instant};

use provisiond::config::{SignatureAlgorithm, Ssf};
use provisiond::domain::events::ReceiverState;
use provisiond::domain::operators::Role;
use provisiond::store::streams::StreamRow;
use serde_json::json;

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

/// A stream row as a receiver's `POST /ssf/streams` would have made it.
fn stream(id: &str, push_to: Option<&str>, description: &str, status: &str, reason: Option<&str>) -> StreamRow {
    let now = chrono::Utc::now().naive_utc();
    let events = json!([provisiond::events::set::CREDENTIAL_CHANGE]).to_string();
    StreamRow {
        id: id.into(),
        owner: Some("<b>robot</b>".into()),
        audience: json!(["https://receiver.example"]).to_string(),
        events_requested: events.clone(),
        events_delivered: events,
        delivery_method: if push_to.is_some() { provisiond::domain::streams::PUSH } else { provisiond::domain::streams::POLL }
            .into(),
        endpoint_url: push_to.map(str::to_string),
        authorization_header: None,
        subject_format: "iss_sub".into(),
        description: Some(description.into()),
        status: status.into(),
        status_reason: reason.map(str::to_string),
        created_at: now,
        updated_at: now,
    }
}

/// A pushed stream, enabled, for the credential changes.
pub(crate) fn push_stream(id: &str, description: &str, url: &str) -> StreamRow {
    StreamRow { owner: Some("okta".into()), ..stream(id, Some(url), description, "enabled", None) }
}

/// `[ssf]`, so that streams are signed for and pushed to.
pub(crate) fn with_ssf(c: &mut provisiond::config::Config) {
    c.ssf = Some(Ssf {
        issuer: "https://idp.example".into(),
        key_file: c.mfa.key_file.with_file_name("keys/ssf.pem"),
        algorithm: SignatureAlgorithm::Es256,
        previous_key_files: Vec::new(),
    })
}

/// `http://user:hunter2@host…`.
fn with_password(url: &str) -> String {
    url.replacen("http://", "http://user:hunter2@", 1)
}

pub(crate) fn insert_streams(app: &TestApp, rows: &[StreamRow]) {
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let mut conn = pool.get().unwrap();
    provisiond::store::write_tx(&mut conn, |tx| rows.iter().try_for_each(|r| provisiond::store::streams::insert(tx, r))).unwrap();
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
    // and a paused polled one whose receiver wrote markup in its description.
    let app = TestApp::spawn_with(with_ssf);
    let admin = Console::sign_in(&app, "alice", Role::Admin);
    let page = admin.get("/console/events");
    assert!(page.body.contains("A receiver creates one with <code>POST /ssf/streams</code>"), "{}", page.body);
    let receiver = Receiver::start();
    receiver.answer(400, r#"{"err": "invalid_request", "description": "<script>alert(2)</script>"}"#);
    let hostile = "<script>alert(1)</script>";
    insert_streams(
        &app,
        &[
            stream("s-push", Some(&with_password(&receiver.url("/events?a=1&b=2"))), "Okta's push", "enabled", None),
            stream("s-poll", None, hostile, "paused", Some("<img src=x onerror=alert(3)>")),
        ],
    );
    reset_new_user(&app, "ada");
    let state = wait_for_state(&app, "stream:s-push", "the refusal", |s| s.dropped == 1);
    assert_eq!(state.last_error.as_deref(), Some("HTTP 400 invalid_request: <script>alert(2)</script>"));

    let page = admin.get("/console/events");
    assert!(!page.body.contains("<script>alert") && !page.body.contains("<img src=x"), "markup shown as text: {}", page.body);
    let push = row(&page, "stream", "s-push");
    // Its URL with the password in it hidden.
    let shown = with_password(&receiver.url("/events?a=1&b=2")).replace("hunter2", "***");
    assert!(push.contains(&format!("push to {}", escaped(&shown))), "{push}");
    assert!(!page.body.contains("hunter2"));
    assert!(push.contains(&escaped("Okta's push")) && push.contains(&escaped("<b>robot</b>")), "{push}");
    assert!(push.contains("<span class=\"event-type\" title=\"https://schemas.openid.net/secevent/caep/event-type/credential-change\">credential-change</span>"), "{push}");
    assert!(push.contains("status-stream-enabled\">enabled</span>"), "{push}");
    assert_eq!((cell(push, "number backlog"), cell(push, "number dropped")), ("0", "1"), "{push}");
    assert!(
        cell(push, "last-error problem-cell").contains(&escaped("HTTP 400 invalid_request: <script>alert(2)</script>")),
        "{push}"
    );
    // The paused stream keeps its event until it is enabled again.
    let poll = row(&page, "stream", "s-poll");
    assert!(poll.contains("<td class=\"url\">poll</td>") && poll.contains(&escaped(hostile)), "{poll}");
    assert!(
        poll.contains("status-stream-paused\">paused</span>") && poll.contains(&escaped("<img src=x onerror=alert(3)>")),
        "{poll}"
    );
    wait_for_state(&app, "stream:s-poll", "its event owed", |s| s.backlog == 1);
    let poll_page = admin.get("/console/events");
    let poll = row(&poll_page, "stream", "s-poll");
    assert_eq!((cell(poll, "number backlog"), cell(poll, "last-error")), ("1", "—"), "{poll}");
}
