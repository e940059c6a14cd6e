//! Shared Signals streams (SSF 1.0 §8): what each receiver asked for, how its events reach it
//! and whether they flow. Receivers manage their own streams through the management API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use serde_json::Value;

use super::audit::Actor;
use super::events::{self as outbox_events, Owed};
use super::mfa::Sealer;
use super::tokens::{Principal, Scope};
use super::{Error, Invalid, Result};
use crate::clock::{self, Clock};
use crate::store::{self, events as outbox, streams::StreamRow, Pool};

mod settings;
use settings::{check_text, invalid, RowBase, Settings, MAX_TEXT};
pub use settings::{Audience, Delivery, Requested};

/// RFC 8935: we POST each SET to the receiver.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936: the receiver polls us for its SETs.
pub const POLL: &str = "urn:ietf:rfc:8936";

/// A stream as the deliverers see it. `Debug` leaves the authorization header out.
#[derive(Clone)]
pub struct Stream {
    pub id: String,
    /// The name of the `ssf` token that created it; `None` when an `admin` token did.
    pub owner: Option<String>,
    pub audience: Vec<String>,
    /// Whether the receiver gave `aud` as an array (else one string): it is shown as given.
    pub audience_is_array: bool,
    pub events_requested: Vec<String>,
    pub events_delivered: Vec<String>,
    /// [`PUSH`] or [`POLL`].
    pub delivery_method: String,
    /// Push: where the SETs go. Poll: where the receiver polls (ours, derived from the id).
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` header the receiver asked us to send, opened.
    pub authorization_header: Option<String>,
    /// `iss_sub`, `email` or `opaque`.
    pub subject_format: String,
    pub description: Option<String>,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("delivery_method", &self.delivery_method)
            .field("endpoint_url", &self.endpoint_url)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The receiver name its messages are owed to.
    pub fn receiver(&self) -> String {
        store::streams::receiver(&self.id)
    }

    pub fn is_push(&self) -> bool {
        self.delivery_method == PUSH
    }

    pub fn is_poll(&self) -> bool {
        self.delivery_method == POLL
    }
}

/// The sealer's context for a stream's authorization header (binds the sealed text to the stream).
fn seal_context(stream_id: &str) -> String {
    format!("ssf-stream:{stream_id}")
}

/// How a stream's SETs name their user (RFC 9493 formats; `iss_sub` is the default).
pub const SUBJECT_FORMATS: &[&str] = &["iss_sub", "email", "opaque"];
/// A stream's statuses (SSF §8.1.2): `enabled` transmits, `paused` holds, `disabled` drops.
pub const STATUSES: &[&str] = &["enabled", "paused", "disabled"];
/// Seconds a receiver waits between two verification requests of one stream (SSF §8.1.1).
pub const MIN_VERIFICATION_INTERVAL: i64 = 60;
/// Streams one owner may have (each `ssf` token; all `admin` tokens together).
pub const MAX_STREAMS_PER_OWNER: usize = 50;

/// The answer to a verification request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The verification event is in the outbox.
    Requested,
    /// Asked again before [`MIN_VERIFICATION_INTERVAL`] passed: try again in this many seconds.
    TooSoon { retry_after: i64 },
}

/// A poll's answer: the stream and the oldest messages it is owed (to sign), and whether more wait.
pub struct Polled {
    pub stream: Stream,
    pub owed: Vec<Owed>,
    pub more: bool,
}

/// The receiver's message about a SET it refused (RFC 8936 `setErrs`).
#[derive(Debug, Clone)]
pub struct SetError {
    pub jti: String,
    pub err: String,
    pub description: Option<String>,
}

/// What `[ssf]` makes of this daemon: the issuer, its origin (where the poll endpoints are)
/// and the event types it can send.
struct Transmitter {
    issuer: String,
    origin: String,
    supported: Vec<String>,
}

/// Which streams a caller sees and manages: every one (`admin`), or those its token created
/// (`ssf`); another's is not found.
enum Reach {
    All,
    Own(String),
}

impl Reach {
    fn of(caller: &Principal) -> Self {
        if caller.has(Scope::Admin) {
            Reach::All
        } else {
            Reach::Own(caller.name.clone())
        }
    }

    /// The owner a stream it creates gets.
    fn owner(&self) -> Option<String> {
        match self {
            Reach::All => None,
            Reach::Own(name) => Some(name.clone()),
        }
    }

    fn sees(&self, row: &StreamRow) -> bool {
        match self {
            Reach::All => true,
            Reach::Own(name) => row.owner.as_deref() == Some(name),
        }
    }
}

/// `https://idp.example/tenant` → (`https://idp.example`, `/tenant`): where the issuer's host
/// ends (SSF §7.2 puts the well-known suffix there; our endpoints hang off the origin).
pub fn split_issuer(issuer: &str) -> (&str, &str) {
    let issuer = issuer.trim_end_matches('/');
    let host_start = issuer.find("://").map_or(0, |i| i + 3);
    match issuer[host_start..].find('/') {
        Some(i) => issuer.split_at(host_start + i),
        None => (issuer, ""),
    }
}

/// The path of a poll stream's endpoint under the issuer's origin.
pub fn poll_path(stream_id: &str) -> String {
    format!("/ssf/poll/{stream_id}")
}

#[derive(Clone)]
pub struct Streams {
    pool: Pool,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    outbox: outbox_events::Outbox,
    transmitter: Option<Arc<Transmitter>>,
    /// When each stream was last asked to verify (this instance's memory: with several
    /// instances a receiver may verify once per instance per interval).
    last_verification: Arc<Mutex<HashMap<String, NaiveDateTime>>>,
}

impl Streams {
    pub fn new(pool: Pool, sealer: Arc<Sealer>, clock: Arc<dyn Clock>) -> Self {
        let outbox = outbox_events::Outbox::new(pool.clone());
        Streams { pool, sealer, clock, outbox, transmitter: None, last_verification: Arc::default() }
    }

