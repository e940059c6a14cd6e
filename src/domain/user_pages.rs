//! Paging through users for SCIM list requests, two ways:
//!
//! - `startIndex` (RFC 7644 §3.4.2.4): a page whose `startIndex` is where a page served to the
//!   same client for the same query ended continues after that page's last user (a keyset on
//!   the stable order, creation time then id) instead of counting `startIndex - 1` users off, so a
//!   walk page after page costs the same at its end as at its start and returns every user
//!   present throughout exactly once, whatever is created or deleted meanwhile. Other pages
//!   (another instance served the one before, a jump, `sortBy`) are counted from the start.
//! - cursors (RFC 9865): `nextCursor` / `previousCursor` name the place a page ends or starts,
//!   sealed (AES-GCM under the deployment's key, `mfa::Sealer`) with the query they belong to and
//!   when they were issued: opaque, not forgeable, good on every instance, for
//!   `scim.cursor_timeout` after issue. Under `sortBy` a cursor holds a position instead.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::mfa::Sealer;
use super::users::{Matching, StoredUser};
use super::{Error, Invalid, Result};
use crate::clock::Clock;
use crate::scim::list::ListQuery;
use crate::scim::schema::USER_RESOURCE;
use crate::store::sql::Condition;
use crate::store::user_count::{self, Generation};
use crate::store::user_filter::{self, SortKey};
use crate::store::user_pages::{self, Page, PageRequest, Place, Start, Walk};
use crate::store::{Pool, PooledConn};

/// The associated data cursors are sealed with: a cursor opens as nothing else, and nothing
/// else sealed under the key (TOTP secrets) opens as a cursor.
const CURSOR_LABEL: &str = "scim-cursor";

/// Most walk positions remembered per instance (a few hundred bytes each).
const ANCHORS: usize = 10_000;

/// A page of a list request and the cursors around it.
pub struct Listed {
    pub total: i64,
    pub users: Vec<StoredUser>,
    pub next_cursor: Option<String>,
    pub previous_cursor: Option<String>,
}

#[derive(Clone)]
pub struct UserPages {
    pool: Pool,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    /// How long a cursor stays good after issue, and a walk position is remembered.
    timeout: Duration,
    anchors: Arc<Mutex<Anchors>>,
    checkpoints: Arc<Mutex<Checkpoints>>,
}

/// Every [`CHECKPOINT_EVERY`]th place of the whole creation order, as of a generation of the
/// users: a page at any `startIndex` skips fewer than that many index entries from the
/// checkpoint before it instead of `startIndex - 1` from the start.
#[derive(Default)]
struct Checkpoints {
    generation: Option<Generation>,
    places: Vec<Place>,
    built: Option<Instant>,
}

const CHECKPOINT_EVERY: i64 = 500;
const REBUILD_AFTER: Duration = Duration::from_secs(1);

impl UserPages {
    pub fn new(pool: Pool, sealer: Arc<Sealer>, clock: Arc<dyn Clock>, cursor_timeout: Duration) -> Self {
        let anchors = Arc::new(Mutex::new(Anchors::new(ANCHORS, cursor_timeout)));
        UserPages { pool, sealer, clock, timeout: cursor_timeout, anchors, checkpoints: Arc::default() }
    }

    /// The page `q` asks for; `client` (the token's name) keeps one client's walks apart from
    /// another's.
    pub fn list(&self, q: &ListQuery, client: &str) -> Result<Listed> {
        let matching = Matching { filter: q.filter.clone(), ..Matching::default() };
        let filter = matching.condition()?;
        let sort = q.sort_by.as_ref().map(|p| user_filter::sort_key(&USER_RESOURCE, p)).transpose()?;
        let mut conn = self.pool.get()?;
        match &q.cursor {
            None => self.index_page(&mut conn, q, client, filter, sort),
            Some(cursor) => self.cursor_page(&mut conn, q, cursor, filter, sort),
        }
    }

    /// A page by `startIndex`: after the place the client's previous page of this query ended
    /// when it ended there, else from the checkpoint before `startIndex`, else by OFFSET.
    fn index_page(
        &self,
        conn: &mut PooledConn,
        q: &ListQuery,
        client: &str,
        filter: Option<Condition>,
        sort: Option<SortKey>,
    ) -> Result<Listed> {
        let offset = q.start_index - 1;
        let walk = match sort {
            Some(key) => Walk::Sorted { key, descending: q.descending, offset },
            None => Walk::Created(match self.anchor(client, q) {
                Some(place) => Start::After(place),
                None if filter.is_none() && q.count > 0 => match self.near(conn, offset)? {
                    Some((place, skip)) => Start::Near { offset, place, skip },
                    None => Start::Offset(offset),
                },
                None => Start::Offset(offset),
            }),
        };
        let sorted = matches!(walk, Walk::Sorted { .. });
        let page = user_pages::page(conn, PageRequest { filter, walk, limit: q.count })?;
        if let (false, Some(last)) = (sorted, page.users.last()) {
            let key = AnchorKey::new(client, q, q.start_index + page.users.len() as i64);
            self.anchors.lock().expect("anchors").put(key, Place::of(last));
        }
        Ok(Listed { total: page.total, users: page.users, next_cursor: None, previous_cursor: None })
    }

