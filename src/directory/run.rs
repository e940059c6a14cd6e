//! One sync run from start to record: take the lease, stream the directory page by page into
//! the writer (each batch one transaction while the next page is read), clear the applied
//! flags, then (full runs that read everything) deactivate the users whose entries are gone,
//! within the safety limits; record the run and release the lease. A run that fails part-way
//! deactivates nobody and keeps the last good high-water mark; what it wrote stays. The
//! directory is asked only between transactions, and every wait on it ends when the daemon
//! stops. The database is called from blocking threads, never from the async tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::groups as group_sync;
use super::ldap::Directory;
use super::mapping::{Mapping, MappingError, Mark};
use super::reader::{self, until_stopped, KeyProbe};
use super::report::{Report, RunError, Summary};
use super::writer::{Batch, Writer};
use super::{flags, reader::stopping};
use crate::clock::{self, Clock};
use crate::config;
use crate::domain::audit::{Actor, Origin};
use crate::domain::directory::{BeginError, Counts, Run, RunKind, RunStatus, Runs, StartedBy};

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

pub type StartError = BeginError;

/// Starts and runs syncs; shared by the scheduler, the API and the command line.
pub struct Syncer {
    cfg: Arc<config::Ldap>,
    mapping: Arc<Mapping>,
    runs: Runs,
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

/// Runs a blocking (database) call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await.expect("a blocking database call panicked")
}

