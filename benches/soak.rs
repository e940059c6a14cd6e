//! Soak: everything at once for a long time against the release daemon — SCIM creates, reads,
//! PATCHes and lists, TOTP enrolments and verifications, single and bulk resets, and the
//! daemon's own LDAP sync every 30 s against a real slapd whose entries keep changing (reset
//! flags set, names changed). Prints, per minute, the requests, errors, p99 latency, the daemon's
//! RSS and open file descriptors. Aim (issue 11): zero errors, RSS and p99 flat (within 10 %)
//! from minute 2 to the end.
//!
//! `cargo bench --bench soak [-- --minutes 10 --users 2000 --backend sqlite|postgres]` (see
//! benches/README.md).

#[path = "../tests/api/slapd.rs"]
mod slapd;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provisiond::clock::Clock;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use slapd::{Slapd, FLAG_ATTRIBUTE, PEOPLE};
use support::{send, user_json, Call, Daemon};

/// What one minute saw.
#[derive(Default)]
struct Minute {
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

struct Args {
    minutes: u64,
    users: usize,
    backend: String,
}

fn args() -> Args {
    let mut a = Args { minutes: 10, users: 2000, backend: "sqlite".into() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => {
                a.minutes = it.next().and_then(|v| v.parse().ok()).filter(|m| *m >= 1).expect("--minutes N (at least 1)")
            }
            "--users" => {
                a.users = it.next().and_then(|v| v.parse().ok()).filter(|n| *n >= 100).expect("--users N (at least 100)")
            }
            "--backend" => a.backend = it.next().filter(|b| b == "sqlite" || b == "postgres").expect("--backend sqlite|postgres"),
            "--bench" => {}
            other => panic!("unknown argument {other:?}; usage: soak [--minutes M] [--users N] [--backend sqlite|postgres]"),
        }
    }
    a
}

