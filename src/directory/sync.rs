//! One sync run: stream the directory page by page, write each batch in one transaction while
//! the next page is read, then (full runs that read everything) deactivate the users whose
//! entries are gone, within the safety limits. A run that fails part-way deactivates nobody and
//! keeps the last good high-water mark; what it wrote stays. The directory is asked only between
//! transactions, and every wait on it ends when the daemon stops.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ldap3::SearchEntry;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::flags;
use super::ldap::Directory;
use super::mapping::{MapError, Mapped, Mapping, Mark};
use crate::clock::{self, Clock};
use crate::config;
use crate::domain::audit::{Actor, Origin};
use crate::domain::directory::{self as mirror, Change};
use crate::store::directory::{self as runs, Run};
use crate::store::{self, Pool};

const LEASE: &str = "ldap-sync";
/// Entries written per transaction, at least: a commit writes every index page the batch
/// touched, so fewer, larger commits write less (100,000 new users on SQLite: 19.4 s in
/// batches of 500, 15.8 s in batches of 2,000), while the write lock is held for ~0.3 s.
const WRITE_BATCH: usize = 5000;
/// Errors kept per run; more are counted.
const MAX_ERRORS: usize = 1000;
/// Actions listed by a dry run; more are counted.
const MAX_ACTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartedBy {
    #[default]
    Cli,
    Api,
    Schedule,
}

impl StartedBy {
    fn as_str(self) -> &'static str {
        match self {
            StartedBy::Cli => "cli",
            StartedBy::Api => "api",
            StartedBy::Schedule => "schedule",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Read every entry and deactivate the missing; otherwise only entries changed since the
    /// last good run.
    pub full: bool,
    /// Do everything in transactions that are rolled back; touch nothing in LDAP.
    pub dry_run: bool,
    /// Deactivate even beyond `[ldap.safety]` (by hand only).
    pub allow_mass_deactivation: bool,
    pub started_by: StartedBy,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("sync run {0} is already running; try again when it has finished")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A finished (or, for the API, just started) run as the doors show it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run: Run,
    pub dry_run: bool,
    /// What a dry run would do: `{"action","userName","dn"}` (`{"action":"deactivate","userId"}`).
    pub actions: Vec<Value>,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        let mut v = render(&self.run);
        if self.dry_run {
            v["dryRun"] = json!(true);
            v["actions"] = json!(self.actions);
        }
        v
    }
}

/// The JSON of a run (CLI summary, `/api/v1/sync/runs`).
pub fn render(run: &Run) -> Value {
    let time = |t: &chrono::NaiveDateTime| crate::scim::resource::datetime(&t.and_utc());
    json!({
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "startedBy": run.started_by,
        "startedAt": time(&run.started_at),
        "finishedAt": run.finished_at.as_ref().map(time),
        "created": run.created,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "deactivated": run.deactivated,
        "reactivated": run.reactivated,
        "resetsApplied": run.resets_applied,
        "flagsCleared": run.flags_cleared,
        "errors": serde_json::from_str::<Value>(&run.errors).unwrap_or_else(|_| json!([])),
        "durationMs": run.duration_ms,
    })
}

/// Starts and runs syncs; shared by the scheduler, the API and the command line.
pub struct Syncer {
    cfg: Arc<config::Ldap>,
    mapping: Arc<Mapping>,
    pool: Pool,
    clock: Arc<dyn Clock>,
    shutdown: watch::Sender<bool>,
    /// Runs started in the background (API), awaited at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The daemon's runtime, when built inside one: background runs go there, not onto the
    /// HTTP worker that received the request.
    runtime: Option<tokio::runtime::Handle>,
    /// The configured attributes were checked against the directory's schema (once).
    schema_checked: AtomicBool,
}

/// A run that holds the lease and may go.
pub struct Started {
    run: Run,
    options: Options,
}

impl Started {
    pub fn run(&self) -> &Run {
        &self.run
    }
}

