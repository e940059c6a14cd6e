//! Second factors and backup codes. Every write that can race (accepting a TOTP step, using a
//! backup code, confirming an enrolment) is a conditional UPDATE whose row count says who won.
//! Functions that take their own write transaction say so; the others run in the caller's.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{mfa_backup_codes, mfa_factors, webauthn_ceremonies, webauthn_credentials};
use super::{DbConn, Result, Tx};

super::text_enum::text_enum! {
    /// Where a user's second factor stands.
    pub enum FactorStatus {
        /// No factor yet (a user the store has not given a factor row, as SCIM shows it).
        None => "none",
        /// To enrol: new, reset, or enrolment started and not confirmed.
        Pending => "pending",
        /// At least one confirmed factor (the authenticator app, a security key or a passkey).
        Enrolled => "enrolled",
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mfa_factors)]
pub struct Factor {
    pub user_id: String,
    pub status: FactorStatus,
    /// Sealed, never the secret itself.
    pub secret_sealed: Option<String>,
    pub enrolled_at: Option<NaiveDateTime>,
    pub last_reset_at: Option<NaiveDateTime>,
    pub last_step: Option<i64>,
    pub failures: i32,
    pub failures_since: Option<NaiveDateTime>,
    pub locked_until: Option<NaiveDateTime>,
    /// When the authenticator app was confirmed; `None` while it is not (the user may hold
    /// WebAuthn credentials only).
    pub totp_enrolled_at: Option<NaiveDateTime>,
    /// The summary of the user's WebAuthn credentials ([`super::webauthn::refresh`]); `None`
    /// while they hold none.
    pub webauthn: Option<String>,
}

impl Factor {
    pub fn has_totp(&self) -> bool {
        self.totp_enrolled_at.is_some()
    }
}

/// What the SCIM resource shows of a factor.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = mfa_factors)]
pub struct Summary {
    pub status: FactorStatus,
    pub enrolled_at: Option<NaiveDateTime>,
    pub last_reset_at: Option<NaiveDateTime>,
    pub totp_enrolled_at: Option<NaiveDateTime>,
    /// The WebAuthn credentials' names and creation times, as [`super::webauthn::refresh`]
    /// wrote them (JSON).
    pub webauthn: Option<String>,
}

impl Summary {
    pub(crate) fn none() -> Self {
        Summary { status: FactorStatus::None, enrolled_at: None, last_reset_at: None, totp_enrolled_at: None, webauthn: None }
    }
}

/// Every user has a factor row, created with the user.
pub fn create(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::insert_into(mfa_factors::table).values(mfa_factors::user_id.eq(user_id)).execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut DbConn, user_id: &str) -> Result<Option<Factor>> {
    Ok(mfa_factors::table.find(user_id).select(Factor::as_select()).first(conn).optional()?)
}

/// Stores a new unconfirmed secret unless a confirmed one exists; whether it did. A user who
/// never had a factor is then `pending`; one with a security key stays `enrolled`.
pub fn start_enrolment(tx: &mut Tx, user_id: &str, sealed: &str) -> Result<bool> {
    // One statement: PostgreSQL checks the user's foreign key again when a transaction updates
    // a row it has updated before, which would lock the user after the factor.
    let status = diesel::dsl::sql::<diesel::sql_types::Text>("CASE WHEN status = 'none' THEN 'pending' ELSE status END");
    let n = diesel::update(mfa_factors::table.find(user_id).filter(mfa_factors::totp_enrolled_at.is_null()))
        .set((mfa_factors::secret_sealed.eq(sealed), mfa_factors::last_step.eq(None::<i64>), mfa_factors::status.eq(status)))
        .execute(tx.conn())?;
    Ok(n == 1)
}

/// Forgets a secret waiting for confirmation (a new enrolment link starts afresh); a confirmed
/// factor is left alone.
pub(crate) fn clear_pending(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    diesel::update(mfa_factors::table.find(user_id).filter(mfa_factors::totp_enrolled_at.is_null()))
        .set((mfa_factors::secret_sealed.eq(None::<String>), mfa_factors::last_step.eq(None::<i64>)))
        .execute(tx.conn())?;
    Ok(())
}

