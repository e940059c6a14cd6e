//! Resources on the wire: normalising what identity providers send into the canonical stored
//! body, and rendering a stored resource back with `attributes`/`excludedAttributes`. Each
//! function takes the resource type (`schema::ResourceType`) whose schemas drive it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::error::ScimError;
use super::schema::{self, Attribute, Kind, Mutability, ResourceType, Returned, Schema};

/// Normalises a body of resource type `rt` as sent on POST/PUT (or produced by PATCH) into the
/// canonical stored form: schema spelling of every key, extension attributes under their
/// schema URN, booleans as booleans, readOnly and unknown attributes dropped, writeOnly ones
/// that are never returned (a User's `password`) discarded; then the type's own check
/// (`ResourceType::check`).
///
/// Lenient where identity providers are known to deviate (booleans as `"False"`, Entra's
/// manager as a bare id string, a single value where an array is expected).
pub(crate) fn normalize(rt: &ResourceType, input: &Value) -> Result<Map<String, Value>, ScimError> {
    let Some(obj) = input.as_object() else {
        return Err(not_an_object(rt));
    };
    let mut body = Map::new();
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            body.insert("externalId".into(), Value::String(scalar_string("externalId", value)?));
        } else if let Some(ext) = rt.extension(key) {
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
            let Some(sch) = rt.schema(urn) else { continue };
            if rt.is_core(sch) {
                normalize_into(sch, name, value, &mut body)?;
            } else {
                normalize_into(sch, name, value, extension_slot(&mut body, sch))?;
            }
        } else {
            normalize_into(rt.core, key, value, &mut body)?;
        }
    }
    // An extension whose attributes were all dropped (unknown, readOnly) is not stored.
    body.retain(|key, value| rt.extension(key).is_none() || value.as_object().is_some_and(|o| !o.is_empty()));
    (rt.check)(&body)?;
    Ok(body)
}

fn not_an_object(rt: &ResourceType) -> ScimError {
    ScimError::invalid_syntax(format!("the {} resource must be a JSON object", rt.name))
}

/// Checks the `schemas` of a resource of type `rt` sent on POST or PUT: present, a non-empty
/// list (`invalidSyntax` otherwise), naming the type's core schema and no schema of another
/// resource or message (`invalidValue`: a Group sent to `/Users`). Extension URNs this server
/// does not know are let through, like unknown attributes.
pub(crate) fn check_schemas(rt: &ResourceType, input: &Value) -> Result<(), ScimError> {
    let Some(obj) = input.as_object() else {
        return Err(not_an_object(rt));
    };
    let core = rt.core.id;
    let declared = schema::declared_schemas(obj)?;
    if !declared.iter().any(|s| s.eq_ignore_ascii_case(core)) {
        return Err(ScimError::invalid_value(format!("schemas must contain {core}")));
    }
    let foreign = |s: &&&str| {
        let s = s.to_ascii_lowercase();
        (s.starts_with("urn:ietf:params:scim:schemas:core:2.0:") && !s.eq_ignore_ascii_case(core))
            || s.starts_with("urn:ietf:params:scim:api:messages:2.0:")
    };
    if let Some(other) = declared.iter().find(foreign) {
        return Err(ScimError::invalid_value(format!("{other} is not a schema of a {}", rt.name)));
    }
    Ok(())
}

/// Whether a User body (as sent, or as patched) sets the MFA extension's write-only
/// `resetRequested` to true (`true` or `"True"`), nested or URN-qualified at the top level.
pub(crate) fn reset_requested(input: &Value) -> Result<bool, ScimError> {
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
pub(crate) fn boolean(name: &str, value: &Value) -> Result<bool, ScimError> {
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
    /// Lower-cased attribute paths as sent (`name.givenname`, `urn:…:user:department`); one
    /// qualified with the core schema's URN means the plain name, which [`Projection::apply`]
    /// resolves against the resource type.
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

    /// Whether an answer so projected shows `name`, a core attribute of `rt` (or a part of it):
    /// what a door asks before it reads a computed attribute (a group's members, a user's groups).
    pub(crate) fn shows(&self, rt: &ResourceType, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let names = |a: &String| {
            let a = core_relative(a, rt.core.id);
            a == name || a.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('.'))
        };
        if self.excluded.iter().any(|e| core_relative(e, rt.core.id) == name) {
            return false;
        }
        self.attributes.is_empty() || self.attributes.iter().any(names)
    }

    /// Whether the projection asks for nothing (every attribute returned by default).
    pub(crate) fn is_none(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    /// Applies the projection to a rendered resource of type `rt`. `id` and `schemas` are always
    /// returned.
    pub(crate) fn apply(&self, rt: &ResourceType, resource: &mut Value) {
        if self.is_none() {
            return;
        }
        let Some(obj) = resource.as_object_mut() else { return };
        let relative = Relative {
            attributes: self.attributes.iter().map(|a| core_relative(a, rt.core.id)).collect(),
            excluded: self.excluded.iter().map(|e| core_relative(e, rt.core.id)).collect(),
        };
        let keys: Vec<String> = obj.keys().cloned().collect();
        for key in keys {
            if key == "id" || key == "schemas" {
                continue;
            }
            let ext = rt.extension(&key);
            let path = match ext {
                Some(s) => s.id.to_ascii_lowercase(),
                None => key.to_ascii_lowercase(),
            };
            let keep = relative.keep(&path, obj.get_mut(&key).expect("key listed"), ext.is_some());
            if !keep {
                obj.remove(&key);
            }
        }
    }
}

/// A path of a projection with the core schema's URN taken off (`urn:…:core:2.0:user:emails`
/// is `emails`).
fn core_relative<'a>(path: &'a str, core: &str) -> &'a str {
    match (path.get(..core.len()), path.get(core.len()..)) {
        (Some(urn), Some(rest)) if urn.eq_ignore_ascii_case(core) && rest.starts_with(':') => &rest[1..],
        _ => path,
    }
}

