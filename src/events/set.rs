//! Security Event Tokens (RFC 8417) as the Shared Signals Framework 1.0 profiles them (§4):
//! one event per token, the subject in a top-level `sub_id` (RFC 9493), no `sub`, no `exp`,
//! `typ: secevent+jwt`, signed with the current key. And which CAEP 1.0 / RISC 1.0 events
//! each of our events becomes.

use chrono::{DateTime, Utc};
use jsonwebtoken::{encode, Header};
use serde_json::{json, Map, Value};

use super::keys::SigningKeys;

pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
pub const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

/// Every event type a stream may request.
pub const SUPPORTED: &[&str] = &[CREDENTIAL_CHANGE, SESSION_REVOKED, ACCOUNT_DISABLED, ACCOUNT_ENABLED, ACCOUNT_PURGED];

/// What happened, as the outbox records it.
#[derive(Debug, Clone)]
pub struct Occurrence<'a> {
    /// `mfa.reset`, `mfa.enrolled`, `mfa.backup_codes_regenerated`, `user.deactivated`,
    /// `user.reactivated`, `user.deleted`.
    pub kind: &'a str,
    pub at: DateTime<Utc>,
    /// The door it came through (`api`, `bulk`, `scim`, `cli`, `console`, `directory`, `link`).
    pub origin: &'a str,
    pub reason: Option<&'a str>,
    /// The kind of factor an MFA event is about (`totp`, `webauthn`); none before there were
    /// two kinds, which means the authenticator app.
    pub factor: Option<&'a str>,
}

/// The CAEP/RISC events (type URI and its claims) an occurrence becomes; none for a kind that
/// has no counterpart.
pub fn signals(o: &Occurrence) -> Vec<(&'static str, Value)> {
    let mut common = Map::new();
    common.insert("event_timestamp".into(), json!(o.at.timestamp()));
    common.insert("initiating_entity".into(), json!(initiating_entity(o.origin)));
    if let Some(reason) = o.reason.filter(|r| !r.is_empty()) {
        common.insert("reason_admin".into(), json!({ "en": reason }));
    }
    let credential = |change_type: &str| {
        let mut claims = common.clone();
        // CAEP has no type for "a security key or a passkey": roaming (a key, a phone) is
        // the likelier of its two FIDO2 kinds.
        let credential_type = match o.factor {
            Some("webauthn") => "fido2-roaming",
            _ => "app",
        };
        claims.insert("credential_type".into(), json!(credential_type));
        claims.insert("change_type".into(), json!(change_type));
        (CREDENTIAL_CHANGE, Value::Object(claims))
    };
    match o.kind {
        "mfa.reset" => vec![credential("delete")],
        "mfa.enrolled" => vec![credential("create")],
        "mfa.backup_codes_regenerated" => vec![credential("update")],
        "mfa.factor_removed" => vec![credential("delete")],
        // RISC's `reason` names hijacking or bulk abuse only: a deactivation carries none.
        "user.deactivated" => vec![(ACCOUNT_DISABLED, json!({})), (SESSION_REVOKED, Value::Object(common))],
        "user.reactivated" => vec![(ACCOUNT_ENABLED, json!({}))],
        "user.deleted" => vec![(ACCOUNT_PURGED, json!({}))],
        _ => Vec::new(),
    }
}

/// CAEP's initiating entity of a door: people acting as administrators, an upstream system's
/// provisioning policy (the identity provider, the directory), the user on their enrolment
/// link, or this daemon itself.
fn initiating_entity(origin: &str) -> &'static str {
    match origin {
        "api" | "bulk" | "cli" | "console" => "admin",
        "scim" | "directory" => "policy",
        "link" => "user",
        _ => "system",
    }
}

/// One token's claims besides the event.
pub struct Envelope<'a> {
    pub issuer: &'a str,
    pub audience: &'a [String],
    /// The same for every token of one change (RFC 8417 §2.2, SSF §4.1.9).
    pub txn: &'a str,
    /// The subject, in the format the stream asks for (RFC 9493).
    pub sub_id: Value,
    pub issued_at: DateTime<Utc>,
}

/// A signed token carrying one event, with the message id `jti` (the same on every attempt, so
/// a receiver can tell a retry from a new event).
pub fn sign(
    keys: &SigningKeys,
    envelope: &Envelope,
    jti: &str,
    event_type: &str,
    event: Value,
) -> Result<String, jsonwebtoken::errors::Error> {
    let aud = match envelope.audience {
        [one] => json!(one),
        many => json!(many),
    };
    let claims = json!({
        "iss": envelope.issuer,
        "jti": jti,
        "iat": envelope.issued_at.timestamp(),
        "aud": aud,
        "txn": envelope.txn,
        "sub_id": envelope.sub_id,
        "events": { event_type: event },
    });
    let key = &keys.current;
    let mut header = Header::new(key.alg);
    header.typ = Some("secevent+jwt".into());
    header.kid = Some(key.kid.clone());
    encode(&header, &claims, key.encoding_key())
}

