//! Security keys and passkeys (WebAuthn credentials) and the ceremonies between a start and its
//! finish. A ceremony is taken exactly once (a conditional DELETE whose row count says who won),
//! so a response cannot be finished twice. Every change of a user's credentials ends with
//! [`refresh`], which keeps the factor row's status and SCIM summary in step.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use super::mfa::{self, FactorStatus};
use super::schema::{mfa_factors, webauthn_ceremonies, webauthn_credentials};
use super::{DbConn, Result, Tx};

/// At most this many credentials per user.
pub const MAX_PER_USER: i64 = 10;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webauthn_credentials)]
pub struct Credential {
    /// base64url, as the authenticator made it.
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub aaguid: Option<String>,
    /// webauthn-rs's `SecurityKey` as JSON: the public key and the sign counter.
    pub credential: String,
    pub sign_count: i64,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webauthn_credentials)]
pub struct NewCredential<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub name: &'a str,
    pub aaguid: Option<&'a str>,
    pub credential: &'a str,
    pub sign_count: i64,
    pub created_at: NaiveDateTime,
}

/// The user's credentials, oldest first.
pub fn of_user(conn: &mut DbConn, user_id: &str) -> Result<Vec<Credential>> {
    Ok(webauthn_credentials::table
        .filter(webauthn_credentials::user_id.eq(user_id))
        .order((webauthn_credentials::created_at, webauthn_credentials::id))
        .select(Credential::as_select())
        .load(conn)?)
}

/// The names of the user's credentials, oldest first.
pub fn names_of(conn: &mut DbConn, user_id: &str) -> Result<Vec<String>> {
    Ok(webauthn_credentials::table
        .filter(webauthn_credentials::user_id.eq(user_id))
        .order((webauthn_credentials::created_at, webauthn_credentials::id))
        .select(webauthn_credentials::name)
        .load(conn)?)
}

/// Adds a credential; false when one with this id is registered already (to anyone).
pub fn insert(tx: &mut Tx, new: &NewCredential) -> Result<bool, diesel::result::Error> {
    let n = match tx.conn() {
        DbConn::Pg(pg) => diesel::insert_into(webauthn_credentials::table).values(new).on_conflict_do_nothing().execute(pg)?,
        DbConn::Sqlite(c) => diesel::insert_into(webauthn_credentials::table).values(new).on_conflict_do_nothing().execute(c)?,
    };
    Ok(n == 1)
}

/// Removes one of the user's credentials; its name, or `None` when the user has no such one.
pub fn delete(tx: &mut Tx, user_id: &str, id: &str) -> Result<Option<String>, diesel::result::Error> {
    let conn = tx.conn();
    let mine = webauthn_credentials::table.find(id).filter(webauthn_credentials::user_id.eq(user_id));
    let Some(name) = mine.select(webauthn_credentials::name).first::<String>(conn).optional()? else { return Ok(None) };
    diesel::delete(mine).execute(conn)?;
    Ok(Some(name))
}

/// One credential by id.
pub fn get(conn: &mut DbConn, id: &str) -> Result<Option<Credential>> {
    Ok(webauthn_credentials::table.find(id).select(Credential::as_select()).first(conn).optional()?)
}

/// Records a use of the credential at `at` whose assertion carried `sign_count`, storing the
/// credential as the authentication left it. Refused (false) unless the count is above the
/// one stored, or 0 on both sides (an authenticator that counts nothing): an equal or lower
/// count means another copy of the key signed meanwhile, or this assertion was seen before.
pub fn record_use(
    tx: &mut Tx,
    id: &str,
    sign_count: i64,
    updated: &str,
    at: NaiveDateTime,
) -> Result<bool, diesel::result::Error> {
    use webauthn_credentials::dsl as c;
    let changes = (c::credential.eq(updated), c::sign_count.eq(sign_count), c::last_used_at.eq(at));
    let conn = tx.conn();
    let n = match sign_count {
        0 => diesel::update(c::webauthn_credentials.find(id).filter(c::sign_count.eq(0))).set(changes).execute(conn)?,
        n => diesel::update(c::webauthn_credentials.find(id).filter(c::sign_count.lt(n))).set(changes).execute(conn)?,
    };
    Ok(n == 1)
}

