//! Security keys and passkeys (WebAuthn) beside the authenticator app, with webauthn-rs doing
//! the cryptography. A ceremony (registration or authentication) is started, its state kept in
//! the store for five minutes, and finished once: the finish takes the state for good before it
//! checks anything, so a response cannot be played twice. Every finished authentication must
//! carry a higher signature counter than the last one seen; a lower one is what a cloned key
//! shows, refused and audited.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::NaiveDateTime;
use serde_json::json;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use super::{backup_codes, user_name, BackupCodes, Mfa};
use crate::config::{RelyingParty as RpConfig, UserVerification};
use crate::domain::audit::{self, Actor};
use crate::domain::events;
use crate::domain::{Error, Invalid, Result};
use crate::store::mfa::FactorStatus;
use crate::store::webauthn::{self as stored, Kind, MAX_PER_USER};
use crate::store::{self, mfa as factors, users as store_users};

pub(crate) const MFA_WEBAUTHN_REMOVED: &str = "mfa.webauthn.removed";
pub(crate) const MFA_WEBAUTHN_CLONE_SUSPECTED: &str = "mfa.webauthn.clone_suspected";

/// How long a started ceremony can be finished.
pub const CEREMONY_TTL: chrono::Duration = chrono::Duration::minutes(5);

/// The longest name a credential may be given, in characters.
pub const MAX_NAME_CHARS: usize = 64;

pub(crate) use crate::scim::resource::TOTP_NAME;

/// The relying party the ceremonies are run for.
pub struct RelyingParty {
    webauthn: Webauthn,
    allowed_aaguids: Vec<Uuid>,
}

impl RelyingParty {
    pub fn new(config: &RpConfig) -> std::result::Result<Self, String> {
        let (first, others) = config.origins.split_first().ok_or("mfa.webauthn.origins: no origin")?;
        let mut builder = WebauthnBuilder::new(&config.id, first)
            .map_err(|e| format!("mfa.webauthn: the relying party {} with the origin {first}: {e}", config.id))?
            .rp_name(&config.name)
            .timeout(CEREMONY_TTL.to_std().expect("positive"))
            .danger_set_user_presence_only_security_keys(config.user_verification == UserVerification::Discouraged);
        for origin in others {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder.build().map_err(|e| format!("mfa.webauthn: {e}"))?;
        Ok(RelyingParty { webauthn, allowed_aaguids: config.allowed_aaguids.clone() })
    }
}

/// A started ceremony: the options for `navigator.credentials`, and the id to finish it with.
#[derive(Debug)]
pub struct Started<T> {
    pub ceremony_id: String,
    pub options: T,
    pub expires_at: NaiveDateTime,
}

/// One of a user's factors, as the API and the console list them (never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorInfo {
    /// `totp` or `webauthn`.
    pub kind: &'static str,
    /// The credential id (base64url) of a WebAuthn factor.
    pub id: Option<String>,
    pub name: String,
    pub aaguid: Option<String>,
    /// The authenticator's model, where its AAGUID is one we know.
    pub model: Option<&'static str>,
    pub created: NaiveDateTime,
    pub last_used: Option<NaiveDateTime>,
}

/// A registered credential, and the backup codes when it is the user's first factor.
#[derive(Debug)]
pub struct Registered {
    pub factor: FactorInfo,
    pub backup_codes: Option<BackupCodes>,
}

/// The answer to a finished authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assertion {
    Valid {
        credential_id: String,
        name: String,
    },
    /// The response does not prove the key (wrong origin, signature, challenge…): why.
    Refused(String),
    /// The signature counter went back: another copy of the key signed. Refused and audited.
    CloneSuspected {
        credential_id: String,
    },
}

/// A WebAuthn user handle for a user id: not the id itself (authenticators may show or keep
/// it), the same for every ceremony of the user.
fn user_handle(user_id: &str) -> Uuid {
    let digest = Sha256::digest(user_id.as_bytes());
    uuid::Builder::from_random_bytes(digest[..16].try_into().expect("16 bytes")).into_uuid()
}

