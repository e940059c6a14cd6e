//! Authentication, body limits, content types, health and unknown routes.

use serde_json::json;

use crate::helpers::{assert_scim_error, TestApp};
use crate::raw_http::RawClient;
use provisiond::config::Network;

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
    let mfa_only = provisiond::domain::tokens::Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock))
        .create("mfa-only", &[provisiond::domain::tokens::Scope::Mfa])
        .unwrap();
    let r = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", &format!("Bearer {}", mfa_only.expose()))]);
    assert_scim_error(&r, 403, None);
}

#[test]
fn bodies_over_the_limit_get_413_and_change_nothing() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 4096);
    let big =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "big", "displayName": "x".repeat(5000)});
    let r = app.post("/scim/v2/Users", &big);
    assert_scim_error(&r, 413, None);
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 0);
}

#[test]
fn json_and_scim_json_requests_are_accepted_and_answers_are_scim_json() {
    let app = TestApp::spawn();
    let auth = format!("Bearer {}", app.token);
    for (i, ct) in ["application/scim+json", "application/json", "application/scim+json; charset=utf-8"].iter().enumerate() {
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": format!("u{i}")}).to_string();
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
    let tokens = provisiond::domain::tokens::Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock));
    let revoked = tokens.create("gone", &[provisiond::domain::tokens::Scope::Scim]).unwrap();
    tokens.revoke("gone").unwrap();
    let r = app.raw("GET", "/scim/v2/Users", None, &[("Authorization", &format!("Bearer {}", revoked.expose()))]);
    assert_eq!(r.www_authenticate.as_deref(), Some(r#"Bearer realm="provisiond", error="invalid_token""#));
}

/// Creates a user over a raw connection with these extra header lines; returns the `Location`
/// header and `meta.location`.
fn create_with_headers(app: &TestApp, user_name: &str, extra: &str) -> (String, String) {
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}).to_string();
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\n{extra}\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}",
        app.token,
        body.len()
    );
    let r = RawClient::new(&app.base).send(&head, body.as_bytes());
    assert_eq!(r.status, 201, "{extra}: {}", r.body);
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    (r.header("location").unwrap().to_string(), doc["meta"]["location"].as_str().unwrap().to_string())
}

#[test]
fn forged_host_and_forwarded_headers_are_not_echoed_into_locations() {
    let app = TestApp::spawn();
    let listen = app.base.clone(); // http://127.0.0.1:PORT
    let cases = [
        // A Host that is no host[:port] falls back to the listen address.
        ("Host: evil.com/\"><script>", listen.clone()),
        ("Host: evil.com/path", listen.clone()),
        // A well-formed Host is the address the client used.
        ("Host: scim.example.com:8443", "http://scim.example.com:8443".to_string()),
        // Forwarded headers from a peer not in server.trusted_proxies are ignored.
        ("Host: scim.example.com\r\nForwarded: host=evil2.com;proto=https", "http://scim.example.com".to_string()),
        (
            "Host: scim.example.com\r\nX-Forwarded-Host: evil3.com\r\nX-Forwarded-Proto: https",
            "http://scim.example.com".to_string(),
        ),
    ];
    for (i, (extra, origin)) in cases.iter().enumerate() {
        let (location, meta) = create_with_headers(&app, &format!("u{i}"), extra);
        let expected = format!("{origin}/scim/v2/Users/");
        assert!(location.starts_with(&expected), "{extra}: Location {location}");
        assert_eq!(meta, location, "{extra}");
        assert!(!location.contains("evil") && !location.contains('<') && !location.contains('"'), "{location}");
    }
}

#[test]
fn forwarded_headers_are_believed_from_trusted_proxies_only_when_well_formed() {
    let app = TestApp::spawn_with(|c| c.server.trusted_proxies = vec![Network::parse("127.0.0.0/8").unwrap()]);
    let cases = [
        ("Host: 127.0.0.1\r\nForwarded: for=203.0.113.9;host=idm.example.com;proto=https", "https://idm.example.com"),
        ("Host: 127.0.0.1\r\nX-Forwarded-Host: idm.example.com:444\r\nX-Forwarded-Proto: https", "https://idm.example.com:444"),
        // Even a trusted proxy cannot put markup in a URL: the request's own Host is used.
        ("Host: 127.0.0.1:9\r\nForwarded: host=\"evil.com/<x>\";proto=https", "https://127.0.0.1:9"),
        ("Host: 127.0.0.1:9\r\nX-Forwarded-Proto: javascript", "http://127.0.0.1:9"),
    ];
    for (i, (extra, origin)) in cases.iter().enumerate() {
        let (location, meta) = create_with_headers(&app, &format!("t{i}"), extra);
        assert!(location.starts_with(&format!("{origin}/scim/v2/Users/")), "{extra}: Location {location}");
        assert_eq!(meta, location);
    }
    // server.public_url wins over everything.
    let fixed = TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec![Network::parse("127.0.0.1").unwrap()];
        c.server.public_url = Some("https://scim.corp.example/".into());
    });
    let (location, _) = create_with_headers(&fixed, "p", "Host: evil.com\r\nForwarded: host=evil2.com;proto=http");
    assert!(location.starts_with("https://scim.corp.example/scim/v2/Users/"), "{location}");
}

#[test]
fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let app = TestApp::spawn_with(|c| c.server.request_timeout = 1);
    for (path, partial) in [("/scim/v2/Users", r#"{"userName": "#), ("/api/v1/mfa/resets", r#"{"reason"#)] {
        let mut conn = std::io::BufReader::new(crate::raw_http::connect(&app.base));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{partial}",
            app.token
        );
        std::io::Write::write_all(conn.get_mut(), head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let r = crate::raw_http::read_reply(&mut conn);
        assert_eq!(r.status, 408, "{path}: {}", r.body);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "answered after {:?}", started.elapsed());
        // The server is done with this connection: the rest of the body is not awaited.
        conn.get_ref().set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        match std::io::Read::read_to_end(&mut conn, &mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "the connection stayed open: {e}"),
        }
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // Nothing was created.
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 0);
}

#[test]
fn writes_that_are_not_json_get_415_and_change_nothing() {
    let app = TestApp::spawn();
    let id = app.create_user(&json!({"userName": "kept", "displayName": "before"}))["id"].as_str().unwrap().to_string();
    let auth = format!("Bearer {}", app.token);
    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "new"}).to_string();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "after"}]})
    .to_string();
    let writes = [
        ("POST", "/scim/v2/Users".to_string(), user.clone()),
        ("PUT", format!("/scim/v2/Users/{id}"), user.clone()),
        ("PATCH", format!("/scim/v2/Users/{id}"), patch),
        ("POST", "/scim/v2/Users/.search".to_string(), json!({"filter": "userName pr"}).to_string()),
        ("POST", format!("/api/v1/users/{id}/mfa/reset"), json!({"reason": "lost phone"}).to_string()),
    ];
    for (method, path, body) in &writes {
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"] {
            let r = app.raw(method, path, Some(body), &[("Authorization", &auth), ("Content-Type", ct)]);
            assert_eq!(r.status, 415, "{method} {path} as {ct}: {:?}", r.body);
            assert!(r.body.to_string().contains(ct.split(';').next().unwrap()), "names the type: {:?}", r.body);
        }
    }
    let kept = app.get(&format!("/scim/v2/Users/{id}")).body;
    assert_eq!((kept["userName"].as_str(), kept["displayName"].as_str()), (Some("kept"), Some("before")));
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 1);
    assert_eq!(app.get(&format!("/api/v1/users/{id}/mfa")).body["lastResetAt"], serde_json::Value::Null);
}
