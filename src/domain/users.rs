//! Users: create, read, replace, patch, delete and search, shared by every door.

use serde_json::{Map, Value};

use std::sync::Arc;

use super::audit::Actor;
use super::events;
use super::groups::Membership;
use super::mfa::{reset, Reason};
use super::{Error, Result};
use crate::clock::{self, Clock};
use crate::scim::filter::{AttrPath, Filter};
use crate::scim::list::ListQuery;
use crate::scim::schema::USER_RESOURCE;
use crate::scim::{patch, resource};
use crate::store::user_pages::{self, Start, Walk};
use crate::store::users::{self as store_users, WriteError};
/// A user as stored: its SCIM body, version, times and factor summary.
pub use crate::store::users::{Source, StoredUser};
use crate::store::{self, user_filter, Pool, PooledConn, Tx};

#[derive(Clone)]
pub struct Users {
    pool: Pool,
    clock: Arc<dyn Clock>,
}

/// The MFA extension of a user as SCIM shows it (computed from its factor).
/// A new user's id: a UUID whose first bits are the time of its making (version 7), in a
/// sequence that only grows within this process. Every index keyed by user id (the users' own,
/// their search values, factors and links) then takes new users at its end instead of at random
/// places: 100,000 users created by a directory sync touch a few pages at the tail of each
/// index instead of most of their pages. The id says when it was made, as `meta.created` does.
pub fn new_user_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn mfa_view(user: &StoredUser) -> resource::MfaView<'_> {
    resource::MfaView {
        status: user.mfa.status.as_str(),
        enrolled_at: user.mfa.enrolled_at.map(|t| t.and_utc()),
        last_reset_at: user.mfa.last_reset_at.map(|t| t.and_utc()),
        totp_enrolled_at: user.mfa.totp_enrolled_at.map(|t| t.and_utc()),
        webauthn: user.mfa.webauthn.as_deref(),
    }
}

/// Which users a search (or a reset of all it finds) is about: a SCIM filter and, for the
/// console, where they come from. The default matches every user.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    pub filter: Option<Filter>,
    pub source: Option<Source>,
    /// A search box's text: the start of the userName, display name, given or family name, or
    /// an email address, ignoring case.
    pub text: Option<String>,
}

impl Matching {
    pub(crate) fn condition(&self) -> Result<Option<store::sql::Condition>> {
        Ok(store::user_search::matching(self.filter.as_ref(), self.source, self.text.as_deref())?)
    }
}

/// One page of a search.
pub struct Page {
    pub total: i64,
    pub users: Vec<StoredUser>,
}

/// The reason recorded when the SCIM extension's `resetRequested` resets a factor.
const SCIM_RESET: &str = "resetRequested set through SCIM";

