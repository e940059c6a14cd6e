//! add, replace and remove: writing an operation's value at the place its path resolved to.

use serde_json::{Map, Value};

use super::*;

/// Path-less add/replace, or the merge of a whole schema object: every member is handled as if
/// its key were the path. Identity providers echo `id`, `meta`, `schemas`, `groups` and
/// attributes we do not know, so keys that do not resolve to a writable attribute are skipped.
pub(super) fn write_members(
    rt: &ResourceType,
    body: &mut Map<String, Value>,
    op: Op,
    default: &'static Schema,
    members: &Map<String, Value>,
) -> Result<(), ScimError> {
    for (key, value) in members {
        let target = filter::parse_path(key).ok().and_then(|path| resolve_parsed(rt, &path, default).ok());
        if let Some(target) = target {
            write(rt, body, op, &target, value)?;
        }
    }
    Ok(())
}

pub(super) fn write(
    rt: &ResourceType,
    body: &mut Map<String, Value>,
    op: Op,
    target: &Target,
    value: &Value,
) -> Result<(), ScimError> {
    // Adding nothing changes nothing; replacing with null (or []) unassigns (RFC 7643 §2.5).
    if op == Op::Add && is_nothing(value) {
        return Ok(());
    }
    match target {
        Target::Schema(s) => match value {
            Value::Object(members) => write_members(rt, body, op, s, members),
            Value::Null if !rt.is_core(s) => {
                body.remove(s.id);
                Ok(())
            }
            _ => Err(ScimError::invalid_syntax(format!("the value for {} must be a JSON object", s.id))),
        },
        Target::ExternalId => {
            body.insert("externalId".into(), single(value).clone());
            tidy(rt, body, rt.core, "externalId");
            Ok(())
        }
        Target::Attr(t) => {
            write_attr(container(rt, body, t.schema), op, t, value)?;
            tidy(rt, body, t.schema, t.attr.name);
            Ok(())
        }
    }
}

/// Writes `value` at `t` inside the object holding the attribute (`c`).
pub(super) fn write_attr(c: &mut Map<String, Value>, op: Op, t: &AttrTarget, value: &Value) -> Result<(), ScimError> {
    let attr = t.attr;
    match (&t.filter, t.sub) {
        (Some(f), sub) => write_filtered(c, op, attr, f, sub, value),
        (None, None) if attr.multi_valued => {
            write_multi(c, op, attr, value);
            Ok(())
        }
        (None, None) if attr.kind == Kind::Complex => {
            // Both add and replace merge: RFC 7644 §3.5.2.3 leaves unspecified sub-attributes
            // of a complex attribute unchanged.
            match element(attr, single(value)) {
                Value::Object(given) => object_slot(c, attr.name).extend(given),
                // Not an object: store as sent and let normalisation judge it.
                other => {
                    c.insert(attr.name.into(), other);
                }
            }
            Ok(())
        }
        (None, None) => {
            c.insert(attr.name.into(), single(value).clone());
            Ok(())
        }
        (None, Some(sub)) if attr.multi_valued => {
            // `emails.display` without a filter addresses every element; with none, one is made.
            let list = array_slot(c, attr.name);
            if list.is_empty() {
                list.push(Value::Object(Map::new()));
            }
            for item in list.iter_mut() {
                object_of(item).insert(sub.name.into(), single(value).clone());
            }
            let all: Vec<usize> = (0..list.len()).collect();
            single_primary(list, &all);
            Ok(())
        }
        (None, Some(sub)) => {
            object_slot(c, attr.name).insert(sub.name.into(), single(value).clone());
            Ok(())
        }
    }
}

/// A whole multi-valued attribute: add appends, replace substitutes (RFC 7644 §3.5.2.1/3).
pub(super) fn write_multi(c: &mut Map<String, Value>, op: Op, attr: &Attribute, value: &Value) {
    let given: Vec<Value> = items(value).map(|v| element(attr, v)).collect();
    let list = array_slot(c, attr.name);
    let written: Vec<usize> = if op == Op::Replace {
        *list = given;
        (0..list.len()).collect()
    } else {
        let mut appended = Vec::new();
        for g in given {
            // Identity providers resend what is already there; do not duplicate it.
            if !list.contains(&g) {
                list.push(g);
                appended.push(list.len() - 1);
            }
        }
        appended
    };
    single_primary(list, &written);
}

/// `emails[type eq "work"]` or `emails[type eq "work"].value` for add/replace.
pub(super) fn write_filtered(
    c: &mut Map<String, Value>,
    op: Op,
    attr: &Attribute,
    f: &Filter,
    sub: Option<&Attribute>,
    value: &Value,
) -> Result<(), ScimError> {
    let list = array_slot(c, attr.name);
    if is_nothing(value) {
        // Replacing with null unassigns (RFC 7643 §2.5): never create an element for it.
        remove_filtered(list, attr, f, sub);
        return Ok(());
    }
    let mut hits: Vec<usize> = (0..list.len()).filter(|&i| element_matches(attr, f, &list[i])).collect();
    if hits.is_empty() {
        // Entra ID replaces `emails[type eq "work"].value` on users without a work email and
        // expects it to be created; an equality filter says what the new element looks like.
        let Some(seed) = seed_from_filter(attr, f) else {
            return Err(ScimError::no_target(format!("no element of {} matches the filter", attr.name)));
        };
        list.push(Value::Object(seed));
        let new = list.len() - 1;
        // Merge even for replace, so the attributes named by the filter survive.
        fill(&mut list[new], Op::Add, attr, sub, value)?;
        hits.push(new);
    } else {
        for &i in &hits {
            fill(&mut list[i], op, attr, sub, value)?;
        }
    }
    single_primary(list, &hits);
    Ok(())
}

