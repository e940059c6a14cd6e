//! Enrolment: a new (or the waiting) secret for the authenticator app, and its confirmation by a
//! first code, which makes it the user's factor and hands out the backup codes.

use chrono::NaiveDateTime;
use serde_json::json;

use super::{backup_codes, user_name, BackupCodes, Enrolment, Mfa, Policy};
use crate::domain::audit::{self, Actor};
use crate::domain::events;
use crate::domain::{Error, Invalid, Result};
use crate::store::{self, mfa as factors, users as store_users};

impl Mfa {
    /// Starts (or restarts) enrolment with a new secret; refused over a confirmed authenticator
    /// app (a user with security keys may add one).
    pub fn start_enrolment(&self, user_id: &str) -> Result<Enrolment> {
        self.begin(user_id, false)
    }

    /// The secret the user is to enrol: a new one, or with `reuse` the one already waiting
    /// (an enrolment page opened again shows what the app may have scanned already). Refused
    /// over a confirmed factor.
    pub(super) fn begin(&self, user_id: &str, reuse: bool) -> Result<Enrolment> {
        let mut conn = self.pool.get()?;
        let user = store_users::get(&mut conn, user_id)?.ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))?;
        if user.mfa.totp_enrolled_at.is_some() {
            return Err(Error::conflict("the user has a confirmed authenticator app; reset it before enrolling again"));
        }
        let waiting = match reuse {
            true => self.factor(&mut conn, user_id)?.secret_sealed.and_then(|sealed| self.sealer.open(user_id, &sealed).ok()),
            false => None,
        };
        let secret = match waiting {
            Some(secret) => secret,
            None => {
                let secret = Policy::new_secret();
                let sealed = self.sealer.seal(user_id, &secret);
                store::write_tx(&mut conn, |tx| {
                    self.check_sealing_key(tx)?;
                    factors::lock_user(tx, user_id)?;
                    if !factors::start_enrolment(tx, user_id, &sealed)? {
                        return Err(Error::conflict(
                            "the user has a confirmed authenticator app; reset it before enrolling again",
                        ));
                    }
                    Ok(())
                })?;
                secret
            }
        };
        self.policy
            .enrolment(&secret, user.user_name())
            .map_err(|e| Error::invalid(Invalid::Value, format!("cannot build the otpauth URI: {e}")))
    }

    /// Confirms a started enrolment with a code from the app; returns the first backup codes.
    pub fn confirm(&self, user_id: &str, code: &str, actor: &Actor) -> Result<BackupCodes> {
        let mut conn = self.pool.get()?;
        let f = self.factor(&mut conn, user_id)?;
        if f.has_totp() || f.secret_sealed.is_none() {
            return Err(Error::conflict("no enrolment in progress: start one with POST …/mfa/totp"));
        }
        let secret = self.secret(&f)?;
        let (now, at) = self.now();
        let step = self
            .policy
            .check(&secret, code, now.timestamp().max(0) as u64)
            .ok_or_else(|| Error::invalid(Invalid::Value, "the code does not match the new factor"))?;
        self.complete_enrolment(&mut conn, &f, step, at, actor, |_| Ok(()))
    }

    /// Makes the waiting secret of `f`, confirmed by a code of time step `step`, the user's
    /// factor, with new backup codes (returned) and the user's enrolment link ended; `also` runs
    /// in the same transaction and may refuse it.
    pub(super) fn complete_enrolment(
        &self,
        conn: &mut store::PooledConn,
        f: &factors::Factor,
        step: u64,
        at: NaiveDateTime,
        actor: &Actor,
        also: impl FnOnce(&mut store::Tx) -> Result<()>,
    ) -> Result<BackupCodes> {
        let user_id = f.user_id.as_str();
        let codes = backup_codes::generate();
        let hashes: Vec<String> = codes.iter().map(|c| backup_codes::hash(c)).collect();
        let sealed = f.secret_sealed.as_deref().ok_or_else(|| Error::conflict("no TOTP secret is waiting"))?;
        let user_name = user_name(conn, user_id)?;
        store::write_tx(conn, |conn| {
            // The order every writer of a factor follows: the user, the factor, then what hangs
            // off it (the link `also` may take), so a reset or a new link cannot deadlock with it.
            factors::lock_user(conn, user_id)?;
            factors::lock(conn, user_id, None)?;
            also(conn)?;
            if !factors::confirm(conn, user_id, sealed, step as i64, at)? {
                return Err(Error::conflict("the enrolment changed meanwhile; start again"));
            }
            factors::replace_codes(conn, user_id, &hashes)?;
            store::enrolment_links::delete_of(conn, user_id)?;
            let user = (user_id, user_name.as_str());
            audit::write(
                conn,
                &[
                    audit::event(at, audit::MFA_ENROLLED, user, actor, None, Some(json!({"method": "totp"}))),
                    audit::event(at, audit::MFA_BACKUP_CODES_GENERATED, user, actor, None, Some(json!({"count": codes.len()}))),
                ],
            )?;
            events::record_factor(conn, events::MFA_ENROLLED, events::Factor::Totp, user_id, actor, None, at)?;
            Ok(())
        })?;
        Ok(BackupCodes(codes))
    }
}
