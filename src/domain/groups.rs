//! Groups: create, read, replace, patch, delete and search, shared by every door. Members are
//! changed by id in SQL (`store::groups`): a PATCH adding one member to a group of fifty
//! thousand reads none of them, and concurrent PATCHes of one group take turns on its row.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::audit::Actor;
use super::{Error, Invalid, Result};
use crate::clock::{self, Clock};
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::list::ListQuery;
use crate::scim::patch::members::{self, MemberChange};
use crate::scim::schema::GROUP_RESOURCE;
use crate::scim::{patch, resource};
use crate::store::groups::{self as stored, GroupSort, WriteError};
pub use crate::store::groups::{Member, MemberKind, Membership, StoredGroup};
use crate::store::users::Source;
use crate::store::{self, group_filter, Pool, Tx};

#[derive(Clone)]
pub struct Groups {
    pool: Pool,
    clock: Arc<dyn Clock>,
}

/// One page of a search.
pub struct Page {
    pub total: i64,
    pub groups: Vec<StoredGroup>,
}

impl Groups {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Groups { pool, clock }
    }

    fn now(&self) -> chrono::NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Creates a group from a SCIM body, with the members it names (each must exist).
    pub fn create(&self, input: &Value, source: Source, _actor: &Actor) -> Result<StoredGroup> {
        let (body, members) = split_body(input)?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            let at = self.now();
            let group = stored::insert(tx, &id, body, source, at).map_err(|e| write_error(e, input))?;
            if let Some(ids) = members {
                apply_changes(tx, &group.id, &[MemberChange::Add(ids)])?;
            }
            Ok(group)
        })
    }

    pub fn get(&self, id: &str) -> Result<StoredGroup> {
        let mut conn = self.pool.get()?;
        stored::get(&mut conn, id)?.ok_or_else(|| not_found(id))
    }

    /// The members of a group (users, then groups).
    pub fn members(&self, id: &str) -> Result<Vec<Member>> {
        let mut conn = self.pool.get()?;
        Ok(stored::members(&mut conn, id)?)
    }

    /// The group whose displayName equals `name` ignoring case.
    pub fn find_by_display_name(&self, name: &str) -> Result<Option<StoredGroup>> {
        let mut conn = self.pool.get()?;
        Ok(stored::find_by_display_name(&mut conn, name)?)
    }

    /// Full replace (PUT): the body and, when the document has `members`, the whole member list.
    pub(crate) fn replace(&self, id: &str, input: &Value, if_match: Option<&str>, _actor: &Actor) -> Result<StoredGroup> {
        let (body, members) = split_body(input)?;
        let changes: Vec<MemberChange> = members.map(MemberChange::Replace).into_iter().collect();
        self.modify(id, if_match, |_| Ok(body), &changes)
    }

    /// Applies a PatchOp document: member operations as changes by id, in order, the others to
    /// the body; all or nothing.
    pub(crate) fn patch(&self, id: &str, request: &Value, if_match: Option<&str>, _actor: &Actor) -> Result<StoredGroup> {
        let (changes, rest) = members::split(request, id)?;
        self.modify(
            id,
            if_match,
            |current| {
                let Some(rest) = &rest else { return Ok(current.body.clone()) };
                let mut body = Value::Object(current.body.clone());
                patch::apply(&GROUP_RESOURCE, body.as_object_mut().expect("object"), rest)?;
                Ok(resource::normalize(&GROUP_RESOURCE, &body)?)
            },
            &changes,
        )
    }

    /// Reads the group with its row locked, checks `If-Match`, writes the body `change` makes
    /// (when it differs) and the member changes, and gives the group a new version when
    /// anything changed, in one write transaction.
    fn modify(
        &self,
        id: &str,
        if_match: Option<&str>,
        change: impl FnOnce(&StoredGroup) -> Result<Map<String, Value>>,
        changes: &[MemberChange],
    ) -> Result<StoredGroup> {
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            let current = stored::get_locked(tx, id)?.ok_or_else(|| not_found(id))?;
            super::check_if_match(current.version, if_match)?;
            let at = self.now();
            let body = change(&current)?;
            let mut group = if body == current.body {
                current
            } else {
                let name = body.get("displayName").cloned().unwrap_or_default();
                stored::update(tx, current, body, at).map_err(|e| write_error(e, &serde_json::json!({ "displayName": name })))?
            };
            if apply_changes(tx, id, changes)? > 0 {
                stored::touch(tx, id, at)?;
                group.version += 1;
                group.updated_at = at;
            }
            Ok(group)
        })
    }

    pub(crate) fn delete(&self, id: &str, if_match: Option<&str>) -> Result<()> {
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            let version = match if_match {
                None => None,
                Some(_) => {
                    let current = stored::get_locked(tx, id)?.ok_or_else(|| not_found(id))?;
                    super::check_if_match(current.version, if_match)?;
                    Some(current.version)
                }
            };
            stored::delete(tx, id, version).map_err(|e| match e {
                WriteError::NotFound => not_found(id),
                other => write_error(other, &Value::Null),
            })
        })
    }

    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let filter = q.filter.as_ref().map(group_filter::compile).transpose()?;
        let sort = q.sort_by.as_ref().map(|p| sort_of(p).map(|s| (s, q.descending))).transpose()?;
        let mut conn = self.pool.get()?;
        let page = stored::page(&mut conn, filter, sort, q.start_index - 1, q.count)?;
        Ok(Page { total: page.total, groups: page.groups })
    }

    /// The users in the groups `ids`, directly or through nested groups (each once, cycles
    /// stop the walk), as a filter on users: `groups[value eq "a" or value eq "b"]`. Every id
    /// must name a group.
    pub fn members_filter(&self, ids: &[String]) -> Result<Filter> {
        let mut conn = self.pool.get()?;
        for id in ids {
            if stored::get(&mut conn, id)?.is_none() {
                return Err(Error::invalid(Invalid::Value, format!("no group with id {id}")));
            }
        }
        let value = |id: &String| {
            let path = AttrPath { urn: None, name: "value".into(), sub: None };
            Filter::Compare(path, CompareOp::Eq, CompValue::Str(id.clone()))
        };
        let inner = ids.iter().map(value).reduce(|a, b| Filter::Or(Box::new(a), Box::new(b)));
        let inner = inner.ok_or_else(|| Error::invalid(Invalid::Value, "groupIds must name at least one group"))?;
        Ok(Filter::ValuePath(AttrPath { urn: None, name: "groups".into(), sub: None }, Box::new(inner)))
    }

    /// The groups each user belongs to, directly or through nesting, by user id.
    pub fn memberships(&self, user_ids: &[String]) -> Result<HashMap<String, Vec<Membership>>> {
        let mut conn = self.pool.get()?;
        let mut out: HashMap<String, Vec<Membership>> = HashMap::new();
        for (user, m) in stored::memberships(&mut conn, user_ids)? {
            out.entry(user).or_default().push(m);
        }
        Ok(out)
    }
}

