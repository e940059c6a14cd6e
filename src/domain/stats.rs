//! What the deployment holds, counted for the metrics: users by source and state, MFA resets and
//! lockouts from the audit trail, and the connection pool. Read from the database at each scrape,
//! so the figures survive restarts and agree across instances sharing it.

use super::audit::{MFA_RESET, MFA_VERIFY_LOCKED_OUT};
use super::Result;
use crate::store::{stats, Pool};

#[derive(Clone)]
pub struct Stats {
    pool: Pool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// `(source, active, users)`.
    pub users: Vec<(String, bool, i64)>,
    /// `(event type, origin, events)` of MFA resets and lockouts.
    pub mfa_events: Vec<(String, String, i64)>,
    pub pool_open: u32,
    pub pool_idle: u32,
    /// `(receiver, messages owed, age in seconds of the oldest event owed)`.
    pub receivers: Vec<(String, i64, i64)>,
}

impl Stats {
    pub fn new(pool: Pool) -> Self {
        Stats { pool }
    }

    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let state = self.pool.state();
        let mut conn = self.pool.get()?;
        Ok(Snapshot {
            users: stats::users_by_source(&mut conn)?,
            mfa_events: stats::events_by_origin(&mut conn, &[MFA_RESET, MFA_VERIFY_LOCKED_OUT])?,
            receivers: crate::store::events::receivers(&mut conn)?
                .into_iter()
                .map(|r| {
                    let age = r.waiting(chrono::Utc::now().naive_utc()).map_or(0, |d| d.num_seconds());
                    (r.receiver, r.backlog, age)
                })
                .collect(),
            pool_open: state.connections,
            pool_idle: state.idle_connections,
        })
    }
}
