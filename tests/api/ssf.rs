//! The Shared Signals transmitter: its public documents and its signatures (the configuration
//! metadata at the issuer's well-known path, the keys at `jwks_uri`, and a token signed with
//! the daemon's key that an independent implementation, Python's jwcrypto, verifies with the
//! keys as served); the stream management API (SSF 1.0 §8.1) and poll delivery (RFC 8936).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisiond::clock::SystemClock;
use provisiond::config::{SignatureAlgorithm, Ssf};
use provisiond::domain::tokens::{Scope, Tokens};
use provisiond::domain::Services;
use provisiond::events::{keys::SigningKeys, set};
use serde_json::{json, Value};

use crate::helpers::{Reply, TestApp};

const ISSUER: &str = "https://idp.example/tenant";

fn with_ssf(alg: SignatureAlgorithm) -> TestApp {
    TestApp::spawn_with(|c| {
        c.ssf = Some(Ssf {
            issuer: ISSUER.into(),
            key_file: c.mfa.key_file.with_file_name("keys/ssf.pem"),
            algorithm: alg,
            previous_key_files: Vec::new(),
        })
    })
}

fn key_file(app: &TestApp) -> PathBuf {
    app.config.ssf.as_ref().unwrap().key_file.clone()
}

#[test]
fn the_configuration_sits_at_the_issuers_well_known_path_and_names_the_keys() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let r = app.get("/.well-known/ssf-configuration/tenant");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["issuer"], ISSUER);
    assert_eq!(r.body["spec_version"], "1_0");
    assert_eq!(r.body["jwks_uri"], "https://idp.example/ssf/jwks.json");
    assert_eq!(r.body["delivery_methods_supported"], json!([PUSH, POLL]));
    assert_eq!(r.body["configuration_endpoint"], "https://idp.example/ssf/streams");
    assert_eq!(r.body["status_endpoint"], "https://idp.example/ssf/status");
    assert_eq!(r.body["verification_endpoint"], "https://idp.example/ssf/verify");
    assert_eq!(r.body["authorization_schemes"], json!([{"spec_urn": "urn:ietf:rfc:6750"}]));
    assert_eq!(r.body["default_subjects"], "ALL");
    for elsewhere in ["/.well-known/ssf-configuration", "/.well-known/ssf-configuration/other"] {
        assert_eq!(app.get(elsewhere).status, 404, "{elsewhere}");
    }
    let jwks = app.get("/ssf/jwks.json");
    assert_eq!(jwks.status, 200);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{:?}", jwks.body);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str(), keys[0]["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("sig"))
    );
    assert!(keys[0].get("d").is_none(), "never the private half");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key_file(&app)).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn without_ssf_there_is_no_transmitter() {
    let app = TestApp::spawn();
    assert_eq!(app.get("/.well-known/ssf-configuration").status, 404);
    assert_eq!(app.get("/ssf/jwks.json").status, 404);
    assert_eq!(app.get("/ssf/streams").status, 404, "no streams to manage");
    assert_eq!(app.post("/ssf/streams", &json!({})).status, 404);
}

