//! The LDAP sync against a real slapd: full and incremental runs, renames, departures and
//! returns, the safety limit, a server that dies mid-run, the MFA reset flag, the doors
//! (API, command line, scheduler).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{user_names, TestApp};
use crate::mfa::{enrol, status};
use crate::slapd::{
    self, mentions, operation, people, person, uuid_of, Slapd, Stall, FLAG_ATTRIBUTE, MODIFY_REQUEST, PEOPLE, SEARCH_REQUEST,
};

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

pub fn spawn(slapd: &Slapd, adjust: impl FnOnce(&mut provisiond::config::Ldap)) -> TestApp {
    let mut ldap = slapd.config();
    adjust(&mut ldap);
    TestApp::spawn_with(move |c| c.ldap = Some(ldap))
}

/// Starts a run through the API and waits for its end; returns the finished run.
pub fn sync(app: &TestApp, full: bool) -> Value {
    let r = app.post("/api/v1/sync/runs", &json!({"full": full}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.location.as_deref(), Some(format!("/api/v1/sync/runs/{}", r.body["id"].as_str().unwrap()).as_str()));
    wait(app, r.body["id"].as_str().unwrap())
}

pub fn wait(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app.get(&format!("/api/v1/sync/runs/{id}"));
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.body["status"] != "running" {
            return r.body;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {:?}", r.body);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
fn assert_counts(run: &Value, expected: Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&run[k], v, "{k} in {run:#}");
    }
}

pub fn user(app: &TestApp, user_name: &str) -> Value {
    let list = app.filter(&format!("userName eq \"{user_name}\""));
    assert_eq!(list["totalResults"], 1, "{user_name}: {list}");
    list["Resources"][0].clone()
}

fn inactive_count(app: &TestApp) -> u64 {
    app.filter("active eq false")["totalResults"].as_u64().unwrap()
}

fn source_of(app: &TestApp, id: &str) -> String {
    let pool = provisiond::app::open_database(&app.config).unwrap();
    provisiond::store::users::get(&mut pool.get().unwrap(), id).unwrap().unwrap().source.to_string()
}

#[test]
fn a_full_sync_mirrors_the_directory_and_the_next_one_writes_nothing() {
    let slapd = Slapd::start(&people(0..30));
    let app = spawn(&slapd, |_| {});
    let run = sync(&app, true);
    assert_counts(
        &run,
        json!({"kind": "full", "status": "succeeded", "created": 30, "updated": 0, "unchanged": 0, "deactivated": 0, "errors": []}),
    );
    assert!(run["durationMs"].as_i64().unwrap() >= 0);
    let u = user(&app, "user7");
    assert_eq!(u["name"]["givenName"], "Given7");
    assert_eq!(u["name"]["familyName"], "Family7");
    assert_eq!(u["displayName"], "User 7");
    assert_eq!(u["emails"], json!([{"value": "user7@example.org", "type": "work"}]));
    assert_eq!(u["active"], true);
    assert_eq!(source_of(&app, u["id"].as_str().unwrap()), "ldap");
    let version = u["meta"]["version"].clone();

    app.clock.advance(chrono::Duration::seconds(1)); // the daemon's clock is the test's: move it
    let again = sync(&app, true);
    assert_counts(&again, json!({"status": "succeeded", "created": 0, "updated": 0, "unchanged": 30, "deactivated": 0}));
    assert_eq!(user(&app, "user7")["meta"]["version"], version, "an unchanged entry causes no write");

    let runs = app.get("/api/v1/sync/runs");
    assert_eq!(runs.status, 200);
    assert_eq!(runs.body["totalResults"], 2);
    assert_eq!(runs.body["runs"][0]["id"], again["id"], "newest first");
    assert_eq!(app.get("/api/v1/sync/runs/nope").status, 404);

    let metrics = app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", app.token))]).body;
    let text = metrics.as_str().unwrap();
    assert!(text.contains(r#"provisiond_sync_runs_total{kind="full",status="succeeded"} 2"#), "{text}");
    assert!(text.contains(r#"provisiond_sync_entries_total{outcome="created"} 30"#), "{text}");
    assert!(text.contains(r#"provisiond_users{active="true",source="ldap"} 30"#), "{text}");
}

#[test]
fn incremental_runs_read_changes_renames_and_additions_only() {
    let slapd = Slapd::start(&people(0..20));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let id5 = user(&app, "user5")["id"].clone();

    slapd.modify(&format!("dn: uid=user3,{PEOPLE}\nchangetype: modify\nreplace: givenName\ngivenName: Renamed\n"));
    let run = sync(&app, false);
    // Read: the changed entry, and the newest one, whose time is the high-water mark itself.
    assert_counts(&run, json!({"kind": "incremental", "status": "succeeded", "updated": 1, "created": 0, "unchanged": 1}));
    assert_eq!(user(&app, "user3")["name"]["givenName"], "Renamed");

    // modrdn: a new userName, the same entryUUID, so the same user.
    slapd.modify(&format!("dn: uid=user5,{PEOPLE}\nchangetype: modrdn\nnewrdn: uid=renamed5\ndeleteoldrdn: 1\n"));
    slapd.modify(&format!(
        "dn: uid=user20,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: user20\ncn: User 20\nsn: Family20\n"
    ));
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "created": 1, "updated": 1, "deactivated": 0}));
    assert_eq!(user(&app, "renamed5")["id"], id5);
    assert_eq!(app.filter("userName eq \"user5\"")["totalResults"], 0);
    assert_eq!(user(&app, "user20")["displayName"], "User 20");
}

#[test]
fn a_departed_entry_is_deactivated_by_a_full_run_and_reactivated_when_it_returns() {
    let slapd = Slapd::start(&people(0..20));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let id7 = user(&app, "user7")["id"].clone();
    slapd.modify(&format!("dn: uid=user7,{PEOPLE}\nchangetype: delete\n"));

    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "deactivated": 0}));
    assert_eq!(user(&app, "user7")["active"], true, "incremental runs never deactivate");

    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "deactivated": 1, "unchanged": 19}));
    let gone = user(&app, "user7");
    assert_eq!(gone["active"], false);
    assert_eq!(gone["id"], id7, "deactivated, never deleted");
    assert_eq!(sync(&app, true)["deactivated"], 0, "counted once");

    // Re-created: a new entryUUID, matched to the same user by userName.
    let entry = person(7);
    let entry: String =
        entry.lines().filter(|l| !l.starts_with("entryUUID") && !l.contains("Timestamp: ")).map(|l| format!("{l}\n")).collect();
    slapd.modify(&entry.replacen('\n', "\nchangetype: add\n", 1));
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "reactivated": 1, "created": 0, "deactivated": 0}));
    let back = user(&app, "user7");
    assert_eq!(back["id"], id7);
    assert_eq!(back["active"], true);
}