/// What the authenticator said of itself at registration: its model id (AAGUID; absent or all
/// zeros when it says nothing) and its signature counter.
fn authenticator_data(response: &RegisterPublicKeyCredential) -> (Option<Uuid>, i64) {
    use serde_cbor_2::Value;
    let Ok(Value::Map(object)) = serde_cbor_2::from_slice::<Value>(&response.response.attestation_object) else {
        return (None, 0);
    };
    let Some(Value::Bytes(data)) = object.get(&Value::Text("authData".into())) else { return (None, 0) };
    let count = data.get(33..37).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as i64).unwrap_or(0);
    // Flag AT (0x40): attested credential data follows the counter, the AAGUID first.
    let attested = data.get(32).is_some_and(|flags| flags & 0x40 != 0);
    let aaguid =
        data.get(37..53).filter(|_| attested).map(|b| Uuid::from_bytes(b.try_into().expect("16 bytes"))).filter(|u| !u.is_nil());
    (aaguid, count)
}

/// Well-known authenticator models by AAGUID (the FIDO Metadata Service and the passkey
/// providers' published ids); others show their AAGUID only.
const MODELS: &[(&str, &str)] = &[
    ("cb69481e-8ff7-4039-93ec-0a2729a154a8", "YubiKey 5 Series"),
    ("ee882879-721c-4913-9775-3dfcce97072a", "YubiKey 5 Series"),
    ("fa2b99dc-9e39-4257-8f92-4a30d23c4118", "YubiKey 5 Series with NFC"),
    ("2fc0579f-8113-47ea-b116-bb5a8db9202a", "YubiKey 5 Series with NFC"),
    ("c5ef55ff-ad9a-4b9f-b580-adebafe026d0", "YubiKey 5Ci"),
    ("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4", "Google Password Manager"),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
];

fn model_of(aaguid: Option<&str>) -> Option<&'static str> {
    let aaguid = aaguid?;
    MODELS.iter().find(|(id, _)| *id == aaguid).map(|(_, model)| *model)
}

fn info(c: &stored::Credential) -> FactorInfo {
    FactorInfo {
        kind: "webauthn",
        id: Some(c.id.clone()),
        name: c.name.clone(),
        aaguid: c.aaguid.clone(),
        model: model_of(c.aaguid.as_deref()),
        created: c.created_at,
        last_used: c.last_used_at,
    }
}

/// A name the user gave a credential: trimmed, not empty, at most [`MAX_NAME_CHARS`].
fn credential_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            Invalid::Value,
            format!("name: give the security key or passkey a name of 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(store::Error::Corrupt(format!("{what}: {e}")))
}

impl Mfa {
    fn relying_party(&self) -> Result<&RelyingParty> {
        self.webauthn.as_deref().ok_or_else(|| {
            Error::conflict(
                "security keys and passkeys are off: set [mfa.webauthn] rp_id and origins, or server.public_url, and restart",
            )
        })
    }

    /// The user's factors: the authenticator app (once confirmed), then the security keys and
    /// passkeys, oldest first.
    pub(super) fn factors(&self, conn: &mut store::DbConn, user_id: &str) -> Result<Vec<FactorInfo>> {
        let f = self.factor(conn, user_id)?;
        let mut out = Vec::new();
        if let Some(created) = f.totp_enrolled_at {
            let last_used = f
                .last_step
                .map(|step| step.saturating_mul(self.policy.period as i64))
                .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                .map(|t| t.naive_utc())
                .filter(|t| *t > created);
            out.push(FactorInfo {
                kind: "totp",
                id: None,
                name: TOTP_NAME.into(),
                aaguid: None,
                model: None,
                created,
                last_used,
            });
        }
        out.extend(stored::of_user(conn, user_id)?.iter().map(info));
        Ok(out)
    }

    fn keys_of(&self, conn: &mut store::DbConn, user_id: &str) -> Result<Vec<(stored::Credential, SecurityKey)>> {
        stored::of_user(conn, user_id)?
            .into_iter()
            .map(|c| {
                let key = serde_json::from_str(&c.credential).map_err(|e| corrupt("a stored WebAuthn credential", e))?;
                Ok((c, key))
            })
            .collect()
    }

    /// Stores a ceremony's state and answers with its id.
    fn keep<T>(&self, conn: &mut store::PooledConn, user_id: &str, kind: Kind, state: String, options: T) -> Result<Started<T>> {
        let (_, at) = self.now();
        let expires_at = at + CEREMONY_TTL;
        let ceremony_id = uuid::Uuid::new_v4().to_string();
        store::write_tx(conn, |tx| stored::put_ceremony(tx, &ceremony_id, user_id, kind, &state, at, expires_at))?;
        Ok(Started { ceremony_id, options, expires_at })
    }

