//! Who did what to whom, through which door: the audit trail every MFA change writes.

use serde_json::{json, Value};

use super::Result;
use crate::store::{self, audit as store_audit, Pool};

pub(crate) const MFA_ENROLLED: &str = "mfa.enrolled";
pub(crate) const MFA_RESET: &str = "mfa.reset";
pub(crate) const MFA_BACKUP_CODES_GENERATED: &str = "mfa.backup_codes.generated";
pub(crate) const MFA_BACKUP_CODE_USED: &str = "mfa.backup_code.used";
pub(crate) const MFA_VERIFY_LOCKED_OUT: &str = "mfa.verify.locked_out";

/// Every event type the daemon writes (a filter may name others: it simply finds none).
pub(crate) const EVENT_TYPES: &[&str] = &[
    MFA_RESET,
    MFA_ENROLLED,
    MFA_BACKUP_CODES_GENERATED,
    MFA_BACKUP_CODE_USED,
    MFA_VERIFY_LOCKED_OUT,
    super::mfa::webauthn::MFA_WEBAUTHN_REMOVED,
    super::mfa::webauthn::MFA_WEBAUTHN_CLONE_SUSPECTED,
    super::mfa::links::ENROLMENT_LINK_CREATED,
    super::mfa::links::ENROLMENT_LINK_SENT,
    super::mfa::links::ENROLMENT_LINK_SEND_FAILED,
    super::operators::OPERATOR_ADDED,
    super::operators::OPERATOR_SET_UP,
    super::operators::OPERATOR_SIGNED_IN,
    super::operators::OPERATOR_SIGN_IN_FAILED,
    super::operators::OPERATOR_LOCKED_OUT,
    super::operators::OPERATOR_DISABLED,
    super::operators::OPERATOR_RESET,
];

/// The door a change came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The JSON API, one user.
    Api,
    /// The JSON API, a bulk request.
    Bulk,
    /// SCIM (an identity provider).
    Scim,
    /// The command line.
    Cli,
    /// The LDAP sync.
    Directory,
    /// The admin console (an operator in a browser).
    Console,
    /// A user on the page of their one-time enrolment link.
    Link,
}

impl Origin {
    pub(crate) const ALL: [Origin; 7] =
        [Origin::Api, Origin::Bulk, Origin::Scim, Origin::Cli, Origin::Directory, Origin::Console, Origin::Link];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Bulk => "bulk",
            Origin::Scim => "scim",
            Origin::Cli => "cli",
            Origin::Directory => "directory",
            Origin::Console => "console",
            Origin::Link => "link",
        }
    }
}

/// Who acts: the door, a name (token name, CLI user, sync run id) and the request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub origin: Origin,
    pub name: String,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn new(origin: Origin, name: impl Into<String>, request_id: Option<String>) -> Self {
        Actor { origin, name: name.into(), request_id }
    }
}

/// An event about one user, ready to be written in the caller's transaction.
pub(crate) fn event<'a>(
    at: chrono::NaiveDateTime,
    event_type: &'a str,
    user: (&'a str, &'a str),
    actor: &'a Actor,
    reason: Option<&'a str>,
    detail: Option<Value>,
) -> store_audit::NewEvent<'a> {
    store_audit::NewEvent {
        at,
        event_type,
        user_id: Some(user.0),
        user_name: Some(user.1),
        origin: actor.origin.as_str(),
        actor: &actor.name,
        reason,
        request_id: actor.request_id.as_deref(),
        detail: detail.map(|d| d.to_string()),
    }
}

/// Reads the trail.
#[derive(Clone)]
pub struct Audit {
    pool: Pool,
}

impl Audit {
    pub fn new(pool: Pool) -> Self {
        Audit { pool }
    }

    /// Newest first; the total counts every match.
    pub fn list(&self, q: &store_audit::Query) -> Result<(i64, Vec<Value>)> {
        let mut conn = self.pool.get()?;
        let (total, rows) = store_audit::list(&mut conn, q)?;
        let events = rows.into_iter().map(render).collect();
        Ok((total, events))
    }

    /// Newest first, without the total: one chunk of a long read (`Query::before_id`).
    pub fn rows(&self, q: &store_audit::Query) -> Result<Vec<Value>> {
        let mut conn = self.pool.get()?;
        Ok(store_audit::rows(&mut conn, q)?.into_iter().map(render).collect())
    }
}

fn render(e: store_audit::EventRow) -> Value {
    json!({
        "id": e.id,
        "time": crate::scim::resource::datetime(&e.at.and_utc()),
        "type": e.event_type,
        "userId": e.user_id,
        "userName": e.user_name,
        "origin": e.origin,
        "actor": e.actor,
        "reason": e.reason,
        "requestId": e.request_id,
        "detail": e.detail.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
    })
}

/// Writes events in the caller's transaction.
pub use store::audit::insert as write;
/// Which events to read: the store's query shape, plain data the doors fill in.
pub use store::audit::Query;
