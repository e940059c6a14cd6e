//! SQLite's writer: every write transaction of a process runs on one connection of its own, and
//! the transactions that arrive while another runs are committed with it (group commit).
//!
//! SQLite has one writer at a time whatever we do; what a write costs besides its own rows is
//! the transaction around it: taking the write lock, reading again the index pages another
//! connection changed (each connection's page cache is dropped when another wrote), writing the
//! changed pages to the WAL at commit. On one connection that only ever writes, its cache stays
//! valid from one transaction to the next; and when requests queue for the writer, the first
//! leaves its transaction open for the next instead of committing, so that one commit writes
//! the pages all of them changed. Each caller still gets its answer only once its write has
//! committed: a caller whose transaction another commits waits for that commit, and hears of
//! its failure if it fails.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager, TransactionManagerStatus};
use diesel::r2d2::ManageConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;

use super::{sqlite, DbConn, Manager, Tx};

/// The most transactions one commit takes: a long queue is committed in several, so that the
/// first of them does not wait for the last.
const MOST_PER_COMMIT: usize = 16;

/// How many recent commits that failed are remembered for the callers waiting on them.
const FAILURES_KEPT: usize = 64;

/// The writer of one SQLite database.
pub(crate) struct Writer {
    manager: Manager,
    state: Mutex<State>,
    committed: Condvar,
    /// Callers waiting for `state`: while there are some, a transaction is left open for them.
    queued: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Opened at the first write, and again after a failure that may have left it unusable.
    conn: Option<DbConn>,
    open: Option<Batch>,
    /// The number of the last batch that ended (committed or failed).
    ended: u64,
    /// Batches that failed as a whole, with why.
    failures: VecDeque<(u64, String)>,
}

/// The transaction in progress and how many callers' writes it holds.
struct Batch {
    number: u64,
    writes: usize,
}

impl Writer {
    pub(crate) fn new(manager: Manager) -> Self {
        Writer { manager, state: Mutex::default(), committed: Condvar::new(), queued: AtomicUsize::new(0) }
    }

    /// Runs `f` in a write transaction, alone or with the writes of other callers, and returns
    /// once it has committed.
    pub(crate) fn run<T, E>(&self, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DieselError>,
    {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if state.open.is_none() {
            let number = state.ended + 1;
            let conn = state.connection(&self.manager)?;
            AnsiTransactionManager::begin_transaction_sql(sqlite(conn), "BEGIN IMMEDIATE")?;
            state.open = Some(Batch { number, writes: 0 });
        }
        let (number, first) = state.open.as_ref().map(|b| (b.number, b.writes == 0)).expect("a batch is open");
        let conn = state.conn.as_mut().expect("connected");
        // A write that joins a batch runs in a savepoint: if it fails, its own changes alone are
        // undone. The first needs none: if it fails, nothing else is in the transaction.
        let outcome = if first {
            f(&mut Tx(conn))
        } else {
            conn.transaction(|c| f(&mut Tx(c)))
        };
        match outcome {
            Ok(value) => {
                state.open.as_mut().expect("a batch is open").writes += 1;
                self.end_or_pass_on(state, number).map(|()| value).map_err(E::from)
            }
            Err(e) if first => {
                // Nothing of anybody else's is in the transaction.
                state.open = None;
                state.ended = number;
                let conn = state.conn.as_mut().expect("connected");
                if AnsiTransactionManager::rollback_transaction(sqlite(conn)).is_err() {
                    // SQLite had rolled it back already (an interrupted statement): start afresh.
                    state.conn = None;
                }
                Err(e)
            }
            Err(e) => {
                if !still_in_transaction(state.conn.as_mut().expect("connected")) {
                    // The whole transaction is gone (SQLite rolls it back on an interrupted
                    // statement): the writes before this one are lost, and their callers hear so.
                    self.fail(&mut state, number, "the transaction was rolled back by SQLite".into());
                    return Err(e);
                }
                // The others' writes stand; they still need a commit.
                let _ = self.end_or_pass_on(state, number);
                Err(e)
            }
        }
    }

    /// After a write: commits the batch, or, while other callers queue and there is room, leaves
    /// it open for them and waits until one of them has committed it.
    fn end_or_pass_on(&self, mut state: MutexGuard<'_, State>, number: u64) -> Result<(), DieselError> {
        let writes = state.open.as_ref().map_or(0, |b| b.writes);
        if self.queued.load(Ordering::SeqCst) > 0 && writes < MOST_PER_COMMIT {
            let state = self.committed.wait_while(state, |s| s.ended < number).unwrap_or_else(PoisonError::into_inner);
            return match state.failures.iter().find(|(n, _)| *n == number) {
                Some((_, why)) => Err(failed(why)),
                None => Ok(()),
            };
        }
        state.open = None;
        let conn = state.conn.as_mut().expect("connected");
        match AnsiTransactionManager::commit_transaction(sqlite(conn)) {
            Ok(()) => {
                state.ended = number;
                self.committed.notify_all();
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                let conn = state.conn.as_mut().expect("connected");
                if AnsiTransactionManager::rollback_transaction(sqlite(conn)).is_err() {
                    state.conn = None;
                }
                self.fail(&mut state, number, why);
                Err(e)
            }
        }
    }

    /// Ends batch `number` as failed and wakes the callers waiting on it.
    fn fail(&self, state: &mut State, number: u64, why: String) {
        state.open = None;
        state.ended = number;
        state.conn = None;
        if state.failures.len() == FAILURES_KEPT {
            state.failures.pop_front();
        }
        state.failures.push_back((number, why));
        self.committed.notify_all();
    }
}

impl State {
    fn connection(&mut self, manager: &Manager) -> Result<&mut DbConn, DieselError> {
        if self.conn.is_none() {
            let mut conn =
                manager.connect().map_err(|e| failed(&format!("cannot open the database for writing: {e}")))?;
            // Its own cache, kept from one transaction to the next, instead of the memory map the
            // readers share: what a writer reads it reads into its cache anyway, and a map would
            // have to be set up again each time the file grows.
            conn.batch_execute("PRAGMA cache_size = -32768; PRAGMA mmap_size = 0;")?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

/// Whether the connection is still inside the transaction a batch began.
fn still_in_transaction(conn: &mut DbConn) -> bool {
    match AnsiTransactionManager::transaction_manager_status_mut(sqlite(conn)) {
        TransactionManagerStatus::Valid(status) => status.transaction_depth().is_some(),
        TransactionManagerStatus::InError => false,
    }
}

/// The error of a write whose batch failed as a whole (its message kept, so that a busy
/// database still reads as busy).
fn failed(why: &str) -> DieselError {
    DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(why.to_string()))
}
