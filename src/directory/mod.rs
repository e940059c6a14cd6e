//! The LDAP door: a scheduled, streaming, batched mirror of the directory's users, and the MFA
//! reset flag. It decides nothing itself: `domain::directory` says what an entry does.

pub mod flags;
pub mod ldap;
pub mod mapping;
pub mod scheduler;
pub mod sync;

pub use sync::{Options, StartError, StartedBy, Summary, Syncer};