/// Writes into one matched element: the sub-attribute, or the whole element (replace) or its
/// given sub-attributes (add).
pub(super) fn fill(item: &mut Value, op: Op, attr: &Attribute, sub: Option<&Attribute>, value: &Value) -> Result<(), ScimError> {
    match sub {
        Some(sub) => {
            object_of(item).insert(sub.name.into(), single(value).clone());
        }
        None => {
            let given = single(value);
            if !given.is_object() {
                return Err(ScimError::invalid_value(format!(
                    "the value for a filtered {} path must be a JSON object",
                    attr.name
                )));
            }
            let Value::Object(given) = element(attr, given) else { unreachable!("element keeps objects objects") };
            if op == Op::Replace {
                *item = Value::Object(given);
            } else {
                object_of(item).extend(given);
            }
        }
    }
    Ok(())
}

/// The element an equality filter describes: `type eq "work" and primary eq true` →
/// `{"type":"work","primary":true}`. `None` for any other filter (nothing to build from).
pub(super) fn seed_from_filter(attr: &Attribute, f: &Filter) -> Option<Map<String, Value>> {
    fn collect(attr: &Attribute, f: &Filter, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::Compare(p, CompareOp::Eq, v) => {
                let Some(sub) = attr.sub(&p.name) else { return false };
                let v = match v {
                    CompValue::Str(s) => Value::String(s.clone()),
                    CompValue::Num(n) => Value::Number(n.clone()),
                    CompValue::Bool(b) => Value::Bool(*b),
                    CompValue::Null => return false,
                };
                // `type eq "a" and type eq "b"` describes no element.
                match out.get(sub.name) {
                    Some(old) if *old != v => false,
                    _ => {
                        out.insert(sub.name.into(), v);
                        true
                    }
                }
            }
            Filter::And(a, b) => collect(attr, a, out) && collect(attr, b, out),
            _ => false,
        }
    }
    let mut out = Map::new();
    collect(attr, f, &mut out).then_some(out)
}

// ---------------------------------------------------------------------------------------------
// remove
// ---------------------------------------------------------------------------------------------

pub(super) fn remove(
    rt: &ResourceType,
    body: &mut Map<String, Value>,
    target: &Target,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match target {
        Target::Schema(s) if rt.is_core(s) => {
            Err(ScimError::invalid_path(format!("the core {} schema cannot be removed", rt.name)))
        }
        Target::Schema(s) => {
            body.remove(s.id);
            Ok(())
        }
        Target::ExternalId => {
            body.remove("externalId");
            Ok(())
        }
        Target::Attr(t) => {
            remove_attr(container(rt, body, t.schema), t, value);
            tidy(rt, body, t.schema, t.attr.name);
            Ok(())
        }
    }
}

/// Removing what is not there succeeds: the result is what the client asked for.
pub(super) fn remove_attr(c: &mut Map<String, Value>, t: &AttrTarget, value: Option<&Value>) {
    let attr = t.attr;
    match (&t.filter, t.sub) {
        (Some(f), sub) => {
            if let Some(Value::Array(list)) = c.get_mut(attr.name) {
                remove_filtered(list, attr, f, sub);
            }
        }
        (None, Some(sub)) => match c.get_mut(attr.name) {
            Some(Value::Object(o)) => {
                o.remove(sub.name);
            }
            Some(Value::Array(list)) => {
                for item in list.iter_mut() {
                    if let Value::Object(o) = item {
                        o.remove(sub.name);
                    }
                }
            }
            _ => {}
        },
        (None, None) => match value {
            // Only the given elements (`members`-style removal by value).
            Some(v) if attr.multi_valued && !is_nothing(v) => {
                let given: Vec<Value> = items(v).map(|g| element(attr, g)).collect();
                if let Some(Value::Array(list)) = c.get_mut(attr.name) {
                    list.retain(|item| !given.iter().any(|g| same_element(item, g)));
                }
            }
            // Everything else goes whole, including Entra's manager removal, which carries the
            // manager's id (bare or as `[{"value": id}]`) as a value.
            _ => {
                c.remove(attr.name);
            }
        },
    }
}

/// Removes the elements matching `f`, or only their `sub` sub-attribute.
pub(super) fn remove_filtered(list: &mut Vec<Value>, attr: &Attribute, f: &Filter, sub: Option<&Attribute>) {
    match sub {
        Some(sub) => {
            for item in list.iter_mut().filter(|item| element_matches(attr, f, item)) {
                if let Value::Object(o) = item {
                    o.remove(sub.name);
                }
            }
        }
        None => list.retain(|item| !element_matches(attr, f, item)),
    }
}

/// Whether an existing element is the one a remove value names: same `value` (ignoring case,
/// as identity providers do not preserve it) or the very same object.
pub(super) fn same_element(item: &Value, given: &Value) -> bool {
    if item == given {
        return true;
    }
    match (item.get("value"), given.get("value")) {
        (Some(Value::String(a)), Some(Value::String(b))) => a.to_lowercase() == b.to_lowercase(),
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
