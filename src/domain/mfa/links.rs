//! One-time enrolment links. After a reset a user enrols again from a link to the daemon's own
//! page (`/enrol/{token}`), so no deployment needs a front end of its own for it. The token is
//! 256 random bits, shown once and stored hashed; a link works until it expires, a newer link
//! for the same user replaces it, the user's factor is reset, or it is used.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::json;

use webauthn_rs::prelude::{CreationChallengeResponse, RegisterPublicKeyCredential};

use super::webauthn::Started;
use super::{lockout, BackupCodes, Enrolment, Mfa, Verification};
use crate::domain::audit::{self, Actor, Origin};
use crate::domain::{credentials, Error, Invalid, Result};
use crate::mail::{self, EnrolmentLinkMail, Mailer};
use crate::store::mfa::FactorStatus;
use crate::store::users::StoredUser;
use crate::store::{self, enrolment_links as stored, mfa as factors, users as store_users};

pub(crate) const ENROLMENT_LINK_CREATED: &str = "mfa.enrolment_link.created";
pub(crate) const ENROLMENT_LINK_SENT: &str = "mfa.enrolment_link.sent";
pub(crate) const ENROLMENT_LINK_SEND_FAILED: &str = "mfa.enrolment_link.send_failed";

/// The shortest and the longest lifetime a link may be given.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86400);

/// Where the page of a link lives, under `server.public_url`.
pub const PATH: &str = "/enrol/";

/// A link's URL: it holds the token, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkUrl(String);

impl LinkUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LinkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkUrl(***)")
    }
}

/// A link just created, shown once.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub user_id: String,
    pub user_name: String,
    pub url: LinkUrl,
    pub expires_at: NaiveDateTime,
    /// Where it would be sent: the user's primary email, else the work email.
    pub address: Option<String>,
}

/// What became of a link sent by email. A link that could not be sent still works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent {
        to: String,
    },
    /// The user has neither a primary nor a work email.
    NoAddress,
    Failed {
        to: String,
        detail: String,
    },
}

impl Delivery {
    pub fn as_str(&self) -> &'static str {
        match self {
            Delivery::Sent { .. } => "sent",
            Delivery::NoAddress => "no_address",
            Delivery::Failed { .. } => "failed",
        }
    }

    pub fn to(&self) -> Option<&str> {
        match self {
            Delivery::Sent { to } | Delivery::Failed { to, .. } => Some(to),
            Delivery::NoAddress => None,
        }
    }

    /// Why it was not sent, in a sentence.
    pub fn problem(&self) -> Option<String> {
        match self {
            Delivery::Sent { .. } => None,
            Delivery::NoAddress => Some("the user has no primary or work email address".into()),
            Delivery::Failed { detail, .. } => Some(detail.clone()),
        }
    }
}

/// The enrolment page of a live link.
#[derive(Debug)]
pub struct Page {
    pub issuer: String,
    /// The account name the authenticator app shows (the userName).
    pub account: String,
    pub enrolment: Enrolment,
    /// Seconds until wrong codes stop locking the confirmation, while they do.
    pub locked_for: Option<u64>,
}

/// What a code sent from the enrolment page did.
#[derive(Debug)]
pub enum Confirmed {
    /// The factor is the user's: its backup codes, shown once.
    Enrolled(BackupCodes),
    /// The code does not match (it counted toward the lockout).
    WrongCode,
    LockedOut {
        retry_after_secs: u64,
    },
    /// The link is unknown, expired, replaced or used: nothing was checked.
    Dead,
}

/// The per-user answer of [`Links::create_many`].
#[derive(Debug)]
pub enum Created {
    Link(NewLink),
    /// No link for this user: why, in a sentence.
    Refused {
        user_id: String,
        user_name: Option<String>,
        detail: String,
    },
}

#[derive(Clone)]
pub struct Links {
    mfa: Mfa,
    /// `server.public_url`: links need the address users reach the daemon at.
    public_url: Option<String>,
    default_ttl: Duration,
    /// `[smtp]`: links can be sent by email.
    mailer: Option<Mailer>,
}

