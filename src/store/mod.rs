//! Persistence with diesel: one code path for SQLite (embedded default) and PostgreSQL.

pub mod audit;
pub mod backup;
mod connection_loss;
pub mod deployment;
pub mod directory;
pub mod enrolment_links;
pub mod events;
pub mod group_filter;
pub mod group_links;
pub mod groups;
pub mod mfa;
pub mod migrations;
pub mod operators;
pub mod reindex;
pub mod schema;
pub mod sessions;
pub mod sql;
mod sqlite_limits;
pub mod stats;
pub mod streams;
mod text_enum;
pub mod tokens;
pub mod user_body;
pub mod user_count;
pub mod user_filter;
pub mod user_pages;
pub mod user_search;
pub mod user_sort;
mod user_values;
pub mod users;
pub mod webauthn;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};

use crate::config::DatabaseUrl;
pub(crate) use migrations::migrate;

/// A connection to either backend; queries are written once against it.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// The connections of a database and, for SQLite, its one writer (see [`writer`]).
#[derive(Clone)]
pub struct Pool {
    conns: r2d2::Pool<Manager>,
    writer: Option<Arc<writer::Writer>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("conns", &self.conns).field("writer", &self.writer.is_some()).finish()
    }
}

impl Pool {
    /// A connection, waiting for one for at most the pool's connection timeout.
    pub fn get(&self) -> Result<PooledConn, r2d2::PoolError> {
        Ok(PooledConn { conn: self.conns.get()?, writer: self.writer.clone() })
    }

    /// A connection, waiting for one for at most `wait`.
    pub fn get_timeout(&self, wait: Duration) -> Result<PooledConn, r2d2::PoolError> {
        Ok(PooledConn { conn: self.conns.get_timeout(wait)?, writer: self.writer.clone() })
    }

    pub fn state(&self) -> r2d2::State {
        self.conns.state()
    }
}

/// A connection of the pool. It reads like a connection; [`write_tx`] writes through it.
pub struct PooledConn {
    conn: r2d2::PooledConnection<Manager>,
    writer: Option<Arc<writer::Writer>>,
}

impl std::ops::Deref for PooledConn {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut DbConn {
        &mut self.conn
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A backup or restore that cannot be done (the sentence says why).
    #[error("{0}")]
    Backup(String),
    /// A newer provisiond migrated the database (the sentence says which, and what to do).
    #[error("{0}")]
    NewerSchema(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The row to change is gone (deleted by another writer meanwhile).
    #[error("{0}")]
    Gone(String),
}

impl Error {
    /// Whether the database could not serve the request now (down, restarting, its pool
    /// exhausted, locked by another writer past the busy timeout, a statement past its time
    /// limit) rather than refused it: the doors answer 503 with `Retry-After`, never 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Query(e) => query_unavailable(e),
            _ => false,
        }
    }
}

/// Whether a statement gave up waiting for a lock another session holds.
pub(crate) fn is_lock_timeout(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info)
        if info.message().contains("lock timeout") || info.message().contains("could not obtain lock"))
}

/// The failures of a query that say "not now" rather than "never".
fn query_unavailable(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error as E};
    if connection_loss::connection_lost(e) {
        return true;
    }
    match e {
        E::DatabaseError(Kind::SerializationFailure, _) => true,
        // diesel gives no SQLSTATE for these: the messages are SQLite's and PostgreSQL's own
        // (PostgreSQL's in English, its default `lc_messages`).
        E::DatabaseError(_, info) => {
            let m = info.message();
            [
                "database is locked",
                "database is busy",
                "interrupted",
                "canceling statement due to statement timeout",
                "canceling statement due to lock timeout",
                "could not obtain lock",
                "the database system is",
            ]
            .iter()
            .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// r2d2 manager that picks the backend from the URL scheme and prepares each connection.
#[derive(Clone)]
pub struct Manager {
    target: DatabaseUrl,
    statement_timeout: Duration,
    /// PostgreSQL: when a connection was last lost (see [`connection_loss`]).
    losses: Arc<connection_loss::Losses>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("url", &self.target).finish()
    }
}

/// How much of a SQLite file reads map into memory (SQLite's `mmap_size`).
const MMAP_BYTES: u64 = 256 << 20;

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        match &self.target {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
                // The busy timeout makes writers of other processes queue instead of failing
                // (every write transaction begins IMMEDIATE, so it applies), for as long as a
                // statement may run; LIKE is made case-sensitive to match PostgreSQL (values
                // that compare ignoring case are stored in a folded form). WAL is set once by
                // `migrate` (it is kept in the file): switching it here would need a lock another
                // process's writer may hold. Reads go through a memory map: pages come from the
                // operating system's cache, shared by every connection, instead of being copied
                // into each connection's small page cache (a search of 100,000 users spent most
                // of its time in those copies).
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA case_sensitive_like = ON; \
                     PRAGMA mmap_size = {MMAP_BYTES};",
                    self.statement_timeout.as_millis()
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = diesel::PgConnection::establish(url).map_err(r2d2::Error::ConnectionError)?;
                conn.set_instrumentation(self.losses.watcher());
                // Nothing waits without end: a statement (a lock wait included) fails after the
                // limit; a session that sits inside a transaction without a word (a frozen or
                // partitioned instance holding the sync lease) is ended by the server, which
                // releases its locks.
                let limit = self.statement_timeout.as_millis();
                let idle = idle_in_transaction_limit(self.statement_timeout).as_millis();
                conn.batch_execute(&format!(
                    "SET statement_timeout = {limit}; SET idle_in_transaction_session_timeout = {idle};"
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConn::Pg(conn))
            }
        }
    }

    /// Asked of each PostgreSQL connection the pool hands out; a round trip only shortly after
    /// a connection was lost (see [`connection_loss`]).
    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        match self.losses.recent() {
            true => conn.batch_execute("SELECT 1").map_err(r2d2::Error::QueryError),
            false => Ok(()),
        }
    }

    /// A connection given back by a panicking thread may be inside a transaction: dropped.
    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking() || r2d2::R2D2Connection::is_broken(conn)
    }
}

