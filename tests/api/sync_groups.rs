//! LDAP groups (`[ldap.groups]`) against a real slapd: a 3,000-member group, nested groups
//! (members of a nested group are the user's `indirect` groups), posixGroup `memberUid`, a group
//! deleted in the directory (gone at the next full run only), a member renamed by modrdn, and
//! the safety limit on deletions.

use serde_json::{json, Value};

use crate::helpers::{encode, TestApp};
use crate::slapd::{people, Slapd, GROUPS, PEOPLE};
use crate::sync::{spawn, sync, user, Cli};

fn user_dn(i: usize) -> String {
    format!("uid=user{i},{PEOPLE}")
}

/// A groupOfNames entry (LDIF, for slapadd or an `add`).
fn group_of_names(cn: &str, members: &[String]) -> String {
    let mut s = format!("dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for m in members {
        s.push_str(&format!("member: {m}\n"));
    }
    s.push('\n');
    s
}

fn with_groups(slapd: &Slapd, adjust: impl FnOnce(&mut provisiond::config::LdapGroups)) -> TestApp {
    spawn(slapd, |l| {
        let mut g = provisiond::config::LdapGroups { base_dn: Some(GROUPS.into()), ..Default::default() };
        adjust(&mut g);
        l.groups = Some(g);
    })
}

/// The group named `name`, as SCIM shows it (with its members).
fn group(app: &TestApp, name: &str) -> Value {
    let r = app.get(&format!("/scim/v2/Groups?filter={}", encode(&format!("displayName eq \"{name}\""))));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["totalResults"], 1, "{name}: {}", r.body);
    let id = r.body["Resources"][0]["id"].as_str().unwrap().to_string();
    app.get(&format!("/scim/v2/Groups/{id}")).body
}

fn group_count(app: &TestApp) -> u64 {
    app.get("/scim/v2/Groups?count=0").body["totalResults"].as_u64().unwrap()
}

/// The ids of a group's members, sorted.
fn member_ids(g: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        g["members"].as_array().map(|m| m.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect()).unwrap_or_default();
    ids.sort();
    ids
}

#[track_caller]
fn assert_counts(run: &Value, expected: Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&run[k], v, "{k} in {run:#}");
    }
}

#[test]
fn sync_groups_a_group_of_3000_members_is_mirrored_and_the_next_run_changes_nothing() {
    let everyone: Vec<String> = (0..3000).map(user_dn).collect();
    let ldif = format!("{}{}{}", people(0..3000), group_of_names("everyone", &everyone), group_of_names("few", &everyone[..3]));
    let slapd = Slapd::start(&ldif);
    let app = with_groups(&slapd, |_| {});
    let run = sync(&app, true);
    assert_counts(
        &run,
        json!({"status": "succeeded", "created": 3000, "groupsCreated": 2, "groupsUpdated": 0, "groupsDeleted": 0,
               "membershipsChanged": 3003, "errors": []}),
    );
    let g = group(&app, "everyone");
    assert_eq!(member_ids(&g).len(), 3000);
    assert!(g["externalId"].as_str().is_some_and(|k| !k.is_empty()), "the entry's key: {g}");
    assert_eq!(member_ids(&group(&app, "few")).len(), 3);
    let version = g["meta"]["version"].clone();

    app.clock.advance(chrono::Duration::seconds(1));
    let again = sync(&app, true);
    assert_counts(&again, json!({"status": "succeeded", "groupsCreated": 0, "groupsUpdated": 0, "membershipsChanged": 0}));
    assert_eq!(group(&app, "everyone")["meta"]["version"], version, "an unchanged group causes no write");

    // One member removed, one user left out of "few" added: two rows, nothing else.
    slapd.modify(&format!(
        "dn: cn=everyone,{GROUPS}\nchangetype: modify\ndelete: member\nmember: {}\n\n\
         dn: cn=few,{GROUPS}\nchangetype: modify\nadd: member\nmember: {}\n",
        user_dn(1234),
        user_dn(10)
    ));
    let incremental = sync(&app, false);
    assert_counts(&incremental, json!({"status": "succeeded", "membershipsChanged": 2, "groupsDeleted": 0}));
    let everyone_now = member_ids(&group(&app, "everyone"));
    assert_eq!(everyone_now.len(), 2999);
    assert!(!everyone_now.contains(&user(&app, "user1234")["id"].as_str().unwrap().to_string()));
    assert!(member_ids(&group(&app, "few")).contains(&user(&app, "user10")["id"].as_str().unwrap().to_string()));
}

