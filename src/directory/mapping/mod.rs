//! From an LDAP entry to a domain [`Entry`]: `[ldap.attributes]` maps SCIM paths to LDAP
//! attributes. The domain writes the values with the SCIM PATCH code (`replace`, `null` when the
//! entry lacks the attribute), so every path an identity provider may PATCH can be mapped,
//! `emails[type eq "work"].value` and extension attributes included.
//!
//! This module reads the configuration (which attributes, converted how); [`values`] maps one
//! entry's values with it.

use std::sync::Arc;

use ldap3::SearchEntry;
use serde_json::json;

use crate::config;
use crate::domain::directory::entry::{self as entry_rules, Entry};

mod values;

/// How an LDAP value becomes a SCIM value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    Text,
    /// `TRUE`/`FALSE` (LDAP boolean syntax; `yes`/`1` accepted); `negate` for attributes such as
    /// FreeIPA's `nsAccountLock`, written `active = "!nsAccountLock"`. Absent: active.
    Bool {
        negate: bool,
    },
    /// Active Directory `userAccountControl`: bit 0x2 (ACCOUNTDISABLE) set means inactive.
    UserAccountControl,
    /// No attribute: users present in the directory are active.
    AlwaysTrue,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Shared by every entry mapped.
    path: Arc<str>,
    /// Lower-cased LDAP attribute name (empty for `AlwaysTrue`).
    attribute: String,
    /// The attribute as configured, for messages.
    configured: String,
    conversion: Conversion,
    /// The path selects elements of a multi-valued SCIM attribute (`emails[type eq "work"].value`):
    /// several LDAP values become several elements.
    multi: bool,
    /// No other rule, nor the key, change mark or flag, reads this attribute: its values are
    /// moved out of the LDAP entry instead of copied.
    sole: bool,
}

/// An entry as read: the domain's [`Entry`], and what only the reading run needs.
#[derive(Debug)]
pub struct Mapped {
    pub entry: Entry,
    /// The entry's `change_attribute` value, for the high-water mark.
    pub change: Option<Mark>,
    /// Values the mapping could not carry over (a run reports each kind once).
    pub dropped: Vec<Dropped>,
}

/// LDAP values left out of the mapped user: `key` names the attribute and what happened (a run
/// reports each key once, not once per entry), `message` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub key: String,
    pub message: String,
}

/// An entry that cannot be mirrored.
#[derive(Debug, Clone)]
pub struct MapError {
    /// The entry's key, when it has one.
    pub key: Option<String>,
    pub message: String,
}

/// A high-water mark: a time (`YYYYMMDDHHMMSSZ`) or an update sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    Time(String),
    Usn(i64),
}

impl Mark {
    pub fn encode(&self) -> String {
        match self {
            Mark::Time(t) => t.clone(),
            Mark::Usn(n) => n.to_string(),
        }
    }
}

/// Why `[ldap.attributes]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("ldap.attributes.{path:?}: {attribute:?} is not an LDAP attribute name (RFC 4512: a name such as mail, or an OID)")]
    NotAnAttribute { path: String, attribute: String },
    #[error("ldap.attributes.{path:?}: only `active` may be negated with !")]
    Negated { path: String },
    #[error("ldap.attributes.{path:?}: not a writable SCIM path ({detail})")]
    NotWritable { path: String, detail: String },
    #[error("ldap.attributes: userName must be mapped (e.g. userName = \"uid\")")]
    NoUserName,
}

pub struct Mapping {
    rules: Vec<Rule>,
    id_attribute: String,
    change_attribute: String,
    usn: bool,
    flag: Option<(String, String)>,
}

/// Attributes a flagged entry's setting is known by, besides the change attribute.
const FLAG_MARKS: [&str; 2] = ["entrycsn", "modifytimestamp"];

