//! SCIM PATCH (RFC 7644 §3.5.2) applied to a stored body of a resource type (its schemas say
//! which paths exist).
//!
//! The body is the canonical stored form (see `resource::normalize`): core attributes at the
//! top level, `externalId` at the top level, extension attributes under their schema URN. This
//! module only moves values into the right place under their canonical names; the caller
//! re-normalises afterwards (types, readOnly attributes, a User's required `userName`).
//!
//! Beyond the RFC it accepts what Microsoft Entra ID and Okta really send: capitalised op names,
//! `"False"` strings, the manager as a bare id, path-less values echoing readOnly attributes,
//! and value-filter paths that name an element which does not exist yet.

mod body;
pub(crate) mod members;
mod resolve;
mod write;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimType};
use super::filter::{self, AttrPath, CompValue, CompareOp, Filter, PatchPath};
use super::schema::{self, Attribute, Kind, Mutability, ResourceType, Schema};
use body::*;
use resolve::*;
use write::*;

/// Most operations accepted in one request.
pub(crate) const MAX_OPERATIONS: usize = 1000;

/// Applies a PatchOp request document to `body`, a resource of type `rt`. All-or-nothing: on
/// error `body` is unchanged (work on a clone and swap at the end).
pub(crate) fn apply(rt: &ResourceType, body: &mut Map<String, Value>, request: &Value) -> Result<(), ScimError> {
    apply_checked(rt, body, request, &Map::new())
}

/// As [`apply`], for a resource whose server-computed readOnly attributes currently have the
/// values in `computed` (as GET shows them: `{"urn:…:mfa:2.0:User": {"status": …}}`). A
/// path-less value (or a whole extension object) may echo them unchanged, as identity
/// providers echo what they read, but one that changes them is refused with `mutability`, the
/// answer the same change gets with a path.
pub(crate) fn apply_checked(
    rt: &ResourceType,
    body: &mut Map<String, Value>,
    request: &Value,
    computed: &Map<String, Value>,
) -> Result<(), ScimError> {
    let operations = operations(request)?;
    for (i, operation) in operations.iter().enumerate() {
        check_computed(rt, operation, computed)
            .map_err(|e| ScimError { detail: format!("operation {}: {}", i + 1, e.detail), ..e })?;
    }
    let mut work = body.clone();
    for (i, operation) in operations.iter().enumerate() {
        // Name the failing operation: a request may carry hundreds of them.
        apply_one(rt, &mut work, operation)
            .map_err(|e| ScimError { detail: format!("operation {}: {}", i + 1, e.detail), ..e })?;
    }
    *body = work;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// One element of `Operations`, borrowed from the request.
struct Operation<'a> {
    op: Op,
    path: Option<&'a str>,
    /// `Some(Value::Null)` for an explicit `"value": null`, `None` when absent.
    value: Option<&'a Value>,
}

/// What a path designates.
enum Target {
    /// A schema URN alone: the whole extension object (or, for the core URN, the top level).
    Schema(&'static Schema),
    /// `externalId`, the one writable common attribute (RFC 7643 §3.1); not in the schema tables.
    ExternalId,
    Attr(AttrTarget),
}

/// An attribute of a schema, possibly narrowed by a value filter and/or a sub-attribute.
struct AttrTarget {
    schema: &'static Schema,
    attr: &'static Attribute,
    /// Only on multi-valued attributes (checked by [`resolve`]).
    filter: Option<Filter>,
    /// `givenName` in `name.givenName`, or `value` in `emails[type eq "work"].value`.
    sub: Option<&'static Attribute>,
}

// ---------------------------------------------------------------------------------------------
// The request document
// ---------------------------------------------------------------------------------------------

fn operations(request: &Value) -> Result<Vec<Operation<'_>>, ScimError> {
    let Some(doc) = request.as_object() else {
        return Err(ScimError::invalid_syntax("the PATCH request must be a JSON object"));
    };
    // Entra ID and Okta always name the PatchOp schema; a document without it is not a PatchOp.
    if !schema::declared_schemas(doc)?.iter().any(|s| s.eq_ignore_ascii_case(schema::PATCH_OP)) {
        return Err(ScimError::invalid_syntax(format!("schemas must contain {}", schema::PATCH_OP)));
    }
    let list = match member(doc, "Operations") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(ScimError::invalid_syntax("Operations must be a non-empty array")),
    };
    if list.len() > MAX_OPERATIONS {
        return Err(ScimError::bad_request(
            ScimType::TooMany,
            format!("at most {MAX_OPERATIONS} operations are accepted in one request"),
        ));
    }
    list.iter().map(operation).collect()
}

