//! Users: the stored SCIM body plus its indexed columns and search values.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde_json::{Map, Value};

use super::mfa::Summary;
use super::schema::{mfa_factors, user_values, users};
use super::sql::Condition;
use super::sql::{Bind, Fragment, Statement};
use super::user_body::Body;
use super::user_values::{insert_statement, insert_values, search_values, SearchValue, ValueRow, ValuesChange};
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
    pub body: Body,
    pub source: Source,
    pub version: i64,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
    /// The second factor as the SCIM resource shows it.
    pub mfa: Summary,
}

impl StoredUser {
    pub(crate) fn user_name(&self) -> &str {
        user_name_in(&self.body)
    }

    /// Whether the user is active (SCIM's default: yes).
    pub(crate) fn is_active(&self) -> bool {
        active_in(&self.body)
    }
}

/// The userName of a body ("" when it has none).
pub(crate) fn user_name_in(body: &Map<String, Value>) -> &str {
    body.get("userName").and_then(Value::as_str).unwrap_or_default()
}

/// Whether a body is active; absent is active.
pub(crate) fn active_in(body: &Map<String, Value>) -> bool {
    body.get("active").and_then(Value::as_bool).unwrap_or(true)
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
        let Some(body) = Body::read(r.body) else {
            return Err(Error::Corrupt(format!("user {} has an unreadable body", r.id)));
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

/// The columns a body sets (the userName's key is set beside them).
#[derive(Insertable)]
#[diesel(table_name = users)]
struct Columns<'a> {
    user_name: &'a str,
    external_id: Option<&'a str>,
    active: bool,
    body: &'a str,
}

impl<'a> Columns<'a> {
    /// The columns of `body`, stored as `text`.
    fn of(body: &'a Map<String, Value>, text: &'a str) -> Self {
        Columns {
            user_name: user_name_in(body),
            external_id: body.get("externalId").and_then(Value::as_str),
            active: active_in(body),
            body: text,
        }
    }
}

/// A body as the `body` column stores it.
fn stored_text(body: &Map<String, Value>) -> String {
    serde_json::to_string(body).expect("a JSON map serialises")
}

/// A user to insert, with what writing it takes worked out beforehand (its stored text, its
/// search rows): outside the write transaction, where on SQLite every other write waits for it.
pub(crate) struct NewUser {
    id: String,
    body: Map<String, Value>,
    text: String,
    values: Vec<SearchValue>,
}

impl NewUser {
    pub(crate) fn new(id: String, body: Map<String, Value>) -> Self {
        NewUser { text: stored_text(&body), values: search_values(&body), id, body }
    }

    pub(crate) fn user_name(&self) -> &str {
        user_name_in(&self.body)
    }
}

/// A new body for a stored user, with what writing it takes worked out beforehand (see
/// [`NewUser`]): its stored text and the search rows that change.
pub(crate) struct Update {
    current: StoredUser,
    body: Map<String, Value>,
    text: String,
    values: ValuesChange,
}

impl Update {
    /// `body` replacing that of `current` (as read at its version).
    pub(crate) fn new(current: StoredUser, body: Map<String, Value>) -> Self {
        Update { text: stored_text(&body), values: ValuesChange::between(&current.body, &body), current, body }
    }

    /// The user as it was read.
    pub(crate) fn current(&self) -> &StoredUser {
        &self.current
    }

    pub(crate) fn body(&self) -> &Map<String, Value> {
        &self.body
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
pub(crate) fn insert(tx: &mut Tx, new: NewUser, source: Source, now: chrono::NaiveDateTime) -> Result<StoredUser, WriteError> {
    let conn = tx.conn();
    let columns = Columns::of(&new.body, &new.text);
    let key = user_name_key(columns.user_name);
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&new.id),
            columns,
            users::user_name_key.eq(key),
            users::source.eq(source),
            users::version.eq(1i64),
            users::created_at.eq(now),
            users::updated_at.eq(now),
        ))
        .execute(conn)?;
    insert_values(conn, &new.id, &new.values)?;
    super::mfa::create(tx, &new.id)?;
    let body = Body::written(new.body, new.text);
    Ok(StoredUser { id: new.id, body, source, version: 1, created_at: now, updated_at: now, mfa: Summary::none() })
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
    body: &'a str,
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
    let texts: Vec<String> = new.iter().map(|(_, body)| stored_text(body)).collect();
    let rows: Vec<NewUserRow> = new
        .iter()
        .zip(&texts)
        .map(|((id, body), text)| {
            let c = Columns::of(body, text);
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
    let searched: Vec<(&str, Vec<SearchValue>)> = new.iter().map(|(id, body)| (id.as_str(), search_values(body))).collect();
    let values: Vec<ValueRow> = searched.iter().flat_map(|(id, values)| values.iter().map(|v| v.row(id))).collect();
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
            let stored = stored_text(body);
            let c = Columns::of(body, &stored);
            vec![
                text(id),
                text(c.user_name),
                Some(Bind::Text(user_name_key(c.user_name))),
                c.external_id.and_then(text),
                Some(Bind::Bool(c.active)),
                text(c.body),
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
        let searched: Vec<(&str, Vec<SearchValue>)> = chunk.iter().map(|(id, body)| (id.as_str(), search_values(body))).collect();
        let values: Vec<ValueRow> = searched.iter().flat_map(|(id, values)| values.iter().map(|v| v.row(id))).collect();
        for rows in values.chunks(2000) {
            if let Some(s) = insert_statement(rows.iter().copied()) {
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

/// Writes `update` if the user is still at the version it was read at (else
/// `VersionMismatch`, writing nothing); the old body is dropped, not copied.
pub(crate) fn update(tx: &mut Tx, update: Update, now: chrono::NaiveDateTime) -> Result<StoredUser, WriteError> {
    let conn = tx.conn();
    let Update { current, body, text, values } = update;
    let (before, after) = (Columns::of(&current.body, current.body.text()), Columns::of(&body, &text));
    // Only the columns that changed are set: SQLite rewrites the entries of every index on a
    // column a statement sets, changed or not, and each is a page more to write. A column the
    // body no longer has is cleared (NULL). The statement has a few texts, each prepared once
    // (see `Statement::kept`).
    let mut set = Fragment::new()
        .sql("UPDATE users SET body = ")
        .bind(Bind::Text(text.clone()))
        .sql(", version = ")
        .bind(Bind::Int(current.version + 1))
        .sql(", updated_at = ")
        .bind(Bind::Timestamp(now));
    if after.user_name != before.user_name {
        set = set.sql(", user_name = ").bind(Bind::Text(after.user_name.to_string()));
        // The key is left as it is by an update that keeps the userName: a user kept apart
        // under a collision key (`reindex`) can then still be changed without being renamed.
        set = set.sql(", user_name_key = ").bind(Bind::Text(user_name_key(after.user_name)));
    }
    if after.external_id != before.external_id {
        set = match after.external_id {
            Some(id) => set.sql(", external_id = ").bind(Bind::Text(id.to_string())),
            None => set.sql(", external_id = NULL"),
        };
    }
    if after.active != before.active {
        set = set.sql(", active = ").bind(Bind::Bool(after.active));
    }
    let set =
        set.sql(" WHERE id = ").bind(Bind::Text(current.id.clone())).sql(" AND version = ").bind(Bind::Int(current.version));
    if Statement::kept(set).execute(conn)? == 0 {
        return Err(WriteError::VersionMismatch);
    }
    values.write(conn, &current.id)?;
    Ok(StoredUser { body: Body::written(body, text), version: current.version + 1, updated_at: now, ..current })
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
