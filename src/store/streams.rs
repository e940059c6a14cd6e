//! Shared Signals streams as receivers configured them (SSF 1.0 §8.1.1). JSON arrays are kept
//! as text; the authorization header of a push stream is stored sealed (the domain seals it).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{event_deliveries, event_receivers, ssf_streams};
use super::{DbConn, Result, Tx};

/// A stream's row. `Debug` leaves the sealed authorization header out.
#[derive(Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = ssf_streams, treat_none_as_null = true)]
pub struct StreamRow {
    pub id: String,
    pub owner: Option<String>,
    pub audience: String,
    pub events_requested: String,
    pub events_delivered: String,
    pub delivery_method: String,
    pub endpoint_url: Option<String>,
    pub authorization_header: Option<String>,
    pub subject_format: String,
    pub description: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl std::fmt::Debug for StreamRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRow")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("delivery_method", &self.delivery_method)
            .field("endpoint_url", &self.endpoint_url)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The receiver name a stream's deliveries are owed to.
pub fn receiver(stream_id: &str) -> String {
    format!("stream:{stream_id}")
}

/// Makes the transactions that create streams take their turns (PostgreSQL; SQLite has one
/// writer anyway), so that counting an owner's streams and inserting one more hold together.
/// Held to the end of the transaction.
pub fn take_create_turn(tx: &mut Tx) -> Result<()> {
    if let DbConn::Pg(pg) = tx.conn() {
        // An arbitrary application-wide key: "provisiond ssf streams".
        diesel::sql_query("SELECT pg_advisory_xact_lock(7470652302)").execute(pg)?;
    }
    Ok(())
}

pub fn insert(tx: &mut Tx, row: &StreamRow) -> Result<()> {
    diesel::insert_into(ssf_streams::table).values(row).execute(tx.conn())?;
    Ok(())
}

pub fn get(conn: &mut DbConn, id: &str) -> Result<Option<StreamRow>> {
    Ok(ssf_streams::table.find(id).select(StreamRow::as_select()).first(conn).optional()?)
}

/// Every stream (`owner: None`), or those one token created, oldest first.
pub fn list(conn: &mut DbConn, owner: Option<&str>) -> Result<Vec<StreamRow>> {
    let all = ssf_streams::table.select(StreamRow::as_select()).order((ssf_streams::created_at, ssf_streams::id));
    Ok(match owner {
        Some(owner) => all.filter(ssf_streams::owner.eq(owner)).load(conn)?,
        None => all.load(conn)?,
    })
}

/// Writes every column of `row` over the stream's; false when it no longer exists.
pub fn update(tx: &mut Tx, row: &StreamRow) -> Result<bool> {
    Ok(diesel::update(ssf_streams::table.find(&row.id)).set(row).execute(tx.conn())? > 0)
}

/// Deletes the stream, every delivery still owed to it and its counters; false when it did not
/// exist.
pub fn delete(tx: &mut Tx, id: &str) -> Result<bool> {
    let conn = tx.conn();
    diesel::delete(event_deliveries::table.filter(event_deliveries::receiver.eq(receiver(id)))).execute(conn)?;
    diesel::delete(event_receivers::table.find(receiver(id))).execute(conn)?;
    Ok(diesel::delete(ssf_streams::table.find(id)).execute(conn)? > 0)
}
