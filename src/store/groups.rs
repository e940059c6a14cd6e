//! Groups: the stored SCIM body (every attribute but `members`) and the membership tables,
//! `group_users` and `group_groups`, indexed both ways. Memberships change by the row: no
//! function here reads a whole member list in order to change it.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde_json::{Map, Value};

use super::schema::{group_groups, group_users, groups, users};
use super::sql::{Bind, Condition, Fragment, Select};
use super::users::Source;
use super::{DbConn, Error, Result, Tx};

/// A stored group, without its members.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGroup {
    pub id: String,
    /// Canonical SCIM body, without `members`.
    pub body: Map<String, Value>,
    pub source: Source,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl StoredGroup {
    pub fn display_name(&self) -> &str {
        self.body.get("displayName").and_then(Value::as_str).unwrap_or_default()
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = groups)]
struct Row {
    id: String,
    body: String,
    source: Source,
    version: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl TryFrom<Row> for StoredGroup {
    type Error = Error;
    fn try_from(r: Row) -> Result<Self> {
        let body = match serde_json::from_str(&r.body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Error::Corrupt(format!("group {} has an unreadable body", r.id))),
        };
        Ok(StoredGroup {
            id: r.id,
            body,
            source: r.source,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "User",
            MemberKind::Group => "Group",
        }
    }
}

/// A member as a group lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub kind: MemberKind,
}

/// A group a user belongs to, directly or through nested groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group_id: String,
    pub display: String,
    pub direct: bool,
}

/// What a write can run into besides database failures.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("displayName is already taken")]
    DisplayNameTaken,
    #[error("the group changed since it was read")]
    VersionMismatch,
    #[error("no such group")]
    NotFound,
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<DieselError> for WriteError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => WriteError::DisplayNameTaken,
            other => WriteError::Store(other.into()),
        }
    }
}

/// displayName is unique ignoring case, folded as userName is.
pub fn display_name_key(display_name: &str) -> String {
    super::users::user_name_key(display_name)
}

fn external_id(body: &Map<String, Value>) -> Option<&str> {
    body.get("externalId").and_then(Value::as_str)
}

