//! The data derived from each stored user — its userName key, its search rows in `user_values`
//! and their sort keys — rebuilt from the stored bodies when the rules that derive it change.
//! Runs after the schema migrations (`migrate`), once per version, under the migration lock.

use diesel::prelude::*;
use serde_json::{Map, Value};

use super::schema::{deployment, user_values, users};
use super::{Result, Tx};

/// The version of the derivation rules: 1 lower-cased userName keys and no sort keys; 2 keys by
/// `scim::user_name::UserName::key_of` and a sort key per path.
const VERSION: i64 = 2;
const SETTING: &str = "search_index_version";
/// Users rebuilt per statement batch.
const CHUNK: i64 = 1000;

/// Rebuilds the derived data when it is older than the rules; returns the users rebuilt (none
/// when it was current) and the collisions found: users whose userName, under the new rule,
/// names another user already. Such a user is kept, under a key no name can have, reported in
/// the log and the audit trail, never merged; renaming or deleting one of the two settles it.
/// Runs in the caller's write transaction.
pub(crate) fn run(tx: &mut Tx, at: chrono::NaiveDateTime) -> Result<(usize, usize)> {
    let current: Option<String> = deployment::table.find(SETTING).select(deployment::value).first(tx.conn()).optional()?;
    if current.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v >= VERSION) {
        return Ok((0, 0));
    }
    let mut collisions = 0;
    let mut done = 0;
    let mut after: Option<(chrono::NaiveDateTime, String)> = None;
    loop {
        let mut query = users::table
            .order((users::created_at.asc(), users::id.asc()))
            .limit(CHUNK)
            .select((users::id, users::user_name, users::user_name_key, users::body, users::created_at))
            .into_boxed();
        if let Some((at, id)) = &after {
            query = query.filter(users::created_at.gt(*at).or(users::created_at.eq(*at).and(users::id.gt(id.clone()))));
        }
        let chunk: Vec<(String, String, String, String, chrono::NaiveDateTime)> = query.load(tx.conn())?;
        let Some(last) = chunk.last() else { break };
        after = Some((last.4, last.0.clone()));
        let ids: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        diesel::delete(user_values::table.filter(user_values::user_id.eq_any(&ids))).execute(tx.conn())?;
        for (id, name, old_key, body, _) in &chunk {
            let body: Map<String, Value> = match serde_json::from_str(body) {
                Ok(Value::Object(m)) => m,
                _ => return Err(super::Error::Corrupt(format!("user {id} has an unreadable body"))),
            };
            super::user_values::insert_values(tx.conn(), id, &super::user_values::search_values(&body))?;
            let key = super::users::user_name_key(name);
            if &key == old_key {
                continue;
            }
            let renamed = super::insert_unless_taken(tx.conn(), |c| {
                diesel::update(users::table.find(id)).set(users::user_name_key.eq(&key)).execute(c)
            })?;
            if !renamed {
                let (holder_id, holder_name): (String, String) =
                    users::table.filter(users::user_name_key.eq(&key)).select((users::id, users::user_name)).first(tx.conn())?;
                diesel::update(users::table.find(id))
                    .set(users::user_name_key.eq(format!("\u{1}collision:{id}")))
                    .execute(tx.conn())?;
                tracing::warn!(
                    user_id = %id, user_name = %name, holder_id = %holder_id, holder_name = %holder_name,
                    "userName collision: under the stricter userName rule this user's name is the same as another's; \
                     it keeps its id but cannot be found by userName until one of the two is renamed or deleted"
                );
                let detail = serde_json::json!({"collidesWith": {"id": holder_id, "userName": holder_name}}).to_string();
                super::audit::insert(
                    tx,
                    &[super::audit::NewEvent {
                        at,
                        event_type: "user.user_name_collision",
                        user_id: Some(id),
                        user_name: Some(name),
                        origin: "system",
                        actor: "migration",
                        reason: Some("userNames that look alike name one user (scim::user_name)"),
                        request_id: None,
                        detail: Some(detail),
                    }],
                )?;
                collisions += 1;
            }
        }
        done += chunk.len();
    }
    diesel::delete(deployment::table.find(SETTING)).execute(tx.conn())?;
    diesel::insert_into(deployment::table)
        .values((deployment::name.eq(SETTING), deployment::value.eq(VERSION.to_string())))
        .execute(tx.conn())?;
    Ok((done, collisions))
}
