//! Operators (who may sign in to the console) and their one-time setup links.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{operator_backup_codes, operator_setup_links, operators};
use super::{DbConn, Result, Tx};

super::text_enum::text_enum! {
    /// What an operator may do in the console.
    pub enum Role {
        /// Users, resets and the audit trail; and the directory sync, tokens and operators.
        Admin => "admin",
        /// Users, resets and the audit trail.
        Helpdesk => "helpdesk",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = operators)]
pub struct OperatorRow {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string; `None` until set up.
    pub password_hash: Option<String>,
    /// Sealed TOTP secret; `None` until set up.
    pub totp_sealed: Option<String>,
    /// A sealed secret shown on the setup page, not yet confirmed.
    pub pending_totp_sealed: Option<String>,
    pub totp_last_step: Option<i64>,
    pub failures: i32,
    pub failures_since: Option<NaiveDateTime>,
    pub locked_until: Option<NaiveDateTime>,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
    pub last_sign_in_at: Option<NaiveDateTime>,
}

/// Inserts a new operator, not yet set up; false when the name is taken.
pub fn insert(tx: &mut Tx, name: &str, role: Role, at: NaiveDateTime) -> Result<bool> {
    Ok(super::insert_unless_taken(tx.conn(), |c| {
        diesel::insert_into(operators::table)
            .values((operators::name.eq(name), operators::role.eq(role), operators::created_at.eq(at)))
            .execute(c)
    })?)
}

pub fn get(conn: &mut DbConn, name: &str) -> Result<Option<OperatorRow>> {
    Ok(operators::table.find(name).select(OperatorRow::as_select()).first(conn).optional()?)
}

pub fn list(conn: &mut DbConn) -> Result<Vec<OperatorRow>> {
    Ok(operators::table.order(operators::name.asc()).select(OperatorRow::as_select()).load(conn)?)
}

/// Disables the operator; false when there is none.
pub fn disable(tx: &mut Tx, name: &str) -> Result<bool> {
    Ok(diesel::update(operators::table.find(name)).set(operators::disabled.eq(true)).execute(tx.conn())? == 1)
}

