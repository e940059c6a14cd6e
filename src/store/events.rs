//! The event outbox: events written in the transaction of their change, and per receiver the
//! messages still owed. A deliverer first dispatches new events (one delivery row per receiver
//! and message: a webhook gets one per event, a stream one per CAEP/RISC event it asked for),
//! then claims the oldest deliveries of a receiver for a while (a lease), posts them outside any
//! transaction and records the outcome. Undispatched events are found by a flag, not
//! by a cursor over ids, so an event whose transaction commits after a younger one is not skipped.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{event_deliveries, event_receivers, events};
use super::sql::{insert_rows, Bind};
use super::{DbConn, Result, Tx};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events)]
pub struct NewEvent<'a> {
    pub id: String,
    pub at: NaiveDateTime,
    pub event_type: &'a str,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub origin: &'a str,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub data: String,
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: String,
    pub at: NaiveDateTime,
    pub event_type: String,
    pub user_id: String,
    pub user_name: String,
    pub origin: String,
    pub actor: String,
    pub reason: Option<String>,
    pub data: String,
}

/// A message owed to a receiver: the event, which of its signals (empty for a webhook), the
/// message id and how often it was tried before.
#[derive(Debug, Clone)]
pub struct Owed {
    pub event: EventRow,
    pub signal: String,
    pub jti: String,
    pub attempts: i32,
}

/// One message a receiver is owed for an event: the receiver, the signal and the message id.
pub struct Message {
    pub receiver: String,
    pub signal: String,
    pub jti: String,
}

/// What `/metrics`, `/readyz` and the console tell about a receiver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiverState {
    pub receiver: String,
    pub backlog: i64,
    pub oldest: Option<NaiveDateTime>,
    pub delivered: i64,
    pub dropped: i64,
    pub failed_attempts: i64,
    pub last_error: Option<String>,
    /// When the last attempt failed.
    pub last_error_at: Option<NaiveDateTime>,
    /// When the receiver last took a message.
    pub last_delivered_at: Option<NaiveDateTime>,
}

impl ReceiverState {
    /// How long the oldest event still owed has waited at `now`; none when nothing is owed.
    pub fn waiting(&self, now: NaiveDateTime) -> Option<chrono::Duration> {
        self.oldest.filter(|_| self.backlog > 0).map(|t| (now - t).max(chrono::Duration::zero()))
    }
}

