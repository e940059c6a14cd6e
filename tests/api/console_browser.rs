//! The console in a real browser (headless chromium through chromedriver): an operator's setup,
//! signing in with a TOTP code, searching, the row menu and the bulk reset with their dialogs,
//! and what a helpdesk operator sees; screenshots go to target/console-screenshots/.

use std::path::PathBuf;

use chrono::Duration;
use serde_json::{json, Value};

use provisiond::clock::Clock;
use provisiond::domain::audit::{Actor, Origin};
use provisiond::domain::mfa::Policy;
use provisiond::domain::operators::Role;

use crate::console::{operator_with_role, services};
use crate::helpers::TestApp;
use crate::webdriver::Browser;

const PASSWORD: &str = "a long and unguessable passphrase";

/// Where the screenshots go: target/console-screenshots/.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("console-screenshots")
}

pub(crate) fn shoot(browser: &Browser, name: &str) -> PathBuf {
    let path = screenshots().join(format!("{name}.png"));
    browser.screenshot(&path);
    println!("screenshot: {}", path.display());
    path
}

/// The code an authenticator app with `secret` shows now, on the app's clock.
fn code(app: &TestApp, secret: &[u8]) -> String {
    Policy::from_config(&app.config.mfa).code_at(secret, Clock::now(&*app.clock).timestamp() as u64)
}

/// Signs in through the sign-in page; the browser ends on the Users page.
pub(crate) fn sign_in(browser: &Browser, app: &TestApp, name: &str, password: &str, secret: &[u8]) {
    // A code is accepted once: the next one comes 30 s later.
    app.clock.advance(Duration::seconds(30));
    browser.goto(&format!("{}/console/sign-in", app.base));
    browser.find("input[name=name]").send_keys(name);
    browser.find("input[name=password]").send_keys(password);
    browser.find("input[name=code]").send_keys(&code(app, secret));
    browser.find("form.stack button[type=submit]").click();
    browser.wait_text("h1", "Users");
    browser.settle();
}

fn status_of(browser: &Browser, user: &str) -> String {
    browser.find(&format!("tr[data-user=\"{user}\"] .status")).text()
}

/// Every CSP violation, script error or failed load chromium reported.
pub(crate) fn console_problems(browser: &Browser) -> Vec<String> {
    browser
        .console_log()
        .into_iter()
        .filter(|(level, message)| level == "SEVERE" || message.contains("Content Security Policy"))
        .map(|(level, message)| format!("{level}: {message}"))
        .collect()
}

