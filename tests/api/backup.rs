//! Running it like any other service, from the real binary's command line: `--version`,
//! `migrate --status`, the refusal of a database a newer provisiond migrated, and `backup` /
//! `restore` while the daemon takes writes (SQLite's `VACUUM INTO`, or `pg_dump` and
//! `pg_restore` with TEST_BACKEND=postgres).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{backend, Backend, TestApp, TestDb};
use provisiond::domain::mfa::Policy;

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--config").arg(config).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A configuration file in `dir` for the database `db` and the MFA key `key`.
fn config_file(dir: &Path, db: &TestDb, key: &Path) -> PathBuf {
    let path = dir.join("provisiond.toml");
    let toml = format!("{}[mfa]\nkey_file = {:?}\n[log]\nlevel = \"warn\"\n", db.toml(), key.display().to_string());
    std::fs::write(&path, toml).unwrap();
    path
}

/// This backend's migrations, oldest first, as their directories are named.
fn migrations() -> Vec<String> {
    let dir = match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut names: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

/// Runs `sql` on the test's database by hand, as an administrator (or a newer provisiond) would.
fn execute(db: &TestDb, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    match &db.server {
        None => diesel::SqliteConnection::establish(db.url.strip_prefix("sqlite://").unwrap()).unwrap().batch_execute(sql),
        Some(server) => server.connect(crate::postgres::DATABASE).batch_execute(sql),
    }
    .unwrap();
}

#[test]
fn version_names_the_commit_and_the_backends() {
    let o = Command::new(BIN).arg("--version").output().unwrap();
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.starts_with(&format!("provisiond {}\n", env!("CARGO_PKG_VERSION"))), "{out}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    assert!(out.contains(&format!("\ncommit {}\n", String::from_utf8_lossy(&head.stdout).trim())), "{out}");
    assert!(out.contains("backends: sqlite (SQLite 3.") && out.contains("postgresql"), "{out}");
    // -V stays the one line scripts parse.
    let short = Command::new(BIN).arg("-V").output().unwrap();
    assert_eq!(stdout(&short), format!("provisiond {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn migrate_status_lists_pending_then_applied_migrations_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path());
    let config = config_file(dir.path(), &db, &dir.path().join("mfa.key"));
    let all = migrations();

    let before = run(&config, &["migrate", "--status"]);
    assert!(before.status.success(), "{}", stderr(&before));
    let lines: Vec<String> = all.iter().map(|m| format!("pending  {m}")).collect();
    assert_eq!(stdout(&before).lines().collect::<Vec<_>>(), lines);
    // Still nothing applied: --status migrates nothing (and makes no SQLite file).
    assert_eq!(stdout(&run(&config, &["migrate", "--status"])), stdout(&before));
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        assert!(!Path::new(path).exists(), "migrate --status created {path}");
    }

    assert!(run(&config, &["migrate"]).status.success());
    let after = run(&config, &["migrate", "--status"]);
    assert!(after.status.success(), "{}", stderr(&after));
    let mut lines: Vec<String> = all.iter().map(|m| format!("applied  {m}")).collect();
    lines.push(format!("last migrated by provisiond {} (commit ", env!("CARGO_PKG_VERSION")));
    let out = stdout(&after);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), lines.len(), "{out}");
    assert_eq!(got[..all.len()], lines[..all.len()]);
    assert!(got[all.len()].starts_with(&lines[all.len()]), "{out}");
}

#[test]
fn a_database_a_newer_provisiond_migrated_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path());
    let config = config_file(dir.path(), &db, &dir.path().join("mfa.key"));
    assert!(run(&config, &["migrate"]).status.success());
    execute(
        &db,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000001'); \
         UPDATE deployment SET value = 'provisiond 9.9.9 (commit 0123456789ab)' WHERE name = 'schema_migrated_by';",
    );
    let newest = migrations().pop().unwrap();
    for args in [&["serve"][..], &["migrate"], &["token", "create", "--name", "x", "--scope", "admin"]] {
        let o = run(&config, args);
        assert!(!o.status.success(), "{args:?} ran on a newer schema");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        for part in ["provisiond 9.9.9", "20991231000001", &format!("provisiond {}", env!("CARGO_PKG_VERSION")), &newest] {
            assert!(err.contains(part), "{args:?}: {err:?} does not name {part}");
        }
    }
    let status = run(&config, &["migrate", "--status"]);
    assert!(!status.status.success());
    assert!(stdout(&status).contains("unknown  20991231000001 (applied by a newer provisiond)"), "{}", stdout(&status));
    assert!(stdout(&status).contains("last migrated by provisiond 9.9.9 (commit 0123456789ab)"));
}

