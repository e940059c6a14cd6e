//! The User resource on the wire: normalising what identity providers send into the canonical
//! stored body, and rendering a stored user back with `attributes`/`excludedAttributes`.

use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::schema::{self, Attribute, Kind, Mutability, Returned, Schema};

/// Normalises a User body as sent on POST/PUT (or produced by PATCH) into the canonical stored
/// form: schema spelling of every key, extension attributes under their schema URN, booleans
/// as booleans, readOnly and unknown attributes dropped, `password` discarded.
///
/// Lenient where identity providers are known to deviate (booleans as `"False"`, Entra's
/// manager as a bare id string, a single value where an array is expected).
pub fn normalize_user(input: &Value) -> Result<Map<String, Value>, ScimError> {
    let Some(obj) = input.as_object() else {
        return Err(ScimError::invalid_syntax("the User resource must be a JSON object"));
    };
    let mut body = Map::new();
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            body.insert("externalId".into(), Value::String(scalar_string("externalId", value)?));
        } else if let Some(ext) = schema::user_schema(key).filter(|s| s.id != schema::USER) {
            let Some(ext_obj) = value.as_object() else {
                return Err(ScimError::invalid_syntax(format!("{} must be a JSON object", ext.id)));
            };
            // Merged with URN-qualified attributes of the same extension sent before it.
            let slot = extension_slot(&mut body, ext);
            for (k, v) in ext_obj {
                normalize_into(ext, k, v, slot)?;
            }
        } else if let Some((urn, name)) = split_urn(key) {
            // A URN-qualified attribute at the top level (`urn:…:User:department`).
            let Some(sch) = schema::user_schema(urn) else { continue };
            if sch.id == schema::USER {
                normalize_into(sch, name, value, &mut body)?;
            } else {
                normalize_into(sch, name, value, extension_slot(&mut body, sch))?;
            }
        } else {
            normalize_into(&schema::USER_SCHEMA, key, value, &mut body)?;
        }
    }
    // An extension whose attributes were all dropped (unknown, readOnly) is not stored.
    body.retain(|key, value| schema::user_schema(key).is_none() || value.as_object().is_some_and(|o| !o.is_empty()));
    let name = body.get("userName").and_then(Value::as_str).unwrap_or_default();
    super::user_name::check(name).map_err(ScimError::invalid_value)?;
    Ok(body)
}

/// Checks the `schemas` of a User sent on POST or PUT: present, a non-empty list
/// (`invalidSyntax` otherwise), naming the core User schema and no schema of another resource
/// or message (`invalidValue`: a Group sent to `/Users`). Extension URNs this server does not
/// know are let through, like unknown attributes.
pub fn check_user_schemas(input: &Value) -> Result<(), ScimError> {
    let Some(obj) = input.as_object() else {
        return Err(ScimError::invalid_syntax("the User resource must be a JSON object"));
    };
    let declared = schema::declared_schemas(obj)?;
    if !declared.iter().any(|s| s.eq_ignore_ascii_case(schema::USER)) {
        return Err(ScimError::invalid_value(format!("schemas must contain {}", schema::USER)));
    }
    let foreign = |s: &&&str| {
        let s = s.to_ascii_lowercase();
        (s.starts_with("urn:ietf:params:scim:schemas:core:2.0:") && !s.eq_ignore_ascii_case(schema::USER))
            || s.starts_with("urn:ietf:params:scim:api:messages:2.0:")
    };
    if let Some(other) = declared.iter().find(foreign) {
        return Err(ScimError::invalid_value(format!("{other} is not a schema of a User")));
    }
    Ok(())
}

/// Whether a User body (as sent, or as patched) sets the MFA extension's write-only
/// `resetRequested` to true (`true` or `"True"`), nested or URN-qualified at the top level.
pub fn reset_requested(input: &Value) -> Result<bool, ScimError> {
    let Some(obj) = input.as_object() else { return Ok(false) };
    let flag = "resetRequested";
    let nested = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(schema::MFA_USER))
        .and_then(|(_, ext)| ext.as_object())
        .and_then(|ext| ext.iter().find(|(k, _)| k.eq_ignore_ascii_case(flag)).map(|(_, v)| v));
    let qualified = obj
        .iter()
        .find(|(k, _)| {
            split_urn(k).is_some_and(|(urn, name)| urn.eq_ignore_ascii_case(schema::MFA_USER) && name.eq_ignore_ascii_case(flag))
        })
        .map(|(_, v)| v);
    match nested.or(qualified) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => boolean(flag, v),
    }
}

