//! The writing half of a run, on a blocking thread: batches of entries in, domain transactions
//! out. Its input is a stream of [`Batch`]es, whatever reads them: the paged search of the whole
//! directory today, a change feed (RFC 4533) later. It asks the directory (whether contested
//! keys still exist) only between transactions, never inside one.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;

use super::mapping::{MapError, Mapped, Mark};
use super::reader::KeyProbe;
use super::report::{Action, Report, RunError};
use crate::config;
use crate::domain::directory::{is_deferrable, safety, Change, Counts, Deactivation, Entry, Failing, Session, Todo};

/// What a reader hands the writer: entries as read, each mapped or not (an entry that cannot
/// be mirrored is still in the directory: its user stays).
pub type Batch = Vec<Result<Mapped, MapError>>;

/// Runs in a row that may fail to write an entry at one change before the incremental mark
/// stops waiting for it (the entry is then quarantined: still retried and reported each run).
const QUARANTINE_AFTER: i64 = 3;
/// Deactivations per transaction.
const DEACTIVATE_BATCH: usize = 500;

pub struct Writer {
    pub session: Session,
    cfg: std::sync::Arc<config::Ldap>,
    dry_run: bool,
    /// Asks the directory whether keys still exist (between transactions).
    probe: KeyProbe,
    /// Keys of every entry read: what a full run did not see is gone from the directory.
    pub seen: HashSet<String>,
    pub high_water: Option<Mark>,
    /// The lowest mark of an entry whose write failed (and is not quarantined): the next
    /// incremental run reads from there.
    pub failed_mark: Option<Mark>,
    /// Entries read without a key (`id_attribute`).
    unkeyed: usize,
    pub counts: Counts,
    pub report: Report,
    /// DNs whose flag is to be removed once the read is done: applied in this run, or applied
    /// by an earlier one that could not clear it (seen again at the same mark).
    pub to_clear: Vec<String>,
    /// Entries that ran into a userName conflict: done again together at the end of the read,
    /// when every other rename of the run is known (a swap of two uids settles then).
    deferred: Vec<(Entry, Option<Mark>)>,
    /// Kinds of dropped values reported already (once per attribute per run).
    dropped_reported: HashSet<String>,
    /// Entries whose write failed in earlier runs, by key.
    failing: HashMap<String, Failing>,
    /// The change marks of the entries of the batch being written, by key.
    marks: HashMap<String, Mark>,
}

impl Writer {
    pub fn new(
        session: Session,
        cfg: std::sync::Arc<config::Ldap>,
        dry_run: bool,
        probe: KeyProbe,
        failing: Vec<Failing>,
    ) -> Self {
        Writer {
            session,
            cfg,
            dry_run,
            probe,
            seen: HashSet::new(),
            high_water: None,
            failed_mark: None,
            unkeyed: 0,
            counts: Counts::default(),
            report: Report::default(),
            to_clear: Vec::new(),
            deferred: Vec::new(),
            dropped_reported: HashSet::new(),
            failing: failing.into_iter().map(|f| (f.entry_key.clone(), f)).collect(),
            marks: HashMap::new(),
        }
    }

    /// Writes every batch received; then, after a complete read, the deferred entries.
    /// `everything`: the reader reads the whole directory (a full run), so every link is read at
    /// once, while its search begins (see `Session::read_links`).
    pub fn consume(mut self, mut rx: mpsc::Receiver<Batch>, everything: bool) -> Self {
        let mut failed = false;
        if everything {
            if let Err(e) = self.session.read_links() {
                self.report.fatal(RunError::Database(e));
                failed = true;
            }
        }
        while let Some(batch) = rx.blocking_recv().filter(|_| !failed) {
            if let Err(e) = self.write_batch(batch) {
                self.report.fatal(e);
                failed = true;
                break;
            }
        }
        // The read may have stopped short (the reader records why); the deferred entries are
        // done again only after a complete read.
        if !failed && !self.deferred.is_empty() && !self.probe.stopping() {
            let deferred = std::mem::take(&mut self.deferred);
            if let Err(e) = self.write_again(deferred) {
                self.report.fatal(e);
            }
        }
        let _ = self.session.batches_done();
        self
    }

    fn clearing(&self) -> bool {
        self.cfg.mfa_reset.as_ref().is_some_and(|f| f.clear) && !self.dry_run
    }

