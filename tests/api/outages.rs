//! When the database is busy, slow, restarting or gone: requests wait within bounds, then answer
//! 503 with `Retry-After` (never 500); the daemon recovers as soon as the database does; a sync
//! lease held by a frozen session makes nobody queue. Tests of PostgreSQL's own failures start a
//! server of their own on both runs of the suite.

use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl};
use serde_json::json;

use crate::helpers::{assert_scim_error, backend, Backend, TestApp, TestDb};
use crate::postgres::PgServer;

/// A session of the test's own that holds the lock a verification of `user_id` needs: SQLite's
/// write lock, or the user's factor row on PostgreSQL. Released when dropped.
enum Holder {
    Sqlite(diesel::SqliteConnection),
    Pg(diesel::PgConnection),
}

impl Holder {
    fn take(app: &TestApp, user_id: &str) -> Self {
        match backend() {
            Backend::Sqlite => {
                let mut c = diesel::SqliteConnection::establish(app.db_path().to_str().unwrap()).unwrap();
                diesel::sql_query("BEGIN IMMEDIATE").execute(&mut c).unwrap();
                Holder::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = app.db.server.as_ref().unwrap().connect(crate::postgres::DATABASE);
                diesel::sql_query("BEGIN").execute(&mut c).unwrap();
                diesel::sql_query(format!("SELECT 1 FROM mfa_factors WHERE user_id = '{user_id}' FOR UPDATE"))
                    .execute(&mut c)
                    .unwrap();
                Holder::Pg(c)
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = match self {
            Holder::Sqlite(c) => diesel::sql_query("ROLLBACK").execute(c),
            Holder::Pg(c) => diesel::sql_query("ROLLBACK").execute(c),
        };
    }
}

#[test]
fn a_verification_waits_for_a_writer_of_another_process_and_answers_503_past_the_limit() {
    let app = TestApp::spawn_with(|c| c.database.statement_timeout = 2);
    let id = app.create_user(&json!({"userName": "waits"}))["id"].as_str().unwrap().to_string();
    crate::mfa::enrol(&app, &id);
    let verify = || app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": "000000"}));

    // Another writer (the command line running `mfa reset`, a sync) holds the lock a little
    // while: the wrong code waits for it and is counted, as any other.
    let holder = Holder::take(&app, &id);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(holder);
    });
    let r = verify();
    release.join().unwrap();
    assert_eq!(r.status, 401, "{:?}", r.body);

    // Held past database.statement_timeout: 503 with Retry-After, not 500.
    let holder = Holder::take(&app, &id);
    let started = Instant::now();
    let r = verify();
    drop(holder);
    assert_eq!((r.status, r.body["error"].as_str()), (503, Some("unavailable")), "{:?}", r.body);
    assert_eq!(r.retry_after.as_deref(), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(8), "bounded by the limit: {:?}", started.elapsed());
    assert_eq!(verify().status, 401, "and it works again once the writer is done");
}

#[test]
fn a_statement_running_past_the_time_limit_is_cancelled_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path());
    let mut config = crate::helpers::config_for(dir.path(), &db);
    config.database.statement_timeout = 1;
    let pool = provisiond::app::open_database(&config).unwrap();
    let mut conn = pool.get().unwrap();
    let runaway = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let started = Instant::now();
    let err = diesel::sql_query(runaway).execute(&mut *conn).expect_err("cancelled");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(provisiond::store::Error::from(err).is_unavailable(), "a timeout is unavailability, not a failure");
    // The connection is still good for the next statement.
    assert!(diesel::sql_query("SELECT 1").execute(&mut *conn).is_ok());
}

/// A daemon on a PostgreSQL server the test controls.
fn on_postgres(server: &PgServer, adjust: impl FnOnce(&mut provisiond::config::Config)) -> TestApp {
    TestApp::spawn_on(|dir| TestDb::postgres(dir, server), adjust)
}

#[test]
fn after_a_postgresql_restart_requests_succeed_again_within_seconds() {
    let mut server = PgServer::start();
    let app = on_postgres(&server, |c| c.database.connect_timeout = 2);
    app.create_user(&json!({"userName": "survivor"}));
    // Every pooled connection in use once, so that all of them die with the server.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(app.filter("userName eq \"survivor\"")["totalResults"], 1));
        }
    });
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    loop {
        let r = app.get("/scim/v2/Users?filter=userName%20eq%20%22survivor%22");
        answers.push(r.status);
        if r.status == 200 && answers.iter().rev().take(1).all(|s| *s == 200) {
            break;
        }
        assert_ne!(r.status, 500, "a lost connection is unavailability: {:?}", r.body);
        assert!(Instant::now() < deadline, "not recovered: {answers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Recovered for good: no dead connection is left in the pool.
    for _ in 0..20 {
        assert_eq!(app.get("/scim/v2/Users?count=1").status, 200);
    }
}

#[test]
fn with_postgresql_down_requests_get_503_and_readyz_answers_within_a_second() {
    let mut server = PgServer::start();
    let app = on_postgres(&server, |c| c.database.connect_timeout = 2);
    assert_eq!(app.raw("GET", "/readyz", None, &[]).status, 200);
    server.kill();
    // Past the token cache (5 s), authentication itself needs the database.
    std::thread::sleep(Duration::from_millis(5200));
    let scim = app.get("/scim/v2/Users");
    assert_scim_error(&scim, 503, None);
    assert_eq!(scim.retry_after.as_deref(), Some("5"));
    let started = Instant::now();
    let ready = app.raw("GET", "/readyz", None, &[]);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!((ready.status, ready.body["status"].as_str()), (503, Some("unavailable")), "{:?}", ready.body);
    assert_eq!(ready.retry_after.as_deref(), Some("5"));
}

#[test]
fn a_sync_lease_row_locked_by_a_frozen_session_makes_nobody_wait() {
    let server = PgServer::start();
    let app = on_postgres(&server, |c| {
        c.ldap = Some(provisiond::config::Ldap {
            url: "ldap://127.0.0.1:9".into(),
            base_dn: "dc=example,dc=org".into(),
            schedule: provisiond::config::Schedule::disabled(),
            full_schedule: provisiond::config::Schedule::disabled(),
            ..Default::default()
        })
    });
    // Another instance, stopped inside a batch transaction that had just renewed the lease: its
    // row lock stays until PostgreSQL ends the session.
    let mut frozen = server.connect(crate::postgres::DATABASE);
    diesel::sql_query(
        "INSERT INTO sync_lease (name, holder, expires_at) VALUES ('ldap-sync', 'frozen-run', now() - interval '1 hour')",
    )
    .execute(&mut frozen)
    .unwrap();
    diesel::sql_query("BEGIN").execute(&mut frozen).unwrap();
    diesel::sql_query("UPDATE sync_lease SET expires_at = expires_at WHERE name = 'ldap-sync'").execute(&mut frozen).unwrap();
    // More tries than the pool has connections: each answers at once and gives its connection back.
    for _ in 0..10 {
        let started = Instant::now();
        let r = app.post("/api/v1/sync/runs", &json!({"full": false}));
        assert_eq!((r.status, r.body["error"].as_str()), (409, Some("sync_running")), "{:?}", r.body);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
    assert_eq!(app.get("/scim/v2/Users").status, 200, "the instance still serves");
    drop(frozen);
}
