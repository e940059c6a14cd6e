//! The one code that resets a second factor. Every door (API, bulk, SCIM, CLI, LDAP flag) ends
//! here, inside the caller's transaction, so the reset and its audit event commit together.

use chrono::NaiveDateTime;
use serde_json::json;

use crate::domain::audit::{self, Actor};
use crate::domain::events::{self, Factor};
use crate::scim::error::ScimError;
use crate::store::{self, Tx};

/// Why a factor is reset, as an operator gave it: required, trimmed, at most
/// [`Reason::MAX_CHARS`] characters. Every door that takes a reason from a person parses it
/// here, so the rule is the same for the API, bulk resets and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub(crate) const MAX_CHARS: usize = 1000;

    pub fn parse(text: Option<&str>) -> Result<Self, ScimError> {
        let text = text.map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Err(ScimError::invalid_value(
                "reason is required: say why the factor is reset (it is kept in the audit trail)",
            ));
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(ScimError::invalid_value(format!("reason is longer than {} characters", Self::MAX_CHARS)));
        }
        Ok(Reason(text.to_string()))
    }

    /// A reason the daemon words itself (the SCIM extension, a directory flag), cut to the limit.
    pub(crate) fn system(text: &str) -> Self {
        Reason(cut(text).to_string())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// `text` cut to [`Reason::MAX_CHARS`] characters.
fn cut(text: &str) -> &str {
    match text.char_indices().nth(Reason::MAX_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Resets every factor of `user` (`(id, userName)`): the authenticator app's secret, the
/// security keys and passkeys, the backup codes and the enrolment link deleted, status
/// `pending`, lockout cleared; `mfa.reset` audited with what was removed (kinds and names),
/// and one security event per kind of factor removed. Resetting a pending user is a harmless
/// no-op that is still audited. Returns the status before the reset; `Gone` when the user was
/// deleted meanwhile.
pub(crate) fn reset_in_tx(
    conn: &mut Tx,
    user: (&str, &str),
    actor: &Actor,
    reason: Option<&str>,
    at: NaiveDateTime,
) -> Result<store::mfa::FactorStatus, store::Error> {
    store::mfa::take_reset_turn(conn)?;
    if !store::mfa::lock(conn, user.0, None)? {
        return Err(store::Error::Gone(format!("user {} no longer exists", user.0)));
    }
    let factor = store::mfa::get(conn, user.0)?;
    let previous = factor.as_ref().map(|f| f.status).unwrap_or(store::mfa::FactorStatus::None);
    let mut removed = Vec::new();
    if factor.as_ref().is_some_and(|f| f.has_totp()) {
        removed.push((Factor::Totp, super::webauthn::TOTP_NAME.to_string()));
    }
    // Asked only of a user the factor row says holds keys: a bulk reset of thousands of users
    // without any reads nothing more per user.
    if factor.as_ref().is_some_and(|f| f.webauthn.is_some()) {
        removed.extend(store::webauthn::names_of(conn, user.0)?.into_iter().map(|name| (Factor::Webauthn, name)));
    }
    store::mfa::reset(conn, user.0, at)?;
    store::enrolment_links::delete_of(conn, user.0)?;
    let listed: Vec<_> = removed.iter().map(|(kind, name)| json!({"type": kind.as_str(), "name": name})).collect();
    let detail = json!({"previousStatus": previous, "removed": listed});
    let event = audit::event(at, audit::MFA_RESET, user, actor, reason.map(cut), Some(detail));
    audit::write(conn, &[event])?;
    let mut kinds: Vec<Factor> = removed.iter().map(|(kind, _)| *kind).collect();
    kinds.dedup();
    if kinds.is_empty() {
        // Nothing was held (a pending user): receivers still hear of the reset, as before.
        events::record_for(conn, events::MFA_RESET, user.0, actor, reason.map(cut), at)?;
    }
    for kind in kinds {
        events::record_factor(conn, events::MFA_RESET, kind, user.0, actor, reason.map(cut), at)?;
    }
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_trimmed_and_bounded() {
        for missing in [None, Some(""), Some("   \n\t")] {
            let e = Reason::parse(missing).unwrap_err();
            assert_eq!((e.status, e.scim_type.unwrap().as_str()), (400, "invalidValue"), "{missing:?}");
        }
        assert_eq!(Reason::parse(Some("  lost phone ")).unwrap().as_str(), "lost phone");
        assert!(Reason::parse(Some(&"é".repeat(1000))).is_ok());
        assert!(Reason::parse(Some(&"é".repeat(1001))).is_err());
        assert_eq!(Reason::system(&"x".repeat(5000)).as_str().len(), 1000);
    }
}
