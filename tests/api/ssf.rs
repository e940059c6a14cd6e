//! The Shared Signals transmitter's public documents and its signatures: the configuration
//! metadata at the issuer's well-known path, the keys at `jwks_uri`, and a token signed with
//! the daemon's key that an independent implementation (Python's jwcrypto) verifies with the
//! keys as served.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use provisiond::config::{SignatureAlgorithm, Ssf};
use provisiond::events::{keys::SigningKeys, set};
use serde_json::{json, Value};

use crate::helpers::TestApp;

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
        let occurrence =
            set::Occurrence { kind: "mfa.reset", at: chrono::Utc::now(), origin: "console", reason: Some("lost phone") };
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