    fn write_batch(&mut self, batch: Batch) -> Result<(), RunError> {
        let mut entries = Vec::with_capacity(batch.len());
        self.marks.clear();
        for item in batch {
            match item {
                Ok(Mapped { entry, change, dropped }) => {
                    // Read twice in one run: a failing entry retried after the search that
                    // returned it already (once is enough), or two entries with one key (an
                    // id_attribute that is not unique): the first one counts.
                    if !self.seen.insert(entry.key.clone()) {
                        if !self.failing.contains_key(&entry.key) {
                            self.report.error(format!(
                                "{}: another entry read in this run has the same {} ({}); skipped",
                                entry.dn, self.cfg.id_attribute, entry.key
                            ));
                        }
                        continue;
                    }
                    if let Some(change) = change {
                        if self.high_water.as_ref().is_none_or(|h| &change > h) {
                            self.high_water = Some(change.clone());
                        }
                        self.marks.insert(entry.key.clone(), change);
                    }
                    for d in dropped {
                        if self.dropped_reported.insert(d.key) {
                            self.report.error(d.message);
                        }
                    }
                    entries.push(entry);
                }
                Err(e) => {
                    // The entry is in the directory even if it cannot be mirrored: its user
                    // stays. Without a key, the run cannot tell whose it is: no deactivation.
                    match e.key {
                        Some(key) => {
                            self.seen.insert(key);
                        }
                        None => self.unkeyed += 1,
                    }
                    self.report.error(e.message);
                }
            }
        }
        let failing = &self.failing;
        let sorted = self.session.sort(entries, &|key| failing.contains_key(key))?;
        self.counts.unchanged += sorted.unchanged;
        if self.clearing() {
            self.to_clear.extend(sorted.to_clear.into_iter().map(|e| e.dn));
        }
        if !sorted.todo.is_empty() {
            self.write_entries(sorted.todo, false)?;
        }
        Ok(self.session.progress(self.counts)?)
    }

    /// The deferred entries, with their links read afresh, as one batch whose renames are
    /// applied as a whole.
    fn write_again(&mut self, deferred: Vec<(Entry, Option<Mark>)>) -> Result<(), RunError> {
        let mut entries = Vec::with_capacity(deferred.len());
        self.marks.clear();
        for (entry, mark) in deferred {
            if let Some(m) = mark {
                self.marks.insert(entry.key.clone(), m);
            }
            entries.push(entry);
        }
        let todo = self.session.relink(entries)?;
        self.write_entries(todo, true)?;
        Ok(self.session.progress(self.counts)?)
    }

    /// Writes the entries that changed (see `Session::write`), having asked the directory
    /// first, outside the transaction, whether the entries their claims contest still exist.
    /// `again`: the deferred entries at the end of the read, whose failures are final.
    fn write_entries(&mut self, todo: Vec<Todo>, again: bool) -> Result<(), RunError> {
        let seen = &self.seen;
        let batch = self.session.prepare(todo, &|key| seen.contains(key))?;
        // An error here fails the run: guessing either way would hand a user to the wrong
        // entry or report a false conflict.
        let absent = self.probe.absent(&batch.contested)?;
        let outcome = self.session.write(batch, &absent, again, self.counts)?;
        self.counts = self.counts + outcome.counts;
        let clearing = self.clearing();
        let (mut failed, mut written) = (Vec::new(), Vec::new());
        for (Todo { entry, .. }, result) in outcome.results {
            match result {
                Ok(applied) => {
                    if self.dry_run {
                        let action = match applied.change {
                            Change::Created => Some("create"),
                            Change::Updated => Some("update"),
                            Change::Reactivated => Some("reactivate"),
                            Change::Unchanged => None,
                        };
                        let (user_name, dn) = (entry.user_name.as_str(), entry.dn.as_str());
                        if let Some(action) = action {
                            self.report.action(Action::Entry { action, user_name, dn });
                        }
                        if applied.reset {
                            self.report.action(Action::Entry { action: "reset_mfa", user_name, dn });
                        }
                    }
                    if self.failing.contains_key(&entry.key) {
                        written.push(entry.key.clone());
                    }
                    if applied.reset && clearing {
                        self.to_clear.push(entry.dn);
                    }
                }
                Err(e) if is_deferrable(&e) && !again => {
                    let mark = self.marks.remove(&entry.key);
                    self.deferred.push((entry, mark));
                }
                Err(e) => {
                    log_store_cause(&entry.dn, &e);
                    let mark = self.marks.get(&entry.key).cloned();
                    failed.push(self.failure(&entry, mark, e.to_string()));
                }
            }
        }
        if !self.dry_run && (!failed.is_empty() || !written.is_empty()) {
            self.session.save_failing(&failed, &written)?;
        }
        for key in written {
            self.failing.remove(&key);
        }
        for f in failed {
            self.failing.insert(f.entry_key.clone(), f);
        }
        Ok(())
    }

