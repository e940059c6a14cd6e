//! Paging through users: RFC 9865 cursors (forward and back, with a filter and with sortBy,
//! `count=0`, expiry on the daemon's clock, tampered and foreign cursors, the RFC's other
//! errors), `startIndex` pages that continue where the client's previous page ended (equal to
//! the plain OFFSET pages on a static set; every user present throughout a walk seen exactly
//! once while others are created and deleted), and what `/ServiceProviderConfig` advertises.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::helpers::{assert_scim_error, encode, user_names, TestApp};

const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// Users `u0`, `u1`, … created in this order; every third one inactive.
fn with_users(n: usize) -> TestApp {
    let app = TestApp::spawn();
    for i in 0..n {
        app.create_user(&json!({"userName": format!("u{i}"), "active": i % 3 != 0}));
    }
    app
}

/// `GET /Users?{query}`, which must answer 200.
#[track_caller]
fn list(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/scim/v2/Users?{query}"));
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    r.body
}

fn cursor(page: &Value, which: &str) -> Option<String> {
    page.get(which).map(|c| c.as_str().expect("a cursor is a string").to_string())
}

/// Follows `nextCursor` from the first page of `query`; the pages' userNames.
fn walk_forward(app: &TestApp, query: &str) -> Vec<Vec<String>> {
    let mut pages = vec![list(app, &format!("{query}&cursor"))];
    while let Some(next) = cursor(pages.last().unwrap(), "nextCursor") {
        assert!(pages.len() < 100, "the walk ends");
        pages.push(list(app, &format!("{query}&cursor={next}")));
    }
    pages.iter().map(user_names).collect()
}

#[test]
fn cursor_pages_walk_forward_and_back() {
    let app = with_users(7);
    let first = list(&app, "cursor&count=3");
    assert_eq!(user_names(&first), ["u0", "u1", "u2"]);
    assert_eq!((first["totalResults"].clone(), first["itemsPerPage"].clone()), (json!(7), json!(3)));
    assert_eq!(first["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
    assert!(first.get("startIndex").is_none() && first.get("previousCursor").is_none(), "{first}");
    let next = cursor(&first, "nextCursor").expect("a first page of several has nextCursor");
    assert!(next.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)), "unreserved characters only: {next}");

    let second = list(&app, &format!("count=3&cursor={next}"));
    assert_eq!(user_names(&second), ["u3", "u4", "u5"]);
    assert_eq!(second["totalResults"], 7);
    let last = list(&app, &format!("count=3&cursor={}", cursor(&second, "nextCursor").unwrap()));
    assert_eq!(user_names(&last), ["u6"]);
    assert!(last.get("nextCursor").is_none(), "the last page has no nextCursor: {last}");

    let back = list(&app, &format!("count=3&cursor={}", cursor(&last, "previousCursor").unwrap()));
    assert_eq!(user_names(&back), ["u3", "u4", "u5"]);
    assert!(back.get("nextCursor").is_some());
    let start = list(&app, &format!("count=3&cursor={}", cursor(&back, "previousCursor").unwrap()));
    assert_eq!(user_names(&start), ["u0", "u1", "u2"]);
    assert!(start.get("previousCursor").is_none(), "the first page has no previousCursor: {start}");
    assert!(start.get("nextCursor").is_some());

    // The same through POST /Users/.search, and on another instance of the deployment.
    let r = app.post("/scim/v2/Users/.search", &json!({"schemas": [SEARCH_REQUEST], "cursor": "", "count": 3}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(user_names(&r.body), ["u0", "u1", "u2"]);
    let body = json!({"schemas": [SEARCH_REQUEST], "cursor": cursor(&r.body, "nextCursor").unwrap(), "count": 3});
    assert_eq!(user_names(&app.post("/scim/v2/Users/.search", &body).body), ["u3", "u4", "u5"]);
    let other = app.another_instance();
    assert_eq!(user_names(&list(&other, &format!("count=3&cursor={next}"))), ["u3", "u4", "u5"]);
}

#[test]
fn cursor_pages_follow_filters_and_sort_order() {
    let app = TestApp::spawn();
    // Created in an order unlike their names'.
    let names: Vec<String> = (0..9).map(|i| format!("n{}", (i * 4) % 9)).collect();
    for (i, name) in names.iter().enumerate() {
        app.create_user(&json!({"userName": name, "active": i % 3 != 0}));
    }
    let active = format!("filter={}&count=2", encode("active eq true"));
    let pages = walk_forward(&app, &active);
    let expected: Vec<&String> = names.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, n)| n).collect();
    assert_eq!(pages.concat().iter().collect::<Vec<_>>(), expected);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    assert_eq!(list(&app, &format!("{active}&cursor"))["totalResults"], 6);

    let sorted = "sortBy=userName&sortOrder=descending&count=4";
    let pages = walk_forward(&app, sorted);
    let mut descending = names.clone();
    descending.sort_by(|a, b| b.cmp(a));
    assert_eq!(pages.concat(), descending);
    // Back from the second page: the first.
    let first = list(&app, &format!("{sorted}&cursor"));
    let second = list(&app, &format!("{sorted}&cursor={}", cursor(&first, "nextCursor").unwrap()));
    let back = list(&app, &format!("{sorted}&cursor={}", cursor(&second, "previousCursor").unwrap()));
    assert_eq!(user_names(&back), user_names(&first));
    assert!(back.get("previousCursor").is_none());
}

