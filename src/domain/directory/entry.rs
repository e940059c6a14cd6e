//! What a directory entry means to the store: one user, known by its stable key, whose mapped
//! SCIM attributes are the directory's. The readers (`directory/`) produce entries; the rules
//! here say what an entry's values and its MFA reset flag do.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::scim::error::ScimError;
use crate::scim::{patch, resource, schema};

/// One user as the directory shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's stable key (survives renames).
    pub key: String,
    pub dn: String,
    pub user_name: String,
    pub external_id: Option<String>,
    /// Each mapped SCIM path with the entry's value (`Null`: the entry lacks it), in the
    /// mapping's order. The paths are shared by every entry of a mapping.
    pub pairs: Vec<(Arc<str>, Value)>,
    /// Hash of the DN and the mapped values: equal fingerprints mean nothing to write.
    pub fingerprint: String,
    /// Whether the MFA reset flag is set, and the entry's change mark that identifies this setting.
    pub flag: Option<String>,
}

impl Entry {
    /// `body` (a stored user, or nothing for a new one) with the entry's attributes written
    /// over; the attributes the directory does not map are kept.
    pub fn apply_to(&self, body: Option<&Map<String, Value>>) -> Result<Map<String, Value>, ScimError> {
        // A new user (no body) has no elements yet: none to count.
        let fresh = body.is_none();
        let mut body = body.cloned().unwrap_or_else(base_body);
        // Element paths whose LDAP attribute has several values, or whose user has several
        // elements the path selects, are written as a whole; the others with one replace each.
        let (elements, single): (Vec<_>, Vec<_>) =
            self.pairs.iter().partition(|(p, v)| is_element_path(p) && (v.is_array() || (!fresh && selected(&body, p) > 1)));
        patch::apply(&schema::USER_RESOURCE, &mut body, &patch_doc(single.into_iter().map(|(p, v)| (&**p, v.clone()))))?;
        for (path, value) in elements {
            replace_elements(&mut body, path, value)?;
        }
        // `emails[type eq "work"].value` set to null leaves `{"type": "work"}`: an element
        // without its value means nothing, drop it.
        for (path, value) in &self.pairs {
            if let (Some((attr, _)), Value::Null) = (path.split_once('['), value) {
                if let Some(Value::Array(items)) = body.get_mut(attr) {
                    items.retain(|item| item.get("value").is_some_and(|v| !v.is_null()));
                    if items.is_empty() {
                        body.remove(attr);
                    }
                }
            }
        }
        resource::normalize(&schema::USER_RESOURCE, &Value::Object(body))
    }
}

/// Whether the directory may write `path` (with a value like `sample`): a path of the User
/// schema that a client may replace.
pub fn writable(path: &str, sample: Value) -> Result<(), ScimError> {
    patch::apply(&schema::USER_RESOURCE, &mut base_body(), &patch_doc([(path, sample)]))
}

/// A path that selects elements of a multi-valued attribute (`emails[type eq "work"].value`):
/// several directory values become several elements.
pub fn is_element_path(path: &str) -> bool {
    path.contains('[')
}

/// What to do with an entry's MFA reset flag.
///
/// A setting is known by the entry's change mark (`entryCSN`, else `modifyTimestamp`) at the time
/// the sync saw the flag. After applying it the sync removes the attribute (`clear = true`); when
/// it cannot (a read-only bind) it remembers the mark and does not apply the flag again until
/// the entry changes. Any change of the entry while the flag stays set counts as a new setting:
/// a second reset is the safe side of the doubt, a missed one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagDecision {
    /// No flag: forget any remembered mark, so that the next setting applies.
    Absent,
    /// Reset the factor (and clear the flag).
    Apply,
    /// This setting was applied already; the flag could not be cleared.
    AlreadyApplied,
}

/// `flag`: the entry's change mark when the flag is set; `remembered`: the mark it was applied at.
pub fn decide_flag(flag: Option<&str>, remembered: Option<&str>) -> FlagDecision {
    match (flag, remembered) {
        (None, _) => FlagDecision::Absent,
        (Some(mark), Some(done)) if mark == done => FlagDecision::AlreadyApplied,
        (Some(_), _) => FlagDecision::Apply,
    }
}

fn base_body() -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("schemas".into(), json!([schema::USER]));
    body
}