/// The object holding the attributes of extension `ext` in `body`, created empty when absent.
fn extension_slot<'a>(body: &'a mut Map<String, Value>, ext: &Schema) -> &'a mut Map<String, Value> {
    let slot = body.entry(ext.id).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("extension object")
}

/// `urn:…:User:attr` → (`urn:…:User`, `attr`).
fn split_urn(key: &str) -> Option<(&str, &str)> {
    if !key.get(..4)?.eq_ignore_ascii_case("urn:") {
        return None;
    }
    key.rsplit_once(':')
}

fn normalize_into(sch: &Schema, key: &str, value: &Value, out: &mut Map<String, Value>) -> Result<(), ScimError> {
    let Some(attr) = sch.attribute(key) else {
        tracing::debug!(attribute = key, schema = sch.id, "ignoring unknown attribute");
        return Ok(());
    };
    if let Some(v) = normalize_value(attr, value)? {
        out.insert(attr.name.into(), v);
    }
    Ok(())
}

/// The canonical value of `attr`, or `None` when it is to be dropped (null, empty, readOnly,
/// writeOnly-and-never-stored).
fn normalize_value(attr: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    if value.is_null() || matches!(attr.mutability, Mutability::ReadOnly) || attr.returned == Returned::Never {
        return Ok(None);
    }
    if attr.multi_valued {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(attr, item)? {
                out.push(v);
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    normalize_single(attr, value)
}

fn normalize_single(attr: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    Ok(match attr.kind {
        _ if value.is_null() => None,
        Kind::Boolean => Some(Value::Bool(boolean(attr.name, value)?)),
        Kind::String | Kind::Reference | Kind::DateTime => Some(Value::String(scalar_string(attr.name, value)?)),
        Kind::Complex => {
            let obj = match value {
                Value::Object(obj) => obj.clone(),
                // Entra sends the enterprise manager as a bare id; a plain value stands for `value`.
                Value::String(_) | Value::Number(_) | Value::Bool(_) if attr.sub("value").is_some() => {
                    Map::from_iter([("value".to_string(), value.clone())])
                }
                _ => {
                    return Err(ScimError::invalid_value(format!("{} must be a complex object", attr.name)));
                }
            };
            let mut out = Map::new();
            for (k, v) in &obj {
                let Some(sub) = attr.sub(k) else { continue };
                if let Some(v) = normalize_value(sub, v)? {
                    out.insert(sub.name.into(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
    })
}

/// Booleans as JSON booleans, or as the strings `"true"`/`"false"` in any case (Entra, Okta).
pub fn boolean(name: &str, value: &Value) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::invalid_value(format!("{name} must be a boolean, got {other}"))),
    }
}

fn scalar_string(name: &str, value: &Value) -> Result<String, ScimError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ScimError::invalid_value(format!("{name} must be a string"))),
    }
}

/// What a client asked to see: `attributes` or `excludedAttributes` (RFC 7644 §3.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Lower-cased, fully qualified attribute paths (`name.givenname`, `urn:…:user:department`).
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Projection {
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Self {
        Projection {
            attributes: attributes.map(split_list).unwrap_or_default(),
            excluded: excluded.map(split_list).unwrap_or_default(),
        }
    }

    /// Applies the projection to a rendered resource. `id` and `schemas` are always returned.
    pub fn apply(&self, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else { return };
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            if key == "id" || key == "schemas" {
                continue;
            }
            let ext = schema::user_schema(&key).filter(|s| s.id != schema::USER);
            let path = match ext {
                Some(s) => s.id.to_ascii_lowercase(),
                None => key.to_ascii_lowercase(),
            };
            let keep = self.keep(&path, obj.get_mut(&key).expect("key listed"), ext.is_some());
            if !keep {
                obj.remove(&key);
            }
        }
    }

    /// Whether `path` stays; for complex values and extension objects, filters inside too.
    fn keep(&self, path: &str, value: &mut Value, is_extension: bool) -> bool {
        let sep = if is_extension { ":" } else { "." };
        if self.excluded.iter().any(|e| e == path) {
            return false;
        }
        if !self.attributes.is_empty() {
            let whole = self.attributes.iter().any(|a| a == path);
            let prefix = format!("{path}{sep}");
            let some: Vec<&String> = self.attributes.iter().filter(|a| a.starts_with(&prefix)).collect();
            if !whole {
                if some.is_empty() {
                    return false;
                }
                retain_children(value, |child| some.iter().any(|a| a[prefix.len()..].split('.').next() == Some(child)));
                return true;
            }
        }
        let prefix = format!("{path}{sep}");
        let excluded_children: Vec<&String> = self.excluded.iter().filter(|e| e.starts_with(&prefix)).collect();
        if !excluded_children.is_empty() {
            retain_children(value, |child| !excluded_children.iter().any(|e| &e[prefix.len()..] == child));
        }
        true
    }
}

