//! A real PostgreSQL server for the tests (and the benchmarks): a cluster of its own in a temp
//! dir, listening on a free loopback port with password (SCRAM) authentication, stopped when
//! dropped.
//!
//! `initdb` runs once per machine into a template kept in the temp directory; each server starts
//! from a copy of it, which takes a fraction of a second. PostgreSQL refuses to run as root, so
//! when the tests run as root the cluster belongs to, and the server runs as, `nobody`.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The role the clusters are made with, and its password (characters a URL must escape).
pub const USER: &str = "provisiond";
pub const PASSWORD: &str = "pg p@ss:w/rd%?&=";
/// The database each server is started with.
pub const DATABASE: &str = "provisiond";

/// Bumped when the template's `initdb` arguments change.
const TEMPLATE_VERSION: u32 = 1;

/// A PostgreSQL program: from `$PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout) that has a server.
pub fn bin(program: &str) -> PathBuf {
    let dir = std::env::var_os("PG_BINDIR").map(PathBuf::from).or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    });
    let path = dir.map(|d| d.join(program)).filter(|p| p.is_file());
    path.unwrap_or_else(|| {
        panic!("PostgreSQL's {program} is not installed: apt-get install -y postgresql (tests/run-all.sh does it when run as root), or set PG_BINDIR")
    })
}

pub struct PgServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// The certificate clients verify with `sslrootcert` (servers started with TLS only).
    pub ca_file: Option<PathBuf>,
    settings: Vec<String>,
}

