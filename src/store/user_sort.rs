//! Sorted pages of users (`sortBy`): every sort walks an index. Each user keeps a sort-key row
//! per attribute in the search table (`user_values.sort_key`, the primary or first value, RFC
//! 7644 §3.4.2.3) under a partial index; columns and MFA fields have `(key, id)` indexes.

use diesel::prelude::*;

use super::sql::{Bind, Condition, Fragment, Select};
use super::user_filter::SortKey;
use super::{DbConn, Result};

/// One page of the ids of the users matching `filter` sorted by `key` (ties by id), users
/// without a value last (in id order), as two index walks: the users with a value, in the key's
/// index order, then, when the page reaches past them, the others. No key is computed per user
/// and nothing is sorted but ties; without a filter each walk reads one index only, so a page
/// deep in the list skips index entries, not rows.
pub(super) fn sorted_ids(
    conn: &mut DbConn,
    filter: Option<&Condition>,
    key: &SortKey,
    descending: bool,
    offset: i64,
    limit: i64,
) -> Result<Vec<String>> {
    use diesel::sql_types::BigInt;
    let walks = walks(key, descending, filter);
    let page = |walk: &Walk, offset: i64, limit: i64| {
        Select(walk.select.clone().sql(" LIMIT ").bind(Bind::Int(limit)).sql(" OFFSET ").bind(Bind::Int(offset)))
    };
    let mut ids: Vec<String> = page(&walks.keyed, offset, limit).load(conn)?;
    let Some(missing) = &walks.missing else { return Ok(ids) };
    if ids.len() as i64 == limit {
        return Ok(ids);
    }
    // The page reaches past the users with a value: how many there are, then the others.
    let with_value = if !ids.is_empty() {
        offset + ids.len() as i64
    } else {
        Select(Fragment::<BigInt>::new().sql("SELECT count(*) FROM (").push(walks.keyed.select.clone()).sql(") AS keyed"))
            .get_result::<i64>(conn)?
    };
    let rest = limit - ids.len() as i64;
    ids.extend(page(missing, (offset - with_value).max(0), rest).load::<String>(conn)?);
    Ok(ids)
}

/// The SQL of the walk over the users that have a value for `key`, without a filter (tests
/// look at its plan).
pub fn sort_walk_sql(key: &SortKey, descending: bool) -> String {
    walks(key, descending, None).keyed.select.sql(" LIMIT 10").text()
}

/// A `SELECT <user id> … ORDER BY …` over one index.
struct Walk {
    select: Fragment<diesel::sql_types::Text>,
}

/// How a sort walks the users: those with a value in key order, and (when some may have none)
/// the others in id order.
struct Walks {
    keyed: Walk,
    missing: Option<Walk>,
}

fn walks(key: &SortKey, descending: bool, filter: Option<&Condition>) -> Walks {
    use diesel::sql_types::Text;
    let dir = if descending { "DESC" } else { "ASC" };
    // `SELECT id FROM from WHERE [filter AND] condition ORDER BY order`
    let walk = |id: &str, from: Fragment<Text>, condition: Condition, order: &str| {
        let mut f = Fragment::<Text>::new().sql(&format!("SELECT {id} FROM ")).push(from).sql(" WHERE ");
        if let Some(filter) = filter {
            f = f.sql("(").push(filter.clone()).sql(") AND ");
        }
        Walk { select: f.push(condition).sql(&format!(" ORDER BY {order}")) }
    };
    let users = || Fragment::<Text>::new().sql("users");
    match key {
        SortKey::Column { column, nullable } => Walks {
            keyed: walk(
                "users.id",
                users(),
                Condition::new().sql(&if *nullable { format!("{column} IS NOT NULL") } else { "1 = 1".into() }),
                &format!("{column} {dir}, users.id {dir}"),
            ),
            missing: nullable
                .then(|| walk("users.id", users(), Condition::new().sql(&format!("{column} IS NULL")), "users.id ASC")),
        },
        // Without a filter, the factor rows alone: their (column, user_id) index.
        SortKey::Factor { column, nullable } => {
            let (id, from) = match filter {
                None => ("f.user_id", Fragment::new().sql("mfa_factors f")),
                Some(_) => ("users.id", Fragment::new().sql("users JOIN mfa_factors f ON f.user_id = users.id")),
            };
            Walks {
                keyed: walk(
                    id,
                    from.clone(),
                    Condition::new().sql(&if *nullable { format!("f.{column} IS NOT NULL") } else { "1 = 1".into() }),
                    &format!("f.{column} {dir}, f.user_id {dir}"),
                ),
                missing: nullable.then(|| walk(id, from, Condition::new().sql(&format!("f.{column} IS NULL")), "f.user_id ASC")),
            }
        }
        // The sort-key rows (`k.sort_key` written out: it selects them) in the order of an index
        // on (path, value): PostgreSQL's partial one of the sort-key rows, SQLite's one index of
        // all rows (ties ordered by user_id as they come); without a filter, those rows alone.
        SortKey::Value { path } => {
            let (id, from) = match filter {
                None => ("k.user_id", Fragment::new().sql("user_values k")),
                Some(_) => ("users.id", Fragment::new().sql("user_values k JOIN users ON users.id = k.user_id")),
            };
            let keyed = Condition::new().sql("k.path = ").bind(Bind::Text(path.clone())).sql(" AND k.sort_key");
            // The users with a value, gathered once from the path's index entries, and
            // the users' id index walked past them: cheap when few have a value (the case where
            // the others make a long list), bounded by the users with one otherwise.
            let missing = Condition::new()
                .sql("users.id NOT IN (SELECT m.user_id FROM user_values m WHERE m.path = ")
                .bind(Bind::Text(path.clone()))
                .sql(" AND m.sort_key)");
            Walks {
                keyed: walk(id, from, keyed, &format!("k.value {dir}, k.user_id {dir}")),
                missing: Some(walk("users.id", users(), missing, "users.id ASC")),
            }
        }
    }
}
