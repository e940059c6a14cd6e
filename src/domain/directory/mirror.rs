//! What one directory entry does to the store, inside a run's batch transaction:
//! - an entry is one user, known by its stable key; a new key is matched to an existing user by
//!   userName, then externalId, so that a user pushed by SCIM and found in LDAP is one user;
//! - the mapped attributes are LDAP's: written over whatever else set them; others are kept;
//! - a user whose entry returns after a full run missed it is active again; the directory owns
//!   `active`: a user whose entry is gone is deactivated, whoever re-activated it;
//! - renames applied together (uids swapped or rotated) are applied as a whole;
//! - the MFA reset flag goes through the one reset path (origin `directory`).

use chrono::NaiveDateTime;
use serde_json::Map;

use super::entry::{decide_flag, Entry, FlagDecision};
use crate::domain::audit::Actor;
use crate::domain::events;
use crate::domain::mfa::reset::reset_in_tx;
use crate::domain::{Error, Result};
use crate::scim::user_name::UserName;
use crate::store::directory::{self as links, Link};
use crate::store::users::{self as store_users, Source, StoredUser, WriteError};
use crate::store::{DbConn, Tx};

/// The reason receivers are given when a full run deactivates a user.
const GONE: &str = "the user's entry is no longer in the directory";

/// Users written by the sync carry this source.
pub const SOURCE: Source = Source::Ldap;

/// What an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Reactivated,
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub change: Change,
    pub user_id: String,
    /// The flag was applied: the factor was reset.
    pub reset: bool,
}

/// Applies one mapped entry. `link` is the entry's link with the version of its user, if
/// known; `key_in_directory` answers whether another key still exists in LDAP (asked only
/// when a new key claims a user linked to another entry).
pub(super) fn apply_entry(
    conn: &mut Tx,
    entry: &Entry,
    link: Option<&Link>,
    key_in_directory: &mut dyn FnMut(&str) -> bool,
    actor: &Actor,
    at: NaiveDateTime,
) -> Result<Applied> {
    let claimed: Option<Link>;
    let (current, link) = match link {
        Some(link) => (Some(user(conn, &link.user_id)?), Some(link)),
        None => match claim(conn, entry, key_in_directory)? {
            Some((user, previous)) => {
                claimed = previous;
                (Some(user), claimed.as_ref())
            }
            None => (None, None),
        },
    };
    let body = entry.apply_to(current.as_ref().map(|u| &*u.body))?;
    let came_from_elsewhere = current.as_ref().is_some_and(|u| u.source != SOURCE);
    let (user, mut change) = match current {
        None => {
            let new = store_users::NewUser::new(crate::domain::users::new_user_id(), body);
            (store_users::insert(conn, new, SOURCE, at).map_err(|e| write_error(e, &entry.dn))?, Change::Created)
        }
        Some(cur) if cur.body == body => (cur, Change::Unchanged),
        Some(cur) => {
            let was_active = cur.is_active();
            let user =
                store_users::update(conn, store_users::Update::new(cur, body), at).map_err(|e| write_error(e, &entry.dn))?;
            events::record_activity(conn, was_active, &user, actor, None, at)?;
            (user, Change::Updated)
        }
    };
    if came_from_elsewhere {
        store_users::set_source(conn, &user.id, SOURCE)?;
    }
    if link.is_some_and(|l| l.missing_since.is_some()) {
        change = Change::Reactivated;
    }
    let remembered = link.and_then(|l| l.flag_mark.clone());
    let (reset, flag_mark) = match decide_flag(entry.flag.as_deref(), remembered.as_deref()) {
        FlagDecision::Absent => (false, None),
        FlagDecision::AlreadyApplied => (false, remembered),
        FlagDecision::Apply => {
            let reason = format!("MFA reset flag set on {}", entry.dn);
            reset_in_tx(conn, (&user.id, user.user_name()), actor, Some(&reason), at)?;
            (true, entry.flag.clone())
        }
    };
    links::save_link(
        conn,
        &Link {
            user_id: user.id.clone(),
            entry_key: entry.key.clone(),
            dn: entry.dn.clone(),
            fingerprint: entry.fingerprint.clone(),
            synced_version: user.version,
            missing_since: None,
            flag_mark,
        },
    )?;
    Ok(Applied { change, user_id: user.id, reset })
}

