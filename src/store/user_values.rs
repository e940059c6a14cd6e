//! The search rows of a user (`user_values`): one row per leaf value of the attributes that
//! have no column of their own, which lets any filter and any `sortBy` run in SQL.

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde_json::{Map, Value};

use super::schema::user_values;
use super::sql::{insert_rows, Bind, Statement};
use super::user_filter::{comparable, value_path};
use super::DbConn;
use crate::scim::schema::{self, Attribute, Kind, Schema};

/// One leaf value of a body, as a search row stores it (the user's id comes at the write).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SearchValue {
    pub(super) path: String,
    pub(super) elem: i32,
    pub(super) value: String,
    /// The row `sortBy` of its path sorts this user by (see [`mark_sort_keys`]).
    pub(super) sort_key: bool,
}

impl SearchValue {
    /// Its row for user `user_id`.
    pub(super) fn row<'a>(&'a self, user_id: &'a str) -> ValueRow<'a> {
        ValueRow { user_id, path: &self.path, elem: self.elem, value: &self.value, sort_key: self.sort_key }
    }
}

#[derive(Insertable, Clone, Copy)]
#[diesel(table_name = user_values, treat_none_as_default_value = false)]
pub(super) struct ValueRow<'a> {
    pub(super) user_id: &'a str,
    pub(super) path: &'a str,
    pub(super) elem: i32,
    pub(super) value: &'a str,
    pub(super) sort_key: bool,
}

/// Writes the search rows `values` of user `id`, in the caller's transaction.
pub(super) fn insert_values(conn: &mut DbConn, id: &str, values: &[SearchValue]) -> Result<(), DieselError> {
    match conn {
        // Diesel spells a multi-row INSERT on SQLite as one INSERT per row inside a savepoint of
        // its own, and savepoints cost SQLite a statement journal: one prepared INSERT per row
        // in the caller's transaction is faster.
        DbConn::Sqlite(c) => {
            for v in values {
                diesel::insert_into(user_values::table).values(v.row(id)).execute(c)?;
            }
        }
        // Statements of up to KEPT_ROWS rows, each kept prepared: a statement diesel does not
        // keep costs PostgreSQL a parse and a plan and the write a second round trip (prepare,
        // then execute), and there are at most KEPT_ROWS texts per connection to keep.
        DbConn::Pg(_) => {
            const KEPT_ROWS: usize = 16;
            for chunk in values.chunks(KEPT_ROWS) {
                if let Some(insert) = insert_statement(chunk.iter().map(|v| v.row(id))) {
                    Statement::kept(insert.text()).execute(conn)?;
                }
            }
        }
    }
    Ok(())
}

/// One multi-row INSERT of search rows, its values as bind parameters (`None` without rows).
pub(super) fn insert_statement<'a>(rows: impl IntoIterator<Item = ValueRow<'a>>) -> Option<Statement> {
    let text = |s: &str| Some(Bind::Text(s.to_string()));
    let rows = rows.into_iter().map(|r| {
        vec![text(r.user_id), text(r.path), Some(Bind::Int(r.elem.into())), text(r.value), Some(Bind::Bool(r.sort_key))]
    });
    insert_rows("user_values", &["user_id", "path", "elem", "value", "sort_key"], rows)
}

/// The search rows that differ between two bodies of a user: a PATCH of one attribute changes
/// a row or two instead of deleting and inserting the user's dozens, each an entry in two or
/// three indexes.
#[derive(Debug, Default)]
pub(super) struct ValuesChange {
    /// Rows whose value (or sort mark) changed.
    changed: Vec<SearchValue>,
    added: Vec<SearchValue>,
    /// `(path, elem)` of rows the new body no longer has.
    removed: Vec<(String, i32)>,
}