/// A projection's paths relative to the resource type's core schema.
struct Relative<'a> {
    attributes: Vec<&'a str>,
    excluded: Vec<&'a str>,
}

impl Relative<'_> {
    /// Whether `path` stays; for complex values and extension objects, filters inside too.
    fn keep(&self, path: &str, value: &mut Value, is_extension: bool) -> bool {
        let sep = if is_extension { ":" } else { "." };
        if self.excluded.contains(&path) {
            return false;
        }
        if !self.attributes.is_empty() {
            let whole = self.attributes.contains(&path);
            let prefix = format!("{path}{sep}");
            let some: Vec<&&str> = self.attributes.iter().filter(|a| a.starts_with(&prefix)).collect();
            if !whole {
                if some.is_empty() {
                    return false;
                }
                retain_children(value, |child| some.iter().any(|a| a[prefix.len()..].split('.').next() == Some(child)));
                return true;
            }
        }
        let prefix = format!("{path}{sep}");
        let excluded_children: Vec<&&str> = self.excluded.iter().filter(|e| e.starts_with(&prefix)).collect();
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
    s.split(',').map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty()).collect()
}

/// Version and timestamps of a stored resource.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub created: chrono::DateTime<chrono::Utc>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub version: i64,
}

impl Meta {
    /// The weak entity tag of this version (`W/"3"`), used for `meta.version` and `ETag`.
    pub(crate) fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// SCIM dateTime: RFC 3339 in UTC with microseconds, the precision times are stored with, so
/// that a time read from a resource compares in filters as what it shows (`meta.created eq` the
/// user's own `meta.created` selects the user).
pub(crate) fn datetime(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The name the authenticator app goes by among a user's factors.
pub(crate) const TOTP_NAME: &str = "Authenticator app";

/// The MFA extension of a user, computed from its factor (never stored in the body).
#[derive(Debug, Clone)]
pub(crate) struct MfaView<'a> {
    pub status: &'a str,
    pub enrolled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_reset_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the authenticator app was confirmed, if it is.
    pub totp_enrolled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The security keys and passkeys, a JSON array of `{name, created}` as the store keeps it.
    pub webauthn: Option<&'a str>,
}

impl MfaView<'_> {
    /// The computed readOnly attributes by schema, as PATCH compares them
    /// (`patch::apply_checked`).
    pub(crate) fn computed(&self) -> Map<String, Value> {
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
        let mut factors = Vec::new();
        if let Some(t) = &self.totp_enrolled_at {
            factors.push(json!({"type": "totp", "name": TOTP_NAME, "created": datetime(t)}));
        }
        let keys: Vec<Map<String, Value>> = self.webauthn.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
        for mut key in keys {
            key.insert("type".into(), Value::from("webauthn"));
            factors.push(Value::Object(key));
        }
        if !factors.is_empty() {
            ext.insert("factors".into(), Value::Array(factors));
        }
        Value::Object(ext)
    }
}

/// Renders a stored resource of type `rt` as the full resource at `location`. `computed` holds
/// the server-computed extension objects by schema URN (a User's MFA state,
/// [`MfaView::computed`]); `schemas` lists the core schema and each extension present, stored or
/// computed.
pub(crate) fn render(
    rt: &ResourceType,
    id: &str,
    body: Map<String, Value>,
    computed: Map<String, Value>,
    meta: &Meta,
    location: &str,
) -> Value {
    let schemas = schemas_of(rt, |urn| body.contains_key(urn) || computed.contains_key(urn));
    let mut out = Map::with_capacity(body.len() + computed.len() + 3);
    out.insert("schemas".into(), json!(schemas));
    out.insert("id".into(), Value::from(id));
    // Moved, not copied: a page renders a hundred bodies.
    out.extend(body);
    out.extend(computed);
    out.insert("meta".into(), meta_of(rt, meta, location));
    Value::Object(out)
}