/// Keeps the sub-attributes (matched lower-case) of an object, or of each object in an array.
fn retain_children(value: &mut Value, keep: impl Fn(&str) -> bool) {
    match value {
        Value::Object(obj) => obj.retain(|k, _| keep(&k.to_ascii_lowercase())),
        Value::Array(items) => items.iter_mut().for_each(|i| {
            if let Value::Object(obj) = i {
                obj.retain(|k, _| keep(&k.to_ascii_lowercase()));
            }
        }),
        _ => {}
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .map(|a| {
            // A core-URN-qualified name is the same as the plain name.
            let core = format!("{}:", schema::USER.to_ascii_lowercase());
            a.strip_prefix(&core).map(str::to_string).unwrap_or(a)
        })
        .collect()
}

/// Version and timestamps of a stored resource.
#[derive(Debug, Clone)]
pub struct Meta {
    pub created: chrono::DateTime<chrono::Utc>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub version: i64,
}

impl Meta {
    /// The weak entity tag of this version (`W/"3"`), used for `meta.version` and `ETag`.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// SCIM dateTime: RFC 3339 in UTC with microseconds, the precision times are stored with, so
/// that a time read from a resource compares in filters as what it shows (`meta.created eq` the
/// user's own `meta.created` selects the user).
pub fn datetime(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The MFA extension of a user, computed from its factor (never stored in the body).
#[derive(Debug, Clone)]
pub struct MfaView<'a> {
    pub status: &'a str,
    pub enrolled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_reset_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl MfaView<'_> {
    /// The computed readOnly attributes by schema, as PATCH compares them
    /// (`patch::apply_checked`).
    pub fn computed(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(schema::MFA_USER.into(), self.to_json());
        out
    }

    fn to_json(&self) -> Value {
        let mut ext = Map::new();
        ext.insert("status".into(), Value::from(self.status));
        if let Some(t) = &self.enrolled_at {
            ext.insert("enrolledAt".into(), Value::from(datetime(t)));
        }
        if let Some(t) = &self.last_reset_at {
            ext.insert("lastResetAt".into(), Value::from(datetime(t)));
        }
        Value::Object(ext)
    }
}

/// Renders a stored User body as the full resource at `location`.
pub fn render_user(id: &str, body: &Map<String, Value>, mfa: &MfaView, meta: &Meta, location: &str) -> Value {
    let mut schemas = vec![Value::from(schema::USER)];
    schemas.extend(
        schema::USER_SCHEMAS[1..]
            .iter()
            .filter(|s| body.contains_key(s.id) || s.id == schema::MFA_USER)
            .map(|s| Value::from(s.id)),
    );
    let mut out = Map::with_capacity(body.len() + 4);
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::from(id));
    for (k, v) in body {
        out.insert(k.clone(), v.clone());
    }
    out.insert(schema::MFA_USER.into(), mfa.to_json());
    out.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": datetime(&meta.created),
            "lastModified": datetime(&meta.last_modified),
            "location": location,
            "version": meta.etag(),
        }),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_schemas_are_required_and_must_be_the_users() {
        let check = |doc: Value| check_user_schemas(&doc).map_err(|e| e.scim_type.map(|t| t.as_str()));
        assert!(check(json!({"schemas": [schema::USER], "userName": "a"})).is_ok());
        assert!(check(json!({"SCHEMAS": [schema::USER.to_uppercase(), schema::ENTERPRISE_USER, schema::MFA_USER]})).is_ok());
        assert!(check(json!({"schemas": [schema::USER, "urn:example:custom:2.0:User"]})).is_ok(), "unknown extensions pass");
        for bad in [json!({"userName": "a"}), json!({"schemas": []}), json!({"schemas": schema::USER}), json!({"schemas": [1]})] {
            assert_eq!(check(bad.clone()), Err(Some("invalidSyntax")), "{bad}");
        }
        for bad in [
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"]}),
            json!({"schemas": [schema::USER, "urn:ietf:params:scim:schemas:core:2.0:Group"]}),
            json!({"schemas": [schema::ENTERPRISE_USER]}),
            json!({"schemas": [schema::USER, schema::PATCH_OP]}),
        ] {
            assert_eq!(check(bad.clone()), Err(Some("invalidValue")), "{bad}");
        }
    }

    #[test]
    fn normalize_accepts_identity_provider_quirks() {
        let body = normalize_user(&json!({
            "schemas": [schema::USER, schema::ENTERPRISE_USER],
            "UserName": "Bjensen@Example.com",
            "active": "False",
            "password": "t1meMa$heen",
            "groups": [],
            "id": "client-chosen",
            "emails": {"value": "b@example.com", "type": "work", "primary": "true"},
            "name": {"givenname": "Barbara", "unknown": 1},
            "nonsense": true,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": "boss-id", "employeeNumber": 42},
        }))
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({
                "userName": "Bjensen@Example.com",
                "active": false,
                "emails": [{"value": "b@example.com", "type": "work", "primary": true}],
                "name": {"givenName": "Barbara"},
                schema::ENTERPRISE_USER: {"manager": {"value": "boss-id"}, "employeeNumber": "42"},
            })
        );
    }

    #[test]
    fn normalize_refuses_what_cannot_be_meant() {
        let cases = [
            (json!([1]), "invalidSyntax"),
            (json!({"displayName": "x"}), "invalidValue"),
            (json!({"userName": "a", "active": "maybe"}), "invalidValue"),
            (json!({"userName": "a", "name": [1]}), "invalidValue"),
            (json!({"userName": ""}), "invalidValue"),
        ];
        for (input, scim_type) in cases {
            let err = normalize_user(&input).unwrap_err();
            assert_eq!(err.scim_type.unwrap().as_str(), scim_type, "{input}");
            assert_eq!(err.status, 400);
        }
    }

    #[test]
    fn reset_requested_is_read_in_both_spellings_and_never_stored() {
        let nested = json!({"userName": "a", schema::MFA_USER: {"resetRequested": "True"}});
        assert!(reset_requested(&nested).unwrap());
        assert!(normalize_user(&nested).unwrap().get(schema::MFA_USER).is_none());
        let qualified = json!({format!("{}:resetrequested", schema::MFA_USER): true});
        assert!(reset_requested(&qualified).unwrap());
        assert!(!reset_requested(&json!({schema::MFA_USER: {"resetRequested": false}})).unwrap());
        assert!(!reset_requested(&json!({"userName": "a"})).unwrap());
        assert!(reset_requested(&json!({schema::MFA_USER: {"resetRequested": "soon"}})).is_err());
    }

    #[test]
    fn top_level_urn_qualified_attributes_land_in_their_schema() {
        let body = normalize_user(&json!({
            "userName": "a",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops",
            "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "A",
        }))
        .unwrap();
        assert_eq!(body[schema::ENTERPRISE_USER]["department"], "Ops");
        assert_eq!(body["displayName"], "A");
    }

    #[test]
    fn extension_attributes_merge_whatever_their_spelling_and_dropped_ones_leave_nothing() {
        // Found by `normalizing_any_json_never_panics_and_is_idempotent`: a dropped qualified
        // attribute left an empty extension object, which a second normalisation removed.
        let qualified = format!("{}:status", schema::MFA_USER);
        let body = normalize_user(&json!({"userName": "a", qualified: "enrolled"})).unwrap();
        assert_eq!(Value::Object(body), json!({"userName": "a"}));
        let nosuch = format!("{}:nosuch", schema::ENTERPRISE_USER);
        let body = normalize_user(&json!({"userName": "a", nosuch: 1, schema::ENTERPRISE_USER: {"nosuch": 2}})).unwrap();
        assert!(body.get(schema::ENTERPRISE_USER).is_none(), "{body:?}");
        // A nested extension object no longer replaces qualified attributes sent before it.
        let department = format!("{}:department", schema::ENTERPRISE_USER);
        let body =
            normalize_user(&json!({"userName": "a", department: "Ops", schema::ENTERPRISE_USER: {"costCenter": "7"}})).unwrap();
        assert_eq!(body[schema::ENTERPRISE_USER], json!({"department": "Ops", "costCenter": "7"}));
    }

    fn rendered() -> Value {
        let body = normalize_user(&json!({
            "userName": "a", "name": {"givenName": "G", "familyName": "F"},
            "emails": [{"value": "a@x", "type": "work"}],
            schema::ENTERPRISE_USER: {"department": "Ops", "costCenter": "1"},
        }))
        .unwrap();
        let now = chrono::Utc::now();
        let meta = Meta { created: now, last_modified: now, version: 3 };
        let mfa = MfaView { status: "none", enrolled_at: None, last_reset_at: None };
        render_user("id1", &body, &mfa, &meta, "http://h/scim/v2/Users/id1")
    }

    #[test]
    fn render_lists_present_extensions_and_meta() {
        let r = rendered();
        assert_eq!(r["schemas"], json!([schema::USER, schema::ENTERPRISE_USER, schema::MFA_USER]));
        assert_eq!(r[schema::MFA_USER], json!({"status": "none"}));
        assert_eq!(r["meta"]["version"], "W/\"3\"");
        assert_eq!(r["meta"]["location"], "http://h/scim/v2/Users/id1");
    }

    #[test]
    fn projection_keeps_requested_and_always_returned() {
        let cases: [(Option<&str>, Option<&str>, Value); 4] = [
            (Some("userName"), None, json!(["id", "schemas", "userName"])),
            (
                Some("name.givenName,urn:ietf:params:scim:schemas:core:2.0:User:emails"),
                None,
                json!(["emails", "id", "name", "schemas"]),
            ),
            (
                None,
                Some("emails,meta,name,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
                json!(["id", "schemas", schema::MFA_USER, "userName"]),
            ),
            (
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
                None,
                json!(["id", "schemas", schema::ENTERPRISE_USER]),
            ),
        ];
        for (attributes, excluded, keys) in cases {
            let mut r = rendered();
            Projection::parse(attributes, excluded).apply(&mut r);
            let mut got: Vec<&String> = r.as_object().unwrap().keys().collect();
            got.sort();
            assert_eq!(json!(got), keys, "{attributes:?} {excluded:?}");
            if attributes == Some("name.givenName,urn:ietf:params:scim:schemas:core:2.0:User:emails") {
                assert_eq!(r["name"], json!({"givenName": "G"}));
            }
            if excluded.is_none() && attributes.unwrap().ends_with("department") {
                assert_eq!(r[schema::ENTERPRISE_USER], json!({"department": "Ops"}));
            }
        }
    }
}

