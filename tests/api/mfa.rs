//! The second factor through HTTP: enrolment, verification, backup codes, resets, audit,
//! with TOTP codes computed from the clock the test controls.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{encode, TestApp};
use provisiond::domain::mfa::Policy;
use provisiond::domain::tokens::{Scope, Tokens};

const MFA: &str = "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User";

fn policy(app: &TestApp) -> Policy {
    Policy::from_config(&app.config.mfa)
}

/// The code the user's authenticator app shows now.
fn code_now(app: &TestApp, secret: &[u8]) -> String {
    use provisiond::clock::Clock;
    policy(app).code_at(secret, app.clock.now().timestamp() as u64)
}

fn new_user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name}))["id"].as_str().unwrap().to_string()
}

/// Starts and confirms an enrolment; returns the raw secret and the backup codes.
pub fn enrol(app: &TestApp, id: &str) -> (Vec<u8>, Vec<String>) {
    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    confirm_started(app, id, r.body["secret"].as_str().unwrap())
}

/// Confirms the enrolment started with the (base32) `secret`; the raw secret and the backup codes.
pub fn confirm_started(app: &TestApp, id: &str, secret: &str) -> (Vec<u8>, Vec<String>) {
    let secret = Policy::decode_base32(secret).unwrap();
    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code_now(app, &secret)}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let codes = r.body["backupCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    (secret, codes)
}

fn verify(app: &TestApp, id: &str, code: &str) -> crate::helpers::Reply {
    app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": code}))
}

pub fn status(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/users/{id}/mfa"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn audit(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/api/v1/audit?{query}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

#[test]
fn enrolment_gives_uri_qr_and_backup_codes_and_refuses_a_second_factor() {
    let app = TestApp::spawn();
    let id = new_user(&app, "bjensen@example.com");
    assert_eq!(
        status(&app, &id),
        json!({"status": "none", "enrolledAt": null, "lastResetAt": null, "backupCodesRemaining": 0, "factors": []})
    );

    let start = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    assert_eq!(start.status, 201);
    let secret_b32 = start.body["secret"].as_str().unwrap().to_string();
    let uri = start.body["otpauthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/provisiond:bjensen%40example.com?"), "{uri}");
    assert!(uri.contains(&format!("secret={secret_b32}")) && uri.contains("issuer=provisiond"));
    assert!(start.body["qrPng"].as_str().unwrap().starts_with("data:image/png;base64,iVBOR"));
    assert_eq!(status(&app, &id)["status"], "pending", "not active until confirmed");

    // Restarting enrolment replaces the unconfirmed secret.
    let again = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    assert_eq!(again.status, 201);
    let secret = Policy::decode_base32(again.body["secret"].as_str().unwrap()).unwrap();
    let old = Policy::decode_base32(&secret_b32).unwrap();
    let wrong = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code_now(&app, &old)}));
    assert_eq!(wrong.status, 400, "{:?}", wrong.body);
    let missing = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({}));
    assert_eq!(missing.status, 400);

    let ok = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code_now(&app, &secret)}));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let codes = ok.body["backupCodes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let s = status(&app, &id);
    assert_eq!(s["status"], "enrolled");
    assert_eq!(s["backupCodesRemaining"], 10);
    assert!(s["enrolledAt"].is_string());

    // The SCIM resource shows the same state.
    let user = app.get(&format!("/scim/v2/Users/{id}")).body;
    assert_eq!(user[MFA]["status"], "enrolled");
    assert_eq!(user[MFA]["enrolledAt"], s["enrolledAt"]);

    let over = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    assert_eq!(over.status, 409, "{:?}", over.body);

    let audit = audit(&app, &format!("userId={id}"));
    let types: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    // Newest first; both written by the confirmation (ids break the tie of equal times).
    assert_eq!(types, ["mfa.backup_codes.generated", "mfa.enrolled"]);
}