#[test]
fn sync_groups_a_nested_group_makes_its_members_indirect_members_of_the_outer_one() {
    let ldif = format!(
        "{}{}{}",
        people(0..5),
        group_of_names("eng", &[user_dn(1), user_dn(2)]),
        group_of_names("staff", &[format!("cn=eng,{GROUPS}"), user_dn(3)]),
    );
    let slapd = Slapd::start(&ldif);
    let app = with_groups(&slapd, |_| {});
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 2, "membershipsChanged": 4, "errors": []}));
    let staff = group(&app, "staff");
    let kinds: Vec<&str> = staff["members"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["User", "Group"]);
    let u1 = user(&app, "user1");
    let u1 = app.get(&format!("/scim/v2/Users/{}", u1["id"].as_str().unwrap())).body;
    let mut groups: Vec<(String, String)> = u1["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["display"].as_str().unwrap().to_string(), g["type"].as_str().unwrap().to_string()))
        .collect();
    groups.sort();
    assert_eq!(groups, [("eng".to_string(), "direct".to_string()), ("staff".to_string(), "indirect".to_string())]);
}

#[test]
fn sync_groups_member_uid_of_a_posix_group_names_users_by_uid_and_unknown_ones_are_counted() {
    let ldif = format!(
        "{}dn: cn=ops,{GROUPS}\nobjectClass: posixGroup\ncn: ops\ngidNumber: 5000\nmemberUid: user1\nmemberUid: USER2\nmemberUid: ghost\n\n",
        people(0..4)
    );
    let slapd = Slapd::start(&ldif);
    let app = with_groups(&slapd, |g| g.membership = provisiond::config::GroupMembership::MemberUid);
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 1, "membershipsChanged": 2}));
    let errors: Vec<&str> = run["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(errors, ["1 member values of groups named neither a synced user nor a synced group: skipped"], "{run}");
    let mut expected: Vec<String> =
        ["user1", "user2"].iter().map(|u| user(&app, u)["id"].as_str().unwrap().to_string()).collect();
    expected.sort();
    assert_eq!(member_ids(&group(&app, "ops")), expected);
}

#[test]
fn sync_groups_a_group_deleted_in_the_directory_disappears_at_the_next_full_run_not_at_an_incremental() {
    let groups: String = (0..12).map(|i| group_of_names(&format!("team{i}"), &[user_dn(i)])).collect();
    let slapd = Slapd::start(&format!("{}{groups}", people(0..12)));
    let app = with_groups(&slapd, |_| {});
    assert_counts(&sync(&app, true), json!({"status": "succeeded", "groupsCreated": 12}));
    let gone_id = group(&app, "team3")["id"].as_str().unwrap().to_string();
    slapd.modify(&format!("dn: cn=team3,{GROUPS}\nchangetype: delete\n"));

    let incremental = sync(&app, false);
    assert_counts(&incremental, json!({"status": "succeeded", "groupsDeleted": 0}));
    assert_eq!(app.get(&format!("/scim/v2/Groups/{gone_id}")).status, 200, "incremental runs never delete");

    let full = sync(&app, true);
    assert_counts(&full, json!({"status": "succeeded", "groupsDeleted": 1, "groupsCreated": 0}));
    assert_eq!(app.get(&format!("/scim/v2/Groups/{gone_id}")).status, 404);
    assert_eq!(group_count(&app), 11);
    let u3 = user(&app, "user3");
    assert_eq!(app.get(&format!("/scim/v2/Users/{}", u3["id"].as_str().unwrap())).body["groups"], Value::Null, "no group left");
}

