//! Second factors: the authenticator app (TOTP: enrolment, verification with replay refusal and
//! lockout), security keys and passkeys (`webauthn`), backup codes, and resets of them all for
//! one user or many. Secrets are sealed (`seal`), codes hashed.

pub mod backup_codes;
mod enrolment;
pub mod links;
pub mod reset;
pub mod seal;
pub mod totp;
pub mod webauthn;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDateTime, Utc};
use serde_json::json;

use crate::clock::{self, Clock};
use crate::config;
use crate::domain::audit::{self, Actor};
use crate::domain::events;
use crate::domain::{Error, Invalid, Result};
use crate::store::mfa::FactorStatus;
use crate::store::{self, mfa as factors, users as store_users, Pool};

pub use reset::Reason;
pub use seal::Sealer;
pub use totp::{Enrolment, Policy};

/// What `GET /api/v1/users/{id}/mfa` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub status: FactorStatus,
    pub enrolled_at: Option<NaiveDateTime>,
    pub last_reset_at: Option<NaiveDateTime>,
    pub backup_codes_remaining: usize,
    /// Until when wrong codes lock verification (only while it holds).
    pub locked_until: Option<NaiveDateTime>,
    pub factors: Vec<webauthn::FactorInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    BackupCode,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::BackupCode => "backup_code",
        }
    }
}

/// The answer to a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Valid(Method),
    Invalid,
    /// Too many wrong codes: no code is checked until then.
    LockedOut {
        retry_after_secs: u64,
    },
}

/// Backup codes shown once. `Debug` hides them.
pub struct BackupCodes(pub Vec<String>);

impl std::fmt::Debug for BackupCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupCodes({} codes)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResetDone {
    pub id: String,
    pub reset_at: NaiveDateTime,
}

