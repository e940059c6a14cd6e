//! Security keys and passkeys over the JSON API, with a software authenticator
//! (webauthn-authenticator-rs's SoftToken: a real CTAP2 token in memory, signing real
//! assertions with a real counter) in the role of the browser and the key.

use std::time::Duration;

use serde_json::{json, Value};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::helpers::{Reply, TestApp};
use crate::receiver::Receiver;

/// The login front end's origin, on the relying party's domain.
pub const ORIGIN: &str = "https://login.example.com";
const MFA: &str = "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User";

pub fn spawn() -> TestApp {
    TestApp::spawn_with(relying_party)
}

fn relying_party(c: &mut provisiond::config::Config) {
    c.mfa.webauthn.rp_id = Some("example.com".into());
    c.mfa.webauthn.origins = vec![ORIGIN.into()];
}

pub fn key() -> SoftToken {
    SoftToken::new(true).expect("a software token").0
}

/// Another copy of `key`, counter and all, as a cloned key would be.
fn clone_of(key: &SoftToken) -> SoftToken {
    SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap()
}

fn user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name, "emails": [{"value": format!("{name}@example.com"), "primary": true}]}))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn path(id: &str, rest: &str) -> String {
    format!("/api/v1/users/{id}/mfa/webauthn/{rest}")
}

