//! How many users there are, kept by the database itself: triggers on `users` record each
//! insert and delete in `user_count_deltas`, in the writing transaction, so the sum of its rows
//! is exact in every snapshot. A page's `totalResults` reads a row or a few instead of counting
//! 100,000 users.
//!
//! SQLite writes one transaction at a time: its triggers keep a single row. On PostgreSQL
//! concurrent writers must not queue on one row (nor lock it in an order that could deadlock
//! with their other rows), so each writing statement appends a row of its own; a reader that
//! finds many, and every 256th writer, fold them into one (leaving rows another transaction
//! holds to a later fold).

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::{DbConn, Result};

/// Rows above which a reader folds the deltas into one.
const FOLD_ABOVE: i64 = 64;

/// Changes whenever a user is created or deleted (the creation order changes), on either
/// backend: SQLite counts them; on PostgreSQL every such commit adds a row (a reader's fold
/// replaces rows by one with a larger id than any before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation([i64; 3]);

/// What one read of the count found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    pub users: i64,
    pub generation: Generation,
    /// PostgreSQL: so many delta rows that the reader should fold them ([`fold`]), once it is
    /// out of any read-only snapshot (a fold writes).
    pub fold_due: bool,
}

/// The number of users and the generation of the set; reads only.
pub(crate) fn tally(conn: &mut DbConn) -> Result<Tally> {
    // A literal query of fixed text: diesel prepares it once per connection (`sql_query` it
    // would prepare, and PostgreSQL plan, on every page).
    let (users, rows, last, changes) = diesel::dsl::sql::<(BigInt, BigInt, BigInt, BigInt)>(
        "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT), COUNT(*), \
         CAST(COALESCE(MAX(id), 0) AS BIGINT), CAST(COALESCE(SUM(changes), 0) AS BIGINT) \
         FROM user_count_deltas",
    )
    .get_result::<(i64, i64, i64, i64)>(conn)?;
    let fold_due = rows > FOLD_ABOVE && matches!(conn, DbConn::Pg(_));
    Ok(Tally { users, generation: Generation([rows, last, changes]), fold_due })
}

/// Folds PostgreSQL's delta rows into one, when a [`Tally`] found it due.
pub(crate) fn fold(conn: &mut DbConn, tally: &Tally) -> Result<()> {
    if let (true, DbConn::Pg(pg)) = (tally.fold_due, conn) {
        // One statement (see the migration): the rows it deletes are those whose sum it
        // inserts, and it waits for no other writer or folder.
        diesel::sql_query("SELECT user_count_fold()").execute(pg)?;
    }
    Ok(())
}
