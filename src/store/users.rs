//! Users: the stored SCIM body plus its indexed columns and search values.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde_json::{Map, Value};

use super::mfa::Summary;
use super::schema::{mfa_factors, user_values, users};
use super::sql::Condition;
use super::user_values::{insert_values, search_values, update_values, ValueRow};
use super::{DbConn, Error, Result, Tx};

super::text_enum::text_enum! {
    /// The door a user came through last: an identity provider over SCIM, or the LDAP sync.
    pub enum Source {
        Scim => "scim",
        Ldap => "ldap",
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub id: String,
    /// Canonical SCIM body (see `scim::resource::normalize`).
    pub body: Map<String, Value>,
    pub source: Source,
    pub version: i64,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
    /// The second factor as the SCIM resource shows it.
    pub mfa: Summary,
}

impl StoredUser {
    pub(crate) fn user_name(&self) -> &str {
        self.body.get("userName").and_then(Value::as_str).unwrap_or_default()
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
pub(super) struct Row {
    pub(super) id: String,
    body: String,
    source: Source,
    version: i64,
    created_at: chrono::NaiveDateTime,
    updated_at: chrono::NaiveDateTime,
}

impl TryFrom<(Row, Summary)> for StoredUser {
    type Error = Error;
    fn try_from((r, mfa): (Row, Summary)) -> Result<Self> {
        let body = match serde_json::from_str(&r.body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Error::Corrupt(format!("user {} has an unreadable body", r.id))),
        };
        Ok(StoredUser {
            id: r.id,
            body,
            source: r.source,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            mfa,
        })
    }
}

/// The columns a body sets. An attribute the body no longer has clears its column (NULL), and
/// every write has the same shape, which keeps its prepared statement cached. The userName's
/// key is set beside them (see [`update`]).
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
struct Columns<'a> {
    user_name: &'a str,
    external_id: Option<&'a str>,
    active: bool,
    body: String,
}

impl<'a> Columns<'a> {
    fn of(body: &'a Map<String, Value>) -> Self {
        Columns {
            user_name: body.get("userName").and_then(Value::as_str).unwrap_or_default(),
            external_id: body.get("externalId").and_then(Value::as_str),
            active: body.get("active").and_then(Value::as_bool).unwrap_or(true),
            body: serde_json::to_string(body).expect("a JSON map serialises"),
        }
    }
}

/// userName compares ignoring case (caseExact=false), and more: its key is the form every
/// spelling of the same name shares (`scim::user_name::UserName::key_of`).
pub fn user_name_key(user_name: &str) -> String {
    crate::scim::user_name::UserName::key_of(user_name)
}

/// What a write can run into besides database failures.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("userName is already taken")]
    UserNameTaken,
    #[error("the user changed since it was read")]
    VersionMismatch,
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<DieselError> for WriteError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => WriteError::UserNameTaken,
            other => WriteError::Store(Error::Query(other)),
        }
    }
}

/// Inserts a new user and its factor row.
pub fn insert(
    tx: &mut Tx,
    id: &str,
    body: Map<String, Value>,
    source: Source,
    now: chrono::NaiveDateTime,
) -> Result<StoredUser, WriteError> {
    let conn = tx.conn();
    let columns = Columns::of(&body);
    let key = user_name_key(columns.user_name);
    diesel::insert_into(users::table)
        .values((
            users::id.eq(id),
            columns,
            users::user_name_key.eq(key),
            users::source.eq(source),
            users::version.eq(1i64),
            users::created_at.eq(now),
            users::updated_at.eq(now),
        ))
        .execute(conn)?;
    insert_values(conn, id, &body)?;
    super::mfa::create(tx, id)?;
    Ok(StoredUser { id: id.to_string(), body, source, version: 1, created_at: now, updated_at: now, mfa: Summary::none() })
}

/// Inserts many new users at once (their factor rows too), in the caller's write transaction:
/// a few statements for many users instead of several per user (the initial LDAP sync). Fails
/// as a whole, e.g. on a userName already taken.
pub(crate) fn insert_many(
    tx: &mut Tx,
    new: &[(String, Map<String, Value>)],
    source: Source,
    now: chrono::NaiveDateTime,
) -> Result<(), DieselError> {
    match tx.conn() {
        DbConn::Pg(pg) => copy_many(pg, new, source, now),
        conn @ DbConn::Sqlite(_) => insert_rows_many(conn, new, source, now),
    }
}

/// A new user's row as COPY sends it: every column given (COPY has no per-row DEFAULT).
#[derive(Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
struct NewUserRow<'a> {
    id: &'a str,
    user_name: &'a str,
    user_name_key: String,
    external_id: Option<&'a str>,
    active: bool,
    body: String,
    source: Source,
    version: i64,
    created_at: chrono::NaiveDateTime,
    updated_at: chrono::NaiveDateTime,
}

