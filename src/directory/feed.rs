//! The directory's change feed (`ldap.change_detection = "syncrepl"`, RFC 4533): the instance
//! holding the feed's lease keeps one refreshAndPersist search open and hands what it says to
//! the same writer as runs ([`super::feed_batch`]), a batch at a time.
//!
//! - The refresh stage (after a connection) brings the changes since the stored cookie, or
//!   everything when there is none; entries are written in batches as they come, but the cookie
//!   is saved only once the refresh is done. Without a cookie, or when the server answers with a
//!   present phase (OpenLDAP without a session log), every entry it did not name is gone.
//! - The persist stage: each change is written within milliseconds, its cookie with it.
//! - A lost connection, a malformed message (ldap3's reader may panic on one: it runs in a
//!   task of its own, whose end we watch) or a refused search fails a stream run and the feed
//!   connects again after a capped, jittered exponential backoff, resuming from the cookie.
//! - `e-syncRefreshRequired` (the server's history no longer covers the cookie) forgets the
//!   cookie and reads everything again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::feed_batch::{Batcher, Gone};
use super::ldap::{Directory, DirectoryError, Entries};
use super::reader::{stopping, until_stopped, WRITE_BATCH};
use super::report::RunError;
use super::run::{blocking, Options, Syncer};
use super::sync_wire::{self, State, SyncInfo, SYNC_REQUEST_OID};
use crate::config;
use crate::domain::directory::{BeginError, RunStatus, StartedBy};

/// Within a persist stage, changes that arrive this close together are written together.
const GATHER: Duration = Duration::from_millis(15);
/// Reconnection waits: doubling from the first, never longer than the cap, each with up to
/// half of it added at random (instances that lost the server together do not return together).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long an open feed may stay silent before the connection is asked whether it still lives.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// LDAP result codes the feed acts on.
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
const UNWILLING_TO_PERFORM: u32 = 53;
const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// How long the feed's lease lasts unrenewed: another instance takes the feed over within it
/// when the holder dies. It is renewed every third of it.
pub fn lease_for(cfg: &config::Ldap) -> chrono::Duration {
    chrono::Duration::seconds((cfg.timeout as i64 * 2).clamp(10, 120))
}

/// Why a server cannot stream: the start-up check's answer.
pub fn unsupported(url: &str) -> String {
    format!(
        "ldap.change_detection = \"syncrepl\": the directory at {url} does not support the Content Synchronization \
         control ({SYNC_REQUEST_OID}, RFC 4533): load the syncprov overlay (OpenLDAP) or enable the Content \
         Synchronization plugin (389-ds, FreeIPA), or set ldap.change_detection = \"poll\""
    )
}

/// Checks at start-up that the directory offers the control (`Ok(false)`: it answered without
/// it). An unreachable directory is not an error here: the feed keeps trying.
pub async fn check_server(cfg: Arc<config::Ldap>) -> Result<bool, DirectoryError> {
    let mut directory = Directory::connect(cfg).await?;
    let supported = directory.supports_control(SYNC_REQUEST_OID).await;
    directory.close().await;
    supported
}

/// How a feed connection ended.
enum End {
    Stopped,
    LeaseLost,
    /// The cookie is no longer good: read everything again, at once.
    RefreshRequired,
    Failed(RunError),
}

impl From<RunError> for End {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Stopped => End::Stopped,
            RunError::FeedLeaseLost => End::LeaseLost,
            e => End::Failed(e),
        }
    }
}