#[test]
fn a_token_signed_with_the_daemons_key_verifies_elsewhere_with_the_served_keys() {
    for alg in [SignatureAlgorithm::Es256, SignatureAlgorithm::EdDsa] {
        let app = with_ssf(alg);
        let jwks = app.get("/ssf/jwks.json").body;
        let keys = SigningKeys::load(&key_file(&app), alg, &[]).unwrap();
        let audience = vec!["https://rp.example".to_string()];
        let envelope = set::Envelope {
            issuer: ISSUER,
            audience: &audience,
            txn: "txn-1",
            sub_id: set::user_subject("iss_sub", ISSUER, "u-1", "ada", None),
            issued_at: chrono::Utc::now(),
        };
        let occurrence = set::Occurrence {
            kind: "mfa.reset",
            at: chrono::Utc::now(),
            origin: "console",
            reason: Some("lost phone"),
            factor: None,
        };
        let (event_type, event) = set::signals(&occurrence).remove(0);
        let jti = "0193d6a0-jti";
        let token = set::sign(&keys, &envelope, jti, event_type, event).unwrap();
        let verified = verify(&json!({"token": token, "jwks": jwks, "audience": "https://rp.example", "issuer": ISSUER}));
        assert_eq!(verified["header"]["typ"], "secevent+jwt", "{alg:?}: {verified}");
        assert_eq!(verified["header"]["kid"], jwks["keys"][0]["kid"]);
        let claims = &verified["claims"];
        assert_eq!(claims["jti"], jti);
        let change = &claims["events"][set::CREDENTIAL_CHANGE];
        assert_eq!((change["credential_type"].as_str(), change["change_type"].as_str()), (Some("app"), Some("delete")));
        assert_eq!(change["reason_admin"]["en"], "lost phone");
    }
}

/// jwcrypto from the virtualenv `.venv/signals` (tests/run-all.sh creates it).
pub(crate) fn verify(request: &Value) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/signals/bin/python");
    assert!(
        python.exists(),
        "verifying tokens needs Python's jwcrypto in .venv/signals; create it with:\n  cd {} && python3 -m venv .venv/signals && \
         .venv/signals/bin/python -m pip install {JWCRYPTO}\n(tests/run-all.sh does it)",
        root.display()
    );
    let mut child = Command::new(python)
        .arg(root.join("tests/verify_set.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/verify_set.py");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jwcrypto refused the token: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("verify_set.py prints JSON")
}

/// The jwcrypto release the tests verify with (tests/run-all.sh installs the same).
const JWCRYPTO: &str = "jwcrypto==1.6.1";

const PUSH: &str = "urn:ietf:rfc:8935";
const POLL: &str = "urn:ietf:rfc:8936";
/// The authorization header a push receiver asks for: never in an answer, never stored in clear.
const PUSH_HEADER: &str = "Bearer rp-secret-4f1c9a";

/// A token with these scopes, as `token create` makes it.
fn token(app: &TestApp, name: &str, scopes: &[Scope]) -> String {
    let pool = provisiond::app::open_database(&app.config).expect("database");
    Tokens::new(pool, Arc::new(SystemClock)).create(name, scopes).expect("token").expose().to_string()
}

/// The services of the test's daemon, on its database and key (to look inside, and to
/// dispatch).
fn services(app: &TestApp) -> Services {
    let pool = provisiond::app::open_database(&app.config).expect("database");
    let sealer = Arc::new(provisiond::app::load_sealer(&app.config).expect("MFA key"));
    Services::new(pool, sealer, &app.config, Arc::new(SystemClock))
}