impl Users {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Users { pool, clock }
    }

    fn now(&self) -> chrono::NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Creates a user from a SCIM body; `source` records which door it came through. A
    /// `resetRequested` in the body resets the new factor in the same transaction.
    pub fn create(&self, input: &Value, source: Source, actor: &Actor) -> Result<StoredUser> {
        self.create_on(&mut self.pool.get()?, input, source, actor)
    }

    /// [`Users::create`] on `conn` (see [`Users::showing`]).
    fn create_on(&self, conn: &mut PooledConn, input: &Value, source: Source, actor: &Actor) -> Result<StoredUser> {
        let reset = resource::reset_requested(input)?;
        let new = store_users::NewUser::new(new_user_id(), resource::normalize(&USER_RESOURCE, input)?);
        let name = new.user_name().to_string();
        store::write_tx(conn, |tx| {
            // Read once the write turn is ours: users are stamped in the order they are written.
            let at = self.now();
            let user = store_users::insert(tx, new, source, at).map_err(|e| write_error(e, &name))?;
            self.reset_if(tx, reset, user, actor, at)
        })
    }

    pub fn get(&self, id: &str) -> Result<StoredUser> {
        self.get_on(&mut self.pool.get()?, id)
    }

    /// [`Users::get`] on `conn` (see [`Users::showing`]).
    fn get_on(&self, conn: &mut PooledConn, id: &str) -> Result<StoredUser> {
        store_users::get(conn, id)?.ok_or_else(|| not_found(id))
    }

    /// Runs `op` (a read or a write of one user) and reads the groups of the user it gives when
    /// `groups`, on one connection: each checkout costs PostgreSQL a round trip (the pool tests
    /// the connection it hands out).
    pub(crate) fn showing(
        &self,
        groups: bool,
        op: impl FnOnce(&mut OneConnection) -> Result<StoredUser>,
    ) -> Result<(StoredUser, Vec<Membership>)> {
        let mut conn = self.pool.get()?;
        let user = op(&mut OneConnection { users: self, conn: &mut conn })?;
        let memberships = match groups {
            true => store::groups::memberships(&mut conn, std::slice::from_ref(&user.id))?.into_iter().map(|(_, m)| m).collect(),
            false => Vec::new(),
        };
        Ok((user, memberships))
    }

    /// The user whose userName equals `user_name` ignoring case (userName is caseExact=false).
    pub fn find_by_user_name(&self, user_name: &str) -> Result<Option<StoredUser>> {
        let mut conn = self.pool.get()?;
        Ok(store_users::find_by_user_name(&mut conn, user_name)?)
    }

    /// Checks `If-Match` and writes what `change` makes of the user (nothing, and no new
    /// version, when that is what it was) and the reset it asks for, in one write transaction.
    ///
    /// `change` runs first on the user as read before the transaction, so that on SQLite the
    /// writer's turn, which every other write waits for, holds the writes alone; the update is
    /// made on the version read. If another write came first, `change` runs again on the user
    /// read with its row locked: concurrent changes of one user take turns, and none is lost.
    fn modify(
        &self,
        conn: &mut PooledConn,
        id: &str,
        if_match: Option<&str>,
        actor: &Actor,
        change: impl Fn(&StoredUser) -> Result<(Map<String, Value>, bool)>,
    ) -> Result<StoredUser> {
        let read = store_users::get(conn, id)?.ok_or_else(|| not_found(id))?;
        let (planned, reset) = Planned::of(read, if_match, &change)?;
        let planned = match planned {
            Planned::Keep(user) if !reset => return Ok(user),
            planned => planned,
        };
        store::write_tx(conn, |tx| {
            let at = self.now();
            let (user, reset) = match planned.write(tx, actor, at)? {
                Some(user) => (user, reset),
                None => {
                    let current = store_users::get_locked(tx, id)?.ok_or_else(|| not_found(id))?;
                    let (planned, reset) = Planned::of(current, if_match, &change)?;
                    (planned.write(tx, actor, at)?.ok_or(Error::PreconditionFailed)?, reset)
                }
            };
            self.reset_if(tx, reset, user, actor, at)
        })
    }

    /// Deletes the user; receivers hear of it (`user.deleted`, with the name it had).
    pub(crate) fn delete(&self, id: &str, if_match: Option<&str>, actor: &Actor) -> Result<()> {
        let mut conn = self.pool.get()?;
        store::write_tx(&mut conn, |tx| {
            let current = store_users::get_locked(tx, id)?.ok_or_else(|| not_found(id))?;
            super::check_if_match(current.version, if_match)?;
            store_users::delete(tx, id, Some(current.version)).map_err(|e| match e {
                WriteError::NotFound => not_found(id),
                other => write_error(other, ""),
            })?;
            events::record(tx, events::USER_DELETED, events::Subject::of(&current), actor, None, self.now())?;
            Ok(())
        })
    }

    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let matching = Matching { filter: q.filter.clone(), ..Matching::default() };
        let sort = q.sort_by.as_ref().map(|p| (p, q.descending));
        self.search(&matching, sort, q.start_index - 1, q.count)
    }

    /// A page of the users `matching` asks for, sorted by an attribute (`true`: descending)
    /// or in creation order; `offset` is 0-based.
    pub fn search(&self, matching: &Matching, sort: Option<(&AttrPath, bool)>, offset: i64, limit: i64) -> Result<Page> {
        let filter = matching.condition()?;
        let sort = sort.map(|(p, descending)| user_filter::sort_key(&USER_RESOURCE, p).map(|k| (k, descending))).transpose()?;
        let mut conn = self.pool.get()?;
        let walk = match sort {
            Some((key, descending)) => Walk::Sorted { key, descending, offset },
            None => Walk::Created(Start::Offset(offset)),
        };
        let page = user_pages::page(&mut conn, user_pages::PageRequest { filter, walk, limit })?;
        Ok(Page { total: page.total, users: page.users })
    }

    /// Applies the MFA extension's `resetRequested` through the one reset path, in the
    /// transaction of the write that asked for it; the user is read again so that the answer
    /// shows the new state.
    fn reset_if(
        &self,
        tx: &mut Tx,
        requested: bool,
        user: StoredUser,
        actor: &Actor,
        at: chrono::NaiveDateTime,
    ) -> Result<StoredUser> {
        if !requested {
            return Ok(user);
        }
        let reason = Reason::system(SCIM_RESET);
        reset::reset_in_tx(tx, (&user.id, user.user_name()), actor, Some(reason.as_str()), at)?;
        store_users::get(tx, &user.id)?.ok_or_else(|| not_found(&user.id))
    }
}

