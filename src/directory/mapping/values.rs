//! One entry mapped: its values read by the configured rules (see the parent module), converted
//! to SCIM values, and its fingerprint.

use ldap3::SearchEntry;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Conversion, Dropped, MapError, Mapped, Mapping, Rule, FLAG_MARKS};
use crate::domain::directory::entry::Entry;

impl Mapping {
    /// Maps one entry, moving its values (an entry is read once); the error says why it
    /// cannot be mirrored, and carries the entry's key when it has one (the entry is still in
    /// the directory: a full run must not deactivate it).
    pub fn map(&self, entry: SearchEntry) -> Result<Mapped, MapError> {
        let Some(key) = self.entry_key(&entry) else {
            return Err(MapError { key: None, message: format!("{}: no {} (ldap.id_attribute)", entry.dn, self.id_attribute) });
        };
        self.map_keyed(entry, key)
    }

    fn map_keyed(&self, mut entry: SearchEntry, key: String) -> Result<Mapped, MapError> {
        let unmappable = |message: String| MapError { key: Some(key.clone()), message };
        // Attribute names come back as the server spells them; entries have a handful, so a
        // scan ignoring case beats building a map per entry.
        fn all<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e Vec<String>> {
            entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
        }
        let first = |entry: &SearchEntry, name: &str| all(entry, name).and_then(|v| v.first()).cloned();
        // What is read besides the rules, before their values are moved out.
        let change = first(&entry, &self.change_attribute).and_then(|raw| self.mark(&raw));
        let flag = self.flag.as_ref().and_then(|(attr, wanted)| {
            let set = all(&entry, attr).is_some_and(|vs| vs.iter().any(|v| v.eq_ignore_ascii_case(wanted)));
            // The setting is known by the entry's change mark: a flag set anew changes it.
            set.then(|| {
                FLAG_MARKS
                    .iter()
                    .chain([&self.change_attribute.as_str()])
                    .find_map(|name| first(&entry, name))
                    .unwrap_or_else(|| "-".to_string())
            })
        });
        let mut pairs = Vec::with_capacity(self.rules.len());
        let mut dropped = Vec::new();
        let mut hasher = Sha256::new();
        hasher.update(entry.dn.as_bytes());
        for rule in &self.rules {
            let raw = || all(&entry, &rule.attribute).and_then(|v| v.first());
            let value = match rule.conversion {
                Conversion::Text => self.text_value(&mut entry, rule, &mut dropped),
                Conversion::AlwaysTrue => Value::Bool(true),
                Conversion::Bool { negate } => match raw() {
                    None => Value::Bool(true),
                    Some(s) => Value::Bool(
                        boolean(s)
                            .ok_or_else(|| unmappable(format!("{}: {}={s:?} is not a boolean", entry.dn, rule.attribute)))?
                            != negate,
                    ),
                },
                Conversion::UserAccountControl => match raw() {
                    None => Value::Bool(true),
                    Some(s) => {
                        let flags: u32 = s
                            .trim()
                            .parse()
                            .map_err(|_| unmappable(format!("{}: userAccountControl={s:?} is not a number", entry.dn)))?;
                        Value::Bool(flags & 0x2 == 0)
                    }
                },
            };
            // The fingerprint: DN, then each rule's value, unambiguously delimited.
            hasher.update([0x1e]);
            match &value {
                Value::String(s) => {
                    hasher.update(b"s");
                    hasher.update(s.as_bytes());
                }
                Value::Bool(b) => hasher.update(if *b { b"t" } else { b"f" }),
                Value::Array(items) => {
                    hasher.update(b"a");
                    for item in items {
                        hasher.update([0x1f]);
                        hasher.update(item.as_str().unwrap_or_default().as_bytes());
                    }
                }
                _ => hasher.update(b"n"),
            }
            pairs.push((rule.path.clone(), value));
        }
        let value_of = |path: &str| pairs.iter().find(|(p, _)| &**p == path).map(|(_, v)| v);
        let user_name = match value_of("userName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(unmappable(format!("{}: no value for userName", entry.dn))),
        };
        let external_id = value_of("externalId").and_then(Value::as_str).map(str::to_string);
        let entry =
            Entry { key, dn: entry.dn, user_name, external_id, pairs, fingerprint: hex::encode(&hasher.finalize()[..16]), flag };
        Ok(Mapped { entry, change, dropped })
    }