#[test]
fn secrets_are_sealed_at_rest() {
    let app = TestApp::spawn();
    let id = new_user(&app, "sealed");
    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
    let secret_b32 = r.body["secret"].as_str().unwrap().to_string();
    let secret = Policy::decode_base32(&secret_b32).unwrap();
    let confirm = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code_now(&app, &secret)}));
    let codes: Vec<String> =
        confirm.body["backupCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    // The database (and its write-ahead log) never hold the secret or a backup code in clear.
    let stored = app.db.stored_bytes();
    let contains = |needle: &[u8]| stored.contains(needle);
    assert!(!contains(secret_b32.as_bytes()), "base32 secret stored in clear");
    assert!(!contains(&secret), "raw secret stored in clear");
    for c in &codes {
        assert!(!contains(c.as_bytes()) && !contains(c.replace('-', "").as_bytes()), "backup code stored in clear");
    }
}

#[test]
fn verify_accepts_a_code_once_and_backup_codes_once() {
    let app = TestApp::spawn();
    let id = new_user(&app, "v");
    let (secret, codes) = enrol(&app, &id);

    // The confirming code's step is used: the next step's code is needed.
    app.clock.advance(Duration::seconds(30));
    let code = code_now(&app, &secret);
    let r = verify(&app, &id, &code);
    assert_eq!((r.status, &r.body), (200, &json!({"valid": true, "method": "totp"})));
    let replay = verify(&app, &id, &code);
    assert_eq!((replay.status, &replay.body), (401, &json!({"valid": false})));

    // ±1 step of drift is accepted, two steps is not.
    app.clock.advance(Duration::seconds(60));
    let late = policy(&app).code_at(&secret, (app_now(&app) - 30) as u64);
    assert_eq!(verify(&app, &id, &late).status, 200);
    app.clock.advance(Duration::seconds(30));
    let stale = policy(&app).code_at(&secret, (app_now(&app) - 60) as u64);
    assert_eq!(verify(&app, &id, &stale).status, 401);

    let r = verify(&app, &id, &codes[0].to_lowercase());
    assert_eq!((r.status, &r.body), (200, &json!({"valid": true, "method": "backup_code"})));
    assert_eq!(verify(&app, &id, &codes[0]).status, 401, "a backup code works once");
    assert_eq!(status(&app, &id)["backupCodesRemaining"], 9);
    let used = audit(&app, &format!("userId={id}&type=mfa.backup_code.used"));
    assert_eq!(used["totalResults"], 1);

    // No factor, no verification.
    let other = new_user(&app, "other");
    assert_eq!(verify(&app, &other, "123456").status, 409);
    assert_eq!(verify(&app, "no-such-user", "123456").status, 404);
}

fn app_now(app: &TestApp) -> i64 {
    use provisiond::clock::Clock;
    app.clock.now().timestamp()
}

#[test]
fn wrong_codes_lock_verification_until_the_window_passes() {
    let app = TestApp::spawn();
    let id = new_user(&app, "locked");
    let (secret, _) = enrol(&app, &id);
    app.clock.advance(Duration::seconds(30));
    for _ in 0..5 {
        assert_eq!(verify(&app, &id, "000000").status, 401);
    }
    let good = code_now(&app, &secret);
    let locked = verify(&app, &id, &good);
    assert_eq!(locked.status, 429, "{:?}", locked.body);
    let retry: u64 = app
        .raw(
            "POST",
            &format!("/api/v1/users/{id}/mfa/verify"),
            Some(&json!({"code": good}).to_string()),
            &[("Authorization", &format!("Bearer {}", app.token))],
        )
        .retry_after
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let events = audit(&app, &format!("userId={id}&type=mfa.verify.locked_out"));
    assert_eq!(events["totalResults"], 1);

    app.clock.advance(Duration::seconds(901));
    assert_eq!(verify(&app, &id, &code_now(&app, &secret)).status, 200, "the lockout ends with its window");
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let app = TestApp::spawn();
    let id = new_user(&app, "slow");
    let (secret, _) = enrol(&app, &id);
    for _ in 0..4 {
        assert_eq!(verify(&app, &id, "000000").status, 401);
    }
    app.clock.advance(Duration::seconds(901));
    assert_eq!(verify(&app, &id, "000000").status, 401);
    assert_eq!(verify(&app, &id, &code_now(&app, &secret)).status, 200);
}

