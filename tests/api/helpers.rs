//! A real daemon per test: its own database, a random port, and tokens.
//!
//! The backend is chosen for the whole run by `TEST_BACKEND`: `sqlite` (default) or
//! `postgres` (a real PostgreSQL server per test, see `postgres.rs`); `tests/run-all.sh` runs
//! the suite once with each.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use provisiond::app::{self, Application};
use provisiond::clock::ManualClock;
use provisiond::config::Config;
use provisiond::domain::tokens::{Scope, Tokens};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend of this run.
pub fn backend() -> Backend {
    match std::env::var("TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// One test's database: a SQLite file in the test's directory, or a PostgreSQL server of its
/// own (kept running as long as a clone lives; several daemons may share it).
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    /// The PostgreSQL password, in a file as an operator would give it.
    pub password_file: Option<PathBuf>,
    pub server: Option<Arc<crate::postgres::PgServer>>,
}

impl TestDb {
    pub fn new(dir: &Path) -> Self {
        Self::with_sqlite_file(dir, &dir.join("provisiond.db"))
    }

    /// On SQLite, the database is `file`; other files (the PostgreSQL password) go in `dir`.
    pub fn with_sqlite_file(dir: &Path, file: &Path) -> Self {
        match backend() {
            Backend::Sqlite => TestDb { url: format!("sqlite://{}", file.display()), password_file: None, server: None },
            Backend::Postgres => {
                let server = crate::postgres::PgServer::start();
                TestDb { server: None, ..Self::postgres(dir, &server) }.keeping(server)
            }
        }
    }

    /// A database on this PostgreSQL server, whatever the backend of the run (tests of
    /// PostgreSQL's own failures: restarts, outages, row locks held by another session).
    /// The test keeps the server (to stop or restart it).
    pub fn postgres(dir: &Path, server: &crate::postgres::PgServer) -> Self {
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, format!("{}\n", crate::postgres::PASSWORD)).unwrap();
        TestDb { url: server.url(), password_file: Some(password_file), server: None }
    }

    /// This database keeps `server` running as long as a clone of it lives.
    fn keeping(self, server: crate::postgres::PgServer) -> Self {
        TestDb { server: Some(Arc::new(server)), ..self }
    }

    pub fn apply(&self, config: &mut Config) {
        config.database.url = self.url.parse().expect("a database url");
        config.database.password_file = self.password_file.clone();
    }

    /// Every byte the database keeps on disk: the SQLite file and its write-ahead log, or
    /// PostgreSQL's tables and WAL after a checkpoint (tests grep it for secrets in clear).
    pub fn stored_bytes(&self) -> Stored {
        let mut out = Vec::new();
        match &self.server {
            None => {
                let file = self.url.strip_prefix("sqlite://").unwrap();
                for suffix in ["", "-wal"] {
                    out.extend(std::fs::read(format!("{file}{suffix}")).unwrap_or_default());
                }
            }
            Some(server) => {
                use diesel::RunQueryDsl;
                diesel::sql_query("CHECKPOINT").execute(&mut server.connect("postgres")).expect("checkpoint");
                #[derive(diesel::QueryableByName)]
                struct Oid {
                    #[diesel(sql_type = diesel::sql_types::Oid)]
                    oid: u32,
                }
                let db: Oid =
                    diesel::sql_query(format!("SELECT oid FROM pg_database WHERE datname = '{}'", crate::postgres::DATABASE))
                        .get_result(&mut server.connect("postgres"))
                        .expect("database oid");
                let data = server.dir.path().join("data");
                read_tree(&data.join("base").join(db.oid.to_string()), &mut out);
                read_tree(&data.join("pg_wal"), &mut out);
            }
        }
        assert!(!out.is_empty(), "no database files found");
        Stored(out)
    }

    /// The `[database]` section of a configuration file.
    pub fn toml(&self) -> String {
        let mut out = format!("[database]\nurl = {:?}\n", self.url);
        if let Some(f) = &self.password_file {
            out.push_str(&format!("password_file = {:?}\n", f.display().to_string()));
        }
        out
    }
}

/// The database's files, to search.
pub struct Stored(Vec<u8>);

impl Stored {
    pub fn contains(&self, needle: &[u8]) -> bool {
        memchr::memmem::find(&self.0, needle).is_some()
    }
}

fn read_tree(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_tree(&path, out);
        } else {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// A token with every scope.
    pub token: String,
    pub dir: tempfile::TempDir,
    pub agent: ureq::Agent,
    /// The daemon's clock: tests move it to walk TOTP windows and lockouts.
    pub clock: Arc<ManualClock>,
    pub config: Config,
    pub db: TestDb,
}

/// A response: status, headers we look at, and the JSON body (Null when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
}

pub fn config_for(dir: &Path, db: &TestDb) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    db.apply(&mut config);
    config.database.pool_size = 4;
    config.mfa.key_file = dir.join("mfa.key");
    config.log.level = "warn".into();
    config
}

impl TestApp {
    pub fn spawn() -> Self {
        Self::spawn_with(|_| {})
    }

