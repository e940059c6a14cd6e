//! The LDAP door: a scheduled, streaming, batched mirror of the directory's users, and the MFA
//! reset flag. It reads the directory and hands entries over; what an entry does to the store
//! (who it is, what changes, when a user is deactivated, when the flag resets a factor) is
//! decided by `domain::directory`, whose services open every transaction of a run.
//!
//! - [`mapping`]: an LDAP entry → a domain entry;
//! - [`reader`]: the paged search → batches of entries;
//! - [`feed`]: the directory's change feed (RFC 4533), a second reader, and [`feed_batch`], what
//!   it gathered written through the same writer as a run of kind `stream`; [`sync_wire`]: its
//!   messages (and every entry) parsed without trusting the server;
//! - [`writer`]: batches of entries → the domain, a transaction each;
//! - [`run`]: a run's lease, lifecycle and record; [`report`]: what it tells;
//! - [`groups`]: the groups of `[ldap.groups]`, after the users;
//! - [`flags`]: the reset flag on the LDAP side; [`scheduler`]: the cron schedules.

pub(crate) mod feed;
pub(crate) mod feed_batch;
pub(crate) mod flags;
pub(crate) mod groups;
pub(crate) mod ldap;
pub(crate) mod mapping;
pub(crate) mod reader;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod scheduler;
pub(crate) mod sync_wire;
pub(crate) mod writer;

pub use crate::domain::directory::StartedBy;
pub use report::{RunView, Summary};
pub use run::{Options, StartError, Syncer};
