//! Users mirrored from a directory (LDAP): what an entry means ([`entry`]), what it does to the
//! store ([`mirror`]'s rules, inside a batch transaction), and the runs that mirror it
//! ([`Runs`]: the lease that keeps runs from overlapping, their history and high-water marks,
//! the entries that keep failing, and [`Session`], the writing half of a run). The readers
//! (`directory/`) only read the directory and hand entries over; the decisions are here.

pub mod entry;
mod feed;
mod groups;
mod mirror;
mod run;
mod runs;
pub mod safety;
mod session;

pub use entry::{decide_flag, Entry, FlagDecision};
pub use feed::StreamEnd;
pub use groups::{dn_key, GroupEntry, GroupMirror, TooManyDeletions};
pub use mirror::{Applied, Change, SOURCE};
pub use run::{Counts, Run, RunKind, RunStatus, StartedBy};
pub use runs::{BeginError, Failing, Runs};
pub use session::{is_deferrable, Deactivation, EntryWrite, Session, SessionError, Sorted, Todo, WriteOutcome};
