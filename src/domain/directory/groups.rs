//! Groups mirrored from a directory (`[ldap.groups]`), after its users in each run:
//! - a group entry is one group, known by its stable key (`group_links`), of source `ldap`, its
//!   displayName the entry's name and its externalId the key; a new key is matched to an
//!   existing group by displayName, as a user is by userName: a group pushed by SCIM and found in
//!   LDAP is one group, now of source `ldap` (the run's errors say so: never silently), unless
//!   that group is linked to another entry (then the new entry is reported and takes nothing);
//! - members mirror the directory: member DNs resolve through the users' links and the groups'
//!   links; the difference against the current members is written, by the row; a DN that is
//!   neither a synced user nor a synced group is skipped and counted;
//! - a group whose entry is gone is deleted by a full run only, within `[ldap.safety]`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::{json, Map, Value};

use super::run::Counts;
use super::runs::LEASE;
use super::safety;
use super::session::SessionError;
use crate::clock::{self, Clock};
use crate::domain::{Error, Result as DomainResult};
use crate::scim::schema::{GROUP, GROUP_RESOURCE};
use crate::store::directory as run_store;
use crate::store::group_links::{self as links, GroupLink};
use crate::store::groups::{self as stored, MemberKind, WriteError};
use crate::store::users::Source;
use crate::store::{self, PooledConn, Tx};

/// One group as the directory shows it.
#[derive(Debug, Clone)]
pub struct GroupEntry {
    /// The entry's stable key (survives renames).
    pub key: String,
    pub dn: String,
    /// The displayName.
    pub name: String,
    /// The DNs of its members (users and nested groups).
    pub members: Vec<String>,
}

/// A full run would delete more groups than `[ldap.safety]` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyDeletions {
    pub count: usize,
    pub present: i64,
    pub limit: u64,
}

/// The group half of a run: its connection, its lease, what it did.
pub struct GroupMirror {
    conn: PooledConn,
    run_id: String,
    lease_for: chrono::Duration,
    clock: Arc<dyn Clock>,
    dry_run: bool,
    /// What the run did to groups (the group counters only).
    pub counts: Counts,
    /// Per-entry problems and notes, for the run's errors.
    pub errors: Vec<String>,
    /// Member values that named neither a synced user nor a synced group.
    pub skipped_members: usize,
    /// Groups written, with their member DNs, for [`GroupMirror::mirror_members`].
    pending: Vec<(String, Vec<String>)>,
}

/// How a transaction of the group mirror ends: a dry run rolls back what it did.
enum TxEnd<T> {
    Rollback(T),
    Fail(SessionError),
}

impl<T> From<diesel::result::Error> for TxEnd<T> {
    fn from(e: diesel::result::Error) -> Self {
        TxEnd::Fail(e.into())
    }
}

impl GroupMirror {
    pub(super) fn new(conn: PooledConn, run_id: &str, lease_for: chrono::Duration, clock: Arc<dyn Clock>, dry_run: bool) -> Self {
        GroupMirror {
            conn,
            run_id: run_id.to_string(),
            lease_for,
            clock,
            dry_run,
            counts: Counts::default(),
            errors: Vec::new(),
            skipped_members: 0,
            pending: Vec::new(),
        }
    }

    fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Runs `f` in a write transaction that first renews the run's lease (a run that lost it
    /// writes nothing more); a dry run's is rolled back.
    fn write<T>(&mut self, f: impl FnOnce(&mut Tx, NaiveDateTime) -> Result<T, SessionError>) -> Result<T, SessionError> {
        let at = self.now();
        let (run_id, until, dry_run) = (self.run_id.clone(), at + self.lease_for, self.dry_run);
        let outcome = store::write_tx(&mut self.conn, |tx| {
            if !run_store::renew_lease(tx, LEASE, &run_id, until)? {
                return Err(TxEnd::Fail(SessionError::LeaseLost));
            }
            let value = f(tx, at).map_err(TxEnd::Fail)?;
            if dry_run {
                Err(TxEnd::Rollback(value))
            } else {
                Ok(value)
            }
        });
        match outcome {
            Ok(v) | Err(TxEnd::Rollback(v)) => Ok(v),
            Err(TxEnd::Fail(e)) => Err(e),
        }
    }

