//! Authentication, body limits, content types, health and unknown routes.

use serde_json::json;

use crate::helpers::{assert_scim_error, TestApp};

#[test]
fn scim_needs_a_valid_token_with_the_scim_scope() {
    let app = TestApp::spawn();
    let missing = app.raw("GET", "/scim/v2/Users", None, &[]);
    assert_scim_error(&missing, 401, None);
    assert!(missing.www_authenticate.as_deref().unwrap().starts_with("Bearer"));
    let wrong = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", "Bearer pvd_not-a-token")]);
    assert_scim_error(&wrong, 401, None);
    assert!(wrong.www_authenticate.is_some());
    let basic = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", &format!("Basic {}", app.token))]);
    assert_scim_error(&basic, 401, None);
    // The token is never echoed back.
    assert!(!wrong.body.to_string().contains("pvd_not-a-token"));

    // A token without the scim scope is recognised but refused.
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let mfa_only = provisiond::domain::tokens::Tokens::new(pool)
        .create("mfa-only", &[provisiond::domain::tokens::Scope::Mfa])
        .unwrap();
    let r = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", &format!("Bearer {}", mfa_only.expose()))]);
    assert_scim_error(&r, 403, None);
}

#[test]
fn bodies_over_the_limit_get_413_and_change_nothing() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 4096);
    let big = json!({"userName": "big", "displayName": "x".repeat(5000)});
    let r = app.post("/scim/v2/Users", &big);
    assert_scim_error(&r, 413, None);
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 0);
}

#[test]
fn json_and_scim_json_requests_are_accepted_and_answers_are_scim_json() {
    let app = TestApp::spawn();
    let auth = format!("Bearer {}", app.token);
    for (i, ct) in ["application/scim+json", "application/json", "application/scim+json; charset=utf-8"].iter().enumerate() {
        let body = json!({"userName": format!("u{i}")}).to_string();
        let r = app.raw("POST", "/scim/v2/Users", Some(&body), &[("Authorization", &auth), ("Content-Type", ct)]);
        assert_eq!(r.status, 201, "{ct}: {:?}", r.body);
        assert_eq!(r.content_type.as_deref(), Some("application/scim+json"));
    }
}

#[test]
fn health_and_readiness_need_no_token() {
    let app = TestApp::spawn();
    let h = app.raw("GET", "/healthz", None, &[]);
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let r = app.raw("GET", "/readyz", None, &[]);
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
}

#[test]
fn unknown_scim_endpoints_and_methods_are_scim_errors() {
    let app = TestApp::spawn();
    assert_scim_error(&app.get("/scim/v2/Printers"), 404, None);
    assert_scim_error(&app.call("DELETE", "/scim/v2/Users", None), 405, None);
    assert_scim_error(&app.get("/scim/v2/Users/not-an-id"), 404, None);
}

#[test]
fn a_bad_token_is_challenged_with_invalid_token_and_a_missing_one_without_an_error() {
    let app = TestApp::spawn();
    for path in ["/scim/v2/Users", "/api/v1/audit", "/metrics"] {
        let missing = app.raw("GET", path, None, &[]);
        assert_eq!(missing.status, 401, "{path}");
        assert_eq!(missing.www_authenticate.as_deref(), Some(r#"Bearer realm="provisiond""#), "{path}");
        let basic = app.raw("GET", path, None, &[("Authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(basic.www_authenticate.as_deref(), Some(r#"Bearer realm="provisiond""#), "{path}");
        let bad = app.raw("GET", path, None, &[("Authorization", "Bearer pvd_not-a-token")]);
        assert_eq!(bad.status, 401, "{path}");
        assert_eq!(bad.www_authenticate.as_deref(), Some(r#"Bearer realm="provisiond", error="invalid_token""#), "{path}");
    }
    // A revoked token is an invalid one.
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let tokens = provisiond::domain::tokens::Tokens::new(pool);
    let revoked = tokens.create("gone", &[provisiond::domain::tokens::Scope::Scim]).unwrap();
    tokens.revoke("gone").unwrap();
    let r = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", &format!("Bearer {}", revoked.expose()))]);
    assert_eq!(r.www_authenticate.as_deref(), Some(r#"Bearer realm="provisiond", error="invalid_token""#));
}