    /// The transmitter `[ssf]` configures: its issuer and the event types it can send (the
    /// wiring gives `events::set::SUPPORTED`). Without it there are no streams to manage.
    pub fn transmitting(mut self, issuer: &str, supported: &[&str]) -> Self {
        let origin = split_issuer(issuer).0.to_string();
        let supported = supported.iter().map(|s| s.to_string()).collect();
        self.transmitter = Some(Arc::new(Transmitter { issuer: issuer.to_string(), origin, supported }));
        self
    }

    /// The event types a stream may ask for.
    pub fn events_supported(&self) -> Vec<String> {
        self.transmitter.as_ref().map(|t| t.supported.clone()).unwrap_or_default()
    }

    fn transmitter(&self) -> Result<&Transmitter> {
        self.transmitter.as_deref().ok_or_else(|| Error::NotFound("no Shared Signals transmitter is configured ([ssf])".into()))
    }

    fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Every stream, oldest first.
    pub fn all(&self) -> Result<Vec<Stream>> {
        let mut conn = self.pool.get()?;
        store::streams::list(&mut conn, None)?.into_iter().map(|row| self.open(row)).collect()
    }

    /// The streams the caller manages, oldest first: every one for an `admin` token, those it
    /// created for an `ssf` token.
    pub(crate) fn list(&self, caller: &Principal) -> Result<Vec<Stream>> {
        self.transmitter()?;
        let mut conn = self.pool.get()?;
        let rows = match Reach::of(caller) {
            Reach::All => store::streams::list(&mut conn, None)?,
            Reach::Own(name) => store::streams::list(&mut conn, Some(&name))?,
        };
        rows.into_iter().map(|row| self.open(row)).collect()
    }

    /// One stream the caller manages; another's is not found.
    pub(crate) fn get(&self, caller: &Principal, id: &str) -> Result<Stream> {
        let row = self.row(caller, id)?;
        self.open(row)
    }

    fn row(&self, caller: &Principal, id: &str) -> Result<StreamRow> {
        self.transmitter()?;
        let mut conn = self.pool.get()?;
        store::streams::get(&mut conn, id)?
            .filter(|row| Reach::of(caller).sees(row))
            .ok_or_else(|| Error::NotFound(format!("no stream {id:?}")))
    }