#[test]
fn console_browser_setup_sign_in_search_row_and_bulk_resets_and_helpdesk_view() {
    let app = TestApp::spawn();
    let browser = Browser::start();

    // Users from the identity provider, each enrolled in MFA.
    let names =
        ["ada.lovelace", "grace.hopper", "alan.turing", "edsger.dijkstra", "barbara.liskov", "ken.thompson", "donald.knuth"];
    let mut ids = std::collections::HashMap::new();
    for name in names {
        let (given, family) = name.split_once('.').unwrap();
        let display = format!("{}{} {}{}", &given[..1].to_uppercase(), &given[1..], &family[..1].to_uppercase(), &family[1..]);
        let user = app.create_user(&json!({
            "userName": name,
            "displayName": display,
            "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
        }));
        let id = user["id"].as_str().unwrap().to_string();
        crate::mfa::enrol(&app, &id);
        ids.insert(name, id);
    }

    // The operator's setup link: a password twice, a code from the secret shown, backup codes.
    let actor = Actor::new(Origin::Cli, "test", None);
    let token = services(&app).operators.add("alice", Role::Admin, &actor).unwrap();
    browser.goto(&format!("{}/console/setup/{}", app.base, token.expose()));
    browser.wait_text("h1", "Set up your sign-in, alice");
    browser.find("input[name=password]").send_keys(PASSWORD);
    browser.find("input[name=password_again]").send_keys(PASSWORD);
    let secret = Policy::decode_base32(&browser.find("#secret").text()).expect("the secret shown is base32");
    browser.find("#setup input[name=code]").send_keys(&code(&app, &secret));
    browser.find("#setup button[type=submit]").click();
    browser.wait_text("h1", "Setup finished");
    let codes: Vec<String> = browser.find_all("#backup-codes li").iter().map(|li| li.text()).collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(codes.iter().all(|c| !c.is_empty()), "{codes:?}");

    // Signed in with password and TOTP: the Users page, every user enrolled.
    sign_in(&browser, &app, "alice", PASSWORD, &secret);
    assert!(browser.current_url().ends_with("/console/users"), "{}", browser.current_url());
    for name in names {
        assert_eq!(status_of(&browser, name), "enrolled", "{name}");
    }
    assert!(browser.find_all("nav a").iter().any(|a| a.text() == "Tokens"), "an admin sees Tokens");
    shoot(&browser, "users");

    // Search one user: htmx replaces the table.
    browser.find("#q").send_keys("grace");
    browser.wait_text("#total", "1 user");
    browser.settle();
    assert_eq!(browser.find_all("tbody tr").len(), 1);
    assert!(browser.current_url().contains("q=grace"), "the search is in the address: {}", browser.current_url());

    // Its ⋮ menu → Reset multi-factor authentication → reason → confirm.
    let kebab = browser.find("button[aria-label=\"Options for grace.hopper\"]");
    kebab.click();
    assert_eq!(kebab.attribute("aria-expanded").as_deref(), Some("true"));
    let menu = format!("#{}", kebab.attribute("aria-controls").unwrap());
    let item = browser.find(&format!("{menu} [role=menuitem]"));
    assert_eq!(item.text(), "Reset multi-factor authentication");
    shoot(&browser, "row-menu");
    item.click();
    browser.find("#reset-dialog textarea[name=reason]").send_keys("lost her phone on the train");
    assert!(browser.find("#reset-dialog").text().contains("grace.hopper"));
    browser.find("#confirm-reset").click();
    browser.wait_text("#summary", "1 reset");
    assert_eq!(status_of(&browser, "grace.hopper"), "pending");

    // Meanwhile, one whose display name is markup arrives: shown as text.
    let evil = app.create_user(&json!({"userName": "mallory", "displayName": "<script>alert(1)</script>"}));

    // Three others ticked on the whole list → More → Reset users multi-factor authentication (3).
    browser.find("nav a[href=\"/console/users\"]").click();
    browser.wait_text("#total", "8 users");
    browser.settle();
    assert_eq!(browser.find("tr[data-user=mallory] td:nth-child(3)").text(), "<script>alert(1)</script>");
    let ticked = ["alan.turing", "edsger.dijkstra", "barbara.liskov"];
    for name in ticked {
        browser.find(&format!("input[aria-label=\"Tick {name}\"]")).click();
    }
    browser.find("#more").click();
    let bulk = browser.find("#bulk-reset");
    assert_eq!(bulk.text(), "Reset users multi-factor authentication (3)");
    bulk.click();
    let dialog = browser.find("#reset-dialog");
    assert!(dialog.text().contains("3 users"), "{}", dialog.text());
    browser.find("#reset-dialog textarea[name=reason]").send_keys("phones replaced by the new model");
    shoot(&browser, "bulk-confirmation");
    browser.find("#confirm-reset").click();
    let summary = browser.wait_text("#summary", "3 reset");
    for name in ticked {
        assert!(summary.contains(name), "{summary}");
        assert_eq!(status_of(&browser, name), "pending", "{name}");
    }

    // The JSON API: exactly these four pending, and four resets by alice from the console.
    let reset = ["grace.hopper", "alan.turing", "edsger.dijkstra", "barbara.liskov"];
    for name in names {
        let expected = if reset.contains(&name) { "pending" } else { "enrolled" };
        assert_eq!(crate::mfa::status(&app, &ids[name])["status"], expected, "{name}");
    }
    let events = app.get("/api/v1/audit?type=mfa.reset");
    assert_eq!(events.status, 200);
    assert_eq!(events.body["totalResults"], 4, "{}", events.body);
    let mut audited: Vec<&str> = Vec::new();
    for e in events.body["events"].as_array().unwrap() {
        assert_eq!((&e["origin"], &e["actor"]), (&Value::from("console"), &Value::from("alice")), "{e}");
        audited.push(e["userName"].as_str().unwrap());
    }
    audited.sort();
    let mut expected = reset.to_vec();
    expected.sort();
    assert_eq!(audited, expected);
    assert_eq!(crate::mfa::status(&app, evil["id"].as_str().unwrap())["status"], "none");

    // No CSP violation or script error on any page so far.
    assert_eq!(console_problems(&browser), Vec::<String>::new());

    // Sign out; a helpdesk operator sees no Tokens or Operators.
    browser.find("form.sign-out button").click();
    browser.wait_text("h1", "Sign in");
    let hank = operator_with_role(&app, "hank", Role::Helpdesk);
    sign_in(&browser, &app, "hank", hank.password, &hank.secret);
    let links: Vec<String> = browser.find_all("nav[aria-label=Sections] a").iter().map(|a| a.text()).collect();
    assert_eq!(links, ["Users", "Audit"]);
    assert!(browser.find(".who").text().contains("helpdesk"));
    assert_eq!(console_problems(&browser), Vec::<String>::new());
}