/// Creates users for entries known to be new (no link, userName and externalId free), a few
/// statements for the whole batch. Fails as a whole; the caller then applies them one by one.
pub(super) fn create_many(conn: &mut Tx, entries: &[&Entry], actor: &Actor, at: NaiveDateTime) -> Result<Vec<Applied>> {
    let mut users = Vec::with_capacity(entries.len());
    let mut new_links = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = crate::domain::users::new_user_id();
        new_links.push(Link {
            user_id: id.clone(),
            entry_key: entry.key.clone(),
            dn: entry.dn.clone(),
            fingerprint: entry.fingerprint.clone(),
            synced_version: 1,
            missing_since: None,
            flag_mark: entry.flag.clone(),
        });
        users.push((id, entry.apply_to(None)?));
    }
    store_users::insert_many(conn, &users, SOURCE, at)?;
    links::insert_links(conn, &new_links)?;
    let mut applied = Vec::with_capacity(entries.len());
    for (entry, (id, body)) in entries.iter().zip(&users) {
        // A flag already set when the user first appears applies like any other.
        let reset = entry.flag.is_some();
        if reset {
            let user_name = body.get("userName").and_then(serde_json::Value::as_str).unwrap_or_default();
            let reason = format!("MFA reset flag set on {}", entry.dn);
            reset_in_tx(conn, (id, user_name), actor, Some(&reason), at)?;
        }
        applied.push(Applied { change: Change::Created, user_id: id.clone(), reset });
    }
    Ok(applied)
}

/// Deactivates a user whose entry a full run did not find; returns whether it was active.
pub(super) fn deactivate(conn: &mut Tx, user_id: &str, actor: &Actor, at: NaiveDateTime) -> Result<bool> {
    let current = user(conn, user_id)?;
    let was_active = current.is_active();
    let version = if was_active {
        let mut body = Map::clone(&current.body);
        body.insert("active".into(), serde_json::Value::Bool(false));
        let what = format!("user {}", current.id);
        let user = store_users::update(conn, store_users::Update::new(current, body), at).map_err(|e| write_error(e, &what))?;
        events::record(conn, events::USER_DEACTIVATED, events::Subject::of(&user), actor, Some(GONE), at)?;
        user.version
    } else {
        current.version
    };
    links::mark_missing(conn, user_id, at, version)?;
    Ok(was_active)
}