    /// Starts the daemon with a configuration the test may adjust.
    pub fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = TestDb::new(dir.path());
        Self::spawn_in(dir, db, "test", adjust)
    }

    /// A second daemon on this one's database (as a second instance behind a load balancer),
    /// with its own MFA key file copied from the first.
    pub fn another_instance(&self) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(&self.config.mfa.key_file, dir.path().join("mfa.key")).expect("copy the MFA key");
        let base = self.config.clone();
        Self::spawn_in(dir, self.db.clone(), "test-2", move |c| {
            let (key, listen) = (c.mfa.key_file.clone(), c.server.listen);
            *c = base;
            c.mfa.key_file = key;
            c.server.listen = listen;
        })
    }

    /// Starts the daemon on the database `db` makes in the test's directory.
    pub fn spawn_on(db: impl FnOnce(&Path) -> TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db(dir.path());
        Self::spawn_in(dir, db, "test", adjust)
    }

    /// Starts the daemon on `db` with a token called `token_name` (the actor of its requests).
    pub fn spawn_in(dir: tempfile::TempDir, db: TestDb, token_name: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = config_for(dir.path(), &db);
        adjust(&mut config);
        let pool = app::open_database(&config).expect("database");
        let token = Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock))
            .create(token_name, &[Scope::Scim, Scope::Mfa, Scope::Admin])
            .expect("token")
            .expose()
            .to_string();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let (tx, rx) = mpsc::channel();
        let (server_config, server_clock) = (config.clone(), clock.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let app = Application::build_with_clock(server_config, server_clock).expect("daemon starts");
                tx.send(app.port()).expect("port");
                app.run_until_stopped().await.expect("server runs");
            });
        });
        let port = rx.recv().expect("daemon started");
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        TestApp { base: format!("http://127.0.0.1:{port}"), token, dir, agent, clock, config, db }
    }

    /// A token of another client (with the SCIM scope) on this daemon's database.
    pub fn another_token(&self, name: &str) -> String {
        let pool = app::open_database(&self.config).expect("database");
        Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock))
            .create(name, &[Scope::Scim])
            .expect("token")
            .expose()
            .to_string()
    }

    /// A GET with another token.
    pub fn get_as(&self, token: &str, path: &str) -> Reply {
        self.call_with("GET", path, None, &[("Authorization", &format!("Bearer {token}"))])
    }

    /// The SQLite database file (SQLite runs only).
    pub fn db_path(&self) -> PathBuf {
        assert_eq!(backend(), Backend::Sqlite, "a SQLite file exists on the SQLite backend only");
        self.dir.path().join("provisiond.db")
    }

    /// A request with the all-scopes token.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.call_with(method, path, body, &[("Authorization", &format!("Bearer {}", self.token))])
    }

    pub fn call_with(&self, method: &str, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Reply {
        let text = body.map(Value::to_string);
        self.raw(method, path, text.as_deref(), headers)
    }

    /// A request with a raw body and exactly the given headers.
    pub fn raw(&self, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let uri = format!("{}{}", self.base, path);
        let mut req = ureq::http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("Content-Type", "application/scim+json");
        }
        let resp = match body {
            Some(b) => self.agent.run(req.body(b.to_string()).expect("request")),
            None => self.agent.run(req.body(()).expect("request")),
        }
        .expect("HTTP exchange");
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (status, etag, location, content_type, www_authenticate, retry_after) = (
            resp.status().as_u16(),
            header("etag"),
            header("location"),
            header("content-type"),
            header("www-authenticate"),
            header("retry-after"),
        );
        let text = resp.into_body().read_to_string().unwrap_or_default();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body, etag, location, content_type, www_authenticate, retry_after }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body))
    }

    /// Creates a user and returns its resource; panics unless 201. The core User schema is
    /// declared for the test when its body declares none (the server requires `schemas`).
    pub fn create_user(&self, body: &Value) -> Value {
        let mut body = body.clone();
        if body.get("schemas").is_none() {
            body["schemas"] = serde_json::json!([USER_SCHEMA]);
        }
        let r = self.post("/scim/v2/Users", &body);
        assert_eq!(r.status, 201, "create failed: {:?}", r.body);
        r.body
    }

    /// Lists users with a filter (URL-encoded here) and returns the ListResponse.
    pub fn filter(&self, filter: &str) -> Value {
        let r = self.get(&format!("/scim/v2/Users?filter={}", encode(filter)));
        assert_eq!(r.status, 200, "filter {filter:?} failed: {:?}", r.body);
        r.body
    }
}

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// Percent-encodes a query value.
pub use provisiond::config::percent_encode as encode;

/// Asserts a SCIM error document with this status and scimType.
#[track_caller]
pub fn assert_scim_error(r: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "unexpected answer: {:?}", r.body);
    assert_eq!(r.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{:?}", r.body);
    assert_eq!(r.body["status"], Value::String(status.to_string()), "{:?}", r.body);
    match scim_type {
        Some(t) => assert_eq!(r.body["scimType"], t, "{:?}", r.body),
        None => assert!(r.body.get("scimType").is_none(), "{:?}", r.body),
    }
}

/// The `userName`s of a ListResponse, in order.
pub fn user_names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .map(|rs| rs.iter().map(|r| r["userName"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}