fn operation(value: &Value) -> Result<Operation<'_>, ScimError> {
    let Some(obj) = value.as_object() else {
        return Err(ScimError::invalid_syntax("each operation must be a JSON object"));
    };
    // Entra ID capitalises op names ("Add", "Replace", "Remove").
    let op = match member(obj, "op").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("add") => Op::Add,
        Some(s) if s.eq_ignore_ascii_case("replace") => Op::Replace,
        Some(s) if s.eq_ignore_ascii_case("remove") => Op::Remove,
        Some(other) => return Err(ScimError::invalid_syntax(format!("unknown op {other:?}"))),
        None => return Err(ScimError::invalid_syntax("op must be \"add\", \"replace\" or \"remove\"")),
    };
    let path = match member(obj, "path") {
        // A blank path is what some clients send for "no path".
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ScimError::invalid_syntax("path must be a string")),
    };
    Ok(Operation { op, path, value: member(obj, "value") })
}

/// The member called `name`, ignoring case (clients disagree on `Operations` vs `operations`).
fn member<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn apply_one(rt: &ResourceType, body: &mut Map<String, Value>, operation: &Operation<'_>) -> Result<(), ScimError> {
    match (operation.op, operation.path) {
        // RFC 7644 §3.5.2.2: "If "path" is unspecified, the operation fails with ... noTarget".
        (Op::Remove, None) => Err(ScimError::no_target("remove requires a path")),
        (Op::Remove, Some(path)) => remove(rt, body, &resolve(rt, path)?, operation.value),
        (op, Some(path)) => {
            let Some(value) = operation.value else {
                return Err(ScimError::invalid_syntax("add and replace require a value"));
            };
            write(rt, body, op, &resolve(rt, path)?, value)
        }
        (op, None) => match operation.value {
            Some(Value::Object(members)) => write_members(rt, body, op, rt.core, members),
            _ => Err(ScimError::invalid_syntax("without a path, value must be a JSON object")),
        },
    }
}

/// Refuses an add/replace whose object value would change a computed readOnly attribute.
fn check_computed(rt: &ResourceType, operation: &Operation<'_>, computed: &Map<String, Value>) -> Result<(), ScimError> {
    let (Op::Add | Op::Replace, Some(Value::Object(members))) = (operation.op, operation.value) else { return Ok(()) };
    let default = match operation.path {
        None => rt.core,
        Some(path) => match resolve(rt, path) {
            Ok(Target::Schema(s)) => s,
            _ => return Ok(()),
        },
    };
    check_computed_members(rt, default, members, computed)
}

