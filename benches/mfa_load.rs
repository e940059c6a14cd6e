//! MFA benchmark: TOTP verifications per second through the real daemon, and the wall time of
//! a bulk reset of 10,000 users in one request.
//!
//! `cargo bench --bench mfa_load [-- --users 50000 --seconds 10 --concurrency 8]`
//! (see benches/README.md).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use provisiond::clock::{self, Clock, SystemClock};
use provisiond::domain::mfa::Policy;
use provisiond::domain::tokens::Scope;
use provisiond::store;
use serde_json::{json, Value};
use support::{parse_args, preload, print_table, run_all, Call, Scenario, Setup};

/// Users reset by one bulk request (the figure).
const BULK: usize = 10_000;

/// Enrols every user with a fresh secret, straight through the store: the HTTP enrolment also
/// hashes ten backup codes per user with argon2, which would make the fixture take minutes.
/// Returns each user's raw secret.
fn enrol_all(setup: &Setup, ids: &[String]) -> Vec<Vec<u8>> {
    let pool = provisiond::app::open_database(&setup.config).expect("database");
    let sealer = provisiond::app::load_sealer(&setup.config).expect("mfa key");
    let mut conn = pool.get().expect("connection");
    let at = clock::stored(SystemClock.now());
    ids.iter()
        .map(|id| {
            let secret = Policy::new_secret();
            let sealed = sealer.seal(id, &secret);
            store::write_tx(&mut conn, |tx| {
                assert!(store::mfa::start_enrolment(tx, id, &sealed)?);
                // Step 0 as the last accepted one: any current code is new.
                assert!(store::mfa::confirm(tx, id, &sealed, 0, at)?);
                Ok::<_, store::Error>(())
            })
            .expect("enrol");
            secret
        })
        .collect()
}

fn main() {
    let args = parse_args(50_000);
    let n = args.users;
    assert!(n >= BULK, "--users must be at least {BULK} for the bulk reset");
    let setup = Setup::new(&args);
    println!("mfa_load: {n} users, {} s per scenario, {} client threads", args.seconds, args.concurrency);
    let (ids, token, took) = preload(&setup.config, n, &[Scope::Mfa, Scope::Admin]);
    println!("preload: {n} users in {:.1} s", took.as_secs_f64());
    let started = Instant::now();
    let secrets = enrol_all(&setup, &ids);
    println!("enrolled {n} users in {:.1} s", started.elapsed().as_secs_f64());

    let base = setup.base();
    let auth = format!("Bearer {token}");
    let probe = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let daemons = setup.start_daemons(&probe);

    // Each verification uses the next user with a code it has not used, as a login front end
    // would: the current step's code, then (second round) the next step's, which the ±1 step
    // of drift accepts and which is newer than the last accepted step.
    let policy = Policy::from_config(&setup.config.mfa);
    let next = AtomicUsize::new(0);
    let scenarios = [Scenario {
        name: "POST …/mfa/verify (TOTP)",
        expect: 200,
        make: Box::new(|_| {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let (round, i) = (k / n, k % n);
            assert!(round < 2, "ran out of fresh codes: raise --users");
            let at = SystemClock.now().timestamp() as u64 + 30 * round as u64;
            let code = policy.code_at(&secrets[i], at);
            Call {
                method: "POST",
                path: format!("/api/v1/users/{}/mfa/verify", ids[i]),
                body: Some(json!({"code": code}).to_string()),
                want: String::new(),
            }
        }),
        check: |doc, _| doc["valid"] == true && doc["method"] == "totp",
        aim: None,
    }];
    let outcomes = run_all(&scenarios, &setup.bases(), &auth, &args, &daemons);

    // Bulk resets: the same 10,000 users three times (a pending user costs the same: it is
    // still reset and audited).
    let body = json!({"userIds": &ids[..BULK], "reason": "benchmark"}).to_string();
    let mut walls = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut resp = probe
            .post(format!("{base}/api/v1/mfa/resets"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .expect("bulk reset");
        let text = resp.body_mut().read_to_string().expect("answer");
        walls.push(t0.elapsed());
        let doc: Value = serde_json::from_str(&text).expect("JSON answer");
        assert_eq!(doc["reset"], BULK, "bulk reset answered {}", &text[..text.len().min(300)]);
    }
    drop(daemons);

    println!("\n## mfa_load: {n} enrolled users, {} s, concurrency {}\n", args.seconds, args.concurrency);
    print_table(&outcomes, &scenarios);
    let ms: Vec<String> = walls.iter().map(|w| format!("{:.0} ms", w.as_secs_f64() * 1000.0)).collect();
    let best = walls.iter().min().expect("three runs").as_secs_f64();
    println!(
        "\nbulk reset of {BULK} users in one request (SQLite): {} — aim under 2 s: {}",
        ms.join(", "),
        if best < 2.0 { "met" } else { "NOT met" }
    );
}
