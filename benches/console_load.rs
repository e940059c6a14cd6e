//! Console benchmark (issue 13), against the real daemon with N preloaded users: the Users page
//! (the first page, a search that finds a few users, one that finds many, a page filtered by MFA
//! status, the last page), aim p99 < 50 ms at 100,000 users; and a bulk reset of 1,000 ticked
//! users from the console, end to end, aim < 2 s.
//!
//! `cargo bench --bench console_load [-- --users 100000 --seconds 10 --concurrency 8
//! --backend sqlite|postgres]` (see benches/README.md).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisiond::clock::{self, Clock, SystemClock};
use provisiond::domain::audit::{Actor, Origin};
use provisiond::domain::mfa::Policy;
use provisiond::domain::operators::Role;
use provisiond::domain::tokens::Scope;
use provisiond::domain::Services;
use provisiond::store;
use rand::Rng;
use support::{parse_args, preload, print_table, run_all, Call, Scenario, Setup};

/// Users ticked in one bulk reset.
const BULK: usize = 1_000;
/// Bulk resets timed, each of other users.
const ROUNDS: usize = 3;
/// Users with an enrolled factor: the bulk resets' users, and the `?mfa=enrolled` list.
const ENROLLED: usize = 5_000;
/// Rows per page of the Users page (src/console/users.rs).
const PAGE_SIZE: usize = 50;
const OPERATOR: &str = "bench-admin";
const PASSWORD: &str = "correct horse battery staple";

/// Enrols these users with a fresh secret straight through the store, as `mfa_load` does (the
/// HTTP enrolment also hashes ten backup codes per user with argon2).
fn enrol(setup: &Setup, ids: &[String]) {
    let pool = provisiond::app::open_database(&setup.config).expect("database");
    let sealer = provisiond::app::load_sealer(&setup.config).expect("mfa key");
    let mut conn = pool.get().expect("connection");
    let at = clock::stored(SystemClock.now());
    for chunk in ids.chunks(500) {
        store::write_tx(&mut conn, |tx| {
            for id in chunk {
                let sealed = sealer.seal(id, &Policy::new_secret());
                assert!(store::mfa::start_enrolment(tx, id, &sealed)?);
                assert!(store::mfa::confirm(tx, id, &sealed, 0, at)?);
            }
            Ok::<_, store::Error>(())
        })
        .expect("enrol");
    }
}

/// Adds an admin operator through the domain and sets it up; returns its TOTP secret.
fn operator(setup: &Setup) -> Vec<u8> {
    let pool = provisiond::app::open_database(&setup.config).expect("database");
    let sealer = Arc::new(provisiond::app::load_sealer(&setup.config).expect("mfa key"));
    let services = Services::new(pool, sealer, &setup.config, Arc::new(SystemClock));
    let actor = Actor::new(Origin::Cli, "bench", None);
    let token = services.operators.add(OPERATOR, Role::Admin, &actor).expect("add the operator");
    let (_, enrolment) = services.operators.begin_setup(token.expose()).expect("begin setup");
    let secret = Policy::decode_base32(&enrolment.secret_base32).expect("secret");
    services.operators.finish_setup(token.expose(), PASSWORD, &code(setup, &secret, 0)).expect("finish setup");
    secret
}

/// The code of the TOTP step `steps` after the current one.
fn code(setup: &Setup, secret: &[u8], steps: u64) -> String {
    let now = SystemClock.now().timestamp() as u64;
    Policy::from_config(&setup.config.mfa).code_at(secret, now + steps * 30)
}

/// Signs in with the next step's code (the current one went to the setup; ±1 step of drift is
/// accepted) and returns the session cookie `provisiond_session=…`.
fn sign_in(agent: &ureq::Agent, base: &str, setup: &Setup, secret: &[u8]) -> String {
    let code = code(setup, secret, 1);
    let res = agent
        .post(&format!("{base}/console/sign-in"))
        .send_form([("name", OPERATOR), ("password", PASSWORD), ("code", code.as_str())])
        .expect("sign in");
    assert_eq!(res.status().as_u16(), 303, "sign-in answered {}", res.status());
    let cookie = res.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("a session cookie");
    cookie.split(';').next().unwrap_or_default().to_string()
}

fn get(agent: &ureq::Agent, base: &str, cookie: &str, path: &str) -> (u16, String) {
    let mut res = agent.get(&format!("{base}{path}")).header("Cookie", cookie).call().expect("GET");
    (res.status().as_u16(), res.body_mut().read_to_string().unwrap_or_default())
}

/// The `value` of the page's first `<input name="csrf">`.
fn csrf_of(html: &str) -> String {
    let value = html.split("name=\"csrf\" value=\"").nth(1).expect("a csrf field on the Users page");
    value.split('"').next().unwrap_or_default().to_string()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A scenario of GETs on the Users page; a sampled answer must contain `want`.
fn page_scenario<'a>(
    name: &'static str,
    make: impl Fn(&mut rand::rngs::SmallRng) -> (String, String) + Sync + 'a,
) -> Scenario<'a> {
    Scenario {
        name,
        expect: 200,
        make: Box::new(move |rng| {
            let (path, want) = make(rng);
            Call { method: "GET", path, body: None, want }
        }),
        check: |doc, want| doc.as_str().is_some_and(|html| html.contains(want)),
        aim: Some(("p99 < 50 ms", |o| o.ms(990) < 50.0 && o.errors == 0)),
    }
}