#[test]
fn cursor_paging_with_count_zero_returns_only_the_total() {
    let app = with_users(5);
    for query in ["cursor&count=0", "cursor=&count=-4"] {
        let page = list(&app, query);
        assert_eq!(page["totalResults"], 5, "{query}");
        assert_eq!(page["itemsPerPage"], 0, "{query}");
        assert_eq!(page["Resources"], json!([]), "{query}");
        assert!(page.get("nextCursor").is_none() && page.get("previousCursor").is_none(), "{query}: {page}");
    }
    let filtered = list(&app, &format!("cursor&count=0&filter={}", encode("active eq false")));
    assert_eq!(filtered["totalResults"], 2);
}

#[test]
fn an_expired_cursor_is_refused_as_invalid_cursor_saying_it_expired() {
    let app = TestApp::spawn_with(|c| c.scim.cursor_timeout = 60);
    for i in 0..3 {
        app.create_user(&json!({"userName": format!("u{i}")}));
    }
    let first = list(&app, "cursor&count=1");
    app.clock.advance(chrono::Duration::seconds(55));
    let second = list(&app, &format!("count=1&cursor={}", cursor(&first, "nextCursor").unwrap()));
    assert_eq!(user_names(&second), ["u1"], "a cursor within cursorTimeout works");
    let next = cursor(&second, "nextCursor").unwrap();
    app.clock.advance(chrono::Duration::seconds(61));
    let r = app.get(&format!("/scim/v2/Users?count=1&cursor={next}"));
    assert_scim_error(&r, 400, Some("invalidCursor"));
    assert!(r.body["detail"].as_str().unwrap().contains("expired"), "{:?}", r.body);
    // The first page needs no cursor, and issues fresh ones.
    let again = list(&app, "cursor&count=1");
    assert_eq!(user_names(&list(&app, &format!("count=1&cursor={}", cursor(&again, "nextCursor").unwrap()))), ["u1"]);
}

#[test]
fn tampered_and_foreign_cursors_are_invalid_cursor() {
    let app = with_users(4);
    let next = cursor(&list(&app, "cursor&count=2"), "nextCursor").unwrap();
    let refused = |query: &str, scim_type: &str| {
        let r = app.get(&format!("/scim/v2/Users?{query}"));
        assert_scim_error(&r, 400, Some(scim_type));
    };
    // One character changed, anywhere.
    for at in [0, next.len() / 2, next.len() - 1] {
        let mut bytes = next.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        refused(&format!("count=2&cursor={}", String::from_utf8(bytes).unwrap()), "invalidCursor");
    }
    for junk in ["x", "v1.00000000.AAAA", &"A".repeat(3000), &next[..next.len() - 4]] {
        refused(&format!("count=2&cursor={}", encode(junk)), "invalidCursor");
    }
    // Issued for another query: another filter, another sort.
    refused(&format!("count=2&cursor={next}&filter={}", encode("active eq true")), "invalidCursor");
    refused(&format!("count=2&cursor={next}&sortBy=userName"), "invalidCursor");
    // Issued by another deployment (its own key).
    let elsewhere = with_users(3);
    let foreign = cursor(&list(&elsewhere, "cursor&count=2"), "nextCursor").unwrap();
    refused(&format!("count=2&cursor={foreign}"), "invalidCursor");
    // The RFC's other errors: a count other than the cursor's, or above maxPageSize.
    refused(&format!("count=3&cursor={next}"), "invalidCount");
    refused(&format!("cursor={next}"), "invalidCount");
    refused("cursor&count=1001", "invalidCount");
    // Index and cursor paging at once; cursors where only startIndex pages.
    refused(&format!("count=2&startIndex=3&cursor={next}"), "invalidValue");
    assert_scim_error(&app.get("/scim/v2/Groups?cursor"), 400, Some("invalidValue"));
    let r = app.post("/scim/v2/.search", &json!({"schemas": [SEARCH_REQUEST], "cursor": ""}));
    assert_scim_error(&r, 400, Some("invalidValue"));
    // The genuine cursor still works.
    assert_eq!(user_names(&list(&app, &format!("count=2&cursor={next}"))), ["u2", "u3"]);
}