/// Which users a bulk reset is for.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    Ids(Vec<String>),
    /// Every user a search finds.
    Matching(crate::domain::users::Matching),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Reset,
    NotFound,
    Error,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Reset => "reset",
            Outcome::NotFound => "not_found",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BulkResult {
    pub id: String,
    pub user_name: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

/// Why this instance may not seal with its key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyMismatch {
    /// Stored secrets are sealed under these key ids, which this instance does not hold.
    #[error("stored TOTP secrets are sealed under key ids this instance does not hold: {}", .0.join(", "))]
    Unknown(Vec<String>),
    /// The deployment seals with `recorded`, which this instance does not know.
    #[error("this instance seals with key id {mine}, the deployment with key id {recorded}")]
    Wrong { mine: String, recorded: String },
    #[error(transparent)]
    Unreadable(#[from] Error),
}

impl From<store::Error> for KeyMismatch {
    fn from(e: store::Error) -> Self {
        KeyMismatch::Unreadable(e.into())
    }
}

impl From<diesel::result::Error> for KeyMismatch {
    fn from(e: diesel::result::Error) -> Self {
        KeyMismatch::Unreadable(e.into())
    }
}

/// Users written per transaction in a bulk reset: large enough to amortise the commit, small
/// enough not to hold SQLite's write lock for long.
const BULK_CHUNK: usize = 500;

#[derive(Clone)]
pub struct Mfa {
    pool: Pool,
    sealer: Arc<Sealer>,
    policy: Policy,
    max_failures: u32,
    lockout_window: chrono::Duration,
    max_bulk: usize,
    clock: Arc<dyn Clock>,
    /// Security keys and passkeys, when a relying party is configured.
    webauthn: Option<Arc<webauthn::RelyingParty>>,
}

impl Mfa {
    pub fn new(pool: Pool, sealer: Arc<Sealer>, config: &config::Mfa, clock: Arc<dyn Clock>) -> Self {
        Mfa {
            pool,
            sealer,
            policy: Policy::from_config(config),
            max_failures: config.max_failures,
            lockout_window: chrono::Duration::seconds(config.lockout_window as i64),
            max_bulk: config.max_bulk_reset,
            clock,
            webauthn: None,
        }
    }

    /// Runs WebAuthn ceremonies for `relying_party` (built once at start from `[mfa.webauthn]`).
    pub fn with_webauthn(mut self, relying_party: Option<webauthn::RelyingParty>) -> Self {
        self.webauthn = relying_party.map(Arc::new);
        self
    }

    fn now(&self) -> (chrono::DateTime<Utc>, NaiveDateTime) {
        let now = self.clock.now();
        (now, clock::stored(now))
    }

    fn factor(&self, conn: &mut store::DbConn, user_id: &str) -> Result<factors::Factor> {
        factors::get(conn, user_id)?.ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))
    }

    fn secret(&self, f: &factors::Factor) -> Result<Vec<u8>> {
        let sealed = f.secret_sealed.as_deref().ok_or_else(|| Error::conflict("no TOTP secret is stored"))?;
        self.sealer.open(&f.user_id, sealed).map_err(|e| Error::from(store::Error::Corrupt(e.to_string())))
    }

    pub(crate) fn status(&self, user_id: &str) -> Result<Status> {
        let mut conn = self.pool.get()?;
        let f = self.factor(&mut conn, user_id)?;
        let remaining = factors::unused_codes(&mut conn, user_id)?.len();
        let (_, at) = self.now();
        Ok(Status {
            status: f.status,
            enrolled_at: f.enrolled_at,
            last_reset_at: f.last_reset_at,
            backup_codes_remaining: remaining,
            locked_until: f.locked_until.filter(|u| *u > at),
            factors: self.factors(&mut conn, user_id)?,
        })
    }

    /// Refuses to serve with keys that cannot open the stored secrets, or with a current key
    /// other than the deployment's. An instance started without the key file the others share
    /// would create a key of its own and then fail every verification of a factor enrolled
    /// elsewhere, or seal new factors the others cannot open: the first instance records the id
    /// of its key, and every later one must seal with that key (or be rotating away from it: it
    /// then knows it as a previous key, and records its own).
    pub(crate) fn check_deployment_key(&self) -> std::result::Result<(), KeyMismatch> {
        let mut conn = self.pool.get().map_err(Error::from)?;
        let ids = factors::sealing_key_ids(&mut conn).map_err(Error::from)?;
        let unknown = self.sealer.unknown_keys(&ids);
        if !unknown.is_empty() {
            return Err(KeyMismatch::Unknown(unknown.into_iter().map(String::from).collect()));
        }
        let mine = self.sealer.current_id();
        let rotated = store::write_tx(&mut conn, |tx| {
            let recorded = store::deployment::claim(tx, store::deployment::MFA_KEY_ID, mine)?;
            if recorded == mine {
                return Ok(None);
            }
            if !self.sealer.knows(&recorded) {
                return Err(KeyMismatch::Wrong { mine: mine.to_string(), recorded });
            }
            // Rotating: the recorded key is one of this instance's previous keys.
            store::deployment::set(tx, store::deployment::MFA_KEY_ID, mine)?;
            Ok(Some(recorded))
        })?;
        if let Some(previous) = rotated {
            tracing::info!(previous = %previous, current = %mine, "MFA key rotation: new secrets are sealed under the new key");
        }
        Ok(())
    }

    /// Refuses to seal under a key other than the deployment's (another instance rotated the key
    /// since this one started): what this instance sealed now, the others could not open once
    /// the old key is retired.
    fn check_sealing_key(&self, conn: &mut store::DbConn) -> Result<()> {
        let recorded = store::deployment::get(conn, store::deployment::MFA_KEY_ID)?;
        match recorded {
            Some(id) if id != self.sealer.current_id() => {
                tracing::error!(recorded = %id, mine = %self.sealer.current_id(), "this instance's MFA key is not the deployment's: restart it with the shared key");
                Err(Error::Store(store::Error::Corrupt(format!(
                    "this instance seals with MFA key id {} but the deployment's key is {id}",
                    self.sealer.current_id()
                ))))
            }
            _ => Ok(()),
        }
    }

    /// Checks a TOTP code or an unused backup code (a user with security keys only has the
    /// latter).
    pub fn verify(&self, user_id: &str, code: &str, actor: &Actor) -> Result<Verification> {
        let mut conn = self.pool.get()?;
        let f = self.factor(&mut conn, user_id)?;
        let (now, at) = self.now();
        if let Some(locked) = lockout(&f, at) {
            return Ok(locked);
        }
        if f.status != FactorStatus::Enrolled {
            return Err(Error::conflict(format!("the user has no confirmed factor (status {})", f.status)));
        }
        let step = match f.has_totp() {
            true => self.policy.check(&self.secret(&f)?, code, now.timestamp().max(0) as u64),
            false => None,
        };
        if let Some(step) = step {
            // A step accepted before (or an older one) is a replay and counts as a failure;
            // so does a right code while a lockout (set by a parallel request) holds.
            if store::write_tx(&mut conn, |tx| factors::accept_step(tx, user_id, step as i64, at))? {
                return Ok(Verification::Valid(Method::Totp));
            }
        } else if backup_codes::looks_like_one(code) {
            let hashes = factors::unused_codes(&mut conn, user_id)?;
            if let Some(i) = backup_codes::find(code, &hashes) {
                if let Some(answer) = self.spend_backup_code(&mut conn, user_id, &hashes, i, at, actor)? {
                    return Ok(answer);
                }
            }
        }
        let answer = self.record_failure(&mut conn, user_id, at, actor)?;
        crate::metrics::METRICS.mfa_verify_failures.inc();
        Ok(answer)
    }

    /// Spends the backup code whose hash is `hashes[i]`: valid, unless a lockout was set
    /// meanwhile (the lock on the factor row makes this and the failure count take turns);
    /// `None` when a concurrent request spent it first.
    fn spend_backup_code(
        &self,
        conn: &mut store::PooledConn,
        user_id: &str,
        hashes: &[String],
        i: usize,
        at: NaiveDateTime,
        actor: &Actor,
    ) -> Result<Option<Verification>> {
        let name = user_name(conn, user_id)?;
        store::write_tx(conn, |conn| {
            factors::lock_user(conn, user_id)?;
            if !factors::lock(conn, user_id, Some(FactorStatus::Enrolled))? {
                return Ok(None);
            }
            let Some(f) = factors::get(conn, user_id)? else { return Ok(None) };
            if let Some(locked) = lockout(&f, at) {
                return Ok(Some(locked));
            }
            if !factors::use_code(conn, user_id, &hashes[i], at)? {
                return Ok(None);
            }
            factors::clear_failures(conn, user_id)?;
            let remaining = hashes.len() - 1;
            let e = audit::event(
                at,
                audit::MFA_BACKUP_CODE_USED,
                (user_id, &name),
                actor,
                None,
                Some(json!({"remaining": remaining})),
            );
            audit::write(conn, &[e])?;
            Ok::<_, Error>(Some(Verification::Valid(Method::BackupCode)))
        })
    }

    /// Counts a wrong code; the `max_failures`-th within the window locks verification. A code
    /// that arrives while a lockout holds is not counted: it is answered as locked out.
    fn record_failure(
        &self,
        conn: &mut store::PooledConn,
        user_id: &str,
        at: NaiveDateTime,
        actor: &Actor,
    ) -> Result<Verification> {
        let name = user_name(conn, user_id)?;
        // Counted on the row as it is once locked inside the write transaction, not as this
        // request read it earlier: wrong codes sent in parallel, to one instance or several,
        // all count, one after the other, and none may lift a lockout.
        let (answer, locked_now) = store::write_tx(conn, |conn| {
            if !factors::lock(conn, user_id, None)? {
                return Ok::<_, Error>((Verification::Invalid, false));
            }
            let Some(now) = factors::get(conn, user_id)? else { return Ok((Verification::Invalid, false)) };
            if let Some(locked) = lockout(&now, at) {
                return Ok((locked, false));
            }
            let in_window = now.failures_since.filter(|since| at - *since < self.lockout_window);
            let (failures, since) = match in_window {
                Some(since) => (now.failures + 1, since),
                None => (1, at),
            };
            if failures < self.max_failures as i32 {
                factors::set_failures(conn, user_id, failures, Some(since), None)?;
                return Ok((Verification::Invalid, false));
            }
            let until = at + self.lockout_window;
            factors::set_failures(conn, user_id, 0, None, Some(until))?;
            let detail = json!({"failures": failures, "lockedUntil": crate::scim::resource::datetime(&until.and_utc())});
            let e = audit::event(at, audit::MFA_VERIFY_LOCKED_OUT, (user_id, &name), actor, None, Some(detail));
            audit::write(conn, &[e])?;
            Ok((Verification::Invalid, true))
        })?;
        if locked_now {
            tracing::warn!(user_id = %user_id, "MFA verification locked after too many wrong codes");
        }
        Ok(answer)
    }

    /// A new set of backup codes; the old set stops working.
    pub(crate) fn regenerate_backup_codes(&self, user_id: &str, actor: &Actor) -> Result<BackupCodes> {
        let mut conn = self.pool.get()?;
        let f = self.factor(&mut conn, user_id)?;
        if f.status != FactorStatus::Enrolled {
            return Err(Error::conflict(format!("backup codes need a confirmed factor (status {})", f.status)));
        }
        let codes = backup_codes::generate();
        let hashes: Vec<String> = codes.iter().map(|c| backup_codes::hash(c)).collect();
        let name = user_name(&mut conn, user_id)?;
        let (_, at) = self.now();
        store::write_tx(&mut conn, |conn| {
            // Still enrolled now, inside the transaction: a reset in between must not be
            // followed by codes for a factor that no longer exists.
            factors::lock_user(conn, user_id)?;
            if !factors::lock(conn, user_id, Some(FactorStatus::Enrolled))? {
                return Err(Error::conflict("the factor was reset meanwhile; enrol again first"));
            }
            factors::replace_codes(conn, user_id, &hashes)?;
            let e = audit::event(
                at,
                audit::MFA_BACKUP_CODES_GENERATED,
                (user_id, &name),
                actor,
                None,
                Some(json!({"count": codes.len()})),
            );
            audit::write(conn, &[e])?;
            events::record_for(conn, events::MFA_BACKUP_CODES_REGENERATED, user_id, actor, None, at)?;
            Ok::<_, Error>(())
        })?;
        Ok(BackupCodes(codes))
    }

    /// Resets one user's factor: they enrol again at their next login.
    pub(crate) fn reset(&self, user_id: &str, actor: &Actor, reason: &Reason) -> Result<ResetDone> {
        let reason = Some(reason.as_str());
        let mut conn = self.pool.get()?;
        let name = user_name(&mut conn, user_id)?;
        let (_, at) = self.now();
        store::write_tx(&mut conn, |conn| reset::reset_in_tx(conn, (user_id, &name), actor, reason, at)).map_err(
            |e| match e {
                store::Error::Gone(_) => Error::NotFound(format!("no user with id {user_id}")),
                other => other.into(),
            },
        )?;
        Ok(ResetDone { id: user_id.to_string(), reset_at: at })
    }

    /// Resets many users; one that fails does not stop the others. Results keep the order of
    /// the ids given (or of creation, for a filter).
    pub(crate) fn reset_many(&self, selection: &Selection, actor: &Actor, reason: &Reason) -> Result<Vec<BulkResult>> {
        let reason = Some(reason.as_str());
        let mut conn = self.pool.get()?;
        let (wanted, found): (Vec<String>, HashMap<String, String>) = match selection {
            Selection::Ids(ids) => {
                if ids.len() > self.max_bulk {
                    return Err(too_many(ids.len(), self.max_bulk));
                }
                let mut seen = std::collections::HashSet::new();
                let wanted: Vec<String> = ids.iter().filter(|i| seen.insert(i.as_str())).cloned().collect();
                let found = store_users::names_of(&mut conn, &wanted)?.into_iter().collect();
                (wanted, found)
            }
            Selection::Matching(matching) => {
                let cond = matching.condition()?.unwrap_or_else(|| store::sql::Condition::new().sql("1 = 1"));
                let matched = store_users::matching(&mut conn, cond, self.max_bulk as i64 + 1)?;
                if matched.len() > self.max_bulk {
                    return Err(too_many(matched.len(), self.max_bulk));
                }
                (matched.iter().map(|(id, _)| id.clone()).collect(), matched.into_iter().collect())
            }
        };
        let (_, at) = self.now();
        let mut results = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(BULK_CHUNK) {
            let chunk_results = store::write_tx(&mut conn, |conn| {
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    let Some(name) = found.get(id) else {
                        out.push(BulkResult {
                            id: id.clone(),
                            user_name: None,
                            outcome: Outcome::NotFound,
                            detail: Some("no such user".into()),
                        });
                        continue;
                    };
                    // A savepoint per user: one failure rolls back that user only.
                    let one = conn.savepoint(|conn| reset::reset_in_tx(conn, (id, name), actor, reason, at));
                    out.push(match one {
                        Ok(_) => {
                            BulkResult { id: id.clone(), user_name: Some(name.clone()), outcome: Outcome::Reset, detail: None }
                        }
                        Err(store::Error::Gone(_)) => BulkResult {
                            id: id.clone(),
                            user_name: Some(name.clone()),
                            outcome: Outcome::NotFound,
                            detail: Some("no such user".into()),
                        },
                        Err(e) => {
                            // The cause goes to the log; the answer does not show database text.
                            tracing::error!(user_id = %id, error = %e, "bulk MFA reset failed for one user");
                            let detail = "the reset failed; the daemon log has the cause".to_string();
                            BulkResult {
                                id: id.clone(),
                                user_name: Some(name.clone()),
                                outcome: Outcome::Error,
                                detail: Some(detail),
                            }
                        }
                    });
                }
                Ok::<_, diesel::result::Error>(out)
            })?;
            results.extend(chunk_results);
        }
        Ok(results)
    }

    /// Re-seals every secret under the current key (after a key rotation); how many changed.
    pub(crate) fn rekey(&self) -> Result<usize> {
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| store::deployment::set(tx, store::deployment::MFA_KEY_ID, self.sealer.current_id()))?;
        let mut changed = 0;
        for (user_id, sealed) in factors::sealed_secrets(&mut conn)? {
            if !self.sealer.is_stale(&sealed) {
                continue;
            }
            let secret = self.sealer.open(&user_id, &sealed).map_err(|e| Error::Store(store::Error::Corrupt(e.to_string())))?;
            let resealed = self.sealer.seal(&user_id, &secret);
            if store::write_tx(&mut conn, |tx| factors::reseal(tx, &user_id, &sealed, &resealed))? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The TOTP policy (tests and benchmarks compute codes with it).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// The answer while a lockout holds at `at`.
fn lockout(f: &factors::Factor, at: NaiveDateTime) -> Option<Verification> {
    let until = f.locked_until.filter(|u| *u > at)?;
    let secs = (until - at).num_milliseconds().max(0) as u64;
    Some(Verification::LockedOut { retry_after_secs: secs.div_ceil(1000).max(1) })
}

fn too_many(n: usize, max: usize) -> Error {
    Error::invalid(Invalid::TooMany, format!("{n} users selected; at most {max} per request (mfa.max_bulk_reset)"))
}

fn user_name(conn: &mut store::DbConn, user_id: &str) -> Result<String> {
    store_users::names_of(conn, &[user_id.to_string()])?
        .pop()
        .map(|(_, name)| name)
        .ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))
}
