//! SCIM load benchmark: preloads N users through the library, starts the real daemon as a
//! child process and drives it with C keep-alive client threads, one scenario at a time.
//!
//! `cargo bench --bench scim_load [-- --users 100000 --seconds 10 --concurrency 8]`
//! (see benches/README.md).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisiond::app;
use provisiond::clock::SystemClock;
use provisiond::config::Config;
use provisiond::domain::audit::{Actor, Origin};
use provisiond::domain::tokens::{Scope, Tokens};
use provisiond::domain::users::Users;
use provisiond::mfa::Mfa;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const DEPARTMENTS: [&str; 6] = ["Sales", "Engineering", "Support", "Finance", "Legal", "Operations"];
/// SQLite serialises the writes, so a second thread only overlaps the JSON and index work of
/// one user with the commit of another (measured: about the same rate as one thread).
const PRELOAD_THREADS: usize = 2;
/// One answer in this many (per thread) has its body checked, so that parsing does not take
/// much client CPU from the server it shares the cores with.
const CHECK_EVERY: usize = 50;

struct Args {
    users: usize,
    seconds: u64,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args { users: 100_000, seconds: 10, concurrency: 8 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => args.users = number(&mut it, "--users"),
            "--seconds" => args.seconds = number(&mut it, "--seconds"),
            "--concurrency" => args.concurrency = number(&mut it, "--concurrency"),
            // `cargo bench` passes --bench to every harness = false target.
            "--bench" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.users < 200 || args.seconds == 0 || args.concurrency == 0 {
        usage("--users must be at least 200, --seconds and --concurrency at least 1");
    }
    args
}

fn number<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>, name: &str) -> T {
    it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(&format!("{name} needs a number")))
}

fn usage(problem: &str) -> ! {
    eprintln!("scim_load: {problem}\nusage: cargo bench --bench scim_load -- [--users N] [--seconds S] [--concurrency C]");
    std::process::exit(2)
}