/// What the load wrote and when it was told so.
#[derive(Default)]
struct Acknowledged {
    users: Vec<(String, String, Instant)>,
    factors: Vec<(String, Vec<u8>, Instant)>,
}

/// Creates users and enrols every other one, on `threads` threads, until `stop`.
fn write_load(app: &TestApp, threads: usize, stop: &AtomicBool, acked: &Mutex<Acknowledged>) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let policy = Policy::from_config(&app.config.mfa);
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("load-{t}-{i}@example.com");
                    let r = app.post(
                        "/scim/v2/Users",
                        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}),
                    );
                    assert_eq!(r.status, 201, "{:?}", r.body);
                    let id = r.body["id"].as_str().unwrap().to_string();
                    acked.lock().unwrap().users.push((id.clone(), name, Instant::now()));
                    if i % 2 == 1 {
                        continue;
                    }
                    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}));
                    assert_eq!(r.status, 201, "{:?}", r.body);
                    let secret = Policy::decode_base32(r.body["secret"].as_str().unwrap()).unwrap();
                    let code = policy.code_at(&secret, provisiond::clock::Clock::now(&*app.clock).timestamp() as u64);
                    let r = app.post(&format!("/api/v1/users/{id}/mfa/totp/confirm"), &json!({"code": code}));
                    assert_eq!(r.status, 200, "{:?}", r.body);
                    acked.lock().unwrap().factors.push((id, secret, Instant::now()));
                }
            });
        }
    });
}

/// Where a backup of `app`'s database is restored (a new SQLite file, or a new, empty database
/// on the same PostgreSQL server), and a configuration file for it in `work`, with `app`'s MFA
/// key.
fn restore_target(app: &TestApp, work: &Path) -> (TestDb, PathBuf) {
    let db = &app.db;
    let target = match &db.server {
        None => TestDb { url: format!("sqlite://{}", work.join("restored/provisiond.db").display()), ..db.clone() },
        Some(server) => {
            use diesel::RunQueryDsl;
            diesel::sql_query("CREATE DATABASE restored").execute(&mut server.connect("postgres")).unwrap();
            let (server_part, _database) = db.url.rsplit_once('/').unwrap();
            let url = format!("{server_part}/restored");
            TestDb { url, password_file: db.password_file.clone(), server: None }
        }
    };
    let dir = work.join("restored-config");
    std::fs::create_dir(&dir).unwrap();
    let config = config_file(&dir, &target, &app.config.mfa.key_file);
    (target, config)
}

