//! `/Users`: create, read, replace, patch, delete, ETags, and identity-provider quirks.

use serde_json::{json, Value};

use crate::helpers::{assert_scim_error, TestApp, USER_SCHEMA};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MFA: &str = "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn barbara() -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": "bjensen@example.com",
        "externalId": "00u1",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs Jensen",
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "active": true,
        ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"},
    })
}

fn patch_doc(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

#[test]
fn post_creates_with_location_etag_and_meta() {
    let app = TestApp::spawn();
    let r = app.post("/scim/v2/Users", &barbara());
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(r.location.as_deref(), r.body["meta"]["location"].as_str());
    assert!(r.location.as_deref().unwrap().ends_with(&format!("/scim/v2/Users/{id}")));
    assert_eq!(r.etag.as_deref(), r.body["meta"]["version"].as_str());
    assert!(r.etag.as_deref().unwrap().starts_with("W/\""));
    assert_eq!(r.content_type.as_deref(), Some("application/scim+json"));
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["schemas"], json!([USER, ENTERPRISE, MFA]));
    assert_eq!(r.body[MFA], json!({"status": "none"}));
    assert_eq!(r.body[ENTERPRISE]["employeeNumber"], "701984");

    let got = app.get(&format!("/scim/v2/Users/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r.body);
    assert_eq!(got.etag, r.etag);
}

#[test]
fn okta_post_with_password_and_groups_is_accepted_and_password_never_returned() {
    let app = TestApp::spawn();
    let created = app.create_user(&json!({
        "schemas": [USER],
        "userName": "isaac.brock@example.com",
        "name": {"givenName": "Isaac", "familyName": "Brock"},
        "emails": [{"primary": true, "value": "isaac.brock@example.com", "type": "work"}],
        "displayName": "Isaac Brock",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true,
    }));
    assert!(created.get("password").is_none());
    assert!(created.get("groups").is_none());
    let id = created["id"].as_str().unwrap();
    let got = app.get(&format!("/scim/v2/Users/{id}")).body;
    assert!(got.get("password").is_none());
    assert!(!app.db.stored_bytes().contains(b"1mz050nq"), "password stored");
}

#[test]
fn booleans_sent_as_strings_are_understood_on_post_put_and_patch() {
    let app = TestApp::spawn();
    let mut body = barbara();
    body["active"] = json!("False");
    let created = app.create_user(&body);
    assert_eq!(created["active"], false);
    let id = created["id"].as_str().unwrap();

    body["active"] = json!("True");
    let put = app.call("PUT", &format!("/scim/v2/Users/{id}"), Some(&body));
    assert_eq!(put.body["active"], true, "{:?}", put.body);

    let p = app.call(
        "PATCH",
        &format!("/scim/v2/Users/{id}"),
        Some(&patch_doc(json!([{"op": "Replace", "path": "active", "value": "False"}]))),
    );
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["active"], false);
}

#[test]
fn user_name_is_unique_ignoring_case() {
    let app = TestApp::spawn();
    app.create_user(&barbara());
    let mut dup = barbara();
    dup["userName"] = json!("BJensen@Example.COM");
    let r = app.post("/scim/v2/Users", &dup);
    assert_scim_error(&r, 409, Some("uniqueness"));
    // Renaming another user onto a taken name is refused the same way.
    let other = app.create_user(&json!({"userName": "other"}));
    let r = app.call(
        "PATCH",
        &format!("/scim/v2/Users/{}", other["id"].as_str().unwrap()),
        Some(&patch_doc(json!([{"op": "replace", "path": "userName", "value": "BJENSEN@example.com"}]))),
    );
    assert_scim_error(&r, 409, Some("uniqueness"));
}

#[test]
fn invalid_bodies_are_refused_with_their_scim_type() {
    let app = TestApp::spawn();
    assert_scim_error(
        &app.post(
            "/scim/v2/Users",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "displayName": "no name"}),
        ),
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &app.post(
            "/scim/v2/Users",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a", "active": "perhaps"}),
        ),
        400,
        Some("invalidValue"),
    );
    let r = app.raw("POST", "/scim/v2/Users", Some("{\"userName\": "), &[("Authorization", &format!("Bearer {}", app.token))]);
    assert_scim_error(&r, 400, Some("invalidSyntax"));
    // Nothing was created by the refused requests.
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 0);
}