/// Forgets the operator's password, factor and backup codes (a reset); false when there is none.
pub fn forget_credentials(tx: &mut Tx, name: &str) -> Result<bool> {
    let conn = tx.conn();
    diesel::delete(operator_backup_codes::table.filter(operator_backup_codes::operator.eq(name))).execute(conn)?;
    let n = diesel::update(operators::table.find(name))
        .set((
            operators::password_hash.eq(None::<String>),
            operators::totp_sealed.eq(None::<String>),
            operators::pending_totp_sealed.eq(None::<String>),
            operators::totp_last_step.eq(None::<i64>),
            operators::failures.eq(0),
            operators::failures_since.eq(None::<NaiveDateTime>),
            operators::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Keeps the secret shown on the setup page until a code confirms it.
pub fn set_pending_totp(tx: &mut Tx, name: &str, sealed: &str) -> Result<()> {
    diesel::update(operators::table.find(name)).set(operators::pending_totp_sealed.eq(sealed)).execute(tx.conn())?;
    Ok(())
}

/// Completes a setup: the password, the confirmed factor (its pending secret, only if it is
/// still `pending`) and the step that confirmed it; false when the pending secret changed.
pub fn complete_setup(tx: &mut Tx, name: &str, password_hash: &str, pending: &str, step: i64) -> Result<bool> {
    let n = diesel::update(operators::table.find(name).filter(operators::pending_totp_sealed.eq(pending)))
        .set((
            operators::password_hash.eq(password_hash),
            operators::totp_sealed.eq(pending),
            operators::pending_totp_sealed.eq(None::<String>),
            operators::totp_last_step.eq(step),
            operators::failures.eq(0),
            operators::failures_since.eq(None::<NaiveDateTime>),
            operators::locked_until.eq(None::<NaiveDateTime>),
        ))
        .execute(tx.conn())?;
    Ok(n == 1)
}

/// Forgets the operator's setup links (one was used).
pub fn delete_setup_links(tx: &mut Tx, name: &str) -> Result<()> {
    diesel::delete(operator_setup_links::table.filter(operator_setup_links::operator.eq(name))).execute(tx.conn())?;
    Ok(())
}

/// Replaces the operator's backup codes by these hashes.
pub fn replace_backup_codes(tx: &mut Tx, name: &str, hashes: &[String]) -> Result<()> {
    let conn = tx.conn();
    diesel::delete(operator_backup_codes::table.filter(operator_backup_codes::operator.eq(name))).execute(conn)?;
    for h in hashes {
        diesel::insert_into(operator_backup_codes::table)
            .values((operator_backup_codes::operator.eq(name), operator_backup_codes::code_hash.eq(h)))
            .execute(conn)?;
    }
    Ok(())
}

/// Replaces the operator's setup links by this one (stored as its hash).
pub fn replace_setup_link(tx: &mut Tx, name: &str, token_hash: &str, expires_at: NaiveDateTime) -> Result<()> {
    let conn = tx.conn();
    diesel::delete(operator_setup_links::table.filter(operator_setup_links::operator.eq(name))).execute(conn)?;
    diesel::insert_into(operator_setup_links::table)
        .values((
            operator_setup_links::token_hash.eq(token_hash),
            operator_setup_links::operator.eq(name),
            operator_setup_links::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The operator a setup link (by its hash) is for, while it has not expired at `at`.
pub fn setup_link_operator(conn: &mut DbConn, token_hash: &str, at: NaiveDateTime) -> Result<Option<String>> {
    Ok(operator_setup_links::table
        .find(token_hash)
        .filter(operator_setup_links::expires_at.gt(at))
        .select(operator_setup_links::operator)
        .first(conn)
        .optional()?)
}

/// Accepts TOTP step `step` for the operator unless it (or a later one) was accepted before:
/// a replayed code loses. Clears the failure count and records the sign-in.
pub fn accept_sign_in(tx: &mut Tx, name: &str, step: Option<i64>, at: NaiveDateTime) -> Result<bool> {
    let conn = tx.conn();
    let target = operators::table.find(name);
    let n = match step {
        Some(step) => diesel::update(target.filter(operators::totp_last_step.is_null().or(operators::totp_last_step.lt(step))))
            .set((
                operators::totp_last_step.eq(step),
                operators::failures.eq(0),
                operators::failures_since.eq(None::<NaiveDateTime>),
                operators::last_sign_in_at.eq(at),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set((
                operators::failures.eq(0),
                operators::failures_since.eq(None::<NaiveDateTime>),
                operators::last_sign_in_at.eq(at),
            ))
            .execute(conn)?,
    };
    Ok(n == 1)
}

/// Records the failure count (and a lockout) as the caller decided it, on the row it locked.
pub fn set_failures(
    tx: &mut Tx,
    name: &str,
    failures: i32,
    since: Option<NaiveDateTime>,
    locked_until: Option<NaiveDateTime>,
) -> Result<()> {
    diesel::update(operators::table.find(name))
        .set((operators::failures.eq(failures), operators::failures_since.eq(since), operators::locked_until.eq(locked_until)))
        .execute(tx.conn())?;
    Ok(())
}

/// The operator's row, locked for the rest of the transaction (PostgreSQL `FOR UPDATE`; a
/// SQLite write transaction holds the database already).
pub fn get_locked(tx: &mut Tx, name: &str) -> Result<Option<OperatorRow>> {
    let conn = tx.conn();
    Ok(match conn {
        DbConn::Pg(pg) => operators::table.find(name).select(OperatorRow::as_select()).for_update().first(pg).optional()?,
        DbConn::Sqlite(c) => operators::table.find(name).select(OperatorRow::as_select()).first(c).optional()?,
    })
}

pub fn unused_backup_codes(conn: &mut DbConn, name: &str) -> Result<Vec<String>> {
    Ok(operator_backup_codes::table
        .filter(operator_backup_codes::operator.eq(name))
        .filter(operator_backup_codes::used_at.is_null())
        .select(operator_backup_codes::code_hash)
        .load(conn)?)
}

/// Marks a backup code used; false when it already was (a concurrent use won).
pub fn use_backup_code(tx: &mut Tx, name: &str, hash: &str, at: NaiveDateTime) -> Result<bool> {
    let n = diesel::update(operator_backup_codes::table.find((name, hash)).filter(operator_backup_codes::used_at.is_null()))
        .set(operator_backup_codes::used_at.eq(at))
        .execute(tx.conn())?;
    Ok(n == 1)
}