impl Syncer {
    pub fn new(cfg: config::Ldap, pool: Pool, clock: Arc<dyn Clock>) -> Result<Self, super::mapping::MappingError> {
        let mapping = Arc::new(Mapping::new(&cfg)?);
        Ok(Syncer {
            cfg: Arc::new(cfg),
            mapping,
            pool,
            clock,
            shutdown: watch::channel(false).0,
            background: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            schema_checked: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &config::Ldap {
        &self.cfg
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells the scheduler and runs in progress to stop: every wait of a run on the directory
    /// ends at once, and the run is recorded as failed, nobody deactivated.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// [`Syncer::stop`], then waits for the runs in progress to record their end.
    pub async fn shutdown(&self) {
        self.stop();
        let tasks: Vec<_> = std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn now(&self) -> chrono::NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// How long a lease lasts without renewal: longer than any wait on the server.
    fn lease_for(&self) -> chrono::Duration {
        chrono::Duration::seconds((self.cfg.timeout as i64 * 4).max(300))
    }

    /// Claims a tick of a schedule for this instance; false when another instance firing at the
    /// same tick has it (or the database cannot say: the tick is then left to the others).
    pub fn claim_tick(&self, full: bool, tick: chrono::DateTime<chrono::Utc>) -> bool {
        let schedule = if full { "full" } else { "incremental" };
        let claimed =
            self.pool.get().map_err(store::Error::from).and_then(|mut c| runs::claim_tick(&mut c, schedule, clock::stored(tick)));
        claimed.unwrap_or_else(|e| {
            tracing::error!(error = %e, schedule, "cannot claim the scheduled sync tick");
            false
        })
    }

    /// Takes the lease (runs never overlap, across processes) and records the run as running.
    pub fn begin(&self, options: Options) -> Result<Started, StartError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now();
        let mut conn = self.pool.get().map_err(store::Error::from)?;
        if !runs::take_lease(&mut conn, LEASE, &id, now, now + self.lease_for())? {
            let holder = runs::lease_holder(&mut conn, LEASE, now)?.unwrap_or_else(|| "(just finished)".into());
            return Err(StartError::Busy(holder));
        }
        let run = Run {
            id,
            kind: if options.full { "full" } else { "incremental" }.into(),
            started_by: options.started_by.as_str().into(),
            status: runs::RUNNING.into(),
            started_at: now,
            errors: "[]".into(),
            ..Run::default()
        };
        let recorded = (|| {
            // Holding the lease, any other `running` row is a run whose process died. A dry run
            // writes no history (it holds the lease only so as not to overlap a real run).
            if !options.dry_run {
                runs::fail_abandoned_runs(&mut conn, now)?;
                runs::insert_run(&mut conn, &run)?;
            }
            Ok::<_, store::Error>(())
        })();
        if let Err(e) = recorded {
            let _ = runs::release_lease(&mut conn, LEASE, &run.id);
            return Err(e.into());
        }
        Ok(Started { run, options })
    }

    /// Runs a started run to its end and records it, in a span of its own.
    pub async fn execute(&self, started: Started) -> Summary {
        let span = Self::span(&started);
        self.execute_in_span(started).instrument(span).await
    }

    async fn execute_in_span(&self, started: Started) -> Summary {
        let clock_start = Instant::now();
        let Started { mut run, options } = started;
        let mut report = Report::default();
        let previous_mark = match self.pool.get().map_err(store::Error::from).and_then(|mut c| runs::last_high_water(&mut c)) {
            Ok(m) => m,
            Err(e) => {
                report.fatal(format!("cannot read the last high-water mark: {e}"));
                None
            }
        };
        let mut high_water = None;
        if report.failed.is_none() {
            match self.read_and_write(&run, options, previous_mark.as_deref(), &mut report).await {
                Ok(writer) => {
                    // Not past an entry whose write failed, nor past now (a bogus future time
                    // on one entry must not stop incremental runs).
                    high_water = match (writer.high_water.clone(), writer.failed_mark.clone()) {
                        (Some(seen), Some(failed)) => Some(seen.min(failed)),
                        (seen, failed) => seen.or(failed),
                    }
                    .map(|m| match m {
                        Mark::Time(t) => Mark::Time(t.min(self.clock.now().format("%Y%m%d%H%M%SZ").to_string())),
                        usn => usn,
                    });
                    writer.counts.record(&mut run);
                }
                Err(counts) => counts.record(&mut run),
            }
        }
        let failed = report.failed.is_some();
        run.status = if failed { runs::FAILED } else { runs::SUCCEEDED }.into();
        // The next incremental run starts from the newest change seen, or where this one did.
        run.high_water = match (high_water.map(|m: Mark| m.encode()), previous_mark) {
            (Some(seen), Some(prev)) if !failed => Some(max_mark(&seen, &prev)),
            (Some(seen), None) if !failed => Some(seen),
            (_, prev) => prev.filter(|_| !failed),
        };
        run.finished_at = Some(self.now());
        run.duration_ms = Some(clock_start.elapsed().as_millis() as i64);
        run.errors = Value::from(report.messages()).to_string();
        // The record and the lease's release commit together: whoever sees the run finished
        // can start the next one at once.
        let recorded = self.pool.get().map_err(store::Error::from).and_then(|mut c| {
            let save = (!options.dry_run).then_some(&run);
            runs::finish_run(&mut c, save, LEASE, &run.id)
        });
        if let Err(e) = recorded {
            tracing::error!(run = %run.id, error = %e, "cannot record the sync run");
            if let Ok(mut c) = self.pool.get() {
                let _ = runs::release_lease(&mut c, LEASE, &run.id);
            }
        }
        if !options.dry_run {
            let m = &crate::metrics::METRICS;
            m.sync_runs.with_label_values(&[run.kind.as_str(), run.status.as_str()]).inc();
            m.sync_duration.with_label_values(&[run.kind.as_str()]).observe(clock_start.elapsed().as_secs_f64());
            for (outcome, n) in [
                ("created", run.created),
                ("updated", run.updated),
                ("unchanged", run.unchanged),
                ("deactivated", run.deactivated),
                ("reactivated", run.reactivated),
                ("reset", run.resets_applied),
            ] {
                m.sync_entries.with_label_values(&[outcome]).inc_by(n.max(0) as u64);
            }
        }
        if failed {
            tracing::warn!(run = %run.id, kind = %run.kind, error = report.failed.as_deref().unwrap_or_default(), "sync run failed");
        } else {
            tracing::info!(
                run = %run.id, kind = %run.kind, created = run.created, updated = run.updated, unchanged = run.unchanged,
                deactivated = run.deactivated, reactivated = run.reactivated, resets = run.resets_applied,
                errors = report.errors.len(), ms = run.duration_ms, dry_run = options.dry_run, "sync run finished"
            );
        }
        Summary { run, dry_run: options.dry_run, actions: report.actions }
    }

    /// [`Syncer::begin`] then [`Syncer::execute`].
    pub async fn run(&self, options: Options) -> Result<Summary, StartError> {
        let started = self.begin(options)?;
        Ok(self.execute(started).await)
    }

    /// The span every log line of a run carries.
    fn span(started: &Started) -> tracing::Span {
        tracing::info_span!("sync_run", id = %started.run.id, kind = %started.run.kind, dry_run = started.options.dry_run)
    }

    /// Starts a run in the background (the API answers at once); its record tells the end.
    pub fn spawn(self: &Arc<Self>, options: Options) -> Result<Run, StartError> {
        let started = self.begin(options)?;
        let run = started.run.clone();
        let me = self.clone();
        let work = async move {
            me.execute(started).await;
        };
        let task = match &self.runtime {
            Some(rt) => rt.spawn(work),
            None => tokio::spawn(work),
        };
        let mut tasks = self.background.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(run)
    }

    pub fn get(&self, id: &str) -> Result<Option<Run>, store::Error> {
        runs::get_run(&mut *self.pool.get()?, id)
    }

    pub fn list(&self, offset: i64, limit: i64) -> Result<(i64, Vec<Run>), store::Error> {
        runs::list_runs(&mut *self.pool.get()?, offset, limit)
    }

    /// Streams the entries into the writer thread; on success returns the writer (whose full
    /// run has also deactivated the missing), else the counts of what was written. Every wait
    /// on the directory ends when the daemon shuts down (the run then fails).
    async fn read_and_write(
        &self,
        run: &Run,
        options: Options,
        since: Option<&str>,
        report: &mut Report,
    ) -> Result<Writer, Counts> {
        let mut shutdown = self.shutdown_signal();
        let mut directory = match until_stopped(&mut shutdown, Directory::connect(self.cfg.clone())).await {
            Ok(d) => d,
            Err(e) => {
                report.fatal(e);
                return Err(Counts::default());
            }
        };
        if !self.schema_checked.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.check_schema(&mut directory, &mut shutdown, report).await {
                report.fatal(e);
                return Err(Counts::default());
            }
        }
        let failing = match self.pool.get().map_err(store::Error::from).and_then(|mut c| runs::failing(&mut c)) {
            Ok(f) => f,
            Err(e) => {
                report.fatal(format!("database: {e}"));
                return Err(Counts::default());
            }
        };
        let filter = match (options.full, since.and_then(|m| self.mapping.since_filter(m, self.cfg.overlap))) {
            (false, Some(since)) => format!("(&{}{since})", self.cfg.user_filter),
            _ => self.cfg.user_filter.clone(),
        };
        // An incremental run also reads the entries that failed before (they may not have
        // changed since, and the mark no longer waits for those quarantined): each run retries
        // and reports them.
        let retry: Vec<String> = if options.full { Vec::new() } else { failing.iter().map(|f| f.entry_key.clone()).collect() };
        let writer = Writer {
            pool: self.pool.clone(),
            mapping: self.mapping.clone(),
            cfg: self.cfg.clone(),
            actor: Actor::new(Origin::Directory, run.id.clone(), None),
            run_id: run.id.clone(),
            options,
            clock: self.clock.clone(),
            lease_for: self.lease_for(),
            runtime: tokio::runtime::Handle::current(),
            directory: directory.clone(),
            shutdown: self.shutdown_signal(),
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
        };
        let (tx, rx) = mpsc::channel::<Vec<Result<Mapped, MapError>>>(2);
        let span = tracing::Span::current();
        let writing = tokio::task::spawn_blocking(move || span.in_scope(|| writer.consume(rx)));
        let batch_size = (self.cfg.page_size as usize).clamp(WRITE_BATCH, 5 * WRITE_BATCH);
        let read: Result<(), String> = async {
            let mut stream = until_stopped(&mut shutdown, directory.search(&filter, self.mapping.attributes())).await?;
            let mut batch = Vec::with_capacity(batch_size);
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = stopping(&mut shutdown) => return Err(STOPPED.to_string()),
                };
                match next {
                    Ok(Some(raw)) => {
                        batch.push(self.mapping.map(&SearchEntry::construct(raw)));
                        if batch.len() >= batch_size {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                            tx.send(full).await.map_err(|_| "the writer stopped".to_string())?;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(format!("the search did not complete: {e}")),
                }
            }
            let done = tokio::select! {
                done = stream.finish() => done,
                _ = stopping(&mut shutdown) => return Err(STOPPED.to_string()),
            };
            done.success().map(|_| ()).map_err(|e| format!("the search did not complete: {e}"))?;
            if !retry.is_empty() {
                let attributes = self.mapping.attributes();
                let again = until_stopped(&mut shutdown, directory.entries_with_keys(&retry, attributes)).await?;
                batch.extend(again.iter().map(|e| self.mapping.map(e)));
            }
            if !batch.is_empty() {
                tx.send(batch).await.map_err(|_| "the writer stopped".to_string())?;
            }
            Ok(())
        }
        .await;
        drop(tx);
        let mut writer = match writing.await {
            Ok(w) => w,
            Err(e) => {
                report.fatal(format!("the writer failed: {e}"));
                return Err(Counts::default());
            }
        };
        report.absorb(&mut writer.report);
        if let Err(e) = read {
            // The writer's own failure, when it has one, is the cause of a "writer stopped".
            if report.failed.is_none() {
                report.fatal(e);
            }
        }
        if report.failed.is_some() {
            self.close(directory, &mut shutdown).await;
            return Err(writer.counts);
        }
        if let Some(flag) = &self.cfg.mfa_reset {
            let outside = flags::outside_filter(&self.cfg.user_filter, &flag.attribute, &flag.value);
            match until_stopped(&mut shutdown, directory.dns(&outside)).await {
                Ok(dns) => {
                    for dn in dns {
                        report.error(format!("{dn}: MFA reset flag not applied: the entry is outside ldap.user_filter"));
                    }
                }
                Err(e) if e == STOPPED => report.fatal(e),
                Err(e) => report.error(format!("cannot look for MFA reset flags outside ldap.user_filter: {e}")),
            }
            if flag.clear && !options.dry_run {
                let dns = std::mem::take(&mut writer.to_clear);
                writer.counts.flags_cleared += self.clear_flags(&directory, dns, &flag.attribute, &mut shutdown, report).await;
            }
        }
        self.close(directory, &mut shutdown).await;
        if report.failed.is_some() {
            return Err(writer.counts);
        }
        if options.full {
            let allow = options.allow_mass_deactivation;
            let span = tracing::Span::current();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = span.in_scope(|| writer.deactivate_missing(allow));
                (writer, outcome)
            })
            .await;
            match result {
                Ok((mut w, outcome)) => {
                    report.absorb(&mut w.report);
                    if let Err(e) = outcome {
                        report.fatal(e);
                        return Err(w.counts);
                    }
                    writer = w;
                }
                Err(e) => {
                    report.fatal(format!("deactivation failed: {e}"));
                    return Err(Counts::default());
                }
            }
        }
        Ok(writer)
    }

    /// Once per process, at its first run: warns (log and run errors) about configured
    /// attributes the directory's schema does not have, a misspelling that would otherwise go
    /// unnoticed (a flag nobody can set, a mapping to nothing). Servers that do not show their
    /// schema are not checked. Errs only when the daemon stops meanwhile.
    async fn check_schema(
        &self,
        directory: &mut Directory,
        shutdown: &mut watch::Receiver<bool>,
        report: &mut Report,
    ) -> Result<(), String> {
        let names = match until_stopped(shutdown, directory.schema_attribute_names()).await {
            Ok(Some(names)) => names,
            Ok(None) => return Ok(()),
            Err(e) if e == STOPPED => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, "cannot read the directory's schema: configured attribute names not checked");
                return Ok(());
            }
        };
        let known = |a: &str| names.contains(&a.to_ascii_lowercase());
        if let Some(flag) = &self.cfg.mfa_reset {
            if !known(&flag.attribute) {
                report.error(format!(
                    "ldap.mfa_reset.attribute: {:?} is not an attribute type of the directory's schema: no entry can carry \
                     the flag, so no MFA reset will ever be applied from LDAP (misspelt?)",
                    flag.attribute
                ));
            }
        }
        for (path, attribute) in self.cfg.mapping() {
            let name = attribute.trim_start_matches('!');
            let name = name.split(';').next().unwrap_or(name);
            if !known(name) {
                report.error(format!(
                    "ldap.attributes.{path:?}: {name:?} is not an attribute type of the directory's schema: it maps to nothing (misspelt?)"
                ));
            }
        }
        Ok(())
    }

    /// Removes the flag from these entries, concurrently over the run's one (multiplexed)
    /// connection, within one deadline for them all (`CLEARING_TIMEOUTS` × `ldap.timeout`): a
    /// stalled directory cannot hold the run for a timeout per flag. Returns how many the
    /// server confirmed; the others are listed, and a deadline (or shutdown) that leaves some
    /// unconfirmed fails the run. A flag left set is cleared by a later run without a second
    /// reset (its mark is remembered).
    async fn clear_flags(
        &self,
        directory: &Directory,
        dns: Vec<String>,
        attribute: &str,
        shutdown: &mut watch::Receiver<bool>,
        report: &mut Report,
    ) -> i64 {
        if dns.is_empty() {
            return 0;
        }
        let bound = self.cfg.timeout * CLEARING_TIMEOUTS;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(bound);
        let slots = Arc::new(tokio::sync::Semaphore::new(CLEARING_CONCURRENCY));
        let mut pending: HashSet<String> = dns.iter().cloned().collect();
        let mut tasks = tokio::task::JoinSet::new();
        for dn in dns {
            let (mut directory, attribute, slots) = (directory.clone(), attribute.to_string(), slots.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let outcome = directory.remove_attribute(&dn, &attribute).await;
                (dn, outcome)
            });
        }
        let mut cleared = 0;
        let mut unanswered = Vec::new();
        let unfinished = loop {
            tokio::select! {
                next = tasks.join_next() => match next {
                    None => break None,
                    Some(Ok((dn, outcome))) => {
                        pending.remove(&dn);
                        match outcome {
                            Ok(()) => cleared += 1,
                            Err(e) if e.answered() => report.error(format!(
                                "{dn}: MFA reset applied but the flag could not be cleared ({e}); it is not applied again until it is set anew"
                            )),
                            // No answer: the server may yet apply it, or not.
                            Err(_) => unanswered.push(dn),
                        }
                    }
                    Some(Err(_)) => {}
                },
                _ = tokio::time::sleep_until(deadline) => break Some(format!(
                    "clearing MFA reset flags did not finish within {bound} s ({CLEARING_TIMEOUTS} × ldap.timeout)"
                )),
                _ = stopping(shutdown) => break Some(STOPPED.to_string()),
            }
        };
        tasks.abort_all();
        let mut left: Vec<String> = pending.into_iter().chain(unanswered).collect();
        if !left.is_empty() {
            left.sort();
            let why = unfinished.unwrap_or_else(|| "the directory did not answer flag removals within ldap.timeout".into());
            report.fatal(format!("{why}: {} of {} flags not confirmed cleared", left.len(), left.len() as i64 + cleared));
            for dn in left {
                report.error(format!(
                    "{dn}: MFA reset applied; clearing the flag was not confirmed by the server (the next run clears it without a second reset)"
                ));
            }
        } else if let Some(why) = unfinished {
            report.fatal(why);
        }
        cleared
    }

    /// Unbinds, unless the daemon stops first (an unbind is not waited for long anyway).
    async fn close(&self, directory: Directory, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = directory.close() => {}
            _ = stopping(shutdown) => {}
        }
    }
}