    /// Takes the user's ceremony for good (used or not, it cannot be finished again) and reads
    /// its state and when it started, unless it expired.
    fn take<T: serde::de::DeserializeOwned>(
        &self,
        conn: &mut store::PooledConn,
        user_id: &str,
        ceremony_id: &str,
        kind: Kind,
    ) -> Result<(T, NaiveDateTime)> {
        let (_, at) = self.now();
        let what = match kind {
            Kind::Registration => "registration",
            Kind::Authentication => "authentication",
        };
        let taken = store::write_tx(conn, |tx| stored::take_ceremony(tx, ceremony_id, user_id, kind))?;
        let Some((state, expires_at)) = taken else {
            return Err(Error::conflict(format!(
                "no such {what} is waiting (it was finished already, or never started): start a new one"
            )));
        };
        if expires_at <= at {
            return Err(Error::conflict(format!("the {what} expired (after 5 minutes): start a new one")));
        }
        let state = serde_json::from_str(&state).map_err(|e| corrupt("a stored WebAuthn ceremony", e))?;
        Ok((state, expires_at - CEREMONY_TTL))
    }

    /// Starts registering a security key or passkey: the options for
    /// `navigator.credentials.create()`, which exclude the user's keys already registered.
    pub(crate) fn start_registration(&self, user_id: &str) -> Result<Started<CreationChallengeResponse>> {
        let rp = self.relying_party()?;
        let mut conn = self.pool.get()?;
        let user = store_users::get(&mut conn, user_id)?.ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))?;
        let keys = self.keys_of(&mut conn, user_id)?;
        if keys.len() as i64 >= MAX_PER_USER {
            return Err(too_many());
        }
        let exclude = keys.iter().map(|(_, k)| k.cred_id().clone()).collect();
        let display = user.body.get("displayName").and_then(|v| v.as_str()).unwrap_or(user.user_name());
        let (mut options, state) = rp
            .webauthn
            .start_securitykey_registration(user_handle(user_id), user.user_name(), display, Some(exclude), None, None)
            .map_err(|e| Error::invalid(Invalid::Value, format!("cannot start the registration: {e}")))?;
        // webauthn-rs asks for strict credential protection while user verification is only
        // preferred, which Chromium refuses ("protection policy is inconsistent",
        // kanidm/webauthn-rs#490). The request is not enforced anyway: leave it out, so that a
        // front end can hand the options to the browser unchanged.
        if let Some(extensions) = options.public_key.extensions.as_mut() {
            extensions.cred_protect = None;
        }
        let state = serde_json::to_string(&state).map_err(|e| corrupt("a WebAuthn registration", e))?;
        self.keep(&mut conn, user_id, Kind::Registration, state, options)
    }

    /// Finishes a registration with the authenticator's response: the credential is the
    /// user's, named `name`. The user's first factor comes with backup codes and ends their
    /// enrolment link; `also` runs in the same transaction and may refuse it.
    pub(crate) fn finish_registration(
        &self,
        user_id: &str,
        ceremony_id: &str,
        name: &str,
        response: &RegisterPublicKeyCredential,
        actor: &Actor,
        also: impl FnOnce(&mut store::Tx) -> Result<()>,
    ) -> Result<Registered> {
        let rp = self.relying_party()?;
        let name = credential_name(name)?;
        let mut conn = self.pool.get()?;
        let (state, started): (SecurityKeyRegistration, _) = self.take(&mut conn, user_id, ceremony_id, Kind::Registration)?;
        let key = rp
            .webauthn
            .finish_securitykey_registration(response, &state)
            .map_err(|e| Error::invalid(Invalid::Value, format!("the authenticator's response was refused: {e}")))?;
        let (aaguid, sign_count) = authenticator_data(response);
        if !rp.allowed_aaguids.is_empty() && !aaguid.is_some_and(|a| rp.allowed_aaguids.contains(&a)) {
            let model = aaguid.map_or("an unnamed model".to_string(), |a| format!("AAGUID {a}"));
            return Err(Error::invalid(
                Invalid::Value,
                format!("this authenticator ({model}) is not one this service accepts (mfa.webauthn.allowed_aaguids)"),
            ));
        }
        let aaguid = aaguid.map(|a| a.to_string());
        let id = URL_SAFE_NO_PAD.encode(key.cred_id());
        let credential = serde_json::to_string(&key).map_err(|e| corrupt("a WebAuthn credential", e))?;
        let first = self.factor(&mut conn, user_id)?.status != FactorStatus::Enrolled;
        let codes = first.then(backup_codes::generate);
        let hashes: Vec<String> = codes.iter().flatten().map(|c| backup_codes::hash(c)).collect();
        let user_name = user_name(&mut conn, user_id)?;
        let (_, at) = self.now();
        let new = stored::NewCredential {
            id: &id,
            user_id,
            name: &name,
            aaguid: aaguid.as_deref(),
            credential: &credential,
            sign_count,
            created_at: at,
        };
        let codes = store::write_tx(&mut conn, |tx| {
            factors::lock_user(tx, user_id)?;
            if !factors::lock(tx, user_id, None)? {
                return Err(Error::NotFound(format!("no user with id {user_id}")));
            }
            also(tx)?;
            if stored::of_user(tx, user_id)?.len() as i64 >= MAX_PER_USER {
                return Err(too_many());
            }
            let factor = factors::get(tx, user_id)?.ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))?;
            // A reset since the ceremony started removed every factor: a key begun before it
            // must not survive it.
            if factor.last_reset_at.is_some_and(|reset| reset >= started) {
                return Err(Error::conflict("the user's factors were reset meanwhile: start the registration again"));
            }
            // First now, inside the transaction: read before it, it may have changed (a factor
            // removed meanwhile would leave this one without backup codes).
            if (factor.status != FactorStatus::Enrolled) != first {
                return Err(Error::conflict("the user's factors changed meanwhile: start the registration again"));
            }
            if !stored::insert(tx, &new)? {
                return Err(Error::conflict("this security key or passkey is registered already"));
            }
            stored::refresh(tx, user_id, at)?;
            let user = (user_id, user_name.as_str());
            let detail = json!({"method": "webauthn", "name": name, "credentialId": id, "aaguid": aaguid});
            let mut trail = vec![audit::event(at, audit::MFA_ENROLLED, user, actor, None, Some(detail))];
            let codes = match codes {
                Some(codes) => {
                    factors::replace_codes(tx, user_id, &hashes)?;
                    store::enrolment_links::delete_of(tx, user_id)?;
                    let detail = json!({"count": codes.len()});
                    trail.push(audit::event(at, audit::MFA_BACKUP_CODES_GENERATED, user, actor, None, Some(detail)));
                    Some(BackupCodes(codes))
                }
                None => None,
            };
            audit::write(tx, &trail)?;
            events::record_factor(tx, events::MFA_ENROLLED, events::Factor::Webauthn, user_id, actor, None, at)?;
            Ok(codes)
        })?;
        let factor = FactorInfo {
            kind: "webauthn",
            id: Some(id.clone()),
            name,
            model: model_of(aaguid.as_deref()),
            aaguid,
            created: at,
            last_used: None,
        };
        Ok(Registered { factor, backup_codes: codes })
    }

    /// Starts an authentication with one of the user's security keys or passkeys: the options
    /// for `navigator.credentials.get()`.
    pub(crate) fn start_authentication(&self, user_id: &str) -> Result<Started<RequestChallengeResponse>> {
        let rp = self.relying_party()?;
        let mut conn = self.pool.get()?;
        self.factor(&mut conn, user_id)?;
        let keys: Vec<SecurityKey> = self.keys_of(&mut conn, user_id)?.into_iter().map(|(_, k)| k).collect();
        if keys.is_empty() {
            return Err(Error::conflict("the user has no security key or passkey"));
        }
        let (options, state) = rp
            .webauthn
            .start_securitykey_authentication(&keys)
            .map_err(|e| Error::invalid(Invalid::Value, format!("cannot start the authentication: {e}")))?;
        let state = serde_json::to_string(&state).map_err(|e| corrupt("a WebAuthn authentication", e))?;
        self.keep(&mut conn, user_id, Kind::Authentication, state, options)
    }

    /// Finishes an authentication with the authenticator's response.
    pub(crate) fn finish_authentication(
        &self,
        user_id: &str,
        ceremony_id: &str,
        response: &PublicKeyCredential,
        actor: &Actor,
    ) -> Result<Assertion> {
        let rp = self.relying_party()?;
        let mut conn = self.pool.get()?;
        let (state, _): (SecurityKeyAuthentication, _) = self.take(&mut conn, user_id, ceremony_id, Kind::Authentication)?;
        let credential_id = URL_SAFE_NO_PAD.encode(&response.raw_id);
        let result = match rp.webauthn.finish_securitykey_authentication(response, &state) {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return self.clone_suspected(&mut conn, user_id, &credential_id, actor);
            }
            Err(e) => return Ok(Assertion::Refused(e.to_string())),
        };
        let credential_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        let Some(row) = stored::get(&mut conn, &credential_id)?.filter(|c| c.user_id == user_id) else {
            // Removed (or reset) since the start.
            return Ok(Assertion::Refused("the security key or passkey is no longer registered".into()));
        };
        let mut key: SecurityKey =
            serde_json::from_str(&row.credential).map_err(|e| corrupt("a stored WebAuthn credential", e))?;
        key.update_credential(&result);
        let updated = serde_json::to_string(&key).map_err(|e| corrupt("a WebAuthn credential", e))?;
        let (_, at) = self.now();
        let counted =
            store::write_tx(&mut conn, |tx| stored::record_use(tx, &credential_id, result.counter() as i64, &updated, at))?;
        if !counted {
            if stored::get(&mut conn, &credential_id)?.is_none() {
                return Ok(Assertion::Refused("the security key or passkey is no longer registered".into()));
            }
            return self.clone_suspected(&mut conn, user_id, &credential_id, actor);
        }
        Ok(Assertion::Valid { credential_id, name: row.name })
    }

    /// Audits an assertion whose counter went back (`mfa.webauthn.clone_suspected`).
    fn clone_suspected(
        &self,
        conn: &mut store::PooledConn,
        user_id: &str,
        credential_id: &str,
        actor: &Actor,
    ) -> Result<Assertion> {
        let user_name = user_name(conn, user_id)?;
        let name = stored::get(conn, credential_id)?.map(|c| c.name);
        let (_, at) = self.now();
        let detail = json!({"credentialId": credential_id, "name": name});
        let event = audit::event(at, MFA_WEBAUTHN_CLONE_SUSPECTED, (user_id, &user_name), actor, None, Some(detail));
        store::write_tx(conn, |tx| audit::write(tx, &[event]))?;
        tracing::warn!(user_id = %user_id, credential_id = %credential_id, "a WebAuthn assertion's signature counter went back: the key may be cloned");
        Ok(Assertion::CloneSuspected { credential_id: credential_id.to_string() })
    }

    /// Removes one security key or passkey (audited); the user's last factor gone, they are
    /// `pending` and enrol again.
    pub(crate) fn remove_credential(&self, user_id: &str, credential_id: &str, actor: &Actor) -> Result<()> {
        let mut conn = self.pool.get()?;
        let user_name = user_name(&mut conn, user_id)?;
        let (_, at) = self.now();
        store::write_tx(&mut conn, |tx| {
            factors::lock_user(tx, user_id)?;
            factors::lock(tx, user_id, None)?;
            let Some(name) = stored::delete(tx, user_id, credential_id)? else {
                return Err(Error::NotFound(format!("the user has no security key or passkey with id {credential_id}")));
            };
            stored::refresh(tx, user_id, at)?;
            let detail = json!({"name": name, "credentialId": credential_id});
            let event = audit::event(at, MFA_WEBAUTHN_REMOVED, (user_id, &user_name), actor, None, Some(detail));
            audit::write(tx, &[event])?;
            events::record_factor(tx, events::MFA_FACTOR_REMOVED, events::Factor::Webauthn, user_id, actor, None, at)?;
            Ok(())
        })
    }
}

fn too_many() -> Error {
    Error::conflict(format!(
        "the user has {MAX_PER_USER} security keys and passkeys, the most one user may hold: remove one first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_handle_is_stable_and_not_the_id() {
        let a = user_handle("0190a8b2-7c1e-7000-8000-000000000001");
        assert_eq!(a, user_handle("0190a8b2-7c1e-7000-8000-000000000001"));
        assert_ne!(a, user_handle("0190a8b2-7c1e-7000-8000-000000000002"));
        assert_ne!(a.to_string(), "0190a8b2-7c1e-7000-8000-000000000001");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(credential_name("  YubiKey 5C ").unwrap(), "YubiKey 5C");
        for bad in ["", "   ", "a\u{0}b", &"é".repeat(MAX_NAME_CHARS + 1)] {
            assert!(credential_name(bad).is_err(), "{bad:?}");
        }
        assert!(credential_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn known_models_are_named() {
        assert_eq!(model_of(Some("fbfc3007-154e-4ecc-8c0b-6e020557d7bd")), Some("iCloud Keychain"));
        assert_eq!(model_of(Some("00000000-0000-0000-0000-000000000001")), None);
        assert_eq!(model_of(None), None);
    }
}