impl Syncer {
    pub fn new(cfg: config::Ldap, runs: Runs, clock: Arc<dyn Clock>) -> Result<Self, MappingError> {
        let mapping = Arc::new(Mapping::new(&cfg)?);
        Ok(Syncer {
            cfg: Arc::new(cfg),
            mapping,
            runs,
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

    pub(super) fn config_arc(&self) -> Arc<config::Ldap> {
        self.cfg.clone()
    }

    pub(super) fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    pub(super) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The run history.
    pub fn runs(&self) -> &Runs {
        &self.runs
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

    /// How long a lease lasts without renewal: longer than any wait on the server.
    fn lease_for(&self) -> chrono::Duration {
        chrono::Duration::seconds((self.cfg.timeout as i64 * 4).max(300))
    }

    /// Claims a tick of a schedule for this instance; false when another instance firing at the
    /// same tick has it (or the database cannot say: the tick is then left to the others).
    pub async fn claim_tick(&self, full: bool, tick: chrono::DateTime<chrono::Utc>) -> bool {
        let (runs, kind) = (self.runs.clone(), RunKind::of(full));
        let claimed = blocking(move || runs.claim_tick(kind, clock::stored(tick))).await;
        claimed.unwrap_or_else(|e| {
            tracing::error!(error = %crate::logging::chain(&e), schedule = kind.as_str(), "cannot claim the scheduled sync tick");
            false
        })
    }

    /// Takes the lease (runs never overlap, across processes) and records the run as running.
    /// Blocking: call it from a blocking thread.
    pub fn begin(&self, options: Options) -> Result<Started, StartError> {
        let run = self.runs.begin(RunKind::of(options.full), options.started_by, options.dry_run, self.lease_for())?;
        Ok(Started { run, options })
    }

    /// Runs a started run to its end and records it, in a span of its own.
    pub async fn execute(&self, started: Started) -> Summary {
        let span = tracing::info_span!("sync_run", id = %started.run.id, kind = started.run.kind.as_str(), dry_run = started.options.dry_run);
        self.execute_in_span(started).instrument(span).await
    }

    async fn execute_in_span(&self, started: Started) -> Summary {
        let clock_start = Instant::now();
        let Started { mut run, options } = started;
        let mut report = Report::default();
        let runs = self.runs.clone();
        let previous_mark = match blocking(move || runs.last_high_water()).await {
            Ok(m) => m,
            Err(e) => {
                report.fatal(RunError::HighWater(e));
                None
            }
        };
        let mut marks = None;
        if report.failed().is_none() {
            match self.read_and_write(&run, options, previous_mark.as_deref(), &mut report).await {
                Ok(writer) => {
                    marks = Some((writer.high_water.clone(), writer.failed_mark.clone()));
                    run.counts = writer.counts;
                }
                Err(counts) => run.counts = counts,
            }
        }
        let failed = report.failed().is_some();
        run.status = if failed { RunStatus::Failed } else { RunStatus::Succeeded };
        let now = self.clock.now().format("%Y%m%d%H%M%SZ").to_string();
        run.high_water = next_high_water(marks, &now, previous_mark, failed);
        run.finished_at = Some(clock::stored(self.clock.now()));
        run.duration_ms = Some(clock_start.elapsed().as_millis() as i64);
        run.errors = report.messages();
        let (runs, record) = (self.runs.clone(), run.clone());
        if let Err(e) = blocking(move || runs.finish(&record, options.dry_run)).await {
            tracing::error!(run = %run.id, error = %crate::logging::chain(&e), "cannot record the sync run");
        }
        if !options.dry_run {
            record_metrics(&run, clock_start);
        }
        if let Some(error) = report.failed() {
            tracing::warn!(run = %run.id, kind = run.kind.as_str(), error, "sync run failed");
        } else {
            let c = &run.counts;
            tracing::info!(
                run = %run.id, kind = run.kind.as_str(), created = c.created, updated = c.updated, unchanged = c.unchanged,
                deactivated = c.deactivated, reactivated = c.reactivated, resets = c.resets_applied,
                groups_created = c.groups_created, groups_updated = c.groups_updated, groups_deleted = c.groups_deleted,
                memberships_changed = c.memberships_changed, errors = report.error_count(), ms = run.duration_ms, dry_run = options.dry_run, "sync run finished"
            );
        }
        Summary {
            run,
            dry_run: options.dry_run,
            deactivation_refused: report.deactivation_refused,
            actions: std::mem::take(&mut report.actions),
        }
    }

    /// [`Syncer::begin`] (on a blocking thread) then [`Syncer::execute`].
    pub async fn run(self: &Arc<Self>, options: Options) -> Result<Summary, StartError> {
        let me = self.clone();
        let started = blocking(move || me.begin(options)).await?;
        Ok(self.execute(started).await)
    }

    /// Starts a run in the background (the API answers at once); its record tells the end.
    /// Blocking (it takes the lease): call it from a blocking thread.
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
            if let Err(e) = reader::check_schema(&self.cfg, &mut directory, &mut shutdown, report).await {
                report.fatal(e);
                return Err(Counts::default());
            }
        }
        let (runs, run_id, lease_for) = (self.runs.clone(), run.id.clone(), self.lease_for());
        let actor = Actor::new(Origin::Directory, run.id.clone(), None);
        let dry_run = options.dry_run;
        let opened =
            blocking(move || Ok::<_, crate::domain::Error>((runs.failing()?, runs.session(&run_id, lease_for, actor, dry_run)?)))
                .await;
        let (failing, session) = match opened {
            Ok(o) => o,
            Err(e) => {
                report.fatal(RunError::Database(e));
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
        let probe = KeyProbe::new(directory.clone(), self.mapping.clone(), &self.cfg, self.shutdown_signal());
        let writer = Writer::new(session, self.cfg.clone(), options.dry_run, probe, failing);
        let (tx, rx) = mpsc::channel::<Batch>(2);
        let span = tracing::Span::current();
        let full = options.full;
        let writing = tokio::task::spawn_blocking(move || span.in_scope(|| writer.consume(rx, full)));
        let read = reader::read(&mut directory, &self.mapping, self.cfg.page_size, &filter, &retry, &mut shutdown, &tx).await;
        drop(tx);
        let mut writer = match writing.await {
            Ok(w) => w,
            Err(e) => {
                report.fatal(RunError::WriterFailed(e));
                return Err(Counts::default());
            }
        };
        report.absorb(&mut writer.report);
        if let Err(e) = read {
            // The writer's own failure, when it has one, is the cause of a "writer stopped".
            report.fatal(e);
        }
        if report.failed().is_some() {
            self.close(directory, &mut shutdown).await;
            return Err(writer.counts);
        }
        if let Some(flag) = &self.cfg.mfa_reset {
            flags::report_outside(&self.cfg, flag, &mut directory, &mut shutdown, report).await;
            if flag.clear && !options.dry_run {
                let dns = std::mem::take(&mut writer.to_clear);
                writer.counts.flags_cleared +=
                    flags::clear(self.cfg.timeout, &directory, dns, &flag.attribute, &mut shutdown, report).await;
            }
        }
        if let Some(groups) = &self.cfg.groups {
            if report.failed().is_none() {
                self.sync_groups(groups, run, options, since, &mut directory, &mut writer.counts, &mut shutdown, report).await;
            }
        }
        self.close(directory, &mut shutdown).await;
        if report.failed().is_some() {
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
                    report.fatal(RunError::DeactivationFailed(e));
                    return Err(Counts::default());
                }
            }
        }
        Ok(writer)
    }

    /// The groups of `[ldap.groups]`, once the users are written (their members resolve through
    /// the users' links); what they did is added to `counts`, a failure to `report`.
    #[allow(clippy::too_many_arguments)]
    async fn sync_groups(
        &self,
        groups: &config::LdapGroups,
        run: &Run,
        options: Options,
        since: Option<&str>,
        directory: &mut Directory,
        counts: &mut Counts,
        shutdown: &mut watch::Receiver<bool>,
        report: &mut Report,
    ) {
        let (runs, run_id, lease_for, dry_run) = (self.runs.clone(), run.id.clone(), self.lease_for(), options.dry_run);
        let mirror = match blocking(move || runs.group_mirror(&run_id, lease_for, dry_run)).await {
            Ok(m) => m,
            Err(e) => return report.fatal(RunError::Database(e)),
        };
        let group_run = group_sync::GroupRun {
            cfg: &self.cfg,
            groups,
            mapping: &self.mapping,
            full: options.full,
            since,
            allow_mass_deletion: options.allow_mass_deactivation,
        };
        let (mirror, result) = group_sync::sync(group_run, directory, mirror, shutdown, report).await;
        *counts = *counts + mirror.counts;
        if let Err(e) = result {
            report.fatal(e);
        }
    }

    /// Unbinds, unless the daemon stops first (an unbind is not waited for long anyway).
    async fn close(&self, directory: Directory, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = directory.close() => {}
            _ = stopping(shutdown) => {}
        }
    }
}

pub(super) fn record_metrics(run: &Run, started: Instant) {
    let m = &crate::metrics::METRICS;
    let (kind, c) = (run.kind.as_str(), &run.counts);
    m.sync_runs.with_label_values(&[kind, run.status.as_str()]).inc();
    m.sync_duration.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
    for (outcome, n) in [
        ("created", c.created),
        ("updated", c.updated),
        ("unchanged", c.unchanged),
        ("deactivated", c.deactivated),
        ("reactivated", c.reactivated),
        ("reset", c.resets_applied),
    ] {
        m.sync_entries.with_label_values(&[outcome]).inc_by(n.max(0) as u64);
    }
}

/// Where the next incremental run starts reading. `marks`: of a run that read to the end, the
/// newest change it saw and the oldest change of an entry whose write failed (not quarantined);
/// `now`: the current time as a mark. The newest change seen, but not past a failed entry (it
/// is read again), nor past now (a bogus future time on one entry must not stop incremental
/// runs), and never behind `previous`. A failed run records none (the next one starts from the
/// last good run's).
pub fn next_high_water(
    marks: Option<(Option<Mark>, Option<Mark>)>,
    now: &str,
    previous: Option<String>,
    failed: bool,
) -> Option<String> {
    if failed {
        return None;
    }
    let seen = marks.and_then(|(seen, failed_at)| match (seen, failed_at) {
        (Some(seen), Some(failed_at)) => Some(seen.min(failed_at)),
        (seen, failed_at) => seen.or(failed_at),
    });
    let seen = seen.map(|m| match m {
        Mark::Time(t) => Mark::Time(t.min(now.to_string())),
        usn => usn,
    });
    match (seen.map(|m| m.encode()), previous) {
        (Some(seen), Some(previous)) => Some(max_mark(&seen, &previous)),
        (seen, previous) => seen.or(previous),
    }
}

/// The later of two encoded marks: numbers (USNs) as numbers, times as text.
fn max_mark(a: &str, b: &str) -> String {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.max(y).to_string(),
        _ => a.max(b).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Mark> {
        Some(Mark::Time(s.into()))
    }

    fn usn(n: i64) -> Option<Mark> {
        Some(Mark::Usn(n))
    }

    #[test]
    fn the_next_mark_is_the_newest_change_not_past_a_failure_nor_now() {
        const NOW: &str = "20261128120000Z";
        let prev = |s: &str| Some(s.to_string());
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Option<(Option<Mark>, Option<Mark>)>, Option<String>, bool, Option<&str>)> = vec![
            // Nothing read, nothing before.
            (Some((None, None)), None, false, None),
            // Nothing new: the previous mark stays.
            (Some((None, None)), prev("20261128100000Z"), false, Some("20261128100000Z")),
            (None, prev("20261128100000Z"), false, Some("20261128100000Z")),
            // The newest change seen.
            (Some((t("20261128110000Z"), None)), None, false, Some("20261128110000Z")),
            (Some((t("20261128110000Z"), None)), prev("20261128100000Z"), false, Some("20261128110000Z")),
            // Never behind the previous mark.
            (Some((t("20261128090000Z"), None)), prev("20261128100000Z"), false, Some("20261128100000Z")),
            // Not past an entry whose write failed.
            (Some((t("20261128110000Z"), t("20261128103000Z"))), None, false, Some("20261128103000Z")),
            (Some((None, t("20261128103000Z"))), None, false, Some("20261128103000Z")),
            // Not past now.
            (Some((t("20991231000000Z"), None)), None, false, Some(NOW)),
            // USNs compare as numbers, and are not capped by the time.
            (Some((usn(12), None)), prev("9"), false, Some("12")),
            (Some((usn(9), None)), prev("12"), false, Some("12")),
            (Some((usn(100), usn(50))), None, false, Some("50")),
            // A failed run records none.
            (Some((t("20261128110000Z"), None)), prev("20261128100000Z"), true, None),
            (None, prev("20261128100000Z"), true, None),
        ];
        for (marks, previous, failed, expected) in cases {
            let what = format!("{marks:?} after {previous:?}, failed {failed}");
            assert_eq!(next_high_water(marks, NOW, previous, failed).as_deref(), expected, "{what}");
        }
    }

    #[test]
    fn marks_compare_as_numbers_when_both_are() {
        assert_eq!(max_mark("9", "12"), "12");
        assert_eq!(max_mark("20261128100000Z", "20261128090000Z"), "20261128100000Z");
    }
}
