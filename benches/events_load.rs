//! Events benchmark (issue 17): a bulk reset of 10,000 users through the real daemon, first with
//! no receivers (the baseline), then with a Shared Signals push stream and a webhook, both posting
//! to a counting receiver in this process: the reset's wall time with and without them, and how
//! fast the 10,000 SETs and 10,000 webhook posts of each reset arrive.
//!
//! `cargo bench --bench events_load [-- --backend sqlite|postgres|both --users N --rounds R --perf FILE --busy]`
//! (see benches/README.md). `--perf FILE`: `perf record -g` of the daemon during the rounds with
//! receivers, written to FILE (`perf report -i FILE`; DWARF call graphs: the release build has no
//! frame pointers). `--busy`: a busy loop at nice 19 per core for the whole run, so that no core
//! idles (on this VM a PostgreSQL round trip that wakes an idle core costs several times more).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use diesel::prelude::*;
use provisiond::clock::{self, Clock, SystemClock};
use provisiond::domain::tokens::Scope;
use provisiond::events::set::CREDENTIAL_CHANGE;
use provisiond::store::{self, schema::events, streams::StreamRow};
use serde_json::{json, Value};
use support::{cpu_seconds, preload, Args, Daemon, Setup};

/// Users reset by one bulk request (the figure).
const BULK: usize = 10_000;
/// The aim: the reset with receivers no slower than this times the one without.
const AIM: f64 = 1.2;
/// How long a round's deliveries may take before the run fails.
const DELIVERY_LIMIT: Duration = Duration::from_secs(600);

struct Options {
    users: usize,
    backends: Vec<String>,
    rounds: usize,
    perf: Option<String>,
    busy: bool,
}

fn options() -> Options {
    let mut o = Options { users: BULK, backends: vec!["sqlite".into()], rounds: 3, perf: None, busy: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--users" => o.users = it.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--rounds" => o.rounds = it.next().and_then(|v| v.parse().ok()).filter(|r| *r > 0).expect("--rounds R"),
            "--perf" => o.perf = Some(it.next().expect("--perf FILE")),
            "--busy" => o.busy = true,
            "--backend" => {
                o.backends = match it.next().as_deref() {
                    Some("both") => vec!["sqlite".into(), "postgres".into()],
                    Some(b @ ("sqlite" | "postgres")) => vec![b.into()],
                    _ => panic!("--backend sqlite|postgres|both"),
                }
            }
            "--bench" => {}
            other => panic!("unknown argument {other:?}; usage: events_load [--backend sqlite|postgres|both] [--users N] [--rounds R] [--perf FILE] [--busy]"),
        }
    }
    assert!(o.users >= BULK, "--users must be at least {BULK}");
    o
}

// ---------------------------------------------------------------------------------------------
// The receiver: a small multi-threaded HTTP/1.1 server with keep-alive that answers 202 at once
// and keeps, per path, the message id of every request (the SET's body, whose `jti` is read
// after the round, or the webhook's `webhook-id`) and when it came.

#[derive(Default)]
struct Round {
    /// SETs (compact JWS) or webhook ids, as received.
    items: Vec<String>,
    first: Option<Instant>,
    last: Option<Instant>,
}

#[derive(Default)]
struct Inbox {
    round: Mutex<Round>,
    count: AtomicUsize,
}

impl Inbox {
    fn take(&self) -> Round {
        let round = std::mem::take(&mut *self.round.lock().unwrap());
        self.count.store(0, Ordering::SeqCst);
        round
    }
}

struct Receiver {
    port: u16,
    sets: Arc<Inbox>,
    webhooks: Arc<Inbox>,
    connections: Arc<AtomicUsize>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("receiver port");
        let port = listener.local_addr().unwrap().port();
        let (sets, webhooks, connections) =
            (Arc::new(Inbox::default()), Arc::new(Inbox::default()), Arc::new(AtomicUsize::new(0)));
        let (s, w, c) = (sets.clone(), webhooks.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let (s, w) = (s.clone(), w.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &s, &w);
                });
            }
        });
        Receiver { port, sets, webhooks, connections }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn handle(stream: TcpStream, sets: &Inbox, webhooks: &Inbox) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let (mut length, mut webhook_id) = (0usize, None);
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("webhook-id") {
                    webhook_id = Some(value.trim().to_string());
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let (inbox, item) = match path.as_str() {
            "/ssf" => (sets, String::from_utf8_lossy(&body).into_owned()),
            _ => (webhooks, webhook_id.unwrap_or_default()),
        };
        {
            let now = Instant::now();
            let mut round = inbox.round.lock().unwrap();
            round.items.push(item);
            round.first.get_or_insert(now);
            round.last = Some(now);
        }
        inbox.count.fetch_add(1, Ordering::SeqCst);
        out.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")?;
    }
}

