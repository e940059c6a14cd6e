//! Integration tests: the real daemon on a random port with a temporary SQLite database, and a
//! real slapd for the LDAP sync.

mod cli;
mod discovery;
mod helpers;
mod http_edges;
mod list;
mod metrics;
mod mfa;
mod slapd;
mod sync;
mod systemd;
mod users;
