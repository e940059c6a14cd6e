//! What the systems that trust us must hear about. A change they care about writes its event
//! into the outbox in the transaction of the change (ARCHITECTURE rule 8): a rolled-back change
//! emits nothing and a crash after the commit loses nothing. Delivery (Shared Signals streams,
//! webhooks) reads the outbox afterwards: `events::deliver`.

use chrono::NaiveDateTime;
use serde_json::{json, Map, Value};

use super::audit::Actor;
use super::Result;
use crate::clock::{self, Clock, SystemClock};
use crate::store::{self, events as outbox, users::StoredUser, Pool, Tx};

/// An event as the outbox holds it, a message owed to a receiver, one a new event makes, and
/// what `/metrics` tells of a receiver.
pub use crate::store::events::{EventRow, Message, Owed, ReceiverState};

pub const MFA_RESET: &str = "mfa.reset";
pub const MFA_ENROLLED: &str = "mfa.enrolled";
pub const MFA_BACKUP_CODES_REGENERATED: &str = "mfa.backup_codes_regenerated";
/// One security key or passkey removed (a reset removes them all: `mfa.reset`).
pub const MFA_FACTOR_REMOVED: &str = "mfa.factor_removed";
pub const USER_DEACTIVATED: &str = "user.deactivated";
pub const USER_REACTIVATED: &str = "user.reactivated";
pub const USER_DELETED: &str = "user.deleted";
/// A Shared Signals stream's verification event: for that stream alone, about no user.
pub const SSF_VERIFICATION: &str = "ssf.verification";

/// The events about users a receiver can ask for (webhooks' `events`).
pub use crate::config::EVENT_TYPES as USER_EVENTS;

/// Who an event is about, as receivers may name them (SSF subject formats).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub id: &'a str,
    pub user_name: &'a str,
    pub email: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub(crate) fn of(user: &'a StoredUser) -> Self {
        Subject { id: &user.id, user_name: user.user_name(), email: email_of(&user.body) }
    }
}

/// The primary email of a SCIM body, else its first.
fn email_of(body: &Map<String, Value>) -> Option<&str> {
    let emails = body.get("emails")?.as_array()?;
    let primary = emails.iter().find(|e| e.get("primary").and_then(Value::as_bool) == Some(true));
    primary.or(emails.first())?.get("value")?.as_str()
}

/// The kind of second factor an MFA event is about (its `factor`): receivers tell an
/// authenticator app from a security key (CAEP's `credential_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Factor {
    Totp,
    Webauthn,
}

impl Factor {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::Webauthn => "webauthn",
        }
    }
}

/// Writes one event about `subject` in the caller's transaction.
pub(crate) fn record(
    tx: &mut Tx,
    kind: &str,
    subject: Subject,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    record_with(tx, kind, subject, None, actor, reason, at)
}

fn record_with(
    tx: &mut Tx,
    kind: &str,
    subject: Subject,
    factor: Option<Factor>,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    let mut data = Map::new();
    if let Some(factor) = factor {
        data.insert("factor".into(), json!(factor.as_str()));
    }
    if let Some(email) = subject.email {
        data.insert("email".into(), json!(email));
    }
    if let Some(request_id) = &actor.request_id {
        data.insert("requestId".into(), json!(request_id));
    }
    outbox::insert(
        tx,
        &[outbox::NewEvent {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            event_type: kind,
            user_id: subject.id,
            user_name: subject.user_name,
            origin: actor.origin.as_str(),
            actor: &actor.name,
            reason,
            data: Value::Object(data).to_string(),
        }],
    )
}

/// [`record`] for a user known by id (read in the transaction for their name and email);
/// nothing when the user is gone.
pub(crate) fn record_for(
    tx: &mut Tx,
    kind: &str,
    user_id: &str,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    record_about(tx, kind, None, user_id, actor, reason, at)
}

/// [`record_for`] of an event about one kind of factor.
pub(crate) fn record_factor(
    tx: &mut Tx,
    kind: &str,
    factor: Factor,
    user_id: &str,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    record_about(tx, kind, Some(factor), user_id, actor, reason, at)
}

fn record_about(
    tx: &mut Tx,
    kind: &str,
    factor: Option<Factor>,
    user_id: &str,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    match store::users::get(tx, user_id)? {
        Some(user) => record_with(tx, kind, Subject::of(&user), factor, actor, reason, at),
        None => Ok(()),
    }
}