impl Mapping {
    /// Checks every path and attribute of the configuration.
    pub fn new(cfg: &config::Ldap) -> Result<Self, MappingError> {
        let mut rules = Vec::new();
        for (path, attribute) in cfg.mapping() {
            let (negate, name) = match attribute.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, attribute.as_str()),
            };
            if !config::is_attribute_description(name) {
                return Err(MappingError::NotAnAttribute { path, attribute });
            }
            let conversion = if path == "active" {
                if name.eq_ignore_ascii_case("userAccountControl") && !negate {
                    Conversion::UserAccountControl
                } else {
                    Conversion::Bool { negate }
                }
            } else if negate {
                return Err(MappingError::Negated { path });
            } else {
                Conversion::Text
            };
            let sample = if conversion == Conversion::Text { json!("x") } else { json!(true) };
            entry_rules::writable(&path, sample)
                .map_err(|e| MappingError::NotWritable { path: path.clone(), detail: e.detail })?;
            let multi = conversion == Conversion::Text && entry_rules::is_element_path(&path);
            let (attribute, configured) = (name.to_ascii_lowercase(), name.to_string());
            rules.push(Rule { path: path.into(), attribute, configured, conversion, multi, sole: false });
        }
        if !rules.iter().any(|r| &*r.path == "userName") {
            return Err(MappingError::NoUserName);
        }
        if !rules.iter().any(|r| &*r.path == "active") {
            rules.push(Rule {
                path: "active".into(),
                attribute: String::new(),
                configured: String::new(),
                conversion: Conversion::AlwaysTrue,
                multi: false,
                sole: false,
            });
        }
        let change_attribute = cfg.change_attribute.to_ascii_lowercase();
        let id_attribute = cfg.id_attribute.to_ascii_lowercase();
        let flag = cfg.mfa_reset.as_ref().map(|f| (f.attribute.to_ascii_lowercase(), f.value.clone()));
        let shared: Vec<String> = rules.iter().map(|r| r.attribute.clone()).collect();
        for rule in &mut rules {
            let others = shared.iter().filter(|a| **a == rule.attribute).count() > 1;
            let read_elsewhere = [&id_attribute, &change_attribute].contains(&&rule.attribute)
                || flag.as_ref().is_some_and(|(f, _)| *f == rule.attribute || FLAG_MARKS.contains(&rule.attribute.as_str()));
            rule.sole = rule.conversion == Conversion::Text && !others && !read_elsewhere;
        }
        Ok(Mapping { rules, id_attribute, usn: change_attribute == "usnchanged", change_attribute, flag })
    }

    /// The attributes to ask the server for.
    pub fn attributes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.rules.iter().filter(|r| !r.attribute.is_empty()).map(|r| r.attribute.clone()).collect();
        out.push(self.id_attribute.clone());
        out.push(self.change_attribute.clone());
        if let Some((flag, _)) = &self.flag {
            out.push(flag.clone());
            out.extend(FLAG_MARKS.map(String::from));
        }
        out.sort();
        out.dedup();
        out
    }

    /// The value of `mark` as the server compares it in an incremental filter.
    pub fn since_filter(&self, mark: &str, overlap: u64) -> Option<String> {
        let value = if self.usn {
            mark.parse::<i64>().ok()?.to_string()
        } else {
            let t = chrono::NaiveDateTime::parse_from_str(mark, "%Y%m%d%H%M%SZ").ok()?;
            (t - chrono::Duration::seconds(overlap as i64)).format("%Y%m%d%H%M%SZ").to_string()
        };
        Some(format!("({}>={})", self.change_attribute, value))
    }

    /// The entry's stable key, as [`Mapping::map`] computes it.
    pub fn entry_key(&self, entry: &SearchEntry) -> Option<String> {
        key_of(entry, &self.id_attribute)
    }

    fn mark(&self, raw: &str) -> Option<Mark> {
        if self.usn {
            return raw.trim().parse().ok().map(Mark::Usn);
        }
        // Generalized time: YYYYMMDDHHMMSS, optional fraction, Z (AD writes `.0Z`).
        let digits: String = raw.chars().take_while(char::is_ascii_digit).collect();
        (digits.len() >= 14).then(|| Mark::Time(format!("{}Z", &digits[..14])))
    }
}

/// An entry's stable key in `id_attribute` (users' and groups' alike).
pub fn key_of(entry: &SearchEntry, id_attribute: &str) -> Option<String> {
    let text = entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(id_attribute)).and_then(|(_, v)| v.first());
    if let Some(v) = text {
        return Some(v.to_ascii_lowercase());
    }
    // Binary keys: AD's objectGUID is a UUID in mixed-endian order; others as raw UUIDs or hex.
    let bin = entry.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(id_attribute))?.1.first()?;
    Some(match <[u8; 16]>::try_from(bin.as_slice()) {
        Ok(b) if id_attribute.eq_ignore_ascii_case("objectguid") => uuid::Uuid::from_bytes_le(b).to_string(),
        Ok(b) => uuid::Uuid::from_bytes(b).to_string(),
        Err(_) => hex::encode(bin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[ldap]` with these `attributes` mapped.
    pub(super) fn ldap(attributes: &[(&str, &str)]) -> config::Ldap {
        let mut c = config::Ldap::default();
        for (k, v) in attributes {
            c.attributes.insert(k.to_string(), v.to_string());
        }
        c
    }

    #[test]
    fn bad_mappings_are_refused_with_the_key() {
        let e = Mapping::new(&ldap(&[("displayName", "cn")])).err().unwrap().to_string();
        assert!(e.contains("userName must be mapped"), "{e}");
        let e = Mapping::new(&ldap(&[("userName", "uid"), ("nickname.nope", "cn")])).err().unwrap().to_string();
        assert!(e.contains("ldap.attributes.\"nickname.nope\""), "{e}");
        let e = Mapping::new(&ldap(&[("userName", "uid"), ("meta.created", "createTimestamp")])).err().unwrap().to_string();
        assert!(e.contains("meta.created"), "{e}");
    }

    #[test]
    fn incremental_filters_step_back_by_the_overlap() {
        let m = Mapping::new(&config::Ldap::default()).unwrap();
        assert_eq!(m.since_filter("20261128101500Z", 60).unwrap(), "(modifytimestamp>=20261128101400Z)");
        let ad = Mapping::new(&config::Ldap { change_attribute: "uSNChanged".into(), ..Default::default() }).unwrap();
        assert_eq!(ad.since_filter("12345", 60).unwrap(), "(usnchanged>=12345)");
        assert!(ad.mark("12346") > ad.mark("9999"));
    }
}