/// [`render`] from a body's stored text (its [`Fields`]), with no projection: the same document,
/// byte for byte, without parsing the body into values and writing them out again (what a page
/// of a hundred users spent most of its time on).
pub(crate) fn render_stored(
    rt: &ResourceType,
    id: &str,
    body: &Fields,
    computed: Map<String, Value>,
    meta: &Meta,
    location: &str,
) -> Box<RawValue> {
    let stored = |urn: &str| body.0.iter().any(|(k, _)| k == urn);
    let schemas = schemas_of(rt, |urn| stored(urn) || computed.contains_key(urn));
    let out = StoredOut { schemas, id, body, meta: meta_of(rt, meta, location), computed };
    serde_json::value::to_raw_value(&out).expect("a rendered resource serialises")
}

/// The core schema and each extension `present`.
fn schemas_of(rt: &ResourceType, present: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let mut schemas = vec![rt.core.id];
    schemas.extend(rt.extensions.iter().map(|s| s.id).filter(|id| present(id)));
    schemas
}

fn meta_of(rt: &ResourceType, meta: &Meta, location: &str) -> Value {
    json!({
        "resourceType": rt.name,
        "created": datetime(&meta.created),
        "lastModified": datetime(&meta.last_modified),
        "location": location,
        "version": meta.etag(),
    })
}

/// The members of a JSON object as written, in order, their values unparsed: a stored body
/// read for [`render_stored`]. Reading them checks the whole text.
#[derive(Debug)]
pub(crate) struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// `None` unless `text` is one JSON object.
    pub(crate) fn of(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(k), v)) = map.next_entry::<Key, &RawValue>()? {
                    members.push((k, v));
                }
                Ok(Fields(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// A member's name, borrowed from the text unless it holds an escape.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// What [`render_stored`] writes, in [`render`]'s order.
struct StoredOut<'a> {
    schemas: Vec<&'static str>,
    id: &'a str,
    body: &'a Fields<'a>,
    computed: Map<String, Value>,
    meta: Value,
}

impl Serialize for StoredOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schemas", &self.schemas)?;
        m.serialize_entry("id", self.id)?;
        // A stored body holds none of the members written here besides it (they are readOnly);
        // should one, it is written once, where render's map would have kept it.
        let own = |k: &str| matches!(k, "schemas" | "id" | "meta") || self.computed.contains_key(k);
        for (k, v) in self.body.0.iter().filter(|(k, _)| !own(k)) {
            m.serialize_entry(k, v)?;
        }
        for (k, v) in &self.computed {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("meta", &self.meta)?;
        m.end()
    }
}

