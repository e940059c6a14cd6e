//! Enrolment links sent by email, against a real SMTP server (aiosmtpd, see smtp.rs): through
//! the API, the command line and the console; a user without an address and a server that
//! refuses the connection give a per-user outcome, audited, and the link stays valid.

use std::time::Duration;

use provisiond::domain::operators::Role;
use serde_json::json;

use crate::console::Console;
use crate::enrolment::{open, PUBLIC_URL};
use crate::helpers::TestApp;
use crate::smtp::SmtpServer;

fn app_with(smtp: provisiond::config::Smtp) -> TestApp {
    TestApp::spawn_with(|c| {
        c.server.public_url = Some(PUBLIC_URL.into());
        c.smtp = Some(smtp);
    })
}

fn user(app: &TestApp, name: &str, emails: serde_json::Value) -> String {
    app.create_user(&json!({"userName": name, "emails": emails}))["id"].as_str().unwrap().to_string()
}

fn events_of(app: &TestApp, id: &str, kind: &str) -> Vec<serde_json::Value> {
    let r = app.get(&format!("/api/v1/audit?userId={id}&type={kind}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

/// The link in a message's text part, on the test daemon.
fn link_in(app: &TestApp, text: &str) -> String {
    let url = text.lines().find(|l| l.starts_with(PUBLIC_URL)).expect("the link is in the text");
    url.trim().replace(PUBLIC_URL, &app.base)
}

#[test]
fn send_true_mails_the_link_to_the_primary_else_the_work_address_and_says_so_per_user() {
    let server = SmtpServer::start();
    let app = app_with(server.config());
    let ada = user(
        &app,
        "ada",
        json!([{"value": "ada.home@example.org", "type": "home"}, {"value": "ada@example.com", "type": "work", "primary": true}]),
    );
    let bob = user(
        &app,
        "bob",
        json!([{"value": "bob.home@example.org", "type": "home"}, {"value": "bob@example.com", "type": "work"}]),
    );
    let cy = user(&app, "cy", json!([{"value": "cy@example.org", "type": "home"}]));

    let r = app.post(&format!("/api/v1/users/{ada}/mfa/enrolment-links"), &json!({"send": true}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["email"], json!({"status": "sent", "to": "ada@example.com"}));
    let r = app.post(&format!("/api/v1/users/{bob}/mfa/enrolment-links"), &json!({"send": true}));
    assert_eq!(r.body["email"], json!({"status": "sent", "to": "bob@example.com"}), "the work address without a primary");
    let got = server.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.iter().map(|m| m.to[0].as_str()).collect::<Vec<_>>(), ["ada@example.com", "bob@example.com"]);
    let text = got[0].text.as_deref().unwrap();
    let url = r.body["url"].as_str().unwrap();
    assert!(got[1].text.as_deref().unwrap().contains(url), "the message holds the link the API returned");
    assert!(got[0].html.as_deref().unwrap().contains(&format!("{PUBLIC_URL}/enrol/")));
    assert_eq!(open(&link_in(&app, text)).status, 200, "the mailed link opens the page");
    assert_eq!(events_of(&app, &ada, "mfa.enrolment_link.sent")[0]["detail"]["to"], "ada@example.com");

    let r = app.post(&format!("/api/v1/users/{cy}/mfa/enrolment-links"), &json!({"send": true}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["email"]["status"], "no_address");
    assert!(r.body["email"]["detail"].as_str().unwrap().contains("no primary or work email"), "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap().replace(PUBLIC_URL, &app.base);
    assert_eq!(open(&url).status, 200, "the link works all the same");
    assert_eq!(events_of(&app, &cy, "mfa.enrolment_link.send_failed").len(), 1);
    assert_eq!(server.messages().len(), 2, "nothing sent for cy");

    let r = app.post(&format!("/api/v1/users/{ada}/mfa/enrolment-links"), &json!({"send": "yes"}));
    assert_eq!(r.status, 400);
}

#[test]
fn a_refused_connection_is_reported_and_audited_and_the_link_stays_valid() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut smtp = provisiond::config::Smtp::new("127.0.0.1", crate::smtp::FROM);
    (smtp.port, smtp.starttls, smtp.timeout) = (Some(closed), false, 5);
    let app = app_with(smtp);
    let id = user(&app, "dana", json!([{"value": "dana@example.com", "primary": true}]));
    let r = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({"send": true}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!((r.body["email"]["status"].as_str(), r.body["email"]["to"].as_str()), (Some("failed"), Some("dana@example.com")));
    let detail = r.body["email"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("127.0.0.1:{closed}")), "{detail}");
    let url = r.body["url"].as_str().unwrap().replace(PUBLIC_URL, &app.base);
    assert_eq!(open(&url).status, 200, "the link stays valid");
    let failed = events_of(&app, &id, "mfa.enrolment_link.send_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["detail"]["to"], "dana@example.com");
    assert!(failed[0]["detail"]["error"].as_str().unwrap().contains(&closed.to_string()), "{failed:?}");
}

#[test]
fn send_without_an_smtp_section_is_refused_before_a_link_is_made() {
    let app = crate::enrolment::app();
    let id = user(&app, "eve", json!([{"value": "eve@example.com", "primary": true}]));
    let r = app.post(&format!("/api/v1/users/{id}/mfa/enrolment-links"), &json!({"send": true}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("[smtp]"), "{:?}", r.body);
    assert!(events_of(&app, &id, "mfa.enrolment_link.created").is_empty(), "no link was made");
}

#[test]
fn the_console_resets_and_mails_each_user_their_link_listing_what_became_of_each_email() {
    let server = SmtpServer::start();
    let app = app_with(server.config());
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let ids = [
        user(&app, "fay", json!([{"value": "fay@example.com", "primary": true}])),
        user(&app, "gil", json!([])),
        user(&app, "hal", json!([{"value": "hal@example.com", "type": "work"}])),
    ];
    let page = c.get(&format!("/console/users/{}", ids[0]));
    assert!(page.body.contains("name=\"send\" value=\"1\"> Send by email"), "{}", page.body);
    let dialog = c.get(&format!("/console/users/reset?id={}", ids[0]));
    assert!(dialog.body.contains("Send by email"), "{}", dialog.body);

    let mut form: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
    form.extend([("reason", "new phones for everyone"), ("links", "1"), ("send", "1")]);
    let done = c.post("/console/users/reset", &form);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("3 of 3 links created"), "{}", done.body);
    assert!(done.body.contains("Sent to fay@example.com") && done.body.contains("Sent to hal@example.com"), "{}", done.body);
    assert!(done.body.contains("Not sent: the user has no primary or work email address"), "{}", done.body);
    let got = server.wait_for(2, Duration::from_secs(10));
    let mut to: Vec<&str> = got.iter().map(|m| m.to[0].as_str()).collect();
    to.sort();
    assert_eq!(to, ["fay@example.com", "hal@example.com"]);
    for m in &got {
        assert_eq!(open(&link_in(&app, m.text.as_deref().unwrap())).status, 200);
    }
    let sent = events_of(&app, &ids[0], "mfa.enrolment_link.sent");
    assert_eq!((sent[0]["origin"].as_str(), sent[0]["actor"].as_str()), (Some("console"), Some("alice")));
}
