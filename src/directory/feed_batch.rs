//! The change feed's batches: what the feed gathered (entries, keys of entries gone, the newest
//! cookie) written as one run of kind `stream` through the same [`Writer`] as runs, the flags it
//! applied cleared in LDAP, and the run recorded (when it did something) with the cookie that
//! covers it.
//!
//! Deactivations from the feed count against `[ldap.safety]` over the sliding window
//! `ldap.safety.window`: past the limit the feed stops deactivating (the run fails and says why,
//! `/readyz` too) until a full run settles the departures.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::flags;
use super::ldap::Directory;
use super::mapping::{MapError, Mapped, Mapping};
use super::reader::{stopping, until_stopped, KeyProbe};
use super::report::{Report, RunError};
use super::run::{blocking, record_metrics, Syncer};
use super::writer::{Batch, Writer};
use crate::clock::{self, Clock};
use crate::config;
use crate::domain::audit::{Actor, Origin};
use crate::domain::directory::{BeginError, Run, RunStatus, Runs, StreamEnd};

/// Which users a batch finds gone, besides the entries the server listed as deleted.
pub enum Gone {
    /// Only those listed.
    Listed,
    /// Every user whose entry is not among these keys (the end of a complete refresh).
    AllBut(HashSet<String>),
}

/// What the feed said of one entry: as it is now, or (`None`) gone.
type Change = Option<Result<Mapped, MapError>>;

/// What the feed gathered since its last batch, and how to write it.
pub struct Batcher {
    cfg: Arc<config::Ldap>,
    mapping: Arc<Mapping>,
    runs: Runs,
    clock: Arc<dyn Clock>,
    shutdown: watch::Receiver<bool>,
    lease: chrono::Duration,
    /// The instance streaming (the feed's lease).
    holder: String,
    /// A failure was recorded: the next completed refresh is recorded too (a feed back at work
    /// says so, in the history and to `/readyz`).
    recovering: bool,
    /// The search the cookie belongs to.
    scope: String,
    /// A connection of its own for the writer's questions and for clearing flags.
    directory: Option<Directory>,
    /// The newest state of each entry named since the last batch, by key, with its arrival
    /// number: an entry changed twice in one batch is written as it is now (and a deletion
    /// followed by a return is a return).
    changes: HashMap<String, (u64, Change)>,
    arrived: u64,
    /// The newest cookie heard, and whether it is newer than the one saved.
    cookie: Option<Vec<u8>>,
    cookie_new: bool,
}

impl Batcher {
    pub fn new(syncer: &Syncer, holder: &str, lease: chrono::Duration) -> Self {
        let cfg = syncer.config_arc();
        let mapping = syncer.mapping().clone();
        let scope =
            format!("{}\n{}\n{:?}\n{}\n{}", cfg.url, cfg.base_dn, cfg.scope, cfg.user_filter, mapping.attributes().join(","));
        Batcher {
            cfg,
            mapping,
            runs: syncer.runs().clone(),
            clock: syncer.clock().clone(),
            shutdown: syncer.shutdown_signal(),
            lease,
            holder: holder.to_string(),
            recovering: false,
            scope,
            directory: None,
            changes: HashMap::new(),
            arrived: 0,
            cookie: None,
            cookie_new: false,
        }
    }

    /// The stored cookie to resume from (`None`: read everything).
    pub async fn resume(&mut self) -> Result<Option<Vec<u8>>, RunError> {
        let (runs, scope) = (self.runs.clone(), self.scope.clone());
        let cookie = blocking(move || runs.feed_resume(&scope)).await?;
        self.cookie = cookie.clone();
        self.cookie_new = false;
        Ok(cookie)
    }

    /// Opens the batches' own connection.
    pub async fn connect(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        self.directory = Some(until_stopped(shutdown, Directory::connect(self.cfg.clone())).await?);
        Ok(())
    }

