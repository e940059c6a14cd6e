//! The schema: the migrations this binary carries, which of them a database has, and the
//! refusal to run on a database that a newer provisiond migrated (an older binary would read and
//! write tables whose meaning it does not know).

use diesel::connection::{LoadConnection, SimpleConnection};
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::query_builder::SqlQuery;
use diesel::query_dsl::methods::LoadQuery;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{reindex, sqlite_limits, write_tx, DbConn, Error, Pool, Result};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// PostgreSQL advisory lock key of migrations (arbitrary, application-wide).
const MIGRATION_LOCK: i64 = 7_470_652_302;

/// Who migrated the database last (in `deployment`), so that an older binary can name it.
pub(crate) const MIGRATED_BY: &str = "schema_migrated_by";

/// This binary, as `MIGRATED_BY` records it.
const THIS: &str = concat!("provisiond ", env!("CARGO_PKG_VERSION"), " (commit ", env!("SOURCE_COMMIT"), ")");

/// One migration: its version (as diesel records it) and its directory's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: String,
    pub name: String,
}

/// Where a database stands against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub applied: Vec<Migration>,
    pub pending: Vec<Migration>,
    /// Versions the database has that this binary does not know: a newer provisiond's.
    pub unknown: Vec<String>,
    /// The provisiond that last applied migrations, when one recorded itself.
    pub migrated_by: Option<String>,
}

impl Status {
    /// A SQLite database that does not exist yet: every migration pending.
    pub fn new_sqlite_database() -> Self {
        Status::of(Vec::new(), None, true)
    }

    /// A database of a backend that recorded `versions` (as diesel writes them) and was last
    /// migrated by `migrated_by`.
    pub(crate) fn of(versions: Vec<String>, migrated_by: Option<String>, sqlite: bool) -> Self {
        let known = known(sqlite);
        let unknown = versions.iter().filter(|v| !known.iter().any(|m| &m.version == *v)).cloned().collect();
        let (applied, pending) = known.into_iter().partition(|m| versions.contains(&m.version));
        Status { applied, pending, unknown, migrated_by }
    }

    /// The one-line refusal when a newer provisiond migrated the database.
    pub fn newer_schema(&self) -> Option<String> {
        let newest = self.unknown.last()?;
        let by = self.migrated_by.as_deref().unwrap_or("a newer provisiond");
        let mine = self.applied.last().map_or("none", |m| m.name.as_str());
        Some(format!(
            "the database was migrated by {by} to schema {newest}, newer than this {THIS} knows (up to {mine}): run \
             that version or a newer one, or restore a backup taken before the upgrade"
        ))
    }
}

fn known(sqlite: bool) -> Vec<Migration> {
    type Listed<DB> = diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>>;
    fn list<DB: diesel::backend::Backend>(migrations: Listed<DB>) -> Vec<Migration> {
        let mut out: Vec<Migration> = migrations
            .expect("embedded migrations list")
            .iter()
            .map(|m| Migration { version: m.name().version().to_string(), name: m.name().to_string() })
            .collect();
        out.sort_by(|a, b| a.version.cmp(&b.version));
        out
    }
    match sqlite {
        true => list(MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)),
        false => list(MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS)),
    }
}