/// The error of a run interrupted by the daemon's shutdown.
const STOPPED: &str = "stopped: the daemon is shutting down";
/// The whole run's flag clearing may take this many `ldap.timeout`s.
const CLEARING_TIMEOUTS: u64 = 3;
/// Flags cleared at once over the run's connection.
const CLEARING_CONCURRENCY: usize = 32;
/// Runs in a row that may fail to write an entry at one change before the incremental mark
/// stops waiting for it (the entry is then quarantined: still retried and reported each run).
const QUARANTINE_AFTER: i64 = 3;

/// Resolves when the daemon shuts down (never, if it cannot tell).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for a directory operation, unless the daemon shuts down first.
async fn until_stopped<T>(
    shutdown: &mut watch::Receiver<bool>,
    op: impl std::future::Future<Output = Result<T, super::ldap::DirectoryError>>,
) -> Result<T, String> {
    tokio::select! {
        r = op => r.map_err(|e| e.to_string()),
        _ = stopping(shutdown) => Err(STOPPED.to_string()),
    }
}

/// Positions of the entries that are certainly new users: no link, and neither their userName
/// nor their externalId taken (in the store or earlier in the batch).
fn fresh_entries(conn: &mut store::DbConn, todo: &[(Mapped, Option<runs::Link>)]) -> Result<Vec<usize>, store::Error> {
    use crate::store::users::{taken_external_ids, taken_user_name_keys, user_name_key};
    let unlinked: Vec<usize> = (0..todo.len()).filter(|&i| todo[i].1.is_none()).collect();
    let names: Vec<String> = unlinked.iter().map(|&i| user_name_key(&todo[i].0.user_name)).collect();
    let mut taken = taken_user_name_keys(conn, &names)?;
    let ids: Vec<String> = unlinked.iter().filter_map(|&i| todo[i].0.external_id.clone()).collect();
    let mut taken_ids = taken_external_ids(conn, &ids)?;
    let mut fresh = Vec::with_capacity(unlinked.len());
    for (&i, name) in unlinked.iter().zip(names) {
        let external_id = todo[i].0.external_id.clone();
        if taken.contains(&name) || external_id.as_ref().is_some_and(|x| taken_ids.contains(x)) {
            continue;
        }
        taken.insert(name);
        if let Some(x) = external_id {
            taken_ids.insert(x);
        }
        fresh.push(i);
    }
    Ok(fresh)
}

