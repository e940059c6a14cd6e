//! Facts about the whole deployment that every instance sharing the database must agree on.

use diesel::prelude::*;

use super::schema::deployment;
use super::{DbConn, Result, Tx};

/// The id of the key that seals TOTP secrets (`mfa.key_file`), recorded by the first instance.
pub const MFA_KEY_ID: &str = "mfa_key_id";

pub fn get(conn: &mut DbConn, name: &str) -> Result<Option<String>> {
    Ok(deployment::table.find(name).select(deployment::value).first(conn).optional()?)
}

/// Records `value` under `name` unless a value is recorded already; returns the recorded value.
pub(crate) fn claim(tx: &mut Tx, name: &str, value: &str) -> Result<String> {
    let conn = tx.conn();
    super::insert_unless_taken(conn, |c| {
        diesel::insert_into(deployment::table).values((deployment::name.eq(name), deployment::value.eq(value))).execute(c)
    })?;
    Ok(deployment::table.find(name).select(deployment::value).first(conn)?)
}

/// Records `value` under `name`, replacing what was there.
pub fn set(tx: &mut Tx, name: &str, value: &str) -> Result<()> {
    let conn = tx.conn();
    diesel::delete(deployment::table.find(name)).execute(conn)?;
    diesel::insert_into(deployment::table).values((deployment::name.eq(name), deployment::value.eq(value))).execute(conn)?;
    Ok(())
}
