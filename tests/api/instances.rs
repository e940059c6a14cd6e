//! Several instances on one database, as behind a load balancer: requests race through the HTTP
//! doors of two daemons, and what must happen once (a user name, a version, a sync run, a reset
//! flag, an audit event) happens once. On PostgreSQL this is the scaled-out set-up; on SQLite
//! the same holds for two processes sharing one file.

use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_scim_error, Reply, TestApp};
use crate::slapd::{people, Slapd, FLAG_ATTRIBUTE, PEOPLE};
use crate::sync::{spawn, sync, user, wait, Cli};

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

/// Runs `n` requests at once, alternating between the instances; the replies in order.
fn race(instances: &[&TestApp], n: usize, request: impl Fn(&TestApp, usize) -> Reply + Sync) -> Vec<Reply> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (app, barrier, request) = (instances[i % instances.len()], &barrier, &request);
                s.spawn(move || {
                    barrier.wait();
                    request(app, i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    })
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    let mut s: Vec<u16> = replies.iter().map(|r| r.status).collect();
    s.sort();
    s
}

#[test]
fn concurrent_creates_of_one_user_name_on_two_instances_make_one_user() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    let n = 12;
    // Different cases of one name: userName is unique ignoring case.
    let replies = race(&[&a, &b], n, |app, i| {
        let name = if i % 3 == 0 { "Race.Winner@example.com" } else { "race.winner@EXAMPLE.com" };
        app.post(
            "/scim/v2/Users",
            &json!({"schemas": [crate::helpers::USER_SCHEMA], "userName": name, "externalId": format!("ext-{i}")}),
        )
    });
    let mut expected = vec![201];
    expected.extend(std::iter::repeat_n(409, n - 1));
    assert_eq!(statuses(&replies), expected, "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    for r in replies.iter().filter(|r| r.status == 409) {
        assert_scim_error(r, 409, Some("uniqueness"));
    }
    for app in [&a, &b] {
        assert_eq!(app.filter(r#"userName eq "race.winner@example.com""#)["totalResults"], 1);
        assert_eq!(app.get("/scim/v2/Users?count=0").body["totalResults"], 1);
    }
}

#[test]
fn concurrent_patches_with_one_if_match_let_exactly_one_through() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    let created = a.create_user(&json!({"userName": "patched", "displayName": "before"}));
    let id = created["id"].as_str().unwrap().to_string();
    let etag = a.get(&format!("/scim/v2/Users/{id}")).etag.expect("ETag");
    let n = 10;
    let replies = race(&[&a, &b], n, |app, i| {
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": format!("writer {i}")}],
        });
        let auth = format!("Bearer {}", app.token);
        app.call_with("PATCH", &format!("/scim/v2/Users/{id}"), Some(&patch), &[("Authorization", &auth), ("If-Match", &etag)])
    });
    let mut expected = vec![200];
    expected.extend(std::iter::repeat_n(412, n - 1));
    assert_eq!(statuses(&replies), expected, "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    for r in replies.iter().filter(|r| r.status == 412) {
        assert_scim_error(r, 412, None);
    }
    // The winner's write is what both instances show, one version on.
    let winner = replies.iter().find(|r| r.status == 200).unwrap();
    for app in [&a, &b] {
        let now = app.get(&format!("/scim/v2/Users/{id}"));
        assert_eq!(now.body["displayName"], winner.body["displayName"]);
        assert_eq!(now.etag, winner.etag);
        assert_ne!(now.etag.as_deref(), Some(etag.as_str()));
    }
}

