//! Backups of the database and their restoration.
//!
//! SQLite: `VACUUM INTO` copies the database as of one read transaction (writers carry on
//! meanwhile; every write committed before it began is in the copy), into a new file private to
//! its owner, synced to disk and then checked (`integrity_check`) before it is reported done. A
//! restore checks the backup the same way, and its schema against this binary's, and puts it in
//! place only where no database is: it never overwrites one. PostgreSQL: `pg_dump` and
//! `pg_restore`, found on the PATH or among Debian's server binaries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::migrations::{self, Status};
use super::{private_file, sqlite_limits, DbConn, Error, Pool, Result};
use crate::config::DatabaseUrl;

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
fn create_new(file: &Path) -> Result<()> {
    private_file(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => failed(format!("{} exists already: name a new file", file.display())),
        _ => failed(e),
    })
}

/// Flushes `path` (a file or a directory) to disk: `VACUUM INTO` does not sync what it writes.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| failed(format!("cannot sync {}: {e}", path.display())))
}

/// `VACUUM INTO` on `conn` (a read transaction of its own), into `file`, created first and
/// synced after.
fn vacuum_into(conn: &mut diesel::SqliteConnection, file: &Path) -> Result<()> {
    let name = file.to_str().ok_or_else(|| failed(format!("{} is not a UTF-8 path", file.display())))?;
    create_new(file)?;
    let copied = sqlite_limits::unlimited(|| diesel::sql_query("VACUUM INTO ?").bind::<Text, _>(name).execute(conn));
    let copied = copied.map_err(|e| failed(format!("cannot copy the database into {}: {e}", file.display())));
    copied.and_then(|_| sync(file)).inspect_err(|_| {
        let _ = std::fs::remove_file(file);
    })
}

/// Opens the SQLite file `file` read-only (an URI: its path percent-encoded, so that no `?` or
/// `#` in it can turn `mode=ro` into a file name).
fn open_read_only(file: &Path) -> Result<diesel::SqliteConnection> {
    let mut path = String::new();
    for c in file.display().to_string().chars() {
        match c {
            '%' | '?' | '#' => path.push_str(&format!("%{:02X}", c as u32)),
            c => path.push(c),
        }
    }
    diesel::SqliteConnection::establish(&format!("file:{path}?mode=ro"))
        .map_err(|e| failed(format!("cannot open {}: {e}", file.display())))
}

fn count_users<C: diesel::connection::LoadConnection>(conn: &mut C) -> Option<i64>
where
    diesel::query_builder::SqlQuery: for<'a> diesel::query_dsl::LoadQuery<'a, C, migrations::Named>,
{
    let counted = migrations::strings(conn, "SELECT CAST(count(*) AS TEXT) AS value FROM users").ok()?;
    counted.first()?.parse().ok()
}

/// Checks the SQLite file `file`: a sound file (`integrity_check`), a provisiond database, and,
/// when `restoring`, no newer than this binary.
fn checked(file: &Path, restoring: bool) -> Result<Copy> {
    let mut conn = open_read_only(file)?;
    let report = sqlite_limits::unlimited(|| {
        migrations::strings(&mut conn, "SELECT integrity_check AS value FROM pragma_integrity_check()")
    });
    let report = report.map_err(|e| failed(format!("{} is not a readable SQLite database: {e}", file.display())))?;
    if report != ["ok"] {
        return Err(failed(format!("{} is damaged (integrity_check: {})", file.display(), report.join("; "))));
    }
    let status = migrations::status_of_sqlite(&mut conn)?;
    describe(status, count_users(&mut conn), file, restoring)
}

/// What `status` and `users` say of the copy in `file` (see [`schema`]).
fn describe(status: Status, users: Option<i64>, file: &Path, restoring: bool) -> Result<Copy> {
    let schema = schema(&status, file, restoring)?;
    let users = users.ok_or_else(|| not_provisiond(file))?;
    Ok(Copy { users, schema, pending: status.pending.len() })
}

