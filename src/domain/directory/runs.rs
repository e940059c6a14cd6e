//! The runs of the directory sync: the lease that keeps them from overlapping (across
//! processes), their history, the schedule ticks and the entries that keep failing. The writing
//! half of a run is its [`Session`], opened here.

use std::sync::Arc;

use chrono::NaiveDateTime;

use super::groups::GroupMirror;
use super::run::{Counts, Run, RunKind, RunStatus, StartedBy};
use super::session::Session;
use crate::clock::{self, Clock};
use crate::domain::audit::Actor;
use crate::domain::Result as DomainResult;
use crate::store::directory as stored;
use crate::store::{self, Pool, PooledConn};

pub use crate::store::directory::Failing;

/// The one lease of the sync.
pub(super) const LEASE: &str = "ldap-sync";

/// Starts, records and lists sync runs.
#[derive(Clone)]
pub struct Runs {
    pub(super) pool: Pool,
    pub(super) clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("sync run {0} is already running; try again when it has finished")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] crate::domain::Error),
}

impl From<store::Error> for BeginError {
    fn from(e: store::Error) -> Self {
        BeginError::Store(e.into())
    }
}

impl From<diesel::result::Error> for BeginError {
    fn from(e: diesel::result::Error) -> Self {
        BeginError::Store(e.into())
    }
}

impl Runs {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Runs { pool, clock }
    }

    pub(super) fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    pub(super) fn conn(&self) -> DomainResult<PooledConn> {
        Ok(self.pool.get()?)
    }

    /// Claims tick `tick` of a schedule for this instance: true for the first instance that
    /// asks, false for every other instance firing at the same tick, and false when another
    /// session holds the claim's row (it is someone else's tick either way).
    pub fn claim_tick(&self, kind: RunKind, tick: NaiveDateTime) -> DomainResult<bool> {
        let claimed = store::write_tx(&mut self.conn()?, |tx| stored::claim_tick(tx, kind.as_str(), tick));
        match claimed {
            Ok(claimed) => Ok(claimed),
            Err(e) if store::is_lock_timeout(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the lease for `lease_for` (runs never overlap, across processes) and records the
    /// run as running (a dry run is not recorded: it holds the lease only so as not to overlap
    /// a real run).
    pub fn begin(
        &self,
        kind: RunKind,
        started_by: StartedBy,
        dry_run: bool,
        lease_for: chrono::Duration,
    ) -> Result<Run, BeginError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now();
        let mut conn = self.conn()?;
        let taken = store::write_tx(&mut conn, |tx| stored::take_lease(tx, LEASE, &id, now, now + lease_for));
        let taken = match taken {
            Ok(taken) => taken,
            Err(e) if store::is_lock_timeout(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if !taken {
            let holder = stored::lease_holder(&mut conn, LEASE, now)?.unwrap_or_else(|| "(just finished)".into());
            return Err(BeginError::Busy(holder));
        }
        let run = Run {
            id,
            kind,
            started_by,
            status: RunStatus::Running,
            started_at: now,
            finished_at: None,
            counts: Counts::default(),
            errors: Vec::new(),
            high_water: None,
            duration_ms: None,
        };
        if !dry_run {
            // Holding the lease, any other `running` row is a run whose process died.
            let recorded = store::write_tx(&mut conn, |tx| {
                stored::fail_abandoned_runs(tx, now)?;
                stored::insert_run(tx, &run.to_stored())
            });
            if let Err(e) = recorded {
                let _ = store::write_tx(&mut conn, |tx| stored::release_lease(tx, LEASE, &run.id));
                return Err(e.into());
            }
        }
        Ok(run)
    }

    /// Records a finished run (not a dry run's) and releases its lease, together: whoever sees
    /// the run finished can start the next one at once. When that fails, the lease is still
    /// released if the database lets it.
    pub fn finish(&self, run: &Run, dry_run: bool) -> DomainResult<()> {
        let mut conn = self.conn()?;
        let now = self.now();
        let recorded = store::write_tx(&mut conn, |tx| {
            if !dry_run {
                stored::save_run(tx, &run.to_stored())?;
                // A full run that succeeded has settled the deletions the change feed held back.
                if run.kind == RunKind::Full && run.status == RunStatus::Succeeded {
                    stored::set_held(tx, super::feed::FEED, None, now)?;
                }
            }
            stored::release_lease(tx, LEASE, &run.id)
        });
        if let Err(e) = recorded {
            let _ = store::write_tx(&mut conn, |tx| stored::release_lease(tx, LEASE, &run.id));
            return Err(e.into());
        }
        Ok(())
    }

    /// The high-water mark of the newest successful run that recorded one.
    pub fn last_high_water(&self) -> DomainResult<Option<String>> {
        Ok(stored::last_high_water(&mut *self.conn()?)?)
    }

    /// Every entry whose last write failed (a handful, normally none).
    pub fn failing(&self) -> DomainResult<Vec<Failing>> {
        Ok(stored::failing(&mut *self.conn()?)?)
    }

    pub fn get(&self, id: &str) -> DomainResult<Option<Run>> {
        Ok(stored::get_run(&mut *self.conn()?, id)?.map(Run::from_stored).transpose()?)
    }

    /// Newest first, and how many there are.
    pub fn list(&self, offset: i64, limit: i64) -> DomainResult<(i64, Vec<Run>)> {
        let (total, runs) = stored::list_runs(&mut *self.conn()?, offset, limit)?;
        Ok((total, runs.into_iter().map(Run::from_stored).collect::<Result<_, _>>()?))
    }

    /// Whether the last `n` finished runs all failed (and there are `n`), waiting at most
    /// `wait` for a connection (a readiness check answers quickly).
    pub fn last_runs_failed(&self, n: i64, wait: std::time::Duration) -> DomainResult<bool> {
        Ok(stored::last_runs_failed(&mut *self.pool.get_timeout(wait)?, n)?)
    }

    /// The writing half of run `run_id`, on a connection of its own for the run's length, its
    /// cache enlarged for the batches (see [`Session::batches_done`]).
    pub fn session(&self, run_id: &str, lease_for: chrono::Duration, actor: Actor, dry_run: bool) -> DomainResult<Session> {
        let mut conn = self.conn()?;
        store::bulk_cache(&mut conn, true)?;
        Ok(Session::new(conn, run_id, lease_for, self.clock.clone(), actor, dry_run))
    }

    /// The group half of run `run_id` (`[ldap.groups]`), on a connection of its own.
    pub fn group_mirror(&self, run_id: &str, lease_for: chrono::Duration, dry_run: bool) -> DomainResult<GroupMirror> {
        Ok(GroupMirror::new(self.conn()?, run_id, lease_for, self.clock.clone(), dry_run))
    }
}