fn main() {
    let args = args();
    let slapd = Slapd::start(&slapd::people(0..args.users));
    let dir = tempfile::tempdir().expect("temp dir");
    let (database, _postgres) = support::database_section(dir.path(), &args.backend);
    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ldap = slapd.config();
    let config_file = dir.path().join("provisiond.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{database}\n[mfa]\nkey_file = {key:?}\n\n[log]\nlevel = \"warn\"\n\n\
         [ldap]\nurl = {url:?}\nbind_dn = {bind:?}\nbind_password = {password:?}\nbase_dn = {people:?}\ntimeout = 10\n\
         schedule = \"*/30 * * * * *\"\nfull_schedule = \"15 */2 * * * *\"\n\n\
         [ldap.mfa_reset]\nattribute = {flag:?}\nvalue = \"TRUE\"\n",
        key = dir.path().join("mfa.key").display().to_string(),
        url = ldap.url,
        bind = slapd::ADMIN_DN,
        password = slapd::ADMIN_PASSWORD,
        people = PEOPLE,
        flag = FLAG_ATTRIBUTE,
    );
    std::fs::write(&config_file, toml).expect("configuration");
    let config = provisiond::config::Config::load(&config_file).expect("configuration");
    let token = provisiond::domain::tokens::Tokens::new(
        provisiond::app::open_database(&config).expect("database"),
        std::sync::Arc::new(provisiond::clock::SystemClock),
    )
    .create(
        "soak",
        &[
            provisiond::domain::tokens::Scope::Scim,
            provisiond::domain::tokens::Scope::Mfa,
            provisiond::domain::tokens::Scope::Admin,
        ],
    )
    .expect("token")
    .expose()
    .to_string();
    let auth = format!("Bearer {token}");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let daemon = Daemon::start(&config_file, &base, &agent);
    let pid = daemon.0.id();

    // The first full run mirrors the directory; users for the MFA workers are created by SCIM.
    let run = request(&agent, &base, &auth, "POST", "/api/v1/sync/runs", Some(json!({"full": true})));
    assert_eq!(run.0, 202, "{}", run.1);
    std::thread::sleep(Duration::from_secs(3));
    let policy = provisiond::domain::mfa::Policy::from_config(&config.mfa);
    let mut verifiers = Vec::new();
    for i in 0..200 {
        let id = create(&agent, &base, &auth, &user_json(10_000_000 + i));
        let secret = enrol(&agent, &base, &auth, &policy, &id);
        verifiers.push((id, secret, step_now()));
    }
    let resettable: Vec<String> = (0..400).map(|i| create(&agent, &base, &auth, &user_json(20_000_000 + i))).collect();
    println!("soak: {} min, {} directory users, {}, daemon pid {pid}", args.minutes, args.users, args.backend);
    println!("| minute | requests | errors | p99 ms | RSS MB | open fds |");
    println!("|---:|---:|---:|---:|---:|---:|");

    let minutes: Vec<Mutex<Minute>> = (0..args.minutes).map(|_| Mutex::new(Minute::default())).collect();
    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let stop = AtomicBool::new(false);
    let created = AtomicUsize::new(30_000_000);
    let ids = Mutex::new(resettable);
    let fresh: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let verifiers = Mutex::new(verifiers);
    let record = |t0: Instant, outcome: Result<(), String>| {
        let minute = (t0.duration_since(started).as_secs() / 60) as usize;
        if let Some(m) = minutes.get(minute) {
            let mut m = m.lock().unwrap();
            m.latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            if let Err(e) = outcome {
                m.errors += 1;
                m.first_error.get_or_insert(e);
            }
        }
    };
    std::thread::scope(|s| {
        // SCIM: creates, reads, PATCHes, lists (three threads).
        for t in 0..3u64 {
            let (agent, base, auth, ids, fresh, created, record, stop) =
                (agent.clone(), &base, &auth, &ids, &fresh, &created, &record, &stop);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t + 1);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let pick = { let ids = ids.lock().unwrap(); ids[rng.random_range(0..ids.len())].clone() };
                    let outcome = match rng.random_range(0..5) {
                        // Creates and deletes in step: the data stays the same size, so that
                        // what grows over the run is the daemon's, not the workload's.
                        0 => {
                            let user = user_json(created.fetch_add(1, Ordering::Relaxed));
                            expect(request(&agent, base, auth, "POST", "/scim/v2/Users", Some(user)), 201).map(|doc| {
                                fresh.lock().unwrap().push(doc["id"].as_str().unwrap_or_default().to_string());
                            })
                        }
                        // Only users this worker created are deleted: the others stay for reads.
                        1 => match fresh.lock().unwrap().pop() {
                            None => Ok(()),
                            Some(victim) => match request(&agent, base, auth, "DELETE", &format!("/scim/v2/Users/{victim}"), None) {
                                (204, _) => Ok(()),
                                (status, body) => Err(format!("{status}: {body}")),
                            },
                        },
                        2 => expect(request(&agent, base, auth, "GET", &format!("/scim/v2/Users/{pick}"), None), 200).map(drop),
                        3 => {
                            let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                "Operations": [{"op": "replace", "path": "displayName", "value": format!("soak {}", rng.random::<u32>())}]});
                            expect(request(&agent, base, auth, "PATCH", &format!("/scim/v2/Users/{pick}"), Some(patch)), 200).map(drop)
                        }
                        _ => {
                            let start = rng.random_range(1..=1000);
                            expect(request(&agent, base, auth, "GET", &format!("/scim/v2/Users?startIndex={start}&count=100"), None), 200).map(drop)
                        }
                    };
                    record(t0, outcome);
                }
            });
        }
        // MFA: a verification with the current code of a user not verified in this step, and
        // now and then a new enrolment.
        {
            let (agent, base, auth, verifiers, record, stop, policy) =
                (agent.clone(), &base, &auth, &verifiers, &record, &stop, &policy);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let t0 = Instant::now();
                    if n % 50 == 0 {
                        let id = create(&agent, base, auth, &user_json(40_000_000 + n as usize));
                        let secret = enrol(&agent, base, auth, policy, &id);
                        record(t0, Ok(()));
                        verifiers.lock().unwrap().push((id, secret, step_now()));
                        continue;
                    }
                    let now = provisiond::clock::SystemClock.now().timestamp();
                    let step = now / 30;
                    let chosen = {
                        let mut v = verifiers.lock().unwrap();
                        v.iter_mut().find(|(_, _, last)| *last < step).map(|e| {
                            e.2 = step;
                            (e.0.clone(), e.1.clone())
                        })
                    };
                    let Some((id, secret)) = chosen else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let code = policy.code_at(&secret, now as u64);
                    let body = json!({"code": code});
                    let outcome =
                        expect(request(&agent, base, auth, "POST", &format!("/api/v1/users/{id}/mfa/verify"), Some(body)), 200)
                            .map(drop);
                    record(t0, outcome);
                }
            });
        }
        // Resets: one user, and fifty at once, now and then.
        {
            let (agent, base, auth, ids, record, stop) = (agent.clone(), &base, &auth, &ids, &record, &stop);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(99);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let chosen: Vec<String> = {
                        let ids = ids.lock().unwrap();
                        (0..50).map(|_| ids[rng.random_range(0..ids.len())].clone()).collect()
                    };
                    let outcome = if rng.random_range(0..10) == 0 {
                        expect(
                            request(
                                &agent,
                                base,
                                auth,
                                "POST",
                                "/api/v1/mfa/resets",
                                Some(json!({"userIds": chosen, "reason": "soak"})),
                            ),
                            200,
                        )
                        .map(drop)
                    } else {
                        expect(
                            request(
                                &agent,
                                base,
                                auth,
                                "POST",
                                &format!("/api/v1/users/{}/mfa/reset", chosen[0]),
                                Some(json!({"reason": "soak"})),
                            ),
                            200,
                        )
                        .map(drop)
                    };
                    record(t0, outcome);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        // The directory changes: every 30 s a few reset flags and renamed common names.
        {
            let (slapd, stop, users) = (&slapd, &stop, args.users);
            s.spawn(move || {
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let mut ldif = String::new();
                    for k in 0..10 {
                        let i = (round * 37 + k * 101) % users;
                        ldif.push_str(&format!(
                            "dn: uid=user{i},{PEOPLE}\nchangetype: modify\nreplace: {FLAG_ATTRIBUTE}\n{FLAG_ATTRIBUTE}: TRUE\n-\nreplace: cn\ncn: User {i} round {round}\n\n"
                        ));
                    }
                    slapd.modify(&ldif);
                    for _ in 0..300 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
        // The minutes, as they end.
        let mut reported = 0;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
            let done = (started.elapsed().as_secs() / 60) as usize;
            while reported < done.min(minutes.len()) {
                report(reported, &minutes[reported], pid);
                reported += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        while reported < minutes.len() {
            report(reported, &minutes[reported], pid);
            reported += 1;
        }
    });

    // The verdict, from minute 2 on.
    let rows: Vec<(f64, usize)> = minutes
        .iter()
        .map(|m| {
            let m = m.lock().unwrap();
            (p99(&m.latencies), m.errors)
        })
        .collect();
    let errors: usize = rows.iter().map(|r| r.1).sum();
    let runs = request(&agent, &base, &auth, "GET", "/api/v1/sync/runs?count=1000", None);
    let runs: Value = serde_json::from_str(&runs.1).unwrap_or(Value::Null);
    let failed_runs = runs["runs"].as_array().map_or(0, |r| r.iter().filter(|r| r["status"] == "failed").count());
    println!(
        "\nerrors: {errors}; sync runs: {} ({failed_runs} failed); RSS at end {:.1} MB, open fds {}",
        runs["totalResults"],
        rss_mb(pid),
        fds(pid)
    );
    drop(daemon);
}

/// The current TOTP step (30 s): the code of a step is accepted once, at enrolment the first time.
fn step_now() -> i64 {
    provisiond::clock::SystemClock.now().timestamp() / 30
}

fn report(minute: usize, m: &Mutex<Minute>, pid: u32) {
    let m = m.lock().unwrap();
    println!(
        "| {} | {} | {} | {:.1} | {:.1} | {} |",
        minute + 1,
        m.latencies.len(),
        m.errors,
        p99(&m.latencies),
        rss_mb(pid),
        fds(pid)
    );
    if let Some(e) = &m.first_error {
        eprintln!("  minute {}: first error: {e}", minute + 1);
    }
}

fn p99(latencies: &[u32]) -> f64 {
    let mut l = latencies.to_vec();
    l.sort_unstable();
    l.get(l.len().saturating_sub(1) * 99 / 100).map_or(0.0, |us| *us as f64 / 1000.0)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn request(agent: &ureq::Agent, base: &str, auth: &str, method: &'static str, path: &str, body: Option<Value>) -> (u16, String) {
    let call = Call { method, path: path.to_string(), body: body.map(|b| b.to_string()), want: String::new() };
    send(agent, base, auth, &call).unwrap_or_else(|e| (0, e.to_string()))
}

fn expect((status, body): (u16, String), want: u16) -> Result<Value, String> {
    if status == want {
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    } else {
        Err(format!("{status}: {}", &body[..body.len().min(300)]))
    }
}

fn create(agent: &ureq::Agent, base: &str, auth: &str, user: &Value) -> String {
    let doc = expect(request(agent, base, auth, "POST", "/scim/v2/Users", Some(user.clone())), 201).expect("create a user");
    doc["id"].as_str().expect("id").to_string()
}

/// Enrols the user with a TOTP factor; returns the secret.
fn enrol(agent: &ureq::Agent, base: &str, auth: &str, policy: &provisiond::domain::mfa::Policy, id: &str) -> Vec<u8> {
    let start = expect(request(agent, base, auth, "POST", &format!("/api/v1/users/{id}/mfa/totp"), Some(json!({}))), 201)
        .expect("start enrolment");
    let secret =
        provisiond::domain::mfa::Policy::decode_base32(start["secret"].as_str().expect("secret")).expect("base32 secret");
    let now = provisiond::clock::SystemClock.now().timestamp() as u64;
    let code = policy.code_at(&secret, now);
    expect(request(agent, base, auth, "POST", &format!("/api/v1/users/{id}/mfa/totp/confirm"), Some(json!({"code": code}))), 200)
        .expect("confirm enrolment");
    secret
}