/// Confirms the enrolment of exactly this sealed secret; whether it did.
pub fn confirm(tx: &mut Tx, user_id: &str, sealed: &str, step: i64, at: NaiveDateTime) -> Result<bool, diesel::result::Error> {
    let conn = tx.conn();
    let n = diesel::update(
        mfa_factors::table
            .find(user_id)
            .filter(mfa_factors::totp_enrolled_at.is_null())
            .filter(mfa_factors::secret_sealed.eq(sealed)),
    )
    .set((
        mfa_factors::totp_enrolled_at.eq(at),
        mfa_factors::last_step.eq(step),
        mfa_factors::failures.eq(0),
        mfa_factors::failures_since.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)?;
    if n == 1 {
        mark_enrolled(tx, user_id, at)?;
    }
    Ok(n == 1)
}

/// The user holds a confirmed factor: `enrolled`, since `at` unless it already was.
pub(crate) fn mark_enrolled(tx: &mut Tx, user_id: &str, at: NaiveDateTime) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::update(mfa_factors::table.find(user_id).filter(mfa_factors::status.ne(FactorStatus::Enrolled)))
        .set((mfa_factors::status.eq(FactorStatus::Enrolled), mfa_factors::enrolled_at.eq(at)))
        .execute(conn)?;
    Ok(())
}

/// The user's last factor is gone (a credential removed): `pending`, to enrol again, with the
/// backup codes that went with the factors.
pub(crate) fn mark_pending(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::delete(mfa_backup_codes::table.filter(mfa_backup_codes::user_id.eq(user_id))).execute(conn)?;
    diesel::update(mfa_factors::table.find(user_id))
        .set((mfa_factors::status.eq(FactorStatus::Pending), mfa_factors::enrolled_at.eq(None::<NaiveDateTime>)))
        .execute(conn)?;
    Ok(())
}

/// Accepts TOTP step `step` unless it (or a later one) was accepted before: replays lose.
/// Refused while a lockout (set by a parallel request) holds at `at`.
pub(crate) fn accept_step(tx: &mut Tx, user_id: &str, step: i64, at: NaiveDateTime) -> Result<bool> {
    let n = diesel::update(
        mfa_factors::table
            .find(user_id)
            .filter(mfa_factors::totp_enrolled_at.is_not_null())
            .filter(mfa_factors::last_step.is_null().or(mfa_factors::last_step.lt(step)))
            .filter(mfa_factors::locked_until.is_null().or(mfa_factors::locked_until.le(at))),
    )
    .set((mfa_factors::last_step.eq(step), mfa_factors::failures.eq(0), mfa_factors::failures_since.eq(None::<NaiveDateTime>)))
    .execute(tx.conn())?;
    Ok(n == 1)
}

/// Clears the failure count after a good backup code.
pub(crate) fn clear_failures(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::update(mfa_factors::table.find(user_id))
        .set((mfa_factors::failures.eq(0), mfa_factors::failures_since.eq(None::<NaiveDateTime>)))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn set_failures(
    tx: &mut Tx,
    user_id: &str,
    failures: i32,
    since: Option<NaiveDateTime>,
    locked_until: Option<NaiveDateTime>,
) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::update(mfa_factors::table.find(user_id))
        .set((
            mfa_factors::failures.eq(failures),
            mfa_factors::failures_since.eq(since),
            mfa_factors::locked_until.eq(locked_until),
        ))
        .execute(conn)?;
    Ok(())
}

/// Makes the transactions that reset factors take their turns (PostgreSQL; SQLite has one
/// writer anyway). A bulk reset and a sync batch each lock many factor rows, in orders of their
/// own; without this, two of them on different instances could each wait for a row the other
/// holds, and PostgreSQL would break the deadlock by failing one of the resets. The lock is
/// held to the end of the transaction and taken again at no cost within it.
pub(crate) fn take_reset_turn(tx: &mut Tx) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    if let DbConn::Pg(pg) = conn {
        // An arbitrary application-wide key: "provisiond mfa reset".
        diesel::sql_query("SELECT pg_advisory_xact_lock(7470652301)").execute(pg)?;
    }
    Ok(())
}

/// Locks the user row of a factor against deletion and key changes (PostgreSQL; SQLite has one
/// writer), before the factor's own row: inserting backup codes takes this lock anyway (their
/// foreign key), and taking it first keeps the order every writer follows — a user before what
/// hangs off it — so a concurrent DELETE or rename of the user cannot deadlock with it.
pub(crate) fn lock_user(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    if let DbConn::Pg(pg) = conn {
        diesel::sql_query("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE")
            .bind::<diesel::sql_types::Text, _>(user_id)
            .execute(pg)?;
    }
    Ok(())
}

