//! Shared Signals push delivery (RFC 8935) from the outbox: a stream created through the
//! management API receives a reset as a SET within a second, signed with the keys served at
//! `jwks_uri` (verified by Python's jwcrypto), with the claims SSF asks for; a receiver's 400 is
//! final and recorded on the stream without holding back what follows.

use std::time::{Duration, Instant};

use provisiond::config::{SignatureAlgorithm, Ssf};
use provisiond::events::set;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::receiver::{Received, Receiver};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "https://rp.example";

fn transmitter() -> TestApp {
    TestApp::spawn_with(|c| {
        c.ssf = Some(Ssf {
            issuer: ISSUER.into(),
            key_file: c.mfa.key_file.with_file_name("ssf.pem"),
            algorithm: SignatureAlgorithm::Es256,
            previous_key_files: Vec::new(),
        });
        c.events.max_backoff = 1;
    })
}

/// A push stream to `receiver` asking for `events`; its id.
fn push_stream(app: &TestApp, receiver: &Receiver, events: &[&str], extra: Value) -> String {
    let mut body = json!({
        "aud": AUDIENCE,
        "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": receiver.url("/set"),
                     "authorization_header": "Bearer receiver-secret"},
        "events_requested": events,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let r = app.post("/ssf/streams", &body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["stream_id"].as_str().unwrap().to_string()
}

/// The SET's claims, verified with the keys as served.
fn verified(app: &TestApp, r: &Received) -> Value {
    let jwks = app.get("/ssf/jwks.json").body;
    let v = crate::ssf::verify(&json!({"token": r.body, "jwks": jwks, "audience": AUDIENCE, "issuer": ISSUER}));
    assert_eq!(v["header"]["typ"], "secevent+jwt");
    v["claims"].clone()
}

fn user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name, "emails": [{"value": format!("{name}@example.com"), "primary": true}]}))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_reset_arrives_as_a_signed_set_within_a_second_and_a_deactivation_as_two() {
    let receiver = Receiver::start();
    let app = transmitter();
    let events = [set::CREDENTIAL_CHANGE, set::ACCOUNT_DISABLED, set::SESSION_REVOKED];
    let stream = push_stream(&app, &receiver, &events, json!({}));
    // The stream's verification event may come first: ask for none and wait for what follows.
    let id = user(&app, "ada");
    let asked = Instant::now();
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "lost phone"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = receiver.wait_for(1, Duration::from_secs(5));
    let took = asked.elapsed();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(took < Duration::from_secs(1), "the SET took {took:?}");
    let set_request = &got[0];
    assert_eq!(set_request.headers["content-type"], "application/secevent+jwt");
    assert_eq!(set_request.headers["authorization"], "Bearer receiver-secret");
    let claims = verified(&app, set_request);
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some(ISSUER), Some(AUDIENCE)));
    assert_eq!(claims["sub_id"], json!({"format": "iss_sub", "iss": ISSUER, "sub": id}));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()) && claims["txn"].as_str().is_some());
    assert!(claims.get("sub").is_none() && claims.get("exp").is_none());
    let change = &claims["events"][set::CREDENTIAL_CHANGE];
    assert_eq!(
        (change["credential_type"].as_str(), change["change_type"].as_str(), change["initiating_entity"].as_str()),
        (Some("app"), Some("delete"), Some("admin"))
    );
    assert_eq!(change["reason_admin"]["en"], "lost phone");

    // A deactivation: RISC account-disabled and CAEP session-revoked, one change (one txn), two jti.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "active", "value": false}]});
    assert_eq!(app.call("PATCH", &format!("/scim/v2/Users/{id}"), Some(&patch)).status, 200);
    let got = receiver.wait_for(3, Duration::from_secs(5));
    assert_eq!(got.len(), 3, "{got:?}");
    let (a, b) = (verified(&app, &got[1]), verified(&app, &got[2]));
    let mut types: Vec<&str> =
        [&a, &b].iter().map(|c| c["events"].as_object().unwrap().keys().next().unwrap().as_str()).collect();
    // The SETs of one change go in the order of their event type URI (the queue's order).
    types.sort();
    assert_eq!(types, [set::SESSION_REVOKED, set::ACCOUNT_DISABLED]);
    assert_eq!(a["txn"], b["txn"]);
    assert_ne!(a["jti"], b["jti"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 3, "nothing twice");
    let ready = app.get("/readyz");
    assert_eq!(ready.body["events"][format!("stream:{stream}")]["delivered"], 3, "{:?}", ready.body);
}

#[test]
fn a_receivers_400_is_final_recorded_on_the_stream_and_does_not_hold_back_the_next() {
    let receiver = Receiver::start();
    let app = transmitter();
    let stream = push_stream(&app, &receiver, &[set::CREDENTIAL_CHANGE], json!({"subject_format": "email"}));
    receiver.answer(400, r#"{"err": "invalid_audience", "description": "not for us"}"#);
    let first = user(&app, "first");
    assert_eq!(app.post(&format!("/api/v1/users/{first}/mfa/reset"), &json!({"reason": "one"})).status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = loop {
        let ready = app.get("/readyz");
        let state = ready.body["events"][format!("stream:{stream}")].clone();
        if state["dropped"] == 1 || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(state["dropped"], 1, "{state}");
    assert!(state["lastError"].as_str().unwrap().contains("invalid_audience"), "{state}");
    assert_eq!(state["backlog"], 0, "refused for good: not retried");
    receiver.answer(202, "");
    let second = user(&app, "second");
    assert_eq!(app.post(&format!("/api/v1/users/{second}/mfa/reset"), &json!({"reason": "two"})).status, 200);
    let got = receiver.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let claims = verified(&app, &got[0]);
    // The stream asked for email subjects: iss_sub with the email beside it.
    assert_eq!(
        claims["sub_id"],
        json!({"format": "aliases", "identifiers": [
            {"format": "iss_sub", "iss": ISSUER, "sub": second},
            {"format": "email", "email": "second@example.com"}]})
    );
}