fn max_mark(a: &str, b: &str) -> String {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.max(y).to_string(),
        _ => a.max(b).to_string(),
    }
}

impl Counts {
    /// What these entry results add to a run's counts.
    fn of(results: &[crate::domain::Result<mirror::Applied>]) -> Counts {
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

    fn plus(&self, o: &Counts) -> Counts {
        Counts {
            created: self.created + o.created,
            updated: self.updated + o.updated,
            unchanged: self.unchanged + o.unchanged,
            deactivated: self.deactivated + o.deactivated,
            reactivated: self.reactivated + o.reactivated,
            resets_applied: self.resets_applied + o.resets_applied,
            flags_cleared: self.flags_cleared + o.flags_cleared,
        }
    }

    /// As `save_progress` takes them.
    fn progress(&self) -> [i64; 6] {
        [self.created, self.updated, self.unchanged, self.reactivated, self.resets_applied, self.flags_cleared]
    }

    fn record(&self, run: &mut Run) {
        run.created = self.created;
        run.updated = self.updated;
        run.unchanged = self.unchanged;
        run.deactivated = self.deactivated;
        run.reactivated = self.reactivated;
        run.resets_applied = self.resets_applied;
        run.flags_cleared = self.flags_cleared;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    created: i64,
    updated: i64,
    unchanged: i64,
    deactivated: i64,
    reactivated: i64,
    resets_applied: i64,
    flags_cleared: i64,
}

/// Problems of a run: per-entry errors (the run goes on) and the one that failed it.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<String>,
    dropped: usize,
    failed: Option<String>,
    actions: Vec<Value>,
    actions_dropped: usize,
}

impl Report {
    fn error(&mut self, e: String) {
        tracing::warn!(error = %e, "sync");
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.dropped += 1;
        }
    }