#[test]
fn an_entry_that_cannot_be_mapped_is_reported_and_its_user_kept() {
    let slapd = Slapd::start(&people(0..20));
    let app = spawn(&slapd, |l| {
        l.attributes.insert("userName".into(), "mail".into());
        l.attributes.insert("displayName".into(), "cn".into());
    });
    sync(&app, true);
    let before = user(&app, "user3@example.org");
    slapd.modify(&format!("dn: uid=user3,{PEOPLE}\nchangetype: modify\ndelete: mail\n"));
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "deactivated": 0, "unchanged": 19}));
    let why = run["errors"][0].as_str().unwrap();
    assert!(why.contains("uid=user3,ou=people") && why.contains("no value for userName"), "{why}");
    let after = user(&app, "user3@example.org");
    assert_eq!(after["active"], true, "the entry is still in the directory");
    assert_eq!(after["meta"]["version"], before["meta"]["version"]);
}

#[test]
fn a_mass_deletion_beyond_the_limit_fails_the_run_and_deactivates_nobody() {
    let slapd = Slapd::start(&people(0..30));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    for i in 0..10 {
        slapd.modify(&format!("dn: uid=user{i},{PEOPLE}\nchangetype: delete\n"));
    }
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "failed", "deactivated": 0}));
    let why = run["errors"][0].as_str().unwrap();
    assert!(why.contains("would deactivate 10 of 30") && why.contains("--allow-mass-deactivation"), "{why}");
    assert_eq!(inactive_count(&app), 0);

    // By hand, the operator may go beyond the limit.
    let cli = Cli::new(&app, &slapd, "");
    let (ok, summary) = cli.sync(&["--full"]);
    assert!(!ok, "a refused run exits non-zero");
    assert_eq!(summary["status"], "failed");
    let (ok, summary) = cli.sync(&["--full", "--allow-mass-deactivation"]);
    assert!(ok, "{summary:#}");
    assert_counts(&summary, json!({"kind": "full", "status": "succeeded", "deactivated": 10, "unchanged": 20}));
    assert_eq!(inactive_count(&app), 10);
}

#[test]
fn slapd_killed_mid_run_fails_the_run_deactivates_nobody_and_the_next_run_succeeds() {
    // The reader runs at most 20,000 entries ahead of the writer's last commit (a batch of 5,000
    // being written, two queued, one being read), so while the first batch or two show as
    // written, the read of 40,000 is still going on, on either backend, however fast it reads.
    let total = 40_000;
    let mut slapd = Slapd::start(&people(0..total));
    let app = spawn(&slapd, |l| l.page_size = 20);
    let r = app.post("/api/v1/sync/runs", &json!({"full": true}));
    assert_eq!(r.status, 202);
    let id = r.body["id"].as_str().unwrap().to_string();
    let second = app.post("/api/v1/sync/runs", &json!({"full": false}));
    assert_eq!(second.status, 409, "runs never overlap: {:?}", second.body);
    assert_eq!(second.body["error"], "sync_running");
    // Kill the server under the run once its first batch is written.
    loop {
        let run = app.get(&format!("/api/v1/sync/runs/{id}")).body;
        assert_eq!(run["status"], "running", "the run ended before its first batch showed: {run:#}");
        if run["created"].as_i64().unwrap() > 0 {
            slapd.kill();
            break;
        }
    }
    let run = wait(&app, &id);
    assert_eq!(run["status"], "failed", "{run:#}");
    let created = run["created"].as_i64().unwrap();
    assert!(created > 0 && created < total as i64, "{run:#}");
    assert_eq!(run["deactivated"], 0);
    assert!(run["errors"][0].as_str().unwrap().contains("search did not complete"), "{run:#}");
    assert_eq!(inactive_count(&app), 0, "a partial read deactivates nobody");

    slapd.restart();
    let run = sync(&app, true);
    assert_counts(
        &run,
        json!({"status": "succeeded", "created": total as i64 - created, "unchanged": created, "deactivated": 0}),
    );
}