    /// Creates or updates the groups of a batch of entries, in one transaction with a savepoint
    /// each (one bad entry does not undo the others); their members are mirrored once every
    /// group of the run is written ([`GroupMirror::mirror_members`]).
    pub fn write_groups(&mut self, entries: Vec<GroupEntry>) -> Result<(), SessionError> {
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let mut known: HashMap<String, GroupLink> =
            links::links_by_key(&mut self.conn, &keys)?.into_iter().map(|l| (l.entry_key.clone(), l)).collect();
        let results = self.write(|tx, at| {
            Ok(entries
                .iter()
                .map(|e| tx.savepoint(|c| write_group(c, e, known.remove(&e.key), at)))
                .collect::<Vec<DomainResult<Written>>>())
        })?;
        for (entry, result) in entries.into_iter().zip(results) {
            match result {
                Ok(w) => {
                    match w.change {
                        Some(GroupChange::Created) => self.counts.groups_created += 1,
                        Some(GroupChange::Updated) => self.counts.groups_updated += 1,
                        None => {}
                    }
                    if let Some(note) = w.note {
                        self.errors.push(note);
                    }
                    self.pending.push((w.group_id, entry.members));
                }
                Err(e) => self.errors.push(format!("group {}: {e}", entry.dn)),
            }
        }
        Ok(())
    }

    /// Mirrors the members of the groups written in this run: each group's member DNs are
    /// resolved (users through their links, groups through theirs), compared with its current
    /// members, and only the difference is written (a transaction per group).
    pub fn mirror_members(&mut self) -> Result<(), SessionError> {
        let resolve = self.resolver()?;
        for (group_id, dns) in std::mem::take(&mut self.pending) {
            let (mut users, mut groups) = (HashSet::new(), HashSet::new());
            for dn in &dns {
                match resolve.get(&dn_key(dn)) {
                    Some((MemberKind::User, id)) => users.insert(id.clone()),
                    Some((MemberKind::Group, id)) => groups.insert(id.clone()),
                    None => {
                        self.skipped_members += 1;
                        false
                    }
                };
            }
            let current = stored::members(&mut self.conn, &group_id)?;
            let mut remove = Vec::new();
            for m in current {
                let wanted = match m.kind {
                    MemberKind::User => users.remove(&m.id),
                    MemberKind::Group => groups.remove(&m.id),
                };
                if !wanted {
                    remove.push(m.id);
                }
            }
            let (add_users, add_groups): (Vec<String>, Vec<String>) = (users.into_iter().collect(), groups.into_iter().collect());
            if remove.is_empty() && add_users.is_empty() && add_groups.is_empty() {
                continue;
            }
            // A dry run writes nothing (its new groups do not exist): what it would change is
            // what it counts.
            if self.dry_run {
                self.counts.memberships_changed += (remove.len() + add_users.len() + add_groups.len()) as i64;
                continue;
            }
            let changed = self.write(|tx, at| {
                let n = stored::remove_members(tx, &group_id, &remove)?
                    + stored::add_members(tx, &group_id, &add_users, &add_groups)?;
                if n > 0 {
                    stored::touch(tx, &group_id, at)?;
                }
                Ok(n)
            })?;
            self.counts.memberships_changed += changed as i64;
        }
        Ok(())
    }

    /// Normalised DN → member, for every present user entry and every linked group.
    fn resolver(&mut self) -> DomainResult<HashMap<String, (MemberKind, String)>> {
        let mut out = HashMap::new();
        let mut after = String::new();
        loop {
            let page = links::user_dns_after(&mut self.conn, &after, 5000)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (id, dn) in page {
                out.insert(dn_key(&dn), (MemberKind::User, id));
            }
        }
        let mut after = String::new();
        loop {
            let page = links::links_after(&mut self.conn, &after, 5000)?;
            let Some(last) = page.last() else { break };
            after = last.entry_key.clone();
            for l in page {
                out.insert(dn_key(&l.dn), (MemberKind::Group, l.group_id));
            }
        }
        Ok(out)
    }

