//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of `/api/v1`, and that it describes
//! exactly the routes the daemon serves. (`tests/openapi.sh` runs schemathesis against it.)

use serde_json::{json, Value};

use crate::helpers::TestApp;

/// Every `/api/v1` operation the README documents, with a path that reaches it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/users/{id}/mfa"),
    ("post", "/api/v1/users/{id}/mfa/totp"),
    ("post", "/api/v1/users/{id}/mfa/totp/confirm"),
    ("post", "/api/v1/users/{id}/mfa/verify"),
    ("post", "/api/v1/users/{id}/mfa/backup-codes"),
    ("post", "/api/v1/users/{id}/mfa/reset"),
    ("post", "/api/v1/mfa/resets"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/sync/runs"),
    ("get", "/api/v1/sync/runs"),
    ("get", "/api/v1/sync/runs/{id}"),
    ("post", "/api/v1/users/{id}/mfa/enrolment-links"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/users/{id}/mfa/webauthn/registration"),
    ("post", "/api/v1/users/{id}/mfa/webauthn/registration/finish"),
    ("post", "/api/v1/users/{id}/mfa/webauthn/authentication"),
    ("post", "/api/v1/users/{id}/mfa/webauthn/authentication/finish"),
    ("delete", "/api/v1/users/{id}/mfa/webauthn/{credentialId}"),
];

#[test]
fn the_openapi_document_lists_every_api_route_the_daemon_serves() {
    let app = TestApp::spawn();
    let r = app.raw("GET", "/api/v1/openapi.json", None, &[]);
    assert_eq!(r.status, 200, "no token needed: {:?}", r.body);
    assert!(r.content_type.as_deref().unwrap_or_default().starts_with("application/json"));
    let doc = r.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    let parsed: Result<utoipa::openapi::OpenApi, _> = serde_json::from_value(doc.clone());
    assert!(parsed.is_ok(), "not an OpenAPI document: {:?}", parsed.err());

    // The document's operations are exactly the routes.
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);

    // And the daemon serves each of them: no answer is the "no such endpoint" of unknown routes.
    let id = app.create_user(&json!({"userName": "doc"}))["id"].as_str().unwrap().to_string();
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", &id);
        let body = (*method == "post").then(|| json!({"reason": "openapi test", "code": "000000", "userIds": []}));
        let r = app.call(&method.to_uppercase(), &concrete, body.as_ref());
        assert!(!r.body.to_string().contains("no such endpoint"), "{method} {concrete}: {:?}", r.body);
        assert_ne!(r.status, 405, "{method} {concrete}");
    }
    let unknown = app.call("GET", "/api/v1/printers", None);
    assert_eq!((unknown.status, unknown.body["error"].as_str()), (404, Some("not_found")));
    assert!(unknown.body["detail"].as_str().unwrap().contains("no such endpoint"));

    // Every operation but the document itself needs the bearer token and says what a refused one gets.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"].as_str().map(str::to_ascii_lowercase).as_deref(),
        Some("bearer")
    );
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        let statuses: Vec<&str> = op["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        if *path == "/api/v1/openapi.json" {
            assert_eq!(op["security"], json!([{}]), "open to all");
            continue;
        }
        assert!(statuses.contains(&"401") && statuses.contains(&"403"), "{method} {path}: {statuses:?}");
        if !op["requestBody"].is_null() {
            for s in ["400", "408", "413", "415"] {
                assert!(statuses.contains(&s), "{method} {path} lacks {s}: {statuses:?}");
            }
        }
    }
    // A reset needs a reason.
    let reset = resolve(
        &doc,
        &doc["paths"]["/api/v1/users/{id}/mfa/reset"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    assert!(reset["required"].as_array().unwrap().contains(&json!("reason")), "{reset}");
}

/// Follows a `$ref` into `components`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => r.trim_start_matches("#/").split('/').fold(doc, |v, k| &v[k]),
        None => schema,
    }
}
