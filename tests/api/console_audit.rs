//! The console's Audit page and its CSV: events of resets through the API and the console,
//! the filters, paging, the download, and escaping.

use chrono::{NaiveDate, TimeZone, Utc};
use provisiond::domain::operators::Role;
use serde_json::json;

use crate::console::{Console, Page};
use crate::helpers::TestApp;

/// The test clock's first day (UTC); the console's resets in these tests happen a day later.
const DAY_ONE: &str = "2026-03-10";
const DAY_TWO: &str = "2026-03-11";

fn start_on_day_one(app: &TestApp) {
    app.clock.set(Utc.with_ymd_and_hms(2026, 3, 10, 9, 0, 0).unwrap());
}

fn user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name}))["id"].as_str().unwrap().to_string()
}

fn api_reset(app: &TestApp, id: &str, reason: &str) {
    let r = app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": reason}));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

fn console_reset(console: &Console, id: &str, reason: &str) {
    let done = console.post("/console/users/reset", &[("id", id), ("reason", reason)]);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("1 reset"), "{}", done.body);
}

/// `text` as the pages escape it.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// The page's rows, as the text of their cells (tags dropped, entities kept).
fn rows(page: &Page) -> Vec<Vec<String>> {
    let body = page.body.split("<tbody>").nth(1).unwrap().split("</tbody>").next().unwrap();
    body.split("<tr>")
        .skip(1)
        .filter(|r| !r.contains("class=\"empty\""))
        .map(|r| {
            r.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = cell.split_once('>').unwrap().1.split("</td>").next().unwrap();
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in inner.chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text.trim().to_string()
                })
                .collect()
        })
        .collect()
}

