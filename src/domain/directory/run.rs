//! A sync run as the domain knows it: what kind, who started it, how it ended, what it did.

use chrono::NaiveDateTime;

use crate::store;
use crate::store::directory as stored;

/// Incremental runs read the entries changed since the last good run; full runs read all and
/// deactivate the users whose entries are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Incremental,
    Full,
    /// Changes applied from the directory's change feed (RFC 4533), a batch each.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartedBy {
    #[default]
    Cli,
    Api,
    Schedule,
    /// An administrator in the console.
    Console,
    /// The directory's change feed.
    Feed,
}

impl RunKind {
    pub fn of(full: bool) -> Self {
        if full {
            RunKind::Full
        } else {
            RunKind::Incremental
        }
    }

    /// As stored (and shown, and named in metrics and in the schedule ticks).
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Incremental => "incremental",
            RunKind::Full => "full",
            RunKind::Stream => "stream",
        }
    }
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => stored::RUNNING,
            RunStatus::Succeeded => stored::SUCCEEDED,
            RunStatus::Failed => stored::FAILED,
        }
    }
}

impl StartedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            StartedBy::Cli => "cli",
            StartedBy::Api => "api",
            StartedBy::Schedule => "schedule",
            StartedBy::Console => "console",
            StartedBy::Feed => "feed",
        }
    }
}

/// What a run did to the users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deactivated: i64,
    pub reactivated: i64,
    pub resets_applied: i64,
    pub flags_cleared: i64,
    /// Groups mirrored from `[ldap.groups]`.
    pub groups_created: i64,
    pub groups_updated: i64,
    pub groups_deleted: i64,
    /// Membership rows added or removed to mirror the directory's groups.
    pub memberships_changed: i64,
}

impl Counts {
    /// Whether a run with these counts changed anything (beyond reading).
    pub fn did_something(&self) -> bool {
        Counts { unchanged: 0, ..*self } != Counts::default()
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            created: self.created + o.created,
            updated: self.updated + o.updated,
            unchanged: self.unchanged + o.unchanged,
            deactivated: self.deactivated + o.deactivated,
            reactivated: self.reactivated + o.reactivated,
            resets_applied: self.resets_applied + o.resets_applied,
            flags_cleared: self.flags_cleared + o.flags_cleared,
            groups_created: self.groups_created + o.groups_created,
            groups_updated: self.groups_updated + o.groups_updated,
            groups_deleted: self.groups_deleted + o.groups_deleted,
            memberships_changed: self.memberships_changed + o.memberships_changed,
        }
    }
}

impl Counts {
    /// As a running run records them (its deactivations come at its end).
    pub(super) fn progress(&self) -> stored::Progress {
        stored::Progress {
            created: self.created,
            updated: self.updated,
            unchanged: self.unchanged,
            reactivated: self.reactivated,
            resets_applied: self.resets_applied,
            flags_cleared: self.flags_cleared,
        }
    }
}

/// One run of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub kind: RunKind,
    pub started_by: StartedBy,
    pub status: RunStatus,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub counts: Counts,
    /// The one that failed the run first, then the per-entry ones.
    pub errors: Vec<String>,
    /// Where the next incremental run starts reading.
    pub high_water: Option<String>,
    pub duration_ms: Option<i64>,
}

impl Run {
    /// A finished run with every field set, for tests.
    #[cfg(test)]
    pub(crate) fn example() -> Run {
        let at = |secs| chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
        Run {
            id: "r1".into(),
            kind: RunKind::Incremental,
            started_by: StartedBy::Api,
            status: RunStatus::Succeeded,
            started_at: at(1_764_325_800),
            finished_at: Some(at(1_764_325_801)),
            counts: Counts {
                created: 1,
                updated: 2,
                unchanged: 3,
                deactivated: 4,
                reactivated: 5,
                resets_applied: 6,
                flags_cleared: 7,
                groups_created: 8,
                groups_updated: 9,
                groups_deleted: 10,
                memberships_changed: 11,
            },
            errors: vec!["x: boom".into()],
            high_water: Some("20261128101500Z".into()),
            duration_ms: Some(1000),
        }
    }

    pub(super) fn to_stored(&self) -> stored::Run {
        let c = &self.counts;
        stored::Run {
            id: self.id.clone(),
            kind: self.kind.as_str().into(),
            started_by: self.started_by.as_str().into(),
            status: self.status.as_str().into(),
            started_at: self.started_at,
            finished_at: self.finished_at,
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
            errors: serde_json::Value::from(self.errors.clone()).to_string(),
            high_water: self.high_water.clone(),
            duration_ms: self.duration_ms,
        }
    }

    pub(super) fn from_stored(r: stored::Run) -> Result<Run, store::Error> {
        let corrupt = |what: &str, v: &str| store::Error::Corrupt(format!("sync run {}: {what} {v:?}", r.id));
        let kind = match r.kind.as_str() {
            "incremental" => RunKind::Incremental,
            "full" => RunKind::Full,
            "stream" => RunKind::Stream,
            other => return Err(corrupt("kind", other)),
        };
        let status = match r.status.as_str() {
            stored::RUNNING => RunStatus::Running,
            stored::SUCCEEDED => RunStatus::Succeeded,
            stored::FAILED => RunStatus::Failed,
            other => return Err(corrupt("status", other)),
        };
        let started_by = match r.started_by.as_str() {
            "cli" => StartedBy::Cli,
            "api" => StartedBy::Api,
            "schedule" => StartedBy::Schedule,
            "console" => StartedBy::Console,
            "feed" => StartedBy::Feed,
            other => return Err(corrupt("started_by", other)),
        };
        Ok(Run {
            kind,
            status,
            started_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
            counts: Counts {
                created: r.created,
                updated: r.updated,
                unchanged: r.unchanged,
                deactivated: r.deactivated,
                reactivated: r.reactivated,
                resets_applied: r.resets_applied,
                flags_cleared: r.flags_cleared,
                groups_created: r.groups_created,
                groups_updated: r.groups_updated,
                groups_deleted: r.groups_deleted,
                memberships_changed: r.memberships_changed,
            },
            errors: serde_json::from_str(&r.errors).unwrap_or_default(),
            high_water: r.high_water,
            duration_ms: r.duration_ms,
            id: r.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_stored_as_today_and_read_back_the_same() {
        let run = Run {
            kind: RunKind::Full,
            started_by: StartedBy::Schedule,
            status: RunStatus::Failed,
            finished_at: None,
            errors: vec!["boom".into()],
            ..Run::example()
        };
        let stored = run.to_stored();
        assert_eq!((stored.kind.as_str(), stored.status.as_str(), stored.started_by.as_str()), ("full", "failed", "schedule"));
        assert_eq!(stored.errors, r#"["boom"]"#);
        assert_eq!(Run::from_stored(stored).unwrap(), run);
    }
}
