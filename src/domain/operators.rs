//! Operators: the people who sign in to the console. An administrator adds one from the command
//! line and hands over a one-time setup link; there the operator chooses a password and enrols
//! a second factor (both are required: no operator signs in with a password alone).

use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::json;

use super::audit::{self, Actor};
use super::mfa::{backup_codes, BackupCodes, Enrolment, Policy, Sealer};
use super::{credentials, passwords, Error, Invalid, Result};
use crate::clock::{self, Clock};
use crate::config;
use crate::store::operators::{self as stored, OperatorRow};
use crate::store::{self, audit as store_audit, Pool, Tx};

pub use crate::store::operators::Role;

/// How long a setup link works.
pub const SETUP_LINK_HOURS: i64 = 24;

pub const OPERATOR_ADDED: &str = "operator.added";
pub const OPERATOR_DISABLED: &str = "operator.disabled";
pub const OPERATOR_RESET: &str = "operator.reset";
pub const OPERATOR_SET_UP: &str = "operator.set_up";
pub const OPERATOR_SIGNED_IN: &str = "operator.signed_in";
pub const OPERATOR_SIGN_IN_FAILED: &str = "operator.sign_in_failed";
pub const OPERATOR_LOCKED_OUT: &str = "operator.locked_out";

#[derive(Clone)]
pub struct Operators {
    pool: Pool,
    sealer: Arc<Sealer>,
    policy: Policy,
    clock: Arc<dyn Clock>,
}

/// A setup link's secret, shown once. `Debug` hides it.
pub struct SetupToken(String);

impl SetupToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SetupToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetupToken(***)")
    }
}

/// Where an operator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Added or reset: the setup link has not been used yet.
    SetupPending,
    Active,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::SetupPending => "setup pending",
            State::Active => "active",
            State::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    pub state: State,
    pub created_at: NaiveDateTime,
    pub last_sign_in_at: Option<NaiveDateTime>,
}

impl From<OperatorRow> for Operator {
    fn from(r: OperatorRow) -> Self {
        let state = if r.disabled {
            State::Disabled
        } else if r.password_hash.is_none() || r.totp_sealed.is_none() {
            State::SetupPending
        } else {
            State::Active
        };
        Operator { name: r.name, role: r.role, state, created_at: r.created_at, last_sign_in_at: r.last_sign_in_at }
    }
}

impl Operators {
    pub fn new(pool: Pool, sealer: Arc<Sealer>, mfa: &config::Mfa, clock: Arc<dyn Clock>) -> Self {
        Operators { pool, sealer, policy: Policy::from_config(mfa), clock }
    }

    fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Adds an operator and returns its setup link's secret (valid [`SETUP_LINK_HOURS`] hours).
    pub fn add(&self, name: &str, role: Role, actor: &Actor) -> Result<SetupToken> {
        credentials::check_name("operator", name)?;
        let at = self.now();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            if !stored::insert(tx, name, role, at)? {
                return Err(Error::taken(format!("an operator called {name:?} already exists")));
            }
            audit_event(tx, OPERATOR_ADDED, actor, at, json!({"operator": name, "role": role}))?;
            new_setup_link(tx, name, at)
        })
    }

    pub fn list(&self) -> Result<Vec<Operator>> {
        let mut conn = self.pool.get()?;
        Ok(stored::list(&mut conn)?.into_iter().map(Operator::from).collect())
    }

    /// Disables the operator: it can no longer sign in, and its sessions end.
    pub fn disable(&self, name: &str, actor: &Actor) -> Result<()> {
        let at = self.now();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            if !stored::disable(tx, name)? {
                return Err(not_found(name));
            }
            store::sessions::delete_of(tx, name)?;
            audit_event(tx, OPERATOR_DISABLED, actor, at, json!({"operator": name}))
        })
    }

    /// Forgets the operator's password and second factor, ends its sessions and returns a new
    /// setup link; the old links stop working.
    pub fn reset(&self, name: &str, actor: &Actor) -> Result<SetupToken> {
        let at = self.now();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            if !stored::forget_credentials(tx, name)? {
                return Err(not_found(name));
            }
            store::sessions::delete_of(tx, name)?;
            audit_event(tx, OPERATOR_RESET, actor, at, json!({"operator": name}))?;
            new_setup_link(tx, name, at)
        })
    }

    /// The operator a setup link is for, while the link works.
    pub fn setup_link_operator(&self, token: &str) -> Result<Option<String>> {
        let mut conn = self.pool.get()?;
        Ok(stored::setup_link_operator(&mut conn, &credentials::hash(token), self.now())?)
    }

    /// The first step of a setup link: a TOTP secret for the operator's authenticator app
    /// (kept sealed until a code confirms it). Opening the link again shows the same secret
    /// while it waits, so that a reload or a refused password does not undo a scanned code.
    pub fn begin_setup(&self, token: &str) -> Result<(String, Enrolment)> {
        let at = self.now();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            let name = link_owner(tx, token, at)?;
            let waiting = stored::get(tx.conn(), &name)?.and_then(|row| row.pending_totp_sealed);
            let secret = match waiting.and_then(|sealed| self.sealer.open(&sealing_id(&name), &sealed).ok()) {
                Some(secret) => secret,
                None => {
                    let secret = Policy::new_secret();
                    stored::set_pending_totp(tx, &name, &self.sealer.seal(&sealing_id(&name), &secret))?;
                    secret
                }
            };
            let enrolment = self
                .policy
                .enrolment(&secret, &name)
                .map_err(|e| Error::invalid(Invalid::Value, format!("cannot build the otpauth URI: {e}")))?;
            Ok((name, enrolment))
        })
    }

    /// Completes a setup link: the password (refused when short or easy to guess) and a code
    /// from the authenticator app; returns the first backup codes. The link is then used up.
    pub fn finish_setup(&self, token: &str, password: &str, code: &str) -> Result<BackupCodes> {
        let (now, at) = (self.clock.now(), self.now());
        let mut conn = self.pool.get()?;
        let name = link_owner(&mut conn, token, at)?;
        passwords::check(password, &[&name, &self.policy.issuer])?;
        let row = stored::get(&mut conn, &name)?.ok_or_else(|| not_found(&name))?;
        let pending =
            row.pending_totp_sealed.ok_or_else(|| Error::conflict("open the setup link again: no secret is waiting"))?;
        let secret =
            self.sealer.open(&sealing_id(&name), &pending).map_err(|e| Error::from(store::Error::Corrupt(e.to_string())))?;
        let step = self
            .policy
            .check(&secret, code, now.timestamp().max(0) as u64)
            .ok_or_else(|| Error::invalid(Invalid::Value, "the code does not match the new factor"))?;
        // Hashing takes tens of milliseconds: before the write turn, not inside it.
        let password_hash = passwords::hash(password);
        let codes = backup_codes::generate();
        let hashes: Vec<String> = codes.iter().map(|c| backup_codes::hash(c)).collect();
        store::write_tx(&mut conn, |tx| {
            if link_owner(tx, token, at)? != name || !stored::complete_setup(tx, &name, &password_hash, &pending, step as i64)? {
                return Err(Error::conflict("the setup changed meanwhile; open the setup link again"));
            }
            stored::delete_setup_links(tx, &name)?;
            stored::replace_backup_codes(tx, &name, &hashes)?;
            audit_event(tx, OPERATOR_SET_UP, actor_of(&name), at, json!({"operator": name}))
        })?;
        Ok(BackupCodes(codes))
    }
}

/// Wrong sign-ins within [`LOCKOUT_MINUTES`] that lock an operator out for as long.
pub const MAX_FAILURES: i32 = 5;
pub const LOCKOUT_MINUTES: i64 = 15;

/// The answer to a sign-in. A refusal never says which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    Accepted(Operator),
    Refused,
    /// Too many wrong sign-ins: none is checked until then.
    LockedOut {
        retry_after_secs: u64,
    },
}

/// A password hash of nothing, checked when there is no such operator (or no password yet), so
/// that a refusal takes as long whatever was wrong.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| passwords::hash("no operator has this password"));

