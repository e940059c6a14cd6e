//! Integration tests: the real daemon on a random port with its own database (SQLite, or a real
//! PostgreSQL with TEST_BACKEND=postgres), and a real slapd for the LDAP sync.

mod cli;
mod console;
mod console_admin;
mod console_audit;
mod console_browser;
mod console_links;
mod console_users;
mod database;
mod discovery;
mod enrolment;
mod enrolment_mail;
mod fake_ldap;
mod feed;
mod filter_props;
mod groups;
mod helpers;
mod http_edges;
mod instances;
mod list;
mod mail;
mod metrics;
mod mfa;
mod openapi;
mod outages;
mod postgres;
mod raw_http;
mod slapd;
mod smtp;
mod ssf;
mod sync;
mod sync_groups;
mod systemd;
mod users;
mod webdriver;
