//! Pages of users. In creation order (the stable order: creation time, then id) a page starts at
//! a position (`startIndex`) or at a user's place in that order, a keyset: the page after a
//! place walks the `(created_at, id)` index from that place on, so it costs the same anywhere in
//! the list, and a user present throughout a walk keeps its place however many users before it
//! are created or deleted meanwhile. Sorted pages (`sortBy`) start at a position
//! (`user_sort::sorted_ids`).

use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

use super::mfa::Summary;
use super::schema::{mfa_factors, users};
use super::sql::{Bind, Condition, Fragment, Select};
use super::user_count::{self, Tally};
use super::user_filter::SortKey;
use super::users::{Row, StoredUser};
use super::{DbConn, Result};

/// Where a user stands in the stable order. Neither part changes while the user exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    #[serde(rename = "t")]
    pub created_at: chrono::NaiveDateTime,
    #[serde(rename = "i")]
    pub id: String,
}

impl Place {
    pub fn of(user: &StoredUser) -> Self {
        Place { created_at: user.created_at, id: user.id.clone() }
    }
}

/// Where a page in creation order starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At a 0-based position.
    Offset(i64),
    /// At the 0-based position `offset`, known to be `skip` users from `place` on (a
    /// checkpoint, see [`checkpoints`]): the page skips those few instead of `offset`.
    Near { offset: i64, place: Place, skip: i64 },
    /// Just after this place.
    After(Place),
    /// The page that ends just before this place (read backwards, returned in order).
    Before(Place),
}

/// How a page walks the users.
#[derive(Debug, Clone)]
pub(crate) enum Walk {
    /// In creation order.
    Created(Start),
    /// By a sort key (`true`: descending), from a 0-based position.
    Sorted { key: SortKey, descending: bool, offset: i64 },
}

pub(crate) struct PageRequest {
    pub filter: Option<Condition>,
    pub walk: Walk,
    pub limit: i64,
}

/// One page of users matching a filter, and how many match in all.
pub struct Page {
    pub total: i64,
    pub users: Vec<StoredUser>,
    /// Whether more users lie beyond this page in the direction it was read: after it, or
    /// before it for [`Start::Before`].
    pub more: bool,
}

/// Above this many matches of a filter, SQLite walks the users in creation order and tests each
/// (a page of a broad search fills within a few index entries) instead of gathering every match
/// and sorting them, which reads each one's row.
const DENSE: i64 = 1000;

pub(crate) fn page(conn: &mut DbConn, req: PageRequest) -> Result<Page> {
    // The ids of a page and then its rows, and its count, are read in several statements: on
    // one snapshot, so that a user deleted between them cannot leave a hole (a short page, which
    // a client takes for the last). The count's upkeep, a write, comes after.
    let (page, tally) = super::snapshot(conn, |conn| page_in(conn, req))?;
    if let Some(tally) = tally {
        user_count::fold(conn, &tally)?;
    }
    Ok(page)
}

/// A page, and the tally of all users when the page needed it.
fn page_in(conn: &mut DbConn, req: PageRequest) -> Result<(Page, Option<Tally>)> {
    let filter = req.filter.as_ref();
    // On SQLite a filtered page in creation order counts first, to choose its plan by the count.
    let counted = match (&*conn, filter, &req.walk) {
        (DbConn::Sqlite(_), Some(f), Walk::Created(_)) if req.limit > 0 => Some(count(conn, Some(f))?.0),
        _ => None,
    };
    let dense = counted.is_some_and(|n| n >= DENSE);
    let (users, more_read) = if req.limit == 0 {
        (Vec::new(), None)
    } else {
        match &req.walk {
            Walk::Sorted { key, descending, offset } => {
                let ids = super::user_sort::sorted_ids(conn, filter, key, *descending, *offset, req.limit)?;
                (in_order(conn, &ids)?, None)
            }
            Walk::Created(Start::Offset(0)) if !dense => (first_page(conn, filter, req.limit)?, None),
            Walk::Created(start) => {
                // Ids are chosen on the (created_at, id) index alone, without reading bodies: a
                // large OFFSET skips index entries, not rows, and a keyset starts where it says.
                // One id more than the page tells whether a keyset page is the last.
                let keyset = matches!(start, Start::After(_) | Start::Before(_));
                let mut ids = created_ids(conn, filter, dense, start, req.limit + i64::from(keyset))?;
                let more = keyset.then_some(ids.len() as i64 > req.limit);
                ids.truncate(req.limit as usize);
                if matches!(start, Start::Before(_)) {
                    ids.reverse();
                }
                (in_order(conn, &ids)?, more)
            }
        }
    };
    let offset = match &req.walk {
        Walk::Created(Start::Offset(n) | Start::Near { offset: n, .. }) | Walk::Sorted { offset: n, .. } => Some(*n),
        _ => None,
    };
    // A short first page is the whole result: no need to count (existence checks by userName
    // or externalId are exactly that).
    let (total, tally) = match counted {
        Some(n) => (n, None),
        None if offset == Some(0) && req.limit > 0 && (users.len() as i64) < req.limit => (users.len() as i64, None),
        None => count(conn, filter)?,
    };
    let more = more_read.unwrap_or_else(|| offset.is_some_and(|o| o + (users.len() as i64) < total));
    Ok((Page { total, users, more }, tally))
}

