//! SCIM Groups benchmark (issue 15): membership changes against the real daemon, on a group of
//! 50,000 members and on a group of ten, so that the cost of a change can be seen not to grow
//! with the group.
//!
//! `cargo bench --bench group_load [-- --users 55000 --seconds 10 --concurrency 4
//! --backend sqlite|postgres]` (see benches/README.md). The first `users - 5000` users are the
//! big group's members; the last 5,000 are added and removed by the scenarios.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use provisiond::app;
use provisiond::clock::SystemClock;
use provisiond::domain::audit::{Actor, Origin};
use provisiond::domain::tokens::Scope;
use provisiond::domain::users::Source;
use provisiond::domain::Services;
use rand::Rng;
use serde_json::json;
use support::{parse_args, preload, print_table, run_all, Call, Scenario, Setup};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Users outside the big group, added and removed by the scenarios.
const POOL: usize = 5_000;

fn add(ids: &[&String]) -> String {
    let value: Vec<_> = ids.iter().map(|id| json!({"value": id})).collect();
    json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": value}]}).to_string()
}

fn main() {
    let args = parse_args(55_000);
    let n = args.users;
    assert!(n > POOL + 1_000, "--users must be above {}", POOL + 1_000);
    let setup = Setup::new(&args);
    println!("group_load: {n} users, {} s per scenario, {} client threads, {}", args.seconds, args.concurrency, args.backend);
    let (ids, token, took) = preload(&setup.config, n, &[Scope::Scim]);
    println!("preload: {n} users in {:.1} s", took.as_secs_f64());
    let (members, pool) = ids.split_at(n - POOL);

    let pool_db = app::open_database(&setup.config).expect("database");
    let sealer = Arc::new(app::load_sealer(&setup.config).expect("mfa key"));
    let groups = Services::new(pool_db, sealer, &setup.config, Arc::new(SystemClock)).groups;
    let actor = Actor::new(Origin::Scim, "bench", None);
    let started = Instant::now();
    let body = |name: &str, ids: &[String]| {
        let list: Vec<_> = ids.iter().map(|id| json!({"value": id})).collect();
        json!({"displayName": name, "members": list})
    };
    let big = groups.create(&body("Everyone", members), Source::Scim, &actor).expect("big group").id;
    println!("a group of {} members created in {:.1} s", members.len(), started.elapsed().as_secs_f64());
    let small = groups.create(&body("Ten", &members[..10]), Source::Scim, &actor).expect("small group").id;
    let batch = groups.create(&body("Batches", &[]), Source::Scim, &actor).expect("batch group").id;

    let probe = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let daemons = setup.start_daemons(&probe);
    let auth = format!("Bearer {token}");
    let bases = setup.bases();
    let window = AtomicUsize::new(0);
    let pick = |rng: &mut rand::rngs::SmallRng| &pool[rng.random_range(0..pool.len())];
    let scenarios = [
        Scenario {
            name: "add 1 member, group of 50k",
            expect: 204,
            make: Box::new(|rng| {
                let path = format!("/scim/v2/Groups/{big}");
                Call { method: "PATCH", path, body: Some(add(&[pick(rng)])), want: String::new() }
            }),
            check: |_, _| true,
            aim: Some(("p99 < 20 ms", |o| o.ms(990) < 20.0 && o.errors == 0)),
        },
        Scenario {
            name: "add 1 member, group of 10",
            expect: 204,
            make: Box::new(|rng| {
                let path = format!("/scim/v2/Groups/{small}");
                Call { method: "PATCH", path, body: Some(add(&[pick(rng)])), want: String::new() }
            }),
            check: |_, _| true,
            aim: None,
        },
        Scenario {
            name: "PATCH of 1,000 members",
            expect: 204,
            make: Box::new(|_| {
                // Each request replaces the list with the next 1,000 of the pool: 1,000 rows out, 1,000 in.
                let start = window.fetch_add(1_000, Ordering::Relaxed) % (POOL - 1_000);
                let value: Vec<_> = pool[start..start + 1_000].iter().map(|id| json!({"value": id})).collect();
                let body = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "members", "value": value}]});
                Call {
                    method: "PATCH",
                    path: format!("/scim/v2/Groups/{batch}"),
                    body: Some(body.to_string()),
                    want: String::new(),
                }
            }),
            check: |_, _| true,
            aim: Some(("< 200 ms", |o| o.ms(990) < 200.0 && o.errors == 0)),
        },
        Scenario {
            name: "GET group of 50k members",
            expect: 200,
            make: Box::new(|_| Call { method: "GET", path: format!("/scim/v2/Groups/{big}"), body: None, want: String::new() }),
            check: |doc, _| doc["members"].as_array().is_some_and(|m| m.len() >= 50_000),
            aim: Some(("< 300 ms", |o| o.ms(990) < 300.0 && o.errors == 0)),
        },
        Scenario {
            name: "GET it, excludedAttributes=members",
            expect: 200,
            make: Box::new(|_| {
                let path = format!("/scim/v2/Groups/{big}?excludedAttributes=members");
                Call { method: "GET", path, body: None, want: String::new() }
            }),
            check: |doc, _| doc.get("members").is_none(),
            aim: None,
        },
        Scenario {
            name: "Entra membership check",
            expect: 200,
            make: Box::new(|rng| {
                let user = &members[rng.random_range(0..members.len())];
                let filter = provisiond::config::percent_encode(&format!("id eq \"{big}\" and members eq \"{user}\""));
                let path = format!("/scim/v2/Groups?filter={filter}&excludedAttributes=members");
                Call { method: "GET", path, body: None, want: String::new() }
            }),
            check: |doc, _| doc["totalResults"] == 1,
            aim: None,
        },
    ];
    let outcomes = run_all(&scenarios, &bases, &auth, &args, &daemons);
    drop(daemons);
    println!(
        "\n## group_load: {n} users, a group of {} members, {} s per scenario, concurrency {}, {}\n",
        members.len(),
        args.seconds,
        args.concurrency,
        args.backend
    );
    print_table(&outcomes, &scenarios);
}