#[test]
fn new_backup_codes_replace_the_old_set() {
    let app = TestApp::spawn();
    let id = new_user(&app, "codes");
    let (_, old) = enrol(&app, &id);
    let r = app.post(&format!("/api/v1/users/{id}/mfa/backup-codes"), &json!({}));
    assert_eq!(r.status, 200);
    let new: Vec<String> = r.body["backupCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(new.len(), 10);
    assert_eq!(verify(&app, &id, &old[1]).status, 401);
    assert_eq!(verify(&app, &id, &new[1]).status, 200);
    assert_eq!(audit(&app, &format!("userId={id}&type=mfa.backup_codes.generated"))["totalResults"], 2);
    let none = new_user(&app, "none");
    assert_eq!(app.post(&format!("/api/v1/users/{none}/mfa/backup-codes"), &json!({})).status, 409);
}

#[test]
fn a_reset_forgets_the_factor_clears_the_lockout_and_is_audited() {
    let app = TestApp::spawn();
    let id = new_user(&app, "lost.phone@example.com");
    let (secret, codes) = enrol(&app, &id);
    app.clock.advance(Duration::seconds(30));
    for _ in 0..5 {
        verify(&app, &id, "000000");
    }
    assert_eq!(verify(&app, &id, &code_now(&app, &secret)).status, 429);

    let r = app
        .post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "the user is unable to access their second factor"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["status"], "pending");
    let s = status(&app, &id);
    assert_eq!(s["status"], "pending");
    assert_eq!(s["backupCodesRemaining"], 0);
    assert_eq!(s["enrolledAt"], Value::Null);
    assert_eq!(s["lastResetAt"], r.body["resetAt"]);
    // The old factor and codes are gone; the user enrols again, unhindered by the lockout.
    assert_eq!(verify(&app, &id, &codes[2]).status, 409);
    let (secret2, _) = enrol(&app, &id);
    app.clock.advance(Duration::seconds(30));
    assert_eq!(verify(&app, &id, &code_now(&app, &secret2)).status, 200);

    // Resetting a pending user is harmless and still audited.
    app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "again"}));
    app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": " again, trimmed "}));
    let events = audit(&app, &format!("userId={id}&type=mfa.reset"));
    assert_eq!(events["totalResults"], 3);
    assert_eq!(events["events"][0]["reason"], "again, trimmed");
    let newest = &events["events"][0];
    assert_eq!(newest["origin"], "api");
    assert_eq!(newest["actor"], "test");
    assert_eq!(newest["userName"], "lost.phone@example.com");
    assert_eq!(newest["detail"]["previousStatus"], "pending");
    assert!(newest["requestId"].is_string());
    let oldest = &events["events"][2];
    assert_eq!(oldest["reason"], "the user is unable to access their second factor");
    assert_eq!(oldest["detail"]["previousStatus"], "enrolled");

    assert_eq!(app.post("/api/v1/users/nope/mfa/reset", &json!({"reason": "x"})).status, 404);
}

#[test]
fn a_reset_needs_a_reason_of_sensible_length_at_every_door() {
    let app = TestApp::spawn();
    let id = new_user(&app, "reasonless");
    let long = "x".repeat(1001);
    for body in [json!({}), json!({"reason": ""}), json!({"reason": "   "}), json!({"reason": null}), json!({"reason": long})] {
        let single = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &body);
        assert_eq!((single.status, single.body["error"].as_str()), (400, Some("invalid_request")), "{body}: {:?}", single.body);
        assert!(single.body["detail"].as_str().unwrap().contains("reason"), "{:?}", single.body);
        let mut bulk_body = body.clone();
        bulk_body["userIds"] = json!([id]);
        assert_eq!(app.post("/api/v1/mfa/resets", &bulk_body).status, 400, "{bulk_body}");
    }
    assert_eq!(audit(&app, "type=mfa.reset")["totalResults"], 0, "nothing was reset");
    let ok = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "x".repeat(1000)}));
    assert_eq!(ok.status, 200);
}