/// A PatchOp of replace operations. Built by hand: `json!` would copy each value once more
/// (it serialises what it is given), and a new user's body is built this way for every entry
/// of a first sync (with the copies, half of the time it took).
fn patch_doc<'a>(ops: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let ops = ops.into_iter().map(|(path, value)| {
        let mut op = Map::with_capacity(3);
        op.insert("op".into(), Value::from("replace"));
        op.insert("path".into(), Value::from(path));
        op.insert("value".into(), value);
        Value::Object(op)
    });
    let mut doc = Map::with_capacity(2);
    doc.insert("schemas".into(), json!([schema::PATCH_OP]));
    doc.insert("Operations".into(), Value::Array(ops.collect()));
    Value::Object(doc)
}

/// How many elements of `body` the element path `path` (`emails[type eq "work"].value`) selects.
fn selected(body: &Map<String, Value>, path: &str) -> usize {
    let Some((attr, filter)) = element_filter(path) else { return 0 };
    let count = |b: &Map<String, Value>| {
        b.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.as_array()).map_or(0, Vec::len)
    };
    let mut without = body.clone();
    match patch::apply(
        &schema::USER_RESOURCE,
        &mut without,
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": filter}]}),
    ) {
        Ok(()) => count(body) - count(&without),
        Err(_) => 0,
    }
}

/// `("emails", "emails[type eq \"work\"]")` of an element path.
fn element_filter(path: &str) -> Option<(&str, &str)> {
    let open = path.find('[')?;
    let close = path[open..].find(']')? + open;
    Some((&path[..open], &path[..=close]))
}

/// Replaces the elements `path` selects by one element per value (`value`: a string, an array
/// of strings, or null for none), each built as a single-valued write of the path builds it.
fn replace_elements(body: &mut Map<String, Value>, path: &str, value: &Value) -> Result<(), ScimError> {
    let Some((attr, filter)) = element_filter(path) else { return Ok(()) };
    let values: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        v => vec![v.clone()],
    };
    let mut elements = Vec::with_capacity(values.len());
    for v in values {
        let mut one = Map::new();
        patch::apply(&schema::USER_RESOURCE, &mut one, &patch_doc([(path, v)]))?;
        if let Some(Value::Array(items)) = one.into_iter().map(|(_, v)| v).find(Value::is_array) {
            elements.extend(items);
        }
    }
    // No element selected is no error here: there is nothing to replace.
    let _ = patch::apply(
        &schema::USER_RESOURCE,
        body,
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": filter}]}),
    );
    if elements.is_empty() {
        return Ok(());
    }
    let key = body.keys().find(|k| k.eq_ignore_ascii_case(attr)).cloned().unwrap_or_else(|| attr.to_string());
    match body.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(items) => items.extend(elements),
        other => *other = Value::Array(elements),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_setting_applies_once() {
        assert_eq!(decide_flag(Some("csn1"), None), FlagDecision::Apply);
        assert_eq!(decide_flag(Some("csn1"), Some("csn1")), FlagDecision::AlreadyApplied);
        assert_eq!(decide_flag(Some("csn2"), Some("csn1")), FlagDecision::Apply);
        assert_eq!(decide_flag(None, Some("csn1")), FlagDecision::Absent);
        assert_eq!(decide_flag(None, None), FlagDecision::Absent);
    }

    fn entry(pairs: &[(&str, Value)]) -> Entry {
        Entry {
            key: "k".into(),
            dn: "uid=a".into(),
            user_name: "a".into(),
            external_id: None,
            pairs: pairs.iter().map(|(p, v)| (Arc::from(*p), v.clone())).collect(),
            fingerprint: String::new(),
            flag: None,
        }
    }

    #[test]
    fn an_entry_writes_its_paths_over_a_body_and_keeps_the_others() {
        let work = "emails[type eq \"work\"].value";
        let e = entry(&[("userName", json!("a")), (work, json!(["a@x.org", "b@x.org"])), ("active", json!(true))]);
        let mut body = e.apply_to(None).unwrap();
        assert_eq!(body["emails"], json!([{"type": "work", "value": "a@x.org"}, {"type": "work", "value": "b@x.org"}]));
        body.insert("title".into(), json!("Engineer"));
        let gone = entry(&[("userName", json!("a")), (work, Value::Null), ("active", json!(false))]);
        let body = gone.apply_to(Some(&body)).unwrap();
        assert!(body.get("emails").is_none(), "{body:?}");
        assert_eq!((body["title"].clone(), body["active"].clone()), (json!("Engineer"), json!(false)));
    }

    #[test]
    fn writable_paths_are_those_a_client_may_replace() {
        assert!(writable("name.givenName", json!("x")).is_ok());
        assert!(writable("emails[type eq \"work\"].value", json!("x")).is_ok());
        assert!(writable("meta.created", json!("x")).is_err());
        assert!(writable("nickname.nope", json!("x")).is_err());
    }
}
