//! What the load benchmarks share: arguments, the daemon child process, timed scenarios run by
//! keep-alive client threads, and CPU accounting from /proc.

#![allow(dead_code)] // each benchmark uses a part of it

#[path = "../../tests/api/postgres.rs"]
pub mod postgres;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use provisiond::app;
use provisiond::clock::SystemClock;
use provisiond::config::Config;
use provisiond::domain::audit::{Actor, Origin};
use provisiond::domain::tokens::{Scope, Tokens};
use provisiond::domain::Services;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const DEPARTMENTS: [&str; 6] = ["Sales", "Engineering", "Support", "Finance", "Legal", "Operations"];
/// SQLite serialises the writes, so a second thread only overlaps the JSON and index work of
/// one user with the commit of another.
pub const PRELOAD_THREADS: usize = 2;

/// One answer in this many (per thread) has its body checked, so that parsing does not take
/// much client CPU from the server it shares the cores with.
const CHECK_EVERY: usize = 50;

pub struct Args {
    pub users: usize,
    pub seconds: u64,
    pub concurrency: usize,
    /// `sqlite` (default) or `postgres` (a server the benchmark starts, see `Setup`).
    pub backend: String,
    /// Daemons serving the same database; the client threads are spread over them.
    pub instances: usize,
}

pub fn parse_args(default_users: usize) -> Args {
    let mut args = Args { users: default_users, seconds: 10, concurrency: 8, backend: "sqlite".into(), instances: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => args.users = number(&mut it, "--users"),
            "--seconds" => args.seconds = number(&mut it, "--seconds"),
            "--concurrency" => args.concurrency = number(&mut it, "--concurrency"),
            "--instances" => args.instances = number(&mut it, "--instances"),
            "--backend" => args.backend = it.next().unwrap_or_default(),
            // `cargo bench` passes --bench to every harness = false target.
            "--bench" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.users < 200 || args.seconds == 0 || args.concurrency == 0 || args.instances == 0 {
        usage("--users must be at least 200, --seconds, --concurrency and --instances at least 1");
    }
    if !["sqlite", "postgres"].contains(&args.backend.as_str()) {
        usage("--backend is sqlite or postgres");
    }
    args
}

fn number<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>, name: &str) -> T {
    it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(&format!("{name} needs a number")))
}

fn usage(problem: &str) -> ! {
    let bench = std::env::args().next().unwrap_or_default();
    eprintln!("{bench}: {problem}\nusage: cargo bench --bench NAME -- [--users N] [--seconds S] [--concurrency C] [--backend sqlite|postgres] [--instances I]");
    std::process::exit(2)
}

/// The daemon child process; killed when dropped, so a panicking run does not leave it behind.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Starts `provisiond serve` listening at `base` and waits until it is ready.
    pub fn start(config_file: &Path, base: &str, agent: &ureq::Agent) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_provisiond"))
            .arg("--config")
            .arg(config_file)
            .arg("serve")
            .env("PROVISIOND_SERVER__LISTEN", base.trim_start_matches("http://"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start the daemon");
        let mut daemon = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = daemon.0.try_wait().expect("daemon status") {
                panic!("the daemon exited during startup: {status}");
            }
            if let Ok(r) = agent.get(format!("{base}/readyz")).call() {
                if r.status() == 200 {
                    return daemon;
                }
            }
            assert!(Instant::now() < deadline, "the daemon was not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (VmHWM, VmRSS) in MB, from /proc.
    pub fn memory_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
    }
}

/// One request to make, and what a checked answer must show.
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
    pub want: String,
}

pub struct Scenario<'a> {
    pub name: &'static str,
    pub expect: u16,
    pub make: Box<dyn Fn(&mut SmallRng) -> Call + Sync + 'a>,
    /// Whether a sampled answer body is right, given `Call::want` (a body that is not JSON comes
    /// as a `Value::String`).
    pub check: fn(&Value, &str) -> bool,
    /// The aim for this scenario, if it has one, and whether an outcome meets it.
    pub aim: Option<Aim>,
}

/// The aim for a scenario, and whether an outcome meets it.
pub type Aim = (&'static str, fn(&Outcome) -> bool);

pub struct Outcome {
    pub name: &'static str,
    pub ok: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Microseconds of every request (errors included), sorted.
    pub latencies: Vec<u32>,
    /// CPU seconds the daemon and this client process used during the scenario: on a shared
    /// 2-core machine they compete, so this shows where the time went.
    pub daemon_cpu: f64,
    pub client_cpu: f64,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    pub fn ms(&self, per_mille: usize) -> f64 {
        let v = &self.latencies;
        if v.is_empty() {
            return f64::NAN;
        }
        v[(v.len() * per_mille / 1000).min(v.len() - 1)] as f64 / 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        self.latencies.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    }
    /// Daemon CPU milliseconds per request.
    pub fn daemon_ms(&self) -> f64 {
        self.daemon_cpu * 1000.0 / self.latencies.len().max(1) as f64
    }
    /// Cores busy on average: (daemon, client).
    pub fn cores(&self) -> (f64, f64) {
        let wall = self.elapsed.as_secs_f64();
        (self.daemon_cpu / wall, self.client_cpu / wall)
    }
}

/// CPU seconds (user + system, all threads) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces), utime and stime are the 12th and 13th
    // fields, in clock ticks: USER_HZ is 100 on Linux.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i| rest.split_whitespace().nth(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (field(11) + field(12)) / 100.0
}

