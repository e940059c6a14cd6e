//! The one code that resets a second factor. Every door (API, bulk, SCIM, CLI, LDAP flag) ends
//! here, inside the caller's transaction, so the reset and its audit event commit together.

use chrono::NaiveDateTime;
use serde_json::json;

use crate::domain::audit::{self, Actor};
use crate::store::{self, DbConn};

/// Resets the factor of `user` (`(id, userName)`): secret and backup codes deleted, status
/// `pending`, lockout cleared, `mfa.reset` audited. Resetting a pending user is a harmless
/// no-op that is still audited. Returns the status before the reset; `Gone` when the user was
/// deleted meanwhile.
pub fn reset_in_tx(
    conn: &mut DbConn,
    user: (&str, &str),
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> Result<String, store::Error> {
    store::mfa::take_reset_turn(conn)?;
    if !store::mfa::lock(conn, user.0, None)? {
        return Err(store::Error::Gone(format!("user {} no longer exists", user.0)));
    }
    let previous = store::mfa::get(conn, user.0)?.map(|f| f.status).unwrap_or_else(|| store::mfa::NONE.into());
    store::mfa::reset(conn, user.0, at)?;
    let event = audit::event(at, audit::MFA_RESET, user, actor, reason, Some(json!({"previousStatus": previous})));
    audit::write(conn, &[event])?;
    Ok(previous)
}