/// The total the page names ("3 events").
fn total(page: &Page) -> i64 {
    let after = page.body.split("id=\"total\">").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

fn reasons(page: &Page) -> Vec<String> {
    rows(page).into_iter().filter(|r| r[1] == "mfa.reset").map(|r| r[5].clone()).collect()
}

#[test]
fn console_audit_shows_api_and_console_resets_newest_first_and_filters_them() {
    let app = TestApp::spawn();
    start_on_day_one(&app);
    let (ann, bob) = (user(&app, "ann"), user(&app, "bob"));
    api_reset(&app, &ann, "ann lost her phone");
    app.clock.advance(chrono::Duration::days(1));
    let olga = Console::sign_in(&app, "olga", Role::Admin);
    console_reset(&olga, &bob, "the phone of bob was stolen");

    let all = olga.get("/console/audit");
    assert_eq!(all.status, 200);
    assert!(all.body.contains("aria-current=\"page\">Audit</a>"), "the Audit section is the current one");
    assert_eq!(reasons(&all), ["the phone of bob was stolen", "ann lost her phone"], "newest first");
    let bob_row = rows(&all).into_iter().find(|r| r[1] == "mfa.reset" && r[2] == "bob").unwrap();
    assert_eq!((bob_row[3].as_str(), bob_row[4].as_str()), ("console", "olga"), "origin console, the operator as actor");
    let ann_row = rows(&all).into_iter().find(|r| r[1] == "mfa.reset" && r[2] == "ann").unwrap();
    assert!(!ann_row[6].is_empty(), "the API request's id is shown");
    assert!(all.body.contains(&format!("<a href=\"/console/users/{bob}\">bob</a>")), "the user links to their page");
    assert!(rows(&all).iter().any(|r| r[1] == "operator.signed_in"), "every event, not only resets");

    let resets = olga.get("/console/audit?type=mfa.reset");
    assert_eq!((total(&resets), rows(&resets).len()), (2, 2));
    assert!(resets.body.contains("value=\"mfa.reset\""), "the form keeps the filter");

    let from_console = olga.get("/console/audit?type=mfa.reset&origin=console");
    assert_eq!(reasons(&from_console), ["the phone of bob was stolen"]);
    assert!(from_console.body.contains("<option value=\"console\" selected>"));
    let from_api = olga.get("/console/audit?origin=api");
    assert_eq!(reasons(&from_api), ["ann lost her phone"]);
    assert!(rows(&from_api).iter().all(|r| r[3] == "api" && r[4] == "test"), "the token's name is the API's actor");

    let by_olga = olga.get("/console/audit?actor=olga&type=mfa.reset");
    assert_eq!(reasons(&by_olga), ["the phone of bob was stolen"]);
    assert_eq!(total(&olga.get("/console/audit?actor=nobody")), 0);

    // The user's page links here with the id; a userName (any case) finds the same events.
    let by_id = olga.get(&format!("/console/audit?user={ann}"));
    assert_eq!(reasons(&by_id), ["ann lost her phone"]);
    assert!(rows(&by_id).iter().all(|r| r[2] == "ann"));
    let by_name = olga.get("/console/audit?user=ANN");
    assert_eq!(rows(&by_name), rows(&by_id));
    assert!(by_name.body.contains("1 event of ann"), "{}", by_name.body);
    assert_eq!(total(&olga.get("/console/audit?user=nobody-of-that-name")), 0);

    // Dates are whole UTC days, both ends included.
    let day_one = olga.get(&format!("/console/audit?type=mfa.reset&from={DAY_ONE}&to={DAY_ONE}"));
    assert_eq!(reasons(&day_one), ["ann lost her phone"]);
    let day_two = olga.get(&format!("/console/audit?type=mfa.reset&from={DAY_TWO}"));
    assert_eq!(reasons(&day_two), ["the phone of bob was stolen"]);
    let until_two = olga.get(&format!("/console/audit?type=mfa.reset&to={DAY_TWO}"));
    assert_eq!(total(&until_two), 2);
    let before = olga.get("/console/audit?type=mfa.reset&to=2026-03-09");
    assert_eq!(total(&before), 0);
    assert!(before.body.contains("No event matches."));
}

#[test]
fn console_audit_shows_a_wrong_date_on_the_page_and_refuses_it_for_the_csv() {
    let app = TestApp::spawn();
    let olga = Console::sign_in(&app, "olga", Role::Admin);
    let wrong = olga.get("/console/audit?from=31.12.2026&type=mfa.reset");
    assert_eq!(wrong.status, 200, "not an error page");
    assert!(
        wrong.body.contains(&format!("id=\"date-problem\">{}", escaped("The from date \"31.12.2026\" is not a date"))),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains("value=\"31.12.2026\""), "the field keeps what was typed");
    assert!(wrong.body.contains("aria-invalid=\"true\""));
    assert!(!wrong.body.contains("Download CSV"));
    let reversed = olga.get("/console/audit?from=2026-03-11&to=2026-03-10");
    assert!(reversed.body.contains("The from date 2026-03-11 is after the to date 2026-03-10."), "{}", reversed.body);
    assert_eq!(olga.get("/console/audit.csv?to=tomorrow").status, 400);
}

#[test]
fn console_audit_pages_fifty_events_with_the_total() {
    let app = TestApp::spawn();
    let ids: Vec<String> = (0..55).map(|i| user(&app, &format!("u{i:02}"))).collect();
    let r = app.post("/api/v1/mfa/resets", &json!({"userIds": ids, "reason": "new phones for everyone"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let helpdesk = Console::sign_in(&app, "hana", Role::Helpdesk);

    let first = helpdesk.get("/console/audit?type=mfa.reset");
    assert_eq!((total(&first), rows(&first).len()), (55, 50));
    assert!(first.body.contains("55 events"));
    assert!(first.body.contains("Page 1 of 2"));
    assert!(first.body.contains("<a href=\"/console/audit?type=mfa.reset&#38;page=2\" rel=\"next\">Next</a>"), "{}", first.body);
    assert!(!first.body.contains("rel=\"prev\""));
    let second = helpdesk.get("/console/audit?type=mfa.reset&page=2");
    assert_eq!(rows(&second).len(), 5);
    assert!(second.body.contains("Page 2 of 2"));
    assert!(second.body.contains("<a href=\"/console/audit?type=mfa.reset&#38;page=1\">First</a>"));
    assert!(!second.body.contains("rel=\"next\""));
    let mut seen: Vec<String> = rows(&first).into_iter().chain(rows(&second)).map(|r| r[2].clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 55, "every event once over the two pages");
    assert_eq!(rows(&helpdesk.get("/console/audit?type=mfa.reset&page=9")).len(), 0, "past the end: an empty page");
}

/// Parses RFC 4180 CSV (quoted cells, doubled quotes, CRLF records).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut cell)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(record.is_empty() && cell.is_empty(), "the last record ends with CRLF");
    records
}

fn download(console: &Console, path: &str) -> (Page, Vec<Vec<String>>) {
    let page = console.get(path);
    assert_eq!(page.status, 200, "{}", page.body);
    let records = parse_csv(&page.body);
    (page, records)
}

#[test]
fn console_audit_csv_holds_every_matching_event_quoted_and_safe_from_formulas() {
    let app = TestApp::spawn();
    let (ann, bob) = (user(&app, "ann"), user(&app, "bob, jr."));
    api_reset(&app, &ann, "plain reason");
    let olga = Console::sign_in(&app, "olga", Role::Admin);
    let formula = "=HYPERLINK(\"http://evil.example\",\"click\")";
    console_reset(&olga, &bob, formula);
    console_reset(&olga, &ann, "-2+3");

    let page = olga.get("/console/audit?type=mfa.reset&origin=console");
    assert!(page.body.contains("href=\"/console/audit.csv?type=mfa.reset&#38;origin=console\" id=\"csv\""), "{}", page.body);

    let (csv, records) = download(&olga, "/console/audit.csv?type=mfa.reset&origin=console");
    let header = |name: &str| csv.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(header("content-disposition"), "attachment; filename=\"audit.csv\"");
    assert_eq!(header("cache-control"), "no-store", "the console's headers on the download too");
    assert_eq!(records[0], ["time", "type", "userId", "userName", "origin", "actor", "reason", "requestId", "detail"]);
    assert_eq!(records.len(), 3, "the header and the two console resets: {records:?}");
    let (newest, older) = (&records[1], &records[2]);
    assert_eq!(newest[1..7], ["mfa.reset", ann.as_str(), "ann", "console", "olga", "'-2+3"]);
    assert_eq!(older[1..7], ["mfa.reset", bob.as_str(), "bob, jr.", "console", "olga", &format!("'{formula}")]);
    assert!(chrono::DateTime::parse_from_rfc3339(&newest[0]).is_ok(), "an RFC 3339 time: {}", newest[0]);
    // As bytes: the comma and the quotes are quoted, the formula starts with an apostrophe.
    assert!(
        csv.body.contains(",\"bob, jr.\",console,olga,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\","),
        "{}",
        csv.body
    );
    assert!(csv.body.contains(",console,olga,'-2+3,"), "{}", csv.body);

    // Without filters: every event, the API's reset among them.
    let (_, everything) = download(&olga, "/console/audit.csv");
    let api = everything.iter().find(|r| r[1] == "mfa.reset" && r[4] == "api").unwrap();
    assert_eq!((api[3].as_str(), api[5].as_str(), api[6].as_str()), ("ann", "test", "plain reason"));
    assert!(!api[7].is_empty(), "the API request's id");
    assert!(everything.iter().any(|r| r[1] == "operator.signed_in" && r[4] == "console"));
    assert!(everything[1..].iter().all(|r| r.len() == 9));
}

#[test]
fn console_audit_csv_reads_past_its_chunks_newest_first_and_matches_the_page_total() {
    let app = TestApp::spawn();
    start_on_day_one(&app);
    // 2,500 events of one day, written straight to the store (the CSV reads 1,000 at a time).
    let at = NaiveDate::parse_from_str(DAY_ONE, "%Y-%m-%d").unwrap().and_hms_opt(10, 0, 0).unwrap();
    let names: Vec<String> = (0..2500).map(|i| format!("user{i:04}")).collect();
    let events: Vec<provisiond::store::audit::NewEvent> = names
        .iter()
        .enumerate()
        .map(|(i, name)| provisiond::store::audit::NewEvent {
            at: at + chrono::Duration::seconds(i as i64),
            event_type: "mfa.reset",
            user_id: Some(name),
            user_name: Some(name),
            origin: "cli",
            actor: "root",
            reason: Some("bulk import"),
            request_id: None,
            detail: None,
        })
        .collect();
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let mut conn = pool.get().unwrap();
    provisiond::store::write_tx(&mut conn, |tx| provisiond::store::audit::insert(tx, &events)).unwrap();
    drop(conn);
    app.clock.advance(chrono::Duration::days(1));
    let olga = Console::sign_in(&app, "olga", Role::Helpdesk);

    let page = olga.get(&format!("/console/audit?origin=cli&from={DAY_ONE}&to={DAY_ONE}&actor=root"));
    assert_eq!(total(&page), 2500);
    assert!(page.body.contains("Page 1 of 50"));
    let last = olga.get(&format!("/console/audit?origin=cli&from={DAY_ONE}&to={DAY_ONE}&actor=root&page=50"));
    assert_eq!(
        rows(&last).iter().map(|r| r[2].clone()).collect::<Vec<_>>(),
        names[..50].iter().rev().cloned().collect::<Vec<_>>()
    );

    let (_, records) = download(&olga, &format!("/console/audit.csv?origin=cli&from={DAY_ONE}&to={DAY_ONE}&actor=root"));
    let users: Vec<&str> = records[1..].iter().map(|r| r[3].as_str()).collect();
    let expected: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    assert_eq!(users, expected, "all 2,500, newest first, none twice");
    let (_, next_day) = download(&olga, &format!("/console/audit.csv?origin=cli&from={DAY_TWO}"));
    assert!(next_day[1..].iter().all(|r| r[5] != "root"), "none of the first day's events: {next_day:?}");
}

#[test]
fn console_audit_shows_user_names_and_reasons_as_text() {
    let app = TestApp::spawn();
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(1)>";
    let (a, b) = (user(&app, script), user(&app, img));
    let hana = Console::sign_in(&app, "hana", Role::Helpdesk);
    console_reset(&hana, &a, script);
    console_reset(&hana, &b, img);
    for path in
        ["/console/audit".to_string(), format!("/console/audit?user={a}"), format!("/console/audit?actor={}", "%3Cscript%3E")]
    {
        let page = hana.get(&path);
        assert_eq!(page.status, 200);
        assert!(!page.body.contains(script) && !page.body.contains("<img src=x"), "{path}: {}", page.body);
    }
    let all = hana.get("/console/audit");
    assert!(all.body.contains(&format!(">{}</a>", escaped(script))), "the userName as text: {}", all.body);
    assert!(all.body.contains(&format!(">{}</a>", escaped(img))), "{}", all.body);
    assert!(all.body.contains(&format!("<td>{}</td>", escaped(script))), "the reason as text");
    let of_a = hana.get(&format!("/console/audit?user={a}"));
    assert!(of_a.body.contains(&format!("1 event of {}", escaped(script))), "{}", of_a.body);
}

#[test]
fn console_audit_is_for_every_signed_in_operator_and_nobody_else() {
    let app = TestApp::spawn();
    let hana = Console::sign_in(&app, "hana", Role::Helpdesk);
    let page = hana.get("/console/audit");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<h1>Audit</h1>"));
    assert!(!page.body.contains("/console/tokens"), "a helpdesk operator sees no admin sections");
    assert_eq!(hana.get("/console/audit.csv").status, 200);
    for path in ["/console/audit", "/console/audit.csv"] {
        let anonymous = crate::console::browser().get(&format!("{}{path}", app.base)).call().unwrap();
        assert_eq!(anonymous.status().as_u16(), 303, "{path}");
        assert_eq!(crate::console::header(&anonymous, "location"), "/console/sign-in");
    }
}
