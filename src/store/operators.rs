//! Operators (who may sign in to the console) and their one-time setup links.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{operator_setup_links, operators};
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

/// Forgets the operator's password and factor (a reset); false when there is none.
pub fn forget_credentials(tx: &mut Tx, name: &str) -> Result<bool> {
    let n = diesel::update(operators::table.find(name))
        .set((operators::password_hash.eq(None::<String>), operators::totp_sealed.eq(None::<String>)))
        .execute(tx.conn())?;
    Ok(n == 1)
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