/// Whether an `If-Match` header (`*`, or a list of entity tags) matches `version`.
/// Weak and strong forms compare equal: versions are only ever weak here.
pub fn etag_matches(header: &str, version: i64) -> bool {
    let want = version.to_string();
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == want)
}

#[cfg(test)]
mod etag_tests {
    #[test]
    fn if_match_forms() {
        use super::etag_matches;
        assert!(etag_matches("W/\"3\"", 3));
        assert!(etag_matches("\"3\"", 3));
        assert!(etag_matches("*", 9));
        assert!(etag_matches("W/\"1\", W/\"3\"", 3));
        assert!(!etag_matches("W/\"2\"", 3));
    }
}

/// Properties: normalisation survives any JSON, and what it returns is already normal.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::proptest_support::{config, json_value, plausible_user};

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn normalizing_any_json_never_panics_and_is_idempotent(input in prop_oneof![json_value(), plausible_user()]) {
            let _ = reset_requested(&input);
            match normalize_user(&input) {
                Ok(body) => {
                    prop_assert!(body.get("userName").and_then(Value::as_str).is_some_and(|n| !n.trim().is_empty()));
                    let again = normalize_user(&Value::Object(body.clone()));
                    prop_assert_eq!(again, Ok(body), "input {}", input);
                }
                Err(e) => prop_assert_eq!(e.status, 400, "{}", e.detail),
            }
        }
    }
}
