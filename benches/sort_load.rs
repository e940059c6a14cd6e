//! Sorting benchmark: a page of 10 sorted by every attribute `sortBy` accepts, ascending and
//! descending, anywhere in N users (a random startIndex), against the real daemon. Each sort
//! must walk an index: p99 < 100 ms at 100,000 users (issue 11).
//!
//! `cargo bench --bench sort_load [-- --users 100000 --seconds 3 --concurrency 8
//! --backend sqlite|postgres]` (see benches/README.md).

mod support;

use provisiond::config::percent_encode as encode;
use provisiond::domain::tokens::Scope;
use rand::Rng;
use support::{parse_args, preload, print_table, run_all, Call, Scenario, Setup};

/// Every attribute `sortBy` accepts, as a client would name it (the preloaded users have most;
/// title, phone numbers and the MFA times none, which exercises the walk over users without one).
const SORTABLE: &[&str] = &[
    "userName",
    "externalId",
    "id",
    "active",
    "meta.created",
    "meta.lastModified",
    "displayName",
    "title",
    "name.givenName",
    "name.familyName",
    "emails",
    "emails.value",
    "emails.type",
    "phoneNumbers.value",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:status",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:enrolledAt",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:lastResetAt",
];

fn main() {
    let args = parse_args(100_000);
    let n = args.users;
    let setup = Setup::new(&args);
    println!("sort_load: {n} users, {} s per scenario, {} client threads, {}", args.seconds, args.concurrency, args.backend);
    let (_, token, took) = preload(&setup.config, n, &[Scope::Scim]);
    println!("preload: {n} users in {:.1} s", took.as_secs_f64());
    let auth = format!("Bearer {token}");
    let probe = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let daemons = setup.start_daemons(&probe);

    let scenarios: Vec<Scenario> = SORTABLE
        .iter()
        .flat_map(|attr| ["ascending", "descending"].map(|order| (*attr, order)))
        .map(|(attr, order)| {
            let name: &'static str = Box::leak(format!("sortBy={attr} {order}").into_boxed_str());
            let sort = encode(attr);
            Scenario {
                name,
                expect: 200,
                make: Box::new(move |rng| {
                    let start = rng.random_range(1..=n - 10);
                    let path = format!("/scim/v2/Users?sortBy={sort}&sortOrder={order}&startIndex={start}&count=10");
                    Call { method: "GET", path, body: None, want: String::new() }
                }),
                check: |doc, _| doc["Resources"].as_array().is_some_and(|r| r.len() == 10),
                aim: Some(("p99 < 100 ms", |o| o.ms(990) < 100.0 && o.errors == 0)),
            }
        })
        .collect();
    let outcomes = run_all(&scenarios, &setup.bases(), &auth, &args, &daemons);
    drop(daemons);
    println!("\n## sort_load: {n} users, {} s per scenario, concurrency {}, {}\n", args.seconds, args.concurrency, args.backend);
    print_table(&outcomes, &scenarios);
}