/// A new user's factor row: the other columns take their defaults (no factor yet).
#[derive(Insertable)]
#[diesel(table_name = mfa_factors, treat_none_as_default_value = false)]
struct NewFactorRow<'a> {
    user_id: &'a str,
}

/// PostgreSQL takes many rows fastest as one `COPY` per table (binary, through diesel's
/// `copy_from`): no statement with thousands of parameters to build, send and parse.
fn copy_many(
    pg: &mut diesel::PgConnection,
    new: &[(String, Map<String, Value>)],
    source: Source,
    now: chrono::NaiveDateTime,
) -> Result<(), DieselError> {
    if new.is_empty() {
        return Ok(());
    }
    let rows: Vec<NewUserRow> = new
        .iter()
        .map(|(id, body)| {
            let c = Columns::of(body);
            NewUserRow {
                id,
                user_name: c.user_name,
                user_name_key: user_name_key(c.user_name),
                external_id: c.external_id,
                active: c.active,
                body: c.body,
                source,
                version: 1,
                created_at: now,
                updated_at: now,
            }
        })
        .collect();
    diesel::copy_from(users::table).from_insertable(rows).execute(pg)?;
    let factors: Vec<NewFactorRow> = new.iter().map(|(id, _)| NewFactorRow { user_id: id }).collect();
    diesel::copy_from(mfa_factors::table).from_insertable(factors).execute(pg)?;
    let values: Vec<ValueRow> = new.iter().flat_map(|(id, body)| search_values(id, body)).collect();
    diesel::copy_from(user_values::table).from_insertable(values).execute(pg)?;
    Ok(())
}

/// SQLite: multi-row INSERTs.
fn insert_rows_many(
    conn: &mut DbConn,
    new: &[(String, Map<String, Value>)],
    source: Source,
    now: chrono::NaiveDateTime,
) -> Result<(), DieselError> {
    use super::sql::{insert_rows, Bind};
    let text = |s: &str| Some(Bind::Text(s.to_string()));
    // Chunks stay well under SQLite's 32,766 bind parameters per statement.
    for chunk in new.chunks(500) {
        let rows = chunk.iter().map(|(id, body)| {
            let c = Columns::of(body);
            vec![
                text(id),
                text(c.user_name),
                Some(Bind::Text(user_name_key(c.user_name))),
                c.external_id.and_then(text),
                Some(Bind::Bool(c.active)),
                Some(Bind::Text(c.body)),
                text(source.as_str()),
                Some(Bind::Int(1)),
                Some(Bind::Timestamp(now)),
                Some(Bind::Timestamp(now)),
            ]
        });
        let columns = [
            "id",
            "user_name",
            "user_name_key",
            "external_id",
            "active",
            "body",
            "source",
            "version",
            "created_at",
            "updated_at",
        ];
        if let Some(s) = insert_rows("users", &columns, rows) {
            s.execute(conn)?;
        }
        if let Some(s) = insert_rows("mfa_factors", &["user_id"], chunk.iter().map(|(id, _)| vec![text(id)])) {
            s.execute(conn)?;
        }
        let values: Vec<ValueRow> = chunk.iter().flat_map(|(id, body)| search_values(id, body)).collect();
        for rows in values.chunks(2000) {
            let rows = rows.iter().map(|r| {
                vec![
                    text(r.user_id),
                    Some(Bind::Text(r.path.clone())),
                    Some(Bind::Int(r.elem.into())),
                    Some(Bind::Text(r.value.clone())),
                    Some(Bind::Bool(r.sort_key)),
                ]
            });
            if let Some(s) = insert_rows("user_values", &["user_id", "path", "elem", "value", "sort_key"], rows) {
                s.execute(conn)?;
            }
        }
    }
    Ok(())
}

/// The lower-cased userNames among `keys` that some user has.
pub(crate) fn taken_user_name_keys(conn: &mut DbConn, keys: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for chunk in keys.chunks(500) {
        out.extend(users::table.filter(users::user_name_key.eq_any(chunk)).select(users::user_name_key).load::<String>(conn)?);
    }
    Ok(out)
}

/// The externalIds among `ids` that some user has.
pub(crate) fn taken_external_ids(conn: &mut DbConn, ids: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        out.extend(
            users::table
                .filter(users::external_id.eq_any(chunk))
                .select(users::external_id)
                .load::<Option<String>>(conn)?
                .into_iter()
                .flatten(),
        );
    }
    Ok(out)
}

