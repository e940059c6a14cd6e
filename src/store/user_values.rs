//! The search rows of a user (`user_values`): one row per leaf value of the attributes that
//! have no column of their own, which lets any filter and any `sortBy` run in SQL.

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde_json::{Map, Value};

use super::schema::user_values;
use super::user_filter::{comparable, value_path};
use super::DbConn;
use crate::scim::schema::{self, Attribute, Kind, Schema};

#[derive(Insertable)]
#[diesel(table_name = user_values, treat_none_as_default_value = false)]
pub(super) struct ValueRow<'a> {
    pub(super) user_id: &'a str,
    pub(super) path: String,
    pub(super) elem: i32,
    pub(super) value: String,
    /// The row `sortBy` of its path sorts this user by (see [`mark_sort_keys`]).
    pub(super) sort_key: bool,
}

/// Writes the search rows of user `id` (whose body is `body`), in the caller's transaction.
pub(super) fn insert_values(conn: &mut DbConn, id: &str, body: &Map<String, Value>) -> Result<(), DieselError> {
    let rows = search_values(id, body);
    match conn {
        // Diesel spells a multi-row INSERT on SQLite as one INSERT per row inside a savepoint of
        // its own, and savepoints cost SQLite a statement journal: one prepared INSERT per row
        // in the caller's transaction is faster.
        DbConn::Sqlite(c) => {
            for row in &rows {
                diesel::insert_into(user_values::table).values(row).execute(c)?;
            }
        }
        // Stay well under the bind-parameter limit per statement.
        DbConn::Pg(c) => {
            for chunk in rows.chunks(200) {
                diesel::insert_into(user_values::table).values(chunk).execute(c)?;
            }
        }
    }
    Ok(())
}

/// Brings the search rows of user `id` from those of body `before` to those of body `after`,
/// writing only the rows that differ: a PATCH of one attribute changes a row or two instead of
/// deleting and inserting the user's dozens, each an entry in two or three indexes.
pub(super) fn update_values(
    conn: &mut DbConn,
    id: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Result<(), DieselError> {
    use std::collections::HashMap;
    let mut stale: HashMap<(String, i32), (String, bool)> =
        search_values(id, before).into_iter().map(|r| ((r.path, r.elem), (r.value, r.sort_key))).collect();
    for row in search_values(id, after) {
        match stale.remove(&(row.path.clone(), row.elem)) {
            Some((value, sort_key)) if value == row.value && sort_key == row.sort_key => {}
            Some(_) => {
                diesel::update(user_values::table.find((id, &row.path, row.elem)))
                    .set((user_values::value.eq(&row.value), user_values::sort_key.eq(row.sort_key)))
                    .execute(conn)?;
            }
            None => {
                diesel::insert_into(user_values::table).values(&row).execute(conn)?;
            }
        }
    }
    for (path, elem) in stale.into_keys() {
        diesel::delete(user_values::table.find((id, path, elem))).execute(conn)?;
    }
    Ok(())
}

/// Every leaf value of the attributes that have no column of their own.
pub(super) fn search_values<'a>(id: &'a str, body: &Map<String, Value>) -> Vec<ValueRow<'a>> {
    let mut rows = Vec::new();
    for (key, value) in body {
        match schema::USER_RESOURCE.extension(key) {
            Some(ext) => {
                if let Some(obj) = value.as_object() {
                    for (k, v) in obj {
                        leaf_values(id, ext, k, v, &mut rows);
                    }
                }
            }
            None if matches!(key.as_str(), "userName" | "externalId" | "active") => {}
            None => leaf_values(id, &schema::USER_SCHEMA, key, value, &mut rows),
        }
    }
    mark_sort_keys(&mut rows);
    rows
}