/// Writes events in the caller's transaction, one statement each as the audit rows are.
pub fn insert(tx: &mut Tx, new: &[NewEvent<'_>]) -> Result<()> {
    let conn = tx.conn();
    for e in new {
        diesel::insert_into(events::table).values(e).execute(conn)?;
    }
    Ok(())
}

/// Makes sure every receiver has its row (counters, and on PostgreSQL the row claims lock).
pub fn ensure_receivers(conn: &mut DbConn, names: &[&str]) -> Result<()> {
    for name in names {
        diesel::sql_query("INSERT INTO event_receivers (receiver) VALUES ($1) ON CONFLICT (receiver) DO NOTHING")
            .bind::<diesel::sql_types::Text, _>(*name)
            .execute(conn)?;
    }
    Ok(())
}

/// Forgets the webhooks that are no longer configured: their counters and the messages still
/// owed to them.
pub fn forget_webhooks_except(tx: &mut Tx, names: &[&str]) -> Result<()> {
    let conn = tx.conn();
    let gone = event_receivers::table
        .filter(event_receivers::receiver.like("webhook:%"))
        .filter(event_receivers::receiver.ne_all(names))
        .select(event_receivers::receiver)
        .load::<String>(conn)?;
    for receiver in gone {
        diesel::delete(event_deliveries::table.filter(event_deliveries::receiver.eq(&receiver))).execute(conn)?;
        diesel::delete(event_receivers::table.find(&receiver)).execute(conn)?;
    }
    Ok(())
}

/// Turns up to `limit` undispatched events (oldest first) into the messages `wants` says each
/// receiver is owed; returns how many events were dispatched. On PostgreSQL the events another
/// instance is dispatching are skipped (`FOR UPDATE SKIP LOCKED`).
pub fn dispatch(tx: &mut Tx, limit: i64, now: NaiveDateTime, wants: &dyn Fn(&EventRow) -> Vec<Message>) -> Result<usize> {
    let conn = tx.conn();
    // `NOT dispatched`, the partial index's own condition: `dispatched = ?` (or `= false`) does not
    // match it, and the query then walked every event kept for `events.max_age` on each round,
    // dispatched ones first (the oldest ids), inside the write transaction.
    let query = events::table.filter(diesel::dsl::not(events::dispatched)).order(events::id).limit(limit);
    let found: Vec<EventRow> = match conn {
        DbConn::Pg(pg) => query.select(EventRow::as_select()).for_update().skip_locked().load(pg)?,
        DbConn::Sqlite(c) => query.select(EventRow::as_select()).load(c)?,
    };
    let rows: Vec<Vec<Option<Bind>>> = found
        .iter()
        .flat_map(|event| {
            wants(event).into_iter().map(move |m| {
                vec![
                    Some(Bind::Text(m.receiver)),
                    Some(Bind::Text(event.id.clone())),
                    Some(Bind::Text(m.signal)),
                    Some(Bind::Text(m.jti)),
                    Some(Bind::Timestamp(now)),
                ]
            })
        })
        .collect();
    // SQLite binds at most 32,766 values per statement: five per row.
    for chunk in rows.chunks(1000) {
        let columns = ["receiver", "event_id", "signal", "jti", "next_at"];
        if let Some(s) = insert_rows("event_deliveries", &columns, chunk.iter().cloned()) {
            s.execute(conn)?;
        }
    }
    let ids: Vec<&String> = found.iter().map(|e| &e.id).collect();
    for chunk in ids.chunks(500) {
        diesel::update(events::table.filter(events::id.eq_any(chunk))).set(events::dispatched.eq(true)).execute(conn)?;
    }
    Ok(found.len())
}

/// Claims, until `lease_until`, up to `limit` of the oldest messages owed to `receiver`, in order,
/// as long as they are due and nobody else holds them: the head of the receiver's queue, so its
/// messages go out in order (a message waiting for its retry holds back those after it). On
/// PostgreSQL the receiver's row is locked with `SKIP LOCKED` first: an instance that finds it
/// locked leaves this receiver to the other for now.
pub fn claim_head(
    tx: &mut Tx,
    receiver: &str,
    me: &str,
    limit: i64,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
) -> Result<Vec<Owed>> {
    let conn = tx.conn();
    if let DbConn::Pg(pg) = conn {
        let locked = event_receivers::table
            .find(receiver)
            .select(event_receivers::receiver)
            .for_update()
            .skip_locked()
            .first::<String>(pg)
            .optional()?;
        if locked.is_none() {
            return Ok(Vec::new());
        }
    }
    let head = event_deliveries::table
        .inner_join(events::table)
        .filter(event_deliveries::receiver.eq(receiver))
        .order((event_deliveries::event_id, event_deliveries::signal))
        .limit(limit)
        .select((
            EventRow::as_select(),
            event_deliveries::signal,
            event_deliveries::jti,
            event_deliveries::attempts,
            event_deliveries::next_at,
            event_deliveries::claimed_by,
            event_deliveries::claimed_until,
        ))
        .load::<(EventRow, String, String, i32, NaiveDateTime, Option<String>, Option<NaiveDateTime>)>(conn)?;
    let mut claimed = Vec::new();
    for (event, signal, jti, attempts, next_at, claimed_by, claimed_until) in head {
        let held_by_other = claimed_by.as_deref().is_some_and(|by| by != me) && claimed_until.is_some_and(|t| t > now);
        if held_by_other || next_at > now {
            break;
        }
        claimed.push(Owed { event, signal, jti, attempts });
    }
    let jtis: Vec<&str> = claimed.iter().map(|o| o.jti.as_str()).collect();
    diesel::update(
        event_deliveries::table.filter(event_deliveries::receiver.eq(receiver)).filter(event_deliveries::jti.eq_any(&jtis)),
    )
    .set((event_deliveries::claimed_by.eq(me), event_deliveries::claimed_until.eq(lease_until)))
    .execute(conn)?;
    Ok(claimed)
}

/// The oldest messages owed to a polling receiver (RFC 8936), whoever saw them before: a message
/// is owed until it is acknowledged.
pub fn owed(conn: &mut DbConn, receiver: &str, limit: i64) -> Result<(Vec<Owed>, bool)> {
    let rows = event_deliveries::table
        .inner_join(events::table)
        .filter(event_deliveries::receiver.eq(receiver))
        .order((event_deliveries::event_id, event_deliveries::signal))
        .limit(limit + 1)
        .select((EventRow::as_select(), event_deliveries::signal, event_deliveries::jti, event_deliveries::attempts))
        .load::<(EventRow, String, String, i32)>(conn)?;
    let more = rows.len() as i64 > limit;
    let owed = rows
        .into_iter()
        .take(limit as usize)
        .map(|(event, signal, jti, attempts)| Owed { event, signal, jti, attempts })
        .collect();
    Ok((owed, more))
}

/// The receiver took these messages (a 2xx, or a poll's `ack`): their rows go, its count grows.
/// Returns how many were still owed.
pub fn delivered(tx: &mut Tx, receiver: &str, jtis: &[&str], now: NaiveDateTime) -> Result<usize> {
    let conn = tx.conn();
    let mut gone = 0;
    for chunk in jtis.chunks(500) {
        gone += diesel::delete(
            event_deliveries::table.filter(event_deliveries::receiver.eq(receiver)).filter(event_deliveries::jti.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    if gone > 0 {
        diesel::update(event_receivers::table.find(receiver))
            .set((
                event_receivers::delivered.eq(event_receivers::delivered + gone as i64),
                event_receivers::last_delivered_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(gone)
}

/// The attempt failed: tried again at `next_at`, or dropped (`None`) when the event is too old.
pub fn failed(
    tx: &mut Tx,
    receiver: &str,
    jti: &str,
    error: &str,
    now: NaiveDateTime,
    next_at: Option<NaiveDateTime>,
) -> Result<()> {
    let conn = tx.conn();
    let row = event_deliveries::table.filter(event_deliveries::receiver.eq(receiver)).filter(event_deliveries::jti.eq(jti));
    let changed = match next_at {
        Some(next_at) => diesel::update(row)
            .set((
                event_deliveries::attempts.eq(event_deliveries::attempts + 1),
                event_deliveries::next_at.eq(next_at),
                event_deliveries::last_error.eq(error),
                event_deliveries::claimed_by.eq(None::<String>),
                event_deliveries::claimed_until.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)?,
        None => diesel::delete(row).execute(conn)?,
    };
    if changed > 0 {
        let dropped = i64::from(next_at.is_none());
        diesel::update(event_receivers::table.find(receiver))
            .set((
                event_receivers::failed_attempts.eq(event_receivers::failed_attempts + 1),
                event_receivers::dropped.eq(event_receivers::dropped + dropped),
                event_receivers::last_error.eq(error),
                event_receivers::last_error_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Drops every message still owed to `receiver` (a stream that was disabled holds nothing),
/// counted as dropped with `reason` as its last error; returns how many.
pub fn forget(tx: &mut Tx, receiver: &str, reason: &str, now: NaiveDateTime) -> Result<usize> {
    let conn = tx.conn();
    let gone = diesel::delete(event_deliveries::table.filter(event_deliveries::receiver.eq(receiver))).execute(conn)?;
    if gone > 0 {
        diesel::update(event_receivers::table.find(receiver))
            .set((
                event_receivers::dropped.eq(event_receivers::dropped + gone as i64),
                event_receivers::last_error.eq(reason),
                event_receivers::last_error_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(gone)
}

/// Deletes dispatched events older than `before` that no receiver is owed any more.
pub fn prune(tx: &mut Tx, before: NaiveDateTime) -> Result<usize> {
    let owed = event_deliveries::table.select(event_deliveries::event_id);
    Ok(diesel::delete(
        events::table.filter(events::dispatched.eq(true)).filter(events::at.lt(before)).filter(events::id.ne_all(owed)),
    )
    .execute(tx.conn())?)
}

/// Backlog, age of the oldest owed event and counters of every receiver that has a row: two
/// queries, however many receivers and events.
pub fn receivers(conn: &mut DbConn) -> Result<Vec<ReceiverState>> {
    type Counters = (String, i64, i64, i64, Option<String>, Option<NaiveDateTime>, Option<NaiveDateTime>);
    let rows: Vec<Counters> = event_receivers::table
        .order(event_receivers::receiver)
        .select((
            event_receivers::receiver,
            event_receivers::delivered,
            event_receivers::dropped,
            event_receivers::failed_attempts,
            event_receivers::last_error,
            event_receivers::last_error_at,
            event_receivers::last_delivered_at,
        ))
        .load(conn)?;
    let owed: std::collections::HashMap<String, (i64, Option<NaiveDateTime>)> = event_deliveries::table
        .inner_join(events::table)
        .group_by(event_deliveries::receiver)
        .select((event_deliveries::receiver, diesel::dsl::count_star(), diesel::dsl::min(events::at)))
        .load::<(String, i64, Option<NaiveDateTime>)>(conn)?
        .into_iter()
        .map(|(receiver, backlog, oldest)| (receiver, (backlog, oldest)))
        .collect();
    Ok(rows
        .into_iter()
        .map(|(receiver, delivered, dropped, failed_attempts, last_error, last_error_at, last_delivered_at)| {
            let (backlog, oldest) = owed.get(&receiver).copied().unwrap_or_default();
            ReceiverState {
                receiver,
                backlog,
                oldest,
                delivered,
                dropped,
                failed_attempts,
                last_error,
                last_error_at,
                last_delivered_at,
            }
        })
        .collect())
}