fn main() {
    let args = parse_args(100_000);
    let n = args.users;
    let enrolled = ENROLLED.min(n);
    let rounds = ROUNDS.min(enrolled / BULK);
    let setup = Setup::new(&args);
    println!("console_load: {n} users, {} s per scenario, {} client threads, {}", args.seconds, args.concurrency, args.backend);
    let (ids, _, took) = preload(&setup.config, n, &[Scope::Scim]);
    println!("preload: {n} users in {:.1} s", took.as_secs_f64());
    let started = Instant::now();
    // The preload's ids come thread by thread; any `enrolled` of them will do.
    let chosen = &ids[..enrolled];
    enrol(&setup, chosen);
    println!("enrolled {enrolled} users in {:.1} s", started.elapsed().as_secs_f64());
    let secret = operator(&setup);

    let base = setup.base();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let daemons = setup.start_daemons(&agent);
    let cookie = sign_in(&agent, &base, &setup, &secret);
    let (status, first) = get(&agent, &base, &cookie, "/console/users");
    assert_eq!(status, 200, "the Users page: {first}");
    let csrf = csrf_of(&first);
    let total = |t: usize| format!("id=\"total\">{t} user");
    assert!(first.contains(&total(n)), "the Users page does not show {n} users");
    let last = n.div_ceil(PAGE_SIZE);

    // Users 1000..9999 by number: `user1234` finds user1234 and user12340..user12349 (11 users,
    // each by userName and both emails). `Family1` finds the displayNames Family1, Family10..19
    // and Family100..199 (111 of the 997 families: about 11 % of the users).
    let family1 = (0..n).filter(|i| (i % 997).to_string().starts_with('1')).count();
    let scenarios = vec![
        page_scenario("first page", move |_| ("/console/users".into(), total(n))),
        page_scenario("search, 11 users (q=user{i})", move |rng| {
            let i = rng.random_range(1_000..=(n / 10).clamp(1_000, 9_999));
            let found = (0..=10).map(|d| if d == 0 { i } else { i * 10 + d - 1 }).filter(|&u| u < n).count();
            (format!("/console/users?q=user{i}"), total(found))
        }),
        page_scenario("search, ~11% (q=Family1)", move |_| ("/console/users?q=Family1".into(), total(family1))),
        page_scenario("mfa=enrolled", move |_| ("/console/users?mfa=enrolled".into(), total(enrolled))),
        page_scenario("mfa=none", move |_| ("/console/users?mfa=none".into(), total(n - enrolled))),
        page_scenario("last page", move |_| (format!("/console/users?page={last}"), format!("Page {last} of {last}"))),
    ];
    let auth = format!("Cookie: {cookie}");
    let outcomes = run_all(&scenarios, &setup.bases(), &auth, &args, &daemons);

    // The bulk reset: 1,000 ticked enrolled users in one POST, until the answer page.
    let reason = "Lost phones: bench bulk reset";
    let mut times = Vec::new();
    let mut confirms = Vec::new();
    for round in 0..rounds {
        let batch = &chosen[round * BULK..(round + 1) * BULK];
        // The confirmation the bulk button opens first (a GET with the ticked ids).
        let query: String = batch.iter().map(|id| format!("id={id}&")).collect();
        let t0 = Instant::now();
        let (status, html) = get(&agent, &base, &cookie, &format!("/console/users/reset?{query}"));
        confirms.push((status, t0.elapsed().as_secs_f64() * 1000.0));
        assert!(status != 200 || html.contains(&BULK.to_string()), "the confirmation does not name {BULK} users");
        let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str()), ("reason", reason)];
        form.extend(batch.iter().map(|id| ("id", id.as_str())));
        let t0 = Instant::now();
        let mut res = agent
            .post(&format!("{base}/console/users/reset"))
            .header("Cookie", &cookie)
            .send_form(form.iter().copied())
            .expect("POST /console/users/reset");
        let body = res.body_mut().read_to_string().unwrap_or_default();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(res.status().as_u16(), 200, "the bulk reset answered {}: {body}", res.status());
        assert!(body.contains(&format!("<strong>{BULK} reset</strong>")), "the summary does not say {BULK} reset");
        println!("bulk reset of {BULK} ticked users, round {}: {ms:.0} ms", round + 1);
        times.push(ms);
    }
    let (hwm, rss) = daemons[0].memory_mb();
    drop(daemons);

    println!(
        "\n## console_load: {n} users ({enrolled} enrolled), {} s per scenario, concurrency {}, {}\n",
        args.seconds, args.concurrency, args.backend
    );
    print_table(&outcomes, &scenarios);
    if !times.is_empty() {
        let list = times.iter().map(|t| format!("{t:.0} ms")).collect::<Vec<_>>().join(", ");
        let med = median(&times);
        let aim = if med < 2000.0 && times.iter().all(|&t| t < 2000.0) { "met" } else { "NOT met" };
        println!("\nBulk reset of {BULK} ticked users (POST /console/users/reset until the answer page): {list}; median {med:.0} ms (aim < 2 s: {aim})");
        let list = confirms.iter().map(|(s, t)| format!("{s} in {t:.0} ms")).collect::<Vec<_>>().join(", ");
        println!("Its confirmation (GET /console/users/reset with {BULK} ids): {list}");
    }
    println!("Daemon memory: peak RSS (VmHWM) {hwm:.1} MB, {rss:.1} MB at the end.");
}
