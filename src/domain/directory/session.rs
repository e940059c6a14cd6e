//! The writing half of a sync run ([`Session`]): its batches sorted against the links, written
//! in transactions that renew the run's lease, and the users whose entries are gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::entry::{decide_flag, Entry, FlagDecision};
use super::mirror::{self, Applied};
use super::run::Counts;
use super::runs::LEASE;
use crate::clock::{self, Clock};
use crate::domain::audit::Actor;
use crate::domain::Result as DomainResult;
use crate::store::directory::{self as stored, Failing, Link};
use crate::store::{self, PooledConn};

/// How a step of a run's writing failed: the run fails with it.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the sync lease was lost (another process took it over); stopping")]
    LeaseLost,
    #[error("{0}")]
    Store(#[from] crate::domain::Error),
    /// A step of a batch that is not an entry's failed (the batch is not written).
    #[error("database: {0}")]
    Failed(crate::domain::Error),
}

impl From<diesel::result::Error> for SessionError {
    fn from(e: diesel::result::Error) -> Self {
        SessionError::Store(e.into())
    }
}

impl From<store::Error> for SessionError {
    fn from(e: store::Error) -> Self {
        SessionError::Store(e.into())
    }
}

/// An entry to write, with its link if it has one.
#[derive(Debug)]
pub struct Todo {
    pub entry: Entry,
    link: Option<Link>,
}

/// A batch sorted out before it is written.
#[derive(Debug, Default)]
pub struct Sorted {
    /// Entries as last written (nothing to do).
    pub unchanged: i64,
    /// Entries as last written whose flag was applied at this setting but not cleared yet (a
    /// read-only bind, or a run that stopped before clearing it): only clearing is left.
    pub to_clear: Vec<Entry>,
    /// The entries to write.
    pub todo: Vec<Todo>,
}

/// A batch ready for its transaction: linked entries first (a name one of them gives up is
/// then free for a new entry), the positions of the certainly new users, and the keys whose
/// presence in the directory the caller must settle first (outside any transaction).
#[derive(Debug)]
pub struct EntryWrite {
    todo: Vec<Todo>,
    fresh: Vec<usize>,
    /// Keys of other entries linked to users that new entries would claim.
    pub contested: Vec<String>,
}

/// What a batch did: one result per entry, in the order given.
pub struct WriteOutcome {
    pub results: Vec<(Todo, crate::domain::Result<Applied>)>,
    /// What the batch added to the counts.
    pub counts: Counts,
}

/// Users a complete full read did not see.
#[derive(Debug, Default)]
pub struct Deactivation {
    /// Users with a link whose entry is present (the safety limit's base).
    pub present: i64,
    /// Active users to deactivate.
    pub active: Vec<String>,
    /// Inactive users not yet known to be gone: to be marked so.
    pub inactive: Vec<String>,
}

impl Deactivation {
    /// Adds the users of these links whose entries are gone: the active to deactivate, the
    /// inactive not yet marked gone to mark.
    fn sort(&mut self, gone: impl IntoIterator<Item = stored::LinkPresence>) {
        for (id, _, missing, active) in gone {
            if active {
                self.active.push(id);
            } else if !missing {
                self.inactive.push(id);
            }
        }
    }
}

/// The fingerprints of the settled links of `states` ([`stored::link_states`]) by entry key.
fn settled_fingerprints(states: Vec<(String, String, bool)>) -> HashMap<String, Option<String>> {
    states.into_iter().map(|(key, fingerprint, settled)| (key, settled.then_some(fingerprint))).collect()
}

/// The writing half of a run: its connection, its lease, its clock.
pub struct Session {
    conn: PooledConn,
    run_id: String,
    lease_for: chrono::Duration,
    clock: Arc<dyn Clock>,
    actor: Actor,
    dry_run: bool,
    /// Every link, when read up front (see [`Session::read_links`]): the fingerprint of each
    /// entry key whose link is settled, `None` for the others. Else each batch asks for its own.
    links: Option<HashMap<String, Option<String>>>,
}

/// The end of a batch transaction: a dry run rolls back what it did; a batch in which an entry
/// failed is done again with savepoints; a run that lost its lease writes nothing more.
enum TxEnd<T> {
    Rollback(T),
    Retry,
    Fail(SessionError),
}

impl<T> From<diesel::result::Error> for TxEnd<T> {
    fn from(e: diesel::result::Error) -> Self {
        TxEnd::Fail(e.into())
    }
}

impl Session {
    pub(super) fn new(
        conn: PooledConn,
        run_id: &str,
        lease_for: chrono::Duration,
        clock: Arc<dyn Clock>,
        actor: Actor,
        dry_run: bool,
    ) -> Self {
        Session { conn, run_id: run_id.to_string(), lease_for, clock, actor, dry_run, links: None }
    }

    fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Sorts a batch: entries whose link is settled and whose fingerprint (mapped values and
    /// DN) is the one last written need nothing; only the others get their full link read.
    /// `failing`: entries whose write failed before are written again whatever they look like.
    pub fn sort(&mut self, entries: Vec<Entry>, failing: &dyn Fn(&str) -> bool) -> DomainResult<Sorted> {
        let asked;
        let links = match &self.links {
            Some(all) => all,
            None => {
                let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                asked = settled_fingerprints(stored::link_states(&mut self.conn, Some(&keys))?);
                &asked
            }
        };
        let settled = |e: &Entry| links.get(&e.key).is_some_and(|f| f.as_ref() == Some(&e.fingerprint));
        let mut sorted = Sorted::default();
        let (unchanged, changed): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.flag.is_none() && settled(e) && !failing(&e.key));
        sorted.unchanged = unchanged.len() as i64;
        let keys: Vec<&str> = changed.iter().map(|e| e.key.as_str()).collect();
        let mut links: HashMap<String, (Link, i64)> =
            stored::links_by_key(&mut self.conn, &keys)?.into_iter().map(|(l, v)| (l.entry_key.clone(), (l, v))).collect();
        for entry in changed {
            let link = links.remove(&entry.key);
            let untouched = link.as_ref().is_some_and(|(l, version)| {
                l.fingerprint == entry.fingerprint
                    && *version == l.synced_version
                    && l.missing_since.is_none()
                    && decide_flag(entry.flag.as_deref(), l.flag_mark.as_deref()) == FlagDecision::AlreadyApplied
            });
            if untouched {
                sorted.unchanged += 1;
                sorted.to_clear.push(entry);
            } else {
                sorted.todo.push(Todo { entry, link: link.map(|(l, _)| l) });
            }
        }
        Ok(sorted)
    }

    /// Reads every link at once, for a run that reads the whole directory: its batches then
    /// sort without a query each, and [`Session::missing`] asks only about the links whose
    /// entries it did not see (a no-change run of 100,000 entries spent a fifth of its time in
    /// the batches' queries and a tenth reading every link again at its end). The links are as
    /// the run began: a user changed through SCIM meanwhile is written again by the next run,
    /// as one changed just after its batch's query would be.
    pub fn read_links(&mut self) -> DomainResult<()> {
        self.links = Some(settled_fingerprints(stored::link_states(&mut self.conn, None)?));
        Ok(())
    }

    /// Entries to write again (deferred), with their links read afresh.
    pub fn relink(&mut self, entries: Vec<Entry>) -> DomainResult<Vec<Todo>> {
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let mut links: HashMap<String, Link> =
            stored::links_by_key(&mut self.conn, &keys)?.into_iter().map(|(l, _)| (l.entry_key.clone(), l)).collect();
        Ok(entries
            .into_iter()
            .map(|entry| {
                let link = links.remove(&entry.key);
                Todo { entry, link }
            })
            .collect())
    }

    /// Readies a batch for [`Session::write`]. `read_in_run`: keys this run read (present,
    /// whatever the store says: they need no asking).
    pub fn prepare(&mut self, mut todo: Vec<Todo>, read_in_run: &dyn Fn(&str) -> bool) -> Result<EntryWrite, SessionError> {
        todo.sort_by_key(|t| t.link.is_none());
        let fresh = fresh_entries(&mut self.conn, &todo)?;
        let fresh_set: HashSet<usize> = fresh.iter().copied().collect();
        let claimers: Vec<&Entry> =
            todo.iter().enumerate().filter(|(i, t)| t.link.is_none() && !fresh_set.contains(i)).map(|(_, t)| &t.entry).collect();
        let contested = if claimers.is_empty() {
            Vec::new()
        } else {
            mirror::contested_keys(&mut self.conn, &claimers)
                .map_err(SessionError::Failed)?
                .into_iter()
                .filter(|k| !read_in_run(k))
                .collect()
        };
        Ok(EntryWrite { todo, fresh, contested })
    }