    /// Creates a stream with what the receiver asked for (defaults for what it left out):
    /// enabled, owned by the caller's token (none for `admin`).
    pub(crate) fn create(&self, caller: &Principal, req: Requested) -> Result<Stream> {
        let t = self.transmitter()?;
        let settings = Settings::defaults(t).apply(req)?;
        let reach = Reach::of(caller);
        let owner = reach.owner();
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.now();
        let base =
            RowBase { owner: owner.clone(), status: "enabled".into(), status_reason: None, created_at: now, updated_at: now };
        let row = settings.row(t, &self.sealer, &id, base);
        let receiver = store::streams::receiver(&id);
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| -> Result<()> {
            // Counted in the transaction that inserts, creations taking turns: the limit holds.
            store::streams::take_create_turn(tx)?;
            let held = store::streams::list(tx, owner.as_deref())?.iter().filter(|r| r.owner == owner).count();
            if held >= MAX_STREAMS_PER_OWNER {
                return Err(Error::conflict(format!(
                    "at most {MAX_STREAMS_PER_OWNER} streams per owner: delete one before creating another"
                )));
            }
            store::streams::insert(tx, &row)?;
            outbox::ensure_receivers(tx, &[&receiver])?;
            Ok(())
        })?;
        tracing::info!(stream = %id, owner = owner.as_deref().unwrap_or("(admin)"), actor = %caller.name, method = %row.delivery_method, "stream created");
        self.open(row)
    }

    /// PATCH (SSF §8.1.1.3): the fields given change, the others stay.
    pub(crate) fn update(&self, caller: &Principal, id: &str, req: Requested) -> Result<Stream> {
        let stream = self.get(caller, id)?;
        let settings = Settings::of(&stream).apply(req)?;
        self.save(stream, settings)
    }

    /// PUT (SSF §8.1.1.4): the fields given are the configuration, those left out go back to
    /// their defaults.
    pub(crate) fn replace(&self, caller: &Principal, id: &str, req: Requested) -> Result<Stream> {
        let stream = self.get(caller, id)?;
        let settings = Settings::defaults(self.transmitter()?).apply(req)?;
        self.save(stream, settings)
    }

    fn save(&self, stream: Stream, settings: Settings) -> Result<Stream> {
        let t = self.transmitter()?;
        let base = RowBase {
            owner: stream.owner,
            status: stream.status,
            status_reason: stream.status_reason,
            created_at: stream.created_at,
            updated_at: self.now(),
        };
        let row = settings.row(t, &self.sealer, &stream.id, base);
        let mut conn = self.pool.get()?;
        if !store::write_tx(&mut conn, |tx| store::streams::update(tx, &row))? {
            return Err(Error::NotFound(format!("no stream {:?}", stream.id)));
        }
        self.open(row)
    }

    /// Deletes the stream and every message still owed to it.
    pub(crate) fn delete(&self, caller: &Principal, id: &str) -> Result<()> {
        let row = self.row(caller, id)?;
        let mut conn = self.pool.get()?;
        if !store::write_tx(&mut conn, |tx| store::streams::delete(tx, id))? {
            return Err(Error::NotFound(format!("no stream {id:?}")));
        }
        self.last_verification.lock().expect("verification times").remove(id);
        tracing::info!(stream = %id, owner = row.owner.as_deref().unwrap_or("(admin)"), actor = %caller.name, "stream deleted");
        Ok(())
    }

    /// Sets the stream's status (SSF §8.1.2.2). Disabling drops the messages it is still owed
    /// (a disabled stream holds nothing); pausing keeps them for when it is enabled again.
    pub(crate) fn set_status(&self, caller: &Principal, id: &str, status: &str, reason: Option<String>) -> Result<Stream> {
        if !STATUSES.contains(&status) {
            return Err(invalid(format!("status {status:?} is not one of {}", STATUSES.join(", "))));
        }
        let reason = match reason {
            Some(r) => check_text("reason", r)?,
            None => None,
        };
        let mut row = self.row(caller, id)?;
        row.status = status.to_string();
        row.status_reason = reason;
        row.updated_at = self.now();
        let now = row.updated_at;
        let mut conn = self.pool.get()?;
        let (found, dropped) = store::write_tx(&mut conn, |tx| -> store::Result<(bool, usize)> {
            let found = store::streams::update(tx, &row)?;
            let dropped = if found && status == "disabled" {
                outbox::forget(tx, &store::streams::receiver(id), "the stream was disabled", now)?
            } else {
                0
            };
            Ok((found, dropped))
        })?;
        if !found {
            return Err(Error::NotFound(format!("no stream {id:?}")));
        }
        tracing::info!(stream = %id, status, dropped, actor = %caller.name, "stream status set");
        self.open(row)
    }