#[test]
fn scopes_guard_the_api() {
    let app = TestApp::spawn();
    let id = new_user(&app, "scoped");
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let tokens = Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock));
    let scim = tokens.create("scim-only", &[Scope::Scim]).unwrap();
    let mfa = tokens.create("login-ui", &[Scope::Mfa]).unwrap();
    let call = |method: &str, path: &str, token: &str| {
        app.raw(method, path, Some("{}"), &[("Authorization", &format!("Bearer {token}")), ("Content-Type", "application/json")])
            .status
    };
    let none = app.raw("GET", &format!("/api/v1/users/{id}/mfa"), None, &[]);
    assert_eq!(none.status, 401);
    assert!(none.www_authenticate.is_some());
    assert_eq!(none.body["error"], "unauthorized");
    assert_eq!(call("GET", &format!("/api/v1/users/{id}/mfa"), scim.expose()), 403);
    assert_eq!(call("POST", &format!("/api/v1/users/{id}/mfa/totp"), scim.expose()), 403);
    assert_eq!(call("POST", &format!("/api/v1/users/{id}/mfa/totp"), mfa.expose()), 201);
    assert_eq!(call("POST", &format!("/api/v1/users/{id}/mfa/reset"), mfa.expose()), 403);
    assert_eq!(call("POST", "/api/v1/mfa/resets", mfa.expose()), 403);
    assert_eq!(call("GET", "/api/v1/audit", mfa.expose()), 403);
}

