//! Noticing that PostgreSQL connections were lost (a restart, a failover), so that the pool
//! tests the connections it hands out only while that may matter.
//!
//! A pooled connection whose server went away fails every query, and diesel does not notice it
//! is dead. Asking each connection before handing it out (`SELECT 1`) costs a round trip per
//! request, a third of a single GET's; so the pool asks only within [`TESTING_AFTER_A_LOSS`] of
//! a query that failed for want of its connection. The request that meets a dead connection
//! first answers 503 (with `Retry-After`); the dead connections behind it are replaced before
//! anyone else uses them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::result::{DatabaseErrorKind as Kind, Error as DieselError};

/// How long after a lost connection was seen each checkout is tested: long enough for a
/// failover to finish and for every connection of the pool to be handed out once.
const TESTING_AFTER_A_LOSS: Duration = Duration::from_secs(60);

/// When a connection of one pool was last seen lost.
#[derive(Debug)]
pub(super) struct Losses {
    origin: Instant,
    /// Milliseconds from `origin` to the last loss, plus one; 0: none yet.
    last: AtomicU64,
}

impl Losses {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Losses { origin: Instant::now(), last: AtomicU64::new(0) })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Remembers a failed query when it failed for want of its connection.
    fn note(&self, e: &DieselError) {
        if connection_lost(e) {
            self.last.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Whether connections should be tested before use.
    pub(super) fn recent(&self) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        last != 0 && self.now().saturating_sub(last) < TESTING_AFTER_A_LOSS.as_millis() as u64
    }

    /// What a connection reports its queries to: a failure for want of the connection is
    /// remembered.
    pub(super) fn watcher(self: &Arc<Self>) -> impl Instrumentation {
        let losses = Arc::clone(self);
        move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::FinishQuery { error: Some(e), .. } = event {
                losses.note(e);
            }
        }
    }
}

/// Whether a query failed because its connection is gone (rather than for what it asked).
pub(super) fn connection_lost(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => true,
        // diesel gives no SQLSTATE for these: the messages are PostgreSQL's own (in English, its
        // default `lc_messages`).
        DieselError::DatabaseError(_, info) => {
            let m = info.message();
            ["terminating connection", "server closed the connection", "connection to server", "no connection to the server"]
                .iter()
                .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> DieselError {
        DieselError::DatabaseError(Kind::ClosedConnection, Box::new("server closed the connection unexpectedly".to_string()))
    }

    #[test]
    fn a_lost_connection_starts_the_testing_and_other_failures_do_not() {
        let losses = Losses::new();
        assert!(!losses.recent(), "nothing lost yet");
        losses.note(&DieselError::DatabaseError(Kind::UniqueViolation, Box::new("duplicate key".to_string())));
        losses.note(&DieselError::NotFound);
        assert!(!losses.recent(), "a refused statement is no loss");
        losses.note(&closed());
        assert!(losses.recent());
    }

    #[test]
    fn the_testing_ends_a_while_after_the_last_loss() {
        // A loss seen at the origin, TESTING_AFTER_A_LOSS ago.
        let long_ago = Losses { origin: Instant::now() - TESTING_AFTER_A_LOSS, last: AtomicU64::new(1) };
        assert!(!long_ago.recent());
        let lately = Losses { origin: Instant::now() - TESTING_AFTER_A_LOSS / 2, last: AtomicU64::new(1) };
        assert!(lately.recent());
    }
}
