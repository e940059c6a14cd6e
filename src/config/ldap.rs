//! `[ldap]`: where the directory is, how its entries map to users, the reset flag and the
//! safety limits of the sync.

use std::path::PathBuf;
use std::str::FromStr;

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
    /// `poll` (incremental runs on `schedule`) or `syncrepl` (the directory's change feed; then
    /// `schedule` is not used, `full_schedule` still is).
    pub change_detection: ChangeDetection,
    /// Cron expression of incremental runs (5 fields, or 6/7 with seconds); empty: none.
    pub schedule: Schedule,
    /// Cron expression of full runs; empty: none.
    pub full_schedule: Schedule,
    /// SCIM attribute path → LDAP attribute. Empty: the defaults of [`Ldap::mapping`].
    pub attributes: std::collections::BTreeMap<String, String>,
    pub mfa_reset: Option<LdapMfaReset>,
    pub safety: LdapSafety,
    /// `[ldap.groups]`: groups mirrored after the users; absent, no group is synced.
    pub groups: Option<LdapGroups>,
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
            change_detection: ChangeDetection::Poll,
            schedule: Schedule::from("*/15 * * * *"),
            full_schedule: Schedule::from("0 3 * * *"),
            attributes: Default::default(),
            mfa_reset: None,
            safety: LdapSafety::default(),
            groups: None,
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

    /// With the change feed: how the 16 octets by which the feed names an entry read as the
    /// entry's key (`id_attribute`); `None` when the key is another attribute.
    pub fn sync_uuid_key(&self) -> Option<SyncUuidKey> {
        if self.id_attribute.eq_ignore_ascii_case("entryUUID") {
            Some(SyncUuidKey::EntryUuid)
        } else if self.id_attribute.eq_ignore_ascii_case("nsUniqueId") {
            Some(SyncUuidKey::NsUniqueId)
        } else {
            None
        }
    }

    /// The bind password: the file (trailing newline dropped) or the configured value.
    pub fn password(&self) -> Result<Option<Secret>, PasswordError> {
        match (&self.bind_password_file, &self.bind_password) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map(|s| Some(Secret(s.trim_end_matches(['\r', '\n']).to_string())))
                .map_err(|source| PasswordError { path: path.clone(), source }),
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
        if !(1..=100_000).contains(&self.page_size) {
            out.push("ldap.page_size: must be between 1 and 100000".into());
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
        for (key, schedule) in [("ldap.schedule", &self.schedule), ("ldap.full_schedule", &self.full_schedule)] {
            if let Err(e) = schedule.cron() {
                out.push(format!("{key}: {e}"));
            }
        }
        // The attribute mapping is checked where the app is wired together (`app::check`): it
        // needs the SCIM schema, which the configuration does not know.
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
        if !(60..=7 * 86400).contains(&self.safety.window) {
            out.push("ldap.safety.window: must be between 60 seconds and 7 days (604800 seconds)".into());
        }
        if self.change_detection == ChangeDetection::Syncrepl && self.sync_uuid_key().is_none() {
            out.push(format!(
                "ldap.change_detection: \"syncrepl\" names deleted entries by their entryUUID (OpenLDAP) or nsUniqueId \
                 (389-ds, FreeIPA): set ldap.id_attribute to one of those (it is {:?}), or use \"poll\"",
                self.id_attribute
            ));
        }
        if let Some(g) = &self.groups {
            g.problems(out);
        }
    }
}

/// The bind password file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("ldap.bind_password_file: cannot read {}: {source}", path.display())]
pub struct PasswordError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A cron schedule of `[ldap]`, parsed once when the configuration is read: the usual 5 fields
/// (minute hour day month weekday), or 6/7 with seconds first (and a year last). Empty: no
/// schedule. A schedule that does not parse keeps its error, so that the configuration's check
/// reports it beside every other problem (instead of stopping at the first).
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    parsed: Result<Option<cron::Schedule>, ScheduleError>,
}

/// Why a schedule is not a cron expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{expr:?} has {fields} fields; give 5 (minute hour day month weekday) or 6/7 (with seconds first)")]
    Fields { expr: String, fields: usize },
    #[error("{expr:?} is not a cron expression ({reason})")]
    Invalid { expr: String, reason: String },
}

