//! Enrolment links in the console: "Create enrolment link" on a user's page, and a reset with
//! "Also create enrolment links" ticked, whose page lists every link with a CSV download.

use crate::console::Console;
use crate::enrolment::{app, new_user, open, PUBLIC_URL};
use crate::helpers::TestApp;
use provisiond::domain::operators::Role;

/// The links on a page, as URLs on the test daemon.
fn links_on(app: &TestApp, html: &str) -> Vec<String> {
    html.split("<code class=\"link\" id=\"link-")
        .skip(1)
        .map(|s| s.split('>').nth(1).unwrap().split('<').next().unwrap().replace(PUBLIC_URL, &app.base))
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
}

#[test]
fn create_enrolment_link_on_a_users_page_shows_the_link_once_and_an_enrolled_user_is_told_to_reset_first() {
    let app = app();
    let c = Console::sign_in(&app, "helen", Role::Helpdesk);
    let id = new_user(&app, "pending-user");
    let page = c.get(&format!("/console/users/{id}"));
    assert!(page.body.contains(">Create enrolment link</button>"), "{}", page.body);

    let created = c.post(&format!("/console/users/{id}/enrolment-link"), &[]);
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body.contains("1 of 1 link created") && created.body.contains("only on this page"), "{}", created.body);
    let links = links_on(&app, &created.body);
    assert_eq!(links.len(), 1);
    assert_eq!(open(&links[0]).status, 200, "the link opens the enrolment page");

    let without_token = c.post_raw(&format!("/console/users/{id}/enrolment-link"), &[]);
    assert_eq!(without_token.status, 403, "CSRF token required");

    let enrolled = new_user(&app, "enrolled-user");
    crate::mfa::enrol(&app, &enrolled);
    let page = c.get(&format!("/console/users/{enrolled}"));
    assert!(!page.body.contains(">Create enrolment link</button>") && page.body.contains("reset the factor first"));
    let refused = c.post(&format!("/console/users/{enrolled}/enrolment-link"), &[]);
    assert!(refused.body.contains("0 of 1 link created") && refused.body.contains("reset it first"), "{}", refused.body);

    let events = app.get(&format!("/api/v1/audit?userId={id}&type=mfa.enrolment_link.created")).body;
    let event = &events["events"][0];
    assert_eq!((event["origin"].as_str(), event["actor"].as_str()), (Some("console"), Some("helen")), "{events}");
}

#[test]
fn a_reset_with_also_create_enrolment_links_lists_a_link_per_user_with_a_csv_download() {
    let app = app();
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let ids: Vec<String> = ["ann", "ben", "<b>cy</b>"].iter().map(|n| new_user(&app, n)).collect();
    crate::mfa::enrol(&app, &ids[0]);
    let mut form: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
    form.extend([("reason", "phones replaced"), ("links", "1")]);
    let done = c.post("/console/users/reset", &form);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Multi-factor authentication reset for 3 users."), "{}", done.body);
    assert!(done.body.contains("3 of 3 links created"), "{}", done.body);
    assert!(done.body.contains("&#60;b&#62;cy&#60;/b&#62;") && !done.body.contains("<b>cy</b>"), "names escaped");
    let links = links_on(&app, &done.body);
    assert_eq!(links.len(), 3);
    for l in &links {
        assert_eq!(open(l).status, 200, "{l}");
    }
    // "Download (.csv)" sends the links back and gets them as a file.
    let field = done.body.split("name=\"csv\" value=\"").nth(1).expect("the CSV travels in the form").split('"').next().unwrap();
    let csv = unescape(field);
    let file = c.post("/console/users/enrolment-links.csv", &[("csv", &csv)]);
    assert_eq!(file.status, 200);
    assert_eq!(file.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(file.headers["content-disposition"], "attachment; filename=\"enrolment-links.csv\"");
    assert_eq!(file.body, csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "userName,userId,url,expiresAt,problem,email");
    assert_eq!(lines.len(), 4, "{csv}");
    for (line, id) in lines[1..].iter().zip(&ids) {
        assert!(line.contains(id.as_str()) && line.contains(&format!("{PUBLIC_URL}/enrol/")), "{line}");
    }
    // Ten thousand links make a form of a few megabytes: it is accepted.
    let big = format!("{}\r\n", "x".repeat(200)).repeat(10_000);
    let file = c.post("/console/users/enrolment-links.csv", &[("csv", &big)]);
    assert_eq!((file.status, file.body.len()), (200, big.len()));
    assert_eq!(c.post_raw("/console/users/enrolment-links.csv", &[("csv", &csv)]).status, 403, "CSRF token required");
    for id in &ids {
        assert_eq!(app.get(&format!("/api/v1/users/{id}/mfa")).body["status"], "pending");
    }
}

#[test]
fn without_a_public_url_a_reset_asking_for_links_is_refused_before_anything_is_reset() {
    let app = TestApp::spawn();
    let c = Console::sign_in(&app, "alice", Role::Admin);
    let id = new_user(&app, "kept");
    crate::mfa::enrol(&app, &id);
    let pending = new_user(&app, "pending");
    let page = c.get(&format!("/console/users/{pending}"));
    assert!(page.body.contains("Enrolment links need <code>server.public_url</code>"), "{}", page.body);
    assert!(!page.body.contains("Create enrolment link</button>"), "no button that can only fail");
    let dialog = c.get(&format!("/console/users/reset?id={id}"));
    assert!(dialog.body.contains("value=\"1\" disabled> Also create enrolment links"), "{}", dialog.body);
    assert!(dialog.body.contains("Enrolment links need <code>server.public_url</code>"));
    // A form sent anyway (an old page, a crafted request) is refused before anything is reset.
    let refused = c.post("/console/users/reset", &[("id", &id), ("reason", "lost phone"), ("links", "1")]);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("Enrolment links need server.public_url"), "{}", refused.body);
    assert_eq!(app.get(&format!("/api/v1/users/{id}/mfa")).body["status"], "enrolled", "nothing was reset");
}