/// Locks a factor row for the rest of the transaction (PostgreSQL `FOR UPDATE`; a SQLite write
/// transaction holds the whole database already); false when there is no such row, or when
/// `status` is given and the factor is not in it. Read-modify-write of a factor (counting
/// failures, spending a backup code) starts here, so that concurrent requests take turns.
pub(crate) fn lock(tx: &mut Tx, user_id: &str, status: Option<FactorStatus>) -> Result<bool, diesel::result::Error> {
    let conn = tx.conn();
    let row = match conn {
        DbConn::Pg(pg) => mfa_factors::table.find(user_id).select(mfa_factors::status).for_update().first::<FactorStatus>(pg),
        DbConn::Sqlite(c) => mfa_factors::table.find(user_id).select(mfa_factors::status).first::<FactorStatus>(c),
    }
    .optional()?;
    Ok(row.is_some_and(|current| status.is_none_or(|st| st == current)))
}

/// Forgets every factor: no secret, no codes, no security keys or passkeys, no lockout; the
/// user must enrol again.
pub(crate) fn reset(tx: &mut Tx, user_id: &str, at: NaiveDateTime) -> Result<usize, diesel::result::Error> {
    let conn = tx.conn();
    diesel::delete(mfa_backup_codes::table.filter(mfa_backup_codes::user_id.eq(user_id))).execute(conn)?;
    diesel::delete(webauthn_credentials::table.filter(webauthn_credentials::user_id.eq(user_id))).execute(conn)?;
    diesel::delete(webauthn_ceremonies::table.filter(webauthn_ceremonies::user_id.eq(user_id))).execute(conn)?;
    diesel::update(mfa_factors::table.find(user_id))
        .set((
            mfa_factors::status.eq(FactorStatus::Pending),
            mfa_factors::secret_sealed.eq(None::<String>),
            mfa_factors::enrolled_at.eq(None::<NaiveDateTime>),
            mfa_factors::last_reset_at.eq(at),
            mfa_factors::last_step.eq(None::<i64>),
            mfa_factors::failures.eq(0),
            mfa_factors::failures_since.eq(None::<NaiveDateTime>),
            mfa_factors::locked_until.eq(None::<NaiveDateTime>),
            mfa_factors::totp_enrolled_at.eq(None::<NaiveDateTime>),
            mfa_factors::webauthn.eq(None::<String>),
        ))
        .execute(conn)
}

/// Re-seals a secret (key rotation); only if it is still the one read.
pub(crate) fn reseal(tx: &mut Tx, user_id: &str, old: &str, new: &str) -> Result<bool> {
    let n = diesel::update(mfa_factors::table.find(user_id).filter(mfa_factors::secret_sealed.eq(old)))
        .set(mfa_factors::secret_sealed.eq(new))
        .execute(tx.conn())?;
    Ok(n == 1)
}

/// `(user_id, sealed)` of every stored secret, for re-sealing.
pub(crate) fn sealed_secrets(conn: &mut DbConn) -> Result<Vec<(String, String)>> {
    Ok(mfa_factors::table
        .filter(mfa_factors::secret_sealed.is_not_null())
        .select((mfa_factors::user_id, mfa_factors::secret_sealed.assume_not_null()))
        .load(conn)?)
}

/// The ids of the keys the stored secrets are sealed under (`v1.<8 hex digits>.…`).
pub(crate) fn sealing_key_ids(conn: &mut DbConn) -> Result<Vec<String>> {
    Ok(mfa_factors::table
        .filter(mfa_factors::secret_sealed.is_not_null())
        .select(diesel::dsl::sql::<diesel::sql_types::Text>("substr(secret_sealed, 4, 8)"))
        .distinct()
        .load(conn)?)
}

/// Replaces the user's backup codes by these hashes.
pub(crate) fn replace_codes(tx: &mut Tx, user_id: &str, hashes: &[String]) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::delete(mfa_backup_codes::table.filter(mfa_backup_codes::user_id.eq(user_id))).execute(conn)?;
    for h in hashes {
        diesel::insert_into(mfa_backup_codes::table)
            .values((mfa_backup_codes::user_id.eq(user_id), mfa_backup_codes::code_hash.eq(h)))
            .execute(conn)?;
    }
    Ok(())
}

pub(crate) fn unused_codes(conn: &mut DbConn, user_id: &str) -> Result<Vec<String>> {
    Ok(mfa_backup_codes::table
        .filter(mfa_backup_codes::user_id.eq(user_id))
        .filter(mfa_backup_codes::used_at.is_null())
        .select(mfa_backup_codes::code_hash)
        .load(conn)?)
}

/// Marks a code used; false when it already was (a concurrent use won).
pub(crate) fn use_code(tx: &mut Tx, user_id: &str, hash: &str, at: NaiveDateTime) -> Result<bool, diesel::result::Error> {
    let conn = tx.conn();
    let n = diesel::update(mfa_backup_codes::table.find((user_id, hash)).filter(mfa_backup_codes::used_at.is_null()))
        .set(mfa_backup_codes::used_at.eq(at))
        .execute(conn)?;
    Ok(n == 1)
}