#[test]
fn sync_groups_a_member_renamed_by_modrdn_keeps_its_membership() {
    let slapd = Slapd::start(&format!("{}{}", people(0..6), group_of_names("eng", &[user_dn(5), user_dn(1)])));
    let app = with_groups(&slapd, |_| {});
    sync(&app, true);
    let id5 = user(&app, "user5")["id"].as_str().unwrap().to_string();
    slapd.modify(&format!("dn: {}\nchangetype: modrdn\nnewrdn: uid=renamed5\ndeleteoldrdn: 1\n", user_dn(5)));
    // The directory keeps the membership: refint rewrites the member value, in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !slapd.search("(cn=eng)", &["member"]).contains(&format!("member: uid=renamed5,{PEOPLE}")) {
        assert!(std::time::Instant::now() < deadline, "refint did not rewrite the member value");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "updated": 1, "membershipsChanged": 0}));
    assert_eq!(user(&app, "renamed5")["id"], id5.as_str());
    assert!(member_ids(&group(&app, "eng")).contains(&id5));
    let full = sync(&app, true);
    assert_counts(&full, json!({"status": "succeeded", "membershipsChanged": 0, "groupsDeleted": 0}));
    assert!(member_ids(&group(&app, "eng")).contains(&id5));
}

#[test]
fn sync_groups_a_mass_deletion_beyond_the_limit_fails_the_run_and_deletes_no_group() {
    let groups: String = (0..10).map(|i| group_of_names(&format!("team{i}"), &[user_dn(i)])).collect();
    let slapd = Slapd::start(&format!("{}{groups}", people(0..10)));
    let app = with_groups(&slapd, |_| {});
    sync(&app, true);
    for i in 0..5 {
        slapd.modify(&format!("dn: cn=team{i},{GROUPS}\nchangetype: delete\n"));
    }
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "failed", "groupsDeleted": 0}));
    let first = run["errors"][0].as_str().unwrap();
    assert!(first.contains("would delete 5 of 10 groups") && first.contains("no group was deleted"), "{first}");
    assert_eq!(group_count(&app), 10);
    // By hand, beyond the limit.
    let cli = Cli::new(&app, &slapd, &format!("[ldap.groups]\nbase_dn = \"{GROUPS}\"\n"));
    let (ok, summary) = cli.sync(&["--full", "--allow-mass-deactivation"]);
    assert!(ok, "{summary:#}");
    assert_counts(&summary, json!({"status": "succeeded", "groupsDeleted": 5}));
    assert_eq!(group_count(&app), 5);
}

#[test]
fn sync_groups_a_scim_group_of_the_same_name_is_taken_over_and_the_run_says_so() {
    let slapd = Slapd::start(&format!("{}{}", people(0..3), group_of_names("finance", &[user_dn(1)])));
    let app = with_groups(&slapd, |_| {});
    let scim_user = crate::groups::user(&app, "outsider");
    let scim = crate::groups::group(&app, "Finance", &[&scim_user]);
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 0, "groupsUpdated": 1}));
    let errors = run["errors"].to_string();
    assert!(errors.contains("the SCIM group \\\"finance\\\"") && errors.contains("source ldap"), "{errors}");
    let g = group(&app, "finance");
    assert_eq!(g["id"], scim.as_str(), "one group");
    let pool = provisiond::app::open_database(&app.config).unwrap();
    let stored = provisiond::store::groups::get(&mut pool.get().unwrap(), &scim).unwrap().unwrap();
    assert_eq!(stored.source.to_string(), "ldap");
    assert_eq!(member_ids(&g), [user(&app, "user1")["id"].as_str().unwrap().to_string()], "its members are the directory's");
}

#[test]
fn sync_groups_member_of_on_the_users_makes_the_memberships() {
    let slapd = Slapd::start(&people(0..4));
    // Added online: the memberof overlay writes the users' memberOf.
    slapd.modify(&format!(
        "dn: cn=design,{GROUPS}\nchangetype: add\nobjectClass: groupOfNames\ncn: design\nmember: {}\nmember: {}\n",
        user_dn(1),
        user_dn(2)
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !slapd.search("(uid=user2)", &["memberOf"]).contains("memberOf: cn=design") {
        assert!(std::time::Instant::now() < deadline, "memberof did not write memberOf");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let app = with_groups(&slapd, |g| g.membership = provisiond::config::GroupMembership::MemberOf);
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 1, "membershipsChanged": 2, "errors": []}));
    let id = |u: &str| user(&app, u)["id"].as_str().unwrap().to_string();
    let mut expected = vec![id("user1"), id("user2")];
    expected.sort();
    assert_eq!(member_ids(&group(&app, "design")), expected);

    slapd.modify(&format!("dn: cn=design,{GROUPS}\nchangetype: modify\ndelete: member\nmember: {}\n", user_dn(2)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while slapd.search("(uid=user2)", &["memberOf"]).contains("memberOf: cn=design") {
        assert!(std::time::Instant::now() < deadline, "memberof did not remove memberOf");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "membershipsChanged": 1}));
    assert_eq!(member_ids(&group(&app, "design")), [id("user1")]);
}