    /// A verification request (SSF §8.1.4.2): writes the verification event with the
    /// receiver's `state`, delivered like any other SET. Too soon after the last one, nothing.
    pub(crate) fn verify(&self, caller: &Principal, id: &str, state: Option<&str>, actor: &Actor) -> Result<Verification> {
        let stream = self.get(caller, id)?;
        if stream.status == "disabled" {
            return Err(invalid(format!("stream {id:?} is disabled: it is sent nothing until it is enabled")));
        }
        if state.is_some_and(|s| s.chars().count() > MAX_TEXT) {
            return Err(invalid(format!("state: at most {MAX_TEXT} characters")));
        }
        let now = self.now();
        {
            let mut last = self.last_verification.lock().expect("verification times");
            if let Some(at) = last.get(id) {
                let next = *at + chrono::Duration::seconds(MIN_VERIFICATION_INTERVAL);
                if now < next {
                    return Ok(Verification::TooSoon { retry_after: (next - now).num_seconds().max(1) });
                }
            }
            last.insert(id.to_string(), now);
        }
        let mut conn = self.pool.get()?;
        let written = store::write_tx(&mut conn, |tx| outbox_events::record_verification(tx, id, state, actor, now));
        if let Err(e) = written {
            self.last_verification.lock().expect("verification times").remove(id);
            return Err(e.into());
        }
        Ok(Verification::Requested)
    }

    /// A poll (RFC 8936 §2.4): the acknowledged messages and those the receiver refused
    /// (`setErrs`, dropped) leave the queue first; then up to `max` of the oldest messages the
    /// stream is still owed, none when it is not enabled. The stream must be a poll stream.
    pub(crate) fn poll(&self, caller: &Principal, id: &str, acks: &[String], errors: &[SetError], max: i64) -> Result<Polled> {
        let stream = self.get(caller, id)?;
        if !stream.is_poll() {
            return Err(invalid(format!("stream {id:?} is delivered by push ({PUSH}): only {POLL} streams are polled")));
        }
        let receiver = stream.receiver();
        if !acks.is_empty() || !errors.is_empty() {
            for e in errors {
                tracing::warn!(stream = %id, jti = %e.jti, err = %e.err, description = e.description.as_deref().unwrap_or(""), "the receiver refused a SET");
            }
            self.outbox.acknowledge(&receiver, acks, errors.iter().map(|e| (e.jti.as_str(), e.err.as_str())).collect())?;
        }
        if max <= 0 || stream.status != "enabled" {
            return Ok(Polled { stream, owed: Vec::new(), more: false });
        }
        let (owed, more) = self.outbox.owed(&receiver, max)?;
        Ok(Polled { stream, owed, more })
    }

    fn open(&self, row: StreamRow) -> Result<Stream> {
        let list = |text: &str| -> Vec<String> { serde_json::from_str(text).unwrap_or_default() };
        let authorization_header = match &row.authorization_header {
            Some(sealed) => {
                let opened = self.sealer.open(&seal_context(&row.id), sealed).map_err(|e| {
                    super::Error::Store(store::Error::Corrupt(format!("stream {}: authorization header: {e}", row.id)))
                })?;
                Some(String::from_utf8_lossy(&opened).into_owned())
            }
            None => None,
        };
        // `aud` is kept as the receiver gave it: one string, or an array.
        let (audience, audience_is_array) = match serde_json::from_str::<Value>(&row.audience) {
            Ok(Value::String(one)) => (vec![one], false),
            _ => (list(&row.audience), true),
        };
        let endpoint_url = match (&self.transmitter, row.delivery_method.as_str()) {
            (Some(t), POLL) => Some(format!("{}{}", t.origin, poll_path(&row.id))),
            _ => row.endpoint_url,
        };
        Ok(Stream {
            audience,
            audience_is_array,
            events_requested: list(&row.events_requested),
            events_delivered: list(&row.events_delivered),
            authorization_header,
            id: row.id,
            owner: row.owner,
            delivery_method: row.delivery_method,
            endpoint_url,
            subject_format: row.subject_format,
            description: row.description,
            status: row.status,
            status_reason: row.status_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_known_suffix_goes_between_the_host_and_the_issuers_path() {
        assert_eq!(split_issuer("https://idp.example"), ("https://idp.example", ""));
        assert_eq!(split_issuer("https://idp.example/"), ("https://idp.example", ""));
        assert_eq!(split_issuer("https://idp.example:8443/t/1/"), ("https://idp.example:8443", "/t/1"));
    }
}
