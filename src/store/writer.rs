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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Commits between two checkpoints (copying the WAL's pages into the database file), which a
/// caller runs after its commit on its own connection, outside the writer's turn: run inside it
/// (SQLite's automatic checkpoint, in the commit), a checkpoint and its fsyncs held up every
/// writer queued behind. A few dozen commits of a request or two each are SQLite's default
/// spacing of a thousand pages.
const COMMITS_PER_CHECKPOINT: u64 = 32;

/// The WAL size (pages) at which the writer checkpoints in the commit after all, should the
/// callers' checkpoints fall behind (a sync's large batches).
const AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The writer of one SQLite database.
pub(crate) struct Writer {
    manager: Manager,
    state: Mutex<State>,
    committed: Condvar,
    /// Callers waiting for `state`: while there are some, a transaction is left open for them.
    queued: AtomicUsize,
    /// Commits since the last checkpoint was handed to a caller.
    uncheckpointed: AtomicU64,
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
        Writer {
            manager,
            state: Mutex::default(),
            committed: Condvar::new(),
            queued: AtomicUsize::new(0),
            uncheckpointed: AtomicU64::new(0),
        }
    }

    /// Whether the caller that just wrote should checkpoint (see [`COMMITS_PER_CHECKPOINT`]); one
    /// caller is told so per so many commits.
    pub(crate) fn checkpoint_due(&self) -> bool {
        self.uncheckpointed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n >= COMMITS_PER_CHECKPOINT).then_some(0))
            .is_ok()
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
        let outcome = if first { f(&mut Tx(conn)) } else { conn.transaction(|c| f(&mut Tx(c))) };
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
                self.uncheckpointed.fetch_add(1, Ordering::SeqCst);
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
            let mut conn = manager.connect().map_err(|e| failed(&format!("cannot open the database for writing: {e}")))?;
            // Reads through its page cache, not the memory map the readers share: the map would
            // be set up again each time the file grows, which costs more than the reads. The
            // cache keeps its default size: a commit walks the whole cache, and with a larger one
            // (32 MB) a one-row transaction took three times as long.
            // Each write that joins a batch runs in a savepoint, for which SQLite copies every
            // page it changes to a statement journal; past 64 KB (a POST's pages) that journal
            // went to a temporary file, and its writes were 8 % of the daemon's CPU under POST
            // load. In memory it costs a copy of each page.
            conn.batch_execute(&format!(
                "PRAGMA mmap_size = 0; PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}; PRAGMA temp_store = MEMORY;"
            ))?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use crate::store::{test_database, write_tx, Pool};

    fn insert(tx: &mut crate::store::Tx, n: i64) -> QueryResult<usize> {
        diesel::sql_query("INSERT INTO t (n) VALUES (?)").bind::<BigInt, _>(n).execute(tx.conn())
    }

    fn stored(pool: &Pool) -> Vec<i64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT n FROM t ORDER BY n").load(&mut *pool.get().unwrap()).unwrap();
        rows.into_iter().map(|r| r.n).collect()
    }

    fn with_table() -> (tempfile::TempDir, Pool) {
        let (dir, pool) = test_database();
        pool.get().unwrap().batch_execute("CREATE TABLE t (n INTEGER PRIMARY KEY)").unwrap();
        (dir, pool)
    }

    /// Writes that arrive while another runs: the first holds the writer until three more
    /// queue, so they share its transaction; the one that fails loses its own row only.
    fn batch_of_four(
        pool: &Pool,
        failing: impl Fn(&mut crate::store::Tx) -> QueryResult<usize> + Send + Sync + 'static,
    ) -> (Vec<bool>, Vec<i64>) {
        let writer = pool.writer.clone().expect("SQLite has a writer");
        let failing = Arc::new(failing);
        let started = Arc::new(Barrier::new(2));
        let first = {
            let (pool, writer, started) = (pool.clone(), writer.clone(), started.clone());
            std::thread::spawn(move || {
                write_tx(&mut pool.get().unwrap(), |tx| {
                    started.wait();
                    // Hold the writer until the others queue behind it.
                    while writer.queued.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    insert(tx, 1)
                })
                .is_ok()
            })
        };
        started.wait();
        let others: Vec<_> = (2..=4)
            .map(|n| {
                let (pool, failing) = (pool.clone(), failing.clone());
                std::thread::spawn(move || {
                    write_tx(&mut pool.get().unwrap(), |tx| if n == 3 { failing(tx) } else { insert(tx, n) }).is_ok()
                })
            })
            .collect();
        let mut answers = vec![first.join().unwrap()];
        answers.extend(others.into_iter().map(|t| t.join().unwrap()));
        (answers, stored(pool))
    }

    #[test]
    fn writes_committed_together_are_all_stored_but_the_one_that_failed() {
        let (_dir, pool) = with_table();
        let (answers, rows) = batch_of_four(&pool, |tx| {
            insert(tx, 30)?;
            insert(tx, 1) // taken: fails
        });
        assert_eq!(answers, [true, true, false, true]);
        assert_eq!(rows, [1, 2, 4], "the failing write's first row is undone with it");
    }

    #[test]
    fn when_sqlite_drops_a_shared_transaction_no_write_in_it_is_reported_stored() {
        // A statement SQLite interrupts rolls the whole transaction back (here: by hand).
        let (_dir, pool) = with_table();
        let (answers, rows) = batch_of_four(&pool, |tx| {
            tx.conn().batch_execute("ROLLBACK")?;
            Err(diesel::result::Error::RollbackTransaction)
        });
        for (answer, row) in answers.iter().zip(1..) {
            assert_eq!(*answer, rows.contains(&row), "write {row} answered {answer} but rows are {rows:?}");
        }
        assert!(!answers[2], "the failing write is not reported stored");
        // The writes queued behind may have shared its fate; the next one is stored.
        write_tx(&mut pool.get().unwrap(), |tx| insert(tx, 99)).unwrap();
        assert!(stored(&pool).contains(&99));
    }

    #[test]
    fn many_concurrent_writers_each_get_their_row_stored() {
        let (_dir, pool) = with_table();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        write_tx(&mut pool.get().unwrap(), |tx| insert(tx, t * 1000 + i)).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(stored(&pool).len(), 400);
    }
}