    /// A text rule's value: the attribute's value; several values as an array where the path
    /// selects elements of a multi-valued attribute, else the first (and a word about the
    /// others); binary values (not UTF-8) cannot be text: dropped, with a word. Values no other
    /// reading needs are moved out of the entry.
    fn text_value(&self, entry: &mut SearchEntry, rule: &Rule, dropped: &mut Vec<Dropped>) -> Value {
        let found = entry.attrs.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&rule.attribute)).map(|(_, v)| v);
        let Some(values) = found.filter(|v| !v.is_empty()) else {
            if entry.bin_attrs.iter().any(|(k, v)| k.eq_ignore_ascii_case(&rule.attribute) && !v.is_empty()) {
                dropped.push(Dropped {
                    key: format!("{}:binary", rule.attribute),
                    message: format!(
                        "ldap.attributes.{:?}: {} holds binary values (e.g. on {}), which cannot be a SCIM string: not mapped",
                        rule.path, rule.configured, entry.dn
                    ),
                });
            }
            return Value::Null;
        };
        let take = |v: &mut String| if rule.sole { std::mem::take(v) } else { v.clone() };
        if values.len() > 1 && rule.multi {
            return Value::Array(values.iter_mut().map(|v| Value::String(take(v))).collect());
        }
        if values.len() > 1 {
            dropped.push(Dropped {
                key: format!("{}:multi", rule.attribute),
                message: format!(
                    "ldap.attributes.{:?}: {} has several values (e.g. {} on {}) but the path takes one: only the first is mapped",
                    rule.path,
                    rule.configured,
                    values.len(),
                    entry.dn
                ),
            });
        }
        Value::String(take(&mut values[0]))
    }
}

