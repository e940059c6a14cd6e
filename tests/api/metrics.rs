//! `GET /metrics`: Prometheus text, admin scope, routes by template, users and MFA events from
//! the database. (nextest runs each test in its own process, so the counters are this test's.)

use serde_json::json;

use crate::helpers::TestApp;
use crate::raw_http::RawClient;
use provisiond::domain::tokens::{Scope, Tokens};

/// The value of the sample named exactly `series` (name and labels as exposed).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn metrics_count_requests_by_route_template_and_read_users_and_resets_from_the_store() {
    let app = TestApp::spawn();
    let id = app.create_user(&json!({"userName": "ada"}))["id"].as_str().unwrap().to_string();
    app.create_user(&json!({"userName": "bob", "active": false}));
    assert_eq!(app.get(&format!("/scim/v2/Users/{id}")).status, 200);
    assert_eq!(app.get("/scim/v2/Users/nope").status, 404);
    assert_eq!(app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "lost"})).status, 200);

    let r = app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", app.token))]);
    assert_eq!(r.status, 200);
    assert!(r.content_type.as_deref().unwrap_or_default().starts_with("text/plain"), "{:?}", r.content_type);
    let text = r.body.as_str().unwrap().to_string();
    let created = r#"provisiond_http_requests_total{method="POST",route="/scim/v2/Users",status="201"}"#;
    assert_eq!(sample(&text, created), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, r#"provisiond_http_requests_total{method="GET",route="/scim/v2/Users/{id}",status="404"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, r#"provisiond_scim_operations_total{operation="get",status="200"}"#), Some(1.0));
    assert!(text.contains(r#"provisiond_http_request_duration_seconds_bucket{method="GET",route="/scim/v2/Users/{id}",le="#));
    assert!(!text.contains(&id), "ids never become labels");
    assert_eq!(sample(&text, r#"provisiond_users{active="true",source="scim"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"provisiond_users{active="false",source="scim"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"provisiond_mfa_events{event="mfa.reset",origin="api"}"#), Some(1.0));
    assert!(sample(&text, r#"provisiond_db_pool_connections{state="open"}"#).is_some_and(|n| n >= 1.0));
    assert!(!text.contains(&app.token), "no token in the output");
}

#[test]
fn metrics_need_the_admin_scope() {
    let app = TestApp::spawn();
    assert_eq!(app.raw("GET", "/metrics", None, &[]).status, 401);
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let scim = Tokens::new(pool, std::sync::Arc::new(provisiond::clock::SystemClock)).create("idp", &[Scope::Scim]).unwrap();
    assert_eq!(app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", scim.expose()))]).status, 403);
}

/// The number of series of the request counter and of the latency histogram.
fn request_series(app: &TestApp) -> (usize, usize, String) {
    let r = app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", app.token))]);
    assert_eq!(r.status, 200);
    let text = r.body.as_str().unwrap().to_string();
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    (count("provisiond_http_requests_total{"), count("provisiond_http_request_duration_seconds_count{"), text)
}

/// This process's resident memory in KiB (the daemon runs inside the test process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Requests without a token, with made-up methods and paths, on one keep-alive connection.
fn junk_requests(app: &TestApp, from: usize, n: usize) {
    let mut client = RawClient::new(&app.base);
    for i in from..from + n {
        let (method, path) = match i % 3 {
            0 => (format!("M{i:05}AAAAAAAAAAAAAAAAAAAA"), "/scim/v2/Users".to_string()),
            1 => ("GET".to_string(), format!("/junk/{i:05}/aaaaaaaaaaaaaaaaaaaa")),
            _ => (format!("X{i:05}BBBBBBBBBBBB"), format!("/scim/v2/Users/{i:05}/zzz")),
        };
        let r = client.send(&format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0"), b"");
        assert!((400..500).contains(&r.status), "{method} {path}: {}", r.status);
    }
}

#[test]
fn junk_methods_and_paths_leave_the_metric_series_and_memory_flat() {
    let app = TestApp::spawn();
    junk_requests(&app, 0, 600);
    request_series(&app); // the scrape itself is a series too
    let (requests, durations, _) = request_series(&app);
    let rss = rss_kib();

    junk_requests(&app, 600, 10_000);
    let (requests_after, durations_after, text) = request_series(&app);
    assert_eq!((requests_after, durations_after), (requests, durations), "junk made new series:\n{text}");
    assert!(!text.contains("M00") && !text.contains("X00") && !text.contains("/junk/"), "junk became a label:\n{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB over 10,000 junk requests");
}