#[test]
fn a_cursor_continues_after_its_place_when_users_around_it_are_deleted() {
    let app = TestApp::spawn();
    let ids: Vec<String> =
        (0..6).map(|i| app.create_user(&json!({"userName": format!("u{i}")}))["id"].as_str().unwrap().to_string()).collect();
    let first = list(&app, "cursor&count=2");
    let next = cursor(&first, "nextCursor").unwrap();
    for id in &ids[1..3] {
        assert_eq!(app.call("DELETE", &format!("/scim/v2/Users/{id}"), None).status, 204);
    }
    // Not shifted by the deletions: the users after u1, which is gone.
    let second = list(&app, &format!("count=2&cursor={next}"));
    assert_eq!(user_names(&second), ["u3", "u4"]);
    assert_eq!(second["totalResults"], 4);
    let back = list(&app, &format!("count=2&cursor={}", cursor(&second, "previousCursor").unwrap()));
    assert_eq!(user_names(&back), ["u0"]);
    assert!(back.get("previousCursor").is_none(), "nothing before u0: {back}");
}

#[test]
fn service_provider_config_advertises_both_ways_of_paging() {
    let app = TestApp::spawn();
    let config = app.get("/scim/v2/ServiceProviderConfig").body;
    assert_eq!(
        config["pagination"],
        json!({"cursor": true, "index": true, "defaultPaginationMethod": "index", "defaultPageSize": 100,
               "maxPageSize": 1000, "cursorTimeout": 600})
    );
    let app = TestApp::spawn_with(|c| {
        c.scim.cursor_timeout = 120;
        c.scim.max_page_size = 50;
        c.scim.default_page_size = 20;
    });
    let p = &app.get("/scim/v2/ServiceProviderConfig").body["pagination"];
    assert_eq!(
        (p["cursorTimeout"].clone(), p["maxPageSize"].clone(), p["defaultPageSize"].clone()),
        (json!(120), json!(50), json!(20))
    );
    // A request that names neither way pages by index, as before.
    assert!(list(&app, "count=1").get("startIndex").is_some());
}

