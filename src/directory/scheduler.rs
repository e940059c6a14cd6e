//! The two cron schedules of `[ldap]` (incremental and full, parsed with the configuration:
//! `config::Schedule`), run inside `serve`.

use std::sync::Arc;

use chrono::Utc;
use cron::Schedule;

use super::run::{Options, StartError, Syncer};
use crate::domain::directory::StartedBy;

/// Runs the schedules until the syncer shuts down. Of the instances sharing a database, only the
/// one that claims a tick runs it; a trigger that finds a run in progress is skipped (and
/// logged): runs never overlap.
pub async fn run(syncer: Arc<Syncer>, incremental: Option<Schedule>, full: Option<Schedule>) {
    let mut shutdown = syncer.shutdown_signal();
    loop {
        let next_incremental = incremental.as_ref().and_then(|s| s.upcoming(Utc).next());
        let next_full = full.as_ref().and_then(|s| s.upcoming(Utc).next());
        let (at, is_full) = match (next_incremental, next_full) {
            (None, None) => return,
            (Some(i), Some(f)) if f <= i => (f, true),
            (None, Some(f)) => (f, true),
            (Some(i), _) => (i, false),
        };
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // Every instance fires at this tick; the one that claims it runs.
        if !syncer.claim_tick(is_full, at).await {
            tracing::debug!(full = is_full, tick = %at, "scheduled sync tick taken by another instance");
            continue;
        }
        let options = Options { full: is_full, started_by: StartedBy::Schedule, ..Options::default() };
        match syncer.run(options).await {
            Ok(summary) => tracing::debug!(run = %summary.run.id, "scheduled sync run finished"),
            Err(StartError::Busy(holder)) => {
                tracing::info!(running = %holder, full = is_full, "scheduled sync skipped: a run is in progress")
            }
            Err(e) => tracing::error!(error = %crate::logging::chain(&e), "scheduled sync could not start"),
        }
        // The next fire time is computed afresh: times missed while a run went on are skipped.
    }
}