impl Schedule {
    /// No schedule.
    pub fn disabled() -> Self {
        Schedule::from("")
    }

    /// The expression as configured.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The schedule (`None`: disabled), or why the expression is not one.
    pub fn cron(&self) -> Result<Option<&cron::Schedule>, &ScheduleError> {
        self.parsed.as_ref().map(Option::as_ref)
    }
}

impl From<&str> for Schedule {
    fn from(text: &str) -> Self {
        Schedule { text: text.to_string(), parsed: parse_cron(text) }
    }
}

fn parse_cron(expr: &str) -> Result<Option<cron::Schedule>, ScheduleError> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Ok(None);
    }
    let full = match expr.split_whitespace().count() {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        fields => return Err(ScheduleError::Fields { expr: expr.to_string(), fields }),
    };
    cron::Schedule::from_str(&full)
        .map(Some)
        .map_err(|e| ScheduleError::Invalid { expr: expr.to_string(), reason: e.to_string() })
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|text| Schedule::from(text.as_str()))
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

/// Where a group's members are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GroupMembership {
    /// The group's `member` values: DNs of users and of nested groups (groupOfNames, AD).
    #[default]
    #[serde(rename = "member")]
    Member,
    /// The group's `uniqueMember` values: DNs (groupOfUniqueNames).
    #[serde(rename = "uniqueMember")]
    UniqueMember,
    /// The group's `memberUid` values: the users' `member_uid_attribute` (posixGroup).
    #[serde(rename = "memberUid")]
    MemberUid,
    /// The users' `memberOf` values: DNs of the groups they belong to.
    #[serde(rename = "memberOf")]
    MemberOf,
}

impl GroupMembership {
    /// The attribute that holds the members (on the group, or on the user for `memberOf`).
    pub fn attribute(self) -> &'static str {
        match self {
            GroupMembership::Member => "member",
            GroupMembership::UniqueMember => "uniqueMember",
            GroupMembership::MemberUid => "memberUid",
            GroupMembership::MemberOf => "memberOf",
        }
    }
}

/// `[ldap.groups]`: groups mirrored from the directory after its users.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapGroups {
    /// Where groups are searched; unset: `ldap.base_dn`.
    pub base_dn: Option<String>,
    pub filter: String,
    /// The group's displayName.
    pub name_attribute: String,
    /// The group's stable key; unset: `ldap.id_attribute`.
    pub id_attribute: Option<String>,
    pub membership: GroupMembership,
    /// With `membership = "memberUid"`: the user entries' attribute that `memberUid` values name.
    pub member_uid_attribute: String,
}

impl Default for LdapGroups {
    fn default() -> Self {
        LdapGroups {
            base_dn: None,
            filter: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))".into(),
            name_attribute: "cn".into(),
            id_attribute: None,
            membership: GroupMembership::Member,
            member_uid_attribute: "uid".into(),
        }
    }
}