/// The subject of a user (RFC 9493): always `iss_sub` (our issuer and the user's id); a stream
/// that asks for `email` or `opaque` (the userName) gets it beside, as `aliases`. A user
/// without an email is named by `iss_sub` alone.
pub fn user_subject(format: &str, issuer: &str, user_id: &str, user_name: &str, email: Option<&str>) -> Value {
    let iss_sub = json!({ "format": "iss_sub", "iss": issuer, "sub": user_id });
    let alias = match (format, email) {
        ("email", Some(email)) => json!({ "format": "email", "email": email }),
        ("opaque", _) => json!({ "format": "opaque", "id": user_name }),
        _ => return iss_sub,
    };
    json!({ "format": "aliases", "identifiers": [iss_sub, alias] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SignatureAlgorithm;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_547_200, 0).unwrap()
    }

    #[test]
    fn a_reset_is_a_credential_change_of_an_app_deleted_by_an_admin_with_the_reason() {
        let o = Occurrence { kind: "mfa.reset", at: at(), origin: "console", reason: Some("lost phone"), factor: None };
        let reset = signals(&o);
        assert_eq!(reset.len(), 1);
        assert_eq!(reset[0].0, CREDENTIAL_CHANGE);
        assert_eq!(
            reset[0].1,
            json!({"credential_type": "app", "change_type": "delete", "initiating_entity": "admin",
                   "reason_admin": {"en": "lost phone"}, "event_timestamp": 1_764_547_200})
        );
        let enrolled = signals(&Occurrence { kind: "mfa.enrolled", origin: "link", reason: None, ..o.clone() });
        assert_eq!(
            (enrolled[0].1["change_type"].as_str(), enrolled[0].1["initiating_entity"].as_str()),
            (Some("create"), Some("user"))
        );
        assert!(enrolled[0].1.get("reason_admin").is_none());
    }

    #[test]
    fn a_security_key_is_a_roaming_fido2_credential_and_its_removal_a_delete() {
        let o = Occurrence { kind: "mfa.reset", at: at(), origin: "api", reason: None, factor: Some("webauthn") };
        assert_eq!(signals(&o)[0].1["credential_type"], "fido2-roaming");
        assert_eq!(signals(&Occurrence { factor: Some("totp"), ..o.clone() })[0].1["credential_type"], "app");
        let removed = signals(&Occurrence { kind: "mfa.factor_removed", ..o });
        assert_eq!(
            (removed[0].0, removed[0].1["change_type"].as_str(), removed[0].1["credential_type"].as_str()),
            (CREDENTIAL_CHANGE, Some("delete"), Some("fido2-roaming"))
        );
    }

    #[test]
    fn a_deactivation_disables_the_account_and_revokes_its_sessions() {
        let o =
            Occurrence { kind: "user.deactivated", at: at(), origin: "directory", reason: Some("gone from LDAP"), factor: None };
        let types: Vec<&str> = signals(&o).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, [ACCOUNT_DISABLED, SESSION_REVOKED]);
        assert_eq!(signals(&Occurrence { kind: "user.reactivated", ..o.clone() })[0].0, ACCOUNT_ENABLED);
        assert_eq!(signals(&Occurrence { kind: "user.deleted", ..o.clone() })[0].0, ACCOUNT_PURGED);
        assert!(signals(&Occurrence { kind: "something.else", ..o }).is_empty());
        assert!(SUPPORTED.iter().all(|t| t.starts_with(CAEP) || t.starts_with(RISC)));
    }

    #[test]
    fn a_token_verifies_with_the_published_key_and_has_the_ssf_shape() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [SignatureAlgorithm::Es256, SignatureAlgorithm::EdDsa] {
            let keys = SigningKeys::load(&dir.path().join(format!("{alg:?}.pem")), alg, &[]).unwrap();
            let audience = vec!["https://rp.example".to_string()];
            let envelope = Envelope {
                issuer: "https://idp.example",
                audience: &audience,
                txn: "t-1",
                sub_id: user_subject("iss_sub", "https://idp.example", "u-1", "ada", None),
                issued_at: at(),
            };
            let jti = "0193-a";
            let token = sign(&keys, &envelope, jti, CREDENTIAL_CHANGE, json!({"change_type": "delete"})).unwrap();
            let header = decode_header(&token).unwrap();
            assert_eq!((header.typ.as_deref(), header.kid.as_deref()), (Some("secevent+jwt"), Some(keys.current.kid.as_str())));
            let jwk = keys.jwks().keys.remove(0);
            let mut validation = Validation::new(keys.current.alg);
            validation.set_audience(&audience);
            validation.set_required_spec_claims(&["iss", "aud"]);
            let claims = decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).unwrap().claims;
            assert_eq!(claims["jti"], jti);
            assert_eq!(claims["sub_id"], json!({"format": "iss_sub", "iss": "https://idp.example", "sub": "u-1"}));
            assert_eq!(claims["events"][CREDENTIAL_CHANGE]["change_type"], "delete");
            assert_eq!(claims["aud"], "https://rp.example");
            assert!(claims.get("sub").is_none() && claims.get("exp").is_none(), "{claims}");
        }
    }
}
