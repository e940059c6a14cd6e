//! What the directory's change feed (RFC 4533) keeps between its batches: the lease that lets
//! one instance stream, the server's cookie it resumes from, the sliding window in which its
//! deactivations count against `[ldap.safety]`, and whether it stopped deactivating.
//!
//! Each batch of changes is a run of kind `stream`: it takes the sync's lease like any run (so
//! it never overlaps a full run), and is recorded only when it did something, together with the
//! cookie that covers it. The cookie is saved after the writes it covers, never before: a
//! batch interrupted between the two is read again, and applying an entry twice changes nothing.

use super::run::{Counts, Run, RunKind, RunStatus, StartedBy};
use super::runs::{BeginError, Runs, LEASE};
use super::safety;
use crate::domain::Result as DomainResult;
use crate::store;
use crate::store::directory as stored;

/// The feed's lease (one instance streams) and the name of its row.
pub(super) const FEED: &str = "ldap-feed";

/// How a batch of the feed ends (see [`Runs::finish_stream`]).
pub struct StreamEnd<'a> {
    /// The instance streaming.
    pub holder: &'a str,
    /// The search the cookie belongs to.
    pub scope: &'a str,
    pub cookie: Option<Option<&'a [u8]>>,
    /// Record the run even if it changed nothing (the feed is back after a failure).
    pub record: bool,
}

impl Runs {
    /// Takes the feed's lease for `holder`, or extends it if `holder` has it; false when another
    /// instance streams, `None` when the database could not say (PostgreSQL: another session
    /// holds the lease row's lock).
    pub fn hold_feed_lease(&self, holder: &str, lease_for: chrono::Duration) -> DomainResult<Option<bool>> {
        let now = self.now();
        let held = store::write_tx(&mut self.conn()?, |tx| {
            Ok::<_, diesel::result::Error>(
                stored::renew_lease(tx, FEED, holder, now + lease_for)?
                    || stored::take_lease(tx, FEED, holder, now, now + lease_for)?,
            )
        });
        match held {
            Ok(held) => Ok(Some(held)),
            Err(e) if store::is_lock_timeout(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the feed's lease up (another instance may stream at once).
    pub fn release_feed_lease(&self, holder: &str) -> DomainResult<()> {
        Ok(store::write_tx(&mut self.conn()?, |tx| stored::release_lease(tx, FEED, holder))?)
    }

    /// Where the feed for `scope` (the search it makes) resumes: a cookie given for another
    /// search is not used (the server would resume the old one and miss entries new to this).
    pub fn feed_resume(&self, scope: &str) -> DomainResult<Option<Vec<u8>>> {
        let feed = stored::feed(&mut *self.conn()?, FEED)?;
        Ok(feed.and_then(|f| f.cookie.filter(|_| f.scope == scope)).and_then(|c| hex::decode(c).ok()))
    }

    /// Why the feed stopped deactivating, if it did (for `/readyz`), waiting at most `wait`.
    pub fn feed_held(&self, wait: std::time::Duration) -> DomainResult<Option<String>> {
        Ok(stored::feed(&mut *self.pool.get_timeout(wait)?, FEED)?.and_then(|f| f.held))
    }

    /// How many more users the feed may deactivate now: the `[ldap.safety]` limit over the
    /// users present, less what stream runs deactivated in the last `window`.
    pub fn feed_allowance(&self, percent: f64, max: Option<u64>, window: chrono::Duration) -> DomainResult<u64> {
        let since = self.now() - window;
        let mut conn = self.conn()?;
        let present = stored::count_present(&mut conn)?;
        let used = stored::deactivated_since(&mut conn, RunKind::Stream.as_str(), since)?;
        Ok(safety::deactivation_limit(present, percent, max).saturating_sub(used.max(0) as u64))
    }

    /// Records why the feed stopped deactivating (until a full run succeeds).
    pub fn hold_feed(&self, reason: &str) -> DomainResult<()> {
        let now = self.now();
        Ok(store::write_tx(&mut self.conn()?, |tx| stored::set_held(tx, FEED, Some(reason), now))?)
    }

    /// Takes the sync's lease for one batch of the feed (not recorded yet: see
    /// [`Runs::finish_stream`]) while `holder` holds the feed's; `Busy` while another run holds
    /// the sync's lease, `None` when the feed's is no longer `holder`'s.
    pub fn begin_stream(&self, holder: &str, lease_for: chrono::Duration) -> Result<Option<Run>, BeginError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now();
        let mut conn = self.conn()?;
        let taken = store::write_tx(&mut conn, |tx| {
            if !stored::renew_lease(tx, FEED, holder, now + lease_for)? {
                return Ok(None);
            }
            stored::take_lease(tx, LEASE, &id, now, now + lease_for).map(Some)
        });
        let taken = match taken {
            Ok(None) => return Ok(None),
            Ok(Some(taken)) => taken,
            Err(e) if store::is_lock_timeout(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if !taken {
            let holder = stored::lease_holder(&mut conn, LEASE, now)?.unwrap_or_else(|| "(just finished)".into());
            return Err(BeginError::Busy(holder));
        }
        Ok(Some(Run { id, started_at: now, ..self.stream_run() }))
    }

    /// A stream run starting now, holding no lease (what it records needs none: a failure of the
    /// feed, or a cookie alone).
    pub fn stream_run(&self) -> Run {
        Run {
            id: uuid::Uuid::new_v4().to_string(),
            kind: RunKind::Stream,
            started_by: StartedBy::Feed,
            status: RunStatus::Running,
            started_at: self.now(),
            finished_at: None,
            counts: Counts::default(),
            errors: Vec::new(),
            high_water: None,
            duration_ms: None,
        }
    }

    /// Ends a batch of the feed: records it when it did something, failed, or `end.record`
    /// says so; saves the cookie that covers it (`Some(None)`: forget the cookie; `None`: keep
    /// the one saved) for `end.scope` while `end.holder` holds the feed's lease; and releases
    /// the sync's lease, in one transaction. False when the feed's lease was lost (no cookie
    /// saved: the instance streaming now has its own).
    pub fn finish_stream(&self, run: &Run, end: StreamEnd) -> DomainResult<bool> {
        let now = self.now();
        let record = end.record || run.status == RunStatus::Failed || run.counts.did_something();
        let mut conn = self.conn()?;
        let done = store::write_tx(&mut conn, |tx| {
            if record {
                stored::insert_run(tx, &run.to_stored())?;
            }
            let ours = stored::lease_holder(tx.conn(), FEED, now)?.as_deref() == Some(end.holder);
            if let Some(cookie) = end.cookie.filter(|_| ours) {
                stored::save_cookie(tx, FEED, cookie.map(hex::encode).as_deref(), end.scope, now)?;
            }
            stored::release_lease(tx, LEASE, &run.id)?;
            Ok::<_, store::Error>(ours)
        });
        match done {
            Ok(ours) => Ok(ours),
            Err(e) => {
                let _ = store::write_tx(&mut conn, |tx| stored::release_lease(tx, LEASE, &run.id));
                Err(e.into())
            }
        }
    }
}