/// Marks, for each path, the one row a sort by that path uses (RFC 7644 §3.4.2.3): the value of
/// the primary element of a multi-valued attribute, else of its first element.
fn mark_sort_keys(rows: &mut [ValueRow]) {
    use std::collections::HashMap;
    // The primary element of each multi-valued complex attribute (`emails` → 1).
    let mut primary: HashMap<String, i32> = HashMap::new();
    for r in rows.iter().filter(|r| r.value == "true") {
        if let Some(attr) = r.path.strip_suffix(".primary") {
            primary.entry(attr.to_string()).and_modify(|e| *e = (*e).min(r.elem)).or_insert(r.elem);
        }
    }
    let mut chosen: HashMap<&str, i32> = HashMap::new();
    for r in rows.iter() {
        let attr = r.path.rsplit_once('.').map_or(r.path.as_str(), |(a, _)| a);
        let prefer = primary.get(attr).copied();
        chosen
            .entry(r.path.as_str())
            .and_modify(|e| {
                if Some(*e) != prefer && (Some(r.elem) == prefer || r.elem < *e) {
                    *e = r.elem;
                }
            })
            .or_insert(r.elem);
    }
    let chosen: HashMap<String, i32> = chosen.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for r in rows.iter_mut() {
        r.sort_key = chosen.get(&r.path) == Some(&r.elem);
    }
}

fn leaf_values<'a>(id: &'a str, sch: &Schema, key: &str, value: &Value, rows: &mut Vec<ValueRow<'a>>) {
    let Some(attr) = sch.attribute(key) else { return };
    let path = value_path(&schema::USER_RESOURCE, sch, attr.name);
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    for (elem, item) in items.into_iter().enumerate() {
        let elem = elem as i32;
        if attr.kind == Kind::Complex {
            let Some(obj) = item.as_object() else { continue };
            for (k, v) in obj {
                if let Some(sub) = attr.sub(k) {
                    push(rows, id, format!("{path}.{}", sub.name.to_ascii_lowercase()), elem, sub, v);
                }
            }
        } else {
            push(rows, id, path.clone(), elem, attr, item);
        }
    }
}

fn push<'a>(rows: &mut Vec<ValueRow<'a>>, id: &'a str, path: String, elem: i32, attr: &Attribute, v: &Value) {
    if let Some(value) = comparable(attr.kind, attr.case_exact, v) {
        rows.push(ValueRow { user_id: id, path, elem, value, sort_key: false });
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use proptest::prelude::*;
    use serde_json::Value;

    use crate::proptest_support::{config, plausible_user};
    use crate::scim::{resource, schema::USER_RESOURCE};
    use crate::store::schema::user_values;
    use crate::store::users::{self, Source};

    fn stored_rows(conn: &mut crate::store::DbConn, id: &str) -> Vec<(String, i32, String, bool)> {
        user_values::table
            .filter(user_values::user_id.eq(id))
            .select((user_values::path, user_values::elem, user_values::value, user_values::sort_key))
            .order((user_values::path, user_values::elem))
            .load(conn)
            .unwrap()
    }

    fn fresh_rows(id: &str, body: &serde_json::Map<String, Value>) -> Vec<(String, i32, String, bool)> {
        let mut rows: Vec<_> =
            super::search_values(id, body).into_iter().map(|r| (r.path, r.elem, r.value, r.sort_key)).collect();
        rows.sort();
        rows
    }

    /// An update writes only the rows that changed; what it leaves must be what writing the new
    /// body afresh would have written.
    #[test]
    fn the_search_rows_after_an_update_are_those_of_the_new_body_written_afresh() {
        let (_dir, pool) = crate::store::test_database();
        let conn = std::cell::RefCell::new(pool.get().unwrap());
        let n = std::cell::Cell::new(0);
        proptest!(config(200), |(before in plausible_user(), after in plausible_user())| {
            let (Ok(before), Ok(mut after)) = (resource::normalize(&USER_RESOURCE, &before), resource::normalize(&USER_RESOURCE, &after)) else {
                return Ok(());
            };
            n.set(n.get() + 1);
            let id = format!("u{}", n.get());
            // The same name, so that the update cannot collide with another case's user.
            after.insert("userName".into(), Value::from(format!("{id}-after")));
            let mut before = before;
            before.insert("userName".into(), Value::from(id.clone()));
            let at = chrono::NaiveDateTime::default();
            let mut conn = conn.borrow_mut();
            let stored = crate::store::write_tx(&mut conn, |tx| users::insert(tx, &id, before, Source::Scim, at)).unwrap();
            crate::store::write_tx(&mut conn, |tx| users::update(tx, stored, after.clone(), at)).unwrap();
            prop_assert_eq!(stored_rows(&mut conn, &id), fresh_rows(&id, &after));
        });
    }
}