impl ValuesChange {
    pub(super) fn between(before: &Map<String, Value>, after: &Map<String, Value>) -> Self {
        use std::collections::HashMap;
        let mut stale: HashMap<(String, i32), SearchValue> =
            search_values(before).into_iter().map(|v| ((v.path.clone(), v.elem), v)).collect();
        let mut change = ValuesChange::default();
        for v in search_values(after) {
            match stale.remove(&(v.path.clone(), v.elem)) {
                Some(old) if old == v => {}
                Some(_) => change.changed.push(v),
                None => change.added.push(v),
            }
        }
        change.removed = stale.into_keys().collect();
        change
    }

    /// Brings the search rows of user `id` from those of the body before to those of the body
    /// after, in the caller's transaction.
    pub(super) fn write(&self, conn: &mut DbConn, id: &str) -> Result<(), DieselError> {
        use super::sql::{Bind, Fragment, Statement};
        for v in &self.changed {
            // Prepared once (see `Statement::kept`).
            let set = Fragment::new()
                .sql("UPDATE user_values SET value = ")
                .bind(Bind::Text(v.value.clone()))
                .sql(", sort_key = ")
                .bind(Bind::Bool(v.sort_key))
                .sql(" WHERE user_id = ")
                .bind(Bind::Text(id.to_string()))
                .sql(" AND path = ")
                .bind(Bind::Text(v.path.clone()))
                .sql(" AND elem = ")
                .bind(Bind::Int(v.elem.into()));
            Statement::kept(set).execute(conn)?;
        }
        for v in &self.added {
            diesel::insert_into(user_values::table).values(v.row(id)).execute(conn)?;
        }
        for (path, elem) in &self.removed {
            diesel::delete(user_values::table.find((id, path, elem))).execute(conn)?;
        }
        Ok(())
    }
}

/// Every leaf value of the attributes that have no column of their own.
pub(super) fn search_values(body: &Map<String, Value>) -> Vec<SearchValue> {
    let mut rows = Vec::new();
    for (key, value) in body {
        match schema::USER_RESOURCE.extension(key) {
            Some(ext) => {
                if let Some(obj) = value.as_object() {
                    for (k, v) in obj {
                        leaf_values(ext, k, v, &mut rows);
                    }
                }
            }
            None if matches!(key.as_str(), "userName" | "externalId" | "active") => {}
            None => leaf_values(&schema::USER_SCHEMA, key, value, &mut rows),
        }
    }
    mark_sort_keys(&mut rows);
    rows
}

/// Marks, for each path, the one row a sort by that path uses (RFC 7644 §3.4.2.3): the value of
/// the primary element of a multi-valued attribute, else of its first element.
fn mark_sort_keys(rows: &mut [SearchValue]) {
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

fn leaf_values(sch: &Schema, key: &str, value: &Value, rows: &mut Vec<SearchValue>) {
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
                    push(rows, format!("{path}.{}", sub.name.to_ascii_lowercase()), elem, sub, v);
                }
            }
        } else {
            push(rows, path.clone(), elem, attr, item);
        }
    }
}

fn push(rows: &mut Vec<SearchValue>, path: String, elem: i32, attr: &Attribute, v: &Value) {
    if let Some(value) = comparable(attr.kind, attr.case_exact, v) {
        rows.push(SearchValue { path, elem, value, sort_key: false });
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

    fn fresh_rows(body: &serde_json::Map<String, Value>) -> Vec<(String, i32, String, bool)> {
        let mut rows: Vec<_> = super::search_values(body).into_iter().map(|r| (r.path, r.elem, r.value, r.sort_key)).collect();
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
            let new = users::NewUser::new(id.clone(), before);
            let stored = crate::store::write_tx(&mut conn, |tx| users::insert(tx, new, Source::Scim, at)).unwrap();
            let update = users::Update::new(stored, after.clone());
            crate::store::write_tx(&mut conn, |tx| users::update(tx, update, at)).unwrap();
            prop_assert_eq!(stored_rows(&mut conn, &id), fresh_rows(&after));
        });
    }
}