    /// After a complete full read: deletes the groups whose entries were not seen (`seen`: the
    /// keys read), unless that is more than `[ldap.safety]` allows (the share of the linked
    /// groups, or the count) and not `allowed_beyond`: then nothing is deleted.
    pub fn delete_missing(
        &mut self,
        seen: &HashSet<String>,
        max_percent: f64,
        max: Option<u64>,
        allowed_beyond: bool,
    ) -> Result<Result<(), TooManyDeletions>, SessionError> {
        let (mut present, mut gone) = (0i64, Vec::new());
        let mut after = String::new();
        loop {
            let page = links::links_after(&mut self.conn, &after, 5000)?;
            let Some(last) = page.last() else { break };
            after = last.entry_key.clone();
            present += page.len() as i64;
            gone.extend(page.into_iter().filter(|l| !seen.contains(&l.entry_key)).map(|l| l.group_id));
        }
        let limit = safety::deactivation_limit(present, max_percent, max);
        if !safety::may_deactivate(gone.len(), limit, allowed_beyond) {
            return Ok(Err(TooManyDeletions { count: gone.len(), present, limit }));
        }
        for chunk in gone.chunks(500) {
            let deleted = self.write(|tx, _| {
                let mut n = 0;
                for id in chunk {
                    match stored::delete(tx, id, None) {
                        Ok(()) => n += 1,
                        Err(WriteError::NotFound) => {}
                        Err(e) => return Err(SessionError::Failed(group_write_error(e, id))),
                    }
                }
                Ok(n)
            })?;
            self.counts.groups_deleted += deleted;
        }
        Ok(Ok(()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupChange {
    Created,
    Updated,
}

struct Written {
    group_id: String,
    change: Option<GroupChange>,
    note: Option<String>,
}

/// Writes one group entry: its linked group, else the group of its displayName (taken over,
/// unless linked to another entry), else a new group.
fn write_group(tx: &mut Tx, entry: &GroupEntry, link: Option<GroupLink>, at: NaiveDateTime) -> DomainResult<Written> {
    let (current, note) = match &link {
        Some(l) => {
            (Some(stored::get(tx, &l.group_id)?.ok_or_else(|| Error::NotFound(format!("no group {}", l.group_id)))?), None)
        }
        None => match stored::find_by_display_name(tx, &entry.name)? {
            Some(g) => {
                if let Some(other) = links::link_of_group(tx, &g.id)? {
                    return Err(Error::conflict(format!(
                        "displayName {:?} already belongs to the group of the entry {} (same group in two entries)",
                        entry.name, other.dn
                    )));
                }
                let note = (g.source != Source::Ldap).then(|| {
                    format!(
                        "group {}: the SCIM group {:?} ({}) is now mirrored from this entry (source ldap)",
                        entry.dn, entry.name, g.id
                    )
                });
                (Some(g), note)
            }
            None => (None, None),
        },
    };
    let body = body_of(entry, current.as_ref().map(|g| &g.body))?;
    let (group, change) = match current {
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            (
                stored::insert(tx, &id, body, Source::Ldap, at).map_err(|e| group_write_error(e, &entry.name))?,
                Some(GroupChange::Created),
            )
        }
        Some(g) if g.body == body && g.source == Source::Ldap => (g, None),
        Some(g) => {
            if g.source != Source::Ldap {
                stored::set_source(tx, &g.id, Source::Ldap)?;
            }
            let updated = if g.body == body {
                g
            } else {
                stored::update(tx, g, body, at).map_err(|e| group_write_error(e, &entry.name))?
            };
            (updated, Some(GroupChange::Updated))
        }
    };
    if link.as_ref().is_none_or(|l| l.dn != entry.dn) {
        links::save_link(tx, &GroupLink { group_id: group.id.clone(), entry_key: entry.key.clone(), dn: entry.dn.clone() })?;
    }
    Ok(Written { group_id: group.id, change, note })
}

/// The group's body: the entry's displayName and key (as externalId) over what else it holds.
fn body_of(entry: &GroupEntry, current: Option<&Map<String, Value>>) -> DomainResult<Map<String, Value>> {
    let mut body = current.cloned().unwrap_or_else(|| {
        let mut b = Map::new();
        b.insert("schemas".into(), json!([GROUP]));
        b
    });
    body.insert("displayName".into(), Value::String(entry.name.clone()));
    body.insert("externalId".into(), Value::String(entry.key.clone()));
    Ok(crate::scim::resource::normalize(&GROUP_RESOURCE, &Value::Object(body))?)
}

fn group_write_error(e: WriteError, what: &str) -> Error {
    match e {
        WriteError::DisplayNameTaken => Error::taken(format!("displayName {what:?} is already taken by another group")),
        WriteError::VersionMismatch => Error::conflict(format!("group {what}: changed by another writer meanwhile")),
        WriteError::NotFound => Error::NotFound(format!("group {what}: no longer exists")),
        WriteError::Store(e) => e.into(),
    }
}

/// A DN as compared here: attribute names and values lower-cased, spaces around the separators
/// dropped (`uid=A, ou=People` is `uid=a,ou=people`), escaped separators kept as they are.
pub fn dn_key(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.extend(n.to_lowercase());
                }
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dn_key;

    #[test]
    fn dns_compare_ignoring_case_and_spaces_around_separators() {
        let cases = [
            ("uid=a,ou=people,dc=example,dc=org", "uid=a,ou=people,dc=example,dc=org"),
            ("UID=A, OU=People , dc=Example,dc=org", "uid=a,ou=people,dc=example,dc=org"),
            (" cn = Finance\\, Paris ,ou=groups", "cn=finance\\, paris,ou=groups"),
            ("cn=x+uid=y,dc=z", "cn=x+uid=y,dc=z"),
        ];
        for (dn, key) in cases {
            assert_eq!(dn_key(dn), key, "{dn}");
        }
        assert_ne!(dn_key("uid=a,ou=people"), dn_key("uid=ab,ou=people"));
    }
}