/// The reads and writes of one user on one connection (see [`Users::showing`]).
pub(crate) struct OneConnection<'a> {
    users: &'a Users,
    conn: &'a mut PooledConn,
}

impl OneConnection<'_> {
    pub(crate) fn create(&mut self, input: &Value, source: Source, actor: &Actor) -> Result<StoredUser> {
        self.users.create_on(self.conn, input, source, actor)
    }

    pub(crate) fn get(&mut self, id: &str) -> Result<StoredUser> {
        self.users.get_on(self.conn, id)
    }

    /// Full replace (PUT): attributes left out are cleared; `id` and `meta.created` stay.
    pub(crate) fn replace(&mut self, id: &str, input: &Value, if_match: Option<&str>, actor: &Actor) -> Result<StoredUser> {
        let reset = resource::reset_requested(input)?;
        let body = resource::normalize(&USER_RESOURCE, input)?;
        self.users.modify(self.conn, id, if_match, actor, |_| Ok((body.clone(), reset)))
    }

    /// Applies a PatchOp document to the user as it is when written (see [`Users::modify`]):
    /// concurrent PATCHes of one user each apply to the result of the one before, and none is
    /// lost. With `If-Match`, a version that moved meanwhile is 412.
    pub(crate) fn patch(&mut self, id: &str, request: &Value, if_match: Option<&str>, actor: &Actor) -> Result<StoredUser> {
        self.users.modify(self.conn, id, if_match, actor, |current| {
            let mut body = Value::Object(Map::clone(&current.body));
            patch::apply_checked(&USER_RESOURCE, body.as_object_mut().expect("object"), request, &mfa_view(current).computed())?;
            let reset = resource::reset_requested(&body)?;
            Ok((resource::normalize(&USER_RESOURCE, &body)?, reset))
        })
    }
}

/// What a change makes of a user as read: the same user, or an update to write.
enum Planned {
    Keep(StoredUser),
    Write(store_users::Update),
}

impl Planned {
    /// `change` made of `current` once `If-Match` holds for it, and whether it asks for a reset.
    fn of(
        current: StoredUser,
        if_match: Option<&str>,
        change: impl Fn(&StoredUser) -> Result<(Map<String, Value>, bool)>,
    ) -> Result<(Self, bool)> {
        super::check_if_match(current.version, if_match)?;
        let (body, reset) = change(&current)?;
        let planned = match current.body == body {
            true => Planned::Keep(current),
            false => Planned::Write(store_users::Update::new(current, body)),
        };
        Ok((planned, reset))
    }

    /// The user as written; `None` when it changed since it was read (nothing written).
    fn write(self, tx: &mut Tx, actor: &Actor, at: chrono::NaiveDateTime) -> Result<Option<StoredUser>> {
        let update = match self {
            Planned::Keep(user) => return Ok(Some(user)),
            Planned::Write(update) => update,
        };
        let name = store_users::user_name_in(update.body()).to_string();
        let was_active = update.current().is_active();
        match store_users::update(tx, update, at) {
            Ok(user) => {
                events::record_activity(tx, was_active, &user, actor, None, at)?;
                Ok(Some(user))
            }
            Err(WriteError::VersionMismatch) => Ok(None),
            Err(e) => Err(write_error(e, &name)),
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no user with id {id}"))
}

fn write_error(e: WriteError, user_name: &str) -> Error {
    match e {
        WriteError::UserNameTaken => {
            Error::taken(format!("userName {user_name:?} is already taken (userName is unique ignoring case)"))
        }
        WriteError::VersionMismatch => Error::PreconditionFailed,
        WriteError::NotFound => Error::NotFound("the user no longer exists".into()),
        WriteError::Store(e) => e.into(),
    }
}