/// Throwaway data: durability is not what the tests look at, speed is.
const THROWAWAY: &[&str] = &["fsync=off", "synchronous_commit=off", "full_page_writes=off"];

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(false, THROWAWAY)
    }

    /// A server that also accepts TLS (a self-signed certificate for `localhost`).
    pub fn start_tls() -> Self {
        Self::start_with(true, THROWAWAY)
    }

    /// A server set up as for production (for the benchmarks): data written to disk and
    /// synced, commits acknowledged before their WAL is flushed, which is what SQLite's
    /// `synchronous = NORMAL` in WAL mode does too.
    pub fn start_for_benchmark() -> Self {
        Self::start_with(false, &["fsync=on", "full_page_writes=on", "synchronous_commit=off", "shared_buffers=512MB"])
    }

    fn start_with(tls: bool, settings: &[&str]) -> Self {
        let template = template();
        let dir = tempfile::Builder::new().prefix("provisiond-pg-").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let copy = Command::new("cp").arg("-a").arg(&template).arg(&data).status().expect("cp runs");
        assert!(copy.success(), "cannot copy the PostgreSQL template {}", template.display());
        let mut conf = String::new();
        let mut ca_file = None;
        if tls {
            let (cert, key) = self_signed(dir.path(), "localhost");
            own(&key);
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            conf.push_str(&format!("ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n", cert.display(), key.display()));
            ca_file = Some(cert);
        }
        std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
        own(&data.join("postgresql.auto.conf"));
        own(dir.path());
        let mut server =
            PgServer { port: free_port(), dir, child: None, ca_file, settings: settings.iter().map(|s| s.to_string()).collect() };
        server.spawn();
        let mut admin = server.connect("postgres");
        diesel::sql_query(format!("CREATE DATABASE {DATABASE}")).execute(&mut admin).expect("create database");
        server
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let mut cmd = Command::new(bin("postgres"));
        cmd.arg("-D").arg(&data).args(["-p", &self.port.to_string()]);
        let common = ["listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=200", "log_min_messages=fatal"];
        for setting in common.iter().copied().chain(self.settings.iter().map(String::as_str)) {
            cmd.args(["-c", setting]);
        }
        cmd.current_dir(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(std::fs::File::create(self.dir.path().join("postgres.log")).map(Stdio::from).unwrap_or(Stdio::null()));
        as_unprivileged(&mut cmd);
        self.child = Some(cmd.spawn().expect("postgres starts"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The server answering must be ours: another test's may have taken the port between
            // `free_port` and our bind (ours then exits, and is started again on another port).
            if let Ok(mut c) = PgConnection::establish(&self.url_of("postgres")) {
                if data_directory(&mut c).is_some_and(|d| Path::new(&d) == data) {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
                if log.contains("could not bind") || log.contains("could not create any TCP/IP sockets") {
                    self.port = free_port();
                    return self.spawn();
                }
                panic!("postgres exited at start ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "postgres did not accept connections on port {}", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The URL of `database` without the password (the daemon reads it from a file).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// A URL with the password in it, for the harness's own connections.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}:{}@127.0.0.1:{}/{database}", provisiond::config::percent_encode(PASSWORD), self.port)
    }

    pub fn connect(&self, database: &str) -> PgConnection {
        PgConnection::establish(&self.url_of(database)).expect("connect to the test PostgreSQL")
    }

    /// Starts the server again after `kill`, on the same data and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the server at once, as a crash would (the data stays for a restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: the postmaster takes its backends down with it (SIGKILL would orphan them).
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn data_directory(c: &mut PgConnection) -> Option<String> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        setting: String,
    }
    diesel::sql_query("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        .get_result::<Setting>(c)
        .ok()
        .map(|s| s.setting)
}

/// A self-signed certificate for `name` and its key, made by `openssl` in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (apt-get install -y openssl)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// The initdb'd cluster the servers are copied from, made on first use.
fn template() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let initdb = bin("initdb");
    let version = initdb
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let template = std::env::temp_dir().join(format!("provisiond-pg{version}-template-v{TEMPLATE_VERSION}-{}", my_uid()));
    // Only a complete template (placed by rename, stamped last) that belongs to the server's
    // user is used; anything else at that path is not ours.
    let owner = server_user().map_or(my_uid(), |(uid, _)| uid);
    let ours = std::fs::metadata(&template).is_ok_and(|m| m.uid() == owner && m.mode() & 0o077 == 0);
    if ours && template.join("PROVISIOND_TEMPLATE_COMPLETE").is_file() {
        return template;
    }
    assert!(!template.exists() || ours, "{} exists but does not belong to the PostgreSQL user: remove it", template.display());
    // Built beside the template and renamed into place, so that concurrent test processes
    // never see half a cluster (the loser of the race throws its copy away).
    let work = tempfile::Builder::new().prefix("provisiond-pg-initdb-").tempdir().expect("temp dir");
    let password_file = work.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    own(work.path());
    own(&password_file);
    let data = work.path().join("data");
    let mut cmd = Command::new(initdb);
    cmd.arg("-D").arg(&data).args(["-U", USER, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]);
    cmd.arg(format!("--pwfile={}", password_file.display())).current_dir(work.path());
    as_unprivileged(&mut cmd);
    let out = cmd.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Loopback over TCP with a password only: no trust, no peer authentication.
    std::fs::write(data.join("pg_hba.conf"), "host all all 127.0.0.1/32 scram-sha-256\n").unwrap();
    own(&data.join("pg_hba.conf"));
    std::fs::write(data.join("PROVISIOND_TEMPLATE_COMPLETE"), "").unwrap();
    if template.exists() && !template.join("PROVISIOND_TEMPLATE_COMPLETE").is_file() {
        // A template left half-removed (say, by a temp-directory clean-up): replaced.
        let _ = std::fs::remove_dir_all(&template);
    }
    if std::fs::rename(&data, &template).is_err() {
        assert!(
            template.join("PROVISIOND_TEMPLATE_COMPLETE").is_file(),
            "cannot place the PostgreSQL template at {}",
            template.display()
        );
    }
    template
}

/// The user the cluster runs as: ourselves, or `nobody` when we are root.
fn server_user() -> Option<(u32, u32)> {
    if my_uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"nobody")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    });
    Some(nobody.expect("running as root: PostgreSQL needs an unprivileged user, and there is no `nobody` in /etc/passwd"))
}

fn as_unprivileged(cmd: &mut Command) {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
}

/// Hands a path the harness made to the server's user.
fn own(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the PostgreSQL user");
    }
}

/// Our user id (from /proc: no libc needed).
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