#[derive(QueryableByName)]
pub(crate) struct Named {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The first column (text) of each row `sql` gives.
pub(crate) fn strings<C: LoadConnection>(conn: &mut C, sql: &str) -> QueryResult<Vec<String>>
where
    SqlQuery: for<'a> LoadQuery<'a, C, Named>,
{
    Ok(diesel::sql_query(sql).load::<Named>(conn)?.into_iter().map(|n| n.value).collect())
}

/// The versions recorded in the database, oldest first (none for a new database), and who
/// migrated it last; reads only.
fn recorded<C: LoadConnection>(conn: &mut C, sqlite: bool) -> QueryResult<(Vec<String>, Option<String>)>
where
    SqlQuery: for<'a> LoadQuery<'a, C, Named>,
{
    let tables = match sqlite {
        true => {
            "SELECT name AS value FROM sqlite_master WHERE type = 'table' \
                 AND name IN ('__diesel_schema_migrations', 'deployment')"
        }
        false => {
            "SELECT tablename::text AS value FROM pg_tables WHERE schemaname = current_schema() \
                  AND tablename IN ('__diesel_schema_migrations', 'deployment')"
        }
    };
    let tables = strings(conn, tables)?;
    let versions = match tables.iter().any(|t| t == "__diesel_schema_migrations") {
        true => strings(conn, "SELECT version AS value FROM __diesel_schema_migrations ORDER BY version")?,
        false => Vec::new(),
    };
    let by = match tables.iter().any(|t| t == "deployment") {
        // A fixed name, not a value from outside: nothing to bind.
        true => strings(conn, &format!("SELECT value FROM deployment WHERE name = '{MIGRATED_BY}'"))?.pop(),
        false => None,
    };
    Ok((versions, by))
}

fn status_of<C: LoadConnection>(conn: &mut C, sqlite: bool) -> QueryResult<Status>
where
    SqlQuery: for<'a> LoadQuery<'a, C, Named>,
{
    let (versions, migrated_by) = recorded(conn, sqlite)?;
    Ok(Status::of(versions, migrated_by, sqlite))
}

/// Where the database stands; changes nothing (`provisiond migrate --status`).
pub fn status(pool: &Pool) -> Result<Status> {
    let mut conn = pool.get()?;
    Ok(match &mut *conn {
        DbConn::Sqlite(c) => status_of(c, true)?,
        DbConn::Pg(c) => status_of(c, false)?,
    })
}

/// Where the SQLite database in `file` stands (a backup being restored), read only.
pub(crate) fn status_of_sqlite(conn: &mut diesel::SqliteConnection) -> Result<Status> {
    Ok(status_of(conn, true)?)
}

/// Applies pending migrations of the connection's backend; returns how many ran. Refuses a
/// database a newer provisiond migrated, and records this binary as the one that migrated it.
///
/// All of them run in one transaction that first takes the database's write lock (SQLite's
/// `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so that instances starting together take
/// turns: the first migrates, the others then find nothing left to do, instead of racing to
/// create the same tables. (Both backends have transactional DDL.) Migrations may take longer
/// than a request's statements are allowed to.
pub(crate) fn migrate(pool: &Pool, at: chrono::NaiveDateTime) -> Result<usize> {
    type Failure = Box<dyn std::error::Error + Send + Sync>;
    fn refuse_newer(status: Status) -> Result<(), Failure> {
        match status.newer_schema() {
            Some(why) => Err(Error::NewerSchema(why).into()),
            None => Ok(()),
        }
    }
    let mut conn = pool.get()?;
    let applied = match &mut *conn {
        DbConn::Sqlite(c) => sqlite_limits::unlimited(|| {
            // WAL lets readers run beside the writer; it is a property of the database file.
            c.batch_execute("PRAGMA journal_mode = WAL;")?;
            c.immediate_transaction(|c| {
                refuse_newer(status_of(c, true)?)?;
                let applied = c.run_pending_migrations(SQLITE_MIGRATIONS)?.len();
                if applied > 0 {
                    diesel::sql_query("INSERT OR REPLACE INTO deployment (name, value) VALUES (?, ?)")
                        .bind::<Text, _>(MIGRATED_BY)
                        .bind::<Text, _>(THIS)
                        .execute(c)?;
                }
                Ok(applied)
            })
        }),
        DbConn::Pg(c) => c.transaction(|c| {
            c.batch_execute(&format!("SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
            refuse_newer(status_of(c, false)?)?;
            let applied = c.run_pending_migrations(POSTGRES_MIGRATIONS)?.len();
            if applied > 0 {
                diesel::sql_query(
                    "INSERT INTO deployment (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
                )
                .bind::<Text, _>(MIGRATED_BY)
                .bind::<Text, _>(THIS)
                .execute(c)?;
            }
            Ok(applied)
        }),
    };
    let applied = applied.map_err(|e: Failure| match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => Error::Migration(e.to_string()),
    })?;
    // Then the data derived from the users, rebuilt when its rules changed; instances starting
    // together take turns here too.
    let (rebuilt, collisions) = sqlite_limits::unlimited(|| {
        write_tx(&mut conn, |c| {
            if let DbConn::Pg(pg) = c.conn() {
                pg.batch_execute(&format!("SET LOCAL statement_timeout = 0; SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))?;
            }
            reindex::run(c, at)
        })
    })?;
    if rebuilt > 0 {
        tracing::info!(users = rebuilt, collisions, "search data rebuilt under the current rules");
    }
    Ok(applied)
}
