//! What a domain operation can answer besides success. It says what happened, never how a door
//! shows it: the SCIM door, the JSON API and the pages each map it to their own answer.

use crate::scim::error::{ScimError, ScimType};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored; `kind` tells how.
    #[error("{detail}")]
    Conflict { kind: Conflict, detail: String },
    /// The resource changed since the version the request was based on (`If-Match`).
    #[error("the resource changed since it was read: If-Match does not match its current version")]
    PreconditionFailed,
    /// The request itself is wrong: `reason` says which rule it broke, `detail` names the
    /// attribute, path, filter or value at fault (it is shown to the client).
    #[error("{detail}")]
    Invalid { reason: Invalid, detail: String },
    /// The store cannot serve now (down, restarting, its pool exhausted, locked by another writer
    /// past the busy timeout, a statement past its time limit): the same request may succeed
    /// shortly. The cause is for the log: it is the source, not the text.
    #[error("the database is busy or unreachable")]
    Busy(#[source] store::Error),
    /// The store failed. The cause is for the log; no client sees its text.
    #[error("storage failure (the daemon log has the cause)")]
    Store(#[source] store::Error),
}

/// How a request conflicts with what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A value that must be unique is held by another resource (a userName, a token name).
    Taken,
    /// The resource's state does not allow it now: a confirmed factor to reset first, an
    /// enrolment or a user that changed meanwhile.
    State,
}

/// Which rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not the document expected (not JSON, a missing or wrong `schemas`…).
    Syntax,
    /// A filter expression that does not parse or names what cannot be filtered.
    Filter,
    /// An attribute path that does not parse or names no attribute.
    Path,
    /// A value of the wrong type or outside what is allowed.
    Value,
    /// A change to an attribute that cannot be changed.
    Mutability,
    /// More than one request may ask for.
    TooMany,
    /// A path whose filter matches nothing to change.
    NoTarget,
    /// A version the request names is not one this server knows.
    Version,
    /// A list cursor this server did not issue, issued for another query, or past its time
    /// (RFC 9865).
    Cursor,
    /// A page size a cursor request may not ask for (RFC 9865).
    Count,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn conflict(detail: impl Into<String>) -> Self {
        Error::Conflict { kind: Conflict::State, detail: detail.into() }
    }

    pub(crate) fn taken(detail: impl Into<String>) -> Self {
        Error::Conflict { kind: Conflict::Taken, detail: detail.into() }
    }

    pub(crate) fn invalid(reason: Invalid, detail: impl Into<String>) -> Self {
        Error::Invalid { reason, detail: detail.into() }
    }

    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        if e.is_unavailable() {
            Error::Busy(e)
        } else {
            Error::Store(e)
        }
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        store::Error::from(e).into()
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        store::Error::from(e).into()
    }
}

/// The protocol layer (`scim`) parses and checks requests; what it refuses, the domain refuses
/// for the same reason.
impl From<ScimError> for Error {
    fn from(e: ScimError) -> Self {
        let reason = match e.scim_type {
            _ if e.status == 404 => return Error::NotFound(e.detail),
            _ if e.status == 412 => return Error::PreconditionFailed,
            Some(ScimType::Uniqueness) => return Error::taken(e.detail),
            _ if e.status == 409 => return Error::conflict(e.detail),
            Some(ScimType::InvalidFilter) => Invalid::Filter,
            Some(ScimType::TooMany) => Invalid::TooMany,
            Some(ScimType::Mutability) => Invalid::Mutability,
            Some(ScimType::InvalidSyntax) => Invalid::Syntax,
            Some(ScimType::InvalidPath) => Invalid::Path,
            Some(ScimType::NoTarget) => Invalid::NoTarget,
            Some(ScimType::InvalidVers) => Invalid::Version,
            Some(ScimType::InvalidCursor) => Invalid::Cursor,
            Some(ScimType::InvalidCount) => Invalid::Count,
            Some(ScimType::InvalidValue) | None => Invalid::Value,
        };
        Error::invalid(reason, e.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_refusals_keep_their_reason_and_detail() {
        let cases = [
            (ScimError::invalid_filter("f"), "Invalid { reason: Filter, detail: \"f\" }"),
            (ScimError::mutability("m"), "Invalid { reason: Mutability, detail: \"m\" }"),
            (ScimError::no_target("n"), "Invalid { reason: NoTarget, detail: \"n\" }"),
            (ScimError::uniqueness("u"), "Conflict { kind: Taken, detail: \"u\" }"),
            (ScimError::not_found("x"), "NotFound(\"x\")"),
            (ScimError::precondition_failed("p"), "PreconditionFailed"),
        ];
        for (scim, expected) in cases {
            assert_eq!(format!("{:?}", Error::from(scim)), expected);
        }
    }
}
