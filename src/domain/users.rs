//! Users: create, read, replace, patch, delete and search, shared by every door.

use serde_json::{Map, Value};

use super::audit::Actor;
use super::{Error, Result};
use crate::domain::mfa::Mfa;
use crate::scim::list::ListQuery;
use crate::scim::schema::USER_RESOURCE;
use crate::scim::{patch, resource};
use crate::store::users::{self as store, StoredUser, WriteError};
use crate::store::{user_filter, Pool};

#[derive(Clone)]
pub struct Users {
    pool: Pool,
    mfa: Mfa,
}

/// The MFA extension of a user as SCIM shows it (computed from its factor).
pub fn mfa_view(user: &StoredUser) -> resource::MfaView<'_> {
    resource::MfaView {
        status: &user.mfa.status,
        enrolled_at: user.mfa.enrolled_at.map(|t| t.and_utc()),
        last_reset_at: user.mfa.last_reset_at.map(|t| t.and_utc()),
    }
}

/// One page of a search.
pub struct Page {
    pub total: i64,
    pub users: Vec<StoredUser>,
}

impl Users {
    pub fn new(pool: Pool, mfa: Mfa) -> Self {
        Users { pool, mfa }
    }

    /// Creates a user from a SCIM body; `source` records which door it came through.
    pub fn create(&self, input: &Value, source: &str, actor: &Actor) -> Result<StoredUser> {
        let reset = resource::reset_requested(input)?;
        let body = resource::normalize(&USER_RESOURCE, input)?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut conn = self.pool.get()?;
        let user = store::insert(&mut conn, &id, &body, source).map_err(|e| write_error(e, &body))?;
        self.reset_if(reset, user, actor)
    }

    pub fn get(&self, id: &str) -> Result<StoredUser> {
        let mut conn = self.pool.get()?;
        store::get(&mut conn, id)?.ok_or_else(|| not_found(id))
    }

    /// The user whose userName equals `user_name` ignoring case (userName is caseExact=false).
    pub fn find_by_user_name(&self, user_name: &str) -> Result<Option<StoredUser>> {
        let mut conn = self.pool.get()?;
        Ok(store::find_by_user_name(&mut conn, user_name)?)
    }

    /// Full replace (PUT): attributes left out are cleared; `id` and `meta.created` stay.
    pub fn replace(&self, id: &str, input: &Value, if_match: Option<&str>, actor: &Actor) -> Result<StoredUser> {
        let reset = resource::reset_requested(input)?;
        let body = resource::normalize(&USER_RESOURCE, input)?;
        let user = self.modify(id, if_match, |_| Ok(body))?;
        self.reset_if(reset, user, actor)
    }

    /// Applies a PatchOp document to the user as it is when its row is locked: concurrent
    /// PATCHes of one user take turns instead of retrying, and none is lost. With `If-Match`, a
    /// version that moved meanwhile is 412.
    pub fn patch(&self, id: &str, request: &Value, if_match: Option<&str>, actor: &Actor) -> Result<StoredUser> {
        let mut reset = false;
        let user = self.modify(id, if_match, |current| {
            let mut body = Value::Object(current.body.clone());
            patch::apply_checked(&USER_RESOURCE, body.as_object_mut().expect("object"), request, &mfa_view(current).computed())?;
            reset = resource::reset_requested(&body)?;
            Ok(resource::normalize(&USER_RESOURCE, &body)?)
        })?;
        self.reset_if(reset, user, actor)
    }

    /// Reads the user with its row locked, checks `If-Match`, and writes what `change` makes of
    /// it (nothing, and no new version, when that is what it was), in one write transaction.
    fn modify(
        &self,
        id: &str,
        if_match: Option<&str>,
        change: impl FnOnce(&StoredUser) -> Result<Map<String, Value>>,
    ) -> Result<StoredUser> {
        let mut conn = self.pool.get()?;
        crate::store::write_tx(&mut conn, |conn| {
            let current = store::get_locked(conn, id)?.ok_or_else(|| not_found(id))?;
            check_if_match(&current, if_match)?;
            let body = change(&current)?;
            if body == current.body {
                return Ok(current);
            }
            store::update_in_tx(conn, &current, &body, crate::store::now()).map_err(|e| write_error(e, &body))
        })
    }

    pub fn delete(&self, id: &str, if_match: Option<&str>) -> Result<()> {
        let version = match if_match {
            None => None,
            Some(_) => {
                let current = self.get(id)?;
                check_if_match(&current, if_match)?;
                Some(current.version)
            }
        };
        let mut conn = self.pool.get()?;
        store::delete(&mut conn, id, version).map_err(|e| match e {
            WriteError::NotFound => not_found(id),
            WriteError::VersionMismatch => Error::PreconditionFailed,
            other => write_error(other, &Map::new()),
        })
    }

    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let filter = q.filter.as_ref().map(|f| user_filter::compile(&USER_RESOURCE, f)).transpose()?;
        let sort = q.sort_by.as_ref().map(|p| user_filter::sort_key(&USER_RESOURCE, p).map(|k| (k, q.descending))).transpose()?;
        let mut conn = self.pool.get()?;
        let page = store::page(&mut conn, store::PageRequest { filter, sort, offset: q.start_index - 1, limit: q.count })?;
        Ok(Page { total: page.total, users: page.users })
    }

    /// Applies the MFA extension's `resetRequested` through the one reset path; the user is
    /// read again so that the answer shows the new state.
    fn reset_if(&self, requested: bool, user: StoredUser, actor: &Actor) -> Result<StoredUser> {
        if !requested {
            return Ok(user);
        }
        self.mfa.reset(&user.id, actor, &crate::domain::mfa::Reason::system("resetRequested set through SCIM"))?;
        self.get(&user.id)
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no user with id {id}"))
}

fn write_error(e: WriteError, body: &Map<String, Value>) -> Error {
    match e {
        WriteError::UserNameTaken => Error::Taken(format!(
            "userName {:?} is already taken (userName is unique ignoring case)",
            body.get("userName").and_then(Value::as_str).unwrap_or_default()
        )),
        WriteError::VersionMismatch => Error::PreconditionFailed,
        WriteError::NotFound => Error::NotFound("the user no longer exists".into()),
        WriteError::Store(e) => Error::Store(e),
    }
}

fn check_if_match(current: &StoredUser, if_match: Option<&str>) -> Result<()> {
    match if_match {
        Some(header) if !resource::etag_matches(header, current.version) => Err(Error::PreconditionFailed),
        _ => Ok(()),
    }
}
