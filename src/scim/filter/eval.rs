//! Evaluating a filter against one JSON object (PATCH value filters, the test oracle of the
//! filter-to-SQL compiler).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::{AttrPath, CompValue, CompareOp, Filter};

/// `parent` is the attribute of the enclosing value filter, used to qualify paths given to
/// `case_exact`.
pub(super) fn eval(filter: &Filter, object: &Value, parent: Option<&AttrPath>, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, object, parent, case_exact) && eval(b, object, parent, case_exact),
        Filter::Or(a, b) => eval(a, object, parent, case_exact) || eval(b, object, parent, case_exact),
        Filter::Not(f) => !eval(f, object, parent, case_exact),
        Filter::Present(path) => values_at(object, path).into_iter().any(is_present),
        Filter::ValuePath(path, inner) => values_at(object, path).into_iter().any(|v| match v {
            Value::Array(items) => items.iter().any(|e| eval(inner, e, Some(path), case_exact)),
            Value::Object(_) => eval(inner, v, Some(path), case_exact),
            _ => false,
        }),
        Filter::Compare(path, op, value) => {
            // Multi-valued attributes compare element-wise; complex values (objects) through
            // their `value` sub-attribute. Nulls count as unassigned.
            let candidates: Vec<&Value> = values_at(object, path)
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                })
                .filter_map(|v| if v.is_object() { get_ci(v, "value") } else { Some(v) })
                .filter(|v| !v.is_null())
                .collect();
            if let CompValue::Null = value {
                return match op {
                    CompareOp::Eq => candidates.is_empty(),
                    CompareOp::Ne => !candidates.is_empty(),
                    _ => false,
                };
            }
            let exact = matches!(value, CompValue::Str(_))
                && match parent {
                    Some(parent) => {
                        case_exact(&AttrPath { urn: parent.urn.clone(), name: parent.name.clone(), sub: Some(path.name.clone()) })
                    }
                    None => case_exact(path),
                };
            let (op, negate) = match op {
                CompareOp::Ne => (CompareOp::Eq, true),
                op => (*op, false),
            };
            candidates.iter().any(|c| compare(c, op, value, exact)) != negate
        }
    }
}

/// The values `path` addresses in `object`: the attribute itself, or its `sub` in the attribute
/// (or in each element when it is multi-valued).
fn values_at<'v>(object: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let base = match &path.urn {
        Some(urn) => get_ci(object, urn).filter(|v| v.is_object()).unwrap_or(object),
        None => object,
    };
    let Some(attr) = get_ci(base, &path.name) else {
        return Vec::new();
    };
    match (&path.sub, attr) {
        (None, _) => vec![attr],
        (Some(sub), Value::Array(items)) => items.iter().filter_map(|e| get_ci(e, sub)).collect(),
        (Some(sub), _) => get_ci(attr, sub).into_iter().collect(),
    }
}

/// Object member by name, ignoring ASCII case (an exact hit is tried first as a fast path).
fn get_ci<'v>(object: &'v Value, key: &str) -> Option<&'v Value> {
    let map = object.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// One candidate against the filter value; `op` is never `Ne` (handled as `not eq`).
fn compare(candidate: &Value, op: CompareOp, value: &CompValue, exact: bool) -> bool {
    match (candidate, value) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b): (Cow<str>, Cow<str>) =
                if exact { (a.into(), b.into()) } else { (a.to_lowercase().into(), b.to_lowercase().into()) };
            match op {
                CompareOp::Co => a.contains(&*b),
                CompareOp::Sw => a.starts_with(&*b),
                CompareOp::Ew => a.ends_with(&*b),
                _ => ordered(op, a.cmp(&b)),
            }
        }
        (Value::Number(a), CompValue::Num(b)) => {
            !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) && compare_numbers(a, b).is_some_and(|o| ordered(op, o))
        }
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        _ => false,
    }
}

fn ordered(op: CompareOp, o: Ordering) -> bool {
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Ne | CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// Exact for integers, `f64` otherwise (`42` equals `42.0`).
fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}