#[test]
fn bulk_resets_on_two_instances_and_a_sync_applying_flags_lose_no_audit_event() {
    let users = 1500;
    let flagged = 400;
    let slapd = Slapd::start(&people(0..users));
    let a = spawn(&slapd, |_| {});
    let b = a.another_instance();
    assert_eq!(sync(&a, true)["created"], users);
    let ids: Vec<String> = (0..users)
        .step_by(500)
        .flat_map(|start| {
            a.get(&format!("/scim/v2/Users?startIndex={}&count=500", start + 1)).body["Resources"].as_array().unwrap().clone()
        })
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), users);
    let flags: String = (0..flagged)
        .map(|i| format!("dn: uid=user{i},{PEOPLE}\nchangetype: modify\nadd: {FLAG_ATTRIBUTE}\n{FLAG_ATTRIBUTE}: TRUE\n\n"))
        .collect();
    slapd.modify(&flags);

    // Two bulk resets of everyone, in opposite orders, on two instances, while a sync applies
    // the flags: each holds many factor rows at once.
    let reversed: Vec<String> = ids.iter().rev().cloned().collect();
    let barrier = Barrier::new(3);
    let bulk = |app: &TestApp, ids: &[String]| {
        barrier.wait();
        app.post("/api/v1/mfa/resets", &json!({"userIds": ids, "reason": "lost phones"}))
    };
    let (first, second, run) = std::thread::scope(|s| {
        let first = s.spawn(|| bulk(&a, &ids));
        let second = s.spawn(|| bulk(&b, &reversed));
        let run = s.spawn(|| {
            barrier.wait();
            sync(&a, false)
        });
        (first.join().unwrap(), second.join().unwrap(), run.join().unwrap())
    });
    for reply in [&first, &second] {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            (reply.body["reset"].as_u64(), reply.body["failed"].as_u64()),
            (Some(users as u64), Some(0)),
            "{:?}",
            reply.body["results"]
        );
    }
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["resetsApplied"], flagged, "{run:#}");
    // Every reset was audited, once: two per user from the bulk requests, one per flag.
    for app in [&a, &b] {
        let events = app.get("/api/v1/audit?type=mfa.reset&count=0").body;
        assert_eq!(events["totalResults"], 2 * users + flagged, "{events}");
        let by_directory =
            app.get(&format!("/api/v1/audit?type=mfa.reset&userId={}", user(app, "user0")["id"].as_str().unwrap())).body;
        assert_eq!(by_directory["totalResults"], 3, "{by_directory}");
    }
    // The flags were cleared: the next run (on the other instance) applies none again.
    let again = sync(&b, false);
    assert_eq!((again["status"].as_str(), again["resetsApplied"].as_u64()), (Some("succeeded"), Some(0)), "{again:#}");
}