/// `auth` is the `Authorization` header's value, or `Cookie: NAME=VALUE` to send a cookie
/// instead (the console's session).
pub fn send(agent: &ureq::Agent, base: &str, auth: &str, call: &Call) -> Result<(u16, String), ureq::Error> {
    let (header, value) = auth.strip_prefix("Cookie: ").map_or(("Authorization", auth), |cookie| ("Cookie", cookie));
    let req = ureq::http::Request::builder().method(call.method).uri(format!("{base}{}", call.path)).header(header, value);
    let mut resp = match &call.body {
        Some(b) => agent.run(req.header("Content-Type", "application/scim+json").body(b.as_str()).expect("request"))?,
        None => agent.run(req.body(()).expect("request"))?,
    };
    // The body is always read to the end: the connection is only reused after that.
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text)?;
    Ok((resp.status().as_u16(), text))
}

/// Runs one scenario; client thread `t` talks to `bases[t % bases.len()]`.
pub fn run(s: &Scenario, bases: &[String], auth: &str, args: &Args, daemon_pids: &[u32]) -> Outcome {
    let reported = AtomicBool::new(false);
    let report = |what: String| {
        if !reported.swap(true, Ordering::Relaxed) {
            eprintln!("  {}: first error: {what}", s.name);
        }
    };
    let daemons_cpu = || daemon_pids.iter().map(|p| cpu_seconds(&p.to_string())).sum::<f64>();
    let cpu_before = (daemons_cpu(), cpu_seconds("self"));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let per_thread: Vec<(usize, usize, Vec<u32>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.concurrency)
            .map(|t| {
                let (report, base) = (&report, bases[t % bases.len()].as_str());
                scope.spawn(move || {
                    // One agent per thread: its own keep-alive connection, like one client each.
                    let agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(60)))
                        .build()
                        .new_agent();
                    let mut rng = SmallRng::seed_from_u64(t as u64 * 7919 + 1);
                    let (mut ok, mut errors, mut lat) = (0, 0, Vec::new());
                    while Instant::now() < deadline {
                        let call = (s.make)(&mut rng);
                        let t0 = Instant::now();
                        let result = send(&agent, base, auth, &call);
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        match result {
                            Ok((status, body)) if status == s.expect => {
                                if ok % CHECK_EVERY == 0 {
                                    // An answer that is not JSON (a console page) is checked as text.
                                    let doc = serde_json::from_str(&body).unwrap_or_else(|_| Value::String(body.clone()));
                                    if !(s.check)(&doc, &call.want) {
                                        errors += 1;
                                        report(format!("{} {} answered {status} but {body}", call.method, call.path));
                                        continue;
                                    }
                                }
                                ok += 1;
                            }
                            Ok((status, body)) => {
                                errors += 1;
                                report(format!("{} {} answered {status}: {body}", call.method, call.path));
                            }
                            Err(e) => {
                                errors += 1;
                                report(format!("{} {} failed: {e}", call.method, call.path));
                            }
                        }
                    }
                    (ok, errors, lat)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("client thread")).collect()
    });
    let elapsed = started.elapsed();
    let mut out = Outcome {
        name: s.name,
        ok: 0,
        errors: 0,
        elapsed,
        latencies: Vec::new(),
        daemon_cpu: daemons_cpu() - cpu_before.0,
        client_cpu: cpu_seconds("self") - cpu_before.1,
    };
    for (ok, errors, lat) in per_thread {
        out.ok += ok;
        out.errors += errors;
        out.latencies.extend(lat);
    }
    out.latencies.sort_unstable();
    out
}

pub fn free_port() -> u16 {
    // Bound and released at once: the daemon binds it a moment later.
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// A realistic user: the attributes an identity provider typically sends.
pub fn user_json(i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": format!("user{i}@example.com"),
        "externalId": format!("ext-{i:08}"),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{}", i % 997)},
        "displayName": format!("Given{i} Family{}", i % 997),
        "emails": [
            {"value": format!("user{i}@example.com"), "type": "work", "primary": true},
            {"value": format!("user{i}@home.example.net"), "type": "home"}
        ],
        "active": i % 20 != 0,
        ENTERPRISE: {"employeeNumber": format!("{i:08}"), "department": DEPARTMENTS[i % DEPARTMENTS.len()]}
    })
}

