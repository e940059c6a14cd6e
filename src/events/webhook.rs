//! Webhooks as Standard Webhooks sign them: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (`v1,` and the base64 of HMAC-SHA256 over `id.timestamp.body`, keyed
//! with the secret's bytes), and a JSON body with the event's data.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::domain::events::EventRow;

/// A webhook's signing key. `Debug` shows nothing of it.
pub struct SigningSecret(ring::hmac::Key);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// From the secret as Standard Webhooks issues it: `whsec_` and base64 (the prefix may be left out).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let bytes = B64.decode(b64).map_err(|_| "is not whsec_ followed by base64".to_string())?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!("is {} bytes long; Standard Webhooks secrets are 24 to 64 bytes", bytes.len()));
        }
        Ok(SigningSecret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)))
    }

    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Self {
        SigningSecret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The `webhook-signature` header's value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let tag = ring::hmac::sign(&self.0, format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", B64.encode(tag.as_ref()))
    }
}

/// The JSON body of an event: its type, when it happened, and about whom.
pub fn body(event: &EventRow) -> String {
    let data: Value = serde_json::from_str(&event.data).unwrap_or_else(|_| json!({}));
    let mut body = json!({
        "type": event.event_type,
        "timestamp": event.at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {
            "eventId": event.id,
            "userId": event.user_id,
            "userName": event.user_name,
            "email": data.get("email"),
            "origin": event.origin,
            "actor": event.actor,
            "reason": event.reason,
            "requestId": data.get("requestId"),
        },
    });
    // MFA events say which kind of factor (`totp`, `webauthn`) they are about.
    if let Some(factor) = data.get("factor") {
        body["data"]["factor"] = factor.clone();
    }
    body.to_string()
}

/// The headers of one attempt (the id is the same on every attempt, the time is now).
pub fn headers(secret: &SigningSecret, id: &str, now: DateTime<Utc>, body: &str) -> [(&'static str, String); 3] {
    let timestamp = now.timestamp();
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", secret.sign(id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // Key bytes 0..31, as the reference implementations' tests sign them.
        let key: Vec<u8> = (0u8..32).collect();
        let secret = SigningSecret::from_bytes(&key);
        assert_eq!(secret.sign("msg_1", 1_700_000_000, "{}"), "v1,fhksJF5ElKjlPoT/jtefCO5XjQPvhf7Dhf/8R1ad9yU=");
        let parsed = SigningSecret::parse(&format!("whsec_{}", B64.encode(&key))).unwrap();
        assert_eq!(parsed.sign("msg_1", 1_700_000_000, "{}"), secret.sign("msg_1", 1_700_000_000, "{}"));
    }

    #[test]
    fn a_secret_that_is_not_one_is_refused_without_showing_it() {
        for bad in ["whsec_***", "whsec_c2hvcnQ=", ""] {
            let e = SigningSecret::parse(bad).unwrap_err();
            assert!(!e.contains("c2hvcnQ"), "{e}");
        }
        assert_eq!(format!("{:?}", SigningSecret::from_bytes(&[7; 32])), "SigningSecret(***)");
    }
}
