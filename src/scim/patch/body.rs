//! Helpers on the JSON body: slots created on demand and tidied away, elements, primaries.

use serde_json::{Map, Value};

use super::*;

/// The object holding `schema`'s attributes: the body itself for the core schema, else the
/// extension object (created on demand; [`tidy`] drops it again if it stays empty).
pub(super) fn container<'a>(rt: &ResourceType, body: &'a mut Map<String, Value>, schema: &Schema) -> &'a mut Map<String, Value> {
    if rt.is_core(schema) {
        return body;
    }
    object_slot(body, schema.id)
}

/// `obj[key]` as an object, created (or replacing a non-object) when needed.
pub(super) fn object_slot<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    object_of(obj.entry(key).or_insert_with(|| Value::Object(Map::new())))
}

pub(super) fn object_of(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().expect("just made an object")
}

/// `obj[key]` as an array, created when absent; a lone value found there becomes its element.
pub(super) fn array_slot<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(vec![slot.take()]);
    }
    slot.as_array_mut().expect("just made an array")
}

/// Drops what the operation left unassigned in attribute `name` of `schema` (null, `{}`, `[]`,
/// recursively), and the extension object if it became empty.
pub(super) fn tidy(rt: &ResourceType, body: &mut Map<String, Value>, schema: &Schema, name: &str) {
    let c = container(rt, body, schema);
    if c.get_mut(name).is_some_and(prune) {
        c.remove(name);
    }
    if !rt.is_core(schema) && c.is_empty() {
        body.remove(schema.id);
    }
}

/// Removes nulls, empty objects and empty arrays inside `value`; true when `value` itself is
/// unassigned.
pub(super) fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(o) => {
            o.retain(|_, v| !prune(v));
            o.is_empty()
        }
        Value::Array(a) => {
            a.retain_mut(|v| !prune(v));
            a.is_empty()
        }
        _ => false,
    }
}

/// One value of `attr` in canonical shape: sub-attribute keys spelled as in the schema (unknown
/// ones dropped), and a bare scalar standing for the `value` sub-attribute (Entra sends the
/// manager as a bare id, some clients send emails as plain strings).
pub(super) fn element(attr: &Attribute, value: &Value) -> Value {
    match value {
        Value::Object(o) if attr.kind == Kind::Complex => {
            Value::Object(o.iter().filter_map(|(k, v)| attr.sub(k).map(|s| (s.name.to_string(), v.clone()))).collect())
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) if attr.sub("value").is_some() => {
            Value::Object(Map::from_iter([("value".to_string(), value.clone())]))
        }
        other => other.clone(),
    }
}

/// The values given for a multi-valued attribute: an array, or one element on its own.
pub(super) fn items(value: &Value) -> impl Iterator<Item = &Value> {
    match value {
        Value::Array(list) => list.iter(),
        one => std::slice::from_ref(one).iter(),
    }
}

/// The value for a single-valued target; a one-element array is unwrapped, as Entra wraps
/// single values (the manager) in arrays.
pub(super) fn single(value: &Value) -> &Value {
    match value {
        Value::Array(list) if list.len() == 1 => &list[0],
        other => other,
    }
}

pub(super) fn is_nothing(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

/// RFC 7643 §2.4: at most one element is primary. When an element at one of `written` was set
/// primary, the last such one wins and every other element loses the flag.
pub(super) fn single_primary(list: &mut [Value], written: &[usize]) {
    let is_primary = |v: &Value| match v.get("primary") {
        Some(Value::Bool(b)) => *b,
        // Still a string until normalisation coerces it.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let Some(&winner) = written.iter().rev().find(|&&i| list[i].get("primary") == Some(&Value::Bool(true))) else {
        return;
    };
    for (i, item) in list.iter_mut().enumerate() {
        if i != winner && is_primary(item) {
            item["primary"] = Value::Bool(false);
        }
    }
}