/// A started registration: the ceremony id and the options as `navigator.credentials` takes them.
fn start_registration(app: &TestApp, id: &str) -> (String, CreationChallengeResponse) {
    let r = app.post(&path(id, "registration"), &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let options = serde_json::from_value(json!({"publicKey": r.body["publicKey"]})).expect("standard creation options");
    (r.body["ceremonyId"].as_str().unwrap().to_string(), options)
}

fn finish_registration(app: &TestApp, id: &str, ceremony: &str, name: &str, credential: &impl serde::Serialize) -> Reply {
    let body = json!({"ceremonyId": ceremony, "name": name, "credential": credential});
    app.post(&path(id, "registration/finish"), &body)
}

/// Registers `key` as `name` from the front end's origin; the finish's reply.
pub fn register(app: &TestApp, id: &str, key: &mut SoftToken, name: &str) -> Reply {
    let (ceremony, options) = start_registration(app, id);
    let credential = key.do_registration(Url::parse(ORIGIN).unwrap(), options).expect("the key registers");
    finish_registration(app, id, &ceremony, name, &credential)
}

fn start_authentication(app: &TestApp, id: &str) -> (String, RequestChallengeResponse) {
    let r = app.post(&path(id, "authentication"), &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let options = serde_json::from_value(json!({"publicKey": r.body["publicKey"]})).expect("standard request options");
    (r.body["ceremonyId"].as_str().unwrap().to_string(), options)
}

fn finish_authentication(app: &TestApp, id: &str, ceremony: &str, credential: &impl serde::Serialize) -> Reply {
    app.post(&path(id, "authentication/finish"), &json!({"ceremonyId": ceremony, "credential": credential}))
}

/// Signs in with `key`: the finish's reply.
pub fn authenticate(app: &TestApp, id: &str, key: &mut SoftToken) -> Reply {
    let (ceremony, options) = start_authentication(app, id);
    let assertion = key.do_authentication(Url::parse(ORIGIN).unwrap(), options).expect("the key signs");
    finish_authentication(app, id, &ceremony, &assertion)
}

fn status(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/users/{id}/mfa"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn audit(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/v1/audit?userId={id}&type={kind}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

fn names(factors: &Value) -> Vec<(String, String)> {
    factors
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["type"].as_str().unwrap().to_string(), f["name"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_key_registered_over_the_api_signs_in_and_is_listed_without_key_material() {
    let app = spawn();
    let id = user(&app, "ada");
    let mut yubikey = key();
    let r = register(&app, &id, &mut yubikey, "  YubiKey 5C ");
    assert_eq!(r.status, 201, "{:?}", r.body);
    let factor = &r.body["factor"];
    assert_eq!((factor["type"].as_str(), factor["name"].as_str()), (Some("webauthn"), Some("YubiKey 5C")));
    let credential_id = factor["id"].as_str().unwrap().to_string();
    // The first factor comes with backup codes, shown once.
    assert_eq!(r.body["backupCodes"].as_array().unwrap().len(), 10, "{:?}", r.body);

    let s = status(&app, &id);
    assert_eq!(s["status"], "enrolled");
    assert_eq!(s["backupCodesRemaining"], 10);
    assert_eq!(names(&s["factors"]), [("webauthn".to_string(), "YubiKey 5C".to_string())]);
    assert_eq!(s["factors"][0]["id"], credential_id.as_str());
    assert_eq!(s["factors"][0]["lastUsed"], Value::Null);
    let shown = s.to_string();
    assert!(!shown.contains("publicKey") && !shown.contains("cred") && !shown.contains("counter"), "{shown}");

    // SCIM shows the factor, read-only, beside the status.
    let scim = app.get(&format!("/scim/v2/Users/{id}"));
    assert_eq!(scim.body[MFA]["status"], "enrolled");
    assert_eq!(scim.body[MFA]["factors"][0]["type"], "webauthn");
    assert_eq!(scim.body[MFA]["factors"][0]["name"], "YubiKey 5C");
    assert!(scim.body[MFA]["factors"][0]["created"].as_str().unwrap().ends_with('Z'));
    // A user with a key only counts as enrolled wherever status is asked (the console's list
    // filters the same way).
    let found = app.filter(&format!("{MFA}:status eq \"enrolled\""));
    assert_eq!(crate::helpers::user_names(&found), ["ada"]);

    // The key proves the user, again and again (its counter goes up each time).
    for _ in 0..2 {
        let r = authenticate(&app, &id, &mut yubikey);
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body, json!({"valid": true, "method": "webauthn", "credentialId": credential_id, "name": "YubiKey 5C"}));
    }
    assert!(status(&app, &id)["factors"][0]["lastUsed"].as_str().is_some());
    // A backup code still works for a user with keys only.
    let code = r.body["backupCodes"][0].as_str().unwrap();
    let v = app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": code}));
    assert_eq!((v.status, v.body["method"].as_str()), (200, Some("backup_code")), "{:?}", v.body);
    let enrolled = audit(&app, &id, "mfa.enrolled");
    assert_eq!(enrolled[0]["detail"]["method"], "webauthn");
    assert_eq!(enrolled[0]["detail"]["name"], "YubiKey 5C");
}

#[test]
fn a_finished_ceremony_cannot_be_finished_again_and_an_assertion_cannot_be_replayed() {
    let app = spawn();
    let id = user(&app, "grace");
    let mut k = key();
    let (ceremony, options) = start_registration(&app, &id);
    let credential = k.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    assert_eq!(finish_registration(&app, &id, &ceremony, "Key", &credential).status, 201);
    let again = finish_registration(&app, &id, &ceremony, "Key", &credential);
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(again.body["detail"].as_str().unwrap().contains("finished already"), "{:?}", again.body);

    let (ceremony, options) = start_authentication(&app, &id);
    let assertion = k.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    assert_eq!(finish_authentication(&app, &id, &ceremony, &assertion).status, 200);
    // The same assertion, to the same ceremony: it is gone.
    let replay = finish_authentication(&app, &id, &ceremony, &assertion);
    assert_eq!(replay.status, 409, "{:?}", replay.body);
    // And to a new ceremony: its challenge is not the one signed.
    let (fresh, _) = start_authentication(&app, &id);
    let replay = finish_authentication(&app, &id, &fresh, &assertion);
    assert_eq!((replay.status, replay.body["valid"].as_bool()), (401, Some(false)), "{:?}", replay.body);
    assert_eq!(replay.body["error"], "refused");
    // A ceremony of another user is not this user's.
    let other = user(&app, "linus");
    let (theirs, _) = start_registration(&app, &other);
    let r = finish_registration(&app, &id, &theirs, "Key", &credential);
    assert_eq!(r.status, 409, "{:?}", r.body);
}

#[test]
fn a_response_signed_for_another_origin_is_refused() {
    let app = spawn();
    let id = user(&app, "eve-target");
    // On the relying party's domain (the browser signs for it) but not a configured origin: a
    // page someone else runs on a subdomain.
    let evil = Url::parse("https://forum.example.com").unwrap();
    let mut k = key();
    let (ceremony, options) = start_registration(&app, &id);
    let credential = k.do_registration(evil.clone(), options).unwrap();
    let r = finish_registration(&app, &id, &ceremony, "Key", &credential);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("refused"), "{:?}", r.body);
    assert_eq!(status(&app, &id)["status"], "none", "nothing was registered");

    assert_eq!(register(&app, &id, &mut k, "Key").status, 201);
    let (ceremony, options) = start_authentication(&app, &id);
    let assertion = k.do_authentication(evil, options).unwrap();
    let r = finish_authentication(&app, &id, &ceremony, &assertion);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("refused")), "{:?}", r.body);
}

#[test]
fn a_ceremony_expires_after_five_minutes() {
    let app = spawn();
    let id = user(&app, "alan");
    let mut k = key();
    let (ceremony, options) = start_registration(&app, &id);
    let credential = k.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    app.clock.advance(chrono::Duration::minutes(5) + chrono::Duration::seconds(1));
    let r = finish_registration(&app, &id, &ceremony, "Key", &credential);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("expired"), "{:?}", r.body);

    assert_eq!(register(&app, &id, &mut k, "Key").status, 201);
    let (ceremony, options) = start_authentication(&app, &id);
    let assertion = k.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    app.clock.advance(chrono::Duration::minutes(4) + chrono::Duration::seconds(59));
    assert_eq!(finish_authentication(&app, &id, &ceremony, &assertion).status, 200, "still in time");
    let (ceremony, options) = start_authentication(&app, &id);
    let assertion = k.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    app.clock.advance(chrono::Duration::minutes(5));
    let r = finish_authentication(&app, &id, &ceremony, &assertion);
    assert_eq!(r.status, 409, "{:?}", r.body);
}

