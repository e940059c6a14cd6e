//! What a run tells: the error that failed it, the per-entry errors, a dry run's actions, and
//! the JSON the API and the command line show of a run.

use serde::Serialize;
use serde_json::Value;

use super::ldap::DirectoryError;
use crate::domain::directory::{Counts, Run, RunKind, RunStatus, SessionError, StartedBy};

/// Errors kept per run; more are counted.
const MAX_ERRORS: usize = 1000;
/// Actions listed by a dry run; more are counted.
const MAX_ACTIONS: usize = 10_000;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("stopped: the daemon is shutting down")]
    Stopped,
    #[error(transparent)]
    Directory(Box<DirectoryError>),
    #[error("the search did not complete: {0}")]
    Search(Box<ldap3::LdapError>),
    #[error("cannot ask the directory whether contested entries still exist: {0}")]
    Contested(Box<DirectoryError>),
    #[error("cannot read the last high-water mark: {0}")]
    HighWater(crate::domain::Error),
    #[error("database: {0}")]
    Database(#[from] crate::domain::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("the writer stopped")]
    WriterStopped,
    #[error("the writer failed: {0}")]
    WriterFailed(tokio::task::JoinError),
    #[error("mapping the entries read failed: {0}")]
    MappingFailed(tokio::task::JoinError),
    #[error("deactivation failed: {0}")]
    DeactivationFailed(tokio::task::JoinError),
    #[error(
        "{count} entries had no {attribute} (ldap.id_attribute): the run cannot tell whose they are, so nobody was deactivated"
    )]
    Unkeyed { count: usize, attribute: String },
    #[error(
        "the run would deactivate {count} of {present} directory users, more than ldap.safety allows ({limit}: \
         max_deactivate_percent = {percent}, max_deactivate = {max}); nobody was deactivated. Check ldap.base_dn and \
         ldap.user_filter; if the departures are real, run `provisiond sync --full --allow-mass-deactivation`"
    )]
    MassDeactivation { count: usize, present: i64, limit: u64, percent: f64, max: String },
    #[error("the group sync failed: {0}")]
    GroupsFailed(tokio::task::JoinError),
    #[error(
        "the run would delete {count} of {present} groups mirrored from the directory, more than ldap.safety allows ({limit}: \
         max_deactivate_percent = {percent}, max_deactivate = {max}); no group was deleted. Check ldap.groups.base_dn and \
         ldap.groups.filter; if the departures are real, run `provisiond sync --full --allow-mass-deactivation`"
    )]
    MassGroupDeletion { count: usize, present: i64, limit: u64, percent: f64, max: String },
    #[error("clearing MFA reset flags did not finish within {bound} s ({timeouts} × ldap.timeout)")]
    ClearingTimedOut { bound: u64, timeouts: u64 },
    #[error("the directory did not answer flag removals within ldap.timeout")]
    ClearingUnanswered,
    #[error("the change feed's connection was lost: {0}")]
    FeedLost(String),
    #[error("the directory sent a malformed message: {0}")]
    Malformed(#[from] super::sync_wire::Malformed),
    #[error("{0}")]
    FeedUnsupported(String),
    #[error("the batch was not written: {0}")]
    FeedBatch(String),
    #[error("the change feed's lease was lost: another instance streams now")]
    FeedLeaseLost,
    #[error("the change feed's first full run failed: {0}")]
    FirstLoad(String),
    #[error(
        "{count} users whose entries left the directory were not deactivated: the change feed stopped deactivating \
         earlier ({why})"
    )]
    FeedHeld { count: usize, why: String },
    #[error(
        "the change feed would deactivate {count} users, more than ldap.safety still allows within ldap.safety.window \
         ({allowance} more in {window} s: max_deactivate_percent = {percent}, max_deactivate = {max}); it deactivated \
         {done} and stopped deactivating. Check the directory; if the departures are real, run \
         `provisiond sync --full --allow-mass-deactivation`"
    )]
    FeedMassDeactivation { count: usize, allowance: u64, done: usize, window: u64, percent: f64, max: String },
    #[error("{why}: {left} of {total} flags not confirmed cleared")]
    FlagsUnconfirmed { why: Box<RunError>, left: usize, total: i64 },
}

