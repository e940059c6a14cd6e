//! Domain services: the decisions. Every door (SCIM, API, CLI, sync) calls these; none
//! writes tables on its own.

pub mod audit;
mod credentials;
pub mod directory;
mod error;
pub mod events;
pub mod groups;
pub mod health;
pub mod mfa;
pub mod operators;
mod passwords;
pub mod sessions;
pub mod stats;
pub mod streams;
pub mod tokens;
pub mod user_pages;
pub mod users;

use std::sync::Arc;

use crate::clock::Clock;
use crate::store::Pool;

/// The services of one wiring, sharing one pool and one clock: what every door is given.
#[derive(Clone)]
pub struct Services {
    pub users: users::Users,
    /// SCIM list requests over users: keyset `startIndex` pages and cursors.
    pub user_pages: user_pages::UserPages,
    pub groups: groups::Groups,
    pub tokens: tokens::Tokens,
    pub mfa: mfa::Mfa,
    pub links: mfa::links::Links,
    pub audit: audit::Audit,
    pub stats: stats::Stats,
    pub health: health::Health,
    pub operators: operators::Operators,
    pub sessions: sessions::Sessions,
    /// The LDAP sync's runs (used when `[ldap]` is configured).
    pub runs: directory::Runs,
    /// The event outbox, read by the deliverers.
    pub outbox: events::Outbox,
    /// Shared Signals streams.
    pub streams: streams::Streams,
}

impl Services {
    pub fn new(pool: Pool, sealer: Arc<mfa::Sealer>, config: &crate::config::Config, clock: Arc<dyn Clock>) -> Self {
        let mfa = mfa::Mfa::new(pool.clone(), sealer.clone(), &config.mfa, clock.clone()).with_webauthn(relying_party(config));
        let console = &config.console;
        let seconds = std::time::Duration::from_secs;
        Services {
            users: users::Users::new(pool.clone(), clock.clone()),
            user_pages: user_pages::UserPages::new(
                pool.clone(),
                sealer.clone(),
                clock.clone(),
                seconds(config.scim.cursor_timeout),
            ),
            groups: groups::Groups::new(pool.clone(), clock.clone()),
            tokens: tokens::Tokens::new(pool.clone(), clock.clone()),
            audit: audit::Audit::new(pool.clone()),
            stats: stats::Stats::new(pool.clone()),
            health: health::Health::new(pool.clone()),
            operators: operators::Operators::new(pool.clone(), sealer.clone(), &config.mfa, clock.clone()),
            sessions: sessions::Sessions::new(
                pool.clone(),
                clock.clone(),
                seconds(console.session_idle_timeout),
                seconds(console.session_lifetime),
            ),
            outbox: events::Outbox::new(pool.clone()),
            streams: streams::Streams::new(pool.clone(), sealer.clone(), clock.clone()),
            runs: directory::Runs::new(pool, clock),
            links: mfa::links::Links::new(mfa.clone(), config),
            mfa,
        }
    }
}

/// The WebAuthn relying party of `[mfa.webauthn]`; none when it is not configured. The
/// configuration's check refuses values that cannot work before anything starts, so what
/// webauthn-rs may still refuse here is logged and leaves security keys off.
fn relying_party(config: &crate::config::Config) -> Option<mfa::webauthn::RelyingParty> {
    let built = config
        .mfa
        .webauthn
        .relying_party(config.server.public_url.as_deref(), &config.mfa.issuer)
        .and_then(|rp| rp.map(|rp| mfa::webauthn::RelyingParty::new(&rp)).transpose());
    match built {
        Ok(rp) => rp,
        Err(e) => {
            tracing::error!(error = %e, "security keys and passkeys are off");
            None
        }
    }
}

pub use error::{Conflict, Error, Invalid, Result};

/// `If-Match` against a resource's current version: 412 when it names another.
pub(crate) fn check_if_match(version: i64, if_match: Option<&str>) -> Result<()> {
    match if_match {
        Some(header) if !crate::scim::resource::etag_matches(header, version) => Err(Error::PreconditionFailed),
        _ => Ok(()),
    }
}