#[test]
fn a_sync_runs_on_one_instance_at_a_time_and_a_crashed_holder_blocks_only_until_its_lease_ends() {
    let slapd = Slapd::start(&people(0..12_000));
    let a = spawn(&slapd, |_| {});
    let b = a.another_instance();

    // A `provisiond sync` process holds the lease, and is killed (-9) in the middle of its run.
    let cli = Cli::new(&a, &slapd, "page_size = 20");
    let mut crashed = Command::new(BIN)
        .args(["--config", cli.config.to_str().unwrap(), "sync", "--full"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead_run = loop {
        let runs = a.get("/api/v1/sync/runs").body;
        if let Some(run) =
            runs["runs"].as_array().and_then(|r| r.iter().find(|r| r["status"] == "running" && r["created"].as_i64() > Some(0)))
        {
            break run["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the command-line run did not progress: {runs}");
        std::thread::sleep(Duration::from_millis(5));
    };
    crashed.kill().unwrap();
    crashed.wait().unwrap();

    // Both instances answer a manual trigger with "already running" while the lease lasts.
    for app in [&a, &b] {
        let r = app.post("/api/v1/sync/runs", &json!({"full": true}));
        assert_eq!((r.status, r.body["error"].as_str()), (409, Some("sync_running")), "{:?}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains(&dead_run), "{:?}", r.body);
    }
    // Its lease runs out (the time passes here by moving its end into the past)…
    let pool = provisiond::app::open_database(&a.config).unwrap();
    {
        use diesel::{ExpressionMethods, RunQueryDsl};
        use provisiond::store::schema::sync_lease;
        // (A day back: the daemons' clocks are the tests' and stand where they were started.)
        let past = provisiond::clock::stored(chrono::Utc::now()) - chrono::Duration::days(1);
        let n =
            diesel::update(sync_lease::table).set(sync_lease::expires_at.eq(past)).execute(&mut *pool.get().unwrap()).unwrap();
        assert_eq!(n, 1, "the dead process's lease is there");
    }
    // …and the next trigger, on the other instance, runs; the dead run is recorded failed.
    let run = sync(&b, true);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["created"].as_i64().unwrap() + run["updated"].as_i64().unwrap() + run["unchanged"].as_i64().unwrap(), 12_000);
    let dead = a.get(&format!("/api/v1/sync/runs/{dead_run}")).body;
    assert_eq!(dead["status"], "failed", "{dead:#}");
    assert_eq!(a.get("/scim/v2/Users?count=0").body["totalResults"], 12_000, "one user per entry");

    // Runs started at once on both instances: exactly one starts. (Full runs: reading all 12,000
    // entries lasts seconds, so none can finish before the last trigger arrives, as an
    // incremental run with nothing to do could on a busy machine.)
    let replies = race(&[&a, &b], 6, |app, _| app.post("/api/v1/sync/runs", &json!({"full": true})));
    assert_eq!(statuses(&replies), [202, 409, 409, 409, 409, 409], "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    let started = replies.iter().find(|r| r.status == 202).unwrap();
    assert_eq!(wait(&a, started.body["id"].as_str().unwrap())["status"], "succeeded");
}

#[test]
fn scheduled_runs_on_two_instances_run_each_tick_once_and_never_overlap() {
    let slapd = Slapd::start(&people(0..300));
    // Two real daemons (real clocks) with a schedule firing every second; the in-process one
    // only reads the runs.
    let reader = spawn(&slapd, |_| {});
    let cli = Cli::new(&reader, &slapd, "");
    let mut daemons: Vec<_> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .args(["--config", cli.config.to_str().unwrap(), "serve"])
                .env("PROVISIOND_SERVER__LISTEN", "127.0.0.1:0")
                .env("PROVISIOND_LDAP__SCHEDULE", "* * * * * *")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = reader.get("/api/v1/sync/runs?count=100").body["runs"].as_array().cloned().unwrap_or_default();
        let finished: Vec<Value> = runs.into_iter().filter(|r| r["status"] != "running").collect();
        if finished.len() >= 5 {
            break finished;
        }
        assert!(Instant::now() < deadline, "the schedules did not run");
        std::thread::sleep(Duration::from_millis(100));
    };
    for d in &mut daemons {
        Command::new("kill").args(["-TERM", &d.id().to_string()]).status().unwrap();
        d.wait().unwrap();
    }
    assert!(runs.iter().all(|r| r["status"] == "succeeded" && r["startedBy"] == "schedule"), "{runs:#?}");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let mut spans: Vec<_> = runs.iter().map(|r| (at(&r["startedAt"]), at(&r["finishedAt"]))).collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }
    // One run per tick (a run starts within its second), whichever instance claimed it.
    let mut ticks: Vec<i64> = spans.iter().map(|(start, _)| start.timestamp()).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), spans.len(), "a tick ran twice: {spans:?}");
    let created: i64 = runs.iter().map(|r| r["created"].as_i64().unwrap()).sum();
    assert_eq!(created, 300, "each entry created once");
}