impl From<DirectoryError> for RunError {
    fn from(e: DirectoryError) -> Self {
        RunError::Directory(Box::new(e))
    }
}

/// Problems of a run: per-entry errors (the run goes on) and the one that failed it.
#[derive(Debug, Default)]
pub struct Report {
    errors: Vec<String>,
    dropped: usize,
    failed: Option<String>,
    /// The run failed on the `[ldap.safety]` limit.
    pub deactivation_refused: bool,
    pub actions: Vec<Value>,
    actions_dropped: usize,
}

impl Report {
    pub fn error(&mut self, e: String) {
        tracing::warn!(error = %e, "sync");
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.dropped += 1;
        }
    }

    /// The run fails (with the first such error).
    pub fn fatal(&mut self, e: RunError) {
        // The record says what failed; the log also says why (a store failure's cause).
        tracing::warn!(error = %crate::logging::chain(&e), "sync run failed");
        if self.failed.is_none() {
            self.failed = Some(e.to_string());
            self.deactivation_refused = matches!(e, RunError::MassDeactivation { .. });
        }
    }

    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// A dry run's action: what it would do to whom.
    pub fn action(&mut self, action: Action) {
        if self.actions.len() < MAX_ACTIONS {
            self.actions.push(action.to_json());
        } else {
            self.actions_dropped += 1;
        }
    }

    pub fn absorb(&mut self, other: &mut Report) {
        for e in other.errors.drain(..) {
            if self.errors.len() < MAX_ERRORS {
                self.errors.push(e);
            } else {
                self.dropped += 1;
            }
        }
        self.dropped += other.dropped;
        if let Some(f) = other.failed.take() {
            if self.failed.is_none() {
                self.failed = Some(f);
                self.deactivation_refused = other.deactivation_refused;
            }
        }
        self.actions.append(&mut other.actions);
        self.actions_dropped += other.actions_dropped;
    }

    /// The errors as recorded: the fatal one first.
    pub fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = self.failed.iter().cloned().collect();
        out.extend(self.errors.iter().cloned());
        if self.dropped > 0 {
            out.push(format!("… and {} more errors", self.dropped));
        }
        out
    }
}

/// What a dry run would do.
pub enum Action<'a> {
    /// `create`, `update`, `reactivate` or `reset_mfa` the user of an entry.
    Entry {
        action: &'static str,
        user_name: &'a str,
        dn: &'a str,
    },
    Deactivate {
        user_id: &'a str,
    },
}

impl Action<'_> {
    fn to_json(&self) -> Value {
        match self {
            Action::Entry { action, user_name, dn } => serde_json::json!({"action": action, "userName": user_name, "dn": dn}),
            Action::Deactivate { user_id } => serde_json::json!({"action": "deactivate", "userId": user_id}),
        }
    }
}

/// A finished (or, for the API, just started) run as the doors show it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run: Run,
    pub dry_run: bool,
    /// The run failed because it would deactivate more users than `[ldap.safety]` allows.
    pub deactivation_refused: bool,
    /// What a dry run would do: `{"action","userName","dn"}` (`{"action":"deactivate","userId"}`).
    pub actions: Vec<Value>,
}

impl Summary {
    /// The JSON of the run, and for a dry run what it would do.
    pub fn view(&self) -> RunView<'_> {
        let mut view = RunView::of(&self.run);
        if self.dry_run {
            view.dry_run = Some(true);
            view.actions = Some(&self.actions);
        }
        view
    }
}

