//! The command line: `serve`, `migrate`, `check-config`, `token …`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::{self, Config};
use crate::domain::tokens::{self, Tokens};

#[derive(Debug, Parser)]
#[command(name = "provisiond", version, about = "SCIM 2.0 provisioning, TOTP second factor and LDAP sync daemon")]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "PROVISIOND_CONFIG", default_value = config::DEFAULT_PATH, global = true)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and print what is wrong, key by key.
    CheckConfig,
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the token is printed alone on the last line and never again.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: scim, mfa, admin.
        #[arg(long)]
        scope: String,
    },
    /// List tokens (never the secrets).
    List,
    /// Revoke the token called NAME.
    Revoke { name: String },
}

/// Runs the command; the error is printed by `main` as one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            println!("{}: ok", cli.config.display());
            Ok(())
        }
        Command::Serve => {
            crate::logging::init(&config.log);
            serve(config)
        }
        Command::Migrate => {
            crate::logging::init(&config.log);
            app::open_database(&config)?;
            println!("database is up to date");
            Ok(())
        }
        Command::Token(cmd) => {
            crate::logging::init(&config.log);
            token(&config, cmd)
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let workers = config.server.workers;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let app = Application::build(config)?;
        app.run_until_stopped().await.context("the HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn token(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let tokens = Tokens::new(app::open_database(config)?);
    match cmd {
        TokenCommand::Create { name, scope } => {
            let scopes = tokens::parse_scopes(&scope).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let secret = tokens.create(&name, &scopes)?;
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            println!("created token {name:?} with scopes {}; it is shown only once:", scopes.join(","));
            println!("{}", secret.expose());
        }
        TokenCommand::List => {
            println!("{:<24} {:<16} {:<20} LAST USED", "NAME", "SCOPES", "CREATED");
            for t in tokens.list()? {
                let last = t.last_used_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                println!(
                    "{:<24} {:<16} {:<20} {}",
                    t.name,
                    t.scopes,
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    last.as_deref().unwrap_or("never")
                );
            }
        }
        TokenCommand::Revoke { name } => {
            tokens.revoke(&name)?;
            println!("revoked token {name:?}");
        }
    }
    Ok(())
}
