//! Webhooks from the outbox: a reset reaches a receiver in the test process within a second,
//! signed as the Standard Webhooks reference library (Python `standardwebhooks`) verifies it;
//! a receiver that is down gets everything when it returns, in order and once; an event
//! committed before a crash is delivered after the restart; a rolled-back change sends nothing;
//! two instances deliver each event once.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use provisiond::config::{Config, Webhook};
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestDb};
use crate::receiver::{Received, Receiver};
use crate::sync::Serve;

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

/// A Standard Webhooks secret (`whsec_` and base64 of 32 random bytes) written to `dir`.
fn secret_in(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let bytes: [u8; 32] = rand::random();
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let path = dir.join("webhook.secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    (secret, path)
}

/// The daemon with one webhook to `receiver`, retrying after at most `max_backoff` seconds.
fn with_webhook(receiver: &Receiver, max_backoff: u64) -> (TestApp, String) {
    let secret = std::sync::Mutex::new(String::new());
    let url = receiver.url("/hook");
    let app = TestApp::spawn_with(|c| configure(c, &url, max_backoff, &secret));
    let secret = secret.into_inner().unwrap();
    (app, secret)
}

pub(crate) fn configure(c: &mut Config, url: &str, max_backoff: u64, secret: &std::sync::Mutex<String>) {
    let dir = c.mfa.key_file.parent().unwrap().to_path_buf();
    let (text, path) = secret_in(&dir);
    *secret.lock().unwrap() = text;
    c.webhooks =
        vec![Webhook { name: "hr".into(), url: url.into(), secret_file: Some(path), credential: None, events: Vec::new() }];
    c.events.max_backoff = max_backoff;
}

/// Verifies `r` with the reference library; the payload, or the library's refusal.
fn verify(secret: &str, r: &Received) -> Result<Value, String> {
    let headers: Value = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), json!(r.headers.get(*h).cloned().unwrap_or_default())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/webhooks/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "{python} is missing: run ./tests/run-all.sh once (it makes .venv/webhooks with standardwebhooks)"
    );
    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"secret": secret, "headers": headers, "body": r.body});
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.success() {
        true => Ok(serde_json::from_slice(&out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn reset(app: &TestApp, id: &str, reason: &str) {
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": reason}));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name, "emails": [{"value": format!("{name}@example.com"), "primary": true}]}))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn user_names(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["data"]["userName"].as_str().unwrap().into())
        .collect()
}

fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.headers["webhook-id"].clone()).collect()
}

#[test]
fn a_reset_reaches_the_webhook_within_a_second_signed_as_standard_webhooks_verify() {
    let receiver = Receiver::start();
    let (app, secret) = with_webhook(&receiver, 600);
    let id = user(&app, "ada");
    let asked = Instant::now();
    reset(&app, &id, "lost phone");
    let got = receiver.wait_for(1, Duration::from_secs(5));
    let took = asked.elapsed();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(took < Duration::from_secs(1), "the webhook took {took:?}");
    let r = &got[0];
    assert_eq!((r.path.as_str(), r.headers["content-type"].as_str()), ("/hook", "application/json"));
    let payload = verify(&secret, r).expect("the reference library verifies the signature");
    assert_eq!(payload["type"], "mfa.reset");
    let data = &payload["data"];
    assert_eq!(
        (data["userId"].as_str(), data["userName"].as_str(), data["email"].as_str()),
        (Some(id.as_str()), Some("ada"), Some("ada@example.com"))
    );
    assert_eq!((data["origin"].as_str(), data["reason"].as_str()), (Some("api"), Some("lost phone")));
    // The same library refuses another secret and a changed body: the check above means something.
    let other = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    assert!(verify(&other, r).is_err());
    let tampered = Received { body: r.body.replace("lost phone", "lost phonE"), ..r.clone() };
    assert!(verify(&secret, &tampered).is_err());
    // Nothing more than the one event, and the backlog is empty again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(metric(&app, r#"provisiond_events_backlog{receiver="webhook:hr"}"#), Some(0.0));
    assert_eq!(metric(&app, r#"provisiond_events_delivered_total{receiver="webhook:hr"}"#), Some(1.0));
}

/// A sample of `/metrics`.
fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let r = app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", app.token))]);
    assert_eq!(r.status, 200);
    crate::metrics::sample(r.body.as_str().unwrap(), series)
}

#[test]
fn a_receiver_down_for_30_seconds_gets_every_event_after_it_returns_in_order_and_once() {
    let receiver = Receiver::start();
    let (app, secret) = with_webhook(&receiver, 2);
    let ids_of_users: Vec<String> = (0..5).map(|i| user(&app, &format!("u{i}"))).collect();
    receiver.go_down();
    for (i, id) in ids_of_users.iter().enumerate() {
        reset(&app, id, &format!("reset {i}"));
    }
    // Deactivations too (SCIM), between the resets of the users they are about.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "active", "value": false}]});
    assert_eq!(app.call("PATCH", &format!("/scim/v2/Users/{}", ids_of_users[1]), Some(&patch)).status, 200);
    std::thread::sleep(Duration::from_secs(30));
    // Meanwhile the operator sees the backlog, its age and the failures.
    assert_eq!(metric(&app, r#"provisiond_events_backlog{receiver="webhook:hr"}"#), Some(6.0));
    assert!(metric(&app, r#"provisiond_events_oldest_age_seconds{receiver="webhook:hr"}"#).unwrap() >= 29.0);
    assert!(metric(&app, r#"provisiond_events_delivery_failures_total{receiver="webhook:hr"}"#).unwrap() >= 5.0);
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 200, "a receiver that is down does not take the daemon out of service: {:?}", ready.body);
    assert_eq!(ready.body["events"]["webhook:hr"]["backlog"], 6, "{:?}", ready.body);
    assert!(ready.body["events"]["webhook:hr"]["lastError"].as_str().is_some(), "{:?}", ready.body);
    receiver.come_back();
    let got = receiver.wait_for(6, Duration::from_secs(15));
    assert_eq!(user_names(&got), ["u0", "u1", "u2", "u3", "u4", "u1"], "in the order of the changes");
    let types: Vec<String> =
        got.iter().map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types[5], "user.deactivated");
    let mut unique = ids(&got);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "no event twice: {:?}", ids(&got));
    for r in &got {
        verify(&secret, r).expect("every retried delivery is signed afresh and verifies");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.received().len(), 6, "nothing sent again after it was taken");
}

#[test]
fn an_event_committed_before_the_daemon_is_killed_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path());
    let receiver = Receiver::start();
    // Refusing at first: the event is committed, tried, and still owed when the daemon dies.
    receiver.answer(503, "");
    let (secret, secret_file) = secret_in(dir.path());
    let config = dir.path().join("provisiond.toml");
    std::fs::write(
        &config,
        format!(
            "{}[mfa]\nkey_file = {:?}\n[log]\nlevel = \"warn\"\n[events]\nmax_backoff = 1\n\
             [[webhooks]]\nname = \"hr\"\nurl = {:?}\nsecret_file = {:?}\n",
            db.toml(),
            dir.path().join("mfa.key").display().to_string(),
            receiver.url("/hook"),
            secret_file.display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "token", "create", "--name", "idp", "--scope", "scim,admin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();

    let mut daemon = Serve::start_on(&config, &token, "/readyz");
    let (status, created) =
        daemon.send("POST", "/scim/v2/Users", &json!({"schemas": [crate::helpers::USER_SCHEMA], "userName": "crash"}));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, body) = daemon.send("POST", &format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "crash test"}));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.attempts() == 0 {
        assert!(Instant::now() < deadline, "the daemon never tried to deliver");
        std::thread::sleep(Duration::from_millis(10));
    }
    let port = daemon.port();
    daemon.kill();
    assert!(receiver.received().is_empty());

    receiver.answer(204, "");
    // Restarted on its address, it takes up what it had claimed before it died.
    let _daemon = Serve::start_at(&config, &token, "/readyz", port);
    let got = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(user_names(&got), ["crash"], "delivered once after the restart");
    let payload = verify(&secret, &got[0]).unwrap();
    assert_eq!((payload["type"].as_str(), payload["data"]["reason"].as_str()), (Some("mfa.reset"), Some("crash test")));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn two_instances_deliver_each_event_once() {
    let receiver = Receiver::start();
    let (a, _) = with_webhook(&receiver, 1);
    // The same configuration (the same webhook), its own MFA key copy: as behind a load balancer.
    let b = a.another_instance();
    let users: Vec<String> = (0..40).map(|i| user(&a, &format!("p{i}"))).collect();
    std::thread::scope(|s| {
        for (i, id) in users.iter().enumerate() {
            let app = if i % 2 == 0 { &a } else { &b };
            s.spawn(move || reset(app, id, "both instances"));
        }
    });
    let got = receiver.wait_for(40, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let got_all = receiver.received();
    assert_eq!(got.len(), 40);
    let mut unique = ids(&got_all);
    unique.sort();
    unique.dedup();
    assert_eq!((got_all.len(), unique.len()), (40, 40), "each event once: {:?}", user_names(&got_all));
}

#[test]
fn a_dry_run_that_would_deactivate_sends_nothing_and_the_run_that_does_sends_it() {
    use crate::slapd::{people, Slapd, PEOPLE};
    let slapd = Slapd::start(&people(0..3));
    let receiver = Receiver::start();
    let (url, secret) = (receiver.url("/hook"), std::sync::Mutex::new(String::new()));
    let mut ldap = slapd.config();
    ldap.safety.max_deactivate_percent = 100.0;
    let app = TestApp::spawn_with(|c| {
        c.ldap = Some(ldap);
        configure(c, &url, 1, &secret);
    });
    let first = crate::sync::sync(&app, true);
    assert_eq!(first["created"], 3, "{first}");
    slapd.modify(&format!("dn: uid=user1,{PEOPLE}\nchangetype: delete\n"));
    // A dry run deactivates user1 in its transaction and rolls it back: its event row with it.
    let cli = crate::sync::Cli::new(&app, &slapd, "[ldap.safety]\nmax_deactivate_percent = 100.0\n");
    let (ok, summary) = cli.sync(&["--full", "--dry-run"]);
    assert!(ok, "{summary}");
    assert_eq!(summary["deactivated"], 1, "the dry run would deactivate user1: {summary}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(receiver.received().is_empty(), "a rolled-back change emits nothing: {:?}", receiver.received());
    let run = crate::sync::sync(&app, true);
    assert_eq!(run["deactivated"], 1, "{run}");
    let got = receiver.wait_for(1, Duration::from_secs(5));
    assert_eq!(user_names(&got), ["user1"]);
    let payload = verify(&secret.into_inner().unwrap(), &got[0]).unwrap();
    assert_eq!(payload["type"], "user.deactivated");
    assert_eq!(payload["data"]["origin"], "directory");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 1);
}