impl LdapGroups {
    fn problems(&self, out: &mut Vec<String>) {
        if self.base_dn.as_deref().is_some_and(|b| b.trim().is_empty()) {
            out.push("ldap.groups.base_dn: empty; leave it out to search under ldap.base_dn".into());
        }
        if !(self.filter.starts_with('(') && self.filter.ends_with(')')) {
            out.push(format!("ldap.groups.filter: {:?} must be an LDAP filter in parentheses", self.filter));
        }
        let names = [
            ("ldap.groups.name_attribute", Some(&self.name_attribute)),
            ("ldap.groups.id_attribute", self.id_attribute.as_ref()),
            ("ldap.groups.member_uid_attribute", Some(&self.member_uid_attribute)),
        ];
        for (key, name) in names {
            if let Some(name) = name.filter(|n| !is_attribute_description(n)) {
                out.push(format!("{key}: {name:?} is not an LDAP attribute name (RFC 4512: a name such as cn, or an OID)"));
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapSafety {
    /// A full run that would deactivate more than this share of the directory's users fails.
    pub max_deactivate_percent: f64,
    /// …or more than this many users (unset: no count limit).
    pub max_deactivate: Option<u64>,
    /// Seconds (or a duration such as "1h"): the change feed counts its deactivations against
    /// the limits over this sliding window.
    #[serde(with = "super::duration_secs")]
    pub window: u64,
}

impl Default for LdapSafety {
    fn default() -> Self {
        LdapSafety { max_deactivate_percent: 10.0, max_deactivate: None, window: 3600 }
    }
}

/// How a feed's entry UUID is written as the entry's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncUuidKey {
    /// `8-4-4-4-12` lowercase hex (OpenLDAP's entryUUID).
    EntryUuid,
    /// `8-8-8-8` lowercase hex (389-ds's nsUniqueId).
    NsUniqueId,
}

impl SyncUuidKey {
    pub fn key(self, uuid: &[u8; 16]) -> String {
        let hex = hex::encode(uuid);
        match self {
            SyncUuidKey::EntryUuid => format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]),
            SyncUuidKey::NsUniqueId => format!("{}-{}-{}-{}", &hex[..8], &hex[8..16], &hex[16..24], &hex[24..]),
        }
    }
}

/// How the sync learns of changes between full runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeDetection {
    /// Incremental runs on `schedule` read the entries changed since the last good run.
    #[default]
    Poll,
    /// The instance holding the feed's lease keeps an RFC 4533 refreshAndPersist search open
    /// (OpenLDAP syncprov, 389-ds / FreeIPA content sync) and applies changes as they come.
    Syncrepl,
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Timelike, Utc};

    use super::*;

    #[test]
    fn a_feed_uuid_reads_as_the_key_the_directory_prints() {
        let uuid: [u8; 16] = hex::decode("6f9619ff8b86d011b42d00c04fc964ff").unwrap().try_into().unwrap();
        // OpenLDAP's entryUUID and 389-ds's nsUniqueId of the same 16 octets.
        assert_eq!(SyncUuidKey::EntryUuid.key(&uuid), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(SyncUuidKey::NsUniqueId.key(&uuid), "6f9619ff-8b86d011-b42d00c0-4fc964ff");
        let cfg = |id: &str| Ldap { id_attribute: id.into(), ..Ldap::default() };
        assert_eq!(cfg("entryuuid").sync_uuid_key(), Some(SyncUuidKey::EntryUuid));
        assert_eq!(cfg("nsUniqueId").sync_uuid_key(), Some(SyncUuidKey::NsUniqueId));
        assert_eq!(cfg("objectGUID").sync_uuid_key(), None);
    }

    fn parse(expr: &str) -> Result<Option<cron::Schedule>, ScheduleError> {
        Schedule::from(expr).cron().map(Option::<&cron::Schedule>::cloned).map_err(Clone::clone)
    }

    #[test]
    fn five_field_crontab_lines_run_at_second_zero() {
        let s = parse("*/15 * * * *").unwrap().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 30).unwrap();
        let next: Vec<_> = s.after(&after).take(2).collect();
        assert_eq!(next[0], Utc.with_ymd_and_hms(2026, 11, 28, 10, 15, 0).unwrap());
        assert_eq!(next[1], Utc.with_ymd_and_hms(2026, 11, 28, 10, 30, 0).unwrap());
        let nightly = parse("0 3 * * *").unwrap().unwrap();
        let n = nightly.after(&after).next().unwrap();
        assert_eq!((n.day(), n.hour(), n.minute()), (29, 3, 0));
    }

    #[test]
    fn six_and_seven_field_forms_with_seconds() {
        let s = parse("30 */5 * * * *").unwrap().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 0).unwrap();
        assert_eq!(s.after(&after).next().unwrap(), Utc.with_ymd_and_hms(2026, 11, 28, 10, 10, 30).unwrap());
        assert!(parse("0 0 3 * * * 2027").unwrap().is_some());
    }

    #[test]
    fn empty_disables_and_nonsense_is_refused() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("  ").unwrap().is_none());
        assert!(parse("* * *").unwrap_err().to_string().contains("3 fields"));
        assert!(parse("61 * * * *").unwrap_err().to_string().contains("not a cron expression"));
    }

    #[test]
    fn a_schedule_reads_and_writes_as_its_text() {
        let s: Schedule = serde_json::from_str("\"0 3 * * *\"").unwrap();
        assert_eq!(s.text(), "0 3 * * *");
        assert!(s.cron().unwrap().is_some());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"0 3 * * *\"");
        let bad: Schedule = serde_json::from_str("\"never\"").unwrap();
        assert!(bad.cron().is_err(), "kept, to be reported with the other problems");
    }
}