    pub async fn disconnect(&mut self) {
        if let Some(d) = self.directory.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), d.close()).await;
        }
        self.changes.clear();
    }

    /// Entry `key` as it is now.
    pub fn entry(&mut self, key: String, entry: Result<Mapped, MapError>) {
        self.note(key, Some(entry));
    }

    /// These entries are gone.
    pub fn gone(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            self.note(key, None);
        }
    }

    fn note(&mut self, key: String, change: Change) {
        self.arrived += 1;
        self.changes.insert(key, (self.arrived, change));
    }

    /// The changes gathered, in the order of their last arrival: the entries, and the keys of
    /// the entries gone.
    fn take(&mut self) -> (Batch, Vec<String>) {
        let mut changes: Vec<(u64, String, Change)> = self.changes.drain().map(|(k, (n, c))| (n, k, c)).collect();
        changes.sort_by_key(|(n, _, _)| *n);
        let (mut entries, mut gone) = (Vec::new(), Vec::new());
        for (_, key, change) in changes {
            match change {
                Some(e) => entries.push(e),
                None => gone.push(key),
            }
        }
        (entries, gone)
    }

    /// A cookie the server sent (ignored when it sent none).
    pub fn cookie(&mut self, cookie: Option<Vec<u8>>) {
        if let Some(c) = cookie.filter(|c| !c.is_empty()) {
            self.cookie_new |= self.cookie.as_ref() != Some(&c);
            self.cookie = Some(c);
        }
    }

    /// Entries gathered.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether anything waits to be written (a new cookie included).
    pub fn pending(&self) -> bool {
        self.len() > 0 || self.cookie_new
    }

    /// Forgets the stored cookie: the next connection reads everything.
    pub async fn forget_cookie(&mut self) -> Result<(), RunError> {
        self.save_cookie(None).await
    }

    /// Saves `cookie` as where the feed resumes.
    pub async fn save_cookie(&mut self, cookie: Option<Vec<u8>>) -> Result<(), RunError> {
        let saved = cookie.clone();
        self.finish(self.runs.stream_run(), Some(saved.as_deref()), false).await?;
        self.cookie = cookie;
        self.cookie_new = false;
        Ok(())
    }

    /// [`Runs::finish_stream`] for this feed; a lost feed lease is an error.
    async fn finish(&self, run: Run, cookie: Option<Option<&[u8]>>, record: bool) -> Result<(), RunError> {
        let (runs, scope, holder) = (self.runs.clone(), self.scope.clone(), self.holder.clone());
        let cookie = cookie.map(|c| c.map(<[u8]>::to_vec));
        let ours = blocking(move || {
            let end = StreamEnd { holder: &holder, scope: &scope, cookie: cookie.as_ref().map(|c| c.as_deref()), record };
            runs.finish_stream(&run, end)
        })
        .await?;
        if ours {
            Ok(())
        } else {
            Err(RunError::FeedLeaseLost)
        }
    }

    /// Records a failed stream run saying why the feed stopped.
    pub async fn record_failure(&mut self, e: &RunError) {
        let mut run = self.runs.stream_run();
        run.status = RunStatus::Failed;
        run.errors = vec![e.to_string()];
        run.finished_at = Some(clock::stored(self.clock.now()));
        run.duration_ms = Some(0);
        self.recovering = true;
        match self.finish(run.clone(), None, true).await {
            Ok(()) | Err(RunError::FeedLeaseLost) => {}
            Err(e) => tracing::error!(error = %crate::logging::chain(&e), "cannot record the failed stream run"),
        }
        record_metrics(&run, Instant::now());
    }

    /// Writes what was gathered as one stream run. `with_cookie`: the refresh stage is over, so
    /// the cookie covers what is written (during the refresh it does not: an interrupted
    /// refresh must start again from the old one). An error means the batch is not known to be
    /// written (its changes come again after the reconnection).
    pub async fn flush(&mut self, gone: Gone, with_cookie: bool, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let (entries, listed) = self.take();
        let cookie = (with_cookie && self.cookie_new).then(|| self.cookie.clone());
        let nothing = entries.is_empty() && listed.is_empty() && matches!(gone, Gone::Listed);
        // Back at work after a failure: the history (and `/readyz`) should say so.
        let back = with_cookie && std::mem::take(&mut self.recovering);
        if nothing {
            if cookie.is_some() || back {
                let mut run = self.runs.stream_run();
                run.status = RunStatus::Succeeded;
                run.finished_at = Some(clock::stored(self.clock.now()));
                run.duration_ms = Some(0);
                self.finish(run, cookie.as_ref().map(|c| c.as_deref()), back).await?;
                self.cookie_new = false;
            }
            return Ok(());
        }
        let clock_start = Instant::now();
        let mut run = self.begin(shutdown).await?;
        let mut report = Report::default();
        let written = self.write(&run, entries, listed, gone, shutdown, &mut report).await;
        if let Some(counts) = written {
            run.counts = counts;
        }
        let failed = report.failed().is_some();
        run.status = if failed { RunStatus::Failed } else { RunStatus::Succeeded };
        run.finished_at = Some(clock::stored(self.clock.now()));
        run.duration_ms = Some(clock_start.elapsed().as_millis() as i64);
        run.errors = report.messages();
        // A batch that was not written keeps the old cookie: its changes come again.
        let cookie = if written.is_some() { cookie.map(|c| c.map(|c| c.to_vec())) } else { None };
        let saved_cookie = cookie.is_some();
        self.finish(run.clone(), cookie.as_ref().map(|c| c.as_deref()), back).await?;
        if saved_cookie {
            self.cookie_new = false;
        }
        if back || run.status == RunStatus::Failed || run.counts.did_something() {
            record_metrics(&run, clock_start);
            let c = &run.counts;
            tracing::info!(
                run = %run.id, created = c.created, updated = c.updated, deactivated = c.deactivated,
                reactivated = c.reactivated, resets = c.resets_applied, flags_cleared = c.flags_cleared,
                ms = run.duration_ms, failed, "stream run"
            );
        }
        match written {
            Some(_) => Ok(()),
            None => Err(RunError::FeedBatch(run.errors.first().cloned().unwrap_or_default())),
        }
    }

    /// Takes the sync's lease for a batch, waiting while another run (a full run) holds it and
    /// keeping the feed's lease meanwhile.
    async fn begin(&self, shutdown: &mut watch::Receiver<bool>) -> Result<Run, RunError> {
        loop {
            let (runs, lease, holder) = (self.runs.clone(), self.lease, self.holder.clone());
            match blocking(move || runs.begin_stream(&holder, lease)).await {
                Ok(Some(run)) => return Ok(run),
                Ok(None) => return Err(RunError::FeedLeaseLost),
                Err(BeginError::Busy(_)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        _ = stopping(shutdown) => return Err(RunError::Stopped),
                    }
                }
                Err(BeginError::Store(e)) => return Err(RunError::Database(e)),
            }
        }
    }

    /// The writing itself; `None` when the batch failed before it was written (the report says
    /// why), else the counts (per-entry errors and a held deactivation are in the report).
    async fn write(
        &self,
        run: &Run,
        entries: Batch,
        listed: Vec<String>,
        gone: Gone,
        shutdown: &mut watch::Receiver<bool>,
        report: &mut Report,
    ) -> Option<crate::domain::directory::Counts> {
        let Some(directory) = self.directory.clone() else {
            report.fatal(RunError::FeedLost("no connection for the batch".into()));
            return None;
        };
        let (runs, run_id, lease) = (self.runs.clone(), run.id.clone(), self.lease);
        let actor = Actor::new(Origin::Directory, run.id.clone(), None);
        let opened =
            blocking(move || Ok::<_, crate::domain::Error>((runs.failing()?, runs.session(&run_id, lease, actor, false)?))).await;
        let (failing, session) = match opened {
            Ok(o) => o,
            Err(e) => {
                report.fatal(RunError::Database(e));
                return None;
            }
        };
        let probe = KeyProbe::new(directory.clone(), self.mapping.clone(), &self.cfg, self.shutdown.clone());
        let writer = Writer::new(session, self.cfg.clone(), false, probe, failing);
        let (tx, rx) = mpsc::channel::<Batch>(1);
        let _ = tx.try_send(entries);
        drop(tx);
        let span = tracing::Span::current();
        let mut writer = match tokio::task::spawn_blocking(move || span.in_scope(|| writer.consume(rx, false))).await {
            Ok(w) => w,
            Err(e) => {
                report.fatal(RunError::WriterFailed(e));
                return None;
            }
        };
        report.absorb(&mut writer.report);
        if report.failed().is_some() {
            return None;
        }
        let (runs, cfg) = (self.runs.clone(), self.cfg.clone());
        let settled = tokio::task::spawn_blocking(move || {
            let outcome = deactivate(&runs, &cfg, &mut writer, listed, gone);
            (writer, outcome)
        })
        .await;
        let mut writer = match settled {
            Ok((mut w, outcome)) => {
                report.absorb(&mut w.report);
                if let Err(e) = outcome {
                    report.fatal(e);
                }
                w
            }
            Err(e) => {
                report.fatal(RunError::DeactivationFailed(e));
                return None;
            }
        };
        if let Some(flag) = self.cfg.mfa_reset.as_ref().filter(|f| f.clear) {
            let dns = std::mem::take(&mut writer.to_clear);
            writer.counts.flags_cleared +=
                flags::clear(self.cfg.timeout, &directory, dns, &flag.attribute, shutdown, report).await;
        }
        Some(writer.counts)
    }
}