/// Brings the factor row in step with the user's credentials: the SCIM summary of them, and
/// the status (`enrolled` while any factor is left, else `pending`). Runs after every change.
pub fn refresh(tx: &mut Tx, user_id: &str, at: NaiveDateTime) -> Result<()> {
    let creds: Vec<(String, NaiveDateTime)> = webauthn_credentials::table
        .filter(webauthn_credentials::user_id.eq(user_id))
        .order((webauthn_credentials::created_at, webauthn_credentials::id))
        .select((webauthn_credentials::name, webauthn_credentials::created_at))
        .load(tx.conn())?;
    let summary = (!creds.is_empty()).then(|| {
        let list: Vec<_> = creds
            .iter()
            .map(|(name, created)| json!({"name": name, "created": crate::scim::resource::datetime(&created.and_utc())}))
            .collect();
        serde_json::Value::Array(list).to_string()
    });
    diesel::update(mfa_factors::table.find(user_id)).set(mfa_factors::webauthn.eq(&summary)).execute(tx.conn())?;
    let Some(factor) = mfa::get(tx, user_id)? else { return Ok(()) };
    match (summary.is_some() || factor.has_totp(), factor.status) {
        (true, _) => mfa::mark_enrolled(tx, user_id, at)?,
        (false, FactorStatus::Enrolled) => mfa::mark_pending(tx, user_id)?,
        (false, _) => {}
    }
    Ok(())
}

/// A registration or an authentication waiting for its finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Registration,
    Authentication,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Registration => "registration",
            Kind::Authentication => "authentication",
        }
    }
}

/// The most ceremonies a user may have waiting: a client that starts and never finishes
/// pushes out its own oldest, and fills nothing.
const MAX_WAITING: i64 = 20;

/// Stores a ceremony's state until `expires_at`. The user's ceremonies that expired, or the
/// oldest beyond [`MAX_WAITING`], are dropped on the way (only the user's: another user's rows
/// may be locked by a reset running meanwhile).
pub fn put_ceremony(
    tx: &mut Tx,
    id: &str,
    user_id: &str,
    kind: Kind,
    state: &str,
    at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> Result<(), diesel::result::Error> {
    let conn = tx.conn();
    let mine = webauthn_ceremonies::table.filter(webauthn_ceremonies::user_id.eq(user_id));
    diesel::delete(mine.filter(webauthn_ceremonies::expires_at.le(at))).execute(conn)?;
    let keep: Vec<String> =
        mine.order(webauthn_ceremonies::expires_at.desc()).select(webauthn_ceremonies::id).limit(MAX_WAITING - 1).load(conn)?;
    diesel::delete(mine.filter(webauthn_ceremonies::id.ne_all(keep))).execute(conn)?;
    diesel::insert_into(webauthn_ceremonies::table)
        .values((
            webauthn_ceremonies::id.eq(id),
            webauthn_ceremonies::user_id.eq(user_id),
            webauthn_ceremonies::kind.eq(kind.as_str()),
            webauthn_ceremonies::state.eq(state),
            webauthn_ceremonies::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes the user's ceremony of this kind for good: its state and expiry, or `None` when there
/// is none (unknown, another user's or kind, or taken already). Of two finishes racing, one
/// gets it.
pub fn take_ceremony(
    tx: &mut Tx,
    id: &str,
    user_id: &str,
    kind: Kind,
) -> Result<Option<(String, NaiveDateTime)>, diesel::result::Error> {
    let conn = tx.conn();
    let mine = webauthn_ceremonies::table
        .find(id)
        .filter(webauthn_ceremonies::user_id.eq(user_id))
        .filter(webauthn_ceremonies::kind.eq(kind.as_str()));
    let Some(found) = mine
        .select((webauthn_ceremonies::state, webauthn_ceremonies::expires_at))
        .first::<(String, NaiveDateTime)>(conn)
        .optional()?
    else {
        return Ok(None);
    };
    Ok((diesel::delete(mine).execute(conn)? == 1).then_some(found))
}