#[test]
fn a_registration_started_before_a_reset_does_not_survive_it_and_waiting_ones_are_bounded() {
    let app = spawn();
    let id = user(&app, "edsger");
    let mut k = key();
    let (ceremony, options) = start_registration(&app, &id);
    let credential = k.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "offboarding"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = finish_registration(&app, &id, &ceremony, "Key", &credential);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(status(&app, &id)["factors"], json!([]), "the reset removed every factor, this one too");

    // A client that starts and never finishes pushes out its own oldest ceremonies (20 wait).
    let (oldest, options) = start_registration(&app, &id);
    let credential = k.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    for _ in 0..20 {
        start_registration(&app, &id);
    }
    let r = finish_registration(&app, &id, &oldest, "Key", &credential);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(register(&app, &id, &mut k, "Key").status, 201, "a new ceremony works");
}

#[test]
fn a_counter_that_goes_back_is_refused_and_audited() {
    let app = spawn();
    let id = user(&app, "mallory-victim");
    let mut original = key();
    assert_eq!(register(&app, &id, &mut original, "Key").status, 201);
    let mut copy = clone_of(&original);
    assert_eq!(authenticate(&app, &id, &mut original).status, 200);
    assert_eq!(authenticate(&app, &id, &mut original).status, 200);
    // The copy's counter is behind the original's.
    let r = authenticate(&app, &id, &mut copy);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("clone_suspected")), "{:?}", r.body);
    let trail = audit(&app, &id, "mfa.webauthn.clone_suspected");
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0]["detail"]["name"], "Key");

    // Two ceremonies signed in order but finished out of it: the later count is stored first,
    // and the earlier one (still above what the ceremony saw) is refused by the store.
    let (first, options) = start_authentication(&app, &id);
    let early = original.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    let (second, options) = start_authentication(&app, &id);
    let late = original.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
    assert_eq!(finish_authentication(&app, &id, &second, &late).status, 200);
    let r = finish_authentication(&app, &id, &first, &early);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("clone_suspected")), "{:?}", r.body);
    assert_eq!(audit(&app, &id, "mfa.webauthn.clone_suspected").len(), 2);
    assert_eq!(authenticate(&app, &id, &mut original).status, 200, "the original key goes on working");
}