/// The first page in creation order, in one query.
fn first_page(conn: &mut DbConn, filter: Option<&Condition>, limit: i64) -> Result<Vec<StoredUser>> {
    let filter = filter.cloned().unwrap_or_else(|| Condition::new().sql("1 = 1"));
    users::table
        .inner_join(mfa_factors::table)
        .filter(filter)
        .select((Row::as_select(), Summary::as_select()))
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit)
        .load::<(Row, Summary)>(conn)?
        .into_iter()
        .map(StoredUser::try_from)
        .collect()
}

/// Up to `limit` ids of the users matching `filter` from `start` on, in the direction it reads.
/// A dense filter is wrapped in SQLite's unary `+`, which keeps it from choosing the plan.
fn created_ids(conn: &mut DbConn, filter: Option<&Condition>, dense: bool, start: &Start, limit: i64) -> Result<Vec<String>> {
    let mut f = Fragment::<Text>::new().sql("SELECT users.id FROM users WHERE ");
    if let Some(c) = filter {
        f = f.sql(if dense { "+(" } else { "(" }).push(c.clone()).sql(") AND ");
    }
    // Row values: both backends walk the (created_at, id) index from the place on.
    let at = |f: Fragment<Text>, op: &str, p: &Place| {
        f.sql(&format!("(users.created_at, users.id) {op} ("))
            .bind(Bind::Timestamp(p.created_at))
            .sql(", ")
            .bind(Bind::Text(p.id.clone()))
            .sql(")")
    };
    let (f, dir, skip) = match start {
        Start::Offset(n) => (f.sql("1 = 1"), "ASC", *n),
        Start::Near { place, skip, .. } => (at(f, ">=", place), "ASC", *skip),
        Start::After(p) => (at(f, ">", p), "ASC", 0),
        Start::Before(p) => (at(f, "<", p), "DESC", 0),
    };
    let mut f = f.sql(&format!(" ORDER BY users.created_at {dir}, users.id {dir} LIMIT ")).bind(Bind::Int(limit));
    if skip > 0 {
        f = f.sql(" OFFSET ").bind(Bind::Int(skip));
    }
    Ok(Select(f).load(conn)?)
}

/// How many users match `filter`; every user without one, from the count the database keeps
/// (`user_count`), with that tally.
fn count(conn: &mut DbConn, filter: Option<&Condition>) -> Result<(i64, Option<Tally>)> {
    match filter {
        None => user_count::tally(conn).map(|t| (t.users, Some(t))),
        Some(f) => Ok((users::table.filter(f.clone()).count().get_result(conn)?, None)),
    }
}

/// The users with these ids, in this order.
fn in_order(conn: &mut DbConn, ids: &[String]) -> Result<Vec<StoredUser>> {
    let mut rows = users::table
        .inner_join(mfa_factors::table)
        .filter(users::id.eq_any(ids))
        .select((Row::as_select(), Summary::as_select()))
        .load::<(Row, Summary)>(conn)?;
    let position: std::collections::HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    rows.sort_by_key(|(r, _)| position.get(r.id.as_str()).copied());
    rows.into_iter().map(StoredUser::try_from).collect()
}

/// Whether some user matching `filter` stands after (`after`) or before this place.
pub(crate) fn any_beyond(conn: &mut DbConn, filter: Option<&Condition>, place: &Place, after: bool) -> Result<bool> {
    let start = if after { Start::After(place.clone()) } else { Start::Before(place.clone()) };
    Ok(!created_ids(conn, filter, false, &start, 1)?.is_empty())
}

#[derive(QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    created_at: chrono::NaiveDateTime,
    #[diesel(sql_type = Text)]
    id: String,
}

/// The places of the users at positions 0, `every`, 2 × `every`, … of the creation order: one
/// walk of the (created_at, id) index, numbered in the database, a few hundred rows sent.
pub(crate) fn checkpoints(conn: &mut DbConn, every: i64) -> Result<Vec<Place>> {
    let rows: Vec<CheckpointRow> = diesel::sql_query(format!(
        "SELECT created_at, id FROM (SELECT created_at, id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS n FROM users) AS t \
         WHERE (n - 1) % {every} = 0 ORDER BY created_at, id"
    ))
    .load(conn)?;
    Ok(rows.into_iter().map(|r| Place { created_at: r.created_at, id: r.id }).collect())
}