#[test]
fn enrolment_browser_a_reset_user_enrols_from_a_link_made_in_the_console_on_a_phone_sized_page() {
    use crate::enrolment::PUBLIC_URL;
    let app = TestApp::spawn_with(|c| c.server.public_url = Some(PUBLIC_URL.into()));
    let browser = Browser::start();
    let user = app.create_user(&json!({"userName": "jo.phone", "displayName": "Jo Phone"}));
    let id = user["id"].as_str().unwrap().to_string();
    crate::mfa::enrol(&app, &id);
    assert_eq!(app.post(&format!("/api/v1/users/{id}/mfa/reset"), &json!({"reason": "new phone"})).status, 200);

    // The operator makes the link on the user's page.
    let op = operator_with_role(&app, "helen", Role::Helpdesk);
    sign_in(&browser, &app, "helen", op.password, &op.secret);
    browser.goto(&format!("{}/console/users/{id}", app.base));
    browser.find("#link-form button[type=submit]").click();
    browser.wait_text("h1", "Enrolment link");
    let link = browser.find("code.link").text();
    assert!(link.starts_with(&format!("{PUBLIC_URL}/enrol/")), "{link}");
    let link = link.replace(PUBLIC_URL, &app.base);

    // The user opens it on a phone: the QR code fits, nothing scrolls sideways.
    browser.find("form.sign-out button").click();
    browser.wait_text("h1", "Sign in");
    browser.phone(360, 740);
    browser.goto(&link);
    browser.wait_text("h1", "Set up your authenticator app");
    let fits = browser.execute(
        "const qr = document.querySelector('.qr svg').getBoundingClientRect();
         return [qr.width, qr.right, document.documentElement.scrollWidth];",
        &[],
    );
    let [width, right, scroll] = [0, 1, 2].map(|i| fits[i].as_f64().unwrap());
    assert!(width >= 150.0 && right <= 360.0 && scroll <= 360.0, "QR {width} wide, right edge {right}, page {scroll}");
    assert_eq!(browser.find("#account").text(), "jo.phone");
    shoot(&browser, "enrolment-page-360");

    // The secret as text → the code the app would show → confirmed: the backup codes, once.
    let secret = Policy::decode_base32(&browser.find("#secret").text()).expect("the secret shown is base32");
    browser.find("#enrol input[name=code]").send_keys(&code(&app, &secret));
    browser.find("#enrol button[type=submit]").click();
    browser.wait_text("h1", "Your authenticator app is set up");
    let codes: Vec<String> = browser.find_all("#backup-codes li").iter().map(|li| li.text()).collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(browser.find(".once").text().contains("shown only once"));
    assert!(browser.find("#print-codes").displayed(), "Print shows where a script can print");
    shoot(&browser, "enrolment-done-360");

    // "Download (.txt)" saves the codes.
    let downloads = tempfile::tempdir().unwrap();
    browser.download_to(downloads.path());
    browser.find("#download-codes").click();
    let file = downloads.path().join("backup-codes.txt");
    let saved = crate::webdriver::wait_until(std::time::Duration::from_secs(10), "the downloaded codes", || {
        std::fs::read_to_string(&file).ok().filter(|t| t.contains(&codes[9]))
    });
    assert!(codes.iter().all(|c| saved.contains(c.as_str())), "{saved}");

    assert_eq!(crate::mfa::status(&app, &id)["status"], "enrolled");
    assert_eq!(console_problems(&browser), Vec::<String>::new(), "no CSP violation or script error");
    // Used: the link now opens the 410 page.
    browser.goto(&link);
    browser.wait_text("h1", "This link does not work");
    assert_eq!(crate::enrolment::open(&link).status, 410);
    browser.desktop();
}

