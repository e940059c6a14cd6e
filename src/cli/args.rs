//! The command line's definitions, apart from what runs them: `build.rs` compiles this file
//! too, to write the man page and the shell completions from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The configuration file read when neither `--config` nor `PROVISIOND_CONFIG` names one: the
/// one that runs as-is from a checkout (the package's unit names `/etc/provisiond/provisiond.toml`).
pub const DEFAULT_CONFIG: &str = "config/provisiond.toml";

#[derive(Debug, Parser)]
#[command(name = "provisiond", version, about = "SCIM 2.0 provisioning, TOTP second factor and LDAP sync daemon")]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "PROVISIOND_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate {
        /// List the applied and pending migrations instead (changes nothing).
        #[arg(long)]
        status: bool,
    },
    /// Copy the database to FILE while the daemon serves (SQLite; on PostgreSQL, pg_dump), and
    /// check the copy. The MFA key is not in it: keep the key with the backup.
    Backup {
        /// Where the copy goes; must not exist yet.
        file: PathBuf,
    },
    /// Restore a backup made by `backup` into the configured database, which must not exist yet
    /// (SQLite; on PostgreSQL, pg_restore into an empty database).
    Restore {
        /// The backup.
        file: PathBuf,
    },
    /// Validate the configuration and print what is wrong, key by key.
    CheckConfig,
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Second factors: resets and key rotation.
    #[command(subcommand)]
    Mfa(MfaCommand),
    /// Console operators: add, list, disable, reset.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Run the LDAP sync once (incremental unless --full) and print its JSON summary; exits
    /// non-zero when the run failed.
    Sync {
        /// Read every entry and deactivate users whose entries are gone.
        #[arg(long)]
        full: bool,
        /// Write nothing (neither the store nor LDAP) and list what the run would do.
        #[arg(long)]
        dry_run: bool,
        /// Deactivate even more users than [ldap.safety] allows.
        #[arg(long, requires = "full")]
        allow_mass_deactivation: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator; prints its one-time setup link (valid 24 h) alone on the last line.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List the operators with their role and state.
    List,
    /// Disable an operator: it can no longer sign in.
    Disable { name: String },
    /// Forget an operator's password and second factor; prints a new setup link.
    Reset { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Admin,
    Helpdesk,
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Reset the second factor of users (by userName, or a SCIM filter): they enrol again at
    /// their next login. Prints one line per user.
    Reset {
        /// A userName; repeat for several users.
        #[arg(long = "user", required_unless_present_any = ["filter", "groups"], conflicts_with_all = ["filter", "groups"])]
        users: Vec<String>,
        /// A group's displayName: every user in it, through nested groups too; repeat for several.
        #[arg(long = "group", conflicts_with = "filter")]
        groups: Vec<String>,
        /// A SCIM filter selecting the users, e.g. 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Sales"'.
        #[arg(long)]
        filter: Option<String>,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Create a one-time enrolment link for a user who must enrol (after a reset); prints the
    /// link alone on the last line. A newer link replaces the user's older one.
    Link {
        /// The userName.
        #[arg(long)]
        user: String,
        /// How long the link works: 72h, 30m, 3600 (seconds)… (default mfa.enrolment_link_ttl).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Also send it to the user's primary (else work) email ([smtp]); exits non-zero when
        /// it could not be sent (the link still works and is printed).
        #[arg(long)]
        send: bool,
    },
    /// Re-seal every TOTP secret under the current mfa.key_file (after a key rotation).
    Rekey,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the token is printed alone on the last line and never again.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: scim, mfa, admin, ssf.
        #[arg(long)]
        scope: String,
    },
    /// List tokens (never the secrets).
    List,
    /// Revoke the token called NAME.
    Revoke { name: String },
}