#[test]
fn a_refused_bind_is_a_failed_run_that_names_the_cause() {
    let slapd = Slapd::start(&people(0..3));
    let app = spawn(&slapd, |l| l.bind_password = Some(provisiond::config::Secret::new("wrong")));
    assert_eq!(app.get("/readyz").status, 200);
    let run = sync(&app, true);
    assert_eq!(run["status"], "failed");
    let why = run["errors"][0].as_str().unwrap();
    assert!(why.contains("bind as") && why.contains("invalidCredentials") || why.contains("49"), "{why}");
    assert!(!why.contains("wrong"), "the password is never shown: {why}");
    assert_eq!(app.filter("userName pr")["totalResults"], 0);
    assert_eq!(app.get("/readyz").status, 200, "one failed run is not yet a reason");
    app.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(sync(&app, false)["status"], "failed");
    // A load balancer's check of this instance alone still passes.
    assert_eq!(app.get("/readyz?check=database").status, 200);
    let r = app.get("/readyz");
    assert_eq!(r.status, 503, "two failed runs in a row: not ready");
    assert_eq!(r.body["reason"], "the last two LDAP sync runs failed");
}

#[test]
fn a_user_pushed_by_scim_and_found_in_ldap_is_one_user() {
    let slapd = Slapd::start(&people(0..5));
    let app = spawn(&slapd, |_| {});
    let scim = app.create_user(&json!({"userName": "USER4", "title": "Boss", "name": {"givenName": "Wrong"}}));
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "created": 4, "updated": 1}));
    let u = user(&app, "user4");
    assert_eq!(u["id"], scim["id"]);
    assert_eq!(u["name"]["givenName"], "Given4", "mapped attributes are LDAP's");
    assert_eq!(u["title"], "Boss", "the others stay");
    assert_eq!(source_of(&app, u["id"].as_str().unwrap()), "ldap");
    assert_eq!(app.filter("userName pr")["totalResults"], 5);
}

#[test]
fn the_reset_flag_is_applied_once_and_cleared() {
    let slapd = Slapd::start(&people(0..10));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let id = user(&app, "user1")["id"].as_str().unwrap().to_string();
    enrol(&app, &id);
    let other = user(&app, "user2")["id"].as_str().unwrap().to_string();
    enrol(&app, &other);
    assert_eq!(status(&app, &id)["status"], "enrolled");

    slapd.modify(&format!("dn: uid=user1,{PEOPLE}\nchangetype: modify\nadd: {FLAG_ATTRIBUTE}\n{FLAG_ATTRIBUTE}: TRUE\n"));
    // A flag on an entry outside the user filter is reported, never applied.
    slapd.modify(&format!(
        "dn: uid=user2,ou=system,dc=example,dc=org\nchangetype: add\nobjectClass: account\nobjectClass: provisiondUser\nuid: user2\n{FLAG_ATTRIBUTE}: TRUE\n"
    ));
    slapd.modify(&format!(
        "dn: uid=svc,{PEOPLE}\nchangetype: add\nobjectClass: account\nobjectClass: provisiondUser\nuid: svc\n{FLAG_ATTRIBUTE}: TRUE\n"
    ));
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "resetsApplied": 1, "flagsCleared": 1}));
    let errors = run["errors"].to_string();
    assert!(errors.contains("uid=svc,ou=people") && errors.contains("outside ldap.user_filter"), "{errors}");
    assert_eq!(status(&app, &id)["status"], "pending");
    assert_eq!(status(&app, &other)["status"], "enrolled", "nobody else is reset");
    assert!(!slapd.search("(uid=user1)", &[FLAG_ATTRIBUTE]).contains(FLAG_ATTRIBUTE), "the flag was cleared");

    let events = app.get(&format!("/api/v1/audit?userId={id}&type=mfa.reset")).body;
    assert_eq!(events["totalResults"], 1);
    assert_eq!(events["events"][0]["origin"], "directory");
    assert_eq!(events["events"][0]["actor"], run["id"], "the actor is the sync run");

    enrol(&app, &id);
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "resetsApplied": 0}));
    assert_eq!(status(&app, &id)["status"], "enrolled", "applied once");
}

#[test]
fn with_a_read_only_bind_the_flag_is_applied_once_until_it_is_set_anew() {
    let slapd = Slapd::start(&people(0..10));
    let app = spawn(&slapd, |l| {
        l.bind_dn = Some(slapd::READER_DN.into());
        l.bind_password = Some(provisiond::config::Secret::new(slapd::READER_PASSWORD));
    });
    sync(&app, true);
    let id = user(&app, "user2")["id"].as_str().unwrap().to_string();
    enrol(&app, &id);
    let set = format!("dn: uid=user2,{PEOPLE}\nchangetype: modify\nreplace: {FLAG_ATTRIBUTE}\n{FLAG_ATTRIBUTE}: TRUE\n");
    slapd.modify(&set);

    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "resetsApplied": 1, "flagsCleared": 0}));
    assert!(run["errors"][0].as_str().unwrap().contains("could not be cleared"), "{run:#}");
    assert!(slapd.search("(uid=user2)", &[FLAG_ATTRIBUTE]).contains(FLAG_ATTRIBUTE), "the flag is still set");
    assert_eq!(status(&app, &id)["status"], "pending");

    enrol(&app, &id);
    for _ in 0..2 {
        assert_eq!(sync(&app, false)["resetsApplied"], 0);
        assert_eq!(sync(&app, true)["resetsApplied"], 0);
    }
    assert_eq!(status(&app, &id)["status"], "enrolled", "not applied again while the flag stays");

    // Set anew (the admin writes it again): applied again.
    std::thread::sleep(Duration::from_millis(1100));
    slapd.modify(&set);
    assert_eq!(sync(&app, false)["resetsApplied"], 1);
    assert_eq!(status(&app, &id)["status"], "pending");
}