/// A resource as an answer carries it: a document, or one rendered from its stored text.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Rendered {
    Doc(Value),
    Stored(Box<RawValue>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::USER_RESOURCE;

    fn normalize_user(input: &Value) -> Result<Map<String, Value>, ScimError> {
        normalize(&USER_RESOURCE, input)
    }

    #[test]
    fn user_schemas_are_required_and_must_be_the_users() {
        let check = |doc: Value| check_schemas(&USER_RESOURCE, &doc).map_err(|e| e.scim_type.map(|t| t.as_str()));
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
        let mfa = MfaView { status: "none", enrolled_at: None, last_reset_at: None, totp_enrolled_at: None, webauthn: None };
        render(&USER_RESOURCE, "id1", body, mfa.computed(), &meta, "http://h/scim/v2/Users/id1")
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
            Projection::parse(attributes, excluded).apply(&USER_RESOURCE, &mut r);
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

/// Normalisation, the `schemas` check, rendering and projection driven by the resource type
/// alone: a type with nothing of the User.
#[cfg(test)]
mod resource_type_tests {
    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::gadget::{COLOUR, CORE, GADGET};

    #[test]
    fn normalize_keeps_what_the_types_schemas_name() {
        let body = normalize(
            &GADGET,
            &json!({
                "schemas": [CORE], "LABEL": 7, "userName": "not a gadget's", "externalId": "e",
                format!("{CORE}:nosuch"): 1, COLOUR.to_uppercase(): {"COLOUR": "red"},
                schema::ENTERPRISE_USER: {"department": "Ops"},
            }),
        )
        .unwrap();
        assert_eq!(Value::Object(body), json!({"label": "7", "externalId": "e", COLOUR: {"colour": "red"}}));
        let e = normalize(&GADGET, &json!({"userName": "a"})).unwrap_err();
        assert_eq!((e.scim_type, e.detail.as_str()), (Some(ScimType::InvalidValue), "label is required"));
        let e = normalize(&GADGET, &json!([])).unwrap_err();
        assert_eq!(e.detail, "the Gadget resource must be a JSON object");
    }

    #[test]
    fn schemas_must_name_the_types_core_schema() {
        assert!(check_schemas(&GADGET, &json!({"schemas": [CORE, COLOUR]})).is_ok());
        let e = check_schemas(&GADGET, &json!({"schemas": [schema::USER]})).unwrap_err();
        assert_eq!(e.detail, format!("schemas must contain {CORE}"));
        let e = check_schemas(&GADGET, &json!({"schemas": [CORE, schema::USER]})).unwrap_err();
        assert_eq!(e.detail, format!("{} is not a schema of a Gadget", schema::USER));
        let e = check_schemas(&schema::USER_RESOURCE, &json!({"schemas": [schema::USER, CORE]})).unwrap_err();
        assert_eq!(e.detail, format!("{CORE} is not a schema of a User"));
    }

    #[test]
    fn render_and_projection_follow_the_type() {
        let body = normalize(&GADGET, &json!({"label": "a", COLOUR: {"colour": "red"}})).unwrap();
        let now = chrono::Utc::now();
        let meta = Meta { created: now, last_modified: now, version: 1 };
        let mut r = render(&GADGET, "g1", body.clone(), Map::new(), &meta, "http://h/scim/v2/Gadgets/g1");
        assert_eq!(r["schemas"], json!([CORE, COLOUR]));
        assert_eq!(r["meta"]["resourceType"], "Gadget");
        let bare = render(&GADGET, "g1", Map::from_iter([("label".to_string(), json!("a"))]), Map::new(), &meta, "l");
        assert_eq!(bare["schemas"], json!([CORE]), "an absent extension is not listed");
        Projection::parse(Some(&format!("{CORE}:label,{COLOUR}:colour")), None).apply(&GADGET, &mut r);
        let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(json!(keys), json!(["id", "label", "schemas", COLOUR]));
        // The User's core URN is not the Gadget's: its label is not the plain `label`.
        let mut r = render(&GADGET, "g1", body, Map::new(), &meta, "l");
        Projection::parse(None, Some(&format!("{}:label,{COLOUR}", schema::USER))).apply(&GADGET, &mut r);
        assert_eq!(r["label"], "a");
        assert!(r.get(COLOUR).is_none());
    }
}

/// Whether an `If-Match` header (`*`, or a list of entity tags) matches `version`.
/// Weak and strong forms compare equal: versions are only ever weak here.
pub(crate) fn etag_matches(header: &str, version: i64) -> bool {
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
    use crate::scim::schema::USER_RESOURCE;

    fn normalize_user(input: &Value) -> Result<Map<String, Value>, ScimError> {
        normalize(&USER_RESOURCE, input)
    }

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

        /// An answer written from a stored body's text is the document rendering its values
        /// gives, byte for byte: any body normalisation keeps, with or without computed parts.
        #[test]
        fn a_body_renders_from_its_stored_text_as_from_its_values(
            input in prop_oneof![json_value(), plausible_user()],
            mfa in any::<bool>(),
        ) {
            let Ok(body) = normalize_user(&input) else { return Ok(()) };
            let text = serde_json::to_string(&body).unwrap();
            let fields = Fields::of(&text).expect("a stored body reads as fields");
            let now = chrono::Utc::now();
            let computed = || match mfa {
                true => MfaView { status: "enrolled", enrolled_at: Some(now), last_reset_at: None, totp_enrolled_at: Some(now), webauthn: None }.computed(),
                false => Map::new(),
            };
            let meta = Meta { created: now, last_modified: now, version: 7 };
            let stored = render_stored(&USER_RESOURCE, "id\"1", &fields, computed(), &meta, "http://h/Users/x");
            let doc = render(&USER_RESOURCE, "id\"1", body, computed(), &meta, "http://h/Users/x");
            prop_assert_eq!(stored.get(), serde_json::to_string(&doc).unwrap());
        }
    }

    #[test]
    fn fields_read_only_json_objects() {
        assert!(Fields::of("[]").is_none());
        assert!(Fields::of("{\"a\":1").is_none());
        assert!(Fields::of("{\"a\":1} x").is_none());
        let f = Fields::of(r#"{"a\u0041":[1,{"b":"\n"}],"c":2.5}"#).unwrap();
        let names: Vec<&str> = f.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["aA", "c"]);
        assert_eq!(f.0[0].1.get(), r#"[1,{"b":"\n"}]"#);
    }
}