#[test]
fn sync_groups_a_dry_run_counts_what_it_would_do_and_writes_no_group() {
    let slapd = Slapd::start(&format!("{}{}", people(0..4), group_of_names("eng", &[user_dn(1), user_dn(2)])));
    let app = with_groups(&slapd, |_| {});
    sync(&app, true);
    let eng = member_ids(&group(&app, "eng"));
    slapd.modify(&format!(
        "dn: cn=eng,{GROUPS}\nchangetype: modify\ndelete: member\nmember: {}\n\n\
         dn: cn=new,{GROUPS}\nchangetype: add\nobjectClass: groupOfNames\ncn: new\nmember: {}\n",
        user_dn(2),
        user_dn(3)
    ));
    let cli = Cli::new(&app, &slapd, &format!("[ldap.groups]\nbase_dn = \"{GROUPS}\"\n"));
    let (ok, summary) = cli.sync(&["--full", "--dry-run"]);
    assert!(ok, "{summary:#}");
    assert_counts(&summary, json!({"dryRun": true, "status": "succeeded", "groupsCreated": 1, "membershipsChanged": 2}));
    assert_eq!(group_count(&app), 1, "no group written");
    assert_eq!(member_ids(&group(&app, "eng")), eng, "no member changed");
    assert_eq!(app.get("/api/v1/sync/runs").body["totalResults"], 1, "not recorded");
}

#[test]
fn sync_groups_a_nested_group_renamed_by_modrdn_is_the_same_group_and_stays_nested() {
    let ldif = format!(
        "{}{}{}",
        people(0..3),
        group_of_names("eng", &[user_dn(1)]),
        group_of_names("staff", &[format!("cn=eng,{GROUPS}"), user_dn(2)]),
    );
    let slapd = Slapd::start(&ldif);
    let app = with_groups(&slapd, |_| {});
    sync(&app, true);
    let eng = group(&app, "eng")["id"].as_str().unwrap().to_string();
    slapd.modify(&format!("dn: cn=eng,{GROUPS}\nchangetype: modrdn\nnewrdn: cn=engineering\ndeleteoldrdn: 1\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !slapd.search("(cn=staff)", &["member"]).contains(&format!("member: cn=engineering,{GROUPS}")) {
        assert!(std::time::Instant::now() < deadline, "refint did not rewrite the member value");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let run = sync(&app, false);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 0, "groupsUpdated": 1, "membershipsChanged": 0}));
    let renamed = group(&app, "engineering");
    assert_eq!(renamed["id"], eng.as_str());
    assert!(member_ids(&group(&app, "staff")).contains(&eng), "still nested");
    assert_counts(&sync(&app, true), json!({"status": "succeeded", "groupsDeleted": 0, "membershipsChanged": 0}));
}

#[test]
fn sync_groups_a_misspelt_group_attribute_is_reported_and_its_groups_skipped() {
    let slapd = Slapd::start(&format!("{}{}", people(0..2), group_of_names("eng", &[user_dn(1)])));
    let app = with_groups(&slapd, |g| g.name_attribute = "commonNam".into());
    let run = sync(&app, true);
    assert_counts(&run, json!({"status": "succeeded", "groupsCreated": 0}));
    let errors = run["errors"].to_string();
    assert!(errors.contains("ldap.groups.name_attribute: \\\"commonNam\\\" is not an attribute type"), "{errors}");
    assert!(errors.contains(&format!("group cn=eng,{GROUPS}: no commonNam")), "{errors}");
    assert_eq!(group_count(&app), 0);
}