#[test]
fn a_dry_run_lists_what_it_would_do_and_writes_nothing() {
    let slapd = Slapd::start(&people(0..4));
    let app = spawn(&slapd, |_| {});
    let cli = Cli::new(&app, &slapd, "");
    let (ok, summary) = cli.sync(&["--full", "--dry-run"]);
    assert!(ok, "{summary:#}");
    assert_counts(&summary, json!({"dryRun": true, "status": "succeeded", "created": 4}));
    let actions = summary["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 4);
    assert_eq!(actions[0]["action"], "create");
    assert!(actions.iter().any(|a| a["userName"] == "user3" && a["dn"] == format!("uid=user3,{PEOPLE}")));
    assert_eq!(app.filter("userName pr")["totalResults"], 0, "nothing written");
    assert_eq!(app.get("/api/v1/sync/runs").body["totalResults"], 0, "not recorded");
    for key in [
        "id",
        "kind",
        "status",
        "created",
        "updated",
        "unchanged",
        "deactivated",
        "reactivated",
        "resetsApplied",
        "flagsCleared",
        "errors",
        "durationMs",
    ] {
        assert!(summary.get(key).is_some(), "{key} missing from {summary:#}");
    }

    let (ok, summary) = cli.sync(&[]);
    assert!(ok);
    assert_counts(&summary, json!({"kind": "incremental", "created": 4}));
    assert_eq!(user_names(&app.filter("userName sw \"user\"")).len(), 4);
}

#[test]
fn the_scheduler_inside_serve_runs_the_schedules() {
    let slapd = Slapd::start(&people(0..3));
    // Every second (the 6-field form with seconds).
    let app = spawn(&slapd, |l| l.schedule = "* * * * * *".into());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = app.get("/api/v1/sync/runs").body;
        let done: Vec<&Value> = runs["runs"].as_array().unwrap().iter().filter(|r| r["status"] == "succeeded").collect();
        if done.len() >= 2 {
            assert!(done.iter().all(|r| r["startedBy"] == "schedule" && r["kind"] == "incremental"), "{runs:#}");
            break;
        }
        assert!(Instant::now() < deadline, "the schedule did not run: {runs:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(app.filter("userName pr")["totalResults"], 3);
}

#[test]
fn sync_without_ldap_configured_says_so() {
    let app = TestApp::spawn();
    let r = app.post("/api/v1/sync/runs", &json!({"full": true}));
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error"], "not_configured");
}

/// The `provisiond sync` command line against the test's database and directory.
pub struct Cli {
    pub config: std::path::PathBuf,
}

impl Cli {
    pub fn new(app: &TestApp, slapd: &Slapd, extra: &str) -> Self {
        Self::with_url(app, &slapd.url, extra)
    }

    /// The same, reaching the directory at `url` (a [`slapd::Stall`] in front of it).
    pub fn with_url(app: &TestApp, url: &str, extra: &str) -> Self {
        let dir = app.dir.path();
        std::fs::write(dir.join("bind.password"), format!("{}\n", slapd::ADMIN_PASSWORD)).unwrap();
        let config = format!(
            "{}[mfa]\nkey_file = \"{}\"\n[log]\nlevel = \"warn\"\n\
             [ldap]\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\nbase_dn = \"{PEOPLE}\"\n\
             schedule = \"\"\nfull_schedule = \"\"\n{extra}\n\
             [ldap.mfa_reset]\nattribute = \"{FLAG_ATTRIBUTE}\"\nvalue = \"TRUE\"\n",
            app.db.toml(),
            app.config.mfa.key_file.display(),
            url,
            slapd::ADMIN_DN,
            dir.join("bind.password").display(),
        );
        let path = dir.join("sync.toml");
        std::fs::write(&path, config).unwrap();
        Cli { config: path }
    }

    /// Runs `provisiond sync ARGS`; returns whether it exited 0 and the JSON summary.
    pub fn sync(&self, args: &[&str]) -> (bool, Value) {
        let out = Command::new(BIN).arg("--config").arg(&self.config).arg("sync").args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), summary)
    }
}

/// The real daemon (`provisiond serve`) with the command line's configuration, on a free port.
pub struct Serve {
    child: std::process::Child,
    port: u16,
    base: String,
    agent: ureq::Agent,
    auth: String,
}

impl Serve {
    pub fn start(app: &TestApp, cli: &Cli) -> Serve {
        Self::start_until(app, cli, "/readyz")
    }

    /// Starts the daemon and waits until `probe` answers 200 (`/healthz`: up, whether or not it
    /// is ready).
    pub fn start_until(app: &TestApp, cli: &Cli, probe: &str) -> Serve {
        Self::start_on(&cli.config, &app.token, probe)
    }