/// Polls (acknowledging nothing) until the stream is owed at least `n` SETs: the deliverer's
/// dispatcher makes them within a round of the change.
fn poll_until(app: &TestApp, token: &str, id: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let polled = poll(app, token, id, &json!({"returnImmediately": true}));
        if sets(&polled).len() >= n || Instant::now() > deadline {
            return polled;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request with bearer token `token` (none when empty).
fn as_token(app: &TestApp, token: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let bearer = format!("Bearer {token}");
    let headers: &[(&str, &str)] = if token.is_empty() { &[] } else { &[("Authorization", &bearer)] };
    app.call_with(method, path, body, headers)
}

fn create(app: &TestApp, token: &str, body: &Value) -> Value {
    let r = as_token(app, token, "POST", "/ssf/streams", Some(body));
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

fn id_of(stream: &Value) -> String {
    stream["stream_id"].as_str().expect("a stream_id").to_string()
}

fn poll(app: &TestApp, token: &str, id: &str, body: &Value) -> Value {
    let r = as_token(app, token, "POST", &format!("/ssf/poll/{id}"), Some(body));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn sets(polled: &Value) -> Vec<(String, String)> {
    polled["sets"].as_object().expect("sets").iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

fn supported() -> Value {
    json!(set::SUPPORTED)
}

#[test]
fn ssf_streams_are_created_read_updated_replaced_and_deleted() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let admin = app.token.clone();

    // Nothing asked: a poll stream of every supported event about the issuer, endpoint ours.
    let polled = create(&app, &admin, &json!({}));
    let poll_id = id_of(&polled);
    assert_eq!(polled["iss"], ISSUER);
    assert_eq!(polled["aud"], ISSUER);
    assert_eq!(polled["events_supported"], supported());
    assert_eq!(polled["events_requested"], supported());
    assert_eq!(polled["events_delivered"], supported());
    assert_eq!(polled["delivery"], json!({"method": POLL, "endpoint_url": format!("https://idp.example/ssf/poll/{poll_id}")}));
    assert_eq!(polled["min_verification_interval"], 60);
    assert_eq!(polled["subject_format"], "iss_sub");
    assert!(polled.get("description").is_none());
    app.clock.advance(chrono::Duration::seconds(1)); // lists go oldest first

    // Push: aud as given, unknown event types kept as asked but not delivered, the header kept
    // sealed and never shown.
    let asked = json!({
        "aud": ["https://rp.example", "https://rp2.example"],
        "events_requested": [set::CREDENTIAL_CHANGE, "https://example.com/unknown-event"],
        "delivery": {"method": PUSH, "endpoint_url": "https://rp.example/ssf/events", "authorization_header": PUSH_HEADER},
        "description": "the RP",
        "subject_format": "email",
        "events_delivered": [set::ACCOUNT_PURGED],
        "iss": "https://elsewhere.example",
    });
    let r = as_token(&app, &admin, "POST", "/ssf/streams", Some(&asked));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let push = r.body;
    let push_id = id_of(&push);
    assert_ne!(push_id, poll_id);
    assert_eq!(push["iss"], ISSUER, "read-only fields are the transmitter's");
    assert_eq!(push["aud"], json!(["https://rp.example", "https://rp2.example"]));
    assert_eq!(push["events_requested"], asked["events_requested"]);
    assert_eq!(push["events_delivered"], json!([set::CREDENTIAL_CHANGE]));
    assert_eq!(push["delivery"], json!({"method": PUSH, "endpoint_url": "https://rp.example/ssf/events"}));
    assert_eq!((push["description"].as_str(), push["subject_format"].as_str()), (Some("the RP"), Some("email")));
    assert!(!push.to_string().contains(PUSH_HEADER));

    // Read one, and the list.
    let one = as_token(&app, &admin, "GET", &format!("/ssf/streams?stream_id={push_id}"), None);
    assert_eq!(one.status, 200);
    assert_eq!(one.body, push);
    let all = as_token(&app, &admin, "GET", "/ssf/streams", None);
    assert_eq!(all.status, 200);
    assert_eq!(all.body, json!([polled, push]));

    // PATCH: what it gives changes, read-only fields are ignored, the header stays.
    let patch = json!({"stream_id": push_id, "description": "renamed", "iss": "https://x.example", "events_delivered": []});
    let patched = as_token(&app, &admin, "PATCH", "/ssf/streams", Some(&patch));
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["description"], "renamed");
    assert_eq!((&patched.body["aud"], &patched.body["iss"]), (&push["aud"], &json!(ISSUER)));
    assert_eq!(patched.body["events_delivered"], json!([set::CREDENTIAL_CHANGE]));
    let header_of = || services(&app).streams.all().unwrap().into_iter().find(|s| s.id == push_id).unwrap().authorization_header;
    let same = json!({"stream_id": push_id, "delivery": {"method": PUSH, "endpoint_url": "https://rp.example/ssf/events"}});
    let patched = as_token(&app, &admin, "PATCH", "/ssf/streams", Some(&same));
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(header_of().as_deref(), Some(PUSH_HEADER), "a PATCH to the same push endpoint keeps the header");
    let listed = as_token(&app, &admin, "GET", "/ssf/streams", None);
    for body in [&patched.body, &listed.body] {
        assert!(!body.to_string().contains(PUSH_HEADER) && !body.to_string().contains("authorization_header"), "{body}");
    }
    assert!(!app.db.stored_bytes().contains(PUSH_HEADER.as_bytes()), "the header is stored sealed");
    let moved = json!({"stream_id": push_id, "delivery": {"method": PUSH, "endpoint_url": "http://127.0.0.1:9/events"}});
    let patched = as_token(&app, &admin, "PATCH", "/ssf/streams", Some(&moved));
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["delivery"]["endpoint_url"], "http://127.0.0.1:9/events");
    assert_eq!(header_of(), None, "the header is not sent to another endpoint unless given again");
    let stored = services(&app).streams.all().unwrap();
    assert_eq!(stored.iter().find(|s| s.id == push_id).unwrap().audience, ["https://rp.example", "https://rp2.example"]);

    // PUT: the whole configuration; what it leaves out goes back to the defaults.
    let put = json!({"stream_id": push_id, "aud": "https://rp.example", "delivery": {"method": POLL}});
    let replaced = as_token(&app, &admin, "PUT", "/ssf/streams", Some(&put));
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    let replaced = replaced.body;
    assert_eq!(replaced["aud"], "https://rp.example");
    assert_eq!(replaced["events_requested"], supported());
    assert_eq!(replaced["subject_format"], "iss_sub");
    assert!(replaced.get("description").is_none(), "{replaced}");
    assert_eq!(replaced["delivery"]["endpoint_url"], format!("https://idp.example/ssf/poll/{push_id}"));
    let stored = services(&app).streams.all().unwrap();
    assert!(stored.iter().all(|s| s.authorization_header.is_none()), "a poll stream keeps no header");

    // Delete: 204, then it is gone.
    let gone = as_token(&app, &admin, "DELETE", &format!("/ssf/streams?stream_id={push_id}"), None);
    assert_eq!((gone.status, &gone.body), (204, &Value::Null));
    for (method, path) in
        [("GET", format!("/ssf/streams?stream_id={push_id}")), ("DELETE", format!("/ssf/streams?stream_id={push_id}"))]
    {
        let r = as_token(&app, &admin, method, &path, None);
        assert_eq!((r.status, r.body["error"].as_str()), (404, Some("not_found")), "{method} {path}");
    }
    let patch_gone = as_token(&app, &admin, "PATCH", "/ssf/streams", Some(&json!({"stream_id": push_id})));
    assert_eq!(patch_gone.status, 404);
    assert_eq!(as_token(&app, &admin, "GET", "/ssf/streams", None).body, json!([polled]));
    assert_eq!(as_token(&app, &admin, "DELETE", "/ssf/streams", None).status, 400, "stream_id is required");
}

#[test]
fn ssf_stream_requests_outside_the_rules_are_refused_with_400() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let admin = app.token.clone();
    let push = |extra: Value| {
        let mut delivery = json!({"method": PUSH, "endpoint_url": "https://rp.example/events"});
        delivery.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"delivery": delivery})
    };
    let bad = [
        json!({"delivery": {"method": PUSH}}),
        push(json!({"endpoint_url": "ftp://rp.example/events"})),
        push(json!({"endpoint_url": "rp.example/events"})),
        push(json!({"endpoint_url": 7})),
        push(json!({"authorization_header": "Bearer a\nInjected: yes"})),
        json!({"delivery": {"method": "urn:example:carrier-pigeon"}}),
        json!({"delivery": {"endpoint_url": "https://rp.example/"}}),
        json!({"delivery": "push"}),
        json!({"subject_format": "phone_number"}),
        json!({"aud": 5}),
        json!({"aud": []}),
        json!({"events_requested": "all"}),
        json!({"events_requested": [1]}),
        json!({"description": "x".repeat(1001)}),
    ];
    for body in &bad {
        let r = as_token(&app, &admin, "POST", "/ssf/streams", Some(body));
        assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_request")), "{body}: {:?}", r.body);
        assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let not_json = app.raw("POST", "/ssf/streams", Some("{"), &[("Authorization", &format!("Bearer {admin}"))]);
    assert_eq!(not_json.status, 400);
    let array = as_token(&app, &admin, "POST", "/ssf/streams", Some(&json!([])));
    assert_eq!(array.status, 400);
    assert_eq!(as_token(&app, &admin, "GET", "/ssf/streams", None).body, json!([]), "nothing was created");

    let id = id_of(&create(&app, &admin, &json!({})));
    for (method, body) in [
        ("PATCH", json!({"description": "no id"})),
        ("PUT", json!({})),
        ("PATCH", json!({"stream_id": id, "subject_format": "x"})),
        ("PUT", json!({"stream_id": id, "delivery": {"method": PUSH}})),
    ] {
        let r = as_token(&app, &admin, method, "/ssf/streams", Some(&body));
        assert_eq!(r.status, 400, "{method} {body}: {:?}", r.body);
    }
    assert_eq!(as_token(&app, &admin, "GET", "/ssf/streams?streamId=x", None).status, 400, "unknown parameter");
}