    fn fatal(&mut self, e: String) {
        if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    fn action(&mut self, action: Value) {
        if self.actions.len() < MAX_ACTIONS {
            self.actions.push(action);
        } else {
            self.actions_dropped += 1;
        }
    }

    fn absorb(&mut self, other: &mut Report) {
        for e in other.errors.drain(..) {
            if self.errors.len() < MAX_ERRORS {
                self.errors.push(e);
            } else {
                self.dropped += 1;
            }
        }
        self.dropped += other.dropped;
        if let Some(f) = other.failed.take() {
            self.fatal(f);
        }
        self.actions.append(&mut other.actions);
        self.actions_dropped += other.actions_dropped;
    }

    /// The errors as recorded: the fatal one first.
    fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = self.failed.iter().cloned().collect();
        out.extend(self.errors.iter().cloned());
        if self.dropped > 0 {
            out.push(format!("… and {} more errors", self.dropped));
        }
        out
    }
}

/// The end of a batch transaction: a dry run rolls back what it did; a batch in which an entry
/// failed is done again with savepoints; a run that lost its lease writes nothing more.
enum TxEnd<T> {
    Rollback(T),
    Retry,
    LeaseLost,
    Db(diesel::result::Error),
    /// A step of the batch that is not an entry's failed (the batch is not written).
    Failed(String),
}

const LEASE_LOST: &str = "the sync lease was lost (another process took it over); stopping";

impl<T> From<diesel::result::Error> for TxEnd<T> {
    fn from(e: diesel::result::Error) -> Self {
        TxEnd::Db(e)
    }
}

/// The writing half of a run, on a blocking thread: batches in, transactions out. It asks the
/// directory (whether contested keys still exist) only between transactions, never inside one.
struct Writer {
    pool: Pool,
    mapping: Arc<Mapping>,
    cfg: Arc<config::Ldap>,
    actor: Actor,
    run_id: String,
    options: Options,
    clock: Arc<dyn Clock>,
    lease_for: chrono::Duration,
    runtime: tokio::runtime::Handle,
    /// For settling key conflicts.
    directory: Directory,
    shutdown: watch::Receiver<bool>,
    /// Keys of every entry read: what a full run did not see is gone from the directory.
    seen: HashSet<String>,
    high_water: Option<Mark>,
    /// The lowest mark of an entry whose write failed (and is not quarantined): the next
    /// incremental run reads from there.
    failed_mark: Option<Mark>,
    /// Entries read without a key (`id_attribute`).
    unkeyed: usize,
    counts: Counts,
    report: Report,
    /// DNs whose flag is to be removed once the read is done: applied in this run, or applied
    /// by an earlier one that could not clear it (seen again at the same mark).
    to_clear: Vec<String>,
    /// Entries that ran into a userName conflict: done again together at the end of the read,
    /// when every other rename of the run is known (a swap of two uids settles then).
    deferred: Vec<Mapped>,
    /// Kinds of dropped values reported already (once per attribute per run).
    dropped_reported: HashSet<String>,
    /// Entries whose write failed in earlier runs, by key.
    failing: HashMap<String, runs::Failing>,
}