    /// The daemon on the configuration file `config`, calling with `token`.
    pub fn start_on(config: &std::path::Path, token: &str, probe: &str) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_at(config, token, probe, port)
    }

    /// [`Serve::start_on`] listening on `port` (a restart as systemd makes it: the same address).
    pub fn start_at(config: &std::path::Path, token: &str, probe: &str, port: u16) -> Serve {
        let child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("PROVISIOND_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap();
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let base = format!("http://127.0.0.1:{port}");
        let up = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            agent.get(format!("{base}{probe}")).call().is_ok_and(|r| r.status() == 200)
        });
        assert!(up, "daemon did not answer {probe}");
        Serve { child, port, base, agent, auth: format!("Bearer {token}") }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `method path` with a JSON body and the token: status and JSON answer (Null when none).
    pub fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/scim+json")
            .body(body.to_string())
            .unwrap();
        let mut r = self.agent.run(request).unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
    }

    /// `POST /api/v1/sync/runs`.
    pub fn start_run(&self, full: bool) -> ureq::http::Response<ureq::Body> {
        self.agent
            .post(format!("{}/api/v1/sync/runs", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .send(json!({"full": full}).to_string())
            .unwrap()
    }

    /// `GET path` with the token: status and body text.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut r = self.agent.get(format!("{}{path}", self.base)).header("Authorization", &self.auth).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default())
    }

    /// A counter or gauge of `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0.0)
    }

    /// SIGKILL, as a crash would (no lease released, nothing recorded).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn sigterm_during_a_sync_records_it_failed_deactivates_nobody_and_exits_0() {
    // 40,000 entries: the read is still going on when the first batch shows as written (see
    // slapd_killed_mid_run_…).
    let slapd = Slapd::start(&people(0..40_000));
    // The daemon under test is the real binary; the in-process one only reads the same database.
    let app = spawn(&slapd, |_| {});
    let cli = Cli::new(&app, &slapd, "page_size = 20");
    let mut daemon = Serve::start(&app, &cli);
    let mut r = daemon.start_run(true);
    assert_eq!(r.status(), 202);
    let run: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    // Stop it once the run is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get(&format!("/api/v1/sync/runs/{id}")).body["created"].as_i64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the run did not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    let run = app.get(&format!("/api/v1/sync/runs/{id}")).body;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(run["errors"][0].as_str().unwrap().contains("shutting down"), "{run:#}");
    assert_eq!(run["deactivated"], 0);
    assert_eq!(inactive_count(&app), 0);
    // The lease was released: the next run starts at once.
    assert_eq!(sync(&app, false)["status"], "succeeded");
}

#[test]
fn a_sync_run_logged_at_trace_level_never_shows_the_bind_password() {
    let slapd = Slapd::start(&people(0..5));
    let app = spawn(&slapd, |_| {});
    let cli = Cli::new(&app, &slapd, "");
    slapd.modify(&format!("dn: uid=user1,{PEOPLE}\nchangetype: modify\nadd: {FLAG_ATTRIBUTE}\n{FLAG_ATTRIBUTE}: TRUE\n"));
    let out =
        Command::new(BIN).arg("--config").arg(&cli.config).args(["sync", "--full"]).env("RUST_LOG", "trace").output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("sync_run") && log.contains("sync run finished"), "one span per run: {log}");
    assert!(!log.contains(slapd::ADMIN_PASSWORD), "the bind password reached the log");
}

/// LDIF re-creating user `i`'s entry after a delete: same uid, a new entryUUID.
fn recreate(slapd: &Slapd, i: usize) {
    slapd.modify(&format!("dn: uid=user{i},{PEOPLE}\nchangetype: delete\n"));
    let entry: String = person(i)
        .lines()
        .filter(|l| !l.starts_with("entryUUID") && !l.contains("Timestamp: "))
        .map(|l| format!("{l}\n"))
        .collect();
    slapd.modify(&entry.replacen('\n', "\nchangetype: add\n", 1));
}

/// User `i`'s entry with the MFA reset flag set.
fn flagged(i: usize) -> String {
    person(i).replace("\n\n", &format!("\n{FLAG_ATTRIBUTE}: TRUE\n\n"))
}

/// The uids of the entries whose flag is set.
fn flagged_uids(slapd: &Slapd) -> Vec<String> {
    let found = slapd.search(&format!("({FLAG_ATTRIBUTE}=TRUE)"), &["uid"]);
    found.lines().filter_map(|l| l.strip_prefix("uid: ")).map(str::to_string).collect()
}

fn ids_of(app: &TestApp, range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|i| user(app, &format!("user{i}"))["id"].clone()).collect()
}