#[test]
fn put_replaces_everything_but_keeps_id_and_created() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let id = created["id"].as_str().unwrap();
    let put = app.call(
        "PUT",
        &format!("/scim/v2/Users/{id}"),
        Some(&json!({
            "schemas": [USER],
            "id": "someone-else",
            "userName": "bjensen@example.com",
            "displayName": "Barbara J.",
            "meta": {"created": "2000-01-01T00:00:00Z"},
        })),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["id"], id);
    assert_eq!(put.body["meta"]["created"], created["meta"]["created"]);
    assert_eq!(put.body["displayName"], "Barbara J.");
    for cleared in ["name", "emails", "externalId", ENTERPRISE] {
        assert!(put.body.get(cleared).is_none(), "{cleared} should be cleared: {:?}", put.body);
    }
    assert_ne!(put.etag, created["meta"]["version"].as_str().map(str::to_string));
}

#[test]
fn okta_get_then_put_round_trips() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let mut fetched = app.get(&path).body;
    fetched["name"]["givenName"] = json!("Barb");
    let put = app.call("PUT", &path, Some(&fetched));
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["name"]["givenName"], "Barb");
    assert_eq!(put.body[ENTERPRISE], created[ENTERPRISE]);
    assert_eq!(put.body["emails"], created["emails"]);
}

#[test]
fn patch_follows_rfc_and_entra_forms() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    // Entra ID's documented update request.
    let r = app.call(
        "PATCH",
        &path,
        Some(&patch_doc(json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "mgr-1"},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "555-1234", "type": "mobile"}]},
            {"op": "remove", "path": "displayName"},
        ]))),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["emails"][0]["value"], "updatedEmail@microsoft.com");
    assert_eq!(r.body["name"]["familyName"], "updatedFamilyName");
    assert_eq!(r.body["name"]["givenName"], "Barbara");
    assert_eq!(r.body[ENTERPRISE]["manager"]["value"], "mgr-1");
    assert_eq!(r.body["phoneNumbers"][0]["value"], "555-1234");
    assert!(r.body.get("displayName").is_none());

    // Manager sent as {"value": id}, then removed by its URN path.
    let r = app.call(
        "PATCH",
        &path,
        Some(&patch_doc(json!([{"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": {"value": "mgr-2"}}]))),
    );
    assert_eq!(r.body[ENTERPRISE]["manager"]["value"], "mgr-2", "{:?}", r.body);
    let r = app.call("PATCH", &path, Some(&patch_doc(json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}]))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body[ENTERPRISE].get("manager").is_none(), "{:?}", r.body);
    assert_eq!(r.body[ENTERPRISE]["employeeNumber"], "701984");

    // Path-less values with plain, dotted and URN-qualified keys.
    let r = app.call(
        "PATCH",
        &path,
        Some(&patch_doc(json!([{"op": "replace", "value": {
            "displayName": "Barbara Jensen",
            "name.givenName": "Barbie",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
        }}]))),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["displayName"], "Barbara Jensen");
    assert_eq!(r.body["name"]["givenName"], "Barbie");
    assert_eq!(r.body[ENTERPRISE]["department"], "Sales");
}

#[test]
fn okta_pathless_deactivation_keeps_the_user_visible() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let r = app.call("PATCH", &path, Some(&patch_doc(json!([{"op": "replace", "value": {"active": false}}]))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["active"], false);
    // Soft-deleted users are still returned by GET and by filters.
    assert_eq!(app.get(&path).body["active"], false);
    let list = app.filter("userName eq \"bjensen@example.com\"");
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["active"], false);
    assert_eq!(app.filter("active eq false")["totalResults"], 1);
}

#[test]
fn patch_errors_carry_scim_types_and_change_nothing() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let cases = [
        (json!([{"op": "replace", "path": "nosuchattribute", "value": "x"}]), 400, "invalidPath"),
        (json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]), 400, "invalidPath"),
        (json!([{"op": "remove"}]), 400, "noTarget"),
        (json!([{"op": "move", "path": "displayName"}]), 400, "invalidSyntax"),
        (json!([{"op": "replace", "path": "groups", "value": [{"value": "g"}]}]), 400, "mutability"),
        (
            json!([{"op": "replace", "path": "displayName", "value": "ok"}, {"op": "replace", "path": "active", "value": "maybe"}]),
            400,
            "invalidValue",
        ),
    ];
    for (ops, status, scim_type) in cases {
        let r = app.call("PATCH", &path, Some(&patch_doc(ops.clone())));
        assert_scim_error(&r, status, Some(scim_type));
    }
    let r = app.call("PATCH", &path, Some(&json!({"Operations": "nope"})));
    assert_scim_error(&r, 400, Some("invalidSyntax"));
    // The failed requests left the user as it was.
    assert_eq!(app.get(&path).body, created);
}