#[test]
fn a_backup_taken_under_write_load_restores_every_write_acknowledged_before_it_began() {
    let app = TestApp::spawn();
    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), &app.db, &app.config.mfa.key_file);
    let file = work.path().join(match backend() {
        Backend::Sqlite => "provisiond-backup.db",
        Backend::Postgres => "provisiond-backup.dump",
    });

    // Creations and enrolments run throughout the backup, from several clients.
    let (stop, acked) = (AtomicBool::new(false), Mutex::new(Acknowledged::default()));
    let (began, backup) = std::thread::scope(|s| {
        s.spawn(|| write_load(&app, 3, &stop, &acked));
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().factors.len() < 20 {
            assert!(Instant::now() < deadline, "the load wrote too little");
            std::thread::sleep(Duration::from_millis(10));
        }
        let began = Instant::now();
        let backup = run(&config, &["backup", file.to_str().unwrap()]);
        // A little more load after it, then stop.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        (began, backup)
    });
    assert!(backup.status.success(), "{}", stderr(&backup));
    let said = stdout(&backup);
    assert!(said.contains("integrity checked"), "{said}");
    assert!(said.contains("the MFA key is not in the backup"), "{said}");
    let acked = acked.into_inner().unwrap();
    let users: Vec<_> = acked.users.iter().filter(|(_, _, at)| *at < began).collect();
    let factors: Vec<_> = acked.factors.iter().filter(|(_, _, at)| *at < began).collect();
    // The load ran across the backup's start (whether a write committed during the copy itself
    // depends on how fast the copy is).
    assert!(acked.users.len() > users.len(), "no write was acknowledged after the backup began");
    eprintln!(
        "acknowledged before the backup began: {} users, {} factors; after: {} users, {} factors",
        users.len(),
        factors.len(),
        acked.users.len() - users.len(),
        acked.factors.len() - factors.len()
    );

    if backend() == Backend::Sqlite {
        use diesel::Connection;
        use std::os::unix::fs::PermissionsExt;
        // It holds sealed secrets and hashes: for its owner only.
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let mut copy = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        #[derive(diesel::QueryableByName)]
        struct Check {
            #[diesel(sql_type = diesel::sql_types::Text)]
            integrity_check: String,
        }
        let check: Vec<Check> = diesel::RunQueryDsl::load(diesel::sql_query("PRAGMA integrity_check"), &mut copy).unwrap();
        assert_eq!(check.iter().map(|c| c.integrity_check.as_str()).collect::<Vec<_>>(), ["ok"]);
    }

    // A new instance on the restored database, with the original key.
    let (target, restored_config) = restore_target(&app, work.path());
    let restore = run(&restored_config, &["restore", file.to_str().unwrap()]);
    assert!(restore.status.success(), "{}", stderr(&restore));
    assert!(stdout(&restore).contains("restored"), "{}", stdout(&restore));
    if let Some(path) = target.url.strip_prefix("sqlite://") {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Never over a database.
    let again = run(&restored_config, &["restore", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("never overwrites"), "{}", stderr(&again));

    let key = app.config.mfa.key_file.clone();
    // (The backup holds the first instance's token "test": this one gets another.)
    let restored = TestApp::spawn_in(tempfile::tempdir().unwrap(), target.clone(), "after-restore", |c| c.mfa.key_file = key);
    // The tokens came with the backup: the first instance's works here.
    assert_eq!(restored.get_as(&app.token, "/scim/v2/Users?count=1").status, 200);
    for (id, name, _) in &users {
        let r = restored.get(&format!("/scim/v2/Users/{id}"));
        assert_eq!(r.status, 200, "{name}, acknowledged before the backup began, is missing");
        assert_eq!(r.body["userName"], name.as_str());
    }
    // Past the steps the enrolments confirmed, so that no code is a replay.
    restored.clock.advance(chrono::Duration::seconds(120));
    let policy = Policy::from_config(&restored.config.mfa);
    let now = provisiond::clock::Clock::now(&*restored.clock).timestamp() as u64;
    for (id, secret, _) in &factors {
        let r = restored.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": policy.code_at(secret, now)}));
        assert_eq!(r.status, 200, "{id}: {:?}", r.body);
        assert_eq!(r.body["valid"], true);
    }
}

#[test]
fn a_backup_never_overwrites_a_file_and_a_restore_refuses_what_is_not_a_backup() {
    let app = TestApp::spawn();
    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), &app.db, &app.config.mfa.key_file);
    let taken = work.path().join("taken");
    std::fs::write(&taken, "keep me").unwrap();
    let o = run(&config, &["backup", taken.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "keep me");

    let (_, target_config) = restore_target(&app, work.path());
    let o = run(&target_config, &["restore", taken.to_str().unwrap()]);
    assert!(!o.status.success());
    let expected = match backend() {
        Backend::Sqlite => "is not a readable SQLite database",
        Backend::Postgres => "pg_restore failed",
    };
    assert!(stderr(&o).contains(expected), "{}", stderr(&o));
}

#[test]
fn a_restore_refuses_a_backup_of_a_newer_provisiond_and_restores_nothing() {
    let app = TestApp::spawn();
    app.create_user(&json!({"userName": "before-the-downgrade"}));
    execute(&app.db, "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000001');");
    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), &app.db, &app.config.mfa.key_file);
    let file = work.path().join("newer-backup");
    // Backing up a newer database works: it is copied as it is.
    let o = run(&config, &["backup", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("schema 20991231000001"), "{}", stdout(&o));

    let (_, target_config) = restore_target(&app, work.path());
    let o = run(&target_config, &["restore", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("20991231000001") && err.contains("newer than this provisiond"), "{err}");
    // Nothing was restored: the target is still empty, and a restore of a good backup would go in.
    let status = run(&target_config, &["migrate", "--status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).lines().all(|l| l.starts_with("pending  ")), "{}", stdout(&status));
}

#[test]
fn a_restore_never_replaces_a_database_in_use() {
    if backend() == Backend::Postgres {
        // PostgreSQL's counterpart (a database that holds a schema) is in the load test above.
        return;
    }
    let app = TestApp::spawn();
    let work = tempfile::tempdir().unwrap();
    let config = config_file(work.path(), &app.db, &app.config.mfa.key_file);
    let file = work.path().join("backup.db");
    assert!(run(&config, &["backup", file.to_str().unwrap()]).status.success());
    // Where only a write-ahead log is left (a database moved away without it, or one in use).
    let (target, target_config) = restore_target(&app, work.path());
    let database = PathBuf::from(target.url.strip_prefix("sqlite://").unwrap());
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    let wal = PathBuf::from(format!("{}-wal", database.display()));
    std::fs::write(&wal, "a log").unwrap();
    let o = run(&target_config, &["restore", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("never overwrites"), "{}", stderr(&o));
    assert!(!database.exists(), "a refused restore created {}", database.display());
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "a log");
}