/// The newest migration of the copy in `file`. A restore refuses a copy from a newer provisiond
/// (`restoring`); a backup is taken whatever the schema.
fn schema(status: &Status, file: &Path, restoring: bool) -> Result<String> {
    if let Some(why) = status.newer_schema().filter(|_| restoring) {
        return Err(failed(format!("{}: {why}", file.display())));
    }
    let newest = status.unknown.last().or(status.applied.last().map(|m| &m.name));
    newest.cloned().ok_or_else(|| not_provisiond(file))
}

fn not_provisiond(file: &Path) -> Error {
    failed(format!("{} is not a provisiond database", file.display()))
}

/// The SQLite database `database` must exist to be backed up (opening it would make an empty
/// one, owned by whoever runs the command).
pub fn sqlite_exists(database: &Path) -> Result<()> {
    match database.is_file() {
        true => Ok(()),
        false => Err(failed(format!("there is no database at {}: check database.url and --config", database.display()))),
    }
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
/// backup is checked, copied beside `database` and linked into place (a link fails where a file
/// exists, so nothing that appeared meanwhile is overwritten), and given to the owner of its
/// directory (a restore run as root for a service's database).
pub fn sqlite_restore(file: &Path, database: &Path) -> Result<Copy> {
    let side = |suffix: &str| PathBuf::from(format!("{}{suffix}", database.display()));
    // An empty database file is what opening a missing database leaves: not a database. A
    // write-ahead log or shared-memory file is the trace of one in use.
    let in_the_way = [(side(""), 1), (side("-wal"), 0), (side("-shm"), 0)]
        .into_iter()
        .find(|(path, least)| path.metadata().is_ok_and(|m| m.len() >= *least))
        .map(|(path, _)| path);
    if let Some(path) = in_the_way {
        return Err(failed(format!(
            "{} exists: a restore never overwrites a database; stop provisiond and move {} (and its -wal and -shm \
             files) away first, or restore into a new data directory",
            path.display(),
            database.display()
        )));
    }
    let copy = checked(file, true)?;
    let partial = side(".restoring");
    let _ = std::fs::remove_file(&partial);
    vacuum_into(&mut open_read_only(file)?, &partial)?;
    let placed = place(&partial, database);
    let _ = std::fs::remove_file(&partial);
    placed?;
    Ok(copy)
}

/// Links `partial` in as `database` (an empty file there, left by opening a missing database,
/// is removed first), hands it to its directory's owner, and syncs the directory.
fn place(partial: &Path, database: &Path) -> Result<()> {
    if database.metadata().is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(database).map_err(|e| failed(format!("cannot remove the empty {}: {e}", database.display())))?;
    }
    std::fs::hard_link(partial, database).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            failed(format!("{} appeared during the restore: nothing was changed", database.display()))
        }
        _ => failed(format!("cannot put the restored database at {}: {e}", database.display())),
    })?;
    let dir = database.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let owner = dir.metadata().map_err(|e| failed(format!("cannot read {}: {e}", dir.display())))?;
    let mine = database.metadata().map_err(|e| failed(format!("cannot read {}: {e}", database.display())))?;
    if (mine.uid(), mine.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(database, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| failed(format!("cannot give {} to the owner of {}: {e}", database.display(), dir.display())))?;
    }
    sync(dir)
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

/// How a PostgreSQL client program reaches the database: the configured URL, which must carry
/// no password (a command line is visible to every local user; `Display` shows it redacted), and
/// the password of `database.password_file`, handed over in the program's environment.
pub struct PgTarget<'a> {
    pub url: &'a DatabaseUrl,
    pub password: Option<String>,
}

