//! Backups of the database and their restoration.
//!
//! SQLite: `VACUUM INTO` copies the database as of one read transaction (writers carry on
//! meanwhile; every write committed before it began is in the copy), into a new file private to
//! its owner; the copy is then checked (`integrity_check`) before it is reported done. A restore
//! checks the backup the same way, and its schema against this binary's, and copies it into place
//! only where no database is: it never overwrites one. PostgreSQL: `pg_dump` and `pg_restore`,
//! found on the PATH or among Debian's server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::migrations::{self, Status};
use super::{sqlite_limits, DbConn, Error, Pool, Result};

/// What a backup or a restored database holds.
#[derive(Debug)]
pub struct Copy {
    pub users: i64,
    /// The newest migration the copy has.
    pub schema: String,
    /// Migrations this binary will apply at its next start (an older backup).
    pub pending: usize,
}

fn failed(what: impl std::fmt::Display) -> Error {
    Error::Backup(what.to_string())
}

/// Creates `file` empty and private to its owner (it holds sealed secrets and hashes); fails when
/// it exists.
fn create_private(file: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file).map(drop).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => failed(format!("{} exists already: name a new file", file.display())),
        _ => failed(format!("cannot create {}: {e}", file.display())),
    })
}

/// `VACUUM INTO` on `conn` (a read transaction of its own), into `file`, created first.
fn vacuum_into(conn: &mut diesel::SqliteConnection, file: &Path) -> Result<()> {
    let name = file.to_str().ok_or_else(|| failed(format!("{} is not a UTF-8 path", file.display())))?;
    create_private(file)?;
    let copied = sqlite_limits::unlimited(|| diesel::sql_query("VACUUM INTO ?").bind::<Text, _>(name).execute(conn));
    copied.map(drop).map_err(|e| {
        let _ = std::fs::remove_file(file);
        failed(format!("cannot copy the database into {}: {e}", file.display()))
    })
}

/// Opens the SQLite file `file` read-only and checks it: a sound file (`integrity_check`), a
/// provisiond database no newer than this binary.
fn checked(file: &Path, restoring: bool) -> Result<Copy> {
    let uri = format!("file:{}?mode=ro", file.display());
    let mut conn =
        diesel::SqliteConnection::establish(&uri).map_err(|e| failed(format!("cannot open {}: {e}", file.display())))?;
    let not_a_database = |e: diesel::result::Error| failed(format!("{} is not a readable SQLite database: {e}", file.display()));
    let report = sqlite_limits::unlimited(|| {
        migrations::strings(&mut conn, "SELECT integrity_check AS value FROM pragma_integrity_check()")
    });
    let report = report.map_err(not_a_database)?;
    if report != ["ok"] {
        return Err(failed(format!("{} is damaged (integrity_check: {})", file.display(), report.join("; "))));
    }
    let status = migrations::status_of_sqlite(&mut conn)?;
    let users = migrations::strings(&mut conn, "SELECT CAST(count(*) AS TEXT) AS value FROM users");
    describe(status, users.ok().and_then(|u| u.first()?.parse().ok()), file, restoring)
}

/// What `status` and `users` say of the copy in `file`. A restore refuses a copy from a newer
/// provisiond (`restoring`); a backup is taken whatever the schema.
fn describe(status: Status, users: Option<i64>, file: &Path, restoring: bool) -> Result<Copy> {
    if let Some(why) = status.newer_schema().filter(|_| restoring) {
        return Err(failed(format!("{}: {why}", file.display())));
    }
    let newest = status.unknown.last().or(status.applied.last().map(|m| &m.name));
    let (Some(newest), Some(users)) = (newest, users) else {
        return Err(failed(format!("{} is not a provisiond database", file.display())));
    };
    Ok(Copy { users, schema: newest.clone(), pending: status.pending.len() })
}

/// Copies the SQLite database of `pool` into the new file `file` while others read and write,
/// and checks the copy.
pub fn sqlite_backup(pool: &Pool, file: &Path) -> Result<Copy> {
    let mut conn = pool.get()?;
    let DbConn::Sqlite(c) = &mut *conn else { return Err(failed("not a SQLite database")) };
    vacuum_into(c, file)?;
    checked(file, false).inspect_err(|_| {
        let _ = std::fs::remove_file(file);
    })
}

