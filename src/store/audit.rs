//! Audit events: appended, never changed.

use diesel::prelude::*;

use super::schema::audit_events;
use super::{DbConn, Result, Tx};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_events)]
pub struct NewEvent<'a> {
    pub at: chrono::NaiveDateTime,
    pub event_type: &'a str,
    pub user_id: Option<&'a str>,
    pub user_name: Option<&'a str>,
    pub origin: &'a str,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct EventRow {
    pub id: i64,
    pub at: chrono::NaiveDateTime,
    pub event_type: String,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub origin: String,
    pub actor: String,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

pub fn insert(tx: &mut Tx, events: &[NewEvent<'_>]) -> Result<()> {
    let conn = tx.conn();
    // One statement per event: multi-row INSERT is spelled per backend (see user_values::insert_values).
    for e in events {
        diesel::insert_into(audit_events::table).values(e).execute(conn)?;
    }
    Ok(())
}

/// Which events to read; every field that is set narrows the match.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub user_id: Option<String>,
    pub event_type: Option<String>,
    /// The door (`api`, `console`, …).
    pub origin: Option<String>,
    /// Exactly this actor (a token name, an operator, a sync run).
    pub actor: Option<String>,
    /// At or after this time.
    pub since: Option<chrono::NaiveDateTime>,
    /// Before this time (exclusive: a day's events are `since` its start `until` the next day's).
    pub until: Option<chrono::NaiveDateTime>,
    /// Only events older than this one (its id): reads a long trail in chunks without an
    /// ever larger offset.
    pub before_id: Option<i64>,
    /// 0-based.
    pub offset: i64,
    pub limit: i64,
}

fn filtered(q: &Query) -> audit_events::BoxedQuery<'static, <DbConn as diesel::Connection>::Backend> {
    let mut query = audit_events::table.into_boxed();
    if let Some(u) = &q.user_id {
        query = query.filter(audit_events::user_id.eq(u.clone()));
    }
    if let Some(t) = &q.event_type {
        query = query.filter(audit_events::event_type.eq(t.clone()));
    }
    if let Some(o) = &q.origin {
        query = query.filter(audit_events::origin.eq(o.clone()));
    }
    if let Some(a) = &q.actor {
        query = query.filter(audit_events::actor.eq(a.clone()));
    }
    if let Some(s) = q.since {
        query = query.filter(audit_events::at.ge(s));
    }
    if let Some(u) = q.until {
        query = query.filter(audit_events::at.lt(u));
    }
    if let Some(id) = q.before_id {
        query = query.filter(audit_events::id.lt(id));
    }
    query
}

/// Newest first, and how many match in all.
pub fn list(conn: &mut DbConn, q: &Query) -> Result<(i64, Vec<EventRow>)> {
    let total = filtered(q).count().get_result(conn)?;
    Ok((total, rows(conn, q)?))
}

/// Newest first, without counting them all (for reading in chunks).
pub fn rows(conn: &mut DbConn, q: &Query) -> Result<Vec<EventRow>> {
    Ok(filtered(q).order(audit_events::id.desc()).offset(q.offset).limit(q.limit).select(EventRow::as_select()).load(conn)?)
}