fn error_list(run: &Value) -> Vec<String> {
    run["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
}

/// Holds the search that asks the directory about the key of user `i`'s old entry.
fn hold_contested_search(stall: &Stall, i: usize) {
    let key = uuid_of(i);
    stall.hold(move |m| operation(m) == SEARCH_REQUEST && mentions(m, &key));
}

#[test]
fn a_directory_stalled_while_settling_recreated_entries_keeps_mfa_and_scim_answering_and_fails_the_run() {
    let slapd = Slapd::start(&people(0..20));
    let stall = Stall::start(&slapd);
    let app = spawn(&slapd, |l| {
        l.url = stall.url.clone();
        l.timeout = 15;
    });
    assert_eq!(sync(&app, true)["created"], 20);
    let ids = ids_of(&app, 0..10);
    let enrolled = ids[3].as_str().unwrap().to_string();
    let (_, codes) = enrol(&app, &enrolled);
    // Re-created (same uid, new entryUUID): whether the old entries are gone must be asked.
    for i in 0..10 {
        recreate(&slapd, i);
    }
    hold_contested_search(&stall, 0);
    let r = app.post("/api/v1/sync/runs", &json!({"full": false}));
    assert_eq!(r.status, 202);
    let id = r.body["id"].as_str().unwrap().to_string();
    stall.wait_until_holding();

    // The directory is silent; the database answers everyone meanwhile.
    let asked = Instant::now();
    let verified = app.post(&format!("/api/v1/users/{enrolled}/mfa/verify"), &json!({"code": codes[0]}));
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    app.create_user(&json!({"userName": "walk-in@example.org"}));
    assert_eq!(app.filter("userName eq \"user3\"")["totalResults"], 1);
    assert!(stall.holding(), "the directory answered meanwhile: the test proves nothing");
    // Generous: they take milliseconds; waiting for the directory would take its 15 s timeout.
    assert!(asked.elapsed() < Duration::from_secs(8), "requests waited for the directory: {:?}", asked.elapsed());

    let run = wait(&app, &id);
    assert_eq!(run["status"], "failed", "an LDAP timeout fails the run: {run:#}");
    assert!(
        run["errors"][0].as_str().unwrap().contains("cannot ask the directory whether contested entries still exist"),
        "{run:#}"
    );
    assert!(!run["errors"].to_string().contains("same user in two entries"), "no false conflicts: {run:#}");
    assert_eq!(ids_of(&app, 0..10), ids);

    // The directory answers again: the re-created entries are their users.
    stall.release();
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "created": 0, "errors": []}));
    assert_eq!(ids_of(&app, 0..10), ids);
    assert_eq!(status(&app, &enrolled)["status"], "enrolled");
}

#[test]
fn sigterm_while_the_directory_stalls_stops_the_run_at_once_recorded_failed() {
    let slapd = Slapd::start(&people(0..10));
    let stall = Stall::start(&slapd);
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let ids = ids_of(&app, 0..5);
    for i in 0..5 {
        recreate(&slapd, i);
    }
    // An LDAP timeout far longer than the daemon's shutdown_timeout (30 s).
    let cli = Cli::with_url(&app, &stall.url, "timeout = 300");
    let mut daemon = Serve::start(&app, &cli);
    hold_contested_search(&stall, 0);
    let mut r = daemon.start_run(false);
    assert_eq!(r.status(), 202);
    let run: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    stall.wait_until_holding();

    let stopping = Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(stopping.elapsed() < Duration::from_secs(25), "the stop waited for the directory: {:?}", stopping.elapsed());
    let run = app.get(&format!("/api/v1/sync/runs/{id}")).body;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(run["errors"][0].as_str().unwrap().contains("shutting down"), "{run:#}");
    assert!(!run["errors"].to_string().contains("same user in two entries"), "{run:#}");
    assert_eq!(ids_of(&app, 0..5), ids);
}

#[test]
fn a_user_reactivated_by_scim_after_its_entry_is_gone_is_deactivated_again_by_every_full_run() {
    let slapd = Slapd::start(&people(0..20));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let id = user(&app, "user7")["id"].as_str().unwrap().to_string();
    slapd.modify(&format!("dn: uid=user7,{PEOPLE}\nchangetype: delete\n"));
    assert_eq!(sync(&app, true)["deactivated"], 1);
    let reactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": true}]});
    for _ in 0..2 {
        let r = app.call("PATCH", &format!("/scim/v2/Users/{id}"), Some(&reactivate));
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(user(&app, "user7")["active"], true);
        let run = sync(&app, true);
        assert_counts(&run, json!({"status": "succeeded", "deactivated": 1, "errors": []}));
        assert_eq!(user(&app, "user7")["active"], false, "the directory owns active for its users");
    }
    assert_eq!(sync(&app, true)["deactivated"], 0, "only real deactivations are counted");
}

#[test]
fn an_id_that_looks_like_a_uuid_is_text_and_a_new_entry_cannot_take_over_its_user() {
    let hex = |i: usize| format!("6f9619ff8b86d011b42d00c04fc9{i:04x}");
    let ldif: String =
        (0..5).map(|i| person(i).replace(&format!("employeeNumber: {i}\n"), &format!("employeeNumber: {}\n", hex(i)))).collect();
    let slapd = Slapd::start(&ldif);
    let app = spawn(&slapd, |l| l.id_attribute = "employeeNumber".into());
    assert_counts(&sync(&app, true), json!({"status": "succeeded", "created": 5}));
    let owner = user(&app, "user1");
    enrol(&app, owner["id"].as_str().unwrap());
    // Another entry, the same uid in another case.
    slapd.modify(&format!(
        "dn: cn=Impostor,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\ncn: Impostor\nsn: X\nuid: USER1\nemployeeNumber: {}\n",
        hex(99)
    ));
    let run = sync(&app, false);
    assert!(run["errors"].to_string().contains("same user in two entries"), "{run:#}");
    let after = user(&app, "user1");
    assert_eq!(after["id"], owner["id"]);
    assert_eq!(after["displayName"], "User 1", "the impostor's values were not written: {after:#}");
    assert_eq!(status(&app, owner["id"].as_str().unwrap())["status"], "enrolled");
}

