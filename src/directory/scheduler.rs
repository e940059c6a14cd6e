//! The two cron schedules of `[ldap]` (incremental and full), run inside `serve`.

use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use cron::Schedule;

use super::sync::{Options, StartError, StartedBy, Syncer};

/// A cron expression: the usual 5 fields (minute hour day month weekday), or 6/7 with seconds
/// first (and a year last). Empty: no schedule.
pub fn parse(expr: &str) -> Result<Option<Schedule>, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Ok(None);
    }
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        n => return Err(format!("{expr:?} has {n} fields; give 5 (minute hour day month weekday) or 6/7 (with seconds first)")),
    };
    Schedule::from_str(&full).map(Some).map_err(|e| format!("{expr:?} is not a cron expression ({e})"))
}

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
        if !syncer.claim_tick(is_full, at) {
            tracing::debug!(full = is_full, tick = %at, "scheduled sync tick taken by another instance");
            continue;
        }
        let options = Options { full: is_full, started_by: StartedBy::Schedule, ..Options::default() };
        match syncer.run(options).await {
            Ok(summary) => tracing::debug!(run = %summary.run.id, "scheduled sync run finished"),
            Err(StartError::Busy(holder)) => {
                tracing::info!(running = %holder, full = is_full, "scheduled sync skipped: a run is in progress")
            }
            Err(e) => tracing::error!(error = %e, "scheduled sync could not start"),
        }
        // The next fire time is computed afresh: times missed while a run went on are skipped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn five_field_crontab_lines_run_at_second_zero() {
        let s = parse("*/15 * * * *").unwrap().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 30).unwrap();
        let next: Vec<_> = s.after(&after).take(2).collect();
        assert_eq!(next[0], Utc.with_ymd_and_hms(2026, 11, 28, 10, 15, 0).unwrap());
        assert_eq!(next[1], Utc.with_ymd_and_hms(2026, 11, 28, 10, 30, 0).unwrap());
        let nightly = parse("0 3 * * *").unwrap().unwrap();
        let n = nightly.after(&after).next().unwrap();
        assert_eq!((n.day(), n.hour(), n.minute()), (29, 3, 0));
    }

    #[test]
    fn six_and_seven_field_forms_with_seconds() {
        let s = parse("30 */5 * * * *").unwrap().unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 0).unwrap();
        assert_eq!(s.after(&after).next().unwrap(), Utc.with_ymd_and_hms(2026, 11, 28, 10, 10, 30).unwrap());
        assert!(parse("0 0 3 * * * 2027").unwrap().is_some());
    }

    #[test]
    fn empty_disables_and_nonsense_is_refused() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("  ").unwrap().is_none());
        assert!(parse("* * *").unwrap_err().contains("3 fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("not a cron expression"));
    }

    use chrono::Datelike;
}