    /// Reports an entry whose write failed and counts the runs in a row it failed at this
    /// change: until `QUARANTINE_AFTER` the incremental mark waits for it, then it is
    /// quarantined (retried and reported each run, no longer holding the mark back).
    fn failure(&mut self, entry: &Entry, change: Option<Mark>, error: String) -> Failing {
        let mark = change.as_ref().map(Mark::encode);
        let before = self.failing.get(&entry.key).filter(|f| f.change_mark == mark).map_or(0, |f| f.failures);
        let failures = before + 1;
        if failures < QUARANTINE_AFTER {
            if let Some(m) = change {
                if self.failed_mark.as_ref().is_none_or(|f| &m < f) {
                    self.failed_mark = Some(m);
                }
            }
            self.report.error(error.clone());
        } else {
            self.report.error(format!(
                "{error} (quarantined: failed in {failures} runs in a row at this change; incremental runs no longer wait for it, \
                 and every run retries it)"
            ));
        }
        Failing { entry_key: entry.key.clone(), dn: entry.dn.clone(), change_mark: mark, failures, error }
    }

    /// After a complete full read: deactivates the users whose entries were not seen, unless
    /// that is more than `[ldap.safety]` allows. The directory owns `active` for its users: a
    /// user re-activated by SCIM while its entry is gone is deactivated again by every full
    /// run. Only real deactivations (users active now) count against the limit.
    pub fn deactivate_missing(&mut self, allow: bool) -> Result<(), RunError> {
        let missing = self.session.missing(&self.seen)?;
        if self.unkeyed > 0 && !(missing.active.is_empty() && missing.inactive.is_empty()) {
            return Err(RunError::Unkeyed { count: self.unkeyed, attribute: self.cfg.id_attribute.clone() });
        }
        let safety = &self.cfg.safety;
        let limit = safety::deactivation_limit(missing.present, safety.max_deactivate_percent, safety.max_deactivate);
        if !safety::may_deactivate(missing.active.len(), limit, allow) {
            return Err(RunError::MassDeactivation {
                count: missing.active.len(),
                present: missing.present,
                limit,
                percent: safety.max_deactivate_percent,
                max: safety.max_deactivate.map_or("unset".to_string(), |n| n.to_string()),
            });
        }
        // Entries gone whose failures were kept: nothing left to retry.
        if !self.dry_run {
            let gone: Vec<String> = self.failing.keys().filter(|k| !self.seen.contains(*k)).cloned().collect();
            if !gone.is_empty() {
                self.session.save_failing(&[], &gone)?;
            }
        }
        self.deactivate(missing)
    }

    /// Deactivates these users (the active ones; the others are marked gone).
    pub fn deactivate(&mut self, missing: Deactivation) -> Result<(), RunError> {
        let mut ids = missing.active;
        ids.extend(missing.inactive);
        for chunk in ids.chunks(DEACTIVATE_BATCH) {
            let results = self.session.deactivate(chunk)?;
            for (id, r) in chunk.iter().zip(results) {
                match r {
                    Ok(true) => {
                        self.counts.deactivated += 1;
                        if self.dry_run {
                            self.report.action(Action::Deactivate { user_id: id });
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        log_store_cause(id, &e);
                        self.report.error(format!("cannot deactivate user {id}: {e}"));
                    }
                }
            }
            self.session.progress(self.counts)?;
        }
        Ok(())
    }
}

/// The run's record shows what failed, which API clients read; why the store failed goes to
/// the log only.
fn log_store_cause(what: &str, e: &crate::domain::Error) {
    if matches!(e, crate::domain::Error::Store(_) | crate::domain::Error::Busy(_)) {
        tracing::warn!(entry = %what, error = %crate::logging::chain(e), "sync write failed");
    }
}