#[test]
fn bulk_reset_of_a_thousand_users_resets_and_audits_each() {
    let app = TestApp::spawn();
    let ids: Vec<String> = (0..1000).map(|i| new_user(&app, &format!("bulk{i}@example.com"))).collect();
    let (_, _) = enrol(&app, &ids[7]);
    let mut requested: Vec<Value> = ids.iter().map(|i| json!(i)).collect();
    requested.insert(500, json!("no-such-id"));
    let r = app.post("/api/v1/mfa/resets", &json!({"userIds": requested, "reason": "phones replaced"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reset"], 1000);
    assert_eq!(r.body["failed"], 1);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1001);
    assert_eq!(results[500], json!({"id": "no-such-id", "outcome": "not_found", "detail": "no such user"}));
    assert!(results.iter().enumerate().all(|(i, r)| i == 500 || r["outcome"] == "reset"));

    let pending = app.filter(&format!("{MFA}:status eq \"pending\""));
    assert_eq!(pending["totalResults"], 1000);
    for id in ids.iter().step_by(97) {
        assert_eq!(status(&app, id)["status"], "pending");
    }
    let events = audit(&app, "type=mfa.reset&count=0");
    assert_eq!(events["totalResults"], 1000);
    let page = audit(&app, "type=mfa.reset&count=5");
    assert!(page["events"].as_array().unwrap().iter().all(|e| e["origin"] == "bulk" && e["reason"] == "phones replaced"));
    assert_eq!(audit(&app, &format!("userId={}&type=mfa.reset", ids[7]))["events"][0]["detail"]["previousStatus"], "enrolled");
}

#[test]
fn bulk_reset_by_filter_and_its_limits() {
    let app = TestApp::spawn_with(|c| c.mfa.max_bulk_reset = 3);
    for (name, dept) in [("a", "Sales"), ("b", "Sales"), ("c", "Ops"), ("d", "Sales"), ("e", "Sales")] {
        app.create_user(
            &json!({"userName": name, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": dept}}),
        );
    }
    let too_many = app.post(
        "/api/v1/mfa/resets",
        &json!({"filter": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"sales\"", "reason": "x"}),
    );
    assert_eq!(too_many.status, 400, "{:?}", too_many.body);
    let ids = json!(["1", "2", "3", "4"]);
    assert_eq!(app.post("/api/v1/mfa/resets", &json!({"userIds": ids})).status, 400);
    // Nothing was reset by the refused requests.
    assert_eq!(audit(&app, "type=mfa.reset")["totalResults"], 0);

    let r = app.post("/api/v1/mfa/resets", &json!({"filter": "userName sw \"a\" or userName eq \"c\"", "reason": "x"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reset"], 2);
    assert_eq!(app.post("/api/v1/mfa/resets", &json!({"filter": "userName eq"})).status, 400);
    assert_eq!(app.post("/api/v1/mfa/resets", &json!({"userIds": "a"})).status, 400);
    assert_eq!(app.post("/api/v1/mfa/resets", &json!({"reason": "nothing selected"})).status, 400);
}

#[test]
fn scim_reset_requested_resets_through_the_same_path() {
    let app = TestApp::spawn();
    let id = new_user(&app, "idp.user@example.com");
    enrol(&app, &id);
    let path = format!("/scim/v2/Users/{id}");
    let r = app.call(
        "PATCH",
        &path,
        Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            {"op": "Replace", "path": format!("{MFA}:resetRequested"), "value": "True"}
        ]})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body[MFA]["status"], "pending");
    assert!(r.body[MFA]["lastResetAt"].is_string());
    assert!(r.body[MFA].get("resetRequested").is_none(), "writeOnly is never returned");

    // PUT with the flag resets too; without it nothing happens.
    let mut full = app.get(&path).body;
    full[MFA] = json!({"resetRequested": true});
    assert_eq!(app.call("PUT", &path, Some(&full)).status, 200);
    full[MFA] = json!({"resetRequested": false});
    assert_eq!(app.call("PUT", &path, Some(&full)).status, 200);
    let events = audit(&app, &format!("userId={id}&type=mfa.reset"));
    assert_eq!(events["totalResults"], 2);
    assert_eq!(events["events"][0]["origin"], "scim");
    assert_eq!(events["events"][0]["actor"], "test");

    // Filters on the MFA status.
    new_user(&app, "never.enrolled");
    let list = app.filter(&format!("{MFA}:status eq \"none\""));
    assert_eq!(crate::helpers::user_names(&list), ["never.enrolled"]);
    let list = app.filter(&format!("{MFA}:status ne \"none\" and {MFA}:lastResetAt pr"));
    assert_eq!(crate::helpers::user_names(&list), ["idp.user@example.com"]);
    let bad = app.get(&format!("/scim/v2/Users?filter={}", encode(&format!("{MFA}:resetRequested eq true"))));
    assert_eq!(bad.status, 400);
}

#[test]
fn audit_lists_newest_first_with_paging_and_filters() {
    let app = TestApp::spawn();
    let a = new_user(&app, "a");
    let b = new_user(&app, "b");
    for id in [&a, &b, &a] {
        app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "r"}));
        app.clock.advance(Duration::seconds(10));
    }
    let all = audit(&app, "");
    assert_eq!(all["totalResults"], 3);
    assert_eq!(all["startIndex"], 1);
    let users: Vec<&str> = all["events"].as_array().unwrap().iter().map(|e| e["userName"].as_str().unwrap()).collect();
    assert_eq!(users, ["a", "b", "a"]);
    let times: Vec<&str> = all["events"].as_array().unwrap().iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times[0] > times[1] && times[1] > times[2], "{times:?}");
    let page = audit(&app, "startIndex=2&count=1");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["userName"], "b");
    assert_eq!(audit(&app, &format!("userId={a}"))["totalResults"], 2);
    let since = audit(&app, &format!("since={}", encode(times[1])));
    assert_eq!(since["totalResults"], 2);
    assert_eq!(app.get("/api/v1/audit?since=yesterday").status, 400);
}