impl Operators {
    /// Signs an operator in with its password and a TOTP or backup code. Any wrong part, an
    /// unknown or disabled operator, or one not set up is the same refusal; the
    /// [`MAX_FAILURES`]-th within [`LOCKOUT_MINUTES`] locks the operator out for as long.
    pub fn sign_in(&self, name: &str, password: &str, code: &str) -> Result<SignIn> {
        let (now, at) = (self.clock.now(), self.now());
        let mut conn = self.pool.get()?;
        let Some(row) = stored::get(&mut conn, name)? else {
            passwords::verify(password, &DUMMY_HASH);
            return Ok(SignIn::Refused);
        };
        if let Some(locked) = lockout(row.locked_until, at) {
            return Ok(locked);
        }
        let password_ok = passwords::verify(password, row.password_hash.as_deref().unwrap_or(&DUMMY_HASH));
        let usable = password_ok && !row.disabled && row.password_hash.is_some();
        let step = usable
            .then_some(row.totp_sealed.as_deref())
            .flatten()
            .and_then(|sealed| self.sealer.open(&sealing_id(name), sealed).ok())
            .and_then(|secret| self.policy.check(&secret, code, now.timestamp().max(0) as u64));
        let backup = match (usable, step) {
            (true, None) if backup_codes::looks_like_one(code) => {
                let hashes = stored::unused_backup_codes(&mut conn, name)?;
                backup_codes::find(code, &hashes).map(|i| hashes[i].clone())
            }
            _ => None,
        };
        store::write_tx(&mut conn, |tx| {
            let Some(row) = stored::get_locked(tx, name)? else { return Ok(SignIn::Refused) };
            if let Some(locked) = lockout(row.locked_until, at) {
                return Ok(locked);
            }
            let accepted = match (&step, &backup) {
                (Some(step), _) => stored::accept_sign_in(tx, name, Some(*step as i64), at)?,
                (None, Some(hash)) => stored::use_backup_code(tx, name, hash, at)? && stored::accept_sign_in(tx, name, None, at)?,
                (None, None) => false,
            };
            if accepted {
                audit_event(tx, OPERATOR_SIGNED_IN, actor_of(name), at, json!({"operator": name}))?;
                let row = stored::get(tx, name)?.ok_or_else(|| not_found(name))?;
                return Ok(SignIn::Accepted(row.into()));
            }
            // Counted on the row as it is now, locked: parallel attempts all count.
            let window = chrono::Duration::minutes(LOCKOUT_MINUTES);
            let (failures, since) = match row.failures_since.filter(|s| at - *s < window) {
                Some(since) => (row.failures + 1, since),
                None => (1, at),
            };
            if failures < MAX_FAILURES {
                stored::set_failures(tx, name, failures, Some(since), None)?;
                audit_event(tx, OPERATOR_SIGN_IN_FAILED, actor_of(name), at, json!({"operator": name}))?;
                return Ok(SignIn::Refused);
            }
            stored::set_failures(tx, name, 0, None, Some(at + window))?;
            audit_event(tx, OPERATOR_LOCKED_OUT, actor_of(name), at, json!({"operator": name, "failures": failures}))?;
            Ok(SignIn::Refused)
        })
    }
}

/// The answer while a lockout holds at `at`.
fn lockout(locked_until: Option<NaiveDateTime>, at: NaiveDateTime) -> Option<SignIn> {
    let until = locked_until.filter(|u| *u > at)?;
    let secs = (until - at).num_milliseconds().max(0) as u64;
    Some(SignIn::LockedOut { retry_after_secs: secs.div_ceil(1000).max(1) })
}

/// What operators' secrets are sealed for: never a user id (those are UUIDs).
fn sealing_id(name: &str) -> String {
    format!("operator:{name}")
}

/// The operator a setup link is for, or why it is of no use.
fn link_owner(conn: &mut store::DbConn, token: &str, at: NaiveDateTime) -> Result<String> {
    stored::setup_link_operator(conn, &credentials::hash(token), at)?
        .ok_or_else(|| Error::NotFound("this setup link is unknown, used or expired: ask an administrator for a new one".into()))
}

/// The operator acting on its own account (its setup).
fn actor_of(name: &str) -> Actor {
    Actor::new(audit::Origin::Console, name, None)
}

fn new_setup_link(tx: &mut Tx, name: &str, at: NaiveDateTime) -> Result<SetupToken> {
    let token = credentials::random_secret("");
    stored::replace_setup_link(tx, name, &credentials::hash(&token), at + chrono::Duration::hours(SETUP_LINK_HOURS))?;
    Ok(SetupToken(token))
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("no operator called {name:?}"))
}

/// Operator events name no user: the operator is in the detail.
fn audit_event(
    tx: &mut Tx,
    event_type: &str,
    actor: impl std::borrow::Borrow<Actor>,
    at: NaiveDateTime,
    detail: serde_json::Value,
) -> Result<()> {
    audit::write(
        tx,
        &[store_audit::NewEvent {
            at,
            event_type,
            user_id: None,
            user_name: None,
            origin: actor.borrow().origin.as_str(),
            actor: &actor.borrow().name,
            reason: None,
            request_id: actor.borrow().request_id.as_deref(),
            detail: Some(detail.to_string()),
        }],
    )?;
    Ok(())
}