fn display_name(body: &Map<String, Value>) -> &str {
    body.get("displayName").and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn insert(
    tx: &mut Tx,
    id: &str,
    body: Map<String, Value>,
    source: Source,
    at: NaiveDateTime,
) -> Result<StoredGroup, WriteError> {
    let text = Value::Object(body.clone()).to_string();
    diesel::insert_into(groups::table)
        .values((
            groups::id.eq(id),
            groups::display_name.eq(display_name(&body)),
            groups::display_name_key.eq(display_name_key(display_name(&body))),
            groups::external_id.eq(external_id(&body)),
            groups::body.eq(&text),
            groups::source.eq(source),
            groups::version.eq(1i64),
            groups::created_at.eq(at),
            groups::updated_at.eq(at),
        ))
        .execute(tx.conn())?;
    Ok(StoredGroup { id: id.to_string(), body, source, version: 1, created_at: at, updated_at: at })
}

/// Writes a new body (and a new version) over `current`.
pub(crate) fn update(
    tx: &mut Tx,
    current: StoredGroup,
    body: Map<String, Value>,
    at: NaiveDateTime,
) -> Result<StoredGroup, WriteError> {
    let text = Value::Object(body.clone()).to_string();
    let n = diesel::update(groups::table.find(&current.id).filter(groups::version.eq(current.version)))
        .set((
            groups::display_name.eq(display_name(&body)),
            groups::display_name_key.eq(display_name_key(display_name(&body))),
            groups::external_id.eq(external_id(&body)),
            groups::body.eq(&text),
            groups::version.eq(current.version + 1),
            groups::updated_at.eq(at),
        ))
        .execute(tx.conn())?;
    if n == 0 {
        return Err(WriteError::VersionMismatch);
    }
    Ok(StoredGroup { body, version: current.version + 1, updated_at: at, ..current })
}

/// A new version after a change of members (the body is unchanged, the ETag is not).
pub(crate) fn touch(tx: &mut Tx, id: &str, at: NaiveDateTime) -> Result<(), DieselError> {
    diesel::update(groups::table.find(id))
        .set((groups::version.eq(groups::version + 1i64), groups::updated_at.eq(at)))
        .execute(tx.conn())?;
    Ok(())
}

pub(crate) fn delete(tx: &mut Tx, id: &str, version: Option<i64>) -> Result<(), WriteError> {
    let conn = tx.conn();
    let n = match version {
        Some(v) => diesel::delete(groups::table.filter(groups::id.eq(id)).filter(groups::version.eq(v))).execute(conn)?,
        None => diesel::delete(groups::table.filter(groups::id.eq(id))).execute(conn)?,
    };
    if n == 0 {
        return Err(if version.is_some() { WriteError::VersionMismatch } else { WriteError::NotFound });
    }
    Ok(())
}

pub fn get(conn: &mut DbConn, id: &str) -> Result<Option<StoredGroup>> {
    groups::table.find(id).select(Row::as_select()).first::<Row>(conn).optional()?.map(StoredGroup::try_from).transpose()
}

/// The group `id`, its row locked until the caller's write transaction ends (PostgreSQL
/// `FOR NO KEY UPDATE`; a SQLite write transaction holds the database): changes of one group
/// take turns.
pub(crate) fn get_locked(tx: &mut Tx, id: &str) -> Result<Option<StoredGroup>> {
    let conn = tx.conn();
    if let DbConn::Pg(pg) = conn {
        let found = groups::table.find(id).select(groups::id).for_no_key_update().first::<String>(pg).optional()?;
        if found.is_none() {
            return Ok(None);
        }
    }
    get(conn, id)
}

/// The group whose displayName equals `name` ignoring case.
pub fn find_by_display_name(conn: &mut DbConn, name: &str) -> Result<Option<StoredGroup>> {
    groups::table
        .filter(groups::display_name_key.eq(display_name_key(name)))
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(StoredGroup::try_from)
        .transpose()
}

/// One page of groups matching `filter`, in creation order or by displayName.
pub struct Page {
    pub total: i64,
    pub groups: Vec<StoredGroup>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSort {
    DisplayName,
    ExternalId,
    Created,
    LastModified,
}

pub(crate) fn page(
    conn: &mut DbConn,
    filter: Option<Condition>,
    sort: Option<(GroupSort, bool)>,
    offset: i64,
    limit: i64,
) -> Result<Page> {
    let filter = filter.unwrap_or_else(|| Condition::new().sql("1 = 1"));
    let total = groups::table.filter(filter.clone()).count().get_result::<i64>(conn)?;
    if limit == 0 {
        return Ok(Page { total, groups: Vec::new() });
    }
    let (column, descending) = match sort {
        None => ("groups.created_at", false),
        Some((GroupSort::DisplayName, d)) => ("groups.display_name_key", d),
        Some((GroupSort::ExternalId, d)) => ("groups.external_id", d),
        Some((GroupSort::Created, d)) => ("groups.created_at", d),
        Some((GroupSort::LastModified, d)) => ("groups.updated_at", d),
    };
    let direction = if descending { "DESC" } else { "ASC" };
    let order = Fragment::<diesel::sql_types::Text>::new().sql(&format!("{column} {direction}, groups.id {direction}"));
    let rows: Vec<Row> =
        groups::table.filter(filter).select(Row::as_select()).order(order).offset(offset).limit(limit).load(conn)?;
    Ok(Page { total, groups: rows.into_iter().map(StoredGroup::try_from).collect::<Result<_>>()? })
}

/// Which of `ids` are users and which are groups; the rest are unknown.
pub(crate) fn classify(conn: &mut DbConn, ids: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut found_users = Vec::new();
    let mut found_groups = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        found_users.extend(users::table.filter(users::id.eq_any(chunk)).select(users::id).load::<String>(conn)?);
        found_groups.extend(groups::table.filter(groups::id.eq_any(chunk)).select(groups::id).load::<String>(conn)?);
    }
    Ok((found_users, found_groups))
}

/// Rows per statement: well under SQLite's bind limit and PostgreSQL's.
const CHUNK: usize = 500;

/// Adds members (already known to exist); those already in are left as they are. Returns how
/// many rows were added.
pub(crate) fn add_members(tx: &mut Tx, group_id: &str, user_ids: &[String], group_ids: &[String]) -> Result<usize, DieselError> {
    let mut added = 0;
    for (table, column, ids) in [("group_users", "user_id", user_ids), ("group_groups", "member_id", group_ids)] {
        for chunk in ids.chunks(CHUNK) {
            let rows = chunk.iter().map(|id| vec![Some(Bind::Text(group_id.to_string())), Some(Bind::Text(id.clone()))]);
            let Some(insert) = super::sql::insert_rows(table, &["group_id", column], rows) else { continue };
            let statement = super::sql::Statement::once(insert.text().sql(" ON CONFLICT DO NOTHING"));
            added += statement.execute(tx.conn())?;
        }
    }
    Ok(added)
}

/// Removes these members (users or groups); ids that are not members are ignored. Returns how
/// many rows were removed.
pub(crate) fn remove_members(tx: &mut Tx, group_id: &str, ids: &[String]) -> Result<usize, DieselError> {
    let conn = tx.conn();
    let mut removed = 0;
    for chunk in ids.chunks(CHUNK) {
        removed += diesel::delete(
            group_users::table.filter(group_users::group_id.eq(group_id)).filter(group_users::user_id.eq_any(chunk)),
        )
        .execute(conn)?;
        removed += diesel::delete(
            group_groups::table.filter(group_groups::group_id.eq(group_id)).filter(group_groups::member_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    Ok(removed)
}

/// Removes every member; how many there were.
pub(crate) fn clear_members(tx: &mut Tx, group_id: &str) -> Result<usize, DieselError> {
    let conn = tx.conn();
    let users = diesel::delete(group_users::table.filter(group_users::group_id.eq(group_id))).execute(conn)?;
    let groups = diesel::delete(group_groups::table.filter(group_groups::group_id.eq(group_id))).execute(conn)?;
    Ok(users + groups)
}

/// The members of a group: users, then groups, each in id order (from the primary keys alone:
/// no other row is read).
pub fn members(conn: &mut DbConn, group_id: &str) -> Result<Vec<Member>> {
    let user_ids: Vec<String> = group_users::table
        .filter(group_users::group_id.eq(group_id))
        .select(group_users::user_id)
        .order(group_users::user_id.asc())
        .load(conn)?;
    let group_ids: Vec<String> = group_groups::table
        .filter(group_groups::group_id.eq(group_id))
        .select(group_groups::member_id)
        .order(group_groups::member_id.asc())
        .load(conn)?;
    let users = user_ids.into_iter().map(|id| Member { id, kind: MemberKind::User });
    Ok(users.chain(group_ids.into_iter().map(|id| Member { id, kind: MemberKind::Group })).collect())
}

/// The groups each of `user_ids` belongs to: directly, and through groups nested in others
/// (`direct` false), each group once per user; cycles end the walk.
pub fn memberships(conn: &mut DbConn, user_ids: &[String]) -> Result<Vec<(String, Membership)>> {
    let mut out = Vec::new();
    for chunk in user_ids.chunks(CHUNK) {
        // The walk up nested groups is a recursive query whose plan PostgreSQL builds up and
        // tears down on every run (most of its CPU for a single user's answer); it runs only for
        // the users that are in some group at all, found on the (user_id, group_id) index. (Its
        // IN list is spelled out as the walk's is: a statement kept by its text, where SQLite
        // would prepare diesel's `eq_any` again every time.)
        let f = Fragment::<diesel::sql_types::Text>::new().sql("SELECT DISTINCT user_id FROM group_users WHERE user_id IN (");
        let chunk: Vec<String> = Select(binds(f, chunk).sql(")")).load(conn)?;
        if chunk.is_empty() {
            continue;
        }
        let f = Fragment::<diesel::sql_types::Text>::new().sql(
            "WITH RECURSIVE up(user_id, group_id, depth) AS (SELECT user_id, group_id, 0 FROM group_users WHERE user_id IN (",
        );
        let f = binds(f, &chunk).sql(
            ") UNION SELECT up.user_id, group_groups.group_id, 1 FROM up JOIN group_groups ON group_groups.member_id = up.group_id) \
             SELECT up.user_id || '|' || up.group_id || '|' || min(up.depth) || '|' || groups.display_name \
             FROM up JOIN groups ON groups.id = up.group_id \
             GROUP BY up.user_id, up.group_id, groups.display_name, groups.display_name_key \
             ORDER BY up.user_id, groups.display_name_key",
        );
        let rows: Vec<String> = Select(f).load(conn)?;
        for row in rows {
            // Ids hold no `|`; the display name comes last and may.
            let mut parts = row.splitn(4, '|');
            let (Some(user), Some(group), Some(depth), Some(display)) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            out.push((
                user.to_string(),
                Membership { group_id: group.to_string(), display: display.to_string(), direct: depth == "0" },
            ));
        }
    }
    Ok(out)
}

/// `ids` appended to `f` as a list of bind parameters (`?, ?, ?`).
fn binds<ST>(f: Fragment<ST>, ids: &[String]) -> Fragment<ST> {
    ids.iter().enumerate().fold(f, |f, (i, id)| f.sql(if i == 0 { "" } else { ", " }).bind(Bind::Text(id.clone())))
}

/// SQL for the ids of the users in the groups `group_ids` or in any group nested in them,
/// however deep (cycles end the walk): `users.id IN (…)` for filters and resets by group.
pub(crate) fn members_condition(group_ids: &[String]) -> Condition {
    let mut start = binds(Condition::new().sql("groups.id IN ("), group_ids);
    if group_ids.is_empty() {
        start = start.sql("NULL");
    }
    members_of(start.sql(")"))
}

/// As [`members_condition`], for the group whose displayName is `name` (ignoring case).
pub(crate) fn members_condition_named(name: &str) -> Condition {
    members_of(Condition::new().sql("groups.display_name_key = ").bind(Bind::Text(display_name_key(name))))
}

/// The users in the groups `start` selects (a condition on `groups`) or nested in them.
fn members_of(start: Condition) -> Condition {
    Condition::new().sql("users.id IN (WITH RECURSIVE down(id) AS (SELECT groups.id FROM groups WHERE ").push(start).sql(
        " UNION SELECT group_groups.member_id FROM group_groups JOIN down ON group_groups.group_id = down.id) \
         SELECT group_users.user_id FROM group_users WHERE group_users.group_id IN (SELECT id FROM down))",
    )
}

/// Records the door a group now comes through (a SCIM group taken over by the LDAP sync).
pub(crate) fn set_source(tx: &mut Tx, id: &str, source: Source) -> Result<(), DieselError> {
    diesel::update(groups::table.find(id)).set(groups::source.eq(source)).execute(tx.conn())?;
    Ok(())
}
