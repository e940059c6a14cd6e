//! `[ldap]`: where the directory is, how its entries map to users, the reset flag and the
//! safety limits of the sync.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapScope {
    Base,
    One,
    Sub,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ldap {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM file of CA certificates trusted beside the system ones.
    pub ca_file: Option<PathBuf>,
    /// Anonymous when unset.
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    /// Usually from `PROVISIOND_LDAP__BIND_PASSWORD`; prefer `bind_password_file`.
    pub bind_password: Option<Secret>,
    pub base_dn: String,
    pub scope: LdapScope,
    pub user_filter: String,
    /// Entries per page of the paged search (RFC 2696).
    pub page_size: u32,
    /// Seconds: connecting, and waiting for each answer of the server.
    pub timeout: u64,
    /// The stable key of an entry (survives renames): `entryUUID`, `objectGUID` (AD), `ipaUniqueID`, `nsUniqueId`.
    pub id_attribute: String,
    /// What incremental runs compare: `modifyTimestamp` (OpenLDAP, 389-ds, FreeIPA), `whenChanged` or `uSNChanged` (AD).
    pub change_attribute: String,
    /// Seconds re-read before the last high-water mark (clock skew between replicas); timestamps only.
    pub overlap: u64,
    /// Cron expression of incremental runs (5 fields, or 6/7 with seconds); empty: none.
    pub schedule: String,
    /// Cron expression of full runs; empty: none.
    pub full_schedule: String,
    /// SCIM attribute path → LDAP attribute. Empty: the defaults of [`Ldap::mapping`].
    pub attributes: std::collections::BTreeMap<String, String>,
    pub mfa_reset: Option<LdapMfaReset>,
    pub safety: LdapSafety,
}

impl Default for Ldap {
    fn default() -> Self {
        Ldap {
            url: String::new(),
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            bind_password: None,
            base_dn: String::new(),
            scope: LdapScope::Sub,
            user_filter: "(objectClass=inetOrgPerson)".into(),
            page_size: 500,
            timeout: 30,
            id_attribute: "entryUUID".into(),
            change_attribute: "modifyTimestamp".into(),
            overlap: 60,
            schedule: "*/15 * * * *".into(),
            full_schedule: "0 3 * * *".into(),
            attributes: Default::default(),
            mfa_reset: None,
            safety: LdapSafety::default(),
        }
    }
}

impl Ldap {
    /// The attribute mapping in force: the configured one, or the inetOrgPerson defaults.
    pub fn mapping(&self) -> Vec<(String, String)> {
        if !self.attributes.is_empty() {
            return self.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        [
            ("userName", "uid"),
            ("name.givenName", "givenName"),
            ("name.familyName", "sn"),
            ("displayName", "cn"),
            ("emails[type eq \"work\"].value", "mail"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The bind password: the file (trailing newline dropped) or the configured value.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        match (&self.bind_password_file, &self.bind_password) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|s| Some(Secret(s.trim_end_matches(['\r', '\n']).to_string())))
                .map_err(|e| format!("ldap.bind_password_file: cannot read {}: {e}", path.display())),
            (None, p) => Ok(p.clone()),
        }
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if !(self.url.starts_with("ldap://") || self.url.starts_with("ldaps://")) {
            out.push(format!("ldap.url: {:?} must start with ldap:// or ldaps://", self.url));
        }
        if self.starttls && self.url.starts_with("ldaps://") {
            out.push("ldap.starttls: not with an ldaps:// url (it is TLS already)".into());
        }
        if self.base_dn.trim().is_empty() {
            out.push("ldap.base_dn: required, e.g. \"ou=people,dc=example,dc=org\"".into());
        }
        if !(self.user_filter.starts_with('(') && self.user_filter.ends_with(')')) {
            out.push(format!("ldap.user_filter: {:?} must be an LDAP filter in parentheses", self.user_filter));
        }
        if self.page_size == 0 {
            out.push("ldap.page_size: must be at least 1".into());
        }
        if !(1..=3600).contains(&self.timeout) {
            out.push("ldap.timeout: must be between 1 and 3600 seconds".into());
        }
        if self.overlap > 7 * 86400 {
            out.push("ldap.overlap: must be at most 604800 seconds (a week)".into());
        }
        if self.bind_dn.is_some() && self.bind_password_file.is_none() && self.bind_password.is_none() {
            // An empty password is an unauthenticated bind that some servers accept and answer
            // with fewer entries: users would look departed.
            out.push("ldap.bind_dn: needs ldap.bind_password_file or PROVISIOND_LDAP__BIND_PASSWORD".into());
        }
        if self.bind_password_file.is_some() && self.bind_password.is_some() {
            out.push("ldap.bind_password_file: give either it or ldap.bind_password, not both".into());
        }
        for (key, expr) in [("ldap.schedule", &self.schedule), ("ldap.full_schedule", &self.full_schedule)] {
            if let Err(e) = crate::directory::scheduler::parse(expr) {
                out.push(format!("{key}: {e}"));
            }
        }
        if let Err(e) = crate::directory::mapping::Mapping::new(self) {
            out.push(e);
        }
        for (key, name) in [("ldap.id_attribute", &self.id_attribute), ("ldap.change_attribute", &self.change_attribute)] {
            if !is_attribute_description(name) {
                out.push(format!(
                    "{key}: {name:?} is not an LDAP attribute name (RFC 4512: a name such as entryUUID, or an OID)"
                ));
            }
        }
        if let Some(r) = &self.mfa_reset {
            if r.attribute.trim().is_empty() || r.value.is_empty() {
                out.push("ldap.mfa_reset: attribute and value are both required".into());
            } else if !is_attribute_description(&r.attribute) {
                out.push(format!(
                    "ldap.mfa_reset.attribute: {:?} is not an LDAP attribute name (RFC 4512: a name such as mfaResetRequested, or an OID)",
                    r.attribute
                ));
            }
        }
        if !(0.0..=100.0).contains(&self.safety.max_deactivate_percent) {
            out.push("ldap.safety.max_deactivate_percent: must be between 0 and 100".into());
        }
    }
}

/// An LDAP attribute description (RFC 4512 §2.5): a name (`descr`: a letter, then letters,
/// digits and hyphens) or a numeric OID, with options (`;lang-en`, `;binary`). Anything else
/// (spaces, parentheses, `=`, `*`) would change the meaning of the filters it is put into.
pub fn is_attribute_description(s: &str) -> bool {
    let mut parts = s.split(';');
    let name = parts.next().unwrap_or_default();
    let keystring = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let number = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    let numericoid = |o: &str| o.contains('.') && o.split('.').all(number);
    (keystring(name) || numericoid(name))
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapMfaReset {
    /// The flag attribute an LDAP admin sets, e.g. `mfaResetRequested`.
    pub attribute: String,
    /// The value that requests a reset, e.g. `TRUE` (compared ignoring case).
    pub value: String,
    /// Remove the attribute once the reset is applied (needs write access for the bind account).
    #[serde(default = "yes")]
    pub clear: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapSafety {
    /// A full run that would deactivate more than this share of the directory's users fails.
    pub max_deactivate_percent: f64,
    /// …or more than this many users (unset: no count limit).
    pub max_deactivate: Option<u64>,
}

impl Default for LdapSafety {
    fn default() -> Self {
        LdapSafety { max_deactivate_percent: 10.0, max_deactivate: None }
    }
}