impl Writer {
    fn consume(mut self, mut rx: mpsc::Receiver<Vec<Result<Mapped, MapError>>>) -> Self {
        let mut conn = match self.pool.get() {
            Ok(c) => c,
            Err(e) => {
                self.report.fatal(format!("database: {e}"));
                return self;
            }
        };
        if let Err(e) = store::bulk_cache(&mut conn, true) {
            self.report.fatal(format!("database: {e}"));
            return self;
        }
        let mut failed = false;
        while let Some(batch) = rx.blocking_recv() {
            if let Err(e) = self.write_batch(&mut conn, batch) {
                self.report.fatal(e);
                failed = true;
                break;
            }
        }
        // The read may have stopped short (the reader records why); the deferred entries are
        // done again only after a complete read.
        if !failed && !self.deferred.is_empty() && !*self.shutdown.borrow() {
            let deferred = std::mem::take(&mut self.deferred);
            if let Err(e) = self.write_again(&mut conn, deferred) {
                self.report.fatal(e);
            }
        }
        let _ = store::bulk_cache(&mut conn, false);
        self
    }

    fn now(&self) -> chrono::NaiveDateTime {
        clock::stored(self.clock.now())
    }

    fn write_batch(&mut self, conn: &mut store::DbConn, batch: Vec<Result<Mapped, MapError>>) -> Result<(), String> {
        let db = |e: store::Error| format!("database: {e}");
        let mut entries = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Ok(m) => {
                    // Read twice in one run: a failing entry retried after the search that
                    // returned it already (once is enough), or two entries with one key (an
                    // id_attribute that is not unique): the first one counts.
                    if !self.seen.insert(m.key.clone()) {
                        if !self.failing.contains_key(&m.key) {
                            self.report.error(format!(
                                "{}: another entry read in this run has the same {} ({}); skipped",
                                m.dn, self.cfg.id_attribute, m.key
                            ));
                        }
                        continue;
                    }
                    if let Some(change) = &m.change {
                        if self.high_water.as_ref().is_none_or(|h| change > h) {
                            self.high_water = Some(change.clone());
                        }
                    }
                    for d in &m.dropped {
                        if self.dropped_reported.insert(d.key.clone()) {
                            self.report.error(d.message.clone());
                        }
                    }
                    entries.push(m);
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
        // Entries whose link is settled and whose fingerprint (mapped values and DN) is the one
        // last written need nothing; only the others get their full link read.
        let keys: Vec<&str> = entries.iter().map(|m| m.key.as_str()).collect();
        let settled: HashMap<String, String> = runs::link_states(conn, &keys)
            .map_err(db)?
            .into_iter()
            .filter(|(_, _, settled)| *settled)
            .map(|(key, fingerprint, _)| (key, fingerprint))
            .collect();
        let (unchanged, changed): (Vec<Mapped>, Vec<Mapped>) = entries
            .into_iter()
            .partition(|m| m.flag.is_none() && settled.get(&m.key) == Some(&m.fingerprint) && !self.failing.contains_key(&m.key));
        self.counts.unchanged += unchanged.len() as i64;
        let keys: Vec<&str> = changed.iter().map(|m| m.key.as_str()).collect();
        let mut links: HashMap<String, (runs::Link, i64)> =
            runs::links_by_key(conn, &keys).map_err(db)?.into_iter().map(|(l, v)| (l.entry_key.clone(), (l, v))).collect();
        let clearing = self.cfg.mfa_reset.as_ref().is_some_and(|f| f.clear) && !self.options.dry_run;
        let mut todo = Vec::new();
        for entry in changed {
            let link = links.remove(&entry.key);
            // A flag already applied at this mark (not cleared yet: a read-only bind, or a run
            // that stopped before clearing it) needs no write, only clearing.
            let untouched = link.as_ref().is_some_and(|(l, version)| {
                l.fingerprint == entry.fingerprint
                    && *version == l.synced_version
                    && l.missing_since.is_none()
                    && flags::decide(entry.flag.as_deref(), l.flag_mark.as_deref()) == flags::Decision::AlreadyApplied
            });
            if untouched {
                self.counts.unchanged += 1;
                if clearing {
                    self.to_clear.push(entry.dn.clone());
                }
            } else {
                todo.push((entry, link.map(|(l, _)| l)));
            }
        }
        if !todo.is_empty() {
            self.write_entries(conn, todo, false)?;
        }
        self.progress(conn)
    }

    /// The deferred entries, with their links read afresh, as one batch whose renames are
    /// applied as a whole.
    fn write_again(&mut self, conn: &mut store::DbConn, deferred: Vec<Mapped>) -> Result<(), String> {
        let keys: Vec<&str> = deferred.iter().map(|m| m.key.as_str()).collect();
        let mut links: HashMap<String, runs::Link> = runs::links_by_key(conn, &keys)
            .map_err(|e| format!("database: {e}"))?
            .into_iter()
            .map(|(l, _)| (l.entry_key.clone(), l))
            .collect();
        let todo = deferred.into_iter().map(|m| {
            let link = links.remove(&m.key);
            (m, link)
        });
        self.write_entries(conn, todo.collect(), true)?;
        self.progress(conn)
    }

    /// Of the keys that these entries' claims contest (other entries linked to the users they
    /// would take, not read in this run), those the directory no longer has: asked before the
    /// transaction, in a few searches. An error here fails the run: guessing either way would
    /// hand a user to the wrong entry or report a false conflict.
    fn absent_keys(
        &mut self,
        conn: &mut store::DbConn,
        todo: &[(Mapped, Option<runs::Link>)],
        fresh: &[usize],
    ) -> Result<HashSet<String>, String> {
        let fresh: HashSet<usize> = fresh.iter().copied().collect();
        let claimers: Vec<&Mapped> =
            todo.iter().enumerate().filter(|(i, (_, link))| link.is_none() && !fresh.contains(i)).map(|(_, (m, _))| m).collect();
        if claimers.is_empty() {
            return Ok(HashSet::new());
        }
        let contested: Vec<String> = mirror::contested_keys(conn, &claimers)
            .map_err(|e| format!("database: {e}"))?
            .into_iter()
            .filter(|k| !self.seen.contains(k))
            .collect();
        if contested.is_empty() {
            return Ok(HashSet::new());
        }
        let attributes = vec![self.cfg.id_attribute.clone()];
        // From this blocking thread, outside any transaction, unless the daemon stops.
        let (runtime, shutdown, directory) = (&self.runtime, &mut self.shutdown, &mut self.directory);
        let found =
            runtime.block_on(until_stopped(shutdown, directory.entries_with_keys(&contested, attributes))).map_err(|e| {
                if e == STOPPED {
                    e
                } else {
                    format!("cannot ask the directory whether contested entries still exist: {e}")
                }
            })?;
        let present: HashSet<String> = found.iter().filter_map(|e| self.mapping.entry_key(e)).collect();
        Ok(contested.into_iter().filter(|k| !present.contains(k)).collect())
    }

    /// Writes the entries that changed in one transaction, a savepoint each (one bad entry
    /// does not undo the others), with the run's counts (so that a run killed after the commit
    /// shows the resets it committed). `again`: the deferred entries at the end of the read,
    /// whose renames are applied as a whole and whose failures are final.
    fn write_entries(
        &mut self,
        conn: &mut store::DbConn,
        mut todo: Vec<(Mapped, Option<runs::Link>)>,
        again: bool,
    ) -> Result<(), String> {
        let at = self.now();
        // Linked entries first: a name one of them gives up is then free for a new entry.
        todo.sort_by_key(|(_, link)| link.is_none());
        let fresh = fresh_entries(conn, &todo).map_err(|e| format!("database: {e}"))?;
        let absent = self.absent_keys(conn, &todo, &fresh)?;
        // A key not asked about (a claim that only appeared inside the transaction) counts as
        // present: the entry is reported, nobody's user taken.
        let mut key_in_directory = |key: &str| !absent.contains(key);
        let (mapping, actor) = (&self.mapping, &self.actor);
        let dry_run = self.options.dry_run;
        let counts_before = self.counts;
        // First the new users in a few multi-row statements and the others one by one, without
        // savepoints (each costs SQLite a statement journal); if anything fails, the batch is
        // rolled back and done again entry by entry with a savepoint each, so that only the
        // failing entries are lost.
        let (run_id, lease_until) = (&self.run_id, at + self.lease_for);
        let mut attempt = |conn: &mut store::DbConn, savepoints: bool| {
            store::write_tx(conn, |conn| {
                // First (and as the write that takes the lock): still ours to run?
                if !runs::renew_lease_in_tx(conn, LEASE, run_id, lease_until)? {
                    return Err(TxEnd::LeaseLost);
                }
                let freed = if again {
                    let linked: Vec<(&Mapped, &runs::Link)> =
                        todo.iter().filter_map(|(m, l)| l.as_ref().map(|l| (m, l))).collect();
                    mirror::free_names_for_renames(conn, &linked, at).map_err(|e| TxEnd::Failed(e.to_string()))?
                } else {
                    Vec::new()
                };
                let mut results: Vec<Option<crate::domain::Result<mirror::Applied>>> = todo.iter().map(|_| None).collect();
                if !savepoints && !fresh.is_empty() {
                    let entries: Vec<&Mapped> = fresh.iter().map(|&i| &todo[i].0).collect();
                    match mirror::create_many(conn, mapping, &entries, actor, at) {
                        Ok(applied) => {
                            for (&i, a) in fresh.iter().zip(applied) {
                                results[i] = Some(Ok(a));
                            }
                        }
                        Err(_) => return Err(TxEnd::Retry),
                    }
                }
                for ((entry, link), slot) in todo.iter().zip(results.iter_mut()) {
                    if slot.is_some() {
                        continue;
                    }
                    let mut apply = |c: &mut store::Tx| {
                        mirror::apply_entry(c, mapping, entry, link.clone(), &mut key_in_directory, actor, at)
                    };
                    let r = if savepoints { conn.savepoint(apply) } else { apply(conn) };
                    if r.is_err() && !savepoints {
                        return Err(TxEnd::Retry);
                    }
                    *slot = Some(r);
                }
                if !freed.is_empty() {
                    let stuck = mirror::restore_names(conn, &freed, at).map_err(|e| TxEnd::Failed(e.to_string()))?;
                    for id in stuck {
                        tracing::warn!(user = %id, "a user whose rename failed could not get its old userName back");
                    }
                }
                let results: Vec<_> = results.into_iter().map(|r| r.expect("every entry has a result")).collect();
                if dry_run {
                    return Err(TxEnd::Rollback(results));
                }
                // The counts go with what they count.
                let counts = counts_before.plus(&Counts::of(&results));
                runs::save_progress_in_tx(conn, run_id, &counts.progress())?;
                Ok(results)
            })
        };
        let outcome = match attempt(conn, false) {
            Err(TxEnd::Retry) => attempt(conn, true),
            other => other,
        };
        let results = match outcome {
            Ok(r) | Err(TxEnd::Rollback(r)) => r,
            Err(TxEnd::Db(e)) => return Err(format!("database: {e}")),
            Err(TxEnd::LeaseLost) => return Err(LEASE_LOST.into()),
            Err(TxEnd::Failed(e)) => return Err(format!("database: {e}")),
            Err(TxEnd::Retry) => unreachable!("the second attempt has savepoints"),
        };
        self.counts = self.counts.plus(&Counts::of(&results));
        let clearing = self.cfg.mfa_reset.as_ref().is_some_and(|f| f.clear) && !dry_run;
        let (mut failed, mut written) = (Vec::new(), Vec::new());
        for ((entry, _), result) in todo.into_iter().zip(results) {
            match result {
                Ok(applied) => {
                    if applied.reset && clearing {
                        self.to_clear.push(entry.dn.clone());
                    }
                    if dry_run {
                        let action = match applied.change {
                            Change::Created => Some("create"),
                            Change::Updated => Some("update"),
                            Change::Reactivated => Some("reactivate"),
                            Change::Unchanged => None,
                        };
                        if let Some(a) = action {
                            self.report.action(json!({"action": a, "userName": entry.user_name, "dn": entry.dn}));
                        }
                        if applied.reset {
                            self.report.action(json!({"action": "reset_mfa", "userName": entry.user_name, "dn": entry.dn}));
                        }
                    }
                    if self.failing.contains_key(&entry.key) {
                        written.push(entry.key.clone());
                    }
                }
                Err(crate::domain::Error::Conflict(_)) if !again => self.deferred.push(entry),
                Err(e) => failed.push(self.failure(&entry, e.to_string())),
            }
        }
        if !dry_run && (!failed.is_empty() || !written.is_empty()) {
            runs::save_failing(conn, &failed, &written).map_err(|e| format!("database: {e}"))?;
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
    fn failure(&mut self, entry: &Mapped, error: String) -> runs::Failing {
        let mark = entry.change.as_ref().map(Mark::encode);
        let before = self.failing.get(&entry.key).filter(|f| f.change_mark == mark).map_or(0, |f| f.failures);
        let failures = before + 1;
        if failures < QUARANTINE_AFTER {
            if let Some(m) = &entry.change {
                if self.failed_mark.as_ref().is_none_or(|f| m < f) {
                    self.failed_mark = Some(m.clone());
                }
            }
            self.report.error(error.clone());
        } else {
            self.report.error(format!(
                "{error} (quarantined: failed in {failures} runs in a row at this change; incremental runs no longer wait for it, \
                 and every run retries it)"
            ));
        }
        runs::Failing { entry_key: entry.key.clone(), dn: entry.dn.clone(), change_mark: mark, failures, error }
    }

    /// Records the counts so far (a running run shows its progress) and renews the lease.
    fn progress(&mut self, conn: &mut store::DbConn) -> Result<(), String> {
        let now = self.now();
        if !runs::renew_lease(conn, LEASE, &self.run_id, now + self.lease_for).map_err(|e| format!("database: {e}"))? {
            return Err(LEASE_LOST.into());
        }
        if self.options.dry_run {
            return Ok(());
        }
        runs::save_progress(conn, &self.run_id, &self.counts.progress()).map_err(|e| format!("database: {e}"))
    }

    /// After a complete full read: deactivates the users whose entries were not seen, unless
    /// that is more than `[ldap.safety]` allows. The directory owns `active` for its users: a
    /// user re-activated by SCIM while its entry is gone is deactivated again by every full
    /// run. Only real deactivations (users active now) count against the limit.
    fn deactivate_missing(&mut self, allow: bool) -> Result<(), String> {
        let db = |e: store::Error| format!("database: {e}");
        let mut conn = self.pool.get().map_err(|e| db(e.into()))?;
        let present = runs::count_present(&mut conn).map_err(db)?;
        let (mut deactivate, mut mark) = (Vec::new(), Vec::new());
        let mut after = String::new();
        loop {
            let page = runs::links_after(&mut conn, &after, 5000).map_err(db)?;
            let Some((_, last, _, _)) = page.last() else { break };
            after = last.clone();
            for (id, key, missing, active) in page {
                if self.seen.contains(&key) {
                    continue;
                }
                if active {
                    deactivate.push(id);
                } else if !missing {
                    mark.push(id);
                }
            }
        }
        if self.unkeyed > 0 && !(deactivate.is_empty() && mark.is_empty()) {
            return Err(format!(
                "{} entries had no {} (ldap.id_attribute): the run cannot tell whose they are, so nobody was deactivated",
                self.unkeyed, self.cfg.id_attribute
            ));
        }
        let safety = &self.cfg.safety;
        // Rounded up: one departure from a small directory is not a mass deactivation.
        let by_share = (present as f64 * safety.max_deactivate_percent / 100.0).ceil() as u64;
        let limit = safety.max_deactivate.map_or(by_share, |n| n.min(by_share));
        if deactivate.len() as u64 > limit && !allow {
            return Err(format!(
                "the run would deactivate {} of {present} directory users, more than ldap.safety allows ({limit}: \
                 max_deactivate_percent = {}, max_deactivate = {}); nobody was deactivated. Check ldap.base_dn and \
                 ldap.user_filter; if the departures are real, run `provisiond sync --full --allow-mass-deactivation`",
                deactivate.len(),
                safety.max_deactivate_percent,
                safety.max_deactivate.map_or("unset".to_string(), |n| n.to_string()),
            ));
        }
        // Entries gone whose failures were kept: nothing left to retry.
        if !self.options.dry_run {
            let gone: Vec<String> = self.failing.keys().filter(|k| !self.seen.contains(*k)).cloned().collect();
            if !gone.is_empty() {
                runs::save_failing(&mut conn, &[], &gone).map_err(db)?;
            }
        }
        let at = self.now();
        let dry_run = self.options.dry_run;
        let (run_id, lease_until) = (self.run_id.clone(), at + self.lease_for);
        deactivate.extend(mark);
        for chunk in deactivate.chunks(500) {
            let outcome = store::write_tx(&mut conn, |conn| {
                if !runs::renew_lease_in_tx(conn, LEASE, &run_id, lease_until)? {
                    return Err(TxEnd::LeaseLost);
                }
                let mut results = Vec::with_capacity(chunk.len());
                for id in chunk {
                    results.push((id, conn.savepoint(|c| mirror::deactivate(c, id, at))));
                }
                if dry_run {
                    Err(TxEnd::Rollback(results))
                } else {
                    Ok(results)
                }
            });
            let results = match outcome {
                Ok(r) | Err(TxEnd::Rollback(r)) => r,
                Err(TxEnd::Db(e)) => return Err(format!("database: {e}")),
                Err(TxEnd::LeaseLost) => return Err(LEASE_LOST.into()),
                Err(TxEnd::Retry) | Err(TxEnd::Failed(_)) => unreachable!("deactivations use savepoints"),
            };
            for (id, r) in results {
                match r {
                    Ok(true) => {
                        self.counts.deactivated += 1;
                        if dry_run {
                            self.report.action(json!({"action": "deactivate", "userId": id}));
                        }
                    }
                    Ok(false) => {}
                    Err(e) => self.report.error(format!("cannot deactivate user {id}: {e}")),
                }
            }
            self.progress(&mut conn)?;
        }
        Ok(())
    }
}
