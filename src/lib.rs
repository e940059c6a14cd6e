//! provisiond: SCIM 2.0 provisioning, TOTP second factor and LDAP sync in one daemon.
//!
//! `scim` is the pure protocol, `http` the doors, `domain` the decisions, `store` the tables.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod directory;
pub mod domain;
pub mod duration;
pub mod events;
pub mod http;
#[cfg(test)]
mod layers;
pub mod logging;
pub mod mail;
pub mod metrics;
#[cfg(test)]
mod proptest_support;
pub mod scim;
pub mod store;

/// The content-sync parsers, for the integration tests (`tests/api/fake_ldap.rs`).
#[doc(hidden)]
pub mod sync_wire {
    pub use crate::directory::sync_wire::*;
}