/// Users present throughout a walk by `startIndex` pages appear in it exactly once while others
/// are created (after every existing one in the order) and deleted (anywhere, also before the
/// walk's position, which shifts every later position by one) meanwhile. No user appears twice.
#[test]
fn a_start_index_walk_sees_every_user_present_throughout_once_while_others_come_and_go() {
    const USERS: usize = 3000;
    const CHANGES: usize = 300;
    let app = TestApp::spawn();
    let ids: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let app = &app;
                s.spawn(move || {
                    (w..USERS)
                        .step_by(4)
                        .map(|i| (i, app.create_user(&json!({"userName": format!("u{i}")}))["id"].as_str().unwrap().to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, String)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        all.sort();
        all.into_iter().map(|(_, id)| id).collect()
    });
    // Every tenth user goes, in an order spread over the whole list.
    let doomed: Vec<&String> = (0..CHANGES).map(|k| &ids[((k * 7919) % CHANGES) * 10 + 5]).collect();
    let changes = AtomicUsize::new(0);
    let seen: Vec<String> = std::thread::scope(|s| {
        s.spawn(|| {
            for (k, id) in doomed.iter().enumerate() {
                app.create_user(&json!({"userName": format!("new{k}")}));
                assert_eq!(app.call("DELETE", &format!("/scim/v2/Users/{id}"), None).status, 204);
                changes.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut seen = Vec::new();
        let (mut start, mut pages) = (1, 0);
        loop {
            // Paced so that the changes run through the whole walk.
            let due = (pages * CHANGES / (USERS / 100)).min(CHANGES);
            let waiting = std::time::Instant::now();
            while changes.load(Ordering::SeqCst) < due {
                assert!(waiting.elapsed().as_secs() < 120, "the changes stalled");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let page = list(&app, &format!("startIndex={start}&count=100&attributes=id"));
            let got: Vec<String> =
                page["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
            if got.is_empty() {
                break;
            }
            start += got.len();
            pages += 1;
            seen.extend(got);
            assert!(pages < 100, "the walk ends");
        }
        seen
    });
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &seen {
        *times.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "users seen more than once: {twice:?}");
    let missed: Vec<_> = ids.iter().filter(|id| !doomed.contains(id) && !times.contains_key(id.as_str())).collect();
    assert!(missed.is_empty(), "{} users present throughout the walk were not seen, e.g. {:?}", missed.len(), missed.first());
    // The total kept by the database through all that equals a count of the users.
    let total = list(&app, "count=0")["totalResults"].clone();
    assert_eq!(total, json!(USERS));
    assert_eq!(list(&app, &format!("count=0&filter={}", encode("userName pr")))["totalResults"], total);
}

/// On a static set, pages by `startIndex` read one after another (each continuing after the
/// previous one's last user) equal the plain OFFSET pages: the same slice of the whole list,
/// asked for backwards by another client, with the same
/// `totalResults`; with and without a filter, for varied page sizes. Users are added between
/// rounds.
#[test]
fn start_index_pages_equal_offset_pages_on_a_static_set() {
    let app = TestApp::spawn();
    let filters = ["", "active eq true", "userName sw \"u1\""];
    let mut made = 0;
    for (round, more) in [7usize, 23, 31].into_iter().enumerate() {
        for i in made..made + more {
            app.create_user(&json!({"userName": format!("u{i}"), "active": (i * 5) % 7 < 4}));
        }
        made += more;
        let other = app.another_token(&format!("other-{round}"));
        let mut runner = TestRunner::new(Config { cases: 12, failure_persistence: None, ..Config::default() });
        let strategy = (1i64..15, 0..filters.len());
        let result = runner.run(&strategy, |(count, f)| {
            let filter = match filters[f] {
                "" => String::new(),
                text => format!("&filter={}", encode(text)),
            };
            let all = list(&app, &format!("startIndex=1&count=1000{filter}"));
            let total = all["totalResults"].as_i64().unwrap();
            let everyone = user_names(&all);
            prop_assert_eq!(total as usize, everyone.len());
            let slice = |start: i64| everyone.iter().skip(start as usize - 1).take(count as usize).cloned().collect::<Vec<_>>();
            // Forward, page after page.
            let mut starts = Vec::new();
            let mut start = 1;
            loop {
                let page = list(&app, &format!("startIndex={start}&count={count}{filter}"));
                prop_assert_eq!(&page["totalResults"], &json!(total));
                prop_assert_eq!(&page["startIndex"], &json!(start));
                prop_assert_eq!(user_names(&page), slice(start), "page at {} of {}", start, count);
                starts.push(start);
                if user_names(&page).is_empty() || start > total {
                    break;
                }
                start += count;
            }
            // The same pages backwards, by another client: positions counted from the start.
            for &start in starts.iter().rev() {
                let r = app.get_as(&other, &format!("/scim/v2/Users?startIndex={start}&count={count}{filter}"));
                prop_assert_eq!(r.status, 200);
                prop_assert_eq!(user_names(&r.body), slice(start), "OFFSET page at {} of {}", start, count);
            }
            Ok::<(), TestCaseError>(())
        });
        if let Err(e) = result {
            panic!("round {round}: {e}");
        }
    }
}

/// Pages at any `startIndex` of a list of more than a thousand users, asked for out of order by
/// a client that walked none of them (served from positions remembered every few hundred users),
/// are the pages of the whole list; after users before them are deleted, the pages of the new
/// list.
#[test]
fn pages_at_any_start_index_of_a_large_list_are_the_offset_pages() {
    const USERS: usize = 1200;
    let app = TestApp::spawn();
    std::thread::scope(|s| {
        for w in 0..4 {
            let app = &app;
            s.spawn(move || {
                for i in (w..USERS).step_by(4) {
                    app.create_user(&json!({"userName": format!("u{i}")}));
                }
            });
        }
    });
    let ids = |page: &Value| -> Vec<String> {
        page["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let everyone = || -> Vec<String> {
        let mut all = ids(&list(&app, "startIndex=1&count=1000&attributes=id"));
        all.extend(ids(&list(&app, "startIndex=1001&count=1000&attributes=id")));
        all
    };
    let other = app.another_token("jumper");
    let check = |all: &[String]| {
        for start in [1200, 501, 1001, 502, 777, 1000, 1150, 1199, 1, 1201, 1300] {
            let r = app.get_as(&other, &format!("/scim/v2/Users?startIndex={start}&count=100&attributes=id"));
            assert_eq!(r.status, 200);
            assert_eq!(r.body["totalResults"], json!(all.len()));
            let expected: Vec<String> = all.iter().skip(start - 1).take(100).cloned().collect();
            assert_eq!(ids(&r.body), expected, "the page at {start}");
        }
    };
    let all = everyone();
    assert_eq!(all.len(), USERS);
    check(&all);
    for id in [&all[9], &all[600], &all[1100]] {
        assert_eq!(app.call("DELETE", &format!("/scim/v2/Users/{id}"), None).status, 204);
    }
    let all = everyone();
    check(&all);
    // Once the remembered positions may be rebuilt.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    check(&all);
}