#[test]
fn a_sync_killed_while_clearing_flags_shows_its_resets_and_the_next_run_clears_them_without_a_second_reset() {
    let n = 50;
    let slapd = Slapd::start(&(0..n).map(flagged).collect::<String>());
    let stall = Stall::start(&slapd);
    let app = spawn(&slapd, |_| {});
    // The first 10 removals reach the server; then the directory stalls and the process dies.
    let passed = std::sync::atomic::AtomicUsize::new(0);
    stall.hold(move |m| operation(m) == MODIFY_REQUEST && passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 10);
    // Lease: max(4 × 60 s, 300 s), which the test's clock passes below.
    let cli = Cli::with_url(&app, &stall.url, "timeout = 60");
    let mut process = Command::new(BIN)
        .arg("--config")
        .arg(&cli.config)
        .args(["sync", "--full"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    stall.wait_until_holding();
    let deadline = Instant::now() + Duration::from_secs(20);
    while flagged_uids(&slapd).len() != n - 10 {
        assert!(Instant::now() < deadline, "the first removals were not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    process.kill().unwrap();
    process.wait().unwrap();
    let killed = app.get("/api/v1/sync/runs").body["runs"][0].clone();
    assert_counts(&killed, json!({"status": "running", "resetsApplied": n, "created": n}));

    let left = flagged_uids(&slapd);
    let id = user(&app, &left[0])["id"].as_str().unwrap().to_string();
    enrol(&app, &id);
    // The dead process's lease runs out; the next run finds its run abandoned.
    app.clock.advance(chrono::Duration::seconds(600));
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "resetsApplied": 0, "flagsCleared": n - 10, "errors": []}));
    assert_eq!(flagged_uids(&slapd), Vec::<String>::new());
    assert_eq!(status(&app, &id)["status"], "enrolled", "no second reset");
    let killed = app.get(&format!("/api/v1/sync/runs/{}", killed["id"].as_str().unwrap())).body;
    assert_counts(&killed, json!({"status": "failed", "resetsApplied": n}));

    // A later change of the entry is no new setting of the (cleared) flag.
    slapd.modify(&format!("dn: uid={},{PEOPLE}\nchangetype: modify\nreplace: givenName\ngivenName: Changed\n", left[0]));
    assert_counts(&sync(&app, false), json!({"status": "succeeded", "updated": 1, "resetsApplied": 0}));
    assert_eq!(status(&app, &id)["status"], "enrolled");
    assert_eq!(app.get(&format!("/api/v1/audit?userId={id}&type=mfa.reset")).body["totalResults"], 1);
}

#[test]
fn a_stalled_directory_bounds_flag_clearing_fails_the_run_and_lists_the_flags_left() {
    let slapd = Slapd::start(&(0..20).map(flagged).collect::<String>());
    let stall = Stall::start(&slapd);
    let app = spawn(&slapd, |l| {
        l.url = stall.url.clone();
        l.timeout = 2;
    });
    let passed = std::sync::atomic::AtomicUsize::new(0);
    stall.hold(move |m| operation(m) == MODIFY_REQUEST && passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 5);
    let started = Instant::now();
    let run = sync(&app, true);
    // One bound for the whole clearing (3 × ldap.timeout), not a timeout per flag (15 × 2 s).
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}: {run:#}", started.elapsed());
    assert_counts(&run, json!({"status": "failed", "created": 20, "resetsApplied": 20, "flagsCleared": 5, "deactivated": 0}));
    let errors = error_list(&run);
    assert!(errors[0].contains("15 of 20 flags not confirmed cleared"), "{errors:#?}");
    assert_eq!(errors.iter().filter(|e| e.contains("clearing the flag was not confirmed")).count(), 15, "{errors:#?}");
    assert_eq!(flagged_uids(&slapd).len(), 15);

    // The held removals never reach the server; the next run clears the flags, resetting nobody again.
    stall.stop_holding();
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "resetsApplied": 0, "flagsCleared": 15, "errors": []}));
    assert_eq!(flagged_uids(&slapd), Vec::<String>::new());
    assert_eq!(app.get("/api/v1/audit?type=mfa.reset").body["totalResults"], 20);
}

#[test]
fn two_uids_swapped_in_the_directory_settle_in_one_run() {
    let slapd = Slapd::start(&people(0..5));
    let app = spawn(&slapd, |_| {});
    sync(&app, true);
    let (one, two) = (user(&app, "user1")["id"].clone(), user(&app, "user2")["id"].clone());
    let three = user(&app, "user3")["id"].clone();
    for (from, to) in [("user1", "tmp"), ("user2", "user1"), ("tmp", "user2"), ("user3", "user3b")] {
        slapd.modify(&format!("dn: uid={from},{PEOPLE}\nchangetype: modrdn\nnewrdn: uid={to}\ndeleteoldrdn: 1\n"));
    }
    // A new person gets the name user3 gave up, in the same run.
    slapd.modify(&format!("dn: uid=user3,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: user3\ncn: New 3\nsn: N\n"));
    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "updated": 3, "created": 1, "errors": []}));
    assert_eq!(user(&app, "user3b")["id"], three);
    assert_eq!(user(&app, "user3")["displayName"], "New 3");
    // Each user follows its entry (its entryUUID), now under the other uid.
    let now_two = user(&app, "user2");
    assert_eq!(now_two["id"], one);
    assert_eq!(now_two["name"]["givenName"], "Given1");
    assert_eq!(user(&app, "user1")["id"], two);
    assert_eq!(app.filter("userName sw \"~\"")["totalResults"], 0);
    app.clock.advance(chrono::Duration::seconds(1));
    assert_counts(&sync(&app, true), json!({"status": "succeeded", "updated": 0, "errors": []}));
}