/// The `jti` of a compact JWS's claims.
fn jti_of(token: &str) -> String {
    let claims = token.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("base64url claims");
    let doc: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    assert!(doc["events"][CREDENTIAL_CHANGE].is_object(), "a credential-change SET: {doc}");
    doc["jti"].as_str().expect("jti").to_string()
}

// ---------------------------------------------------------------------------------------------

/// Every thread of a process: (id, name, nanoseconds on a CPU, nanoseconds runnable but waiting
/// for one), from /proc/PID/task/*/schedstat.
fn threads(pid: u32) -> Vec<(String, String, u64, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|t| {
            let path = t.path();
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let mut f = stat.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            let name = std::fs::read_to_string(path.join("comm")).ok()?.trim().to_string();
            Some((t.file_name().to_string_lossy().into_owned(), name, f.next()?, f.next()?))
        })
        .collect()
}

/// Where the time of a bulk reset went, from the threads' scheduler statistics.
#[derive(Default, Clone, Copy)]
struct Split {
    /// The thread that did the reset (the busiest): on a CPU, and runnable but waiting for one.
    reset_run: f64,
    reset_queued: f64,
    /// The deliverer's threads on a CPU meanwhile, and this process (the receiver).
    deliverer_run: f64,
    bench_cpu: f64,
}

impl Split {
    fn between(before: &[(String, String, u64, u64)], after: &[(String, String, u64, u64)], bench_cpu: f64) -> Split {
        let delta = |id: &str, run: u64, queued: u64| {
            before.iter().find(|b| b.0 == id).map_or((run, queued), |b| (run.saturating_sub(b.2), queued.saturating_sub(b.3)))
        };
        let mut split = Split { bench_cpu, ..Split::default() };
        for (id, name, run, queued) in after {
            let (run, queued) = delta(id, *run, *queued);
            let (run, queued) = (run as f64 / 1e9, queued as f64 / 1e9);
            if name.starts_with("events-") {
                split.deliverer_run += run;
            } else if run > split.reset_run {
                (split.reset_run, split.reset_queued) = (run, queued);
            }
        }
        split
    }

    fn describe(&self, wall: Duration) -> String {
        let other = wall.as_secs_f64() - self.reset_run - self.reset_queued;
        format!(
            "reset thread on CPU {:.0} ms, waiting for a CPU {:.0} ms, blocked {:.0} ms; deliverer threads on CPU {:.0} ms; bench process (receiver) {:.0} ms",
            self.reset_run * 1000.0,
            self.reset_queued * 1000.0,
            other * 1000.0,
            self.deliverer_run * 1000.0,
            self.bench_cpu * 1000.0
        )
    }
}

/// One bulk reset: its wall time, when it was answered, the daemon's CPU seconds during it and
/// where the time went.
fn bulk_reset(agent: &ureq::Agent, base: &str, auth: &str, body: &str, pid: u32) -> (Duration, Instant, f64, Split) {
    let cpu = cpu_seconds(&pid.to_string());
    let (before, bench_cpu) = (threads(pid), cpu_seconds("self"));
    let t0 = Instant::now();
    let mut resp = agent
        .post(format!("{base}/api/v1/mfa/resets"))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .send(body)
        .expect("bulk reset");
    let text = resp.body_mut().read_to_string().expect("answer");
    let (wall, answered) = (t0.elapsed(), Instant::now());
    let split = Split::between(&before, &threads(pid), cpu_seconds("self") - bench_cpu);
    let doc: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(doc["reset"], BULK, "bulk reset answered {}", &text[..text.len().min(300)]);
    (wall, answered, cpu_seconds(&pid.to_string()) - cpu, split)
}

/// Events not yet dispatched.
fn undispatched(conn: &mut store::DbConn) -> i64 {
    events::table.filter(events::dispatched.eq(false)).count().get_result(conn).expect("count")
}