#[test]
fn each_schedule_tick_is_claimed_by_exactly_one_instance() {
    use provisiond::domain::directory::{RunKind, Runs};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new(dir.path());
    let config = crate::helpers::config_for(dir.path(), &db);
    let pools = [provisiond::app::open_database(&config).unwrap(), provisiond::app::open_database(&config).unwrap()];
    let start = provisiond::clock::stored(chrono::Utc::now());
    let ticks: Vec<_> = (0..40).map(|i| start + chrono::Duration::seconds(i)).collect();
    // Two "instances" claim every tick at the same moment, for both schedules.
    let barrier = Barrier::new(2);
    let claimed: Vec<Vec<bool>> = std::thread::scope(|s| {
        let handles: Vec<_> = pools
            .iter()
            .map(|pool| {
                let (ticks, barrier) = (&ticks, &barrier);
                s.spawn(move || {
                    let runs = Runs::new(pool.clone(), std::sync::Arc::new(provisiond::clock::SystemClock));
                    let mut out = Vec::new();
                    for tick in ticks {
                        barrier.wait();
                        for schedule in [RunKind::Incremental, RunKind::Full] {
                            out.push(runs.claim_tick(schedule, *tick).unwrap());
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in claimed[0].iter().zip(&claimed[1]).enumerate() {
        assert!(a ^ b, "claim {i}: both or neither got it ({a}, {b})");
    }
    // A tick already claimed, or an older one, is never claimed again.
    let runs = Runs::new(pools[0].clone(), std::sync::Arc::new(provisiond::clock::SystemClock));
    assert!(!runs.claim_tick(RunKind::Full, ticks[39]).unwrap());
    assert!(!runs.claim_tick(RunKind::Full, ticks[3]).unwrap());
}

#[test]
fn instances_started_together_on_an_empty_database_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new(dir.path());
    let config = dir.path().join("p.toml");
    std::fs::write(&config, format!("{}[log]\nlevel = \"info\"\n", db.toml())).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .arg("migrate")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // One of them applied the migrations (and logged it); the others found nothing to do.
    let logs: Vec<String> = outputs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
    let dir = match crate::helpers::backend() {
        crate::helpers::Backend::Sqlite => "sqlite",
        crate::helpers::Backend::Postgres => "postgres",
    };
    let migrations = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"))).unwrap().count();
    let applied_all = format!("applied={migrations}");
    assert_eq!(
        logs.iter().filter(|l| l.contains("database migrations applied") && l.contains(&applied_all)).count(),
        1,
        "{logs:#?}"
    );
    assert!(outputs.iter().all(|o| String::from_utf8_lossy(&o.stdout).contains("database is up to date")));
}

#[test]
fn deletes_racing_patches_and_enrolments_of_the_same_users_never_fail_with_500() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    let ids: Vec<String> = (0..40)
        .map(|i| {
            a.create_user(&json!({"userName": format!("racer{i}"), "emails": [{"value": format!("r{i}@example.com")}]}))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // For each user at once: a DELETE on one instance, a PATCH and an MFA enrolment on the other.
    let replies = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .flat_map(|id| {
                let (a, b) = (&a, &b);
                [
                    s.spawn(move || a.call("DELETE", &format!("/scim/v2/Users/{id}"), None)),
                    s.spawn(move || {
                        let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "displayName", "value": "renamed"}]});
                        b.call("PATCH", &format!("/scim/v2/Users/{id}"), Some(&patch))
                    }),
                    s.spawn(move || b.post(&format!("/api/v1/users/{id}/mfa/totp"), &json!({}))),
                ]
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let failures: Vec<_> = replies.iter().filter(|r| r.status >= 500).map(|r| (r.status, &r.body)).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(replies.iter().filter(|r| r.status == 204).count(), ids.len(), "every DELETE succeeded");
    assert_eq!(a.get("/scim/v2/Users?count=0").body["totalResults"], 0);
}

#[test]
fn a_factor_enrolled_on_one_instance_verifies_on_the_other_and_each_code_counts_once() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    b.clock.set(provisiond::clock::Clock::now(&*a.clock));
    let id = a.create_user(&json!({"userName": "roaming"}))["id"].as_str().unwrap().to_string();
    // Enrolled on one instance: the secret is sealed with the key both instances are given.
    let (secret, _) = crate::mfa::enrol(&a, &id);
    let policy = provisiond::domain::mfa::Policy::from_config(&a.config.mfa);
    let next_step = provisiond::clock::Clock::now(&*a.clock).timestamp() as u64 + 30;
    let code = policy.code_at(&secret, next_step);
    // The same code sent through both instances at once (a replayed login): accepted once. (Five
    // sends: the refused ones count as failures, and five failures would lock the factor.)
    let replies = race(&[&a, &b], 5, |app, _| app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": code})));
    assert_eq!(statuses(&replies), [200, 401, 401, 401, 401], "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    assert_eq!(replies.iter().find(|r| r.status == 200).unwrap().body, json!({"valid": true, "method": "totp"}));
}

#[test]
fn an_instance_without_the_shared_mfa_key_refuses_to_start_and_says_which_key() {
    let a = TestApp::spawn();
    let id = a.create_user(&json!({"userName": "sealed"}))["id"].as_str().unwrap().to_string();
    crate::mfa::enrol(&a, &id);
    // A second instance whose key file is missing: it would create a key of its own.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mfa.key");
    let config = dir.path().join("p.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}[mfa]\nkey_file = {:?}\n[log]\nlevel = \"warn\"\n",
        a.db.toml(),
        key.display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(BIN).arg("--config").arg(&config).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mfa.key_file") && err.contains("same key file") && err.contains(&key.display().to_string()), "{err}");
    // Given a copy of the shared key, an instance starts and reads the factor.
    let b = a.another_instance();
    assert_eq!(crate::mfa::status(&b, &id)["status"], "enrolled");
}

#[test]
fn fifty_wrong_codes_at_once_through_two_instances_count_exactly_the_limit_then_lock() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    b.clock.set(provisiond::clock::Clock::now(&*a.clock));
    let id = a.create_user(&json!({"userName": "guessed"}))["id"].as_str().unwrap().to_string();
    let (secret, _) = crate::mfa::enrol(&a, &id);
    let replies = race(&[&a, &b], 50, |app, _| app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": "000000"})));
    let s = statuses(&replies);
    let max = a.config.mfa.max_failures as usize;
    assert_eq!(s.iter().filter(|&&st| st == 401).count(), max, "exactly max_failures counted: {s:?}");
    assert_eq!(s.iter().filter(|&&st| st == 429).count(), 50 - max, "{s:?}");
    // The factor is locked: even the right code is refused, on either instance.
    let policy = provisiond::domain::mfa::Policy::from_config(&a.config.mfa);
    let good = policy.code_at(&secret, provisiond::clock::Clock::now(&*a.clock).timestamp() as u64);
    for app in [&a, &b] {
        assert_eq!(app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": good})).status, 429);
    }
    let events = a.get(&format!("/api/v1/audit?userId={id}&type=mfa.verify.locked_out")).body;
    assert_eq!(events["totalResults"], 1, "locked once");
}

#[test]
fn a_backup_code_raced_by_wrong_codes_is_never_accepted_after_the_lockout() {
    for trial in 0..6 {
        let a = TestApp::spawn();
        let b = a.another_instance();
        b.clock.set(provisiond::clock::Clock::now(&*a.clock));
        let id = a.create_user(&json!({"userName": format!("raced{trial}")}))["id"].as_str().unwrap().to_string();
        let (_, codes) = crate::mfa::enrol(&a, &id);
        let replies = race(&[&a, &b], 13, |app, i| {
            let code = if i == 6 { codes[0].as_str() } else { "000000" };
            app.post(&format!("/api/v1/users/{id}/mfa/verify"), &json!({"code": code}))
        });
        let backup = &replies[6];
        let events = a.get(&format!("/api/v1/audit?userId={id}&count=100")).body;
        let position = |t: &str| events["events"].as_array().unwrap().iter().position(|e| e["type"] == t);
        let (used, locked) = (position("mfa.backup_code.used"), position("mfa.verify.locked_out"));
        match backup.status {
            // Newest first: a spent code's event is older (further down) than the lockout's.
            200 => assert!(used.is_some() && locked.is_none_or(|l| used.unwrap() > l), "trial {trial}: {events:#}"),
            429 => assert!(used.is_none(), "trial {trial}: refused, yet spent: {events:#}"),
            other => panic!("trial {trial}: the backup code got {other}: {:?}", backup.body),
        }
        // Every wrong code after the lockout was answered 429, never 401: at most max_failures
        // counted since the last success.
        let wrong_401 = replies.iter().enumerate().filter(|(i, r)| *i != 6 && r.status == 401).count();
        assert!(wrong_401 < 2 * a.config.mfa.max_failures as usize, "trial {trial}: {:?}", statuses(&replies));
        assert!(replies.iter().all(|r| [200, 401, 429].contains(&r.status)), "{:?}", statuses(&replies));
    }
}

#[test]
fn concurrent_patches_without_if_match_all_apply_and_none_is_lost() {
    let a = TestApp::spawn();
    let b = a.another_instance();
    let id = a.create_user(&json!({"userName": "busy"}))["id"].as_str().unwrap().to_string();
    let n = 20;
    let replies = race(&[&a, &b], n, |app, i| {
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "emails", "value": [{"value": format!("w{i}@example.com"), "type": "other"}]}],
        });
        app.call("PATCH", &format!("/scim/v2/Users/{id}"), Some(&patch))
    });
    assert_eq!(statuses(&replies), vec![200; n], "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    let user = a.get(&format!("/scim/v2/Users/{id}")).body;
    let emails = user["emails"].as_array().unwrap();
    assert_eq!(emails.len(), n, "each PATCH applied to what the others wrote: {emails:?}");
    assert_eq!(user["meta"]["version"], format!("W/\"{}\"", n + 1));
}

#[test]
fn the_first_instance_records_the_deployments_mfa_key_and_an_instance_with_another_refuses_to_start() {
    // Nothing is enrolled yet: the key id recorded by the first start is what tells a second
    // instance with a key file of its own that it is the wrong one.
    let a = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let own_key = dir.path().join("mfa.key");
    let config = dir.path().join("p.toml");
    let write = |extra: &str| {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}[mfa]\nkey_file = {:?}\n{extra}[log]\nlevel = \"warn\"\n",
            a.db.toml(),
            own_key.display().to_string()
        );
        std::fs::write(&config, toml).unwrap();
    };
    write("");
    let out = Command::new(BIN).arg("--config").arg(&config).arg("serve").output().unwrap();
    assert!(!out.status.success(), "an instance with another key must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this instance has the wrong MFA key") && err.contains(&own_key.display().to_string()), "{err}");
    // And nothing was enrolled under the wrong key meanwhile: the first instance still serves.
    let id = a.create_user(&json!({"userName": "first"}))["id"].as_str().unwrap().to_string();
    crate::mfa::enrol(&a, &id);

    // Rotating: an instance whose new key lists the deployment's as a previous key starts, and
    // the deployment's key becomes the new one.
    let previous = format!("previous_key_files = [{:?}]\n", a.config.mfa.key_file.display().to_string());
    write(&previous);
    let mut rotated = Command::new(BIN).arg("--config").arg(&config).arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let pool = provisiond::app::open_database(&a.config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let own_id = provisiond::app::load_sealer(&provisiond::config::Config {
        mfa: provisiond::config::Mfa { key_file: own_key.clone(), ..Default::default() },
        ..Default::default()
    })
    .unwrap()
    .current_id()
    .to_string();
    loop {
        let recorded =
            provisiond::store::deployment::get(&mut pool.get().unwrap(), provisiond::store::deployment::MFA_KEY_ID).unwrap();
        if recorded.as_deref() == Some(own_id.as_str()) {
            break;
        }
        assert!(rotated.try_wait().unwrap().is_none(), "the rotating instance stopped");
        assert!(Instant::now() < deadline, "the new key was not recorded: {recorded:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    rotated.kill().unwrap();
    rotated.wait().unwrap();
}