    /// Writes a batch in one transaction, a savepoint each (one bad entry does not undo the
    /// others), with the run's counts (`before`, plus the batch's: so that a run killed after the
    /// commit shows the resets it committed). `absent`: the contested keys the directory no
    /// longer has; any other key a claim meets counts as present (the entry is reported,
    /// nobody's user taken). `again`: the deferred entries at the end of the read, whose renames
    /// are applied as a whole.
    pub fn write(
        &mut self,
        batch: EntryWrite,
        absent: &HashSet<String>,
        again: bool,
        before: Counts,
    ) -> Result<WriteOutcome, SessionError> {
        let at = self.now();
        let EntryWrite { todo, fresh, .. } = batch;
        let mut key_in_directory = |key: &str| !absent.contains(key);
        let (actor, dry_run, run_id, lease_until) = (&self.actor, self.dry_run, &self.run_id, at + self.lease_for);
        // First the new users in a few multi-row statements and the others one by one, without
        // savepoints (each costs SQLite a statement journal); if anything fails, the batch is
        // rolled back and done again entry by entry with a savepoint each, so that only the
        // failing entries are lost.
        let mut attempt = |conn: &mut PooledConn, savepoints: bool| {
            store::write_tx(conn, |tx| {
                // First (and as the write that takes the lock): still ours to run?
                if !stored::renew_lease(tx, LEASE, run_id, lease_until)? {
                    return Err(TxEnd::Fail(SessionError::LeaseLost));
                }
                let freed = if again {
                    let linked: Vec<(&Entry, &Link)> =
                        todo.iter().filter_map(|t| t.link.as_ref().map(|l| (&t.entry, l))).collect();
                    mirror::free_names_for_renames(tx, &linked, at).map_err(|e| TxEnd::Fail(SessionError::Failed(e)))?
                } else {
                    Vec::new()
                };
                let mut results: Vec<Option<crate::domain::Result<Applied>>> = todo.iter().map(|_| None).collect();
                if !savepoints && !fresh.is_empty() {
                    let entries: Vec<&Entry> = fresh.iter().map(|&i| &todo[i].entry).collect();
                    match mirror::create_many(tx, &entries, actor, at) {
                        Ok(applied) => {
                            for (&i, a) in fresh.iter().zip(applied) {
                                results[i] = Some(Ok(a));
                            }
                        }
                        Err(_) => return Err(TxEnd::Retry),
                    }
                }
                for (t, slot) in todo.iter().zip(results.iter_mut()) {
                    if slot.is_some() {
                        continue;
                    }
                    let mut apply =
                        |c: &mut store::Tx| mirror::apply_entry(c, &t.entry, t.link.as_ref(), &mut key_in_directory, actor, at);
                    let r = if savepoints { tx.savepoint(apply) } else { apply(tx) };
                    if r.is_err() && !savepoints {
                        return Err(TxEnd::Retry);
                    }
                    *slot = Some(r);
                }
                if !freed.is_empty() {
                    let stuck = mirror::restore_names(tx, &freed, at).map_err(|e| TxEnd::Fail(SessionError::Failed(e)))?;
                    for id in stuck {
                        tracing::warn!(user = %id, "a user whose rename failed could not get its old userName back");
                    }
                }
                let results: Vec<_> = results.into_iter().map(|r| r.expect("every entry has a result")).collect();
                let counts = counts_of(&results);
                if dry_run {
                    return Err(TxEnd::Rollback((results, counts)));
                }
                // The counts go with what they count.
                stored::save_progress(tx, run_id, &(before + counts).progress())?;
                Ok((results, counts))
            })
        };
        let outcome = match attempt(&mut self.conn, false) {
            Err(TxEnd::Retry) => attempt(&mut self.conn, true),
            other => other,
        };
        let (results, counts) = match outcome {
            Ok(r) | Err(TxEnd::Rollback(r)) => r,
            Err(TxEnd::Fail(e)) => return Err(e),
            Err(TxEnd::Retry) => unreachable!("the second attempt has savepoints"),
        };
        Ok(WriteOutcome { results: todo.into_iter().zip(results).collect(), counts })
    }

    /// The batches are written: the connection's cache shrinks back (what the run reads after,
    /// the users it did not see, it reads once; the connection returns to the pool after the run,
    /// see the `Drop` below).
    pub fn batches_done(&mut self) -> DomainResult<()> {
        Ok(store::bulk_cache(&mut self.conn, false)?)
    }

    /// Records the counts so far (a running run shows its progress) and renews the lease.
    pub fn progress(&mut self, counts: Counts) -> Result<(), SessionError> {
        let until = self.now() + self.lease_for;
        let (run_id, dry_run) = (&self.run_id, self.dry_run);
        store::write_tx(&mut self.conn, |tx| {
            if !stored::renew_lease(tx, LEASE, run_id, until)? {
                return Err(SessionError::LeaseLost);
            }
            if !dry_run {
                stored::save_progress(tx, run_id, &counts.progress())?;
            }
            Ok(())
        })
    }

    /// Records these failures (replacing earlier ones of the same keys) and forgets `written`
    /// (written at last, or gone from the directory).
    pub fn save_failing(&mut self, failed: &[Failing], written: &[String]) -> DomainResult<()> {
        Ok(store::write_tx(&mut self.conn, |tx| stored::save_failing(tx, failed, written))?)
    }

