//! Domain services: the decisions. Every door (SCIM, API, CLI, sync) calls these; none
//! writes tables on its own.

pub mod audit;
pub mod directory;
pub mod mfa;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use crate::clock::Clock;
use crate::scim::error::ScimError;
use crate::store::Pool;

/// The services of one wiring, sharing one pool and one clock: what every door is given.
#[derive(Clone)]
pub struct Services {
    pub users: users::Users,
    pub tokens: tokens::Tokens,
    pub mfa: mfa::Mfa,
    pub audit: audit::Audit,
}

impl Services {
    pub fn new(pool: Pool, sealer: Arc<mfa::Sealer>, config: &crate::config::Mfa, clock: Arc<dyn Clock>) -> Self {
        let mfa = mfa::Mfa::new(pool.clone(), sealer, config, clock.clone());
        Services {
            users: users::Users::new(pool.clone(), clock),
            tokens: tokens::Tokens::new(pool.clone()),
            audit: audit::Audit::new(pool),
            mfa,
        }
    }
}

/// What a domain operation can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state (a factor to reset first, a write that
    /// lost to others).
    #[error("{0}")]
    Conflict(String),
    /// A value that must be unique is held by another resource (`userName`).
    #[error("{0}")]
    Taken(String),
    #[error("the resource changed since it was read: If-Match does not match its current version")]
    PreconditionFailed,
    /// The request itself is wrong (bad attribute, filter, path or value).
    #[error(transparent)]
    Invalid(#[from] ScimError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Store(e.into())
    }
}