/// One round with receivers.
struct Delivered {
    wall: Duration,
    split: Split,
    reset_cpu: f64,
    /// From the reset's answer until the 10,000th SET / webhook post arrived.
    set_tail: Duration,
    webhook_tail: Duration,
    /// Deliveries per second, first to last arrival.
    set_rate: f64,
    webhook_rate: f64,
    /// The daemon's CPU seconds from the reset's start until the last arrival.
    cpu: f64,
    /// From the reset's start until both receivers had everything.
    total: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Summary {
    backend: String,
    baseline: Vec<Duration>,
    baseline_cpu: Vec<f64>,
    baseline_split: Vec<Split>,
    rounds: Vec<Delivered>,
    connections: usize,
}

fn measure(backend: &str, o: &Options) -> Summary {
    println!("\n# events_load: {backend}, {} users, bulk reset of {BULK}", o.users);
    let args = Args { users: o.users, seconds: 1, concurrency: 1, backend: backend.into(), instances: 1 };
    let setup = Setup::new(&args);
    let base = setup.base();
    let dir = setup.dir.path();
    // [ssf]: the issuer is the daemon's URL, the key made at the first start.
    let plain = std::fs::read_to_string(&setup.config_file).expect("configuration");
    let with_ssf = format!("{plain}\n[ssf]\nissuer = {base:?}\nkey_file = {:?}\n", dir.join("ssf.key").display().to_string());
    std::fs::write(&setup.config_file, &with_ssf).expect("write the configuration");

    let (ids, token, took) = preload(&setup.config, o.users, &[Scope::Mfa, Scope::Admin]);
    println!("preload: {} users in {:.1} s", o.users, took.as_secs_f64());
    let auth = format!("Bearer {token}");
    let body = json!({"userIds": &ids[..BULK], "reason": "benchmark"}).to_string();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .new_agent();
    let pool = provisiond::app::open_database(&setup.config).expect("database");
    if backend == "postgres" {
        // Statistics for the tables the preload filled, as autovacuum gathers them a little later
        // in production (it made no difference measured here: the slow baseline on PostgreSQL was
        // idle cores waking up, see --busy).
        diesel::sql_query("ANALYZE").execute(&mut *pool.get().expect("connection")).expect("ANALYZE");
    }

    // Baseline: no receivers.
    let (mut baseline, mut baseline_cpu, mut baseline_split) = (Vec::new(), Vec::new(), Vec::new());
    {
        // A first daemon resets the users once, untimed: the rounds of both parts then run in a
        // daemon started on a database that has seen a reset, as the rounds with receivers do.
        let first = Daemon::start(&setup.config_file, &base, &agent);
        let (wall, ..) = bulk_reset(&agent, &base, &auth, &body, first.0.id());
        println!("warm-up reset in a first daemon: {:.0} ms", ms(wall));
        wait_dispatched(&mut pool.get().expect("connection"));
        drop(first);
        let daemon = Daemon::start(&setup.config_file, &base, &agent);
        let pid = daemon.0.id();
        for r in 0..o.rounds {
            let (wall, _, cpu, split) = bulk_reset(&agent, &base, &auth, &body, pid);
            println!("no receivers, round {}: bulk reset {:.0} ms (daemon CPU {:.2} s)", r + 1, ms(wall), cpu);
            println!("  {}", split.describe(wall));
            baseline.push(wall);
            baseline_cpu.push(cpu);
            baseline_split.push(split);
            // Its events dispatched (to nobody) before the next, as they would be with receivers.
            wait_dispatched(&mut pool.get().expect("connection"));
        }
    }

    // Receivers: a Shared Signals push stream and a webhook, both to the receiver here.
    let receiver = Receiver::start();
    let now = clock::stored(SystemClock.now());
    let stream = StreamRow {
        id: uuid::Uuid::new_v4().to_string(),
        owner: None,
        audience: json!(["bench"]).to_string(),
        events_requested: json!([CREDENTIAL_CHANGE]).to_string(),
        events_delivered: json!([CREDENTIAL_CHANGE]).to_string(),
        delivery_method: "urn:ietf:rfc:8935".into(),
        endpoint_url: Some(receiver.url("/ssf")),
        authorization_header: None,
        subject_format: "iss_sub".into(),
        description: Some("events_load".into()),
        status: "enabled".into(),
        status_reason: None,
        created_at: now,
        updated_at: now,
    };
    let mut conn = pool.get().expect("connection");
    store::write_tx(&mut conn, |tx| store::streams::insert(tx, &stream)).expect("insert the stream");
    drop(conn);
    let secret_file = dir.join("webhook.secret");
    let key: [u8; 32] = rand::random();
    std::fs::write(&secret_file, format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))).expect("secret");
    std::fs::write(
        &setup.config_file,
        format!(
            "{with_ssf}\n[[webhooks]]\nname = \"bench\"\nurl = {:?}\nsecret_file = {:?}\n",
            receiver.url("/webhook"),
            secret_file.display().to_string()
        ),
    )
    .expect("write the configuration");

    let daemon = Daemon::start(&setup.config_file, &base, &agent);
    let pid = daemon.0.id();
    let perf = o.perf.as_ref().map(|file| start_perf(file, pid));
    let mut rounds = Vec::new();
    let (mut seen_jti, mut seen_webhook) = (HashSet::new(), HashSet::new());
    for r in 0..o.rounds {
        let cpu0 = cpu_seconds(&pid.to_string());
        let (wall, answered, reset_cpu, split) = bulk_reset(&agent, &base, &auth, &body, pid);
        let started = answered - wall;
        let deadline = Instant::now() + DELIVERY_LIMIT;
        while receiver.sets.count.load(Ordering::SeqCst) < BULK || receiver.webhooks.count.load(Ordering::SeqCst) < BULK {
            assert!(
                Instant::now() < deadline,
                "round {}: {} SETs and {} webhook posts after {} s",
                r + 1,
                receiver.sets.count.load(Ordering::SeqCst),
                receiver.webhooks.count.load(Ordering::SeqCst),
                DELIVERY_LIMIT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let cpu = cpu_seconds(&pid.to_string()) - cpu0;
        // Anything sent twice would come now.
        std::thread::sleep(Duration::from_millis(500));
        let (sets, webhooks) = (receiver.sets.take(), receiver.webhooks.take());
        assert_eq!(sets.items.len(), BULK, "round {}: SETs", r + 1);
        assert_eq!(webhooks.items.len(), BULK, "round {}: webhook posts", r + 1);
        for token in &sets.items {
            assert!(seen_jti.insert(jti_of(token)), "a SET delivered twice");
        }
        for id in &webhooks.items {
            assert!(!id.is_empty(), "a webhook post without webhook-id");
            assert!(seen_webhook.insert(id.clone()), "a webhook post delivered twice");
        }
        let span = |r: &Round| r.last.unwrap() - r.first.unwrap();
        let (set_last, webhook_last) = (sets.last.unwrap(), webhooks.last.unwrap());
        let d = Delivered {
            wall,
            split,
            reset_cpu,
            set_tail: set_last.saturating_duration_since(answered),
            webhook_tail: webhook_last.saturating_duration_since(answered),
            set_rate: BULK as f64 / span(&sets).as_secs_f64(),
            webhook_rate: BULK as f64 / span(&webhooks).as_secs_f64(),
            cpu,
            total: set_last.max(webhook_last) - started,
        };
        println!(
            "with receivers, round {}: bulk reset {:.0} ms (daemon CPU {:.2} s); last SET {:.0} ms and last webhook {:.0} ms after the answer; \
             {:.0} SETs/s, {:.0} webhooks/s; everything in {:.0} ms, daemon CPU {:.2} s",
            r + 1,
            ms(d.wall),
            d.reset_cpu,
            ms(d.set_tail),
            ms(d.webhook_tail),
            d.set_rate,
            d.webhook_rate,
            ms(d.total),
            d.cpu
        );
        println!("  {}", split.describe(wall));
        rounds.push(d);
    }
    if let Some(mut p) = perf {
        stop_perf(&mut p);
    }
    let (hwm, rss) = daemon.memory_mb();
    println!("daemon memory: peak RSS {hwm:.1} MB, RSS {rss:.1} MB");
    drop(daemon);
    Summary {
        backend: backend.into(),
        baseline,
        baseline_cpu,
        baseline_split,
        rounds,
        connections: receiver.connections.load(Ordering::SeqCst),
    }
}

fn wait_dispatched(conn: &mut store::DbConn) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while undispatched(conn) > 0 {
        assert!(Instant::now() < deadline, "events still undispatched after 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_perf(file: &str, pid: u32) -> Child {
    let child = Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o", file, "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("perf record");
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn stop_perf(perf: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
    let _ = perf.wait();
}

/// Busy loops at the lowest priority, one per core, while it lives: the cores never go idle, so
/// a wake-up costs what it costs on a loaded machine (see `--busy` in benches/README.md).
struct Spinners(Vec<Child>);

impl Spinners {
    fn start() -> Spinners {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Spinners(
            (0..cores)
                .map(|_| Command::new("nice").args(["-n", "19", "sh", "-c", "while :; do :; done"]).spawn().expect("a spinner"))
                .collect(),
        )
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let o = options();
    let _spinners = o.busy.then(Spinners::start);
    let summaries: Vec<Summary> = o.backends.iter().map(|b| measure(b, &o)).collect();
    println!("\n## events_load: bulk reset of {BULK} users, {} rounds each (best of them)\n", o.rounds);
    println!("| backend | no receivers | with stream + webhook | ratio | aim ≤ {AIM}× | last SET after the answer | last webhook after the answer | SETs/s | webhooks/s | everything delivered after the start |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for s in &summaries {
        let best = s.baseline.iter().min().unwrap();
        let with = s.rounds.iter().map(|d| d.wall).min().unwrap();
        let ratio = with.as_secs_f64() / best.as_secs_f64();
        let fastest = |f: fn(&Delivered) -> Duration| s.rounds.iter().map(f).min().unwrap();
        let rate = |f: fn(&Delivered) -> f64| s.rounds.iter().map(f).fold(0.0, f64::max);
        println!(
            "| {} | {:.0} ms | {:.0} ms | {ratio:.2} | {} | {:.0} ms | {:.0} ms | {:.0} | {:.0} | {:.0} ms |",
            s.backend,
            ms(*best),
            ms(with),
            if ratio <= AIM { "met" } else { "NOT met" },
            ms(fastest(|d| d.set_tail)),
            ms(fastest(|d| d.webhook_tail)),
            rate(|d| d.set_rate),
            rate(|d| d.webhook_rate),
            ms(fastest(|d| d.total)),
        );
    }
    println!(
        "\nThe box's other load shows as the reset thread waiting for a CPU; without that wait (its time on a CPU plus \
         its time blocked, on the writer's turn or I/O), best and median of the rounds:\n"
    );
    println!("| backend | no receivers, best / median | with receivers, best / median | ratio of the bests | ratio of the medians | without the wait for a CPU: no receivers | with | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &summaries {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let walls = |v: Vec<Duration>| v.into_iter().map(ms).collect::<Vec<f64>>();
        let (base, with) = (walls(s.baseline.clone()), walls(s.rounds.iter().map(|d| d.wall).collect()));
        let own = |wall: Duration, split: &Split| ms(wall) - split.reset_queued * 1000.0;
        let base_own: Vec<f64> = s.baseline.iter().zip(&s.baseline_split).map(|(w, sp)| own(*w, sp)).collect();
        let with_own: Vec<f64> = s.rounds.iter().map(|d| own(d.wall, &d.split)).collect();
        println!(
            "| {} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {:.2} | {:.2} | {:.0} ms | {:.0} ms | {:.2} |",
            s.backend,
            best(&base),
            median(base.clone()),
            best(&with),
            median(with.clone()),
            best(&with) / best(&base),
            median(with.clone()) / median(base.clone()),
            best(&base_own),
            best(&with_own),
            best(&with_own) / best(&base_own),
        );
    }
    for s in &summaries {
        let list = |v: Vec<String>| v.join(", ");
        println!(
            "\n{}: no receivers {} (daemon CPU {}); with receivers {} (daemon CPU during the reset {}, until delivered {}); \
             the receiver accepted {} connections",
            s.backend,
            list(s.baseline.iter().map(|d| format!("{:.0} ms", ms(*d))).collect()),
            list(s.baseline_cpu.iter().map(|c| format!("{c:.2} s")).collect()),
            list(s.rounds.iter().map(|d| format!("{:.0} ms", ms(d.wall))).collect()),
            list(s.rounds.iter().map(|d| format!("{:.2} s", d.reset_cpu)).collect()),
            list(s.rounds.iter().map(|d| format!("{:.2} s", d.cpu)).collect()),
            s.connections,
        );
    }
}