/// Restores the SQLite backup `file` as the database `database`, which must not exist: the
/// backup is checked, copied beside `database` and renamed into place, so that a failure leaves
/// no half database behind.
pub fn sqlite_restore(file: &Path, database: &Path) -> Result<Copy> {
    let wal = PathBuf::from(format!("{}-wal", database.display()));
    if [database, wal.as_path()].iter().any(|p| p.metadata().is_ok_and(|m| m.len() > 0)) {
        return Err(failed(format!(
            "{} exists: a restore never overwrites a database; stop provisiond and move {0} (and its -wal and -shm \
             files) away first, or restore into a new data directory",
            database.display()
        )));
    }
    let copy = checked(file, true)?;
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let partial = PathBuf::from(format!("{}.restoring", database.display()));
    let _ = std::fs::remove_file(&partial);
    let source = format!("file:{}?mode=ro", file.display());
    let mut conn =
        diesel::SqliteConnection::establish(&source).map_err(|e| failed(format!("cannot open {}: {e}", file.display())))?;
    vacuum_into(&mut conn, &partial)?;
    // The copy keeps the backup's journal mode; the daemon's databases are WAL.
    let wal_mode = diesel::SqliteConnection::establish(&partial.display().to_string())
        .map_err(|e| e.to_string())
        .and_then(|mut c| c.batch_execute("PRAGMA journal_mode = WAL;").map_err(|e| e.to_string()));
    if let Err(e) = wal_mode {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(format!("cannot prepare {}: {e}", partial.display())));
    }
    for stale in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{stale}", database.display()));
    }
    std::fs::rename(&partial, database).map_err(|e| failed(format!("cannot move the restored database into place: {e}")))?;
    Ok(copy)
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`): on the PATH, else the newest of
/// Debian's `/usr/lib/postgresql/*/bin`.
fn pg_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join(name))))
            .filter(|(_, p)| p.is_file())
            .collect();
        found.sort();
        found.pop().map(|(_, p)| p)
    })
}

/// How to reach the database from a PostgreSQL client program: the URL as configured (any
/// password in it is the operator's own) and the password from `database.password_file`,
/// handed over in the environment, never on a command line.
pub struct PgTarget<'a> {
    pub url: &'a str,
    pub shown: String,
    pub password: Option<String>,
}

/// Runs a PostgreSQL client program with `args`, and `--dbname` of the target when given.
fn run_pg(program: &str, args: &[&str], target: Option<&PgTarget>, doing: &str) -> Result<()> {
    let Some(path) = pg_program(program) else {
        let db = target.map(|t| format!(" --dbname '{}'", t.shown)).unwrap_or_default();
        return Err(failed(format!(
            "{program} not found (install PostgreSQL's client programs, e.g. apt-get install postgresql-client); {doing} \
             by hand with: {program} {}{db}",
            args.join(" "),
        )));
    };
    let mut cmd = Command::new(&path);
    cmd.args(args);
    if let Some(target) = target {
        cmd.arg("--dbname").arg(target.url);
        if let Some(password) = &target.password {
            cmd.env("PGPASSWORD", password);
        }
    }
    let out = cmd.output().map_err(|e| failed(format!("cannot run {}: {e}", path.display())))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!("{program} failed ({}): {}", out.status, said.trim())));
    }
    Ok(())
}

/// `pg_dump` of the database into the new file `file` (its custom format, which `pg_restore`
/// reads), then the file's table of contents read back as a check.
pub fn pg_backup(pool: &Pool, target: &PgTarget, file: &Path) -> Result<Copy> {
    let status = migrations::status(pool)?;
    let users = migrations::strings(&mut *pool.get()?, "SELECT count(*)::text AS value FROM users").ok();
    let name = file.display().to_string();
    create_private(file)?;
    let dumped = run_pg("pg_dump", &["--format=custom", "--file", &name], Some(target), "back up");
    let listed = dumped.and_then(|()| run_pg("pg_restore", &["--list", &name], None, "check the backup"));
    if let Err(e) = listed {
        let _ = std::fs::remove_file(file);
        return Err(e);
    }
    describe(status, users.and_then(|u| u.first()?.parse().ok()), file, false)
}

/// `pg_restore` of the dump `file` into the database, which must hold no provisiond schema yet;
/// in one transaction, so that a failure leaves it empty.
pub fn pg_restore(pool: &Pool, target: &PgTarget, file: &Path) -> Result<Copy> {
    if !migrations::status(pool)?.applied.is_empty() {
        return Err(failed(format!(
            "{} holds a provisiond database already: a restore never overwrites one; restore into a new, empty database",
            target.shown
        )));
    }
    let name = file.display().to_string();
    run_pg("pg_restore", &["--exit-on-error", "--single-transaction", "--no-owner", &name], Some(target), "restore")?;
    let status = migrations::status(pool)?;
    let users = migrations::strings(&mut *pool.get()?, "SELECT count(*)::text AS value FROM users").ok();
    describe(status, users.and_then(|u| u.first()?.parse().ok()), file, true)
}
