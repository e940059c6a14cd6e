//! One-time enrolment links: at most one per user, stored as the SHA-256 of its token. A newer
//! link replaces the user's, a reset deletes it, and its use deletes it (single use).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::mfa_enrolment_links as links;
use super::{DbConn, Result, Tx};

/// A link as stored: whose it is and until when it works.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = links)]
pub struct Link {
    pub user_id: String,
    pub expires_at: NaiveDateTime,
}

/// Gives the user this link; the one it had stops working.
pub(crate) fn replace(
    tx: &mut Tx,
    user_id: &str,
    token_hash: &str,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    diesel::delete(links::table.find(user_id)).execute(conn)?;
    diesel::insert_into(links::table)
        .values((
            links::user_id.eq(user_id),
            links::token_hash.eq(token_hash),
            links::created_at.eq(created_at),
            links::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The link with this token hash, expired or not.
pub(crate) fn find(conn: &mut DbConn, token_hash: &str) -> Result<Option<Link>> {
    Ok(links::table.filter(links::token_hash.eq(token_hash)).select(Link::as_select()).first(conn).optional()?)
}

/// Ends the user's link, if any (a reset).
pub(crate) fn delete_of(tx: &mut Tx, user_id: &str) -> Result<(), diesel::result::Error> {
    diesel::delete(links::table.find(user_id)).execute(tx.conn())?;
    Ok(())
}

/// Uses the link up; false when it is no longer there (used, replaced or reset meanwhile).
pub(crate) fn take(tx: &mut Tx, token_hash: &str) -> Result<bool, diesel::result::Error> {
    Ok(diesel::delete(links::table.filter(links::token_hash.eq(token_hash))).execute(tx.conn())? == 1)
}
