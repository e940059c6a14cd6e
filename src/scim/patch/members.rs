//! A Group's `members` in a PATCH. Members are not kept in the body (a group may have tens of
//! thousands), so the operations on them become changes by id, applied in order by the store;
//! every other operation stays a PatchOp on the body. The shapes are those identity providers
//! send: Entra's `{"op":"Add","path":"members","value":[{"$ref":null,"value":"id"}]}` and its
//! remove with a value list, Okta's `members[value eq "id"]` and its path-less rename.

use serde_json::{json, Map, Value};

use super::{member, operations, Op};
use crate::scim::error::ScimError;
use crate::scim::filter::{self, CompValue, CompareOp, Filter};
use crate::scim::schema;

/// One change of members, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberChange {
    Add(Vec<String>),
    Remove(Vec<String>),
    /// Every member removed: only for a `remove` of `members` sent with no value at all.
    RemoveAll,
    /// The whole list replaced.
    Replace(Vec<String>),
}

/// Splits a PatchOp request on a group into the changes of members and a PatchOp of the other
/// operations (`None` when there are none). A path-less value may echo the group's `id`
/// (Okta's rename does), which is dropped; another id is refused.
pub(crate) fn split(request: &Value, group_id: &str) -> Result<(Vec<MemberChange>, Option<Value>), ScimError> {
    let mut changes = Vec::new();
    let mut rest = Vec::new();
    for (i, operation) in operations(request)?.iter().enumerate() {
        let name = |e: ScimError| ScimError { detail: format!("operation {}: {}", i + 1, e.detail), ..e };
        let op_name = match operation.op {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
        };
        match operation.path {
            Some(path) => match members_path(path).map_err(name)? {
                Some(filter) => changes.push(path_change(operation.op, filter, operation.value).map_err(name)?),
                None => rest.push(json!({"op": op_name, "path": path, "value": operation.value})),
            },
            None => {
                let Some(Value::Object(value)) = operation.value else {
                    rest.push(json!({"op": op_name, "value": operation.value}));
                    continue;
                };
                let mut others = Map::new();
                for (key, v) in value {
                    if key.eq_ignore_ascii_case("members") {
                        let ids = ids(v).map_err(name)?;
                        changes.push(match operation.op {
                            Op::Replace => MemberChange::Replace(ids),
                            _ => MemberChange::Add(ids),
                        });
                    } else if key.eq_ignore_ascii_case("id") {
                        if v.as_str() != Some(group_id) {
                            return Err(name(ScimError::mutability("id cannot be changed")));
                        }
                    } else {
                        others.insert(key.clone(), v.clone());
                    }
                }
                if !others.is_empty() {
                    rest.push(json!({"op": op_name, "value": others}));
                }
            }
        }
    }
    let rest = (!rest.is_empty()).then(|| json!({"schemas": [schema::PATCH_OP], "Operations": rest}));
    Ok((changes, rest))
}

/// For a path on `members`: `Some(None)` for the attribute itself, `Some(Some(filter))` for
/// `members[…]`; `None` for any other attribute.
fn members_path(path: &str) -> Result<Option<Option<Filter>>, ScimError> {
    let parsed = filter::parse_path(path).map_err(|e| ScimError::invalid_path(e.message))?;
    let attr = &parsed.attr;
    let core = attr.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(schema::GROUP));
    if !core || !attr.name.eq_ignore_ascii_case("members") {
        return Ok(None);
    }
    if attr.sub.is_some() || parsed.sub.is_some() {
        return Err(ScimError::mutability("the sub-attributes of members cannot be changed: add or remove the member"));
    }
    Ok(Some(parsed.filter))
}

fn path_change(op: Op, filter: Option<Filter>, value: Option<&Value>) -> Result<MemberChange, ScimError> {
    match (op, filter) {
        (Op::Add, None) => match value {
            None | Some(Value::Null) => Err(ScimError::invalid_value("add of members needs a value")),
            Some(v) => Ok(MemberChange::Add(ids(v)?)),
        },
        (Op::Replace, None) => Ok(MemberChange::Replace(match value {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => ids(v)?,
        })),
        // Literally "remove members": every member goes. A value names those to remove
        // (an empty list: none).
        (Op::Remove, None) => Ok(match value {
            None | Some(Value::Null) => MemberChange::RemoveAll,
            Some(v) => MemberChange::Remove(ids(v)?),
        }),
        (Op::Remove, Some(f)) => Ok(MemberChange::Remove(filter_ids(&f)?)),
        (_, Some(_)) => {
            Err(ScimError::invalid_path("members[…] can only be removed; add members with path \"members\" and a value"))
        }
    }
}