fn boolean(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use crate::directory::mapping::tests::ldap;

    use super::super::Mark;
    use super::*;
    use crate::config;

    fn entry(dn: &str, attrs: &[(&str, &str)]) -> SearchEntry {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in attrs {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        SearchEntry { dn: dn.into(), attrs: map, bin_attrs: HashMap::new() }
    }

    #[test]
    fn maps_the_default_inetorgperson_attributes() {
        let m = Mapping::new(&config::Ldap::default()).unwrap();
        let e = entry(
            "uid=ada,ou=people,dc=example,dc=org",
            &[
                ("entryUUID", "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
                ("uid", "ada"),
                ("givenName", "Ada"),
                ("sn", "Lovelace"),
                ("cn", "Ada Lovelace"),
                ("mail", "ada@example.org"),
                ("modifyTimestamp", "20261128101500Z"),
            ],
        );
        let mapped = m.map(e.clone()).unwrap();
        assert_eq!(mapped.entry.key, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(mapped.change, Some(Mark::Time("20261128101500Z".into())));
        let body = mapped.entry.apply_to(None).unwrap();
        assert_eq!(body["userName"], "ada");
        assert_eq!(body["name"]["givenName"], "Ada");
        assert_eq!(body["emails"][0]["value"], "ada@example.org");
        assert_eq!(body["emails"][0]["type"], "work");
        assert_eq!(body["active"], true);
    }

    #[test]
    fn a_removed_ldap_value_is_removed_and_unmapped_attributes_stay() {
        let m = Mapping::new(&config::Ldap::default()).unwrap();
        let full = m.map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a"), ("mail", "a@x.org"), ("title", "x")])).unwrap();
        let mut body = full.entry.apply_to(None).unwrap();
        body.insert("title".into(), json!("Engineer"));
        let without_mail = m.map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a")])).unwrap();
        assert_ne!(full.entry.fingerprint, without_mail.entry.fingerprint);
        let body = without_mail.entry.apply_to(Some(&body)).unwrap();
        assert!(body.get("emails").is_none(), "{body:?}");
        assert_eq!(body["title"], "Engineer");
    }

    #[test]
    fn active_from_ad_user_account_control_and_negated_flags() {
        let m = Mapping::new(&ldap(&[("userName", "sAMAccountName"), ("active", "userAccountControl")])).unwrap();
        let active = |uac: &str| {
            m.map(entry("cn=a", &[("entryUUID", "k"), ("sAMAccountName", "a"), ("userAccountControl", uac)]))
                .unwrap()
                .entry
                .apply_to(None)
                .unwrap()["active"]
                .clone()
        };
        assert_eq!(active("512"), true);
        assert_eq!(active("514"), false);
        let ipa = Mapping::new(&ldap(&[("userName", "uid"), ("active", "!nsAccountLock")])).unwrap();
        let locked = ipa.map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a"), ("nsAccountLock", "TRUE")])).unwrap();
        assert_eq!(locked.entry.apply_to(None).unwrap()["active"], false);
        let open = ipa.map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a")])).unwrap();
        assert_eq!(open.entry.apply_to(None).unwrap()["active"], true);
    }

    #[test]
    fn objectguid_is_decoded_as_a_mixed_endian_uuid() {
        let mut c = ldap(&[("userName", "sAMAccountName")]);
        c.id_attribute = "objectGUID".into();
        let m = Mapping::new(&c).unwrap();
        let mut e = entry("cn=a", &[("sAMAccountName", "a")]);
        let guid = uuid::Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        e.bin_attrs.insert("objectGUID".into(), vec![guid.to_bytes_le().to_vec()]);
        assert_eq!(m.map(e.clone()).unwrap().entry.key, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn extension_attributes_map() {
        let m = Mapping::new(&ldap(&[
            ("userName", "uid"),
            ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "employeeNumber"),
        ]))
        .unwrap();
        let body = m
            .map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a"), ("employeeNumber", "42")]))
            .unwrap()
            .entry
            .apply_to(None)
            .unwrap();
        assert_eq!(body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"], "42");
    }

    #[test]
    fn entries_without_a_user_name_or_key_are_refused_with_their_dn() {
        let m = Mapping::new(&config::Ldap::default()).unwrap();
        let e = m.map(entry("uid=x,dc=o", &[("entryUUID", "k")])).unwrap_err();
        assert!(e.message.contains("uid=x,dc=o"));
        assert_eq!(e.key.as_deref(), Some("k"), "the key is known: the entry is still there");
        let e = m.map(entry("uid=y,dc=o", &[("uid", "y")])).unwrap_err();
        assert!(e.message.contains("entryuuid") && e.key.is_none());
    }

    #[test]
    fn several_values_become_several_elements_where_the_path_allows_and_are_reported_where_not() {
        let m = Mapping::new(&config::Ldap::default()).unwrap();
        let e = entry(
            "uid=a",
            &[("entryUUID", "k"), ("uid", "a"), ("cn", "A"), ("cn", "Another"), ("mail", "a@x.org"), ("mail", "b@x.org")],
        );
        let mapped = m.map(e.clone()).unwrap();
        let mut body = mapped.entry.apply_to(None).unwrap();
        assert_eq!(body["emails"], json!([{"type": "work", "value": "a@x.org"}, {"type": "work", "value": "b@x.org"}]));
        assert_eq!(body["displayName"], "A", "a single-valued path takes the first");
        assert_eq!(mapped.dropped.len(), 1, "{:?}", mapped.dropped);
        assert!(mapped.dropped[0].key == "cn:multi" && mapped.dropped[0].message.contains("displayName"), "{:?}", mapped.dropped);
        // Other emails stay; back to one work email: one element, not two with the same value.
        body["emails"].as_array_mut().unwrap().push(json!({"type": "home", "value": "h@x.org"}));
        let one = m.map(entry("uid=a", &[("entryUUID", "k"), ("uid", "a"), ("mail", "c@x.org")])).unwrap();
        assert_ne!(one.entry.fingerprint, mapped.entry.fingerprint);
        let body = one.entry.apply_to(Some(&body)).unwrap();
        assert_eq!(body["emails"], json!([{"type": "home", "value": "h@x.org"}, {"type": "work", "value": "c@x.org"}]));
    }

    #[test]
    fn binary_values_for_a_string_path_are_reported() {
        let m = Mapping::new(&ldap(&[("userName", "uid"), ("photos[type eq \"photo\"].value", "jpegPhoto")])).unwrap();
        let mut e = entry("uid=a", &[("entryUUID", "k"), ("uid", "a")]);
        e.bin_attrs.insert("jpegPhoto".into(), vec![vec![0xff, 0xd8, 0xff, 0xe0]]);
        let mapped = m.map(e.clone()).unwrap();
        assert_eq!(mapped.dropped.len(), 1);
        assert!(
            mapped.dropped[0].message.contains("jpegPhoto") && mapped.dropped[0].message.contains("binary"),
            "{:?}",
            mapped.dropped
        );
        assert!(mapped.entry.apply_to(None).unwrap().get("photos").is_none());
    }
}

/// Properties: any entry maps without panic; a mapped entry has a userName and a fingerprint
/// that depends on the entry only.
#[cfg(test)]
mod props {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config;
    use crate::proptest_support::{config, random_case, text};

    /// The configurations of the README: inetOrgPerson defaults, Active Directory, FreeIPA, and
    /// a custom one with extension, phone and boolean attributes and the MFA reset flag.
    fn mapping_config() -> impl Strategy<Value = config::Ldap> {
        let custom = |pairs: &[(&str, &str)]| config::Ldap {
            attributes: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..config::Ldap::default()
        };
        let mut ad = custom(&[
            ("userName", "sAMAccountName"),
            ("active", "userAccountControl"),
            ("externalId", "employeeID"),
            ("emails[type eq \"work\"].value", "mail"),
        ]);
        ad.id_attribute = "objectGUID".into();
        ad.change_attribute = "uSNChanged".into();
        let ipa = custom(&[("userName", "uid"), ("active", "!nsAccountLock"), ("displayName", "cn")]);
        let mut flagged = custom(&[
            ("userName", "uid"),
            ("active", "employeeActive"),
            ("name.givenName", "givenName"),
            ("phoneNumbers[type eq \"mobile\"].value", "mobile"),
            ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "departmentNumber"),
        ]);
        flagged.mfa_reset =
            Some(config::LdapMfaReset { attribute: "mfaResetRequested".into(), value: "TRUE".into(), clear: true });
        proptest::sample::select(vec![config::Ldap::default(), ad, ipa, flagged])
    }

    /// An attribute value: text of any kind, or one the conversions read (booleans, numbers,
    /// generalized times).
    fn ldap_value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => text(),
            1 => proptest::sample::select(vec!["TRUE", "false", "yes", "0", "512", "514", " 2 ", "-1", "99999999999", "20261128101500Z", "20261128101500.0Z", "2026"])
                .prop_map(str::to_string),
        ]
    }

    /// An entry with attributes the mappings read (in any case, each once, as a server sends
    /// them) and others; values empty, one, or many.
    fn entry() -> impl Strategy<Value = SearchEntry> {
        let names = vec![
            "uid",
            "cn",
            "sn",
            "givenName",
            "mail",
            "mobile",
            "entryUUID",
            "objectGUID",
            "sAMAccountName",
            "userAccountControl",
            "employeeID",
            "nsAccountLock",
            "employeeActive",
            "departmentNumber",
            "modifyTimestamp",
            "uSNChanged",
            "entryCSN",
            "mfaResetRequested",
            "description",
        ];
        let attribute = (proptest::sample::select(names), any::<u64>(), prop::collection::vec(ldap_value(), 0..4));
        let binary = prop::option::of(prop::collection::vec(any::<u8>(), 0..20));
        (text(), prop::collection::vec(attribute, 0..12), binary).prop_map(|(dn, attributes, guid)| {
            let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
            for (name, bits, values) in attributes {
                if !attrs.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                    attrs.insert(random_case(name, bits), values);
                }
            }
            let bin_attrs = guid.map(|g| HashMap::from([("objectGUID".to_string(), vec![g])])).unwrap_or_default();
            SearchEntry { dn, attrs, bin_attrs }
        })
    }

    /// The same entry with its attributes inserted in the reverse order (another iteration order).
    fn rebuilt(e: &SearchEntry) -> SearchEntry {
        let mut keys: Vec<&String> = e.attrs.keys().collect();
        keys.sort();
        keys.reverse();
        let attrs = keys.into_iter().map(|k| (k.clone(), e.attrs[k].clone())).collect();
        SearchEntry { dn: e.dn.clone(), attrs, bin_attrs: e.bin_attrs.clone() }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn any_entry_maps_to_a_user_with_a_name_or_to_an_error_naming_it(c in mapping_config(), e in entry()) {
            let m = Mapping::new(&c).expect("a valid mapping");
            match m.map(e.clone()) {
                Ok(mapped) => {
                    prop_assert!(!mapped.entry.user_name.trim().is_empty());
                    for equal in [e.clone(), rebuilt(&e)] {
                        let again = m.map(equal).expect("an equal entry maps");
                        prop_assert_eq!(&again.entry.fingerprint, &mapped.entry.fingerprint);
                        prop_assert_eq!(&again.entry.key, &mapped.entry.key);
                    }
                    match mapped.entry.apply_to(None) {
                        Ok(body) => prop_assert_eq!(crate::scim::resource::normalize(&crate::scim::schema::USER_RESOURCE, &Value::Object(body.clone())), Ok(body)),
                        Err(err) => prop_assert_eq!(err.status, 400, "{}", err.detail),
                    }
                }
                Err(err) => prop_assert!(err.message.contains(&e.dn), "{} does not name {:?}", err.message, e.dn),
            }
        }
    }
}
