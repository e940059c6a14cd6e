//! `[database]` for PostgreSQL: the password from a file or a systemd credential, TLS as the URL's
//! `sslmode` asks, and errors that name the problem without the password. These tests start a
//! PostgreSQL server of their own on both runs of the suite: they are about the connection, not
//! the backend under test.

use std::process::Command;

use diesel::sql_types::Bool;
use diesel::{QueryableByName, RunQueryDsl};
use provisiond::config::Config;
use provisiond::store::DbConn;

use crate::postgres::{PgServer, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

fn config(url: String, password_file: Option<std::path::PathBuf>) -> Config {
    let mut c = Config::default();
    c.database.url = url.parse().unwrap();
    c.database.password_file = password_file;
    c.database.pool_size = 2;
    // Failing connects are retried until this runs out.
    c.database.connect_timeout = 1;
    c
}

/// Whether the pool's connections are encrypted, as the server sees them.
fn uses_tls(config: &Config) -> bool {
    let pool = provisiond::app::open_database(config).expect("database opens");
    let mut conn = pool.get().unwrap();
    let DbConn::Pg(pg) = &mut *conn else { panic!("a PostgreSQL connection") };
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").get_result::<Ssl>(pg).unwrap().ssl
}

#[test]
fn tls_to_postgresql_is_used_as_the_url_asks_and_the_certificate_checked() {
    let server = PgServer::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pg-password");
    std::fs::write(&password, PASSWORD).unwrap();
    let url = |query: &str| format!("postgres://provisiond@localhost:{}/provisiond?{query}", server.port);

    assert!(uses_tls(&config(url("sslmode=require"), Some(password.clone()))));
    assert!(!uses_tls(&config(url("sslmode=disable"), Some(password.clone()))));
    let ca = server.ca_file.as_ref().unwrap().display().to_string();
    assert!(uses_tls(&config(url(&format!("sslmode=verify-full&sslrootcert={ca}")), Some(password.clone()))));

    // A certificate the client does not trust is refused, with the reason.
    let (other_ca, _) = crate::postgres::self_signed(dir.path(), "other");
    let err = provisiond::app::open_database(&config(
        url(&format!("sslmode=verify-full&sslrootcert={}", other_ca.display())),
        Some(password.clone()),
    ))
    .expect_err("an untrusted server certificate is refused");
    let text = format!("{err:#}");
    assert!(text.contains("cannot open the database") && text.contains("certificate"), "{text}");

    // A server without TLS is refused when the URL requires it.
    let plain = PgServer::start();
    let url = format!("postgres://provisiond@127.0.0.1:{}/provisiond?sslmode=require", plain.port);
    let err = provisiond::app::open_database(&config(url, Some(password))).expect_err("no TLS, no connection");
    assert!(format!("{err:#}").to_lowercase().contains("ssl"), "{err:#}");
}

/// Runs `provisiond migrate` with this configuration file body; (success, stderr).
fn migrate(toml: &str, env: &[(&str, &std::path::Path)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    // A failing connect is retried until connect_timeout runs out.
    std::fs::write(dir.path().join("p.toml"), toml.replace("[database]\n", "[database]\nconnect_timeout = 1\n")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(dir.path().join("p.toml")).arg("migrate").current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_postgresql_password_comes_from_a_file_or_a_credential_and_is_never_shown() {
    let server = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();

    // From a file named in the configuration (a trailing newline is not part of it).
    let file = dir.path().join("db.password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let (ok, err) = migrate(&format!("[database]\nurl = {url:?}\npassword_file = {:?}\n", file.display().to_string()), &[]);
    assert!(ok, "{err}");

    // From systemd's credential `database-password`.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("database-password"), PASSWORD).unwrap();
    let (ok, err) = migrate(&format!("[database]\nurl = {url:?}\n"), &[("CREDENTIALS_DIRECTORY", &credentials)]);
    assert!(ok, "{err}");

    // A wrong password: one clear line, without the password.
    std::fs::write(&file, "not-the-password-42").unwrap();
    let (ok, err) = migrate(&format!("[database]\nurl = {url:?}\npassword_file = {:?}\n", file.display().to_string()), &[]);
    assert!(!ok);
    assert!(err.contains("cannot open the database") && err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password-42"), "{err}");

    // A password in the URL is never printed either, nor shown by `{:?}`.
    let with_password = format!("postgres://provisiond:hunter2-secret@127.0.0.1:{}/provisiond", server.port);
    let (ok, err) = migrate(&format!("[database]\nurl = {with_password:?}\n"), &[]);
    assert!(!ok);
    assert!(err.contains("password authentication failed") && !err.contains("hunter2"), "{err}");
    let config = config(with_password, None);
    assert!(!format!("{config:?}").contains("hunter2"));

    // Both at once, or a file for SQLite, are configuration errors naming the key.
    let (ok, err) = migrate(
        &format!(
            "[database]\nurl = \"postgres://u:p@127.0.0.1:{}/db\"\npassword_file = {:?}\n",
            server.port,
            file.display().to_string()
        ),
        &[],
    );
    assert!(!ok && err.contains("database.password_file"), "{err}");
    let (ok, err) = migrate("[database]\nurl = \"sqlite://x.db\"\npassword_file = \"/nonexistent\"\n", &[]);
    assert!(!ok && err.contains("database.password_file"), "{err}");
}