/// The ids a `members[value eq "a" or value eq "b"]` filter names.
fn filter_ids(f: &Filter) -> Result<Vec<String>, ScimError> {
    match f {
        Filter::Or(a, b) => Ok(filter_ids(a)?.into_iter().chain(filter_ids(b)?).collect()),
        Filter::Compare(p, CompareOp::Eq, CompValue::Str(id))
            if p.urn.is_none() && p.sub.is_none() && p.name.eq_ignore_ascii_case("value") =>
        {
            Ok(vec![id.clone()])
        }
        _ => Err(ScimError::invalid_filter("a members path can only name members by value: members[value eq \"id\"]")),
    }
}

/// The member ids of a `members` value: an array (or one element) of `{"value": id, …}` or
/// bare ids. `$ref`, `type` and `display` are ignored: the id says what the member is.
pub(crate) fn ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| {
            let id = match item {
                Value::Object(o) => member(o, "value").and_then(Value::as_str),
                Value::String(s) => Some(s.as_str()),
                _ => None,
            };
            match id.map(str::trim) {
                Some(id) if !id.is_empty() => Ok(id.to_string()),
                _ => Err(ScimError::invalid_value(format!("each member needs a value (the member's id), not {item}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(ops: Value) -> Value {
        json!({"schemas": [schema::PATCH_OP], "Operations": ops})
    }

    #[test]
    fn entra_and_okta_member_operations_become_changes_in_order() {
        let request = patch(json!([
            {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}, {"value": "u2"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u1"}]},
            {"op": "remove", "path": "members[value eq \"u2\"]"},
            {"op": "replace", "path": "members", "value": [{"value": "u3"}]},
            {"op": "remove", "path": "members", "value": []},
            {"op": "remove", "path": "members"},
        ]));
        let (changes, rest) = split(&request, "g").unwrap();
        assert_eq!(
            changes,
            [
                MemberChange::Add(vec!["u1".into(), "u2".into()]),
                MemberChange::Remove(vec!["u1".into()]),
                MemberChange::Remove(vec!["u2".into()]),
                MemberChange::Replace(vec!["u3".into()]),
                MemberChange::Remove(vec![]),
                MemberChange::RemoveAll,
            ]
        );
        assert!(rest.is_none());
    }

    #[test]
    fn okta_rename_keeps_the_body_operation_and_drops_a_matching_id() {
        let request = patch(json!([{"op": "replace", "value": {"id": "g", "displayName": "New name"}}]));
        let (changes, rest) = split(&request, "g").unwrap();
        assert!(changes.is_empty());
        assert_eq!(rest.unwrap()["Operations"], json!([{"op": "replace", "value": {"displayName": "New name"}}]));
        let other = patch(json!([{"op": "replace", "value": {"id": "other", "displayName": "x"}}]));
        assert_eq!(split(&other, "g").unwrap_err().scim_type.unwrap().as_str(), "mutability");
    }

    #[test]
    fn a_path_less_members_value_adds_or_replaces() {
        let add = patch(json!([{"op": "add", "value": {"members": [{"value": "u1"}], "externalId": "e"}}]));
        let (changes, rest) = split(&add, "g").unwrap();
        assert_eq!(changes, [MemberChange::Add(vec!["u1".into()])]);
        assert_eq!(rest.unwrap()["Operations"][0]["value"], json!({"externalId": "e"}));
        let replace = patch(json!([{"op": "Replace", "value": {"members": []}}]));
        assert_eq!(split(&replace, "g").unwrap().0, [MemberChange::Replace(vec![])]);
    }

    #[test]
    fn malformed_member_operations_are_refused() {
        for ops in [
            json!([{"op": "add", "path": "members"}]),
            json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]),
            json!([{"op": "add", "path": "members[value eq \"u\"]", "value": [{"value": "u"}]}]),
            json!([{"op": "remove", "path": "members[display eq \"u\"]"}]),
            json!([{"op": "replace", "path": "members.value", "value": "u"}]),
        ] {
            assert!(split(&patch(ops.clone()), "g").is_err(), "{ops}");
        }
    }
}
