//! Console sessions: one row per signed-in browser, found by the hash of its cookie's id.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::operators::Role;
use super::schema::{console_sessions, operators};
use super::{DbConn, Result, Tx};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = console_sessions)]
pub struct SessionRow {
    pub operator: String,
    pub csrf_token: String,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
}

pub fn insert(tx: &mut Tx, id_hash: &str, operator: &str, csrf_token: &str, at: NaiveDateTime) -> Result<()> {
    diesel::insert_into(console_sessions::table)
        .values((
            console_sessions::id_hash.eq(id_hash),
            console_sessions::operator.eq(operator),
            console_sessions::csrf_token.eq(csrf_token),
            console_sessions::created_at.eq(at),
            console_sessions::last_seen_at.eq(at),
        ))
        .execute(tx.conn())?;
    Ok(())
}

/// The session, its operator's role and whether the operator is disabled.
pub fn get(conn: &mut DbConn, id_hash: &str) -> Result<Option<(SessionRow, Role, bool)>> {
    Ok(console_sessions::table
        .inner_join(operators::table)
        .filter(console_sessions::id_hash.eq(id_hash))
        .select((SessionRow::as_select(), operators::role, operators::disabled))
        .first(conn)
        .optional()?)
}

pub fn touch(tx: &mut Tx, id_hash: &str, at: NaiveDateTime) -> Result<()> {
    diesel::update(console_sessions::table.find(id_hash)).set(console_sessions::last_seen_at.eq(at)).execute(tx.conn())?;
    Ok(())
}

pub fn delete(tx: &mut Tx, id_hash: &str) -> Result<()> {
    diesel::delete(console_sessions::table.find(id_hash)).execute(tx.conn())?;
    Ok(())
}

/// Ends every session of the operator (disabled, or reset).
pub fn delete_of(tx: &mut Tx, operator: &str) -> Result<usize> {
    Ok(diesel::delete(console_sessions::table.filter(console_sessions::operator.eq(operator))).execute(tx.conn())?)
}