#[test]
fn ssf_tokens_see_and_manage_only_their_own_streams_and_admin_sees_all() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let (a, b) = (token(&app, "rp-a", &[Scope::Ssf]), token(&app, "rp-b", &[Scope::Ssf]));
    let mfa = token(&app, "front-end", &[Scope::Mfa, Scope::Scim]);
    let sa = id_of(&create(&app, &a, &json!({"description": "a's"})));
    app.clock.advance(chrono::Duration::seconds(1)); // lists go oldest first
    let sb = id_of(&create(&app, &b, &json!({"description": "b's"})));

    let ids = |r: Reply| -> Vec<String> { r.body.as_array().unwrap().iter().map(id_of).collect() };
    assert_eq!(ids(as_token(&app, &a, "GET", "/ssf/streams", None)), [sa.as_str()]);
    assert_eq!(ids(as_token(&app, &b, "GET", "/ssf/streams", None)), [sb.as_str()]);
    assert_eq!(ids(as_token(&app, &app.token, "GET", "/ssf/streams", None)), [sa.clone(), sb.clone()]);
    assert_eq!(as_token(&app, &app.token, "GET", &format!("/ssf/streams?stream_id={sa}"), None).status, 200);

    // Another's stream is not found, whatever is asked of it.
    let others = [
        ("GET", format!("/ssf/streams?stream_id={sb}"), None),
        ("PATCH", "/ssf/streams".to_string(), Some(json!({"stream_id": sb, "description": "mine now"}))),
        ("PUT", "/ssf/streams".to_string(), Some(json!({"stream_id": sb}))),
        ("DELETE", format!("/ssf/streams?stream_id={sb}"), None),
        ("GET", format!("/ssf/status?stream_id={sb}"), None),
        ("POST", "/ssf/status".to_string(), Some(json!({"stream_id": sb, "status": "disabled"}))),
        ("POST", "/ssf/verify".to_string(), Some(json!({"stream_id": sb}))),
        ("POST", format!("/ssf/poll/{sb}"), Some(json!({"ack": []}))),
    ];
    for (method, path, body) in &others {
        let r = as_token(&app, &a, method, path, body.as_ref());
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.body);
    }
    let b_stream = as_token(&app, &b, "GET", &format!("/ssf/streams?stream_id={sb}"), None);
    assert_eq!(
        (
            b_stream.body["description"].as_str(),
            as_token(&app, &b, "GET", &format!("/ssf/status?stream_id={sb}"), None).body["status"].as_str()
        ),
        (Some("b's"), Some("enabled"))
    );

    // No token: 401; a token without ssf or admin: 403.
    for (method, path, body) in [
        ("GET", "/ssf/streams".to_string(), None),
        ("POST", "/ssf/streams".to_string(), Some(json!({}))),
        ("GET", format!("/ssf/status?stream_id={sa}"), None),
        ("POST", "/ssf/verify".to_string(), Some(json!({"stream_id": sa}))),
        ("POST", format!("/ssf/poll/{sa}"), Some(json!({}))),
    ] {
        let none = as_token(&app, "", method, &path, body.as_ref());
        assert_eq!(none.status, 401, "{method} {path}");
        assert!(none.www_authenticate.is_some_and(|c| c.starts_with("Bearer")), "{method} {path}");
        let wrong = as_token(&app, &mfa, method, &path, body.as_ref());
        assert_eq!((wrong.status, wrong.body["error"].as_str()), (403, Some("forbidden")), "{method} {path}");
    }
    assert_eq!(as_token(&app, "pvd_not-a-token", "GET", "/ssf/streams", None).status, 401);

    // An admin manages another's stream; the owner's list follows.
    let r = as_token(&app, &app.token, "DELETE", &format!("/ssf/streams?stream_id={sb}"), None);
    assert_eq!(r.status, 204);
    assert!(ids(as_token(&app, &b, "GET", "/ssf/streams", None)).is_empty());

    // Each owner has a bounded number of streams.
    for _ in 1..50 {
        create(&app, &a, &json!({}));
    }
    let over = as_token(&app, &a, "POST", "/ssf/streams", Some(&json!({})));
    assert_eq!(over.status, 409, "{:?}", over.body);
    assert!(over.body["detail"].as_str().unwrap().contains("at most 50 streams"), "{:?}", over.body);
    create(&app, &b, &json!({}));
}