/// Creates users 0..n through the domain layer (the same path as SCIM POST, minus HTTP) and a
/// token; returns the users' ids, the token and the time the users took.
pub fn preload(config: &Config, n: usize, scopes: &[Scope]) -> (Vec<String>, String, Duration) {
    let pool = app::open_database(config).expect("database");
    let sealer = Arc::new(app::load_sealer(config).expect("mfa key"));
    let users = Services::new(pool.clone(), sealer, config, Arc::new(SystemClock)).users;
    let actor = Actor::new(Origin::Scim, "bench-preload", None);
    let started = Instant::now();
    let ids = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PRELOAD_THREADS)
            .map(|t| {
                let (users, actor) = (&users, &actor);
                s.spawn(move || {
                    let mut ids = Vec::with_capacity(n / PRELOAD_THREADS + 1);
                    for i in (t..n).step_by(PRELOAD_THREADS) {
                        ids.push(
                            users
                                .create(&user_json(i), provisiond::domain::users::Source::Scim, actor)
                                .expect("preload create")
                                .id,
                        );
                        if t == 0 && i > 0 && i % (n / 10).max(1) < PRELOAD_THREADS {
                            eprintln!("  preloaded {i} users ({:.1} s)", started.elapsed().as_secs_f64());
                        }
                    }
                    ids
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("preload thread")).collect::<Vec<_>>()
    });
    let took = started.elapsed();
    let token = Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock))
        .create("bench", scopes)
        .expect("token")
        .expose()
        .to_string();
    (ids, token, took)
}

/// A temporary directory with a configuration on a free loopback port (SQLite database and MFA
/// key inside it, log level warn), written to `provisiond.toml` there.
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// One port per instance.
    pub ports: Vec<u16>,
    pub config_file: std::path::PathBuf,
    pub config: Config,
    /// The PostgreSQL server of a `--backend postgres` run (stopped when dropped).
    pub postgres: Option<postgres::PgServer>,
}

impl Setup {
    pub fn new(args: &Args) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..args.instances).map(|_| free_port()).collect();
        let config_file = dir.path().join("provisiond.toml");
        let (database, postgres) = database_section(dir.path(), &args.backend);
        // `{:?}` quotes the paths: for ordinary paths Rust's escapes are TOML's. The preload reads
        // the same file back, so it writes exactly the database the daemon then serves.
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n\n{database}\n[mfa]\nkey_file = {:?}\n\n[log]\nlevel = \"warn\"\n",
            ports[0],
            dir.path().join("mfa.key").display().to_string(),
        );
        std::fs::write(&config_file, toml).expect("write the configuration");
        let config = Config::load(&config_file).expect("configuration");
        Setup { dir, ports, config_file, config, postgres }
    }

    /// The first instance's base URL.
    pub fn base(&self) -> String {
        self.bases().swap_remove(0)
    }

    pub fn bases(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect()
    }

    /// Starts every instance.
    pub fn start_daemons(&self, agent: &ureq::Agent) -> Vec<Daemon> {
        self.bases().iter().map(|base| Daemon::start(&self.config_file, base, agent)).collect()
    }
}

/// The `[database]` section for `backend`: a SQLite file in `dir`, or a PostgreSQL server
/// started here (set up as for production: see `PgServer::start_for_benchmark`).
pub fn database_section(dir: &Path, backend: &str) -> (String, Option<postgres::PgServer>) {
    match backend {
        "postgres" => {
            let server = postgres::PgServer::start_for_benchmark();
            let password_file = dir.join("pg-password");
            std::fs::write(&password_file, postgres::PASSWORD).expect("write the password file");
            let section =
                format!("[database]\nurl = {:?}\npassword_file = {:?}\n", server.url(), password_file.display().to_string());
            (section, Some(server))
        }
        _ => (format!("[database]\nurl = {:?}\n", format!("sqlite://{}", dir.join("provisiond.db").display())), None),
    }
}

/// Prints the markdown table of a benchmark's outcomes.
pub fn print_table(outcomes: &[Outcome], scenarios: &[Scenario]) {
    println!("| scenario | req/s | p50 ms | p99 ms | max ms | errors | daemon CPU ms/req | cores daemon / client | aim |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (o, s) in outcomes.iter().zip(scenarios) {
        let aim = s.aim.map_or(String::new(), |(text, met)| format!("{text}: {}", if met(o) { "met" } else { "NOT met" }));
        let (d, c) = o.cores();
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {d:.2} / {c:.2} | {aim} |",
            o.name,
            o.rate(),
            o.ms(500),
            o.ms(990),
            o.max_ms(),
            o.errors,
            o.daemon_ms()
        );
    }
}

/// Runs the scenarios one after the other, printing a line for each.
pub fn run_all(scenarios: &[Scenario], bases: &[String], auth: &str, args: &Args, daemons: &[Daemon]) -> Vec<Outcome> {
    let pids: Vec<u32> = daemons.iter().map(|d| d.0.id()).collect();
    scenarios
        .iter()
        .map(|s| {
            let o = run(s, bases, auth, args, &pids);
            let (d, c) = o.cores();
            println!(
                "{:<26} {:>6.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  errors {}  daemon {:.2} ms CPU/req  cores daemon {d:.2} client {c:.2}",
                o.name, o.rate(), o.ms(500), o.ms(990), o.max_ms(), o.errors, o.daemon_ms()
            );
            o
        })
        .collect()
}
