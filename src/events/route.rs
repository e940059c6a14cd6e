//! Which receivers hear of an event, and what each is sent: a webhook one JSON post per event
//! it asked for; an enabled (or paused: held until it resumes) Shared Signals stream one SET per
//! CAEP/RISC event it asked for; a stream's verification event goes to that stream alone.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::keys::SigningKeys;
use super::set::{self, Envelope, Occurrence};
use crate::config::Webhook;
use crate::domain::events::{EventRow, Message, Owed, SSF_VERIFICATION};
use crate::domain::streams::Stream;

/// The messages `event` makes for these receivers.
pub fn messages_for(event: &EventRow, webhooks: &[Webhook], streams: &[Stream]) -> Vec<Message> {
    let mut out = Vec::new();
    if event.event_type == SSF_VERIFICATION {
        let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
        if let Some(stream) = streams.iter().find(|s| data["streamId"] == s.id.as_str()) {
            out.push(Message { receiver: stream.receiver(), signal: set::VERIFICATION.into(), jti: new_jti() });
        }
        return out;
    }
    for webhook in webhooks.iter().filter(|w| w.wants(&event.event_type)) {
        // The event's own id: Standard Webhooks' `webhook-id`, the same on every attempt.
        out.push(Message { receiver: webhook.receiver(), signal: String::new(), jti: event.id.clone() });
    }
    let occurrence = occurrence_of(event);
    for stream in streams.iter().filter(|s| s.status != "disabled") {
        for (signal, _) in set::signals(&occurrence) {
            if stream.events_delivered.iter().any(|e| e == signal) {
                out.push(Message { receiver: stream.receiver(), signal: signal.into(), jti: new_jti() });
            }
        }
    }
    out
}

fn new_jti() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn occurrence_of(event: &EventRow) -> Occurrence<'_> {
    Occurrence {
        kind: &event.event_type,
        at: event.at.and_utc(),
        origin: &event.origin,
        reason: event.reason.as_deref(),
        factor: factor_of(&event.data),
    }
}

/// The `factor` an MFA event's data names.
fn factor_of(data: &str) -> Option<&'static str> {
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    ["totp", "webauthn"].into_iter().find(|f| data.get("factor").and_then(|v| v.as_str()) == Some(f))
}

/// The SET a stream is owed for one message: the claims of its signal, the subject in the
/// stream's format, the message's `jti`, the event's id as `txn` (shared by every SET one
/// change makes).
pub fn set_for(
    keys: &SigningKeys,
    issuer: &str,
    stream: &Stream,
    owed: &Owed,
    now: DateTime<Utc>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let event = &owed.event;
    let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
    let (sub_id, claims) = if owed.signal == set::VERIFICATION {
        let claims = match data["state"].as_str() {
            Some(state) => json!({ "state": state }),
            None => json!({}),
        };
        (json!({ "format": "opaque", "id": stream.id }), claims)
    } else {
        let claims = set::signals(&occurrence_of(event))
            .into_iter()
            .find(|(signal, _)| *signal == owed.signal)
            .map(|(_, claims)| claims)
            .unwrap_or_else(|| json!({}));
        let email = data["email"].as_str();
        (set::user_subject(&stream.subject_format, issuer, &event.user_id, &event.user_name, email), claims)
    };
    let envelope = Envelope { issuer, audience: &stream.audience, txn: &event.id, sub_id, issued_at: now };
    set::sign(keys, &envelope, &owed.jti, &owed.signal, claims)
}