/// How long PostgreSQL lets a session sit idle inside a transaction: our transactions never
/// wait on anything but the database, so this is long for them and short for a frozen holder.
pub(crate) fn idle_in_transaction_limit(statement_timeout: Duration) -> Duration {
    (statement_timeout * 3).max(Duration::from_secs(30))
}

/// Time limits of the connections of a pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Waiting for a pooled connection, and for PostgreSQL to answer a connect.
    pub connect_timeout: Duration,
    /// Any one statement (0: none).
    pub statement_timeout: Duration,
}

/// Opens the pool (creating the SQLite file, private to its owner, and its directory when
/// missing).
pub(crate) fn connect(target: DatabaseUrl, pool_size: u32, limits: Limits) -> Result<Pool> {
    if let DatabaseUrl::Sqlite(path) = &target {
        create_private(std::path::Path::new(path))?;
        sqlite_limits::set_limit(limits.statement_timeout);
    }
    let manager = Manager { target, statement_timeout: limits.statement_timeout, losses: connection_loss::Losses::new() };
    let writer = matches!(manager.target, DatabaseUrl::Sqlite(_)).then(|| Arc::new(writer::Writer::new(manager.clone())));
    let conns = r2d2::Pool::builder()
        .max_size(pool_size)
        // A PostgreSQL connection whose server restarted or failed over fails every query,
        // and diesel does not notice it is dead: after such a failure, each checkout asks
        // first, so that an instance recovers as soon as the database does. A SQLite file
        // cannot go away under an open connection.
        .test_on_check_out(manager.target.is_postgres())
        .connection_timeout(limits.connect_timeout)
        .build(manager)?;
    Ok(Pool { conns, writer })
}

/// Creates the SQLite database file (mode 0600) and its directory (0700) when missing, whatever
/// the umask: it holds sealed secrets and hashes that nobody else needs to read. SQLite gives
/// its `-wal` and `-shm` files the mode of the database file.
fn create_private(path: &std::path::Path) -> Result<(), Error> {
    if path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    match private_file(path) {
        // Another process created it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(|e| Error::Migration(e.to_string())),
    }
}

/// Creates `path` empty, mode 0600, and its missing directories 0700, whatever the umask (the
/// database, a backup, a restored database). Fails with `AlreadyExists` when `path` exists:
/// nothing is overwritten.
pub(crate) fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let context = |what: &str, at: &std::path::Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", at.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| context("create", dir, e))?;
        // `mode` is filtered by the umask, which may take the owner's bits too.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| context("set the mode of", dir, e))?;
    }
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    let file = file.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => e,
        _ => context("create", path, e),
    })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| context("set the mode of", path, e))
}

/// The databases this binary can use, for `provisiond --version`.
pub fn backends() -> String {
    let sqlite = libsqlite3_sys::SQLITE_VERSION.to_str().unwrap_or("unknown");
    format!("sqlite (SQLite {sqlite}, built in), postgresql (libpq)")
}

/// A write transaction in progress. Domain services open it ([`write_tx`]) and pass it down:
/// store functions that write take `&mut Tx`, so they cannot run outside one and begin none
/// themselves, and everything one decision writes commits together. It reads like a connection.
pub struct Tx<'c>(&'c mut DbConn);

impl std::ops::Deref for Tx<'_> {
    type Target = DbConn;
    fn deref(&self) -> &DbConn {
        self.0
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut DbConn {
        self.0
    }
}

impl Tx<'_> {
    /// The connection, for diesel's query methods.
    pub(crate) fn conn(&mut self) -> &mut DbConn {
        self.0
    }

    /// Runs `f` in a savepoint: when it fails, its writes alone are undone and the transaction
    /// goes on (on PostgreSQL a failed statement would otherwise spoil the whole transaction).
    pub(crate) fn savepoint<T, E>(&mut self, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        self.0.transaction(|c| f(&mut Tx(c)))
    }
}

