//! Listing users: filters answered in SQL, paging, sorting, projections and `.search`.

use serde_json::json;

use crate::helpers::{assert_scim_error, encode, user_names, TestApp};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Five users with varied attributes, created in this order.
fn populated() -> TestApp {
    let app = TestApp::spawn();
    let people = [
        ("alice", "Alice", "Adams", "alice@example.com", "work", "Eng", true, "e-1"),
        ("bob", "Bob", "Brown", "bob@home.example.org", "home", "Sales", true, "e-2"),
        ("carol", "Carol", "Clark", "carol@example.com", "work", "Eng", false, "E-3"),
        ("dave_x", "Dave", "Davis", "dave@example.com", "other", "Ops", true, "e-4"),
        ("Erin%", "Erin", "Evans", "erin@example.com", "work", "Sales", true, "e-5"),
    ];
    for (user, given, family, mail, mail_type, dept, active, ext) in people {
        app.create_user(&json!({
            "userName": user,
            "externalId": ext,
            "name": {"givenName": given, "familyName": family},
            "emails": [{"value": mail, "type": mail_type, "primary": true}],
            "active": active,
            ENTERPRISE: {"department": dept},
        }));
    }
    app
}

#[test]
fn filters_cover_the_rfc_grammar() {
    let app = populated();
    let cases: &[(&str, &[&str])] = &[
        (r#"userName eq "ALICE""#, &["alice"]),
        (r#"USERNAME Eq "bob""#, &["bob"]),
        (r#"userName ne "alice""#, &["bob", "carol", "dave_x", "Erin%"]),
        (r#"userName co "AR""#, &["carol"]),
        (r#"userName sw "c""#, &["carol"]),
        (r#"userName ew "E""#, &["alice"]),
        (r#"userName co "_""#, &["dave_x"]),
        (r#"userName ew "%""#, &["Erin%"]),
        (r#"userName gt "c""#, &["carol", "dave_x", "Erin%"]),
        (r#"userName le "bob""#, &["alice", "bob"]),
        (r#"externalId eq "E-3""#, &["carol"]),
        (r#"externalId eq "e-3""#, &[]), // externalId is caseExact
        (r#"name.familyName eq "brown""#, &["bob"]),
        (r#"emails co "example.com""#, &["alice", "carol", "dave_x", "Erin%"]),
        (r#"emails.value ew "example.org""#, &["bob"]),
        (r#"emails[type eq "work"]"#, &["alice", "carol", "Erin%"]),
        (r#"emails[type eq "work" and value sw "c"]"#, &["carol"]),
        (r#"emails[type eq "work"] and not (userName eq "alice")"#, &["carol", "Erin%"]),
        (r#"active eq false"#, &["carol"]),
        (r#"active eq true and (name.givenName sw "a" or name.givenName sw "b")"#, &["alice", "bob"]),
        (r#"userName eq "alice" or userName eq "bob" and active eq false"#, &["alice"]),
        (r#"(userName eq "alice" or userName eq "bob") and active eq true"#, &["alice", "bob"]),
        (r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "eng""#, &["alice", "carol"]),
        (r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "dave_x""#, &["dave_x"]),
        (r#"displayName pr"#, &[]),
        (r#"name.givenName pr and not (externalId pr)"#, &[]),
        (r#"meta.created gt "2000-01-01T00:00:00Z""#, &["alice", "bob", "carol", "dave_x", "Erin%"]),
        (r#"meta.lastModified lt "2000-01-01T00:00:00Z""#, &[]),
    ];
    for (filter, expected) in cases {
        let list = app.filter(filter);
        assert_eq!(user_names(&list), *expected, "filter {filter}");
        assert_eq!(list["totalResults"], json!(expected.len()), "filter {filter}");
    }
}

#[test]
fn bad_filters_are_invalid_filter() {
    let app = populated();
    for f in [
        r#"userName eq"#,
        r#"userName xx "a""#,
        r#"nosuch eq "a""#,
        r#"(userName eq "a""#,
        r#"active gt true"#,
        r#"meta.created gt "not a date""#,
        r#"meta.created sw "2026""#,
        &"(".repeat(100),
        &format!("userName eq \"{}\"", "a".repeat(5000)),
    ] {
        let r = app.get(&format!("/scim/v2/Users?filter={}", encode(f)));
        assert_scim_error(&r, 400, Some("invalidFilter"));
    }
}

#[test]
fn existence_checks_of_identity_providers_return_empty_lists() {
    let app = populated();
    for f in [
        r#"userName eq "nobody@example.com""#,
        r#"externalId eq "00uNOPE""#,
        r#"emails[type eq "work"].value eq "nobody@example.com""#,
    ] {
        let list = app.filter(f);
        assert_eq!(list["totalResults"], 0, "{f}");
        assert_eq!(list["Resources"], json!([]), "{f}");
        assert_eq!(list["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
    }
    // The same checks find the user when it exists (emails compare ignoring case).
    assert_eq!(user_names(&app.filter(r#"emails[type eq "work"].value eq "ALICE@example.com""#)), ["alice"]);
    assert_eq!(user_names(&app.filter(r#"emails[type eq "home"].value eq "alice@example.com""#)), Vec::<String>::new());
    assert_eq!(user_names(&app.filter(r#"externalId eq "e-2""#)), ["bob"]);
}

#[test]
fn paging_is_one_based_stable_and_clamped() {
    let app = TestApp::spawn_with(|c| c.scim.max_page_size = 3);
    for i in 0..8 {
        app.create_user(&json!({"userName": format!("user{i}")}));
    }
    let page = |q: &str| app.get(&format!("/scim/v2/Users?{q}")).body;
    let first = page("startIndex=1&count=3");
    assert_eq!(user_names(&first), ["user0", "user1", "user2"]);
    assert_eq!(first["totalResults"], json!(8));
    assert_eq!(first["itemsPerPage"], json!(3));
    assert_eq!(first["startIndex"], json!(1));
    assert_eq!(user_names(&page("startIndex=4&count=3")), ["user3", "user4", "user5"]);
    assert_eq!(user_names(&page("startIndex=7&count=3")), ["user6", "user7"]);
    // count above the maximum is clamped; startIndex below 1 counts as 1.
    let clamped = page("startIndex=0&count=1000");
    assert_eq!(user_names(&clamped), ["user0", "user1", "user2"]);
    assert_eq!(clamped["startIndex"], json!(1));
    // count=0: totals only.
    let totals = page("count=0");
    assert_eq!(totals["totalResults"], json!(8));
    assert_eq!(totals["itemsPerPage"], json!(0));
    assert_eq!(totals["Resources"], json!([]));
    // Beyond the end: an empty page with the total.
    let beyond = page("startIndex=50");
    assert_eq!(beyond["totalResults"], json!(8));
    assert_eq!(beyond["Resources"], json!([]));
    assert_scim_error(&app.get("/scim/v2/Users?count=many"), 400, Some("invalidValue"));
}

#[test]
fn sort_by_any_attribute_in_either_order() {
    let app = populated();
    let names = |q: &str| user_names(&app.get(&format!("/scim/v2/Users?{q}")).body);
    assert_eq!(names("sortBy=userName"), ["alice", "bob", "carol", "dave_x", "Erin%"]);
    assert_eq!(names("sortBy=userName&sortOrder=descending"), ["Erin%", "dave_x", "carol", "bob", "alice"]);
    assert_eq!(names("sortBy=name.familyName&sortOrder=descending")[0], "Erin%");
    assert_eq!(
        names(&format!("sortBy={}&filter={}", encode("emails.value"), encode("active eq true"))),
        ["alice", "bob", "dave_x", "Erin%"]
    );
    // Users without the attribute come last.
    app.create_user(&json!({"userName": "aaron"}));
    assert_eq!(names("sortBy=name.givenName").last().unwrap(), "aaron");
    assert_scim_error(&app.get("/scim/v2/Users?sortBy=nosuch"), 400, Some("invalidValue"));
}

#[test]
fn list_projection_applies_to_every_resource() {
    let app = populated();
    let list = app.get("/scim/v2/Users?attributes=userName&count=2").body;
    for r in list["Resources"].as_array().unwrap() {
        let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "schemas", "userName"]);
    }
    let list = app.get("/scim/v2/Users?excludedAttributes=emails,name").body;
    assert!(list["Resources"][0].get("emails").is_none());
    assert!(list["Resources"][0].get("userName").is_some());
}

#[test]
fn search_endpoints_take_a_search_request() {
    let app = populated();
    let req = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "emails[type eq \"work\"]",
        "attributes": ["userName", "active"],
        "sortBy": "userName",
        "sortOrder": "descending",
        "startIndex": 1,
        "count": 2,
    });
    for path in ["/scim/v2/Users/.search", "/scim/v2/.search"] {
        let r = app.post(path, &req);
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        assert_eq!(user_names(&r.body), ["Erin%", "carol"], "{path}");
        assert_eq!(r.body["totalResults"], json!(3));
        assert!(r.body["Resources"][0].get("emails").is_none());
    }
    let bad = app.post("/scim/v2/Users/.search", &json!({"filter": "userName eq"}));
    assert_scim_error(&bad, 400, Some("invalidFilter"));
    let bad = app.post("/scim/v2/Users/.search", &json!({"attributes": [1, 2]}));
    assert_scim_error(&bad, 400, Some("invalidSyntax"));
}

#[test]
fn filters_on_indexed_attributes_use_an_index() {
    // Filters on userName, externalId, id, emails and meta.lastModified must be answered by an
    // index: ask the database for the plan of the very SQL the filter compiler produces.
    let app = populated();
    // (filter, the index SQLite names in its plan, the index PostgreSQL names)
    let cases = [
        (r#"userName eq "alice""#, "user_name_key", "users_user_name_key_key"),
        (r#"externalId eq "e-1""#, "users_external_id", "users_external_id"),
        (r#"id eq "x""#, "(id=?)", "users_pkey"),
        (r#"meta.lastModified gt "2020-01-01T00:00:00Z""#, "users_updated_at", "users_updated_at"),
        (r#"emails.value eq "alice@example.com""#, "user_values_lookup", "user_values_lookup"),
        (r#"emails[type eq "work"].value eq "alice@example.com""#, "user_values_lookup", "user_values_lookup"),
        (r#"emails[type eq "work" and value eq "alice@example.com"]"#, "user_values_lookup", "user_values_lookup"),
    ];
    for (filter, sqlite_index, postgres_index) in cases {
        let parsed = provisiond::scim::filter::parse_filter(filter).unwrap();
        let condition =
            provisiond::store::user_filter::compile(&provisiond::scim::schema::USER_RESOURCE, &parsed).unwrap().text();
        let sql = format!("SELECT id FROM users WHERE {condition}");
        let (plan, index, full_scan) = match crate::helpers::backend() {
            crate::helpers::Backend::Sqlite => (explain_sqlite(&app, &sql), sqlite_index, "SCAN users"),
            // A table of a few rows is rightly scanned by PostgreSQL's planner: with sequential
            // scans priced out it must still find an index, or the filter has none to use.
            crate::helpers::Backend::Postgres => {
                (explain_postgres(&app, &sql.replace('?', "'2020-01-01 00:00:00'")), postgres_index, "Seq Scan on users")
            }
        };
        assert!(plan.contains(index), "{filter}\n{sql}\n{plan}");
        assert!(!plan.contains(full_scan), "full scan for {filter}\n{sql}\n{plan}");
    }
}

fn explain_sqlite(app: &TestApp, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(app.db_path())
        .arg(format!("EXPLAIN QUERY PLAN {sql}"))
        .output()
        .expect("sqlite3 is installed (apt-get install -y sqlite3)");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain_postgres(app: &TestApp, sql: &str) -> String {
    explain_postgres_pricing_out(app, sql, &["enable_seqscan"])
}

/// The plan PostgreSQL finds with these kinds of plan nodes priced out (as if the tables were
/// large): it still finds one without them, or the query has no other way.
fn explain_postgres_pricing_out(app: &TestApp, sql: &str, off: &[&str]) -> String {
    let server = app.db.server.as_ref().unwrap();
    let settings: Vec<String> = off.iter().map(|s| format!("SET {s} = off")).collect();
    let mut args: Vec<&str> = vec!["-X", "-q"];
    for s in &settings {
        args.extend(["-c", s.as_str()]);
    }
    let explain = format!("EXPLAIN {sql}");
    args.extend(["-c", explain.as_str()]);
    let out = std::process::Command::new(crate::postgres::bin("psql"))
        .arg(server.url_of(crate::postgres::DATABASE))
        .args(&args)
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn negations_keep_users_without_the_attribute() {
    let app = TestApp::spawn();
    app.create_user(&json!({"userName": "with", "externalId": "x"}));
    app.create_user(&json!({"userName": "without"}));
    assert_eq!(user_names(&app.filter(r#"not (externalId eq "x")"#)), ["without"]);
    assert_eq!(user_names(&app.filter(r#"externalId ne "x""#)), ["without"]);
    assert_eq!(user_names(&app.filter(r#"not (externalId sw "y")"#)), ["with", "without"]);
}

/// Every attribute `sortBy` accepts, as a client would name it.
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
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:status",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:enrolledAt",
    "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:lastResetAt",
];

#[test]
fn every_sort_walks_an_index_instead_of_sorting_all_users() {
    let app = populated();
    for attr in SORTABLE {
        let path = provisiond::scim::filter::parse_path(attr).unwrap().attr;
        let key = provisiond::store::user_filter::sort_key(&provisiond::scim::schema::USER_RESOURCE, &path).unwrap();
        for descending in [false, true] {
            let sql = provisiond::store::user_sort::sort_walk_sql(&key, descending);
            match crate::helpers::backend() {
                crate::helpers::Backend::Sqlite => {
                    let plan = explain_sqlite(&app, &sql);
                    assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "sortBy={attr}: a sort of every user\n{sql}\n{plan}");
                    assert!(plan.contains("USING") && plan.contains("INDEX"), "sortBy={attr}\n{sql}\n{plan}");
                }
                crate::helpers::Backend::Postgres => {
                    let off = ["enable_seqscan", "enable_bitmapscan", "enable_sort"];
                    let plan = explain_postgres_pricing_out(&app, &sql.replace('?', "'x'"), &off);
                    assert!(plan.contains("Index"), "sortBy={attr}\n{sql}\n{plan}");
                    assert!(
                        !plan.lines().any(|l| l.trim_start().starts_with("->  Sort") || l.starts_with("Sort")),
                        "sortBy={attr}: a full sort\n{sql}\n{plan}"
                    );
                }
            }
        }
    }
}

#[test]
fn multi_valued_attributes_sort_by_their_primary_value_and_pages_cross_into_users_without_one() {
    let app = TestApp::spawn();
    // The primary email is the second one: it is what the user is sorted by (RFC 7644 §3.4.2.3).
    app.create_user(&json!({"userName": "u1", "emails": [{"value": "a@x"}, {"value": "z@x", "primary": true}], "title": "b"}));
    app.create_user(&json!({"userName": "u2", "emails": [{"value": "m@x"}], "title": "a"}));
    app.create_user(&json!({"userName": "u3"}));
    app.create_user(&json!({"userName": "u4", "emails": [{"value": "b@x"}, {"value": "c@x"}]}));
    app.create_user(&json!({"userName": "u5", "title": "c"}));
    let names = |q: &str| user_names(&app.get(&format!("/scim/v2/Users?{q}")).body);
    // Users without the attribute come last, in id order (ids are random: compare as a set).
    let last_two = |mut v: Vec<String>| {
        let mut tail = v.split_off(3);
        tail.sort();
        (v, tail)
    };
    assert_eq!(
        last_two(names("sortBy=emails.value")),
        (vec!["u4".into(), "u2".into(), "u1".into()], vec!["u3".into(), "u5".into()])
    );
    assert_eq!(
        last_two(names("sortBy=emails&sortOrder=descending")),
        (vec!["u1".into(), "u2".into(), "u4".into()], vec!["u3".into(), "u5".into()])
    );
    let mut nobody = names("sortBy=externalId");
    nobody.sort();
    assert_eq!(nobody, ["u1", "u2", "u3", "u4", "u5"], "nobody has one: all of them, last");
    // Pages of two, through the boundary between users with a title and users without.
    for order in ["ascending", "descending"] {
        let whole = names(&format!("sortBy=title&sortOrder={order}"));
        let mut paged = Vec::new();
        for start in [1, 3, 5] {
            paged.extend(names(&format!("sortBy=title&sortOrder={order}&count=2&startIndex={start}")));
        }
        assert_eq!(paged, whole, "{order}");
        let mut without: Vec<String> = whole[3..].to_vec();
        without.sort();
        assert_eq!(without, ["u3", "u4"], "{order}: without a title last");
    }
    let totals = app.get("/scim/v2/Users?sortBy=title&count=2&startIndex=5").body;
    assert_eq!(totals["totalResults"], 5);
    // A change of the primary email moves the user.
    let u4 = app.filter("userName eq \"u4\"")["Resources"][0]["id"].as_str().unwrap().to_string();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "emails", "value": [{"value": "y@x", "primary": true}]}]});
    assert_eq!(app.call("PATCH", &format!("/scim/v2/Users/{u4}"), Some(&patch)).status, 200);
    assert_eq!(names("sortBy=emails.value")[..3], ["u2", "u4", "u1"]);
}

#[test]
fn an_empty_filter_is_invalid_and_huge_counts_are_clamped() {
    let app = populated();
    for q in ["filter=", "filter=%20%20", "FILTER="] {
        assert_scim_error(&app.get(&format!("/scim/v2/Users?{q}")), 400, Some("invalidFilter"));
    }
    assert_scim_error(&app.post("/scim/v2/Users/.search", &json!({"filter": ""})), 400, Some("invalidFilter"));
    // count beyond 64 bits is clamped to scim.max_page_size like any large count (README).
    let all = app.get("/scim/v2/Users?count=999999999999999999999");
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!((all.body["totalResults"].as_i64(), all.body["itemsPerPage"].as_i64()), (Some(5), Some(5)));
    let none = app.get("/scim/v2/Users?count=-999999999999999999999");
    assert_eq!((none.status, none.body["itemsPerPage"].as_i64(), none.body["totalResults"].as_i64()), (200, Some(0), Some(5)));
    let past = app.get("/scim/v2/Users?startIndex=999999999999999999999");
    assert_eq!(
        (past.status, past.body["itemsPerPage"].as_i64(), past.body["totalResults"].as_i64()),
        (200, Some(0), Some(5)),
        "{:?}",
        past.body
    );
    assert_scim_error(&app.get("/scim/v2/Users?count=lots"), 400, Some("invalidValue"));
}