    /// A page by cursor (empty: the first), with the cursors of the pages around it.
    fn cursor_page(
        &self,
        conn: &mut PooledConn,
        q: &ListQuery,
        cursor: &str,
        filter: Option<Condition>,
        sort: Option<SortKey>,
    ) -> Result<Listed> {
        let to = if cursor.is_empty() { None } else { Some(self.open(cursor, q)?) };
        let listed = |page: Page, next: Option<To>, previous: Option<To>| {
            // A page of none leads nowhere.
            let (next, previous) = if q.count == 0 { (None, None) } else { (next, previous) };
            Listed {
                total: page.total,
                users: page.users,
                next_cursor: next.map(|to| self.seal(q, to)),
                previous_cursor: previous.map(|to| self.seal(q, to)),
            }
        };
        if let Some(key) = sort {
            let offset = match to {
                None => 0,
                Some(To::Offset(n)) => n,
                Some(_) => return Err(invalid_cursor()),
            };
            let walk = Walk::Sorted { key, descending: q.descending, offset };
            let page = user_pages::page(conn, PageRequest { filter, walk, limit: q.count })?;
            let next = page.more.then(|| To::Offset(offset + page.users.len() as i64));
            let previous = (offset > 0).then(|| To::Offset((offset - q.count).max(0)));
            return Ok(listed(page, next, previous));
        }
        let start = match to {
            None => Start::Offset(0),
            Some(To::After(p)) => Start::After(p),
            Some(To::Before(p)) => Start::Before(p),
            Some(To::Offset(_)) => return Err(invalid_cursor()),
        };
        let backwards = matches!(start, Start::Before(_));
        let first_page = start == Start::Offset(0);
        let page = user_pages::page(conn, PageRequest { filter: filter.clone(), walk: Walk::Created(start), limit: q.count })?;
        let (Some(first), Some(last)) = (page.users.first().map(Place::of), page.users.last().map(Place::of)) else {
            return Ok(listed(page, None, None));
        };
        // The side the page was read towards is known from the page; the other side is probed
        // (users there may have been deleted since the cursor was issued).
        let mut beyond = |place: &Place, after: bool| user_pages::any_beyond(conn, filter.as_ref(), place, after);
        let (next, previous) =
            if backwards { (beyond(&last, true)?, page.more) } else { (page.more, !first_page && beyond(&first, false)?) };
        Ok(listed(page, next.then_some(To::After(last)), previous.then_some(To::Before(first))))
    }

    /// A checkpoint at or before the 0-based position `offset` of the whole creation order and
    /// how far past it `offset` lies, when the checkpoints are of the current set of users
    /// (rebuilt at most once a second: under a stream of creations a page pays its OFFSET
    /// rather than a walk of every user each time).
    fn near(&self, conn: &mut PooledConn, offset: i64) -> Result<Option<(Place, i64)>> {
        if offset < CHECKPOINT_EVERY {
            return Ok(None);
        }
        let tally = user_count::tally(conn)?;
        user_count::fold(conn, &tally)?;
        let generation = tally.generation;
        let mut c = self.checkpoints.lock().expect("checkpoints");
        if c.generation != Some(generation) {
            if c.built.is_some_and(|at| at.elapsed() < REBUILD_AFTER) {
                return Ok(None);
            }
            c.places = user_pages::checkpoints(conn, CHECKPOINT_EVERY)?;
            c.built = Some(Instant::now());
            // A user created or deleted during the walk makes them unusable.
            let after = user_count::tally(conn)?.generation;
            c.generation = (after == generation).then_some(generation);
            if c.generation.is_none() {
                return Ok(None);
            }
        }
        let j = offset / CHECKPOINT_EVERY;
        Ok(c.places.get(j as usize).map(|p| (p.clone(), offset - j * CHECKPOINT_EVERY)))
    }

    /// Where an earlier page of this walk ended, when `q` starts right after it.
    fn anchor(&self, client: &str, q: &ListQuery) -> Option<Place> {
        if q.start_index <= 1 {
            return None;
        }
        self.anchors.lock().expect("anchors").get(&AnchorKey::new(client, q, q.start_index))
    }

    fn seal(&self, q: &ListQuery, to: To) -> String {
        let payload = Payload { query: q.fingerprint.clone(), count: q.count, issued: self.clock.now().timestamp(), to };
        let sealed = self.sealer.seal(CURSOR_LABEL, &serde_json::to_vec(&payload).expect("a cursor serialises"));
        // Base64url without padding: RFC 9865 cursors hold only unreserved URI characters.
        sealed.replace('+', "-").replace('/', "_").trim_end_matches('=').to_string()
    }