/// Runs a PostgreSQL client program with `args`, and `--dbname` of the target when given;
/// returns what it wrote to its standard output.
fn run_pg(program: &str, args: &[&str], target: Option<&PgTarget>, doing: &str) -> Result<Vec<u8>> {
    if let Some(t) = target.filter(|t| t.url.has_password()) {
        return Err(failed(format!(
            "database.url ({}) carries a password, which {program} would show to every local user on its command \
             line: move it to database.password_file",
            t.url
        )));
    }
    let Some(path) = pg_program(program) else {
        let db = target.map(|t| format!(" --dbname '{}'", t.url)).unwrap_or_default();
        return Err(failed(format!(
            "{program} not found (install PostgreSQL's client programs, e.g. apt-get install postgresql-client); {doing} \
             by hand with: {program} {}{db} (the password in PGPASSWORD or ~/.pgpass)",
            args.join(" "),
        )));
    };
    let mut cmd = Command::new(&path);
    cmd.args(args);
    if let Some(target) = target {
        let DatabaseUrl::Postgres(url) = target.url else { return Err(failed("not a PostgreSQL database")) };
        cmd.arg("--dbname").arg(url);
        if let Some(password) = &target.password {
            cmd.env("PGPASSWORD", password);
        }
    }
    let out = cmd.output().map_err(|e| failed(format!("cannot run {}: {e}", path.display())))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!("{program} failed ({}): {}", out.status, said.trim())));
    }
    Ok(out.stdout)
}

/// `pg_dump` of the database into the new file `file` (its custom format, which `pg_restore`
/// reads), then the dump's own record of its schema read back, as a check.
pub fn pg_backup(pool: &Pool, target: &PgTarget, file: &Path) -> Result<Copy> {
    let users = count_users(&mut *pool.get()?);
    let name = file.display().to_string();
    create_new(file)?;
    let dumped = run_pg("pg_dump", &["--format=custom", "--file", &name], Some(target), "back up").map(drop);
    let described = dumped.and_then(|()| sync(file)).and_then(|()| describe(dump_status(file)?, users, file, false));
    described.inspect_err(|_| {
        let _ = std::fs::remove_file(file);
    })
}

/// The schema a dump holds, read from the dump itself (its rows of `__diesel_schema_migrations`
/// and `deployment`), before anything is restored.
fn dump_status(file: &Path) -> Result<Status> {
    let name = file.display().to_string();
    let args = ["--data-only", "--table=__diesel_schema_migrations", "--table=deployment", "--file=-", &name];
    let data = run_pg("pg_restore", &args, None, "read the backup")?;
    let data = String::from_utf8_lossy(&data);
    let (mut versions, mut migrated_by, mut table) = (Vec::new(), None, "");
    for line in data.lines() {
        if let Some(rest) = line.strip_prefix("COPY ") {
            table = rest.split_whitespace().next().unwrap_or_default().rsplit('.').next().unwrap_or_default();
        } else if line == "\\." {
            table = "";
        } else if table == "__diesel_schema_migrations" {
            versions.extend(line.split('\t').next().map(str::to_string));
        } else if table == "deployment" {
            if let Some((key, value)) = line.split_once('\t') {
                if key == migrations::MIGRATED_BY {
                    migrated_by = Some(value.to_string());
                }
            }
        }
    }
    versions.sort();
    Ok(Status::of(versions, migrated_by, false))
}

/// `pg_restore` of the dump `file` into the database, which must hold no provisiond schema yet,
/// after the dump's schema was checked; in one transaction, so that a failure leaves it empty.
pub fn pg_restore(pool: &Pool, target: &PgTarget, file: &Path) -> Result<Copy> {
    if !migrations::status(pool)?.applied.is_empty() {
        return Err(failed(format!(
            "{} holds a provisiond database already: a restore never overwrites one; restore into a new, empty database",
            target.url
        )));
    }
    schema(&dump_status(file)?, file, true)?;
    let name = file.display().to_string();
    run_pg("pg_restore", &["--exit-on-error", "--single-transaction", "--no-owner", &name], Some(target), "restore")?;
    let status = migrations::status(pool)?;
    describe(status, count_users(&mut *pool.get()?), file, true)
}