#[test]
fn if_match_guards_writes() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let etag = created["meta"]["version"].as_str().unwrap().to_string();
    let auth = format!("Bearer {}", app.token);
    let change = patch_doc(json!([{"op": "replace", "path": "displayName", "value": "v2"}]));

    let ok = app.call_with("PATCH", &path, Some(&change), &[("Authorization", &auth), ("If-Match", &etag)]);
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_ne!(ok.etag.as_deref(), Some(etag.as_str()));

    // The old version no longer matches: 412 for PATCH, PUT and DELETE.
    let stale = app.call_with("PATCH", &path, Some(&change), &[("Authorization", &auth), ("If-Match", &etag)]);
    assert_scim_error(&stale, 412, None);
    let stale = app.call_with("PUT", &path, Some(&barbara()), &[("Authorization", &auth), ("If-Match", &etag)]);
    assert_scim_error(&stale, 412, None);
    let stale = app.call_with("DELETE", &path, None, &[("Authorization", &auth), ("If-Match", &etag)]);
    assert_scim_error(&stale, 412, None);
    assert_eq!(app.get(&path).status, 200);

    let current = ok.etag.unwrap();
    let del = app.call_with("DELETE", &path, None, &[("Authorization", &auth), ("If-Match", &current)]);
    assert_eq!(del.status, 204);
}

#[test]
fn delete_answers_204_then_404() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let r = app.call("DELETE", &path, None);
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null);
    assert_scim_error(&app.get(&path), 404, None);
    assert_scim_error(&app.call("DELETE", &path, None), 404, None);
    assert_scim_error(&app.call("PUT", &path, Some(&barbara())), 404, None);
    // The name is free again.
    app.create_user(&barbara());
}

#[test]
fn attributes_and_excluded_attributes_shape_single_resources() {
    let app = TestApp::spawn();
    let r = app.post("/scim/v2/Users?attributes=userName,name.givenName", &barbara());
    assert_eq!(r.status, 201);
    let mut keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "name", "schemas", "userName"]);
    assert_eq!(r.body["name"], json!({"givenName": "Barbara"}));
    let id = r.body["id"].as_str().unwrap();
    let g = app.get(&format!("/scim/v2/Users/{id}?excludedAttributes=emails,{ENTERPRISE}"));
    assert!(g.body.get("emails").is_none());
    assert!(g.body.get(ENTERPRISE).is_none());
    assert_eq!(g.body["userName"], "bjensen@example.com");
    let p = app.call(
        "PATCH",
        &format!("/scim/v2/Users/{id}?attributes=displayName"),
        Some(&patch_doc(json!([{"op": "replace", "path": "displayName", "value": "B"}]))),
    );
    assert_eq!(p.status, 200);
    assert_eq!(p.body["displayName"], "B");
    assert!(p.body.get("userName").is_none(), "{:?}", p.body);
}

