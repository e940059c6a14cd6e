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

/// Where the feed resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// The server's cookie after the last applied change; `None`: read everything.
    pub cookie: Option<Vec<u8>>,
    /// Why the feed stopped deactivating users, if it did.
    pub held: Option<String>,
}

impl Runs {
    /// Takes the feed's lease for `holder`, or extends it if `holder` has it; false when another
    /// instance streams.
    pub fn hold_feed_lease(&self, holder: &str, lease_for: chrono::Duration) -> DomainResult<bool> {
        let now = self.now();
        let held = store::write_tx(&mut *self.conn()?, |tx| {
            Ok::<_, diesel::result::Error>(
                stored::renew_lease(tx, FEED, holder, now + lease_for)?
                    || stored::take_lease(tx, FEED, holder, now, now + lease_for)?,
            )
        });
        match held {
            Ok(held) => Ok(held),
            Err(e) if store::is_lock_timeout(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the feed's lease up (another instance may stream at once).
    pub fn release_feed_lease(&self, holder: &str) -> DomainResult<()> {
        Ok(store::write_tx(&mut *self.conn()?, |tx| stored::release_lease(tx, FEED, holder))?)
    }

    /// Where the feed for `scope` (the search it makes) resumes: a cookie given for another
    /// search is not used (the server would resume the old one and miss entries new to this).
    pub fn feed_resume(&self, scope: &str) -> DomainResult<Resume> {
        let Some(feed) = stored::feed(&mut *self.conn()?, FEED)? else { return Ok(Resume::default()) };
        let cookie = feed.cookie.filter(|_| feed.scope == scope).and_then(|c| hex::decode(c).ok());
        Ok(Resume { cookie, held: feed.held })
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
        Ok(store::write_tx(&mut *self.conn()?, |tx| stored::set_held(tx, FEED, Some(reason), now))?)
    }

    /// Takes the sync's lease for one batch of the feed (not recorded yet: see
    /// [`Runs::finish_stream`]); `Busy` while another run holds it.
    pub fn begin_stream(&self, lease_for: chrono::Duration) -> Result<Run, BeginError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now();
        let mut conn = self.conn()?;
        let taken = match store::write_tx(&mut conn, |tx| stored::take_lease(tx, LEASE, &id, now, now + lease_for)) {
            Ok(taken) => taken,
            Err(e) if store::is_lock_timeout(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if !taken {
            let holder = stored::lease_holder(&mut conn, LEASE, now)?.unwrap_or_else(|| "(just finished)".into());
            return Err(BeginError::Busy(holder));
        }
        Ok(Run { id, started_at: now, ..self.stream_run() })
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

    /// Ends a batch of the feed: records it when it did something or failed, saves the cookie
    /// that covers it (`Some(None)`: forget the cookie; `None`: keep the one saved) for
    /// `scope`, and releases the sync's lease, in one transaction.
    pub fn finish_stream(&self, run: &Run, cookie: Option<Option<&[u8]>>, scope: &str) -> DomainResult<()> {
        let now = self.now();
        let record = run.status == RunStatus::Failed || run.counts.did_something();
        let mut conn = self.conn()?;
        let done = store::write_tx(&mut conn, |tx| {
            if record {
                stored::insert_run(tx, &run.to_stored())?;
            }
            if let Some(cookie) = cookie {
                stored::save_cookie(tx, FEED, cookie.map(hex::encode).as_deref(), scope, now)?;
            }
            stored::release_lease(tx, LEASE, &run.id)
        });
        if let Err(e) = done {
            let _ = store::write_tx(&mut conn, |tx| stored::release_lease(tx, LEASE, &run.id));
            return Err(e.into());
        }
        Ok(())
    }
}