/// Replaces the body of user `current` if it is still at the version read; the old body is
/// dropped, not copied.
pub(crate) fn update(
    tx: &mut Tx,
    current: StoredUser,
    body: Map<String, Value>,
    now: chrono::NaiveDateTime,
) -> Result<StoredUser, WriteError> {
    let conn = tx.conn();
    let columns = Columns::of(&body);
    let row = users::table.filter(users::id.eq(&current.id)).filter(users::version.eq(current.version));
    let (version, updated_at) = (users::version.eq(current.version + 1), users::updated_at.eq(now));
    // The key is left as it is by an update that keeps the userName: a user kept apart under a
    // collision key (`reindex`) can then still be changed without being renamed.
    let n = if columns.user_name == current.user_name() {
        diesel::update(row).set((columns, version, updated_at)).execute(conn)?
    } else {
        let key = users::user_name_key.eq(user_name_key(columns.user_name));
        diesel::update(row).set((columns, key, version, updated_at)).execute(conn)?
    };
    if n == 0 {
        return Err(WriteError::VersionMismatch);
    }
    update_values(conn, &current.id, &current.body, &body)?;
    Ok(StoredUser { body, version: current.version + 1, updated_at: now, ..current })
}

/// Deletes user `id` (at `version`, when given).
pub(crate) fn delete(tx: &mut Tx, id: &str, version: Option<i64>) -> Result<(), WriteError> {
    // The user row first, its search values, factor and links by ON DELETE CASCADE: every
    // writer locks a user before the rows that hang off it, so two never wait on each other.
    let conn = tx.conn();
    let n = match version {
        Some(v) => diesel::delete(users::table.filter(users::id.eq(id)).filter(users::version.eq(v))).execute(conn)?,
        None => diesel::delete(users::table.filter(users::id.eq(id))).execute(conn)?,
    };
    if n == 0 {
        return Err(if version.is_some() { WriteError::VersionMismatch } else { WriteError::NotFound });
    }
    Ok(())
}

pub fn get(conn: &mut DbConn, id: &str) -> Result<Option<StoredUser>> {
    users::table
        .inner_join(mfa_factors::table)
        .filter(users::id.eq(id))
        .select((Row::as_select(), Summary::as_select()))
        .first::<(Row, Summary)>(conn)
        .optional()?
        .map(StoredUser::try_from)
        .transpose()
}

/// The user `id`, its row locked against other writers until the caller's write transaction
/// ends (PostgreSQL `FOR NO KEY UPDATE`; a SQLite write transaction holds the database).
pub(crate) fn get_locked(conn: &mut DbConn, id: &str) -> Result<Option<StoredUser>> {
    if let DbConn::Pg(pg) = conn {
        let found = users::table.find(id).select(users::id).for_no_key_update().first::<String>(pg).optional()?;
        if found.is_none() {
            return Ok(None);
        }
    }
    get(conn, id)
}

/// The user whose userName equals `user_name` ignoring case.
pub fn find_by_user_name(conn: &mut DbConn, user_name: &str) -> Result<Option<StoredUser>> {
    users::table
        .inner_join(mfa_factors::table)
        .filter(users::user_name_key.eq(user_name_key(user_name)))
        .select((Row::as_select(), Summary::as_select()))
        .first::<(Row, Summary)>(conn)
        .optional()?
        .map(StoredUser::try_from)
        .transpose()
}

/// `(id, userName)` of up to `limit` users matching `filter`, in creation order.
pub(crate) fn matching(conn: &mut DbConn, filter: Condition, limit: i64) -> Result<Vec<(String, String)>> {
    Ok(users::table
        .filter(filter)
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit)
        .select((users::id, users::user_name))
        .load(conn)?)
}

/// `(id, userName)` of the users with these ids (unknown ids are left out).
pub(crate) fn names_of(conn: &mut DbConn, ids: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    // Bounded IN lists: SQLite caps bind parameters per statement.
    for chunk in ids.chunks(500) {
        out.extend(
            users::table.filter(users::id.eq_any(chunk)).select((users::id, users::user_name)).load::<(String, String)>(conn)?,
        );
    }
    Ok(out)
}

/// The id of the user with this externalId, when exactly one has it.
pub(crate) fn find_by_external_id(conn: &mut DbConn, external_id: &str) -> Result<Option<String>> {
    let ids: Vec<String> = users::table.filter(users::external_id.eq(external_id)).select(users::id).limit(2).load(conn)?;
    Ok(if ids.len() == 1 { ids.into_iter().next() } else { None })
}

/// Records which door a user now comes from (`scim`, `ldap`).
pub(crate) fn set_source(tx: &mut Tx, id: &str, source: Source) -> Result<(), DieselError> {
    diesel::update(users::table.find(id)).set(users::source.eq(source)).execute(tx.conn())?;
    Ok(())
}