/// The pages issues 14, 15 and 17 changed, at 1400 and at 360 px wide: each shows its heading,
/// no script error or CSP violation, and nothing scrolls sideways on a phone.
#[test]
fn pages_of_links_and_groups_at_desktop_and_phone_width() {
    use crate::enrolment::PUBLIC_URL;
    // For the Events page: a webhook whose receiver is down, and a Shared Signals stream pushed
    // to a receiver that takes its events.
    let down = crate::receiver::Receiver::start();
    down.go_down();
    let up = crate::receiver::Receiver::start();
    let secret = std::sync::Mutex::new(String::new());
    let app = TestApp::spawn_with(|c| {
        c.server.public_url = Some(PUBLIC_URL.into());
        crate::webhooks::configure(c, &down.url("/hook"), 1, &secret);
        crate::console_events::with_ssf(c);
    });
    let okta = crate::console_events::ssf_token(&app, "okta");
    let push = serde_json::json!({"method": provisiond::domain::streams::PUSH, "endpoint_url": up.url("/ssf/events")});
    let stream = crate::console_events::create_stream(
        &app,
        &okta,
        serde_json::json!({"description": "Okta Identity Threat Protection", "delivery": push}),
    );
    let browser = Browser::start();
    let ids: Vec<String> = ["ada.lovelace", "grace.hopper"]
        .iter()
        .map(|n| app.create_user(&json!({"userName": n, "displayName": n}))["id"].as_str().unwrap().to_string())
        .collect();
    crate::groups::group(&app, "Finance <EMEA>", &[&ids[0], &ids[1]]);
    let op = operator_with_role(&app, "alice", Role::Admin);
    sign_in(&browser, &app, "alice", op.password, &op.secret);
    let c = crate::console::Console::sign_in(&app, "bob", Role::Admin);
    let made = c.post(&format!("/console/users/{}/enrolment-link", ids[1]), &[]);
    let link = made
        .body
        .split("<code class=\"link\" id=\"link-1\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(PUBLIC_URL, &app.base);
    let pages = [
        ("users-group", format!("{}/console/users?group=Finance%20%3CEMEA%3E", app.base), "Users"),
        ("user-groups", format!("{}/console/users/{}", app.base, ids[0]), "ada.lovelace"),
        (
            "reset-links",
            format!("{}/console/users/reset?id={}&id={}", app.base, ids[0], ids[1]),
            "Reset users multi-factor authentication",
        ),
        ("enrol-desktop", link.clone(), "Set up your authenticator app"),
        ("enrol-gone", format!("{}/enrol/{}", app.base, "0".repeat(64)), "This link does not work"),
    ];
    for (width, suffix) in [(1400, ""), (360, "-360")] {
        if width == 360 {
            browser.phone(360, 740);
        }
        for (name, url, heading) in &pages {
            browser.goto(url);
            browser.wait_text("h1, h2", heading);
            shoot(&browser, &format!("{name}{suffix}"));
            let scroll = browser.execute("return document.documentElement.scrollWidth;", &[]).as_f64().unwrap();
            assert!(scroll <= width as f64 + 1.0, "{name} at {width}: {scroll} px wide");
        }
    }
    browser.desktop();
    // The links page after a reset with links ticked.
    browser.goto(&format!("{}/console/users/reset?id={}", app.base, ids[0]));
    browser.find("#reset-dialog textarea[name=reason]").send_keys("new phone");
    browser.find("input[name=links]").click();
    browser.find("#confirm-reset").click();
    browser.wait_text("h1", "Enrolment link");
    shoot(&browser, "links-created");
    browser.phone(360, 740);
    shoot(&browser, "links-created-360");
    browser.desktop();
    // The Events page: the webhook owes the reset's event and says why; the stream has it.
    crate::console_events::wait_for_state(&app, "webhook:hr", "a failed attempt", |s| s.backlog == 1 && s.last_error.is_some());
    crate::console_events::wait_for_state(&app, &format!("stream:{stream}"), "its delivery", |s| s.delivered == 1);
    browser.find("nav a[href=\"/console/events\"]").click();
    browser.wait_text("h1", "Events");
    assert_eq!(browser.find("tr[data-webhook=hr] td.backlog").text(), "1");
    assert!(browser.find("tr[data-webhook=hr] td.last-error").text().to_lowercase().contains("refused"));
    assert_eq!(browser.find(&format!("tr[data-stream=\"{stream}\"] td.backlog")).text(), "0");
    assert!(
        browser.find(&format!("tr[data-stream=\"{stream}\"] td.delivered")).text().starts_with("1\nlast "),
        "delivered, and when"
    );
    for (width, suffix) in [(1400, ""), (360, "-360")] {
        if width == 360 {
            browser.phone(360, 740);
        }
        shoot(&browser, &format!("events{suffix}"));
        let scroll = browser.execute("return document.documentElement.scrollWidth;", &[]).as_f64().unwrap();
        assert!(scroll <= width as f64 + 1.0, "events at {width}: {scroll} px wide");
    }
    browser.desktop();
    // The Tokens page offers the Shared Signals receivers' scope, labelled like the others.
    browser.find("nav a[href=\"/console/tokens\"]").click();
    browser.wait_text("h1", "Tokens");
    let ssf = browser.find("input[name=scope][value=ssf]");
    assert_eq!(ssf.attribute("type").as_deref(), Some("checkbox"));
    assert!(browser.find_all("label.check").iter().any(|l| l.text().starts_with("ssf: Shared Signals receivers")));
    for (width, suffix) in [(1400, ""), (360, "-360")] {
        if width == 360 {
            browser.phone(360, 740);
        }
        shoot(&browser, &format!("tokens{suffix}"));
        let scroll = browser.execute("return document.documentElement.scrollWidth;", &[]).as_f64().unwrap();
        assert!(scroll <= width as f64 + 1.0, "tokens at {width}: {scroll} px wide");
    }
    browser.desktop();
    // The dead link's page answers 410 on purpose; anything else is a problem.
    let problems: Vec<String> =
        console_problems(&browser).into_iter().filter(|p| !p.contains("/enrol/0000") || !p.contains("410")).collect();
    assert_eq!(problems, Vec::<String>::new());
}