/// A realistic user: the attributes an identity provider typically sends.
fn user_json(i: usize) -> Value {
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
fn preload(config: &Config, n: usize) -> (Vec<String>, String, Duration) {
    let pool = app::open_database(config).expect("database");
    let sealer = Arc::new(app::load_sealer(config).expect("mfa key"));
    let mfa = Mfa::new(pool.clone(), sealer, &config.mfa, Arc::new(SystemClock));
    let users = Users::new(pool.clone(), mfa);
    let actor = Actor::new(Origin::Scim, "bench-preload", None);
    let started = Instant::now();
    let ids = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PRELOAD_THREADS)
            .map(|t| {
                let (users, actor) = (&users, &actor);
                s.spawn(move || {
                    let mut ids = Vec::with_capacity(n / PRELOAD_THREADS + 1);
                    for i in (t..n).step_by(PRELOAD_THREADS) {
                        ids.push(users.create(&user_json(i), "scim", actor).expect("preload create").id);
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
    let token = Tokens::new(pool).create("bench", &[Scope::Scim]).expect("token").expose().to_string();
    (ids, token, took)
}

/// The daemon child process; killed when dropped, so a panicking run does not leave it behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(config_file: &Path, base: &str, agent: &ureq::Agent) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_provisiond"))
            .arg("--config")
            .arg(config_file)
            .arg("serve")
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
    fn memory_mb(&self) -> (f64, f64) {
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
struct Call {
    method: &'static str,
    path: String,
    body: Option<String>,
    want: String,
}

struct Scenario<'a> {
    name: &'static str,
    expect: u16,
    make: Box<dyn Fn(&mut SmallRng) -> Call + Sync + 'a>,
    /// Whether a sampled answer body is right, given `Call::want`.
    check: fn(&Value, &str) -> bool,
    /// The aim for this scenario, if it has one, and whether an outcome meets it.
    aim: Option<(&'static str, fn(&Outcome) -> bool)>,
}

struct Outcome {
    name: &'static str,
    ok: usize,
    errors: usize,
    elapsed: Duration,
    /// Microseconds of every request (errors included), sorted.
    latencies: Vec<u32>,
    /// CPU seconds the daemon and this client process used during the scenario: on a shared
    /// 2-core machine they compete, so this shows where the time went.
    daemon_cpu: f64,
    client_cpu: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, per_mille: usize) -> f64 {
        let v = &self.latencies;
        if v.is_empty() {
            return f64::NAN;
        }
        v[(v.len() * per_mille / 1000).min(v.len() - 1)] as f64 / 1000.0
    }
    fn max_ms(&self) -> f64 {
        self.latencies.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    }
    /// Daemon CPU milliseconds per request.
    fn daemon_ms(&self) -> f64 {
        self.daemon_cpu * 1000.0 / self.latencies.len().max(1) as f64
    }
    /// Cores busy on average: (daemon, client).
    fn cores(&self) -> (f64, f64) {
        let wall = self.elapsed.as_secs_f64();
        (self.daemon_cpu / wall, self.client_cpu / wall)
    }
}

/// CPU seconds (user + system, all threads) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces), utime and stime are the 12th and 13th
    // fields, in clock ticks: USER_HZ is 100 on Linux.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i| rest.split_whitespace().nth(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (field(11) + field(12)) / 100.0
}

fn send(agent: &ureq::Agent, base: &str, auth: &str, call: &Call) -> Result<(u16, String), ureq::Error> {
    let req = ureq::http::Request::builder()
        .method(call.method)
        .uri(format!("{base}{}", call.path))
        .header("Authorization", auth);
    let mut resp = match &call.body {
        Some(b) => agent.run(req.header("Content-Type", "application/scim+json").body(b.as_str()).expect("request"))?,
        None => agent.run(req.body(()).expect("request"))?,
    };
    // The body is always read to the end: the connection is only reused after that.
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text)?;
    Ok((resp.status().as_u16(), text))
}

fn run(s: &Scenario, base: &str, auth: &str, args: &Args, daemon_pid: u32) -> Outcome {
    let reported = AtomicBool::new(false);
    let report = |what: String| {
        if !reported.swap(true, Ordering::Relaxed) {
            eprintln!("  {}: first error: {what}", s.name);
        }
    };
    let daemon_pid = daemon_pid.to_string();
    let cpu_before = (cpu_seconds(&daemon_pid), cpu_seconds("self"));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let per_thread: Vec<(usize, usize, Vec<u32>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.concurrency)
            .map(|t| {
                let report = &report;
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
                                    let doc = serde_json::from_str(&body).unwrap_or(Value::Null);
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
        daemon_cpu: cpu_seconds(&daemon_pid) - cpu_before.0,
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

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    // Bound and released at once: the daemon binds it a moment later.
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

fn main() {
    let args = parse_args();
    let n = args.users;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config_file = dir.path().join("provisiond.toml");
    // `{:?}` quotes the paths: for ordinary paths Rust's escapes are TOML's. The preload reads
    // the same file back, so it writes exactly the database the daemon then serves.
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = {:?}\n\n[mfa]\nkey_file = {:?}\n\n[log]\nlevel = \"warn\"\n",
        format!("sqlite://{}", dir.path().join("provisiond.db").display()),
        dir.path().join("mfa.key").display().to_string(),
    );
    std::fs::write(&config_file, toml).expect("write the configuration");
    let config = Config::load(&config_file).expect("configuration");

    println!("scim_load: {n} users, {} s per scenario, {} client threads", args.seconds, args.concurrency);
    let (ids, token, took) = preload(&config, n);
    let preload_rate = n as f64 / took.as_secs_f64();
    println!("preload: {n} users in {:.1} s ({preload_rate:.0} users/s, {PRELOAD_THREADS} threads, in-process)", took.as_secs_f64());

    let base = format!("http://127.0.0.1:{port}");
    let auth = format!("Bearer {token}");
    let probe = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let started = Instant::now();
    let daemon = Daemon::start(&config_file, &base, &probe);
    let (_, idle_rss) = daemon.memory_mb();
    println!("daemon: ready in {:.2} s, pid {}, RSS {idle_rss:.1} MB", started.elapsed().as_secs_f64(), daemon.0.id());

    let pick = |rng: &mut SmallRng| &ids[rng.random_range(0..ids.len())];
    let created = AtomicUsize::new(n);
    let scenarios = [
        Scenario {
            name: "filter userName eq",
            expect: 200,
            make: Box::new(|rng| {
                let name = format!("user{}@example.com", rng.random_range(0..n));
                let filter = encode(&format!("userName eq \"{name}\""));
                Call { method: "GET", path: format!("/scim/v2/Users?filter={filter}"), body: None, want: name }
            }),
            check: |doc, want| doc["totalResults"] == 1 && doc["Resources"][0]["userName"] == want,
            aim: Some(("≥ 5,000 req/s and p99 < 20 ms", |o| o.rate() >= 5000.0 && o.ms(990) < 20.0 && o.errors == 0)),
        },
        Scenario {
            name: "GET /Users/{id}",
            expect: 200,
            make: Box::new(|rng| {
                let id = pick(rng).clone();
                Call { method: "GET", path: format!("/scim/v2/Users/{id}"), body: None, want: id }
            }),
            check: |doc, want| doc["id"] == want,
            aim: None,
        },
        Scenario {
            name: "page of 100 (startIndex)",
            expect: 200,
            make: Box::new(|rng| {
                let start = rng.random_range(1..=n - 100);
                let path = format!("/scim/v2/Users?startIndex={start}&count=100");
                Call { method: "GET", path, body: None, want: String::new() }
            }),
            check: |doc, _| doc["Resources"].as_array().is_some_and(|r| r.len() == 100),
            aim: None,
        },
        Scenario {
            name: "PATCH replace displayName",
            expect: 200,
            make: Box::new(|rng| {
                let value = format!("x{}", rng.random::<u32>());
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "displayName", "value": value}]
                });
                let path = format!("/scim/v2/Users/{}", pick(rng));
                Call { method: "PATCH", path, body: Some(body.to_string()), want: value }
            }),
            check: |doc, want| doc["displayName"] == want,
            aim: None,
        },
        Scenario {
            name: "POST /Users (create)",
            expect: 201,
            make: Box::new(|_| {
                let user = user_json(created.fetch_add(1, Ordering::Relaxed));
                let want = user["userName"].as_str().unwrap_or_default().to_string();
                Call { method: "POST", path: "/scim/v2/Users".into(), body: Some(user.to_string()), want }
            }),
            check: |doc, want| doc["userName"] == want,
            aim: Some(("≥ 1,000 users/s", |o| o.rate() >= 1000.0 && o.errors == 0)),
        },
    ];

    let mut outcomes = Vec::new();
    for s in &scenarios {
        let o = run(s, &base, &auth, &args, daemon.0.id());
        let (d, c) = o.cores();
        println!(
            "{:<26} {:>6.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  errors {}  daemon {:.2} ms CPU/req  cores daemon {d:.2} client {c:.2}",
            o.name, o.rate(), o.ms(500), o.ms(990), o.max_ms(), o.errors, o.daemon_ms()
        );
        outcomes.push(o);
    }
    let (peak, rss) = daemon.memory_mb();
    drop(daemon);

    println!("\n## scim_load: {n} users, {} s per scenario, concurrency {}\n", args.seconds, args.concurrency);
    println!("| scenario | req/s | p50 ms | p99 ms | max ms | errors | daemon CPU ms/req | cores daemon / client | aim |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (o, s) in outcomes.iter().zip(&scenarios) {
        let aim = s.aim.map_or(String::new(), |(text, met)| format!("{text}: {}", if met(o) { "met" } else { "NOT met" }));
        let (d, c) = o.cores();
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {d:.2} / {c:.2} | {aim} |",
            o.name, o.rate(), o.ms(500), o.ms(990), o.max_ms(), o.errors, o.daemon_ms()
        );
    }
    println!("\npreload (in-process, {PRELOAD_THREADS} threads): {preload_rate:.0} users/s ({:.1} s)", took.as_secs_f64());
    println!("daemon memory: peak RSS (VmHWM) {peak:.1} MB, RSS at end {rss:.1} MB, RSS when ready {idle_rss:.1} MB");
}