    /// The place a cursor names, if it was issued by this deployment for this query, is not
    /// past its time, and comes with the count it was issued for.
    fn open(&self, cursor: &str, q: &ListQuery) -> Result<To> {
        let mut sealed = cursor.replace('-', "+").replace('_', "/");
        sealed.extend(std::iter::repeat_n('=', (4 - sealed.len() % 4) % 4));
        let bytes = self.sealer.open(CURSOR_LABEL, &sealed).map_err(|_| invalid_cursor())?;
        let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())?;
        if payload.query != q.fingerprint {
            return Err(Error::invalid(
                Invalid::Cursor,
                "this cursor belongs to another query: send the filter, sortBy and sortOrder it was issued for",
            ));
        }
        let age = self.clock.now().timestamp().saturating_sub(payload.issued);
        if age > self.timeout.as_secs() as i64 {
            return Err(Error::invalid(
                Invalid::Cursor,
                format!("this cursor expired: it is good for {} seconds (cursorTimeout)", self.timeout.as_secs()),
            ));
        }
        if payload.count != q.count {
            return Err(Error::invalid(
                Invalid::Count,
                format!("count must stay {} (the count this cursor was issued for)", payload.count),
            ));
        }
        Ok(payload.to)
    }
}

fn invalid_cursor() -> Error {
    Error::invalid(
        Invalid::Cursor,
        "cursor is not one this server issued: leave it empty for the first page, then send nextCursor or previousCursor",
    )
}

/// What a cursor holds (sealed): the query it belongs to, the page size, when it was issued,
/// and where its page starts.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "q")]
    query: String,
    #[serde(rename = "c")]
    count: i64,
    /// Unix seconds, on the daemon's clock.
    #[serde(rename = "at")]
    issued: i64,
    #[serde(rename = "p")]
    to: To,
}

#[derive(Debug, Serialize, Deserialize)]
enum To {
    /// The page after this place (creation order).
    #[serde(rename = "a")]
    After(Place),
    /// The page before this place (creation order).
    #[serde(rename = "b")]
    Before(Place),
    /// The page at this 0-based position (under `sortBy`).
    #[serde(rename = "o")]
    Offset(i64),
}

/// A walk position: the page at `start_index` of this client's query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AnchorKey {
    client: String,
    query: String,
    start_index: i64,
}

impl AnchorKey {
    fn new(client: &str, q: &ListQuery, start_index: i64) -> Self {
        AnchorKey { client: client.to_string(), query: q.fingerprint.clone(), start_index }
    }
}

/// Where served pages ended, for a while: a bounded map, oldest out first.
struct Anchors {
    capacity: usize,
    ttl: Duration,
    places: HashMap<AnchorKey, Anchor>,
    /// Keys in the order they were put, with the sequence number of that put: a key put again
    /// appears again, and its older entry is skipped when it comes out.
    order: VecDeque<(AnchorKey, u64)>,
    puts: u64,
}

struct Anchor {
    place: Place,
    at: Instant,
    seq: u64,
}

impl Anchors {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Anchors { capacity, ttl, places: HashMap::new(), order: VecDeque::new(), puts: 0 }
    }

    fn get(&self, key: &AnchorKey) -> Option<Place> {
        self.places.get(key).filter(|a| a.at.elapsed() <= self.ttl).map(|a| a.place.clone())
    }

    fn put(&mut self, key: AnchorKey, place: Place) {
        self.puts += 1;
        let seq = self.puts;
        self.places.insert(key.clone(), Anchor { place, at: Instant::now(), seq });
        self.order.push_back((key, seq));
        while let Some((key, seq)) = self.order.front() {
            match self.places.get(key) {
                Some(a) if a.seq == *seq => {
                    if self.order.len() <= self.capacity && a.at.elapsed() <= self.ttl {
                        break;
                    }
                    self.places.remove(key);
                }
                _ => {} // put again since: its newer entry comes later
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: i64) -> AnchorKey {
        AnchorKey { client: "c".into(), query: "q".into(), start_index: n }
    }

    fn place(id: &str) -> Place {
        Place { created_at: chrono::NaiveDateTime::default(), id: id.into() }
    }

    #[test]
    fn anchors_are_bounded_and_a_key_put_again_keeps_its_new_place() {
        let mut a = Anchors::new(3, Duration::from_secs(60));
        a.put(key(1), place("a"));
        a.put(key(1), place("b"));
        a.put(key(2), place("c"));
        a.put(key(3), place("d"));
        assert_eq!(a.get(&key(1)), Some(place("b")), "the older entry of key 1 left, not its newer one");
        a.put(key(4), place("e"));
        assert_eq!(a.get(&key(1)), None, "the oldest left first");
        assert_eq!(a.places.len(), 3);
        assert!(a.order.len() <= 3);
        assert_eq!(a.get(&key(4)), Some(place("e")));
    }

    #[test]
    fn anchors_expire() {
        let mut a = Anchors::new(3, Duration::ZERO);
        a.put(key(1), place("a"));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(a.get(&key(1)), None);
    }
}