/// Runs `f` in a transaction that writes; the only place a transaction begins. It returns once
/// the transaction has committed (or failed).
///
/// PostgreSQL: a transaction on `conn`. SQLite has one writer at a time: the transaction runs on
/// the database's writer connection ([`writer`]), which takes the write lock at once (`BEGIN
/// IMMEDIATE`, waiting for writers of other processes, such as the command line, under the busy
/// timeout) and may commit it together with the writes of other requests that queued meanwhile.
/// Not to be nested: inside a transaction, use [`Tx::savepoint`].
pub fn write_tx<T, E>(conn: &mut PooledConn, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    let Some(writer) = conn.writer.clone() else { return conn.conn.transaction(|c| f(&mut Tx(c))) };
    let written = writer.run(f);
    if writer.checkpoint_due() {
        // PASSIVE: copies what no reader still needs, never waits for a lock, and runs beside
        // the writer; a failure leaves the pages in the WAL for the next one.
        if let Err(e) = conn.conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %e, "SQLite checkpoint failed; the next one will copy its pages");
        }
    }
    written
}

fn sqlite(conn: &mut DbConn) -> &mut diesel::SqliteConnection {
    match conn {
        DbConn::Sqlite(c) => c,
        DbConn::Pg(_) => unreachable!("a SQLite connection was checked"),
    }
}

/// Runs the reads of `f` on one snapshot of the database, outside any write transaction: on
/// SQLite, a read transaction; on PostgreSQL, a `REPEATABLE READ, READ ONLY` one (each statement
/// would otherwise read a snapshot of its own).
pub(crate) fn snapshot<T>(conn: &mut DbConn, f: impl FnOnce(&mut DbConn) -> Result<T>) -> Result<T> {
    conn.transaction(|conn| {
        if let DbConn::Pg(pg) = conn {
            // The first statement of the transaction, before it takes its snapshot.
            diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(pg)?;
        }
        f(conn)
    })
}

/// Runs `insert` in a savepoint; false when a unique key already holds the row. (The savepoint
/// keeps the caller's transaction usable: on PostgreSQL a failed statement spoils the whole
/// transaction.)
pub(crate) fn insert_unless_taken(
    conn: &mut DbConn,
    insert: impl FnOnce(&mut DbConn) -> diesel::QueryResult<usize>,
) -> Result<bool, diesel::result::Error> {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match conn.transaction(insert) {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Readies one SQLite connection for a bulk write (the LDAP sync's writer: `on`), and back
/// once the bulk is written (`!on`; the connection keeps reading as a bulk writer until
/// [`bulk_done`]). PostgreSQL caches on the server.
/// - A large page cache: a batch of thousands of users touches index pages all over the file,
///   and with the default 2 MB cache they are spilled and read back within every transaction.
/// - No memory map: what the writer reads it reads into that cache anyway, and every page of the
///   file it touched through the map would count in the process's resident memory (file-backed
///   and shared, but a sync of 100,000 users showed 340 MB instead of about 100 MB).
///
/// Durability stays the pool's (`synchronous = NORMAL` in WAL mode: a committed batch survives
/// the process). Fewer checkpoints (`wal_autocheckpoint = 10000`) made the initial sync of
/// 100,000 users no faster: the WAL file then grows instead of being written over.
pub(crate) fn bulk_cache(conn: &mut DbConn, on: bool) -> Result<()> {
    if let DbConn::Sqlite(c) = conn {
        c.batch_execute(if on { "PRAGMA cache_size = -32768; PRAGMA mmap_size = 0;" } else { "PRAGMA cache_size = -2000;" })?;
    }
    Ok(())
}

/// A bulk writer's connection back to the pool's settings (see [`bulk_cache`]).
pub(crate) fn bulk_done(conn: &mut DbConn) -> Result<()> {
    if let DbConn::Sqlite(c) = conn {
        c.batch_execute(&format!("PRAGMA cache_size = -2000; PRAGMA mmap_size = {MMAP_BYTES};"))?;
    }
    Ok(())
}

/// Whether the database answers (for `/readyz`), waiting at most `wait` for a connection.
pub(crate) fn ping(pool: &Pool, wait: Duration) -> Result<()> {
    let mut conn = pool.get_timeout(wait)?;
    conn.batch_execute("SELECT 1")?;
    Ok(())
}

/// A migrated, empty SQLite database in a temporary directory, for unit tests.
#[cfg(test)]
pub(crate) fn test_database() -> (tempfile::TempDir, Pool) {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { connect_timeout: Duration::from_secs(5), statement_timeout: Duration::from_secs(10) };
    let pool = connect(DatabaseUrl::Sqlite(dir.path().join("db").display().to_string()), 8, limits).unwrap();
    migrate(&pool, chrono::NaiveDateTime::default()).unwrap();
    (dir, pool)
}
