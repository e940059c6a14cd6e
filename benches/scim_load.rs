//! SCIM load benchmark: preloads N users through the library, starts the real daemon as a
//! child process and drives it with C keep-alive client threads, one scenario at a time.
//!
//! `cargo bench --bench scim_load [-- --users 100000 --seconds 10 --concurrency 8
//! --backend sqlite|postgres --instances 1]` (see benches/README.md).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use provisiond::config::percent_encode as encode;
use provisiond::domain::tokens::Scope;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::{parse_args, preload, print_table, run_all, user_json, Call, Scenario, Setup, PRELOAD_THREADS};

fn main() {
    let args = parse_args(100_000);
    let n = args.users;
    let setup = Setup::new(&args);
    let (backend, instances) = (&args.backend, args.instances);

    println!(
        "scim_load: {n} users, {} s per scenario, {} client threads, {backend}, {instances} instance(s)",
        args.seconds, args.concurrency
    );
    let (ids, token, took) = preload(&setup.config, n, &[Scope::Scim]);
    let preload_rate = n as f64 / took.as_secs_f64();
    println!(
        "preload: {n} users in {:.1} s ({preload_rate:.0} users/s, {PRELOAD_THREADS} threads, in-process)",
        took.as_secs_f64()
    );

    let bases = setup.bases();
    let auth = format!("Bearer {token}");
    let probe = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let started = Instant::now();
    let daemons = setup.start_daemons(&probe);
    let (_, idle_rss) = daemons[0].memory_mb();
    println!("daemons: {instances} ready in {:.2} s, RSS of the first {idle_rss:.1} MB", started.elapsed().as_secs_f64());

    let cursors = walk_cursors(&probe, &bases[0], &auth);
    println!("cursor walk: {} nextCursors of pages of 100 collected", cursors.len());
    let pick = |rng: &mut SmallRng| &ids[rng.random_range(0..ids.len())];
    let created = AtomicUsize::new(n);
    let scenarios = [
        // The framework's floor measured by the same client: a route that does nothing (no token,
        // no database). The others are judged against it and against GET by id (issue 18).
        Scenario {
            name: "no-op GET /healthz",
            expect: 200,
            make: Box::new(|_| Call { method: "GET", path: "/healthz".into(), body: None, want: String::new() }),
            check: |doc, _| doc["status"] == "ok",
            aim: None,
        },
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
            // RFC 9865: a page anywhere in the list by the nextCursor a walk was given there.
            name: "page of 100 (cursor)",
            expect: 200,
            make: Box::new(|rng| {
                let cursor = &cursors[rng.random_range(0..cursors.len())];
                Call { method: "GET", path: format!("/scim/v2/Users?count=100&cursor={cursor}"), body: None, want: String::new() }
            }),
            check: |doc, _| doc["Resources"].as_array().is_some_and(|r| !r.is_empty()),
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

    let outcomes = run_all(&scenarios, &bases, &auth, &args, &daemons);
    let walk = walk_under_churn(&probe, &bases[0], &auth, &created);
    let (peak, rss) = daemons[0].memory_mb();
    drop(daemons);

    println!(
        "\n## scim_load: {n} users, {} s per scenario, concurrency {}, {backend}, {instances} instance(s)\n",
        args.seconds, args.concurrency
    );
    print_table(&outcomes, &scenarios);
    print_ratios(&outcomes);
    println!("\n{walk}");
    println!("\npreload (in-process, {PRELOAD_THREADS} threads): {preload_rate:.0} users/s ({:.1} s)", took.as_secs_f64());
    println!("daemon memory (the first instance): peak RSS (VmHWM) {peak:.1} MB, RSS at end {rss:.1} MB, RSS when ready {idle_rss:.1} MB");
}

/// Each scenario's rate against the no-op route's and against GET by id's of the same run, with
/// issue 18's aims.
fn print_ratios(outcomes: &[support::Outcome]) {
    let rate = |i: usize| outcomes[i].rate();
    let (noop, filter, get, page, cursor, patch, post) = (rate(0), rate(1), rate(2), rate(3), rate(4), rate(5), rate(6));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\nratios in this run (issue 18's aims):");
    println!("  GET by id / no-op          {:.2}  (aim ≥ 0.50: {})", get / noop, verdict(get / noop >= 0.5));
    println!("  filter userName / no-op    {:.2}  (aim ≥ 0.50: {})", filter / noop, verdict(filter / noop >= 0.5));
    println!("  POST / GET by id           {:.2}  (aim ≥ 0.30: {})", post / get, verdict(post / get >= 0.3));
    println!("  PATCH / GET by id          {:.2}  (aim ≥ 0.30: {})", patch / get, verdict(patch / get >= 0.3));
    println!("  page of 100 / GET by id    {:.3} (aim ≥ 0.10: {})", page / get, verdict(page / get >= 0.1));
    println!("  cursor page / GET by id    {:.3} (aim ≥ 0.10: {})", cursor / get, verdict(cursor / get >= 0.1));
}

/// The `nextCursor` of every page of a walk of all users by cursor pages of 100 (RFC 9865):
/// the cursor scenario asks for pages anywhere in the list with them (they stay good for
/// `scim.cursor_timeout`, 10 minutes by default, longer than the run).
fn walk_cursors(agent: &ureq::Agent, base: &str, auth: &str) -> Vec<String> {
    let mut cursors: Vec<String> = Vec::new();
    loop {
        let after = cursors.last().map(String::as_str).unwrap_or_default();
        let url = format!("{base}/scim/v2/Users?count=100&attributes=id&cursor={after}");
        let mut resp = agent.get(url).header("Authorization", auth).call().expect("a cursor page");
        let doc: serde_json::Value = resp.body_mut().read_json().expect("a ListResponse");
        match doc["nextCursor"].as_str() {
            Some(next) => cursors.push(next.to_string()),
            // A list of one page: the scenario asks for that page.
            None if cursors.is_empty() => return vec![String::new()],
            None => return cursors,
        }
    }
}

/// Issue 18: a walk of every user by `startIndex` pages of 100, as an identity provider imports,
/// while another client creates 1,000 users and deletes 1,000 of those there at the start. Every
/// user present throughout must be seen exactly once; the others may or may not be (README,
/// "What a walk sees").
fn walk_under_churn(agent: &ureq::Agent, base: &str, auth: &str, created: &AtomicUsize) -> String {
    const CHURN: usize = 1000;
    let send = |method: &'static str, path: String, body: Option<String>| {
        let (status, text) =
            support::send(agent, base, auth, &Call { method, path, body, want: String::new() }).expect("a request");
        (status, text)
    };
    let ids_of = |text: &str| -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_str(text).expect("a ListResponse");
        doc["Resources"]
            .as_array()
            .map(|r| r.iter().filter_map(|u| u["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    // Who is there at the start, by cursor pages (one snapshot-free pass, nothing changes yet).
    let mut before: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, text) = send("GET", format!("/scim/v2/Users?count=1000&attributes=id&cursor={cursor}"), None);
        before.extend(ids_of(&text));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("a ListResponse");
        match doc["nextCursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut rng = SmallRng::seed_from_u64(18);
    let doomed: std::collections::HashSet<String> = rand::seq::index::sample(&mut rng, before.len(), CHURN.min(before.len() / 2))
        .into_iter()
        .map(|i| before[i].clone())
        .collect();
    let started = Instant::now();
    let (seen, pages) = std::thread::scope(|scope| {
        scope.spawn(|| {
            for (i, id) in doomed.iter().enumerate() {
                let user = user_json(created.fetch_add(1, Ordering::Relaxed));
                assert_eq!(send("POST", "/scim/v2/Users".into(), Some(user.to_string())).0, 201, "create {i}");
                assert_eq!(send("DELETE", format!("/scim/v2/Users/{id}"), None).0, 204, "delete {id}");
            }
        });
        let (mut seen, mut start, mut pages) = (Vec::new(), 1, 0);
        loop {
            let (status, text) = send("GET", format!("/scim/v2/Users?startIndex={start}&count=100&attributes=id"), None);
            assert_eq!(status, 200, "{text}");
            let page = ids_of(&text);
            pages += 1;
            start += page.len();
            let last = page.len() < 100;
            seen.extend(page);
            if last {
                break (seen, pages);
            }
        }
    });
    let took = started.elapsed().as_secs_f64();
    let mut times: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in &seen {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let throughout: Vec<&String> = before.iter().filter(|id| !doomed.contains(*id)).collect();
    let missing = throughout.iter().filter(|id| !times.contains_key(id.as_str())).count();
    let twice = times.values().filter(|n| **n > 1).count();
    let deleted_seen = doomed.iter().filter(|id| times.contains_key(id.as_str())).count();
    let verdict = if missing == 0 && twice == 0 { "met" } else { "NOT met" };
    format!(
        "walk by startIndex pages of 100 while {CHURN} users are created and {CHURN} deleted: {pages} pages in {took:.2} s \
         ({:.0} pages/s); {} users present throughout, each seen once: {verdict} (missing {missing}, seen twice {twice}); \
         of those deleted during the walk {deleted_seen} were seen before they went; {} users seen in all",
        pages as f64 / took,
        throughout.len(),
        seen.len()
    )
}
