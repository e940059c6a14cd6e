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