    /// The users whose entries a complete read of the directory did not see (`seen`: the keys
    /// it read). Asks the store only about those.
    pub fn missing(&mut self, seen: &HashSet<String>) -> DomainResult<Deactivation> {
        let unseen: Vec<String> = match &self.links {
            // Links made since are this run's, of entries it saw.
            Some(links) => links.keys().filter(|k| !seen.contains(*k)).cloned().collect(),
            None => {
                stored::link_states(&mut self.conn, None)?.into_iter().map(|(k, _, _)| k).filter(|k| !seen.contains(k)).collect()
            }
        };
        self.departed(&unseen)
    }

    /// The users of these entry keys (entries the change feed says are gone), as
    /// [`Session::missing`] sorts them.
    pub fn departed(&mut self, keys: &[String]) -> DomainResult<Deactivation> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut out = Deactivation { present: stored::count_present(&mut self.conn)?, ..Deactivation::default() };
        out.sort(stored::presence_of_keys(&mut self.conn, &keys)?);
        Ok(out)
    }

    /// Deactivates these users (or marks them gone), in one transaction with a savepoint each;
    /// returns for each whether it was active.
    pub fn deactivate(&mut self, ids: &[String]) -> Result<Vec<crate::domain::Result<bool>>, SessionError> {
        let at = self.now();
        let (run_id, lease_until, dry_run, actor) = (&self.run_id, at + self.lease_for, self.dry_run, &self.actor);
        let outcome = store::write_tx(&mut self.conn, |tx| {
            if !stored::renew_lease(tx, LEASE, run_id, lease_until)? {
                return Err(TxEnd::Fail(SessionError::LeaseLost));
            }
            let results: Vec<_> = ids.iter().map(|id| tx.savepoint(|c| mirror::deactivate(c, id, actor, at))).collect();
            if dry_run {
                Err(TxEnd::Rollback(results))
            } else {
                Ok(results)
            }
        });
        match outcome {
            Ok(r) | Err(TxEnd::Rollback(r)) => Ok(r),
            Err(TxEnd::Fail(e)) => Err(e),
            Err(TxEnd::Retry) => unreachable!("deactivations use savepoints"),
        }
    }
}

/// The session's connection goes back to the pool as the pool made it.
impl Drop for Session {
    fn drop(&mut self) {
        // A failure leaves a connection that reads without the memory map: slower, not wrong.
        if let Err(e) = store::bulk_done(&mut self.conn) {
            tracing::warn!(error = %e, "cannot give the sync writer's connection its usual settings back");
        }
    }
}

/// Whether an entry's failure is one the run should retry at the end of its read, when every
/// other rename of the run is known (a swap of two uids settles then).
pub fn is_deferrable(e: &crate::domain::Error) -> bool {
    e.is_conflict()
}

/// What these entry results add to a run's counts.
fn counts_of(results: &[crate::domain::Result<Applied>]) -> Counts {
    use super::mirror::Change;
    let mut c = Counts::default();
    for applied in results.iter().flatten() {
        match applied.change {
            Change::Created => c.created += 1,
            Change::Updated => c.updated += 1,
            Change::Reactivated => c.reactivated += 1,
            Change::Unchanged => c.unchanged += 1,
        }
        c.resets_applied += i64::from(applied.reset);
    }
    c
}

/// Positions of the entries that are certainly new users: no link, and neither their userName
/// nor their externalId taken (in the store or earlier in the batch).
fn fresh_entries(conn: &mut store::DbConn, todo: &[Todo]) -> DomainResult<Vec<usize>> {
    use crate::store::users::{taken_external_ids, taken_user_name_keys, user_name_key};
    let unlinked: Vec<usize> = (0..todo.len()).filter(|&i| todo[i].link.is_none()).collect();
    let names: Vec<String> = unlinked.iter().map(|&i| user_name_key(&todo[i].entry.user_name)).collect();
    let mut taken = taken_user_name_keys(conn, &names)?;
    let ids: Vec<String> = unlinked.iter().filter_map(|&i| todo[i].entry.external_id.clone()).collect();
    let mut taken_ids = taken_external_ids(conn, &ids)?;
    let mut fresh = Vec::with_capacity(unlinked.len());
    for (&i, name) in unlinked.iter().zip(names) {
        let external_id = &todo[i].entry.external_id;
        if taken.contains(&name) || external_id.as_ref().is_some_and(|x| taken_ids.contains(x)) {
            continue;
        }
        taken.insert(name);
        if let Some(x) = external_id {
            taken_ids.insert(x.clone());
        }
        fresh.push(i);
    }
    Ok(fresh)
}