#[test]
fn ssf_status_is_read_and_set() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let rp = token(&app, "rp", &[Scope::Ssf]);
    let id = id_of(&create(&app, &rp, &json!({})));
    let get = || as_token(&app, &rp, "GET", &format!("/ssf/status?stream_id={id}"), None);
    assert_eq!(get().body, json!({"stream_id": id, "status": "enabled"}));
    let paused =
        as_token(&app, &rp, "POST", "/ssf/status", Some(&json!({"stream_id": id, "status": "paused", "reason": "maintenance"})));
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body, json!({"stream_id": id, "status": "paused", "reason": "maintenance"}));
    assert_eq!(get().body, paused.body);
    let enabled = as_token(&app, &rp, "POST", "/ssf/status", Some(&json!({"stream_id": id, "status": "enabled"})));
    assert_eq!(enabled.body, json!({"stream_id": id, "status": "enabled"}));
    for body in [
        json!({"stream_id": id, "status": "stopped"}),
        json!({"stream_id": id}),
        json!({"status": "paused"}),
        json!({"stream_id": id, "status": true}),
    ] {
        let r = as_token(&app, &rp, "POST", "/ssf/status", Some(&body));
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    }
    assert_eq!(as_token(&app, &rp, "GET", "/ssf/status", None).status, 400, "stream_id is required");
    assert_eq!(as_token(&app, &rp, "GET", "/ssf/status?stream_id=nope", None).status, 404);
}