fn check_computed_members(
    rt: &ResourceType,
    default: &'static Schema,
    members: &Map<String, Value>,
    computed: &Map<String, Value>,
) -> Result<(), ScimError> {
    for (key, sent) in members {
        let Ok(path) = filter::parse_path(key) else { continue };
        match resolve_parsed(rt, &path, default) {
            Ok(Target::Schema(s)) => {
                if let Value::Object(inner) = sent {
                    check_computed_members(rt, s, inner, computed)?;
                }
            }
            Err(e)
                if e.scim_type == Some(ScimType::Mutability)
                    && path.filter.is_none()
                    && path.sub.is_none()
                    && path.attr.sub.is_none() =>
            {
                let schema = match &path.attr.urn {
                    None => default,
                    Some(urn) => match rt.schema(urn) {
                        Some(s) => s,
                        None => continue,
                    },
                };
                let Some(Value::Object(current)) = computed.get(schema.id) else { continue };
                let Some(attr) = schema.attribute(&path.attr.name) else { continue };
                let now = current.get(attr.name).unwrap_or(&Value::Null);
                if !same_value(sent, now) {
                    return Err(ScimError::mutability(format!(
                        "{}:{} is readOnly (it is {now}, not {sent})",
                        schema.id, attr.name
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The same value as a GET shows: strings ignoring case, date-times as instants.
fn same_value(sent: &Value, now: &Value) -> bool {
    match (sent, now) {
        (Value::String(a), Value::String(b)) => {
            let instant = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            a.eq_ignore_ascii_case(b) || instant(a).is_some_and(|t| Some(t) == instant(b))
        }
        _ => sent == now,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ENT: &str = schema::ENTERPRISE_USER;
    /// The path Entra ID uses for the manager.
    const MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

    enum Expect {
        Body(Value),
        Error(u16, ScimType),
    }

    struct Case {
        name: &'static str,
        body: Value,
        request: Value,
        expect: Expect,
    }

    fn case(name: &'static str, body: Value, request: Value, expect: Expect) -> Case {
        Case { name, body, request, expect }
    }

    fn body(v: Value) -> Expect {
        Expect::Body(v)
    }

    fn error(t: ScimType) -> Expect {
        Expect::Error(400, t)
    }

    /// A PatchOp document with these operations.
    fn ops(operations: Value) -> Value {
        json!({"schemas": [schema::PATCH_OP], "Operations": operations})
    }

    /// A typical stored user with a work and a home email and an enterprise extension.
    fn bjensen() -> Value {
        json!({
            "userName": "bjensen",
            "externalId": "ext-1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            ENT: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
        })
    }

    /// `bjensen()` with top-level keys replaced (`null` removes the key).
    fn bjensen_with(changes: Value) -> Value {
        let mut out = bjensen();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                out.as_object_mut().unwrap().remove(k);
            } else {
                out[k] = v.clone();
            }
        }
        out
    }

    fn cases() -> Vec<Case> {
        let too_many = vec![json!({"op": "add", "path": "title", "value": "x"}); MAX_OPERATIONS + 1];
        vec![
            // ---- the request document
            case("request not an object", bjensen(), json!([]), error(ScimType::InvalidSyntax)),
            case("Operations missing", bjensen(), json!({"schemas": [schema::PATCH_OP]}), error(ScimType::InvalidSyntax)),
            case("Operations empty", bjensen(), ops(json!([])), error(ScimType::InvalidSyntax)),
            case("Operations not an array", bjensen(), ops(json!({"op": "add"})), error(ScimType::InvalidSyntax)),
            case(
                "schemas without PatchOp",
                bjensen(),
                json!({"schemas": [schema::USER], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
                error(ScimType::InvalidSyntax),
            ),
            case(
                "keys matched ignoring case",
                json!({"userName": "u"}),
                json!({"Schemas": [schema::PATCH_OP], "operations": [{"OP": "Replace", "Path": "title", "VALUE": "Boss"}]}),
                body(json!({"userName": "u", "title": "Boss"})),
            ),
            // Issue 11 changes this: a PATCH without the PatchOp schema used to be accepted.
            case(
                "schemas missing",
                bjensen(),
                json!({"Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
                error(ScimType::InvalidSyntax),
            ),
            case(
                "schemas empty",
                bjensen(),
                json!({"schemas": [], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
                error(ScimType::InvalidSyntax),
            ),
            case(
                "schemas a string",
                bjensen(),
                json!({"schemas": schema::PATCH_OP, "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
                error(ScimType::InvalidSyntax),
            ),
            case("too many operations", bjensen(), ops(Value::Array(too_many)), error(ScimType::TooMany)),
            case(
                "unknown op",
                bjensen(),
                ops(json!([{"op": "move", "path": "title", "value": "x"}])),
                error(ScimType::InvalidSyntax),
            ),
            case("add without value", bjensen(), ops(json!([{"op": "add", "path": "title"}])), error(ScimType::InvalidSyntax)),
            // ---- Microsoft Entra ID, as documented
            case(
                "Entra: replace work email and family name",
                bjensen(),
                ops(json!([
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                    {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
                ])),
                body(bjensen_with(json!({
                    "name": {"givenName": "Barbara", "familyName": "updatedFamilyName"},
                    "emails": [
                        {"value": "updatedEmail@microsoft.com", "type": "work", "primary": true},
                        {"value": "babs@jensen.org", "type": "home"}
                    ]
                }))),
            ),
            case(
                "Entra: replace work email that does not exist creates it",
                json!({"userName": "u", "emails": [{"value": "h@x.org", "type": "home"}]}),
                ops(json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@b.c"}])),
                body(json!({"userName": "u", "emails": [
                    {"value": "h@x.org", "type": "home"},
                    {"type": "work", "value": "a@b.c"}
                ]})),
            ),
            case(
                "Entra: add work address street on a user without addresses",
                json!({"userName": "u"}),
                ops(json!([{"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"}])),
                body(json!({"userName": "u", "addresses": [{"type": "work", "streetAddress": "1 Main St"}]})),
            ),
            case(
                "Entra: add manager as a bare id",
                json!({"userName": "u", ENT: {"employeeNumber": "7"}}),
                ops(json!([{"op": "Add", "path": MANAGER, "value": "2819c223"}])),
                body(json!({"userName": "u", ENT: {"employeeNumber": "7", "manager": {"value": "2819c223"}}})),
            ),
            case(
                "Entra: replace active with a \"False\" string (coerced by the caller)",
                bjensen(),
                ops(json!([{"op": "Replace", "path": "active", "value": "False"}])),
                body(bjensen_with(json!({"active": "False"}))),
            ),
            case(
                "Entra: remove manager",
                bjensen(),
                ops(json!([{"op": "Remove", "path": MANAGER}])),
                body(bjensen_with(json!({ENT: {"employeeNumber": "701984"}}))),
            ),
            case(
                "Entra: remove manager with a value array; the emptied extension goes",
                json!({"userName": "u", ENT: {"manager": {"value": "26118915"}}}),
                ops(json!([{"op": "Remove", "path": MANAGER, "value": [{"value": "26118915"}]}])),
                body(json!({"userName": "u"})),
            ),
            case(
                "Entra: remove manager with a bare id",
                bjensen(),
                ops(json!([{"op": "Remove", "path": MANAGER, "value": "26118915"}])),
                body(bjensen_with(json!({ENT: {"employeeNumber": "701984"}}))),
            ),
            case(
                "Entra: add externalId",
                json!({"userName": "u"}),
                ops(json!([{"op": "Add", "path": "externalId", "value": "0a21f0f2"}])),
                body(json!({"userName": "u", "externalId": "0a21f0f2"})),
            ),
            // ---- path-less add / replace
            case(
                "Okta: path-less replace of active",
                bjensen(),
                json!({"schemas": [schema::PATCH_OP], "Operations": [{"op": "replace", "value": {"active": false}}]}),
                body(bjensen_with(json!({"active": false}))),
            ),
            case(
                "path-less: echoed readOnly and unknown keys are ignored",
                json!({"userName": "u", "name": {"familyName": "J"}}),
                ops(json!([{"op": "replace", "value": {
                    "id": "42", "meta": {"version": "W/\"1\""}, "schemas": [schema::USER],
                    "groups": [{"value": "g1"}], "favouriteColour": "blue",
                    "DISPLAYNAME": "Babs", "name": {"givenname": "Barbara"}
                }}])),
                body(json!({
                    "userName": "u",
                    "displayName": "Babs",
                    "name": {"givenName": "Barbara", "familyName": "J"}
                })),
            ),
            case(
                "path-less: dotted, URN-qualified, whole-extension and filtered keys",
                json!({"userName": "u", "emails": [{"value": "old@x", "type": "work"}]}),
                ops(json!([{"op": "add", "value": {
                    "name.givenName": "Barbara",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D",
                    ENT: {"employeeNumber": "9", "manager": {"value": "m1", "displayName": "Boss"}},
                    "emails[type eq \"work\"].value": "new@x"
                }}])),
                body(json!({
                    "userName": "u",
                    "name": {"givenName": "Barbara"},
                    // displayName is readOnly but lives in a value: the caller drops it.
                    ENT: {
                        "department": "R&D",
                        "employeeNumber": "9",
                        "manager": {"value": "m1", "displayName": "Boss"}
                    },
                    "emails": [{"value": "new@x", "type": "work"}]
                })),
            ),
            case(
                "path-less: value must be an object",
                bjensen(),
                ops(json!([{"op": "replace", "value": "x"}])),
                error(ScimType::InvalidSyntax),
            ),
            case(
                "path-less replace of a multi-valued attribute replaces it",
                bjensen(),
                ops(json!([{"op": "replace", "value": {"emails": [{"value": "only@x", "type": "other"}]}}])),
                body(bjensen_with(json!({"emails": [{"value": "only@x", "type": "other"}]}))),
            ),
            // ---- path resolution
            case(
                "names ignore case and are written canonically",
                json!({"userName": "u"}),
                ops(json!([
                    {"op": "add", "path": "NAME.GIVENNAME", "value": "B"},
                    {"op": "add", "path": "PreferredLanguage", "value": "en"}
                ])),
                body(json!({"userName": "u", "name": {"givenName": "B"}, "preferredLanguage": "en"})),
            ),
            case(
                "core URN prefix addresses the top level",
                json!({"userName": "u"}),
                ops(json!([{"op": "replace", "path": format!("{}:displayName", schema::USER), "value": "D"}])),
                body(json!({"userName": "u", "displayName": "D"})),
            ),
            case(
                "unknown schema URN",
                bjensen(),
                ops(json!([{"op": "replace", "path": "urn:example:foo:2.0:User:bar", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "unparseable path",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails[type eq \"work\"", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "id is not writable",
                bjensen(),
                ops(json!([{"op": "replace", "path": "id", "value": "1"}])),
                error(ScimType::Mutability),
            ),
            case("meta is not writable", bjensen(), ops(json!([{"op": "remove", "path": "meta"}])), error(ScimType::Mutability)),
            case(
                "schemas is not writable",
                bjensen(),
                ops(json!([{"op": "add", "path": "schemas", "value": [ENT]}])),
                error(ScimType::Mutability),
            ),
            case(
                "groups is readOnly",
                bjensen(),
                ops(json!([{"op": "add", "path": "groups", "value": [{"value": "g1"}]}])),
                error(ScimType::Mutability),
            ),
            case(
                "manager.displayName is readOnly",
                bjensen(),
                ops(json!([{"op": "replace", "path": format!("{MANAGER}.displayName"), "value": "B"}])),
                error(ScimType::Mutability),
            ),
            case(
                "unknown attribute",
                bjensen(),
                ops(json!([{"op": "add", "path": "favouriteColour", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "unknown sub-attribute",
                bjensen(),
                ops(json!([{"op": "add", "path": "name.nickname", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "sub-attribute of a simple attribute",
                bjensen(),
                ops(json!([{"op": "replace", "path": "active.value", "value": true}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "filter on a single-valued attribute",
                bjensen(),
                ops(json!([{"op": "replace", "path": "name[givenName eq \"Barbara\"].familyName", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "filter naming an unknown sub-attribute",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails[colour eq \"red\"].value", "value": "x"}])),
                error(ScimType::InvalidPath),
            ),
            case(
                "whole extension: add merges the object",
                bjensen(),
                ops(json!([{"op": "add", "path": ENT, "value": {"department": "Sales", "manager": {"value": "m2"}}}])),
                body(bjensen_with(json!({ENT: {"employeeNumber": "701984", "department": "Sales", "manager": {"value": "m2"}}}))),
            ),
            case(
                "whole extension: replace with a non-object",
                bjensen(),
                ops(json!([{"op": "replace", "path": ENT, "value": "x"}])),
                error(ScimType::InvalidSyntax),
            ),
            case(
                "whole extension: remove",
                bjensen(),
                ops(json!([{"op": "remove", "path": ENT}])),
                body(bjensen_with(json!({ENT: null}))),
            ),
            // ---- add
            case(
                "add a simple attribute",
                json!({"userName": "u"}),
                ops(json!([{"op": "add", "path": "title", "value": "Tour Guide"}])),
                body(json!({"userName": "u", "title": "Tour Guide"})),
            ),
            case(
                "add merges into a complex attribute",
                bjensen(),
                ops(json!([{"op": "add", "path": "name", "value": {"middleName": "Jane"}}])),
                body(bjensen_with(json!({"name": {"givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane"}}))),
            ),
            case(
                "add a sub-attribute creates the parent",
                json!({"userName": "u"}),
                ops(json!([{"op": "add", "path": "name.givenName", "value": "B"}])),
                body(json!({"userName": "u", "name": {"givenName": "B"}})),
            ),
            case(
                "add to a multi-valued attribute appends, leaving out duplicates",
                json!({"userName": "u", "phoneNumbers": [{"value": "1", "type": "work"}]}),
                ops(json!([
                    {"op": "add", "path": "phoneNumbers", "value": [
                        {"value": "1", "type": "work"},
                        {"value": "2", "type": "home"}
                    ]},
                    {"op": "add", "path": "phoneNumbers", "value": {"value": "3", "type": "mobile"}}
                ])),
                body(json!({"userName": "u", "phoneNumbers": [
                    {"value": "1", "type": "work"}, {"value": "2", "type": "home"}, {"value": "3", "type": "mobile"}
                ]})),
            ),
            case(
                "add a primary element clears the other primary",
                bjensen(),
                ops(json!([{"op": "add", "path": "emails", "value": {"value": "n@x", "primary": true}}])),
                body(bjensen_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": false},
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "n@x", "primary": true}
                ]}))),
            ),
            case(
                "add with a filter and no sub merges into the matching element",
                bjensen(),
                ops(json!([{"op": "add", "path": "emails[type eq \"HOME\"]", "value": {"display": "Home"}}])),
                body(bjensen_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "babs@jensen.org", "type": "home", "display": "Home"}
                ]}))),
            ),
            // ---- replace
            case(
                "replace a multi-valued attribute with a single element",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails", "value": {"value": "only@x", "type": "work"}}])),
                body(bjensen_with(json!({"emails": [{"value": "only@x", "type": "work"}]}))),
            ),
            case(
                "replace a complex attribute keeps unspecified sub-attributes",
                bjensen(),
                ops(json!([{"op": "replace", "path": "name", "value": {"givenName": "Barb"}}])),
                body(bjensen_with(json!({"name": {"givenName": "Barb", "familyName": "Jensen"}}))),
            ),
            case(
                "replace with null removes the attribute",
                bjensen(),
                ops(json!([
                    {"op": "replace", "path": "displayName", "value": null},
                    {"op": "replace", "path": "name.givenName", "value": null}
                ])),
                body(bjensen_with(json!({"displayName": null, "name": {"familyName": "Jensen"}}))),
            ),
            case(
                "replace with a filter and no sub replaces the element",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "b@x"}}])),
                body(bjensen_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": true},
                    {"value": "b@x"}
                ]}))),
            ),
            case(
                "replace with a non-equality filter and no match",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails[value co \"nowhere\"].display", "value": "x"}])),
                error(ScimType::NoTarget),
            ),
            case(
                "replace with an and-of-eq filter and no match creates the element",
                json!({"userName": "u"}),
                ops(json!([{
                    "op": "replace",
                    "path": "phoneNumbers[type eq \"work\" and primary eq true].value",
                    "value": "555"
                }])),
                body(json!({"userName": "u", "phoneNumbers": [{"type": "work", "primary": true, "value": "555"}]})),
            ),
            case(
                "replace a filtered element's primary moves the flag",
                bjensen(),
                ops(json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}])),
                body(bjensen_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work", "primary": false},
                    {"value": "babs@jensen.org", "type": "home", "primary": true}
                ]}))),
            ),
            case(
                "replace a filtered sub with null clears it and creates nothing",
                bjensen(),
                ops(json!([
                    {"op": "replace", "path": "emails[type eq \"home\"].value", "value": null},
                    {"op": "replace", "path": "emails[type eq \"other\"].value", "value": null},
                    {"op": "replace", "path": "emails[type eq \"work\"]", "value": null}
                ])),
                body(bjensen_with(json!({"emails": [{"type": "home"}]}))),
            ),
            // ---- remove
            case("remove without a path", bjensen(), ops(json!([{"op": "remove"}])), error(ScimType::NoTarget)),
            case(
                "remove a simple attribute and externalId",
                bjensen(),
                ops(json!([{"op": "remove", "path": "displayName"}, {"op": "remove", "path": "externalId"}])),
                body(bjensen_with(json!({"displayName": null, "externalId": null}))),
            ),
            case(
                "remove the last sub-attribute drops the parent",
                json!({"userName": "u", "name": {"givenName": "B"}}),
                ops(json!([{"op": "remove", "path": "name.givenName"}])),
                body(json!({"userName": "u"})),
            ),
            case(
                "remove elements matching a filter",
                bjensen(),
                ops(json!([{"op": "remove", "path": "emails[type eq \"work\"]"}])),
                body(bjensen_with(json!({"emails": [{"value": "babs@jensen.org", "type": "home"}]}))),
            ),
            case(
                "remove with a filter that matches nothing succeeds",
                bjensen(),
                ops(json!([{"op": "remove", "path": "emails[type eq \"other\"]"}])),
                body(bjensen()),
            ),
            case(
                "remove a sub-attribute of matching elements",
                bjensen(),
                ops(json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}])),
                body(bjensen_with(json!({"emails": [
                    {"value": "bjensen@example.com", "type": "work"},
                    {"value": "babs@jensen.org", "type": "home"}
                ]}))),
            ),
            case(
                "remove given values from a multi-valued attribute",
                bjensen(),
                ops(json!([{"op": "remove", "path": "emails", "value": [{"value": "BABS@jensen.org"}]}])),
                body(bjensen_with(json!({"emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}]}))),
            ),
            case(
                "remove a whole multi-valued attribute",
                bjensen(),
                ops(json!([{"op": "remove", "path": "emails"}])),
                body(bjensen_with(json!({"emails": null}))),
            ),
            case(
                "remove the last element drops the attribute",
                json!({"userName": "u", "emails": [{"value": "a@b", "type": "work"}]}),
                ops(json!([{"op": "remove", "path": "emails[value eq \"A@B\"]"}])),
                body(json!({"userName": "u"})),
            ),
            // ---- all or nothing
            case(
                "a failing operation undoes the earlier ones",
                bjensen(),
                ops(json!([
                    {"op": "replace", "path": "displayName", "value": "changed"},
                    {"op": "remove", "path": "emails"},
                    {"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}
                ])),
                error(ScimType::Mutability),
            ),
        ]
    }

    #[test]
    fn patch_table() {
        let mut failures = Vec::new();
        let all = cases();
        for c in &all {
            let start = c.body.as_object().expect("case body is an object").clone();
            let mut got = start.clone();
            let result = apply(&schema::USER_RESOURCE, &mut got, &c.request);
            match (&c.expect, result) {
                (Expect::Body(want), Ok(())) if Value::Object(got.clone()) == *want => {}
                (Expect::Body(want), Ok(())) => {
                    failures.push(format!("{}:\n  want {want}\n  got  {}", c.name, Value::Object(got)))
                }
                (Expect::Body(_), Err(e)) => failures.push(format!("{}: unexpected error {e}", c.name)),
                (Expect::Error(status, t), Err(e)) => {
                    if e.status != *status || e.scim_type != Some(*t) {
                        failures.push(format!("{}: want {status} {}, got {e}", c.name, t.as_str()));
                    }
                    // All-or-nothing: a failed request leaves the body exactly as it was.
                    if got != start {
                        failures.push(format!("{}: body changed by a failed request", c.name));
                    }
                }
                (Expect::Error(..), Ok(())) => failures.push(format!("{}: want an error, got {}", c.name, Value::Object(got))),
            }
        }
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), all.len(), failures.join("\n"));
    }

    #[test]
    fn error_detail_names_the_operation() {
        let mut user = bjensen().as_object().unwrap().clone();
        let request = ops(json!([
            {"op": "add", "path": "title", "value": "x"},
            {"op": "add", "path": "nope", "value": "x"}
        ]));
        let e = apply(&schema::USER_RESOURCE, &mut user, &request).unwrap_err();
        assert!(e.detail.starts_with("operation 2:"), "{}", e.detail);
    }

    #[test]
    fn computed_read_only_values_may_be_echoed_but_not_changed() {
        let mfa = schema::MFA_USER;
        let computed = json!({mfa: {"status": "pending", "lastResetAt": "2026-11-30T07:00:00Z"}}).as_object().unwrap().clone();
        let run = |request: Value| {
            let mut user = bjensen().as_object().unwrap().clone();
            apply_checked(&schema::USER_RESOURCE, &mut user, &request, &computed).map(|()| user).map_err(|e| e.scim_type)
        };
        let changing = [
            ops(json!([{"op": "replace", "value": {mfa: {"status": "enrolled"}}}])),
            ops(json!([{"op": "add", "value": {format!("{mfa}:status"): "enrolled"}}])),
            ops(json!([{"op": "replace", "path": mfa, "value": {"enrolledAt": "2026-01-01T00:00:00Z"}}])),
            ops(json!([{"op": "replace", "value": {mfa: {"lastResetAt": "2026-11-30T07:00:01Z"}}}])),
            ops(json!([{"op": "replace", "path": format!("{mfa}:status"), "value": "pending"}])),
        ];
        for request in changing {
            assert_eq!(run(request.clone()), Err(Some(ScimType::Mutability)), "{request}");
        }
        let echoing = [
            ops(
                json!([{"op": "replace", "value": {"title": "Boss", mfa: {"status": "PENDING", "lastResetAt": "2026-11-30T08:00:00+01:00"}}}]),
            ),
            ops(
                json!([{"op": "replace", "value": {format!("{mfa}:status"): "pending", format!("{mfa}:enrolledAt"): null, "title": "Boss"}}]),
            ),
            ops(
                json!([{"op": "replace", "path": mfa, "value": {"status": "pending", "resetRequested": false}}, {"op": "replace", "path": "title", "value": "Boss"}]),
            ),
        ];
        for request in echoing {
            assert_eq!(run(request.clone()).map(|u| u["title"].clone()), Ok(json!("Boss")), "{request}");
        }
        // Without computed values (the LDAP mapping's own documents) nothing is compared.
        let mut user = bjensen().as_object().unwrap().clone();
        apply(&schema::USER_RESOURCE, &mut user, &ops(json!([{"op": "replace", "value": {mfa: {"status": "enrolled"}}}])))
            .unwrap();
    }
}

/// PATCH driven by the resource type alone: a type with nothing of the User.
#[cfg(test)]
mod resource_type_tests {
    use serde_json::json;

    use super::*;
    use crate::scim::resource;
    use crate::scim::schema::gadget::{COLOUR, CORE, GADGET};

    fn patch(body: Value, operations: Value) -> Result<Value, (Option<ScimType>, String)> {
        let mut body = body.as_object().unwrap().clone();
        let request = json!({"schemas": [schema::PATCH_OP], "Operations": operations});
        apply(&GADGET, &mut body, &request).map(|()| Value::Object(body)).map_err(|e| (e.scim_type, e.detail))
    }

    #[test]
    fn paths_resolve_against_the_resource_types_schemas() {
        let start = json!({"label": "a", COLOUR: {"colour": "red"}});
        let cases = [
            (json!([{"op": "replace", "path": "LABEL", "value": "b"}]), json!({"label": "b", COLOUR: {"colour": "red"}})),
            (
                json!([{"op": "replace", "path": format!("{CORE}:label"), "value": "c"}]),
                json!({"label": "c", COLOUR: {"colour": "red"}}),
            ),
            (
                json!([{"op": "add", "path": format!("{COLOUR}:colour"), "value": "blue"}]),
                json!({"label": "a", COLOUR: {"colour": "blue"}}),
            ),
            (json!([{"op": "remove", "path": format!("{COLOUR}:colour")}]), json!({"label": "a"})),
            (json!([{"op": "remove", "path": COLOUR}]), json!({"label": "a"})),
            (
                json!([{"op": "add", "path": "externalId", "value": "x"}]),
                json!({"label": "a", COLOUR: {"colour": "red"}, "externalId": "x"}),
            ),
            (
                json!([{"op": "replace", "value": {"label": "d", "userName": "ignored", "id": "ignored", COLOUR: {"colour": "green"}}}]),
                json!({"label": "d", COLOUR: {"colour": "green"}}),
            ),
        ];
        for (operations, want) in cases {
            assert_eq!(patch(start.clone(), operations.clone()), Ok(want), "{operations}");
        }
    }

    #[test]
    fn what_the_type_lacks_is_refused_as_for_users() {
        let start = json!({"label": "a"});
        let refused = [
            (json!([{"op": "replace", "path": "userName", "value": "b"}]), ScimType::InvalidPath, "unknown attribute userName"),
            (
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b"}]),
                ScimType::InvalidPath,
                "unknown attribute emails",
            ),
            (
                json!([{"op": "add", "path": format!("{}:department", schema::ENTERPRISE_USER), "value": "x"}]),
                ScimType::InvalidPath,
                "unknown schema urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            ),
            (json!([{"op": "remove", "path": CORE}]), ScimType::InvalidPath, "the core Gadget schema cannot be removed"),
            (json!([{"op": "replace", "path": "meta", "value": {}}]), ScimType::Mutability, "meta cannot be modified"),
            (json!([{"op": "replace", "path": "label.x", "value": "b"}]), ScimType::InvalidPath, "label has no sub-attributes"),
        ];
        for (operations, scim_type, detail) in refused {
            assert_eq!(
                patch(start.clone(), operations.clone()),
                Err((Some(scim_type), format!("operation 1: {detail}"))),
                "{operations}"
            );
        }
    }

    #[test]
    fn a_patched_body_normalises_by_the_same_table() {
        let patched = patch(json!({"label": "a"}), json!([{"op": "remove", "path": "label"}])).unwrap();
        let e = resource::normalize(&GADGET, &patched).unwrap_err();
        assert_eq!((e.scim_type, e.detail.as_str()), (Some(ScimType::InvalidValue), "label is required"));
    }
}

/// Properties: PATCH on a valid user yields a valid user or a 400, and never half a change.
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::proptest_support::{config, json_value, plausible_user, random_case, text};
    use crate::scim::resource;

    /// Paths identity providers send, paths that name nothing, and broken ones.
    fn path() -> BoxedStrategy<String> {
        let ent = schema::ENTERPRISE_USER;
        let mfa = schema::MFA_USER;
        let core = schema::USER;
        let known = vec![
            "userName".to_string(),
            "name".into(),
            "name.givenName".into(),
            "name.nope".into(),
            "displayName".into(),
            "active".into(),
            "externalId".into(),
            "externalId.x".into(),
            "id".into(),
            "meta".into(),
            "meta.created".into(),
            "schemas".into(),
            "groups".into(),
            "password".into(),
            "emails".into(),
            "emails.value".into(),
            "emails.primary".into(),
            r#"emails[type eq "work"]"#.into(),
            r#"emails[type eq "work"].value"#.into(),
            r#"emails[type eq "work" and primary eq true]"#.into(),
            r#"emails[value co "@"]"#.into(),
            r#"emails[primary eq true].type"#.into(),
            "emails[not (type pr)]".into(),
            r#"emails[type eq "a" and type eq "b"]"#.into(),
            r#"emails[nope eq "x"]"#.into(),
            r#"name[givenName eq "x"]"#.into(),
            r#"phoneNumbers[type eq "mobile"].value"#.into(),
            r#"addresses[type eq "work"].locality"#.into(),
            "roles".into(),
            "x509Certificates".into(),
            ent.into(),
            format!("{ent}:"),
            format!("{ent}:manager"),
            format!("{ent}:manager.value"),
            format!("{ent}:manager.displayName"),
            format!("{ent}:department"),
            format!("{ent}:nosuch"),
            mfa.into(),
            format!("{mfa}:resetRequested"),
            format!("{mfa}:status"),
            core.into(),
            format!("{core}:userName"),
            format!("{core}:emails[type eq \"work\"].value"),
            "urn:x:2.0:User".into(),
            r#"emails[type eq "work""#.into(),
            "".into(),
            " ".into(),
            "a b".into(),
        ];
        prop_oneof![
            6 => (proptest::sample::select(known), any::<u64>(), any::<bool>())
                .prop_map(|(p, bits, keep)| if keep { p } else { random_case(&p, bits) }),
            1 => text(),
        ]
        .boxed()
    }

    fn value() -> BoxedStrategy<Value> {
        prop_oneof![
            3 => json_value(),
            2 => text().prop_map(Value::String),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => Just(Value::Null),
            1 => Just(json!([])),
            1 => plausible_user(),
            1 => (text(), proptest::sample::select(vec!["work", "home"]), any::<bool>())
                .prop_map(|(v, t, p)| json!([{"value": v, "type": t, "primary": p}])),
        ]
        .boxed()
    }

    fn op_name() -> BoxedStrategy<Value> {
        proptest::sample::select(vec!["add", "replace", "remove", "Add", "REPLACE", "Remove"]).prop_map(Value::from).boxed()
    }

    /// Mostly well-formed operations (so that most requests get past the first one), some
    /// path-less merges, and now and then anything.
    fn operation() -> impl Strategy<Value = Value> {
        let object = prop_oneof![plausible_user(), json_value().prop_filter("an object", Value::is_object)];
        let anything = (json_value(), prop::option::of(path()), prop::option::of(value())).prop_map(|(op, path, value)| {
            let mut o = json!({"op": op});
            if let Some(p) = path {
                o["path"] = p.into();
            }
            if let Some(v) = value {
                o["value"] = v;
            }
            o
        });
        prop_oneof![
            12 => (op_name(), path(), value()).prop_map(|(op, path, value)| json!({"op": op, "path": path, "value": value})),
            2 => (proptest::sample::select(vec!["remove", "Remove", "add"]), path()).prop_map(|(op, path)| json!({"op": op, "path": path})),
            2 => (op_name(), object).prop_map(|(op, value)| json!({"op": op, "value": value})),
            1 => anything,
        ]
    }

    fn request() -> impl Strategy<Value = Value> {
        prop_oneof![
            12 => prop::collection::vec(operation(), 1..4).prop_map(|ops| json!({"schemas": [schema::PATCH_OP], "Operations": ops})),
            1 => prop::collection::vec(operation(), 0..3).prop_map(|ops| json!({"operations": ops})),
            1 => json_value(),
        ]
    }

    /// A stored user: a plausible body, normalised.
    fn valid_user() -> impl Strategy<Value = Map<String, Value>> {
        plausible_user().prop_filter_map("a valid user", |u| resource::normalize(&schema::USER_RESOURCE, &u).ok())
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn patching_a_valid_user_yields_a_valid_user_or_a_400(user in valid_user(), request in request()) {
            let mut body = user.clone();
            match apply(&schema::USER_RESOURCE, &mut body, &request) {
                Ok(()) => {
                    let patched = Value::Object(body);
                    let _ = resource::reset_requested(&patched);
                    match resource::normalize(&schema::USER_RESOURCE, &patched) {
                        Ok(normal) => {
                            prop_assert!(normal["userName"].as_str().is_some_and(|n| !n.trim().is_empty()));
                            prop_assert_eq!(resource::normalize(&schema::USER_RESOURCE, &Value::Object(normal.clone())), Ok(normal));
                        }
                        Err(e) => prop_assert_eq!(e.status, 400, "{}", e.detail),
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.status, 400, "{}", e.detail);
                    prop_assert_eq!(body, user, "a failed PATCH changed the user");
                }
            }
        }
    }
}