/// Streams while this instance holds the feed's lease, until the daemon stops.
pub async fn run(syncer: Arc<Syncer>) {
    let holder = uuid::Uuid::new_v4().to_string();
    let lease = lease_for(syncer.config());
    let renew_every = (lease / 3).to_std().unwrap_or(Duration::from_secs(3));
    let mut shutdown = syncer.shutdown_signal();
    let mut failures = 0u32;
    let mut was_holder = false;
    // Whether a feed without a cookie starts with a full run (see `Feed::load_by_full_run`);
    // not again once the directory refused the cookie built after one.
    let mut first_load_by_run = true;
    // Cookies refused in a row: from the second one on, the feed backs off as after a failure.
    let mut refusals = 0u32;
    while !*shutdown.borrow() {
        let (runs, h) = (syncer.runs().clone(), holder.clone());
        match blocking(move || runs.hold_feed_lease(&h, lease)).await {
            Ok(Some(true)) => {}
            Ok(_) => {
                if was_holder {
                    tracing::info!("the LDAP change feed is now streamed by another instance");
                    was_holder = false;
                }
                if pause(&mut shutdown, jittered(renew_every)).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %crate::logging::chain(&e), "cannot take the LDAP change feed's lease");
                if pause(&mut shutdown, jittered(renew_every)).await {
                    break;
                }
                continue;
            }
        }
        was_holder = true;
        let mut feed = Feed::new(&syncer, &holder, lease, renew_every);
        feed.first_load_by_run = first_load_by_run;
        let end = feed.stream(&mut shutdown).await;
        if feed.refreshed {
            failures = 0;
            refusals = 0;
        }
        match end {
            End::Stopped => break,
            End::LeaseLost => tracing::warn!("the LDAP change feed's lease was lost; another instance may take it over"),
            End::RefreshRequired => {
                if feed.built_cookie {
                    tracing::warn!("the directory refused the cookie built from its contextCSN: the feed refreshes by itself");
                    first_load_by_run = false;
                }
                tracing::info!("the directory no longer knows the feed's cookie: reading every entry again");
                if let Err(e) = feed.batcher.forget_cookie().await {
                    tracing::warn!(error = %crate::logging::chain(&e), "cannot forget the LDAP change feed's cookie");
                }
                refusals += 1;
                if refusals > 1 && pause(&mut shutdown, backoff(refusals - 1)).await {
                    break;
                }
            }
            End::Failed(e) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::warn!(error = %crate::logging::chain(&e), retry_in_ms = wait.as_millis() as u64, "LDAP change feed failed");
                // A batch or a first full run that failed is recorded already.
                if !matches!(e, RunError::FeedBatch(_) | RunError::FirstLoad(_)) {
                    feed.batcher.record_failure(&e).await;
                }
                if pause(&mut shutdown, wait).await {
                    break;
                }
            }
        }
    }
    let runs = syncer.runs().clone();
    let _ = blocking(move || runs.release_feed_lease(&holder)).await;
}

/// The wait before reconnection attempt `n` (1, 2, …).
fn backoff(n: u32) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1 << n.saturating_sub(1).min(16));
    jittered(exp.min(BACKOFF_CAP))
}

/// `d` plus up to half of it, at random.
fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() / 2.0)
}

/// Sleeps `d`; true when the daemon stops meanwhile.
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopping(shutdown) => true,
    }
}

/// One connection's worth of the feed.
struct Feed<'a> {
    syncer: &'a Arc<Syncer>,
    holder: &'a str,
    lease: chrono::Duration,
    renew_every: Duration,
    batcher: Batcher,
    /// The refresh stage ended on this connection.
    refreshed: bool,
    /// Without a cookie, load with a full run first.
    first_load_by_run: bool,
    /// This connection resumed from a cookie built after such a run.
    built_cookie: bool,
    /// This connection's search carried a cookie.
    sent_cookie: bool,
    /// How the feed's UUIDs read as entry keys.
    key_of: config::SyncUuidKey,
}

/// What the refresh stage has gathered so far.
#[derive(Default)]
struct Refresh {
    /// No cookie, or a present phase: every entry not named is gone at its end.
    complete: bool,
    /// Keys of the entries named (added, changed or present).
    named: HashSet<String>,
}

impl<'a> Feed<'a> {
    fn new(syncer: &'a Arc<Syncer>, holder: &'a str, lease: chrono::Duration, renew_every: Duration) -> Self {
        Feed {
            syncer,
            holder,
            lease,
            renew_every,
            batcher: Batcher::new(syncer, holder, lease),
            refreshed: false,
            first_load_by_run: true,
            built_cookie: false,
            sent_cookie: false,
            key_of: syncer.config().sync_uuid_key().expect("checked with the configuration"),
        }
    }