/// Resets `user`'s factor through the API.
fn reset(app: &TestApp, user: &str, reason: &str) {
    let r = app.post(&format!("/api/v1/users/{user}/mfa/reset"), &json!({"reason": reason}));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// The claims of a SET, checked with jwcrypto against the served keys.
fn verified_claims(app: &TestApp, token: &str, audience: &str) -> Value {
    let jwks = app.get("/ssf/jwks.json").body;
    let verified = verify(&json!({"token": token, "jwks": jwks, "audience": audience, "issuer": ISSUER}));
    assert_eq!(verified["header"]["typ"], "secevent+jwt");
    verified["claims"].clone()
}

#[test]
fn ssf_poll_delivers_a_resets_set_until_it_is_acknowledged() {
    let app = with_ssf(SignatureAlgorithm::Es256);
    let rp = token(&app, "rp", &[Scope::Ssf]);
    // A second stream that acknowledges nothing: it shows when an event has been dispatched.
    let witness = id_of(&create(&app, &rp, &json!({"events_requested": [set::CREDENTIAL_CHANGE]})));
    let stream = create(&app, &rp, &json!({"aud": "https://rp.example", "events_requested": [set::CREDENTIAL_CHANGE]}));
    let id = id_of(&stream);
    let user = app.create_user(&json!({"userName": "ada", "emails": [{"value": "ada@example.com", "primary": true}]}));
    let user_id = user["id"].as_str().unwrap();
    assert_eq!(poll(&app, &rp, &id, &json!({})), json!({"sets": {}, "moreAvailable": false}), "nothing yet");

    reset(&app, user_id, "lost phone");
    let first = poll_until(&app, &rp, &id, 1);
    let got = sets(&first);
    assert_eq!((got.len(), &first["moreAvailable"]), (1, &json!(false)), "{first}");
    let (jti, token) = &got[0];
    let claims = verified_claims(&app, token, "https://rp.example");
    assert_eq!(&claims["jti"], jti);
    assert_eq!(claims["aud"], "https://rp.example");
    assert_eq!(claims["sub_id"], json!({"format": "iss_sub", "iss": ISSUER, "sub": user_id}));
    let change = &claims["events"][set::CREDENTIAL_CHANGE];
    assert_eq!((change["credential_type"].as_str(), change["change_type"].as_str()), (Some("app"), Some("delete")));
    assert_eq!(change["reason_admin"]["en"], "lost phone");

    // Not acknowledged: sent again, the same message.
    let again = poll(&app, &rp, &id, &json!({}));
    assert_eq!(sets(&again).iter().map(|(j, _)| j).collect::<Vec<_>>(), [jti]);
    // Acknowledged alone (maxEvents 0): nothing comes back, and nothing after.
    assert_eq!(
        poll(&app, &rp, &id, &json!({"ack": [jti], "maxEvents": 0, "returnImmediately": true})),
        json!({"sets": {}, "moreAvailable": false})
    );
    assert_eq!(poll(&app, &rp, &id, &json!({})), json!({"sets": {}, "moreAvailable": false}));

    // Paused: held; enabled again: there. maxEvents bounds an answer.
    reset(&app, user_id, "second phone");
    reset(&app, user_id, "third phone");
    assert_eq!(sets(&poll_until(&app, &rp, &id, 2)).len(), 2);
    let status = |s: &str| {
        let r = as_token(&app, &rp, "POST", "/ssf/status", Some(&json!({"stream_id": id, "status": s})));
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    status("paused");
    assert_eq!(poll(&app, &rp, &id, &json!({})), json!({"sets": {}, "moreAvailable": false}), "a paused stream holds its SETs");
    status("enabled");
    let one = poll(&app, &rp, &id, &json!({"maxEvents": 1}));
    assert_eq!((sets(&one).len(), &one["moreAvailable"]), (1, &json!(true)), "{one}");
    let second = sets(&one)[0].0.clone();
    assert_eq!(
        verified_claims(&app, &sets(&one)[0].1, "https://rp.example")["events"][set::CREDENTIAL_CHANGE]["reason_admin"]["en"],
        "second phone"
    );

    // Acknowledge one and refuse the other in one poll (the refused one is dropped).
    let both = poll(&app, &rp, &id, &json!({}));
    let jtis: Vec<String> = sets(&both).into_iter().map(|(j, _)| j).collect();
    assert_eq!(jtis.len(), 2, "{both}");
    assert_eq!(jtis[0], second, "oldest first");
    let errs = json!({ &jtis[1]: {"err": "invalid_key", "description": "unknown kid"} });
    let after = poll(&app, &rp, &id, &json!({"ack": [jtis[0]], "setErrs": errs}));
    assert_eq!(after, json!({"sets": {}, "moreAvailable": false}));

    // Disabled: what it was owed is dropped, nothing new is kept.
    reset(&app, user_id, "fourth phone");
    assert_eq!(sets(&poll_until(&app, &rp, &id, 1)).len(), 1);
    status("disabled");
    reset(&app, user_id, "fifth phone");
    assert_eq!(sets(&poll_until(&app, &rp, &witness, 5)).len(), 5, "the fifth reset was dispatched");
    status("enabled");
    assert_eq!(poll(&app, &rp, &id, &json!({})), json!({"sets": {}, "moreAvailable": false}));

    // Poll requests outside RFC 8936; a push stream is not polled.
    for body in [
        json!({"maxEvents": -1}),
        json!({"maxEvents": "ten"}),
        json!({"ack": "x"}),
        json!({"setErrs": []}),
        json!({"setErrs": {"j": {}}}),
        json!({"returnImmediately": "yes"}),
    ] {
        let r = as_token(&app, &rp, "POST", &format!("/ssf/poll/{id}"), Some(&body));
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    }
    let push = create(
        &app,
        &rp,
        &json!({"delivery": {"method": PUSH, "endpoint_url": "https://rp.example/events", "authorization_header": PUSH_HEADER}}),
    );
    let r = as_token(&app, &rp, "POST", &format!("/ssf/poll/{}", id_of(&push)), Some(&json!({})));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(!r.body.to_string().contains(PUSH_HEADER));
    assert_eq!(as_token(&app, &rp, "POST", "/ssf/poll/no-such-stream", Some(&json!({}))).status, 404);
}

#[test]
fn ssf_a_verification_arrives_by_poll_with_its_state() {
    let app = with_ssf(SignatureAlgorithm::EdDsa);
    let rp = token(&app, "rp", &[Scope::Ssf]);
    let id = id_of(&create(&app, &rp, &json!({})));
    let ask = |body: Value| as_token(&app, &rp, "POST", "/ssf/verify", Some(&body));
    let r = ask(json!({"stream_id": id, "state": "state-1"}));
    assert_eq!((r.status, &r.body), (204, &Value::Null), "{:?}", r.body);
    let too_soon = ask(json!({"stream_id": id, "state": "state-2"}));
    assert_eq!(too_soon.status, 429, "{:?}", too_soon.body);
    assert!(
        too_soon.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| (1..=60).contains(&s)),
        "{:?}",
        too_soon.retry_after
    );

    let polled = poll_until(&app, &rp, &id, 1);
    let got = sets(&polled);
    assert_eq!(got.len(), 1, "{polled}");
    let claims = verified_claims(&app, &got[0].1, ISSUER);
    assert_eq!(claims["sub_id"], json!({"format": "opaque", "id": id}));
    assert_eq!(claims["events"][set::VERIFICATION], json!({"state": "state-1"}));
    poll(&app, &rp, &id, &json!({"ack": [got[0].0], "maxEvents": 0}));

    // After the interval, again; without a state, an event without one.
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(ask(json!({"stream_id": id})).status, 204);
    let got = sets(&poll_until(&app, &rp, &id, 1));
    assert_eq!(verified_claims(&app, &got[0].1, ISSUER)["events"][set::VERIFICATION], json!({}));

    for body in [json!({}), json!({"stream_id": id, "state": 3})] {
        assert_eq!(ask(body.clone()).status, 400, "{body}");
    }
    assert_eq!(ask(json!({"stream_id": "nope"})).status, 404);
    let r = as_token(&app, &rp, "POST", "/ssf/status", Some(&json!({"stream_id": id, "status": "disabled"})));
    assert_eq!(r.status, 200);
    app.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(ask(json!({"stream_id": id})).status, 400, "a disabled stream is sent nothing");
}
