//! SCIM Groups over HTTP: CRUD, every PATCH shape Entra ID and Okta send (and the peers'
//! failures as regressions), filters, a user's computed `groups`, nesting with a cycle, routes
//! as clients write them, concurrent PATCHes, and MFA resets by group.

use serde_json::{json, Value};

use crate::helpers::{assert_scim_error, encode, TestApp};

pub(crate) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

pub(crate) fn user(app: &TestApp, name: &str) -> String {
    app.create_user(&json!({"userName": name}))["id"].as_str().unwrap().to_string()
}

pub(crate) fn group(app: &TestApp, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let r = app.post("/scim/v2/Groups", &json!({"schemas": [GROUP], "displayName": name, "members": members}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

pub(crate) fn patch(app: &TestApp, id: &str, ops: Value) -> crate::helpers::Reply {
    app.call("PATCH", &format!("/scim/v2/Groups/{id}"), Some(&json!({"schemas": [PATCH_OP], "Operations": ops})))
}

/// The member ids of a group, sorted.
pub(crate) fn members(app: &TestApp, id: &str) -> Vec<String> {
    let r = app.get(&format!("/scim/v2/Groups/{id}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut ids: Vec<String> = r.body["members"]
        .as_array()
        .map(|m| m.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn groups_are_created_read_replaced_and_deleted_with_members_etags_and_unique_names() {
    let app = TestApp::spawn();
    let (ann, ben) = (user(&app, "ann"), user(&app, "ben"));
    let r = app.post(
        "/scim/v2/Groups",
        &json!({"schemas": [GROUP], "displayName": "Finance", "externalId": "fin-1", "members": [{"value": ann, "type": "User"}]}),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.location.as_deref(), Some(format!("{}/scim/v2/Groups/{id}", app.base).as_str()));
    assert_eq!(r.body["meta"]["resourceType"], "Group");
    assert_eq!(r.body["externalId"], "fin-1");
    let member = &r.body["members"][0];
    assert_eq!(member["value"], ann.as_str());
    assert_eq!(member["type"], "User");
    assert!(member.get("display").is_none(), "display is not stored with the membership: {member}");
    assert_eq!(member["$ref"], format!("{}/scim/v2/Users/{ann}", app.base));
    let etag = r.etag.clone().unwrap();

    let dup = app.post("/scim/v2/Groups", &json!({"schemas": [GROUP], "displayName": "FINANCE"}));
    assert_scim_error(&dup, 409, Some("uniqueness"));
    let no_name = app.post("/scim/v2/Groups", &json!({"schemas": [GROUP]}));
    assert_eq!(no_name.status, 400);

    let slim = app.get(&format!("/scim/v2/Groups/{id}?excludedAttributes=members"));
    assert!(slim.body.get("members").is_none() && slim.body["displayName"] == "Finance", "{:?}", slim.body);

    let put = app.call(
        "PUT",
        &format!("/scim/v2/Groups/{id}"),
        Some(&json!({"schemas": [GROUP], "displayName": "Finance EU", "members": [{"value": ben}]})),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_ne!(put.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(members(&app, &id), vec![ben.clone()]);
    let stale = app.call_with(
        "PUT",
        &format!("/scim/v2/Groups/{id}"),
        Some(&json!({"schemas": [GROUP], "displayName": "x"})),
        &[("Authorization", &format!("Bearer {}", app.token)), ("If-Match", &etag)],
    );
    assert_scim_error(&stale, 412, None);

    assert_eq!(app.call("DELETE", &format!("/scim/v2/Groups/{id}"), None).status, 204);
    assert_eq!(app.get(&format!("/scim/v2/Groups/{id}")).status, 404);
    let ben_user = app.get(&format!("/scim/v2/Users/{ben}"));
    assert!(ben_user.body.get("groups").is_none(), "a deleted group's memberships go with it");
}

#[test]
fn patch_shapes_from_entra_and_okta_change_members_by_id_and_answer_204() {
    let app = TestApp::spawn();
    let ids: Vec<String> = (0..5).map(|i| user(&app, &format!("u{i}"))).collect();
    let g = group(&app, "Sales", &[]);
    // Entra: capitalised op, $ref null.
    let r = patch(
        &app,
        &g,
        json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": ids[0]}, {"$ref": null, "value": ids[1]}]}]),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert!(r.etag.is_some());
    assert_eq!(members(&app, &g), sorted(&[&ids[0], &ids[1]]));
    // Okta: remove by filter — and the member really goes (authentik #25686 ignored removals).
    assert_eq!(patch(&app, &g, json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", ids[0])}])).status, 204);
    assert_eq!(members(&app, &g), vec![ids[1].clone()]);
    // Entra's default remove: path members with a value list, answered 204 (SCIM-SDK #149 refused it with 400).
    patch(&app, &g, json!([{"op": "Add", "path": "members", "value": [{"value": ids[2]}, {"value": ids[3]}]}]));
    assert_eq!(patch(&app, &g, json!([{"op": "Remove", "path": "members", "value": [{"value": ids[2]}]}])).status, 204);
    assert_eq!(members(&app, &g), sorted(&[&ids[1], &ids[3]]), "one removal takes one member (AzureAD #10)");
    // A remove naming no member changes nothing (langwatch #7136).
    assert_eq!(patch(&app, &g, json!([{"op": "remove", "path": "members", "value": []}])).status, 204);
    assert_eq!(members(&app, &g).len(), 2);
    // Remove then add in one request, applied in order.
    let r = patch(
        &app,
        &g,
        json!([
            {"op": "remove", "path": "members", "value": [{"value": ids[1]}]},
            {"op": "add", "path": "members", "value": [{"value": ids[1]}, {"value": ids[4]}]},
        ]),
    );
    assert_eq!(r.status, 204);
    assert_eq!(members(&app, &g), sorted(&[&ids[1], &ids[3], &ids[4]]));
    // Replace the whole list.
    assert_eq!(patch(&app, &g, json!([{"op": "replace", "path": "members", "value": [{"value": ids[0]}]}])).status, 204);
    assert_eq!(members(&app, &g), vec![ids[0].clone()]);
    // Okta's rename, with the readOnly id echoed.
    let r = patch(&app, &g, json!([{"op": "replace", "value": {"id": g, "displayName": "Sales EMEA"}}]));
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(app.get(&format!("/scim/v2/Groups/{g}")).body["displayName"], "Sales EMEA");
    // An unknown member fails the whole request, naming it, and changes nothing.
    let r = patch(
        &app,
        &g,
        json!([
            {"op": "add", "path": "members", "value": [{"value": ids[2]}]},
            {"op": "add", "path": "members", "value": [{"value": "no-such-id"}]},
        ]),
    );
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(r.body["detail"].as_str().unwrap().contains("no-such-id"), "{:?}", r.body);
    assert_eq!(members(&app, &g), [ids[0].clone()], "nothing changed");
    // With attributes asked for, the answer is the resource.
    let r = app.call(
        "PATCH",
        &format!("/scim/v2/Groups/{g}?attributes=members"),
        Some(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": ids[2]}]}]})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2);
    // Literally removing members empties the group.
    assert_eq!(patch(&app, &g, json!([{"op": "remove", "path": "members"}])).status, 204);
    assert!(members(&app, &g).is_empty());
}

#[test]
fn filters_find_groups_by_name_external_id_and_member_as_entra_checks_membership() {
    let app = TestApp::spawn();
    let (ann, ben) = (user(&app, "ann"), user(&app, "ben"));
    let fin = group(&app, "Finance", &[&ann]);
    let ops = group(&app, "Ops", &[&ben]);
    let find = |f: &str| {
        let r = app.get(&format!("/scim/v2/Groups?filter={}&excludedAttributes=members", encode(f)));
        assert_eq!(r.status, 200, "{f}: {:?}", r.body);
        let mut ids: Vec<String> =
            r.body["Resources"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(find("displayName eq \"finance\""), vec![fin.clone()]);
    assert_eq!(find(&format!("members[value eq \"{ann}\"]")), vec![fin.clone()]);
    assert_eq!(find(&format!("members eq \"{ben}\"")), vec![ops.clone()]);
    assert_eq!(find(&format!("id eq \"{fin}\" and members eq \"{ann}\"")), vec![fin.clone()]);
    assert!(find(&format!("id eq \"{fin}\" and members eq \"{ben}\"")).is_empty());
    let r = app.get(&format!("/scim/v2/Groups?filter={}", encode("title eq \"x\"")));
    assert_scim_error(&r, 400, Some("invalidFilter"));
    let sorted = app.get("/scim/v2/Groups?sortBy=displayName&sortOrder=descending&count=1");
    assert_eq!(
        (sorted.body["totalResults"].as_i64(), sorted.body["Resources"][0]["displayName"].as_str()),
        (Some(2), Some("Ops"))
    );
}

#[test]
fn a_users_groups_are_direct_and_indirect_through_nesting_with_a_cycle_and_filterable() {
    let app = TestApp::spawn();
    let (ann, ben) = (user(&app, "ann"), user(&app, "ben"));
    let team = group(&app, "Team", &[&ann]);
    let dept = group(&app, "Dept", &[&team, &ben]);
    // A cycle: Team contains Dept, which contains Team.
    assert_eq!(patch(&app, &team, json!([{"op": "add", "path": "members", "value": [{"value": dept}]}])).status, 204);
    let a = app.get(&format!("/scim/v2/Users/{ann}"));
    let mut groups: Vec<(String, String)> = a.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["display"].as_str().unwrap().to_string(), g["type"].as_str().unwrap().to_string()))
        .collect();
    groups.sort();
    assert_eq!(groups, [("Dept".to_string(), "indirect".to_string()), ("Team".to_string(), "direct".to_string())]);
    assert_eq!(a.body["groups"][0]["$ref"].as_str().unwrap().split("/Groups/").count(), 2);
    let dept_members = app.get(&format!("/scim/v2/Groups/{dept}"));
    let kinds: Vec<&str> = dept_members.body["members"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["User", "Group"]);

    let names = |f: &str| crate::helpers::user_names(&app.filter(f));
    assert_eq!(names(&format!("groups[value eq \"{dept}\"]")), ["ann", "ben"], "nested members count");
    assert_eq!(names(&format!("groups.value eq \"{team}\"")), ["ann", "ben"], "the cycle brings Dept's members into Team");
    assert_eq!(names("groups pr"), ["ann", "ben"]);
    assert_eq!(names("groups.display eq \"team\""), ["ann", "ben"], "by the group's name, ignoring case");
    let r = app.get(&format!("/scim/v2/Users?filter={}", encode("groups.type eq \"direct\"")));
    assert_scim_error(&r, 400, Some("invalidFilter"));

    assert_eq!(app.call("DELETE", &format!("/scim/v2/Users/{ann}"), None).status, 204);
    assert!(!members(&app, &team).contains(&ann), "a deleted user's memberships go with it");
}

#[test]
fn routes_match_ignoring_case_and_a_trailing_slash_and_discovery_lists_groups() {
    let app = TestApp::spawn();
    let ann = user(&app, "ann");
    let g = group(&app, "Lower", &[&ann]);
    assert_eq!(app.get(&format!("/scim/v2/groups/{g}")).status, 200);
    assert_eq!(app.get(&format!("/scim/v2/GROUPS/{g}/")).status, 200);
    let r = app.get(&format!("/scim/v2/Users/?filter={}", encode("userName eq \"ann\"")));
    assert_eq!((r.status, r.body["totalResults"].as_i64()), (200, Some(1)), "{:?}", r.body);
    assert_eq!(app.get("/scim/v2/users").status, 200);
    let types = app.get("/scim/v2/ResourceTypes");
    let names: Vec<&str> = types.body["Resources"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["User", "Group"]);
    assert_eq!(app.get("/scim/v2/ResourceTypes/Group").body["endpoint"], "/Groups");
    let schema = app.get(&format!("/scim/v2/Schemas/{GROUP}"));
    assert_eq!(schema.status, 200);
    let attrs: Vec<&str> = schema.body["attributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(attrs, ["displayName", "members"]);
}

/// fleet #50724 lost members to read-modify-write of the whole list.
#[test]
fn twenty_concurrent_patches_adding_different_members_all_land() {
    let app = TestApp::spawn();
    let ids: Vec<String> = (0..20).map(|i| user(&app, &format!("c{i}"))).collect();
    let g = group(&app, "Busy", &[]);
    let threads: Vec<_> = ids
        .iter()
        .map(|id| {
            let (base, token, g, id) = (app.base.clone(), app.token.clone(), g.clone(), id.clone());
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
                let body =
                    json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
                agent
                    .patch(format!("{base}/scim/v2/Groups/{g}"))
                    .header("Authorization", &format!("Bearer {token}"))
                    .header("Content-Type", "application/scim+json")
                    .send(body.to_string())
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 204);
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(members(&app, &g), expected);
    let metrics = app.raw("GET", "/metrics", None, &[("Authorization", &format!("Bearer {}", app.token))]);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains(r#"provisiond_scim_operations_total{operation="group_patch",status="204"} 20"#), "{text}");
}

#[test]
fn mfa_resets_by_group_reach_nested_members_once_each() {
    let app = TestApp::spawn();
    let ids: Vec<String> = ["a", "b", "c", "outsider"].iter().map(|n| user(&app, n)).collect();
    for id in &ids {
        crate::mfa::enrol(&app, id);
    }
    let inner = group(&app, "Inner", &[&ids[1], &ids[2]]);
    let outer = group(&app, "Outer", &[&ids[0], &ids[1], &inner]);
    patch(&app, &inner, json!([{"op": "add", "path": "members", "value": [{"value": outer}]}]));
    let r = app.post("/api/v1/mfa/resets", &json!({"groupIds": [outer], "reason": "team phones replaced"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["reset"], 3, "a, b (in both groups) and c, once each: {:?}", r.body);
    for (id, expected) in ids.iter().zip(["pending", "pending", "pending", "enrolled"]) {
        assert_eq!(crate::mfa::status(&app, id)["status"], expected);
    }
    let r = app.post("/api/v1/mfa/resets", &json!({"groupIds": ["nope"], "reason": "x"}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("nope"));
    let r = app.post("/api/v1/mfa/resets", &json!({"groupIds": [outer], "userIds": [ids[0]], "reason": "x"}));
    assert_eq!(r.status, 400);
}

#[test]
fn a_search_at_the_root_finds_users_then_groups_as_one_paged_list() {
    let app = TestApp::spawn();
    let ann = user(&app, "ann");
    group(&app, "Admins", &[&ann]);
    group(&app, "Bakers", &[]);
    let search = |body: Value| {
        let r = app.post("/scim/v2/.search", &body);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    };
    let all = search(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}));
    assert_eq!(all["totalResults"], 3);
    let types: Vec<&str> =
        all["Resources"].as_array().unwrap().iter().map(|r| r["meta"]["resourceType"].as_str().unwrap()).collect();
    assert_eq!(types, ["User", "Group", "Group"]);
    let second = search(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "startIndex": 2, "count": 1}));
    assert_eq!((second["totalResults"].as_i64(), second["Resources"][0]["displayName"].as_str()), (Some(3), Some("Admins")));
    let by_members = search(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": format!("members eq \"{ann}\""),
    }));
    assert_eq!(by_members["totalResults"], 1, "a filter only groups can answer: {by_members}");
    let r = app.post(
        "/scim/v2/.search",
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "nonsense eq \"x\""}),
    );
    assert_scim_error(&r, 400, Some("invalidFilter"));
}

#[test]
fn the_console_users_list_filters_by_group_and_select_all_resets_just_that_group() {
    use provisiond::domain::operators::Role;
    let app = TestApp::spawn();
    let c = crate::console::Console::sign_in(&app, "alice", Role::Admin);
    let ids: Vec<String> = ["fin.a", "fin.b", "ops.c"].iter().map(|n| user(&app, n)).collect();
    for id in &ids {
        crate::mfa::enrol(&app, id);
    }
    let team = group(&app, "Fin \"Core\"", &[&ids[1]]);
    group(&app, "Finance", &[&ids[0], &team]);
    let page = c.get("/console/users?group=finance");
    assert_eq!(page.status, 200);
    let rows: Vec<&str> = page.body.split("<tr data-user=\"").skip(1).map(|r| r.split('"').next().unwrap()).collect();
    assert_eq!(rows, ["fin.a", "fin.b"], "members, nested ones too");
    assert!(page.body.contains("name=\"group\" value=\"finance\""));
    let quoted = c.get(&format!("/console/users?group={}", encode("Fin \"Core\"")));
    assert_eq!(quoted.body.matches("<tr data-user=\"").count(), 1, "a name with quotes");
    let user_page = c.get(&format!("/console/users/{}", ids[1]));
    assert!(user_page.body.contains(">Fin &#34;Core&#34;</a></li>"), "direct: {}", user_page.body);
    assert!(user_page.body.contains(">Finance</a> <span class=\"hint\">(through a nested group)</span>"));
    assert!(user_page.body.contains("href=\"/console/users?group=Finance\""));
    let done = c.post("/console/users/reset", &[("all", "1"), ("group", "Finance"), ("reason", "finance phones")]);
    assert_eq!(done.status, 200, "{}", done.body);
    for (id, expected) in ids.iter().zip(["pending", "pending", "enrolled"]) {
        assert_eq!(crate::mfa::status(&app, id)["status"], expected);
    }
}

/// A PATCH of group `g` sent to `base`, from a thread of its own.
fn patch_from(base: &str, token: &str, g: &str, ops: Value) -> std::thread::JoinHandle<u16> {
    let (url, auth) = (format!("{base}/scim/v2/Groups/{g}"), format!("Bearer {token}"));
    std::thread::spawn(move || {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        let res = agent.patch(&url).header("Authorization", &auth).header("Content-Type", "application/scim+json");
        res.send(body.to_string()).unwrap().status().as_u16()
    })
}

#[test]
fn through_two_instances_concurrent_adds_all_land_and_a_remove_racing_an_add_ends_in_one_of_their_orders() {
    let app = TestApp::spawn();
    let other = app.another_instance();
    let ids: Vec<String> = (0..20).map(|i| user(&app, &format!("r{i}"))).collect();
    let g = group(&app, "Raced", &[]);
    let adds: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let base = if i % 2 == 0 { &app.base } else { &other.base };
            let token = if i % 2 == 0 { &app.token } else { &other.token };
            patch_from(base, token, &g, json!([{"op": "add", "path": "members", "value": [{"value": id}]}]))
        })
        .collect();
    assert!(adds.into_iter().all(|t| t.join().unwrap() == 204));
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(members(&app, &g), expected, "every add landed");

    let x = &ids[0];
    for round in 0..10 {
        let add = patch_from(&app.base, &app.token, &g, json!([{"op": "add", "path": "members", "value": [{"value": x}]}]));
        let remove =
            patch_from(&other.base, &other.token, &g, json!([{"op": "remove", "path": format!("members[value eq \"{x}\"]")}]));
        assert_eq!((add.join().unwrap(), remove.join().unwrap()), (204, 204), "round {round}");
        let now = members(&app, &g);
        assert_eq!(now.len() - usize::from(now.contains(x)), 19, "round {round}: the others are untouched");
    }
}
