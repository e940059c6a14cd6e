//! API tokens, stored only as SHA-256 hashes of the random token.

use diesel::prelude::*;

use super::schema::api_tokens;
use super::{DbConn, Result, Tx};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
pub struct TokenRow {
    pub name: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub token_hash: String,
    /// Comma-separated scopes.
    pub scopes: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_used_at: Option<chrono::NaiveDateTime>,
}

/// Inserts a token; `Ok(false)` when the name is taken.
pub fn insert(tx: &mut Tx, name: &str, token_hash: &str, scopes: &str, at: chrono::NaiveDateTime) -> Result<bool> {
    Ok(super::insert_unless_taken(tx.conn(), |conn| {
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::name.eq(name),
                api_tokens::token_hash.eq(token_hash),
                api_tokens::scopes.eq(scopes),
                api_tokens::created_at.eq(at),
            ))
            .execute(conn)
    })?)
}

pub fn list(conn: &mut DbConn) -> Result<Vec<TokenRow>> {
    Ok(api_tokens::table.order(api_tokens::name.asc()).select(TokenRow::as_select()).load(conn)?)
}

pub(crate) fn find_by_hash(conn: &mut DbConn, token_hash: &str) -> Result<Option<TokenRow>> {
    Ok(api_tokens::table.filter(api_tokens::token_hash.eq(token_hash)).select(TokenRow::as_select()).first(conn).optional()?)
}

/// Deletes the token called `name`; whether there was one.
pub(crate) fn delete(tx: &mut Tx, name: &str) -> Result<bool> {
    let n = diesel::delete(api_tokens::table.filter(api_tokens::name.eq(name))).execute(tx.conn())?;
    Ok(n > 0)
}

pub(crate) fn touch(tx: &mut Tx, name: &str, at: chrono::NaiveDateTime) -> Result<()> {
    diesel::update(api_tokens::table.filter(api_tokens::name.eq(name)))
        .set(api_tokens::last_used_at.eq(at))
        .execute(tx.conn())?;
    Ok(())
}
