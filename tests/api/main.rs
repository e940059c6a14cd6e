//! Integration tests: the real daemon on a random port with a temporary SQLite database.

mod cli;
mod discovery;
mod helpers;
mod http_edges;
mod list;
mod mfa;
mod users;
