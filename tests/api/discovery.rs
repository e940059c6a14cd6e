//! Discovery endpoints describe what the server really does, and are read-only.

use serde_json::json;

use crate::helpers::{assert_scim_error, TestApp};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MFA: &str = "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User";

#[test]
fn service_provider_config_states_the_supported_features() {
    let app = TestApp::spawn();
    let r = app.get("/scim/v2/ServiceProviderConfig");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/scim+json"));
    let c = r.body;
    assert_eq!(c["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]));
    assert_eq!(c["patch"]["supported"], true);
    assert_eq!(c["filter"]["supported"], true);
    assert_eq!(c["filter"]["maxResults"], json!(1000));
    assert_eq!(c["sort"]["supported"], true);
    assert_eq!(c["etag"]["supported"], true);
    assert_eq!(c["bulk"]["supported"], false);
    assert_eq!(c["changePassword"]["supported"], false);
    assert_eq!(c["authenticationSchemes"][0]["type"], "oauthbearertoken");
}

#[test]
fn resource_types_list_user_with_its_extensions_and_group() {
    let app = TestApp::spawn();
    let list = app.get("/scim/v2/ResourceTypes").body;
    assert_eq!(list["totalResults"], json!(2));
    assert_eq!(list["Resources"][1]["endpoint"], "/Groups");
    let user = &list["Resources"][0];
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], USER);
    assert_eq!(user["schemaExtensions"], json!([{"schema": ENTERPRISE, "required": false}, {"schema": MFA, "required": false}]));
    let single = app.get("/scim/v2/ResourceTypes/User");
    assert_eq!(single.status, 200);
    assert_eq!(&single.body, user);
    assert_scim_error(&app.get("/scim/v2/ResourceTypes/Printer"), 404, None);
}

#[test]
fn schemas_describe_core_enterprise_mfa_and_group() {
    let app = TestApp::spawn();
    let list = app.get("/scim/v2/Schemas").body;
    let ids: Vec<&str> = list["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [USER, ENTERPRISE, MFA, "urn:ietf:params:scim:schemas:core:2.0:Group"]);
    let user = app.get(&format!("/scim/v2/Schemas/{USER}")).body;
    let attr = |name: &str| user["attributes"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap();
    assert_eq!(attr("userName")["uniqueness"], "server");
    assert_eq!(attr("userName")["required"], true);
    assert_eq!(attr("password")["returned"], "never");
    assert_eq!(attr("groups")["mutability"], "readOnly");
    assert_eq!(attr("emails")["multiValued"], true);
    let ent = app.get(&format!("/scim/v2/Schemas/{ENTERPRISE}")).body;
    assert_eq!(ent["attributes"].as_array().unwrap().iter().filter(|a| a["name"] == "manager").count(), 1);
    assert_eq!(app.get(&format!("/scim/v2/Schemas/{MFA}")).status, 200);
    assert_scim_error(&app.get("/scim/v2/Schemas/urn:nope"), 404, None);
}

#[test]
fn discovery_refuses_writes_with_405() {
    let app = TestApp::spawn();
    for path in
        ["/scim/v2/ServiceProviderConfig", "/scim/v2/ResourceTypes", "/scim/v2/Schemas", &format!("/scim/v2/Schemas/{USER}")]
    {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let r = app.call(method, path, Some(&json!({})));
            assert_scim_error(&r, 405, None);
        }
    }
}