#[test]
fn the_keys_held_are_excluded_from_a_registration_and_an_eleventh_is_refused() {
    let app = spawn();
    let id = user(&app, "hopper");
    let mut first = key();
    let r = register(&app, &id, &mut first, "Key 1");
    let first_id = r.body["factor"]["id"].as_str().unwrap().to_string();
    // The options tell the browser which keys the user holds: a browser refuses to register
    // one of them again (the browser test sees it).
    let (_, options) = start_registration(&app, &id);
    let excluded: Vec<String> = serde_json::to_value(&options).unwrap()["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(excluded, [first_id]);
    assert_eq!(r.body["factor"]["aaguid"].as_str().map(str::len), Some(36), "the model id the key reported: {:?}", r.body);

    for n in 2..=10 {
        let r = register(&app, &id, &mut key(), &format!("Key {n}"));
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert!(r.body.get("backupCodes").is_none(), "codes come with the first factor only");
    }
    let r = app.post(&path(&id, "registration"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("10 security keys"), "{:?}", r.body);
    assert_eq!(status(&app, &id)["factors"].as_array().unwrap().len(), 10);
}

#[test]
fn a_key_is_removed_alone_and_a_reset_clears_every_factor_with_one_event_per_kind() {
    let receiver = Receiver::start();
    let secret = std::sync::Mutex::new(String::new());
    let url = receiver.url("/hook");
    let app = TestApp::spawn_with(|c| {
        relying_party(c);
        crate::webhooks::configure(c, &url, 600, &secret);
    });
    let id = user(&app, "katherine");
    let (mut a, mut b) = (key(), key());
    let a_id = register(&app, &id, &mut a, "Blue key").body["factor"]["id"].as_str().unwrap().to_string();
    register(&app, &id, &mut b, "Phone");
    // The authenticator app beside the keys: the status stays enrolled while it is set up.
    let start = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    assert_eq!(start.status, 201, "{:?}", start.body);
    assert_eq!(status(&app, &id)["status"], "enrolled");
    crate::mfa::confirm_started(&app, &id, start.body["secret"].as_str().unwrap());
    let listed = names(&status(&app, &id)["factors"]);
    let expected = |v: &[(&str, &str)]| v.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect::<Vec<_>>();
    assert_eq!(listed, expected(&[("totp", "Authenticator app"), ("webauthn", "Blue key"), ("webauthn", "Phone")]));

    let r = app.call("DELETE", &path(&id, &a_id), None);
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(names(&status(&app, &id)["factors"]), expected(&[("totp", "Authenticator app"), ("webauthn", "Phone")]));
    assert_eq!(app.call("DELETE", &path(&id, &a_id), None).status, 404, "gone already");
    assert_eq!(audit(&app, &id, "mfa.webauthn.removed")[0]["detail"]["name"], "Blue key");
    let r = authenticate(&app, &id, &mut b);
    assert_eq!(r.status, 200, "the other key still works: {:?}", r.body);

    // Two keys and the app enrolled, one key removed.
    let before = receiver.wait_for(4, Duration::from_secs(5)).len();
    assert_eq!(before, 4);
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "lost bag"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = status(&app, &id);
    assert_eq!(
        (s["status"].as_str(), s["factors"].clone(), s["backupCodesRemaining"].clone()),
        (Some("pending"), json!([]), json!(0))
    );
    assert_eq!(app.post(&path(&id, "authentication"), &json!({})).status, 409, "no key is left to sign in with");
    let reset = &audit(&app, &id, "mfa.reset")[0];
    assert_eq!(
        reset["detail"]["removed"],
        json!([{"type": "totp", "name": "Authenticator app"}, {"type": "webauthn", "name": "Phone"}])
    );
    let scim = app.get(&format!("/scim/v2/Users/{id}"));
    assert!(scim.body[MFA].get("factors").is_none(), "{:?}", scim.body);

    // Receivers hear of the reset once per kind of factor removed.
    let got = receiver.wait_for(before + 2, Duration::from_secs(5));
    let resets: Vec<String> = got
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|b| b["type"] == "mfa.reset")
        .map(|b| b["data"]["factor"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(resets, ["totp", "webauthn"]);
}

#[test]
fn removing_the_last_key_leaves_the_user_to_enrol_again() {
    let app = spawn();
    let id = user(&app, "dorothy");
    let r = register(&app, &id, &mut key(), "Only key");
    let credential = r.body["factor"]["id"].as_str().unwrap().to_string();
    assert_eq!(app.call("DELETE", &path(&id, &credential), None).status, 204);
    let s = status(&app, &id);
    assert_eq!((s["status"].as_str(), s["backupCodesRemaining"].as_u64()), (Some("pending"), Some(0)), "{s:?}");
    let r = app.call("DELETE", &path(&id, "bm8tc3VjaC1rZXk"), None);
    assert_eq!(r.status, 404, "{:?}", r.body);
}

#[test]
fn names_are_checked_and_without_a_relying_party_keys_are_off() {
    let app = spawn();
    let id = user(&app, "barbara");
    let mut k = key();
    let (ceremony, options) = start_registration(&app, &id);
    let credential = k.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
    let r = finish_registration(&app, &id, &ceremony, &"x".repeat(65), &credential);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().starts_with("name:"), "{:?}", r.body);
    let r = app.post(&path(&id, "registration/finish"), &json!({"ceremonyId": "x", "name": "Key", "credential": {"id": 1}}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().starts_with("credential:"), "{:?}", r.body);
    assert_eq!(app.post(&path("no-such-user", "registration"), &json!({})).status, 404);

    let off = TestApp::spawn();
    let id = user(&off, "barbara");
    let r = off.post(&path(&id, "registration"), &json!({}));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("[mfa.webauthn]"), "{:?}", r.body);
}