/// The keys of other entries whose users these new entries would claim (by userName or
/// externalId) while those entries were present at the last look: before a batch is written,
/// the sync asks the directory whether they still are (never inside the transaction).
pub(super) fn contested_keys(conn: &mut DbConn, entries: &[&Entry]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for entry in entries {
        if let Some((_, Some(link))) = claimable(conn, entry)? {
            if link.missing_since.is_none() && link.entry_key != entry.key {
                keys.push(link.entry_key);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The existing user a new entry key belongs to (by userName, then externalId) and that user's
/// previous link. A user linked to another entry that is still in the directory is not taken.
fn claim(
    conn: &mut DbConn,
    entry: &Entry,
    key_in_directory: &mut dyn FnMut(&str) -> bool,
) -> Result<Option<(StoredUser, Option<Link>)>> {
    let found = claimable(conn, entry)?;
    if let Some((_, Some(prev))) = &found {
        // The same person re-created in the directory gets a new key; two live entries for one
        // user are a conflict the directory admin must settle.
        if prev.missing_since.is_none() && key_in_directory(&prev.entry_key) {
            return Err(Error::conflict(format!(
                "{}: userName {:?} already belongs to the entry {} (same user in two entries)",
                entry.dn, entry.user_name, prev.dn
            )));
        }
    }
    Ok(found)
}

/// The user an unlinked entry matches (userName, then externalId) and its link, if any.
fn claimable(conn: &mut DbConn, entry: &Entry) -> Result<Option<(StoredUser, Option<Link>)>> {
    let mut found = store_users::find_by_user_name(conn, &entry.user_name)?;
    if found.is_none() {
        if let Some(ext) = &entry.external_id {
            if let Some(id) = store_users::find_by_external_id(conn, ext)? {
                found = Some(user(conn, &id)?);
            }
        }
    }
    let Some(user) = found else { return Ok(None) };
    let previous = links::link_of_user(conn, &user.id)?;
    Ok(Some((user, previous)))
}

/// A userName held only inside a batch transaction, while renames are being applied.
const TRANSIENT_NAME: &str = "~provisiond-renaming-";

/// Renames applied together (uids swapped or rotated in the directory: A→tmp, B→A, tmp→B)
/// cannot be written one by one: each new name is still held by another user of the set.
/// Among these linked entries, the users whose renames can all be written once the set gives
/// its names up (every new name free, or held by another user of the set, and wanted by one
/// entry only) get a transient name first; the caller then applies the entries, and
/// [`restore_names`] gives back the old name of any whose entry then failed. Returns
/// `(user id, old userName)` of the users renamed so.
pub(super) fn free_names_for_renames(
    conn: &mut Tx,
    entries: &[(&Entry, &Link)],
    at: NaiveDateTime,
) -> Result<Vec<(String, String)>> {
    use std::collections::{HashMap, HashSet};
    let mut renames: HashMap<String, (StoredUser, UserName)> = HashMap::new();
    for (entry, link) in entries {
        let current = user(conn, &link.user_id)?;
        // A name the check refuses frees nothing: the entry's own write fails and says why.
        let Ok(target) = UserName::parse(&entry.user_name) else { continue };
        if UserName::key_of(current.user_name()) != target.key() {
            renames.insert(current.id.clone(), (current, target));
        }
    }
    let mut holders: HashMap<UserName, Option<String>> = HashMap::new();
    for (_, target) in renames.values() {
        if !holders.contains_key(target) {
            holders.insert(target.clone(), store_users::find_by_user_name(conn, target.as_str())?.map(|u| u.id));
        }
    }
    loop {
        let mut wanted: HashMap<UserName, usize> = HashMap::new();
        for (_, target) in renames.values() {
            *wanted.entry(target.clone()).or_default() += 1;
        }
        let ids: HashSet<String> = renames.keys().cloned().collect();
        let before = renames.len();
        renames
            .retain(|id, (_, target)| wanted[target] == 1 && holders[target].as_ref().is_none_or(|h| h != id && ids.contains(h)));
        if renames.len() == before {
            break;
        }
    }
    let wanted: HashSet<&str> = renames.values().map(|(_, t)| t.key()).collect();
    let mut freed = Vec::new();
    for (id, (current, _)) in &renames {
        if !wanted.contains(UserName::key_of(current.user_name()).as_str()) {
            continue;
        }
        let mut body = Map::clone(&current.body);
        body.insert("userName".into(), serde_json::Value::String(format!("{TRANSIENT_NAME}{id}")));
        freed.push((id.clone(), current.user_name().to_string()));
        store_users::update(conn, store_users::Update::new(current.clone(), body), at)
            .map_err(|e| write_error(e, &format!("user {id}")))?;
    }
    Ok(freed)
}

/// Gives users still holding a transient name (their entry failed) their old name back, where
/// it is still free; returns the ids of those that could not get it back.
pub(super) fn restore_names(conn: &mut Tx, freed: &[(String, String)], at: NaiveDateTime) -> Result<Vec<String>> {
    let mut stuck = Vec::new();
    for (id, name) in freed {
        let current = user(conn, id)?;
        if current.user_name().starts_with(TRANSIENT_NAME) {
            let mut body = Map::clone(&current.body);
            body.insert("userName".into(), serde_json::Value::String(name.clone()));
            let restored = conn.savepoint(|c| {
                store_users::update(c, store_users::Update::new(current, body), at).map_err(|e| write_error(e, id))
            });
            match restored {
                Ok(_) => {}
                Err(e) if e.is_conflict() => stuck.push(id.clone()),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(stuck)
}

fn user(conn: &mut DbConn, id: &str) -> Result<StoredUser> {
    store_users::get(conn, id)?.ok_or_else(|| Error::NotFound(format!("no user with id {id}")))
}

fn write_error(e: WriteError, what: &str) -> Error {
    match e {
        WriteError::UserNameTaken => Error::taken(format!("{what}: userName is already taken by another user")),
        WriteError::VersionMismatch => Error::conflict(format!("{what}: changed by another writer meanwhile")),
        WriteError::NotFound => Error::NotFound(format!("{what}: the user no longer exists")),
        WriteError::Store(e) => e.into(),
    }
}