/// Records a deactivation or a reactivation when a write turned `active` over (absent is active).
pub(crate) fn record_activity(
    tx: &mut Tx,
    was_active: bool,
    after: &StoredUser,
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> store::Result<()> {
    match (was_active, after.is_active()) {
        (true, false) => record(tx, USER_DEACTIVATED, Subject::of(after), actor, reason, at),
        (false, true) => record(tx, USER_REACTIVATED, Subject::of(after), actor, reason, at),
        _ => Ok(()),
    }
}

/// Writes a stream's verification event (SSF §8.1.4): delivered to that stream alone, with the
/// `state` the receiver gave.
pub(crate) fn record_verification(
    tx: &mut Tx,
    stream_id: &str,
    state: Option<&str>,
    actor: &Actor,
    at: NaiveDateTime,
) -> store::Result<()> {
    let data = json!({ "streamId": stream_id, "state": state });
    outbox::insert(
        tx,
        &[outbox::NewEvent {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            event_type: SSF_VERIFICATION,
            user_id: "",
            user_name: "",
            origin: actor.origin.as_str(),
            actor: &actor.name,
            reason: None,
            data: data.to_string(),
        }],
    )
}

/// The deliverers' side of the outbox: new events turned into messages per receiver, the head of
/// a receiver's queue claimed, outcomes recorded. Each call is one short transaction; nothing
/// here waits on the network. Retries, leases and ages are reckoned by the system clock: the
/// receivers live in real time, whatever clock a test sets to walk TOTP windows.
#[derive(Clone)]
pub struct Outbox {
    pool: Pool,
}

impl Outbox {
    pub fn new(pool: Pool) -> Self {
        Outbox { pool }
    }

    pub fn now(&self) -> NaiveDateTime {
        clock::stored(SystemClock.now())
    }

    /// Makes the messages of up to `limit` new events; returns how many events it took.
    pub fn dispatch(&self, limit: i64, wants: &dyn Fn(&EventRow) -> Vec<Message>) -> Result<usize> {
        let mut conn = self.pool.get()?;
        let now = self.now();
        Ok(store::write_tx(&mut conn, |tx| outbox::dispatch(tx, limit, now, wants))?)
    }

    /// Makes sure each receiver has its row (its counters, and the lock its claims take).
    pub fn ensure_receivers(&self, names: &[&str]) -> Result<()> {
        let mut conn = self.pool.get()?;
        Ok(outbox::ensure_receivers(&mut conn, names)?)
    }

    /// Forgets the webhooks no longer configured (`names` are the configured ones' receivers).
    pub fn forget_webhooks_except(&self, names: &[&str]) -> Result<()> {
        let mut conn = self.pool.get()?;
        Ok(store::write_tx(&mut conn, |tx| outbox::forget_webhooks_except(tx, names))?)
    }

    /// Records that the receiver has `sent` (as [`Outbox::delivered`]) and claims, for `lease`,
    /// up to `limit` messages at the head of its queue, in one transaction: a sender's two
    /// writes per batch in one. Returns how many of `sent` were still owed, and the claimed.
    pub fn delivered_and_claim(
        &self,
        receiver: &str,
        sent: &[&str],
        me: &str,
        limit: i64,
        lease: chrono::Duration,
    ) -> Result<(usize, Vec<Owed>)> {
        let mut conn = self.pool.get()?;
        let now = self.now();
        Ok(store::write_tx(&mut conn, |tx| {
            let gone = if sent.is_empty() { 0 } else { outbox::delivered(tx, receiver, sent, now)? };
            Ok::<_, store::Error>((gone, outbox::claim_head(tx, receiver, me, limit, now, now + lease)?))
        })?)
    }

    /// The receiver has these messages; returns how many were still owed.
    pub fn delivered(&self, receiver: &str, jtis: &[&str]) -> Result<usize> {
        let mut conn = self.pool.get()?;
        let now = self.now();
        Ok(store::write_tx(&mut conn, |tx| outbox::delivered(tx, receiver, jtis, now))?)
    }

    /// A polling receiver's answer (RFC 8936 `ack` and `setErrs`), in one transaction: the
    /// acknowledged messages are delivered, the refused ones dropped with the receiver's error
    /// code as the last error. Returns how many acknowledged messages were still owed.
    pub fn acknowledge(&self, receiver: &str, acks: &[String], refused: Vec<(&str, &str)>) -> Result<usize> {
        let mut conn = self.pool.get()?;
        let now = self.now();
        let acks: Vec<&str> = acks.iter().map(String::as_str).collect();
        Ok(store::write_tx(&mut conn, |tx| -> store::Result<usize> {
            let delivered = outbox::delivered(tx, receiver, &acks, now)?;
            for (jti, err) in refused {
                outbox::failed(tx, receiver, jti, &format!("refused by the receiver: {err}"), now, None)?;
            }
            Ok(delivered)
        })?)
    }

    /// An attempt failed: tried again at `retry_at`, or dropped (`None`).
    pub fn failed(&self, receiver: &str, jti: &str, error: &str, retry_at: Option<NaiveDateTime>) -> Result<()> {
        let mut conn = self.pool.get()?;
        let now = self.now();
        Ok(store::write_tx(&mut conn, |tx| outbox::failed(tx, receiver, jti, error, now, retry_at))?)
    }

    /// The oldest messages owed to a polling receiver, and whether more wait.
    pub fn owed(&self, receiver: &str, limit: i64) -> Result<(Vec<Owed>, bool)> {
        let mut conn = self.pool.get()?;
        Ok(outbox::owed(&mut conn, receiver, limit)?)
    }

    /// Deletes delivered events older than `before`; returns how many.
    pub fn prune(&self, before: NaiveDateTime) -> Result<usize> {
        let mut conn = self.pool.get()?;
        Ok(store::write_tx(&mut conn, |tx| outbox::prune(tx, before))?)
    }

    /// Backlog and counters of every receiver.
    pub fn receivers(&self) -> Result<Vec<ReceiverState>> {
        let mut conn = self.pool.get()?;
        Ok(outbox::receivers(&mut conn)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configurations_list_of_events_is_the_domains() {
        let written = [
            MFA_RESET,
            MFA_ENROLLED,
            MFA_BACKUP_CODES_REGENERATED,
            MFA_FACTOR_REMOVED,
            USER_DEACTIVATED,
            USER_REACTIVATED,
            USER_DELETED,
        ];
        assert_eq!(USER_EVENTS, written);
    }

    #[test]
    fn the_subjects_email_is_the_primary_one_else_the_first() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let two = body(json!({"emails": [{"value": "a@x"}, {"value": "b@x", "primary": true}]}));
        assert_eq!(email_of(&two), Some("b@x"));
        assert_eq!(email_of(&body(json!({"emails": [{"value": "a@x"}]}))), Some("a@x"));
        assert_eq!(email_of(&body(json!({"userName": "ada"}))), None);
    }
}