    /// Renews the feed's lease; `Some(End)` when it was lost.
    async fn renew(&self) -> Option<End> {
        let (runs, holder, lease) = (self.syncer.runs().clone(), self.holder.to_string(), self.lease);
        match blocking(move || runs.hold_feed_lease(&holder, lease)).await {
            Ok(Some(true)) => None,
            Ok(Some(false)) => Some(End::LeaseLost),
            // The database could not say (a lock held elsewhere): the lease still has time.
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %crate::logging::chain(&e), "cannot renew the LDAP change feed's lease");
                None
            }
        }
    }

    /// The first load without a cookie, by a full run (paged: its memory does not grow with the
    /// directory, unlike a refresh through the feed, which the server sends as fast as it can),
    /// after reading the directory's `contextCSN`; the feed then resumes from a cookie built from
    /// it (OpenLDAP's form), so that what changed during the run comes again. `None`: the
    /// server shows no contextCSN (389-ds): the feed refreshes by itself. A run that failed fails
    /// the feed (it tries again after its backoff), unless only its deactivations were refused.
    async fn load_by_full_run(
        &mut self,
        directory: &mut Directory,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<u8>>, End> {
        let csns = match until_stopped(shutdown, directory.context_csn()).await {
            Ok(Some(csns)) => csns,
            Ok(None) => return Ok(None),
            Err(e) => return Err(End::from(e)),
        };
        let mut renew = tokio::time::interval_at(Instant::now() + self.renew_every, self.renew_every);
        let options = Options { full: true, started_by: StartedBy::Feed, ..Options::default() };
        // The run goes to its end (it records itself and releases the sync's lease) even when
        // the feed's lease is lost meanwhile.
        let mut lost = None;
        let summary = loop {
            let run = self.syncer.run(options);
            tokio::pin!(run);
            let started = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = renew.tick() => if let Some(end) = self.renew().await { lost = Some(end) },
                }
            };
            if let Some(end) = lost {
                return Err(end);
            }
            match started {
                Ok(summary) => break summary,
                Err(BeginError::Busy(_)) => {
                    if pause(shutdown, Duration::from_secs(1)).await {
                        return Err(End::Stopped);
                    }
                }
                Err(BeginError::Store(e)) => return Err(End::Failed(RunError::Database(e))),
            }
        };
        if *shutdown.borrow() {
            return Err(End::Stopped);
        }
        let why = summary.run.errors.first().cloned().unwrap_or_default();
        if summary.deactivation_refused {
            // Everything else is written: stream from here, deactivating nobody until a full run
            // settles the departures.
            let (runs, reason) = (self.syncer.runs().clone(), why.clone());
            if let Err(e) = blocking(move || runs.hold_feed(&reason)).await {
                return Err(End::Failed(RunError::Database(e)));
            }
        } else if summary.run.status != RunStatus::Succeeded {
            return Err(End::Failed(RunError::FirstLoad(why)));
        }
        let cookie = format!("rid=000,csn={}", csns.join(";")).into_bytes();
        if let Err(e) = self.batcher.save_cookie(Some(cookie.clone())).await {
            return Err(End::from(e));
        }
        self.built_cookie = true;
        Ok(Some(cookie))
    }

    async fn stream(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        let cfg = self.syncer.config_arc();
        let cookie = match self.batcher.resume().await {
            Ok(c) => c,
            Err(e) => return End::from(e),
        };
        let (mut directory, mut driver) = match until_stopped(shutdown, Directory::open(cfg.clone())).await {
            Ok(d) => d,
            Err(e) => return End::from(e),
        };
        if let Err(e) = self.batcher.connect(shutdown).await {
            return End::from(e);
        }
        let cookie = match cookie {
            None if self.first_load_by_run => match self.load_by_full_run(&mut directory, shutdown).await {
                Ok(c) => c,
                Err(end) => {
                    driver.abort();
                    self.batcher.disconnect().await;
                    return end;
                }
            },
            c => c,
        };
        self.sent_cookie = cookie.is_some();
        let mut refresh = Refresh { complete: cookie.is_none(), ..Refresh::default() };
        let attributes = self.syncer.mapping().attributes();
        let mut search = match until_stopped(shutdown, directory.sync_search(cookie, attributes)).await {
            Ok(s) => s,
            Err(e) => return End::from(e),
        };
        let mut renew = tokio::time::interval_at(Instant::now() + self.renew_every, self.renew_every);
        let mut flush_at: Option<Instant> = None;
        let mut last_heard = Instant::now();
        let end = loop {
            let idle = last_heard + KEEPALIVE;
            tokio::select! {
                next = search.next() => {
                    last_heard = Instant::now();
                    match next {
                        Ok(Some(message)) => {
                            match self.take(message, &mut refresh) {
                                Ok(Some(Step::RefreshDone)) => {
                                    let gone = if refresh.complete { Gone::AllBut(std::mem::take(&mut refresh.named)) } else { Gone::Listed };
                                    if let Err(e) = self.batcher.flush(gone, true, shutdown).await {
                                        break End::from(e);
                                    }
                                    self.refreshed = true;
                                    flush_at = None;
                                    tracing::info!("LDAP change feed: refresh done, streaming changes");
                                }
                                Ok(_) => {}
                                Err(e) => break End::from(e),
                            }
                            if self.batcher.len() >= WRITE_BATCH {
                                if let Err(e) = self.batcher.flush(Gone::Listed, self.refreshed, shutdown).await {
                                    break End::from(e);
                                }
                                flush_at = None;
                            } else if self.refreshed && self.batcher.pending() && flush_at.is_none() {
                                flush_at = Some(Instant::now() + GATHER);
                            }
                        }
                        Ok(None) => break self.ended(&mut search).await,
                        // The reader task ends with the connection: its panic (a malformed
                        // message) says more than the stream's end.
                        Err(e) => match tokio::time::timeout(Duration::from_millis(200), &mut driver).await {
                            Ok(ended) => break End::Failed(RunError::FeedLost(driver_end(ended))),
                            Err(_) => break End::Failed(RunError::FeedLost(e.to_string())),
                        },
                    }
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    if let Err(e) = self.batcher.flush(Gone::Listed, true, shutdown).await {
                        break End::from(e);
                    }
                }
                ended = &mut driver => break End::Failed(RunError::FeedLost(driver_end(ended))),
                _ = renew.tick() => if let Some(end) = self.renew().await { break end },
                _ = tokio::time::sleep_until(idle) => {
                    // Nothing heard for a while: a server that vanished (a pulled cable) never
                    // ends an idle search by itself.
                    last_heard = Instant::now();
                    let mut probe = directory.clone();
                    if let Err(e) = probe.ping().await {
                        break End::Failed(RunError::FeedLost(e.to_string()));
                    }
                }
                _ = stopping(shutdown) => break End::Stopped,
            }
        };
        driver.abort();
        self.batcher.disconnect().await;
        end
    }

    /// Takes one message of the search into the batch; says when the refresh stage ended.
    fn take(&mut self, message: ldap3::ResultEntry, refresh: &mut Refresh) -> Result<Option<Step>, RunError> {
        let key_of = self.key_of;
        crate::metrics::METRICS.sync_feed_messages.inc();
        if message.is_ref() {
            // A referral object in scope: nothing to mirror (a run's paged search skips them too).
            return Ok(None);
        }
        if message.is_intermediate() {
            let info = sync_wire::sync_info(message.0).map_err(RunError::Malformed)?;
            return Ok(match info {
                SyncInfo::NewCookie(c) => {
                    self.batcher.cookie(Some(c));
                    None
                }
                SyncInfo::IdSet { cookie, deletes, uuids } => {
                    self.batcher.cookie(cookie);
                    let keys = uuids.iter().map(|u| key_of.key(u));
                    if deletes {
                        self.batcher.gone(keys);
                    } else {
                        refresh.complete = true;
                        refresh.named.extend(keys);
                    }
                    None
                }
                SyncInfo::RefreshDelete { cookie, done } => {
                    self.batcher.cookie(cookie);
                    (done && !self.refreshed).then_some(Step::RefreshDone)
                }
                SyncInfo::RefreshPresent { cookie, done } => {
                    self.batcher.cookie(cookie);
                    refresh.complete = true;
                    (done && !self.refreshed).then_some(Step::RefreshDone)
                }
            });
        }
        let state = sync_wire::sync_state_of(&message.1).map_err(RunError::Malformed)?;
        let key = key_of.key(&state.uuid);
        match state.state {
            State::Add | State::Modify => {
                let entry = sync_wire::entry(message.0).map_err(RunError::Malformed)?;
                crate::metrics::METRICS.sync_feed_entries.inc();
                if !self.refreshed {
                    refresh.named.insert(key.clone());
                }
                self.batcher.entry(key, self.syncer.mapping().map(entry));
            }
            State::Delete => self.batcher.gone([key]),
            State::Present => {
                refresh.complete = true;
                refresh.named.insert(key);
            }
        }
        if self.refreshed {
            self.batcher.cookie(state.cookie);
        }
        Ok(None)
    }

    /// The server ended the search.
    async fn ended(&mut self, search: &mut Entries) -> End {
        let done = search.finish().await;
        match done.rc {
            // 53: "consumer state is newer than provider" (a directory restored from a backup).
            SYNC_REFRESH_REQUIRED | UNWILLING_TO_PERFORM if self.sent_cookie => End::RefreshRequired,
            UNAVAILABLE_CRITICAL_EXTENSION => End::Failed(RunError::FeedUnsupported(unsupported(&self.syncer.config().url))),
            0 => End::Failed(RunError::FeedLost("the server ended the sync search".into())),
            rc => End::Failed(RunError::FeedLost(format!("the server ended the sync search: {} ({rc})", done.text))),
        }
    }
}

/// Why a connection's reader task ended.
fn driver_end(ended: Result<ldap3::result::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Err(e) if e.is_panic() => "the server sent a malformed message".to_string(),
        Ok(Err(e)) => e.to_string(),
        _ => "the connection closed".to_string(),
    }
}

enum Step {
    RefreshDone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        for (n, base) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let d = backoff(n);
            let base = Duration::from_secs(base);
            assert!(d >= base && d <= base + base / 2, "attempt {n}: {d:?} against {base:?}");
        }
    }
}