#[test]
fn entra_replace_on_a_missing_work_email_creates_it() {
    let app = TestApp::spawn();
    let created = app.create_user(&json!({"userName": "new.hire@example.com"}));
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let r = app.call(
        "PATCH",
        &path,
        Some(&patch_doc(json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new.hire@example.com"}]))),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["emails"], json!([{"type": "work", "value": "new.hire@example.com"}]));
    // And the created email is searchable like any other.
    assert_eq!(app.filter("emails[type eq \"work\"].value eq \"NEW.HIRE@example.com\"")["totalResults"], 1);
    // A filter that cannot describe a new element has no target.
    let r = app.call(
        "PATCH",
        &path,
        Some(&patch_doc(json!([{"op": "replace", "path": "phoneNumbers[type ne \"work\"].value", "value": "1"}]))),
    );
    assert_scim_error(&r, 400, Some("noTarget"));
}

#[test]
fn user_names_that_look_alike_are_one_user_and_invisible_characters_are_refused() {
    let app = TestApp::spawn();
    let twins = [
        ("A\u{030A}ngstr\u{00F6}m", "\u{00C5}ngstro\u{0308}m"),
        ("STRASSE", "stra\u{00DF}e"),
        ("\u{0130}stanbul", "istanbul"),
        ("\u{FF21}lice", "alice"),
        ("\u{FB03}x", "FFIX"),
        ("trail ", "trail"),
    ];
    for (first, second) in twins {
        let created = app.create_user(&json!({"userName": first}));
        assert_eq!(created["userName"], first, "stored as sent");
        let r = app.post("/scim/v2/Users", &json!({"schemas": [USER_SCHEMA], "userName": second}));
        assert_scim_error(&r, 409, Some("uniqueness"));
        // Found by either spelling.
        let found = app.filter(&format!("userName eq {}", serde_json::to_string(second).unwrap()));
        assert_eq!(found["totalResults"], 1, "{second:?}: {found}");
        assert_eq!(found["Resources"][0]["id"], created["id"]);
    }
    for bad in ["zero\u{200B}width", "bidi\u{202E}override", "tab\tbed", "   "] {
        let r = app.post("/scim/v2/Users", &json!({"schemas": [USER_SCHEMA], "userName": bad}));
        assert_scim_error(&r, 400, Some("invalidValue"));
    }
    assert_eq!(app.filter("userName sw \"STRA\u{00DF}\"")["totalResults"], 1, "substrings fold the same way");
}

#[test]
fn user_documents_without_the_user_schema_are_refused() {
    let app = TestApp::spawn();
    let cases = [
        (json!({"userName": "a"}), "invalidSyntax"),
        (json!({"schemas": [], "userName": "a"}), "invalidSyntax"),
        (json!({"schemas": USER, "userName": "a"}), "invalidSyntax"),
        (json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "a"}), "invalidValue"),
        (json!({"schemas": [USER, "urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "a"}), "invalidValue"),
        (json!({"schemas": [ENTERPRISE], "userName": "a"}), "invalidValue"),
    ];
    let id = app.create_user(&barbara())["id"].as_str().unwrap().to_string();
    for (doc, scim_type) in &cases {
        assert_scim_error(&app.post("/scim/v2/Users", doc), 400, Some(scim_type));
        assert_scim_error(&app.call("PUT", &format!("/scim/v2/Users/{id}"), Some(doc)), 400, Some(scim_type));
    }
    assert_eq!(app.get("/scim/v2/Users").body["totalResults"], 1, "nothing created");
    assert_eq!(app.get(&format!("/scim/v2/Users/{id}")).body["userName"], "bjensen@example.com", "nothing replaced");

    // A PATCH must be a PatchOp: the schema declared, as Entra ID and Okta always do.
    let ops = json!([{"op": "replace", "path": "displayName", "value": "x"}]);
    for doc in
        [json!({"Operations": ops}), json!({"schemas": [], "Operations": ops}), json!({"schemas": [USER], "Operations": ops})]
    {
        assert_scim_error(&app.call("PATCH", &format!("/scim/v2/Users/{id}"), Some(&doc)), 400, Some("invalidSyntax"));
    }
    assert_eq!(app.get(&format!("/scim/v2/Users/{id}")).body["displayName"], "Babs Jensen");

    // Extensions this server does not know are ignored like unknown attributes, URNs match
    // ignoring case, and Okta's POST without a Content-Type is JSON.
    let okta = json!({
        "schemas": [USER.to_uppercase(), "urn:okta:custom:2.0:User"], "userName": "okta@example.com",
        "password": "secret", "groups": [], "urn:okta:custom:2.0:User": {"costCenter": "7"}
    });
    let auth = format!("Bearer {}", app.token);
    let r = crate::raw_http::RawClient::new(&app.base).send(
        &format!(
            "POST /scim/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Length: {}",
            okta.to_string().len()
        ),
        okta.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn patching_read_only_mfa_attributes_is_refused_with_or_without_a_path_unless_unchanged() {
    let app = TestApp::spawn();
    let created = app.create_user(&barbara());
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let status = format!("{MFA}:status");
    let changes = [
        patch_doc(json!([{"op": "replace", "value": {MFA: {"status": "enrolled"}}}])),
        patch_doc(json!([{"op": "add", "value": {status.clone(): "enrolled"}}])),
        patch_doc(json!([{"op": "replace", "path": MFA, "value": {"enrolledAt": "2026-01-01T00:00:00Z"}}])),
        patch_doc(json!([{"op": "replace", "path": status.clone(), "value": "enrolled"}])),
    ];
    for change in &changes {
        assert_scim_error(&app.call("PATCH", &path, Some(change)), 400, Some("mutability"));
    }
    let now = app.get(&path).body;
    assert_eq!(now[MFA]["status"], "none");
    assert_eq!(now["meta"]["version"], created["meta"]["version"], "nothing was written");

    // Echoing what GET shows is accepted, and the rest of the operation applies.
    let echo = patch_doc(json!([{"op": "replace", "value": {"title": "Boss", MFA: now[MFA].clone(), "id": now["id"].clone()}}]));
    let r = app.call("PATCH", &path, Some(&echo));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["title"].as_str(), r.body[MFA]["status"].as_str()), (Some("Boss"), Some("none")));

    // Okta's GET-then-PUT carries the readOnly MFA attributes as GET returned them.
    let mut fetched = app.get(&path).body;
    fetched["displayName"] = json!("Barbara J.");
    let put = app.call("PUT", &path, Some(&fetched));
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["displayName"], "Barbara J.");
}

#[test]
fn users_whose_names_collide_under_the_new_rule_are_kept_apart_reported_and_still_writable() {
    use diesel::RunQueryDsl;
    let app = TestApp::spawn();
    let a = app.create_user(&json!({"userName": "STRASSE"}));
    let b = app.create_user(&json!({"userName": "strasz"}));
    let b_id = b["id"].as_str().unwrap().to_string();
    // As an older version stored them: "straße" was a name of its own (lower-cased key).
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let mut conn = pool.get().unwrap();
    diesel::sql_query(format!(
        "UPDATE users SET user_name = 'straße', user_name_key = 'straße', body = replace(body, 'strasz', 'straße') WHERE id = '{b_id}'"
    ))
    .execute(&mut *conn)
    .unwrap();
    diesel::sql_query("UPDATE deployment SET value = '1' WHERE name = 'search_index_version'").execute(&mut *conn).unwrap();
    drop(conn);
    // The upgrade's start rebuilds the keys: the younger user is kept apart, not merged.
    provisiond::app::open_database(&app.config).unwrap();
    let found = app.filter("userName eq \"strasse\"");
    assert_eq!(found["totalResults"], 1);
    assert_eq!(found["Resources"][0]["id"], a["id"]);
    let events = app.get("/api/v1/audit?type=user.user_name_collision").body;
    assert_eq!(events["totalResults"], 1, "{events}");
    assert_eq!(events["events"][0]["userId"], b_id.as_str());
    assert_eq!(events["events"][0]["detail"]["collidesWith"]["id"], a["id"]);
    // It can still be changed (and renamed, which settles it).
    let patch = |value: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": value}]});
    let r = app.call("PATCH", &format!("/scim/v2/Users/{b_id}"), Some(&patch(json!({"displayName": "B"}))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app.call("PATCH", &format!("/scim/v2/Users/{b_id}"), Some(&patch(json!({"userName": "strasse2"}))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(app.filter("userName eq \"STRASSE2\"")["Resources"][0]["id"], b_id.as_str());
}

#[test]
fn a_removed_external_id_no_longer_finds_the_user_and_a_patch_keeps_the_other_columns() {
    let app = TestApp::spawn();
    let created = app.create_user(&json!({"schemas": [USER], "userName": "ext@example.com", "externalId": "ext-1"}));
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let found = |filter: &str| {
        app.get(&format!("/scim/v2/Users?filter={}", provisiond::config::percent_encode(filter))).body["totalResults"].clone()
    };
    assert_eq!(found("externalId eq \"ext-1\""), 1);
    let r = app.call("PATCH", &path, Some(&patch_doc(json!([{"op": "remove", "path": "externalId"}]))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("externalId").is_none());
    assert_eq!(found("externalId eq \"ext-1\""), 0, "the user is no longer found by the externalId it lost");
    assert_eq!(found("externalId pr"), 0);
    let r = app.call("PATCH", &path, Some(&patch_doc(json!([{"op": "replace", "path": "active", "value": false}]))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(found("userName eq \"EXT@example.com\" and active eq false"), 1);
}