#[test]
fn an_entry_that_keeps_failing_is_reported_every_run_but_stops_holding_the_incremental_mark_back() {
    let slapd = Slapd::start(&people(0..20));
    let app = spawn(&slapd, |l| l.overlap = 0);
    sync(&app, true);
    // A second live entry for user3: it fails for good.
    slapd.modify(&format!("dn: cn=Twin,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\ncn: Twin\nsn: T\nuid: user3\n"));
    let modify = |i: usize, value: &str| {
        slapd.modify(&format!("dn: uid=user{i},{PEOPLE}\nchangetype: modify\nreplace: givenName\ngivenName: {value}\n"))
    };
    std::thread::sleep(Duration::from_millis(1100));
    for i in 10..20 {
        modify(i, "Later");
    }
    let read =
        |run: &Value| run["created"].as_i64().unwrap() + run["updated"].as_i64().unwrap() + run["unchanged"].as_i64().unwrap();
    let twin = |run: &Value| {
        error_list(run).into_iter().find(|e| e.contains("cn=Twin")).unwrap_or_else(|| panic!("not reported: {run:#}"))
    };
    // The mark never passes the daemon's clock: keep it at the directory's time.
    let sync = |app: &TestApp| {
        app.clock.set(chrono::Utc::now());
        sync(app, false)
    };
    for _ in 0..2 {
        let run = sync(&app);
        assert_eq!(run["status"], "succeeded");
        assert!(twin(&run).contains("same user in two entries") && !twin(&run).contains("quarantined"), "{run:#}");
        assert!(read(&run) >= 10, "the mark waits at the failing entry: {run:#}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    modify(0, "Latest");
    let run = sync(&app);
    assert!(twin(&run).contains("quarantined"), "{run:#}");
    // The mark has passed it: only what changed since is read (and the failing entry again).
    let run = sync(&app);
    assert_eq!(read(&run), 1, "{run:#}");
    assert!(twin(&run).contains("quarantined"), "still reported: {run:#}");
    assert_eq!(user(&app, "user3")["displayName"], "User 3");
}

#[test]
fn a_flag_attribute_that_is_no_attribute_name_is_refused_and_one_missing_from_the_schema_is_reported_once() {
    let slapd = Slapd::start(&people(0..3));
    let app = spawn(&slapd, |l| l.mfa_reset.as_mut().unwrap().attribute = "mfaResetRequestd".into());
    let cli = Cli::new(&app, &slapd, "");
    let text = std::fs::read_to_string(&cli.config).unwrap();
    std::fs::write(
        &cli.config,
        text.replace(&format!("attribute = \"{FLAG_ATTRIBUTE}\""), "attribute = \"mfaResetRequested)(uid=*\""),
    )
    .unwrap();
    let out = Command::new(BIN).arg("--config").arg(&cli.config).arg("check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("ldap.mfa_reset.attribute") && stderr.contains("not an LDAP attribute name"), "{stderr}");

    let run = sync(&app, true);
    assert_eq!(run["status"], "succeeded");
    let errors = error_list(&run);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("\"mfaResetRequestd\"") && errors[0].contains("not an attribute type of the directory's schema"),
        "{errors:#?}"
    );
    app.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(sync(&app, true)["errors"], json!([]), "warned once");
}

#[test]
fn several_mail_values_become_several_work_emails_and_dropped_values_are_reported_once_per_attribute() {
    // A JPEG's first bytes: not UTF-8.
    let photo = "/9j/4AAQSkZJRgABAQ==";
    let ldif: String = (0..3)
        .map(|i| {
            person(i)
                .replace("\nmail: ", &format!("\nmail: second{i}@example.org\nmail: "))
                .replace(&format!("\ncn: User {i}\n"), &format!("\ncn: User {i}\ncn: Other {i}\njpegPhoto:: {photo}\n"))
        })
        .collect();
    let slapd = Slapd::start(&ldif);
    let app = spawn(&slapd, |l| {
        l.attributes = l.mapping().into_iter().collect();
        l.attributes.insert("photos[type eq \"photo\"].value".into(), "jpegPhoto".into());
    });
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "created": 3}));
    let u = user(&app, "user1");
    assert_eq!(
        u["emails"],
        json!([{"value": "second1@example.org", "type": "work"}, {"value": "user1@example.org", "type": "work"}])
    );
    assert_eq!(u["displayName"], "User 1");
    assert!(u.get("photos").is_none(), "{u:#}");
    let errors = error_list(&run);
    assert_eq!(errors.len(), 2, "once per attribute, not per entry: {errors:#?}");
    assert!(errors.iter().any(|e| e.contains("jpegPhoto") && e.contains("binary")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("\"displayName\"") && e.contains("several values")), "{errors:#?}");
    // A value removed in the directory leaves one work email.
    slapd.modify(&format!("dn: uid=user1,{PEOPLE}\nchangetype: modify\ndelete: mail\nmail: second1@example.org\n"));
    app.clock.set(chrono::Utc::now());
    sync(&app, false);
    assert_eq!(user(&app, "user1")["emails"], json!([{"value": "user1@example.org", "type": "work"}]));
}