/// Deactivates the users of the entries gone, within what the sliding window of
/// `[ldap.safety]` still allows. Deletions the server listed one by one go up to the limit, then
/// the feed stops deactivating; the departures a complete refresh found (every entry not named)
/// go all or none, as those of a full run. Past the limit the feed holds (until a full run
/// settles it).
fn deactivate(runs: &Runs, cfg: &config::Ldap, writer: &mut Writer, listed: Vec<String>, gone: Gone) -> Result<(), RunError> {
    let (mut missing, all_or_none) = match gone {
        Gone::AllBut(named) => (writer.session.missing(&named)?, true),
        Gone::Listed if listed.is_empty() => return Ok(()),
        Gone::Listed => (writer.session.departed(&listed)?, false),
    };
    if missing.active.is_empty() && missing.inactive.is_empty() {
        return Ok(());
    }
    let safety = &cfg.safety;
    let window = chrono::Duration::seconds(safety.window as i64);
    if let Some(held) = runs.feed_held(std::time::Duration::from_secs(5))? {
        if !missing.active.is_empty() {
            return Err(RunError::FeedHeld { count: missing.active.len(), why: held });
        }
    }
    let allowance = runs.feed_allowance(safety.max_deactivate_percent, safety.max_deactivate, window)?;
    if missing.active.len() as u64 > allowance {
        let count = missing.active.len();
        missing.active.truncate(if all_or_none { 0 } else { allowance as usize });
        let e = RunError::FeedMassDeactivation {
            count,
            allowance,
            done: missing.active.len(),
            window: safety.window,
            percent: safety.max_deactivate_percent,
            max: safety.max_deactivate.map_or("unset".to_string(), |n| n.to_string()),
        };
        runs.hold_feed(&e.to_string())?;
        writer.deactivate(missing)?;
        return Err(e);
    }
    writer.deactivate(missing)
}
