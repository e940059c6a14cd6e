//! The command line of the real binary: configuration, migrations, tokens, serve.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::{backend, Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

struct Dir {
    dir: tempfile::TempDir,
    db: TestDb,
}

impl Dir {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::with_sqlite_file(dir.path(), &dir.path().join("data/p.db"));
        let config = format!("[server]\nlisten = \"127.0.0.1:0\"\n{}[log]\nlevel = \"warn\"\n{extra}", db.toml());
        std::fs::write(dir.path().join("provisiond.toml"), config).unwrap();
        Dir { dir, db }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("provisiond.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// The domain services on this directory's database and MFA key, as the command line has them.
    fn services(&self) -> provisiond::domain::Services {
        self.services_with(std::sync::Arc::new(provisiond::clock::SystemClock))
    }

    fn services_with(&self, clock: std::sync::Arc<dyn provisiond::clock::Clock>) -> provisiond::domain::Services {
        let mut config = provisiond::config::Config::load(&self.config()).unwrap();
        config.mfa.key_file = self.dir.path().join(&config.mfa.key_file);
        let pool = provisiond::app::open_database(&config).unwrap();
        let sealer = std::sync::Arc::new(provisiond::app::load_sealer(&config).unwrap());
        provisiond::domain::Services::new(pool, sealer, &config, clock)
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(self.config()).args(args).current_dir(self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn check_config_accepts_the_shipped_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config/provisiond.toml", "config/provisiond.example.toml"] {
        let o = Command::new(BIN).args(["--config", file, "check-config"]).current_dir(root).output().unwrap();
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        assert!(stdout(&o).contains("ok"));
    }
}

#[test]
fn check_config_names_the_wrong_key() {
    let d = Dir::new("[scim]\nmax_page_size = \"lots\"\n");
    let o = d.run(&["check-config"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("scim.max_page_size"), "{}", stderr(&o));

    let d = Dir::new("[scim]\nlisten_port = 1\n");
    let o = d.run(&["check-config"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("scim.listen_port"), "{}", stderr(&o));

    // Environment overrides use PROVISIOND_<SECTION>__<KEY> and are validated too.
    let d = Dir::new("");
    let o = d.run_env(&["check-config"], &[("PROVISIOND_SERVER__LISTEN", "not-an-address")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("server.listen"), "{}", stderr(&o));

    let o = Command::new(BIN).args(["--config", "/nonexistent/p.toml", "check-config"]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/p.toml"), "{}", stderr(&o));
}

#[test]
fn config_path_comes_from_the_environment_or_the_default() {
    let d = Dir::new("");
    let o = Command::new(BIN).arg("check-config").env("PROVISIOND_CONFIG", d.config()).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Without either, config/provisiond.toml under the working directory.
    std::fs::create_dir(d.dir.path().join("config")).unwrap();
    std::fs::copy(d.config(), d.dir.path().join("config/provisiond.toml")).unwrap();
    let o = Command::new(BIN).arg("check-config").env_remove("PROVISIOND_CONFIG").current_dir(d.dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("config/provisiond.toml"));
}

#[test]
fn migrate_creates_the_database() {
    let d = Dir::new("");
    let o = d.run(&["migrate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // SQLite: the file and its directory are created. (A PostgreSQL database is the server's:
    // that migrate succeeded, twice, is what there is to see.)
    if backend() == Backend::Sqlite {
        assert!(d.dir.path().join("data/p.db").is_file());
    }
    // Idempotent.
    assert!(d.run(&["migrate"]).status.success());
}

#[test]
fn tokens_are_created_listed_and_revoked_without_showing_secrets() {
    let d = Dir::new("");
    let o = d.run(&["token", "create", "--name", "okta", "--scope", "scim,mfa"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let token = out.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("pvd_") && token.len() > 40, "{out}");

    let list = stdout(&d.run(&["token", "list"]));
    assert!(list.contains("okta") && list.contains("scim,mfa"), "{list}");
    assert!(!list.contains(&token));
    let db = d.db.stored_bytes();
    assert!(!db.contains(token.as_bytes()), "token stored in clear");

    let dup = d.run(&["token", "create", "--name", "okta", "--scope", "scim"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"));
    let bad = d.run(&["token", "create", "--name", "x", "--scope", "root"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("root"));

    assert!(d.run(&["token", "revoke", "okta"]).status.success());
    assert!(!stdout(&d.run(&["token", "list"])).contains("okta"));
    let again = d.run(&["token", "revoke", "okta"]);
    assert!(!again.status.success());
}

#[test]
fn operators_are_added_with_a_one_time_setup_link_listed_disabled_and_reset_from_the_command_line() {
    let d = Dir::new("");
    let op = |args: &[&str]| d.run_env(args, &[("PROVISIOND_SERVER__PUBLIC_URL", "https://idm.example.com/")]);
    let link_of = |o: &Output| {
        assert!(o.status.success(), "{}", stderr(o));
        let out = stdout(o);
        let link = out.lines().last().unwrap().trim().to_string();
        let token = link.strip_prefix("https://idm.example.com/console/setup/").unwrap_or_else(|| panic!("{out}")).to_string();
        assert_eq!(token.len(), 64, "{out}");
        (link, token)
    };
    let (_, first) = link_of(&op(&["operator", "add", "alice", "--role", "admin"]));
    link_of(&op(&["operator", "add", "bob", "--role", "helpdesk"]));
    let list = stdout(&op(&["operator", "list"]));
    assert!(line_of(&list, "alice").contains("admin") && line_of(&list, "alice").contains("setup pending"), "{list}");
    assert!(line_of(&list, "bob").contains("helpdesk") && line_of(&list, "bob").contains("never"), "{list}");
    assert!(!d.db.stored_bytes().contains(first.as_bytes()), "setup link stored in clear");

    let dup = op(&["operator", "add", "alice", "--role", "helpdesk"]);
    assert!(!dup.status.success() && stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let bad_role = op(&["operator", "add", "carol", "--role", "root"]);
    assert!(!bad_role.status.success() && stderr(&bad_role).contains("root"), "{}", stderr(&bad_role));
    let bad_name = op(&["operator", "add", "two\nlines", "--role", "admin"]);
    assert!(!bad_name.status.success() && stderr(&bad_name).contains("control characters"), "{}", stderr(&bad_name));

    // A reset hands out a new link; the old one stops working.
    let (_, second) = link_of(&op(&["operator", "reset", "alice"]));
    assert_ne!(first, second);
    let operators = d.services().operators;
    assert_eq!(operators.setup_link_operator(&first).unwrap(), None);
    assert_eq!(operators.setup_link_operator(&second).unwrap().as_deref(), Some("alice"));

    assert!(op(&["operator", "disable", "bob"]).status.success());
    assert!(line_of(&stdout(&op(&["operator", "list"])), "bob").contains("disabled"));
    let missing = op(&["operator", "disable", "nobody"]);
    assert!(!missing.status.success() && stderr(&missing).contains("nobody"), "{}", stderr(&missing));
}

#[test]
fn a_setup_link_sets_a_strong_password_and_a_confirmed_factor_once() {
    let d = Dir::new("");
    let o = d.run(&["operator", "add", "alice", "--role", "helpdesk"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).lines().last().unwrap().rsplit('/').next().unwrap().trim().to_string();
    let operators = d.services().operators;
    let (name, enrolment) = operators.begin_setup(&token).unwrap();
    assert_eq!(name, "alice");
    assert!(enrolment.otpauth_uri.starts_with("otpauth://totp/provisiond:alice?"), "{}", enrolment.otpauth_uri);
    let secret = provisiond::domain::mfa::Policy::decode_base32(&enrolment.secret_base32).unwrap();
    let policy = provisiond::domain::mfa::Policy::from_config(&provisiond::config::Mfa::default());
    let code = || policy.code_at(&secret, chrono::Utc::now().timestamp() as u64);
    let strong = "correct horse battery staple";

    let weak = operators.finish_setup(&token, "password1234", &code()).unwrap_err().to_string();
    assert!(weak.contains("too easy"), "{weak}");
    let short = operators.finish_setup(&token, "Tr0ub4dor&3", &code()).unwrap_err().to_string();
    assert!(short.contains("at least 12"), "{short}");
    let wrong = operators.finish_setup(&token, strong, "000000").unwrap_err().to_string();
    assert!(wrong.contains("does not match"), "{wrong}");
    assert!(line_of(&stdout(&d.run(&["operator", "list"])), "alice").contains("setup pending"));

    let codes = operators.finish_setup(&token, strong, &code()).unwrap();
    assert_eq!(codes.0.len(), 10);
    assert!(line_of(&stdout(&d.run(&["operator", "list"])), "alice").contains("active"));
    let again = operators.finish_setup(&token, strong, &code()).unwrap_err().to_string();
    assert!(again.contains("unknown, used or expired"), "{again}");
    assert!(operators.begin_setup(&token).is_err(), "a used link shows no new secret");
    assert!(!d.db.stored_bytes().contains(strong.as_bytes()), "password stored in clear");
}

#[test]
fn operators_sign_in_with_password_and_code_only_and_five_failures_lock_them_out_for_fifteen_minutes() {
    use provisiond::domain::operators::SignIn;
    let d = Dir::new("");
    let o = d.run(&["operator", "add", "alice", "--role", "admin"]);
    let token = stdout(&o).lines().last().unwrap().rsplit('/').next().unwrap().trim().to_string();
    let clock = std::sync::Arc::new(provisiond::clock::ManualClock::new(chrono::Utc::now()));
    let operators = d.services_with(clock.clone()).operators;
    let (_, enrolment) = operators.begin_setup(&token).unwrap();
    let secret = provisiond::domain::mfa::Policy::decode_base32(&enrolment.secret_base32).unwrap();
    let policy = provisiond::domain::mfa::Policy::from_config(&provisiond::config::Mfa::default());
    let code = || policy.code_at(&secret, provisiond::clock::Clock::now(&*clock).timestamp() as u64);
    let password = "correct horse battery staple";
    let backup = operators.finish_setup(&token, password, &code()).unwrap().0;
    clock.advance(chrono::Duration::seconds(30));

    assert!(matches!(operators.sign_in("alice", password, &code()).unwrap(), SignIn::Accepted(o) if o.name == "alice"));
    // The same code again is a replay; wrong passwords, unknown operators: one refusal for all.
    assert_eq!(operators.sign_in("alice", password, &code()).unwrap(), SignIn::Refused);
    clock.advance(chrono::Duration::seconds(30));
    assert_eq!(operators.sign_in("alice", "wrong horse battery staple", &code()).unwrap(), SignIn::Refused);
    assert_eq!(operators.sign_in("nobody", password, &code()).unwrap(), SignIn::Refused);
    assert_eq!(operators.sign_in("alice", password, "000000").unwrap(), SignIn::Refused);
    // A backup code works once.
    assert!(matches!(operators.sign_in("alice", password, &backup[0]).unwrap(), SignIn::Accepted(_)));
    assert_eq!(operators.sign_in("alice", password, &backup[0]).unwrap(), SignIn::Refused);
    // Five failures within 15 minutes lock the operator out, the right code included.
    for _ in 0..4 {
        assert_eq!(operators.sign_in("alice", "wrong horse battery staple", "000000").unwrap(), SignIn::Refused);
    }
    clock.advance(chrono::Duration::seconds(30));
    match operators.sign_in("alice", password, &code()).unwrap() {
        SignIn::LockedOut { retry_after_secs } => assert!((800..=900).contains(&retry_after_secs), "{retry_after_secs}"),
        other => panic!("{other:?}"),
    }
    clock.advance(chrono::Duration::minutes(15));
    assert!(matches!(operators.sign_in("alice", password, &code()).unwrap(), SignIn::Accepted(_)));
    // A disabled operator is refused like any wrong sign-in.
    assert!(d.run(&["operator", "disable", "alice"]).status.success());
    clock.advance(chrono::Duration::seconds(30));
    assert_eq!(operators.sign_in("alice", password, &code()).unwrap(), SignIn::Refused);
    let stored = d.db.stored_bytes();
    for event in ["operator.signed_in", "operator.sign_in_failed", "operator.locked_out"] {
        assert!(stored.contains(event.as_bytes()), "{event} is audited");
    }
}

#[test]
fn console_sessions_end_at_sign_out_after_idling_or_twelve_hours_and_when_the_operator_is_disabled() {
    use provisiond::domain::sessions::Role;
    use std::time::Duration as StdDuration;
    let d = Dir::new("");
    assert!(d.run(&["operator", "add", "alice", "--role", "admin"]).status.success());
    let clock = std::sync::Arc::new(provisiond::clock::ManualClock::new(chrono::Utc::now()));
    let config = provisiond::config::Config::load(&d.config()).unwrap();
    let pool = provisiond::app::open_database(&config).unwrap();
    let sessions = provisiond::domain::sessions::Sessions::new(
        pool,
        clock.clone(),
        StdDuration::from_secs(30 * 60),
        StdDuration::from_secs(12 * 3600),
    );
    let (id, session) = sessions.start("alice", Role::Admin).unwrap();
    assert_eq!(session.operator, "alice");
    assert_eq!(format!("{id:?}"), "SessionId(***)");
    assert!(!d.db.stored_bytes().contains(id.expose().as_bytes()), "session id stored in clear");
    assert_eq!(sessions.find(id.expose()).unwrap(), Some(session.clone()));
    assert_eq!(sessions.find("not-a-session").unwrap(), None);

    // Kept alive by use (24 × 29 minutes: 11 h 36), but not past twelve hours.
    for _ in 0..24 {
        clock.advance(chrono::Duration::minutes(29));
        assert!(sessions.find(id.expose()).unwrap().is_some());
    }
    clock.advance(chrono::Duration::minutes(29));
    assert_eq!(sessions.find(id.expose()).unwrap(), None, "over twelve hours old");

    let (idle, _) = sessions.start("alice", Role::Admin).unwrap();
    clock.advance(chrono::Duration::minutes(31));
    assert_eq!(sessions.find(idle.expose()).unwrap(), None, "idle for over 30 minutes");

    let (out, _) = sessions.start("alice", Role::Admin).unwrap();
    sessions.end(out.expose()).unwrap();
    assert_eq!(sessions.find(out.expose()).unwrap(), None, "signed out");

    let (live, _) = sessions.start("alice", Role::Admin).unwrap();
    assert!(d.run(&["operator", "disable", "alice"]).status.success());
    assert_eq!(sessions.find(live.expose()).unwrap(), None, "disabled");
}

fn line_of(list: &str, name: &str) -> String {
    list.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{list}")).to_string()
}

#[test]
fn token_names_that_would_break_the_list_are_refused_naming_the_problem() {
    let d = Dir::new("");
    let cases = [
        ("two\nlines", "control characters"),
        ("tab\there", "control characters"),
        ("bell\u{7}", "control characters"),
        (" leading", "spaces"),
        ("trailing ", "spaces"),
        ("", "1 to 100 characters"),
    ];
    for (name, problem) in cases {
        let o = d.run(&["token", "create", "--name", name, "--scope", "scim"]);
        assert!(!o.status.success(), "{name:?} was accepted: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("token name") && err.contains(problem), "{name:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!stdout(&o).contains("pvd_"), "no token printed for {name:?}");
    }
    // Nothing was created; a name with inner spaces is fine and lists on one line.
    assert!(d.run(&["token", "create", "--name", "Okta prod", "--scope", "scim"]).status.success());
    let list = stdout(&d.run(&["token", "list"]));
    let rows: Vec<&str> = list.lines().filter(|l| l.contains("scim")).collect();
    assert_eq!(rows.len(), 1, "{list}");
    assert!(rows[0].contains("Okta prod"), "{list}");
    assert!(d.run(&["token", "revoke", "Okta prod"]).status.success());
}

/// A free loopback port (released just before the daemon binds it).
/// Waits (up to 5 s) until the daemon at `base` answers /readyz with 200.
fn wait_ready(agent: &ureq::Agent, base: &str) {
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        agent.get(format!("{base}/readyz")).call().is_ok_and(|r| r.status() == 200)
    });
    assert!(up, "daemon did not become ready");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_runs_the_daemon_with_a_cli_token() {
    let d = Dir::new("");
    let token = stdout(&d.run(&["token", "create", "--name", "idp", "--scope", "scim"])).lines().last().unwrap().to_string();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "serve"])
        .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&agent, &base);
    let resp = agent
        .post(format!("{base}/scim/v2/Users"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/scim+json")
        .send(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "cli-user"}).to_string())
        .unwrap();
    assert_eq!(resp.status(), 201);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn mfa_reset_from_the_command_line_prints_a_line_per_user_and_audits() {
    let d = Dir::new(&format!("[mfa]\nkey_file = \"{}\"\n", "data/mfa.key"));
    assert!(d.run(&["migrate"]).status.success());
    // Users arrive through the library here; the CLI resets them.
    let mut config = provisiond::config::Config::load(&d.config()).unwrap();
    config.mfa.key_file = d.dir.path().join("data/mfa.key");
    let pool = provisiond::app::open_database(&config).unwrap();
    let sealer = std::sync::Arc::new(provisiond::app::load_sealer(&config).unwrap());
    let users =
        provisiond::domain::Services::new(pool.clone(), sealer, &config, std::sync::Arc::new(provisiond::clock::SystemClock))
            .users;
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Scim, "test", None);
    for name in ["alice", "bob", "carol"] {
        users
            .create(
                &json!({"userName": name, "title": if name == "carol" { "Ops" } else { "Dev" }}),
                provisiond::domain::users::Source::Scim,
                &actor,
            )
            .unwrap();
    }

    let o = d.run_env(
        &["mfa", "reset", "--user", "ALICE", "--user", "bob", "--reason", "lost phones"],
        &[("USER", "operator1"), ("SUDO_USER", "operator1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("reset\talice\t") && lines[1].starts_with("reset\tbob\t"), "{out}");

    let o = d.run(&["mfa", "reset", "--filter", "title eq \"ops\"", "--reason", "team"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("reset\tcarol\t"));

    let o = d.run(&["mfa", "reset", "--user", "nobody", "--user", "alice", "--reason", "x"]);
    assert!(!o.status.success(), "an unknown user makes the command fail");
    assert!(stdout(&o).contains("not_found\tnobody") && stdout(&o).contains("reset\talice"), "{}", stdout(&o));

    let o = d.run(&["mfa", "reset", "--user", "alice"]);
    assert!(!o.status.success(), "--reason is required");
    for blank in ["", "   "] {
        let o = d.run(&["mfa", "reset", "--user", "alice", "--reason", blank]);
        assert!(!o.status.success() && stderr(&o).contains("--reason: reason is required"), "{}", stderr(&o));
    }
    let o = d.run(&["mfa", "reset", "--user", "alice", "--reason", &"x".repeat(1001)]);
    assert!(!o.status.success() && stderr(&o).contains("longer than 1000"), "{}", stderr(&o));

    let audit = provisiond::domain::audit::Audit::new(pool);
    let (total, events) = audit
        .list(&provisiond::store::audit::Query { event_type: Some("mfa.reset".into()), limit: 10, ..Default::default() })
        .unwrap();
    assert_eq!(total, 4);
    let first_two = &events[2..];
    assert!(
        first_two.iter().all(|e| e["origin"] == "cli" && e["actor"] == "operator1" && e["reason"] == "lost phones"),
        "{events:?}"
    );
}

#[test]
fn secrets_never_reach_the_log_even_at_debug_level() {
    let d = Dir::new("[mfa]\nkey_file = \"data/mfa.key\"\n");
    let token =
        stdout(&d.run(&["token", "create", "--name", "ui", "--scope", "scim,mfa,admin"])).lines().last().unwrap().to_string();
    let port = free_port();
    let log = d.dir.path().join("daemon.log");
    let mut child = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "serve"])
        .current_dir(d.dir.path())
        .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&agent, &base);
    let call = |method: &str, path: &str, body: serde_json::Value| -> serde_json::Value {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .unwrap();
        let mut resp = agent.run(req).unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or_default()
    };
    let id = call(
        "POST",
        "/scim/v2/Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "logged", "password": "hunter2-secret"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let enrolment = call("POST", &format!("/api/v1/users/{id}/mfa/totp"), json!({}));
    let secret_b32 = enrolment["secret"].as_str().unwrap().to_string();
    let secret = provisiond::domain::mfa::Policy::decode_base32(&secret_b32).unwrap();
    let policy = provisiond::domain::mfa::Policy::from_config(&provisiond::config::Config::default().mfa);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let code = policy.code_at(&secret, now());
    let confirmed = call("POST", &format!("/api/v1/users/{id}/mfa/totp/confirm"), json!({"code": code}));
    let backup = confirmed["backupCodes"][0].as_str().unwrap().to_string();
    assert_eq!(call("POST", &format!("/api/v1/users/{id}/mfa/verify"), json!({"code": backup}))["valid"], true);
    call("POST", &format!("/api/v1/users/{id}/mfa/verify"), json!({"code": "999999"}));
    child.kill().unwrap();
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEBUG"), "the log ran at debug level: {text}");
    // (A six-digit TOTP code is not searched for: timestamps hold such digit runs by chance.)
    for secret in [token.as_str(), &secret_b32, &backup, "hunter2-secret"] {
        assert!(!text.contains(secret), "{secret:?} appears in the log");
    }
}

#[test]
fn mfa_rekey_reseals_secrets_under_a_rotated_key() {
    use provisiond::domain::audit::{Actor, Origin};
    let d = Dir::new("[mfa]\nkey_file = \"data/old.key\"\n");
    let mut config = provisiond::config::Config::load(&d.config()).unwrap();
    config.mfa.key_file = d.dir.path().join("data/old.key");
    let services = |config: &provisiond::config::Config| {
        let pool = provisiond::app::open_database(config).unwrap();
        let sealer = std::sync::Arc::new(provisiond::app::load_sealer(config).unwrap());
        let services =
            provisiond::domain::Services::new(pool, sealer, config, std::sync::Arc::new(provisiond::clock::SystemClock));
        (services.users, services.mfa)
    };
    let actor = Actor::new(Origin::Cli, "test", None);
    let (users, mfa) = services(&config);
    let id = users.create(&json!({"userName": "rotated"}), provisiond::domain::users::Source::Scim, &actor).unwrap().id;
    let enrolment = mfa.start_enrolment(&id).unwrap();
    let secret = provisiond::domain::mfa::Policy::decode_base32(&enrolment.secret_base32).unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    mfa.confirm(&id, &mfa.policy().code_at(&secret, now()), &actor).unwrap();

    // Rotate: a new key file, the old one listed as previous; rekey re-seals under the new one.
    let rotated = "[mfa]\nkey_file = \"data/new.key\"\nprevious_key_files = [\"data/old.key\"]\n";
    let d2 = Dir { dir: d.dir, db: d.db };
    let text = std::fs::read_to_string(d2.config()).unwrap().replace("[mfa]\nkey_file = \"data/old.key\"\n", rotated);
    std::fs::write(d2.config(), text).unwrap();
    let o = d2.run(&["mfa", "rekey"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("re-sealed 1 secrets"), "{}", stdout(&o));

    // Now the new key alone opens the secret: the old key can be retired.
    config.mfa.key_file = d2.dir.path().join("data/new.key");
    config.mfa.previous_key_files = Vec::new();
    let (_, mfa) = services(&config);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let step_later = mfa.policy().code_at(&secret, now() + 30);
    assert_eq!(
        mfa.verify(&id, &step_later, &actor).unwrap(),
        provisiond::domain::mfa::Verification::Valid(provisiond::domain::mfa::Method::Totp)
    );
}

#[test]
fn under_systemd_it_notifies_ready_pings_the_watchdog_says_stopping_and_exits_0_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let d = Dir::new("");
    // What systemd gives a Type=notify service: a datagram socket in NOTIFY_SOCKET.
    let socket_path = d.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "serve"])
        .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTIFY_SOCKET", &socket_path)
        // WatchdogSec=0.2s: pings at least every 0.1 s.
        .env("WATCHDOG_USEC", "200000")
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    while !(seen.iter().any(|m: &String| m.contains("READY=1")) && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no READY=1 and watchdog pings ({e}); got {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    // READY=1 means it: migrated and listening, answering at once.
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let r = agent.get(format!("http://127.0.0.1:{port}/readyz")).call().unwrap();
    assert_eq!(r.status(), 200);

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let stopping = (0..100).any(|_| {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1")
    });
    assert!(stopping, "STOPPING=1 after SIGTERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "a stop signal is a clean exit: {status}");
}

#[test]
fn start_up_failures_exit_non_zero_with_one_line_naming_the_cause() {
    let serve = |d: &Dir, env: &[(&str, &str)]| {
        let o = d.run_env(&["serve"], env);
        assert!(!o.status.success(), "serve must fail: {}", stderr(&o));
        let err = stderr(&o);
        let line = err
            .lines()
            .find(|l| l.starts_with("provisiond: error:"))
            .unwrap_or_else(|| panic!("no error line: {err}"))
            .to_string();
        line
    };
    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = Dir::new("");
    let line = serve(&d, &[("PROVISIOND_SERVER__LISTEN", &addr)]);
    assert!(line.contains("cannot listen on") && line.contains(&addr) && line.contains("server.listen"), "{line}");

    // The MFA key file is unreadable (wrong size).
    let d = Dir::new("[mfa]\nkey_file = \"bad.key\"\n");
    std::fs::write(d.dir.path().join("bad.key"), b"short").unwrap();
    let line = serve(&d, &[]);
    assert!(line.contains("mfa.key_file") && line.contains("32 bytes"), "{line}");

    // The database does not answer.
    let d = Dir::new("");
    let unreachable =
        "[database]\nurl = \"postgres://nobody:secret@127.0.0.1:1/none\"\nconnect_timeout = 1\n[log]\nlevel = \"warn\"\n";
    std::fs::write(d.config(), unreachable).unwrap();
    let line = serve(&d, &[]);
    assert!(line.contains("cannot open the database") && !line.contains("secret"), "{line}");

    // The configuration is wrong.
    let d = Dir::new("[ldap]\nurl = \"ldap://h\"\nbase_dn = \"dc=x\"\nschedule = \"never\"\n");
    let line = serve(&d, &[]);
    assert!(line.contains("ldap.schedule"), "{line}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_0() {
    use std::io::{Read, Write};
    let d = Dir::new("");
    let token = stdout(&d.run(&["token", "create", "--name", "idp", "--scope", "scim"])).lines().last().unwrap().to_string();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "serve"])
        .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    wait_ready(&agent, &format!("http://127.0.0.1:{port}"));

    // A slow client: headers and half the body, then the stop signal, then the rest.
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "in-flight"}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "the request in flight was answered: {answer}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // New connections are refused now, and the user is stored.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let mut config = provisiond::config::Config::load(&d.config()).unwrap();
    d.db.apply(&mut config);
    let pool = provisiond::app::open_database(&config).unwrap();
    assert!(provisiond::store::users::find_by_user_name(&mut pool.get().unwrap(), "in-flight").unwrap().is_some());
}

#[test]
fn the_sqlite_database_is_private_to_its_owner_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        "[database]\nurl = \"sqlite://state/sub/p.db\"\n[mfa]\nkey_file = \"mfa.key\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec {BIN} --config {} token create --name t --scope scim", config.display()))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(dir.path().join(p)).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode("state/sub").unwrap(), 0o700);
    assert_eq!(mode("state/sub/p.db").unwrap(), 0o600);
    // While a connection is open the write-ahead log and shared memory exist: their mode is the
    // database file's.
    let conn = {
        use diesel::Connection;
        let mut c = diesel::SqliteConnection::establish(dir.path().join("state/sub/p.db").to_str().unwrap()).unwrap();
        diesel::RunQueryDsl::execute(diesel::sql_query("SELECT count(*) FROM users"), &mut c).unwrap();
        c
    };
    for f in ["state/sub/p.db-wal", "state/sub/p.db-shm"] {
        assert_eq!(mode(f).unwrap(), 0o600, "{f}");
    }
    drop(conn);
}

#[test]
fn mfa_link_prints_a_one_time_link_alone_on_the_last_line_and_the_token_never_reaches_a_trace_level_log() {
    let d = Dir::new("[mfa]\nkey_file = \"data/mfa.key\"\nenrolment_link_ttl = \"2h\"\n");
    let o = d.run(&["mfa", "link", "--user", "alice"]);
    assert!(!o.status.success() && stderr(&o).contains("server.public_url"), "no public_url: {}", stderr(&o));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let public = [("PROVISIOND_SERVER__PUBLIC_URL", base.as_str()), ("RUST_LOG", "trace")];
    let services = d.services();
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Scim, "test", None);
    services.users.create(&json!({"userName": "alice"}), provisiond::domain::users::Source::Scim, &actor).unwrap();

    let o = d.run_env(&["mfa", "link", "--user", "nobody"], &public);
    assert!(!o.status.success() && stderr(&o).contains("no user with userName \"nobody\""), "{}", stderr(&o));
    let o = d.run_env(&["mfa", "link", "--user", "alice", "--ttl", "forever"], &public);
    assert!(!o.status.success() && stderr(&o).contains("--ttl"), "{}", stderr(&o));

    let first = d.run_env(&["mfa", "link", "--user", "alice", "--ttl", "30m"], &public);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = stdout(&first);
    let first_url = out.lines().last().unwrap().to_string();
    assert!(first_url.starts_with(&format!("{base}/enrol/")), "{out}");
    let until = out.lines().next().unwrap().split("until ").nth(1).unwrap().trim_end_matches(':').to_string();
    let until = chrono::DateTime::parse_from_rfc3339(&until).unwrap();
    let in_30m = chrono::Utc::now() + chrono::Duration::minutes(30);
    assert!((until.with_timezone(&chrono::Utc) - in_30m).num_seconds().abs() < 60, "--ttl 30m: {out}");

    let second = d.run_env(&["mfa", "link", "--user", "alice"], &public);
    let url = stdout(&second).lines().last().unwrap().to_string();
    let cli_log = format!("{}{}", stderr(&first), stderr(&second));

    let log = d.dir.path().join("daemon.log");
    let mut child = Command::new(BIN)
        .args(["--config", d.config().to_str().unwrap(), "serve"])
        .current_dir(d.dir.path())
        .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVISIOND_SERVER__PUBLIC_URL", &base)
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    wait_ready(&agent, &base);
    assert_eq!(agent.get(&first_url).call().unwrap().status(), 410, "the newer link replaced the first");
    let page = agent.get(&url).call().unwrap().body_mut().read_to_string().unwrap();
    let secret_b32 = page.split("id=\"secret\" class=\"secret\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    let secret = provisiond::domain::mfa::Policy::decode_base32(&secret_b32).unwrap();
    let policy = provisiond::domain::mfa::Policy::from_config(&provisiond::config::Config::default().mfa);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let wrong = agent.post(&url).send_form([("code", "000000")]).unwrap();
    assert_eq!(wrong.status(), 400);
    let mut done = agent.post(&url).send_form([("code", policy.code_at(&secret, now))]).unwrap();
    let body = done.body_mut().read_to_string().unwrap();
    assert_eq!(done.status(), 200, "{body}");
    let backup = body.split("<li><code>").nth(1).unwrap().split('<').next().unwrap().to_string();
    child.kill().unwrap();
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap() + &cli_log;
    assert!(text.contains("TRACE"), "the log ran at trace level");
    for (what, secret) in [("token", url.rsplit('/').next().unwrap()), ("first token", first_url.rsplit('/').next().unwrap())] {
        let at = text.find(secret).map(|i| &text[i.saturating_sub(600)..(i + 100).min(text.len())]);
        assert!(at.is_none(), "the {what} appears in the log: {at:?}");
    }
    for secret in [secret_b32.as_str(), backup.as_str()] {
        assert!(!text.contains(secret), "{secret:?} appears in the log");
    }
}

#[test]
fn mfa_link_send_mails_the_link_and_a_link_that_could_not_be_sent_is_printed_with_a_non_zero_exit() {
    let server = crate::smtp::SmtpServer::start();
    let d = Dir::new(&format!("[mfa]\nkey_file = \"data/mfa.key\"\n{}", server.toml()));
    let public = [("PROVISIOND_SERVER__PUBLIC_URL", "https://idm.example.com")];
    let services = d.services();
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Scim, "test", None);
    let emails = json!([{"value": "alice@example.com", "primary": true}]);
    services
        .users
        .create(&json!({"userName": "alice", "emails": emails}), provisiond::domain::users::Source::Scim, &actor)
        .unwrap();
    services.users.create(&json!({"userName": "bob"}), provisiond::domain::users::Source::Scim, &actor).unwrap();

    let o = d.run_env(&["mfa", "link", "--user", "alice", "--send"], &public);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().next(), Some("sent to alice@example.com"), "{out}");
    let url = out.lines().last().unwrap();
    let got = server.wait_for(1, std::time::Duration::from_secs(10));
    assert!(got[0].text.as_deref().unwrap().contains(url), "the mailed link is the printed one");

    let o = d.run_env(&["mfa", "link", "--user", "bob", "--send"], &public);
    assert!(!o.status.success(), "not sent: the exit says so");
    assert!(stderr(&o).contains("not sent: the user has no primary or work email address"), "{}", stderr(&o));
    assert!(stdout(&o).lines().last().unwrap().starts_with("https://idm.example.com/enrol/"), "the link is printed anyway");

    let plain = Dir::new("[mfa]\nkey_file = \"data/mfa.key\"\n");
    let o = plain.run_env(&["mfa", "link", "--user", "alice", "--send"], &public);
    assert!(!o.status.success() && stderr(&o).contains("--send: links cannot be sent by email"), "{}", stderr(&o));
}

#[test]
fn mfa_reset_by_group_resets_its_members_through_nested_groups() {
    let d = Dir::new("[mfa]\nkey_file = \"data/mfa.key\"\n");
    let services = d.services();
    let actor = provisiond::domain::audit::Actor::new(provisiond::domain::audit::Origin::Scim, "test", None);
    let mut ids = Vec::new();
    for name in ["gina", "hugo", "ivan"] {
        ids.push(services.users.create(&json!({"userName": name}), provisiond::domain::users::Source::Scim, &actor).unwrap().id);
    }
    let scim = provisiond::domain::users::Source::Scim;
    let inner =
        services.groups.create(&json!({"displayName": "Night shift", "members": [{"value": ids[1]}]}), scim, &actor).unwrap();
    let outer = json!({"displayName": "Support", "members": [{"value": ids[0]}, {"value": inner.id}]});
    services.groups.create(&outer, scim, &actor).unwrap();

    let o = d.run(&["mfa", "reset", "--group", "support", "--reason", "support phones replaced"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("reset\tgina\t") && out.contains("reset\thugo\t") && !out.contains("ivan"), "{out}");
    let o = d.run(&["mfa", "reset", "--group", "Nobody", "--reason", "x"]);
    assert!(!o.status.success() && stderr(&o).contains("--group: no group with displayName \"Nobody\""), "{}", stderr(&o));
    let o = d.run(&["mfa", "reset", "--group", "Support", "--user", "ivan", "--reason", "x"]);
    assert!(!o.status.success(), "--group and --user exclude each other");
}