/// A sync run as the command line and `/api/v1/sync/runs` show it (also its OpenAPI schema).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SyncRun)]
pub struct RunView<'a> {
    id: &'a str,
    /// `full` or `incremental`.
    #[schema(value_type = String, pattern = "^(full|incremental)$")]
    kind: RunKind,
    /// `running`, `succeeded` or `failed` (the first of `errors` says why).
    #[schema(value_type = String, pattern = "^(running|succeeded|failed)$")]
    status: RunStatus,
    /// `schedule`, `api`, `cli` or `console`.
    #[schema(value_type = String, pattern = "^(schedule|api|cli|console)$")]
    started_by: StartedBy,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
    #[serde(flatten)]
    counts: CountsView,
    /// Per-entry errors (up to 1,000) and the one that failed the run.
    #[schema(value_type = Vec<String>)]
    errors: &'a [String],
    duration_ms: Option<i64>,
    /// Only for a dry run (`provisiond sync --dry-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
    /// What a dry run would do, only for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    actions: Option<&'a [Value]>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CountsView {
    created: i64,
    updated: i64,
    unchanged: i64,
    deactivated: i64,
    reactivated: i64,
    resets_applied: i64,
    flags_cleared: i64,
    /// Groups of `[ldap.groups]` created, updated (displayName, externalId) and deleted.
    groups_created: i64,
    groups_updated: i64,
    groups_deleted: i64,
    /// Membership rows added or removed to mirror the directory's groups.
    memberships_changed: i64,
}

impl From<Counts> for CountsView {
    fn from(c: Counts) -> Self {
        CountsView {
            created: c.created,
            updated: c.updated,
            unchanged: c.unchanged,
            deactivated: c.deactivated,
            reactivated: c.reactivated,
            resets_applied: c.resets_applied,
            flags_cleared: c.flags_cleared,
            groups_created: c.groups_created,
            groups_updated: c.groups_updated,
            groups_deleted: c.groups_deleted,
            memberships_changed: c.memberships_changed,
        }
    }
}

impl<'a> RunView<'a> {
    pub fn of(run: &'a Run) -> Self {
        let time = |t: &chrono::NaiveDateTime| crate::scim::resource::datetime(&t.and_utc());
        RunView {
            id: &run.id,
            kind: run.kind,
            status: run.status,
            started_by: run.started_by,
            started_at: time(&run.started_at),
            finished_at: run.finished_at.as_ref().map(time),
            counts: run.counts.into(),
            errors: &run.errors,
            duration_ms: run.duration_ms,
            dry_run: None,
            actions: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_run_shows_as_it_always_has_key_for_key_in_order() {
        let r = Run::example();
        let time = |t: &chrono::NaiveDateTime| crate::scim::resource::datetime(&t.and_utc());
        // The JSON of the run before the view existed, built by hand as it was then.
        let before = json!({
            "id": "r1", "kind": "incremental", "status": "succeeded", "startedBy": "api",
            "startedAt": time(&r.started_at), "finishedAt": r.finished_at.as_ref().map(time),
            "created": 1, "updated": 2, "unchanged": 3, "deactivated": 4, "reactivated": 5,
            "resetsApplied": 6, "flagsCleared": 7,
            "groupsCreated": 8, "groupsUpdated": 9, "groupsDeleted": 10, "membershipsChanged": 11, "errors": ["x: boom"], "durationMs": 1000,
        });
        let view = serde_json::to_string(&RunView::of(&r)).unwrap();
        assert_eq!(view, before.to_string());
        let dry = Summary {
            run: r.clone(),
            dry_run: true,
            deactivation_refused: false,
            actions: vec![json!({"action": "deactivate", "userId": "u"})],
        };
        let mut expected = before;
        expected["dryRun"] = json!(true);
        expected["actions"] = json!([{"action": "deactivate", "userId": "u"}]);
        assert_eq!(serde_json::to_string(&dry.view()).unwrap(), expected.to_string());
        let running = Run { status: RunStatus::Running, finished_at: None, duration_ms: None, ..r };
        let v = serde_json::to_value(RunView::of(&running)).unwrap();
        assert_eq!(
            (v["status"].clone(), v["finishedAt"].clone(), v["durationMs"].clone()),
            (json!("running"), json!(null), json!(null))
        );
    }

    #[test]
    fn errors_past_the_limit_are_counted_and_the_fatal_one_comes_first() {
        let mut report = Report::default();
        for i in 0..MAX_ERRORS + 2 {
            report.error(format!("e{i}"));
        }
        report.fatal(RunError::Stopped);
        report.fatal(RunError::WriterStopped);
        let m = report.messages();
        assert_eq!(m[0], "stopped: the daemon is shutting down");
        assert_eq!(m.len(), MAX_ERRORS + 2);
        assert_eq!(m.last().unwrap(), "… and 2 more errors");
    }
}
