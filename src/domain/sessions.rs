//! Console sessions: started at sign-in, found by the random id in the browser's cookie (stored
//! only as its hash), ended by sign-out, by idling or age, and when the operator is disabled or
//! reset. Each carries the CSRF token its forms must send back.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;

use super::{credentials, Result};
use crate::clock::{self, Clock};
pub use crate::store::operators::Role;
use crate::store::{self, sessions as stored, Pool};

#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    clock: Arc<dyn Clock>,
    idle: chrono::Duration,
    lifetime: chrono::Duration,
}

/// A new session's id, for the cookie: shown to the browser once, never stored. `Debug` hides it.
pub struct SessionId(String);

impl SessionId {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(***)")
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub operator: String,
    /// The operator's role now (a changed role applies to live sessions at once).
    pub role: Role,
    /// What every form of this session sends back.
    pub csrf_token: String,
}

/// How often `last_seen_at` is written: not on every request of a busy operator.
const TOUCH_EVERY_SECS: i64 = 60;

impl Sessions {
    /// Sessions that end after `idle` without a request, and `lifetime` after sign-in at most.
    pub fn new(pool: Pool, clock: Arc<dyn Clock>, idle: Duration, lifetime: Duration) -> Self {
        let to = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Sessions { pool, clock, idle: to(idle), lifetime: to(lifetime) }
    }

    fn now(&self) -> NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// A new session for an operator who just signed in.
    pub fn start(&self, operator: &str, role: Role) -> Result<(SessionId, Session)> {
        let id = credentials::random_secret("");
        let csrf_token = credentials::random_secret("");
        let at = self.now();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| stored::insert(tx, &credentials::hash(&id), operator, &csrf_token, at))?;
        Ok((SessionId(id), Session { operator: operator.to_string(), role, csrf_token }))
    }

    /// The session a cookie names, while it lives; an expired one is ended here.
    pub fn find(&self, id: &str) -> Result<Option<Session>> {
        let id_hash = credentials::hash(id);
        let at = self.now();
        let mut conn = self.pool.get()?;
        let Some((row, role, disabled)) = stored::get(&mut conn, &id_hash)? else { return Ok(None) };
        if disabled || at - row.last_seen_at > self.idle || at - row.created_at > self.lifetime {
            store::write_tx(&mut conn, |tx| stored::delete(tx, &id_hash))?;
            return Ok(None);
        }
        if (at - row.last_seen_at).num_seconds() >= TOUCH_EVERY_SECS {
            store::write_tx(&mut conn, |tx| stored::touch(tx, &id_hash, at))?;
        }
        Ok(Some(Session { operator: row.operator, role, csrf_token: row.csrf_token }))
    }

    /// Signs out.
    pub fn end(&self, id: &str) -> Result<()> {
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| stored::delete(tx, &credentials::hash(id)))?;
        Ok(())
    }
}