impl Links {
    pub fn new(mfa: Mfa, config: &crate::config::Config) -> Self {
        Links {
            mfa,
            public_url: config.server.public_url.clone(),
            default_ttl: Duration::from_secs(config.mfa.enrolment_link_ttl),
            mailer: None,
        }
    }

    /// Sends links by email through `mailer` (built once at start from `[smtp]`).
    pub fn with_mailer(mut self, mailer: Option<Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Whether links can be sent by email (an `[smtp]` section), asked before anything is done.
    pub fn check_mail_ready(&self) -> Result<()> {
        match self.mailer {
            Some(_) => Ok(()),
            None => Err(Error::conflict(
                "links cannot be sent by email: the configuration has no [smtp] section (set it and restart)",
            )),
        }
    }

    /// Sends each link to its user (after the links were committed: a failed send leaves the
    /// link valid). Each outcome is audited: `mfa.enrolment_link.sent`, or
    /// `mfa.enrolment_link.send_failed` with the reason.
    pub fn send(&self, links: &[NewLink], actor: &Actor) -> Result<Vec<Delivery>> {
        self.check_mail_ready()?;
        let mailer = self.mailer.as_ref().expect("checked above");
        let issuer = self.mfa.policy.issuer.as_str();
        let mut conn = self.mfa.pool.get()?;
        let mut deliveries = Vec::with_capacity(links.len());
        for link in links {
            deliveries.push(match &link.address {
                None => Delivery::NoAddress,
                Some(to) => {
                    let expires_at = crate::scim::resource::datetime(&link.expires_at.and_utc());
                    let content =
                        EnrolmentLinkMail { issuer, user_name: &link.user_name, url: link.url.expose(), expires_at: &expires_at };
                    match mailer.send(&mail::enrolment_link(to, &content)) {
                        Ok(()) => Delivery::Sent { to: to.clone() },
                        Err(e) => {
                            tracing::warn!(user_id = %link.user_id, error = %e, "an enrolment link could not be sent");
                            Delivery::Failed { to: to.clone(), detail: e.to_string() }
                        }
                    }
                }
            });
        }
        let (_, at) = self.mfa.now();
        for (links, deliveries) in links.chunks(super::BULK_CHUNK).zip(deliveries.chunks(super::BULK_CHUNK)) {
            let details: Vec<(&str, serde_json::Value)> = deliveries
                .iter()
                .map(|d| match d {
                    Delivery::Sent { to } => (ENROLMENT_LINK_SENT, json!({"to": to})),
                    other => (ENROLMENT_LINK_SEND_FAILED, json!({"to": other.to(), "error": other.problem()})),
                })
                .collect();
            let events: Vec<_> = links
                .iter()
                .zip(&details)
                .map(|(l, (kind, detail))| audit::event(at, kind, (&l.user_id, &l.user_name), actor, None, Some(detail.clone())))
                .collect();
            // The mail is gone already: a trail that cannot be written is logged, not answered
            // as if nothing had been sent.
            if let Err(e) = store::write_tx(&mut conn, |tx| audit::write(tx, &events)) {
                tracing::error!(error = %e, "enrolment links: the audit of their emails could not be written");
            }
        }
        Ok(deliveries)
    }

    /// The lifetime a request asks for, else the configured one; refused outside the bounds.
    pub fn ttl(&self, asked: Option<Duration>) -> Result<Duration> {
        let ttl = asked.unwrap_or(self.default_ttl);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::invalid(
                Invalid::Value,
                format!("ttl must be between {} and {} seconds", MIN_TTL.as_secs(), MAX_TTL.as_secs()),
            ));
        }
        Ok(ttl)
    }

    /// Whether links can be made at all (`server.public_url` set): a door asks before it
    /// does what the links were to follow (a reset), so as not to do half of a request.
    pub fn check_ready(&self) -> Result<()> {
        self.base().map(|_| ())
    }

    fn base(&self) -> Result<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/')).ok_or_else(|| {
            Error::conflict(
                "enrolment links need server.public_url, the address users reach the daemon at: \
                 set it in the configuration and restart",
            )
        })
    }

    /// A new link for one user (`pending` or without a factor); the user's older link stops
    /// working. Refused for an enrolled user (reset first) and a deactivated one.
    pub fn create(&self, user_id: &str, ttl: Option<Duration>, actor: &Actor) -> Result<NewLink> {
        let (base, ttl) = (self.base()?, self.ttl(ttl)?);
        let mut conn = self.mfa.pool.get()?;
        let user = store_users::get(&mut conn, user_id)?.ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))?;
        let (_, at) = self.mfa.now();
        store::write_tx(&mut conn, |tx| self.create_in_tx(tx, base, &user, ttl, at, actor))
    }

    /// Links for many users (after a bulk reset); a user refused does not stop the others.
    /// Results keep the order of `ids`. Should the store fail part-way, the links already made
    /// are still returned (they work, and are shown only now), the rest refused.
    pub fn create_many(&self, ids: &[String], ttl: Option<Duration>, actor: &Actor) -> Result<Vec<Created>> {
        let (base, ttl) = (self.base()?, self.ttl(ttl)?);
        let mut conn = self.mfa.pool.get()?;
        let (_, at) = self.mfa.now();
        let mut out = Vec::with_capacity(ids.len());
        for (i, chunk) in ids.chunks(super::BULK_CHUNK).enumerate() {
            match self.create_chunk(&mut conn, chunk, base, ttl, at, actor) {
                Ok(created) => out.extend(created),
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    tracing::error!(error = ?e, "enrolment links: the store failed part-way");
                    let detail = "the store failed before this user's link was made; the daemon log has the cause";
                    let rest = ids[out.len()..].iter().map(|id| Created::Refused {
                        user_id: id.clone(),
                        user_name: None,
                        detail: detail.to_string(),
                    });
                    out.extend(rest);
                    break;
                }
            }
        }
        Ok(out)
    }

    fn create_chunk(
        &self,
        conn: &mut store::PooledConn,
        chunk: &[String],
        base: &str,
        ttl: Duration,
        at: NaiveDateTime,
        actor: &Actor,
    ) -> Result<Vec<Created>> {
        let users: Vec<Option<StoredUser>> = chunk.iter().map(|id| store_users::get(conn, id)).collect::<Result<_, _>>()?;
        store::write_tx(conn, |tx| {
            let mut created = Vec::with_capacity(chunk.len());
            for (id, user) in chunk.iter().zip(&users) {
                let Some(user) = user else {
                    let detail = "no such user".to_string();
                    created.push(Created::Refused { user_id: id.clone(), user_name: None, detail });
                    continue;
                };
                // A savepoint per user: one refusal rolls back that user only.
                created.push(match tx.savepoint(|tx| self.create_in_tx(tx, base, user, ttl, at, actor)) {
                    Ok(link) => Created::Link(link),
                    Err(e @ (Error::Conflict { .. } | Error::NotFound(_))) => Created::Refused {
                        user_id: id.clone(),
                        user_name: Some(user.user_name().to_string()),
                        detail: e.to_string(),
                    },
                    Err(e) => return Err(e),
                });
            }
            Ok::<_, Error>(created)
        })
    }

    fn create_in_tx(
        &self,
        tx: &mut store::Tx,
        base: &str,
        user: &StoredUser,
        ttl: Duration,
        at: NaiveDateTime,
        actor: &Actor,
    ) -> Result<NewLink> {
        let id = user.id.as_str();
        if !is_active(user) {
            return Err(Error::conflict("the user is deactivated: activate it before it enrols"));
        }
        // The factor row locked: a reset or an enrolment in between cannot interleave.
        factors::lock_user(tx, id)?;
        if !factors::lock(tx, id, None)? {
            return Err(Error::NotFound(format!("no user with id {id}")));
        }
        if factors::get(tx, id)?.is_some_and(|f| f.status == FactorStatus::Enrolled) {
            return Err(Error::conflict(
                "the user has a confirmed factor: reset it first (POST /api/v1/users/{id}/mfa/reset), then create the link",
            ));
        }
        // A secret shown by an earlier link ends with it: whoever opened that link must not
        // know the factor this one sets up.
        factors::clear_pending(tx, id)?;
        let token = credentials::random_secret("");
        let expires_at = at + chrono::Duration::from_std(ttl).expect("bounded above");
        stored::replace(tx, id, &credentials::hash(&token), at, expires_at)?;
        let detail = json!({"expiresAt": crate::scim::resource::datetime(&expires_at.and_utc())});
        let event = audit::event(at, ENROLMENT_LINK_CREATED, (id, user.user_name()), actor, None, Some(detail));
        audit::write(tx, &[event])?;
        Ok(NewLink {
            user_id: id.to_string(),
            user_name: user.user_name().to_string(),
            url: LinkUrl(format!("{base}{PATH}{token}")),
            expires_at,
            address: address_of(user),
        })
    }

    /// The live link of this token and its user; `None` for one unknown, expired, replaced or
    /// used, and for a user deactivated or enrolled since (the page says the same for all).
    fn live(&self, conn: &mut store::DbConn, token: &str, at: NaiveDateTime) -> Result<Option<StoredUser>> {
        let Some(link) = stored::find(conn, &credentials::hash(token))? else { return Ok(None) };
        if link.expires_at <= at {
            return Ok(None);
        }
        let user = store_users::get(conn, &link.user_id)?;
        Ok(user.filter(|u| is_active(u) && u.mfa.status != FactorStatus::Enrolled))
    }

    /// What the page of a link shows: the secret waiting for the user (a new one the first
    /// time, the same one when the page is opened again). `None`: the link does not work.
    pub fn open(&self, token: &str) -> Result<Option<Page>> {
        let mut conn = self.mfa.pool.get()?;
        let (_, at) = self.mfa.now();
        let Some(user) = self.live(&mut conn, token, at)? else { return Ok(None) };
        let enrolment = match self.mfa.begin(&user.id, true) {
            Ok(e) => e,
            Err(Error::Conflict { .. } | Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let locked_for = match lockout(&self.mfa.factor(&mut conn, &user.id)?, at) {
            Some(Verification::LockedOut { retry_after_secs }) => Some(retry_after_secs),
            _ => None,
        };
        Ok(Some(Page { issuer: self.mfa.policy.issuer.clone(), account: user.user_name().to_string(), enrolment, locked_for }))
    }

    /// Checks a code from the page against the waiting secret: a right one makes it the user's
    /// factor and uses the link up; a wrong one counts toward the user's lockout.
    pub fn confirm(&self, token: &str, code: &str, request_id: Option<String>) -> Result<Confirmed> {
        let mut conn = self.mfa.pool.get()?;
        let (now, at) = self.mfa.now();
        let Some(user) = self.live(&mut conn, token, at)? else { return Ok(Confirmed::Dead) };
        let actor = Actor::new(Origin::Link, user.user_name(), request_id);
        let f = self.mfa.factor(&mut conn, &user.id)?;
        if let Some(Verification::LockedOut { retry_after_secs }) = lockout(&f, at) {
            return Ok(Confirmed::LockedOut { retry_after_secs });
        }
        let step = match &f.secret_sealed {
            Some(_) => self.mfa.policy.check(&self.mfa.secret(&f)?, code, now.timestamp().max(0) as u64),
            None => None,
        };
        let Some(step) = step else {
            self.mfa.record_failure(&mut conn, &user.id, at, &actor)?;
            crate::metrics::METRICS.mfa_verify_failures.inc();
            return Ok(match lockout(&self.mfa.factor(&mut conn, &user.id)?, at) {
                Some(Verification::LockedOut { retry_after_secs }) => Confirmed::LockedOut { retry_after_secs },
                _ => Confirmed::WrongCode,
            });
        };
        let hash = credentials::hash(token);
        let used = self.mfa.complete_enrolment(&mut conn, &f, step, at, &actor, |tx| {
            // Single use: of two confirmations racing, the second finds the link gone.
            match stored::take(tx, &hash)? {
                true => Ok(()),
                false => Err(Error::NotFound("the link was used meanwhile".into())),
            }
        });
        match used {
            Ok(codes) => Ok(Confirmed::Enrolled(codes)),
            Err(Error::NotFound(_)) => Ok(Confirmed::Dead),
            // The waiting secret changed meanwhile (enrolment restarted elsewhere): the page
            // shows the new one.
            Err(Error::Conflict { .. }) => Ok(Confirmed::WrongCode),
            Err(e) => Err(e),
        }
    }
}

/// What a security key or passkey registered from the page did.
#[derive(Debug)]
pub enum KeyAdded {
    /// The key is the user's factor: their backup codes, shown once.
    Enrolled(BackupCodes),
    /// The browser's response was refused, or the ceremony is gone: why, in a sentence.
    Refused(String),
    /// The link is unknown, expired, replaced or used.
    Dead,
}

impl Links {
    /// Whether the page can offer security keys and passkeys (a relying party is configured).
    pub fn offers_webauthn(&self) -> bool {
        self.mfa.webauthn.is_some()
    }

    /// Starts registering a security key or passkey from the page of a live link: the options
    /// for `navigator.credentials.create()`. `None`: the link does not work.
    pub fn start_webauthn(&self, token: &str) -> Result<Option<Started<CreationChallengeResponse>>> {
        let (_, at) = self.mfa.now();
        // One connection at a time: the registration takes its own.
        let Some(user) = self.live(&mut *self.mfa.pool.get()?, token, at)? else { return Ok(None) };
        self.mfa.start_registration(&user.id).map(Some)
    }

    /// Finishes the registration started from the page: the key becomes the user's factor and
    /// the link is used up, as a confirmed code does.
    pub fn finish_webauthn(
        &self,
        token: &str,
        ceremony_id: &str,
        name: &str,
        response: &RegisterPublicKeyCredential,
        request_id: Option<String>,
    ) -> Result<KeyAdded> {
        let (_, at) = self.mfa.now();
        let Some(user) = self.live(&mut *self.mfa.pool.get()?, token, at)? else { return Ok(KeyAdded::Dead) };
        let actor = Actor::new(Origin::Link, user.user_name(), request_id);
        let hash = credentials::hash(token);
        let done = self.mfa.finish_registration(&user.id, ceremony_id, name, response, &actor, |tx| {
            // Single use, as for a code: of two finishes racing, the second finds the link gone.
            if !stored::take(tx, &hash)? {
                return Err(Error::NotFound("the link was used meanwhile".into()));
            }
            // The secret the page showed ends with the link: the user chose the key.
            factors::clear_pending(tx, &user.id)?;
            Ok(())
        });
        match done {
            Ok(registered) => Ok(match registered.backup_codes {
                Some(codes) => KeyAdded::Enrolled(codes),
                // Another factor was confirmed meanwhile (it had the codes): the link is gone.
                None => KeyAdded::Dead,
            }),
            Err(Error::NotFound(_)) => Ok(KeyAdded::Dead),
            Err(e @ (Error::Conflict { .. } | Error::Invalid { .. })) => Ok(KeyAdded::Refused(e.to_string())),
            Err(e) => Err(e),
        }
    }
}

/// Where a link for `user` is to be sent: the primary email, else the work email.
fn address_of(user: &StoredUser) -> Option<String> {
    let emails = user.body.get("emails")?.as_array()?;
    let value = |e: &serde_json::Value| e.get("value").and_then(|v| v.as_str()).map(str::to_string);
    let primary = emails.iter().find(|e| e.get("primary") == Some(&json!(true)));
    let is_work = |e: &&serde_json::Value| e.get("type").and_then(|t| t.as_str()).is_some_and(|t| t.eq_ignore_ascii_case("work"));
    primary.or_else(|| emails.iter().find(is_work)).and_then(value)
}

fn is_active(user: &StoredUser) -> bool {
    user.body.get("active").and_then(|v| v.as_bool()).unwrap_or(true)
}