/// A Group document taken apart: the body to store, and the member ids when it names them.
type Parts = (Map<String, Value>, Option<Vec<String>>);

/// The stored body and, when the document names them, the member ids.
fn split_body(input: &Value) -> Result<Parts> {
    let Some(obj) = input.as_object() else {
        return Err(Error::invalid(Invalid::Syntax, "the Group resource must be a JSON object"));
    };
    let members = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")).map(|(_, v)| v);
    let ids = match members {
        None | Some(Value::Null) => None,
        Some(v) => Some(members::ids(v)?),
    };
    let without: Map<String, Value> =
        obj.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("members")).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok((resource::normalize(&GROUP_RESOURCE, &Value::Object(without))?, ids))
}

/// Applies member changes in order; how many membership rows changed. Every id added must be
/// a user or a group: one that is neither fails the whole request, naming it.
fn apply_changes(tx: &mut Tx, group_id: &str, changes: &[MemberChange]) -> Result<usize> {
    let mut changed = 0;
    for change in changes {
        changed += match change {
            MemberChange::Add(ids) => add(tx, group_id, ids)?,
            MemberChange::Remove(ids) => stored::remove_members(tx, group_id, ids)?,
            MemberChange::RemoveAll => stored::clear_members(tx, group_id)?,
            MemberChange::Replace(ids) => {
                let (users, groups) = classify(tx, ids)?;
                stored::clear_members(tx, group_id)? + stored::add_members(tx, group_id, &users, &groups)?
            }
        };
    }
    Ok(changed)
}

fn add(tx: &mut Tx, group_id: &str, ids: &[String]) -> Result<usize> {
    let (users, groups) = classify(tx, ids)?;
    Ok(stored::add_members(tx, group_id, &users, &groups)?)
}

/// The users and the groups among `ids`; an id that is neither is refused.
fn classify(tx: &mut Tx, ids: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut unique: Vec<String> = ids.to_vec();
    unique.sort();
    unique.dedup();
    let (users, groups) = stored::classify(tx.conn(), &unique)?;
    if users.len() + groups.len() < unique.len() {
        let known: std::collections::HashSet<&String> = users.iter().chain(&groups).collect();
        let missing: Vec<&str> = ids.iter().filter(|id| !known.contains(id)).map(String::as_str).take(5).collect();
        return Err(Error::invalid(
            Invalid::Value,
            format!("no user or group with id {}: nothing was changed", missing.join(", ")),
        ));
    }
    Ok((users, groups))
}

fn sort_of(path: &AttrPath) -> Result<GroupSort> {
    let is = |name: &str, sub: Option<&str>| {
        path.name.eq_ignore_ascii_case(name)
            && path.sub.as_deref().map(str::to_ascii_lowercase) == sub.map(str::to_ascii_lowercase)
    };
    if is("displayName", None) {
        Ok(GroupSort::DisplayName)
    } else if is("externalId", None) {
        Ok(GroupSort::ExternalId)
    } else if is("meta", Some("created")) {
        Ok(GroupSort::Created)
    } else if is("meta", Some("lastModified")) {
        Ok(GroupSort::LastModified)
    } else {
        Err(Error::invalid(
            Invalid::Value,
            format!("groups can be sorted by displayName, externalId or meta.created, not {path}"),
        ))
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no group with id {id}"))
}

fn write_error(e: WriteError, input: &Value) -> Error {
    match e {
        WriteError::DisplayNameTaken => {
            let name = input.get("displayName").and_then(Value::as_str).unwrap_or_default();
            Error::taken(format!("displayName {name:?} is already taken (displayName is unique ignoring case)"))
        }
        WriteError::VersionMismatch => Error::PreconditionFailed,
        WriteError::NotFound => Error::NotFound("the group no longer exists".into()),
        WriteError::Store(e) => e.into(),
    }
}
