//! The command line: `serve`, `migrate`, `backup`, `restore`, `check-config`, `token …`,
//! `mfa …`, `operator …`, `sync`. What it accepts is in `args`.

mod args;
pub use args::*;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use crate::app::{self, Application};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::directory::{Options, StartedBy, Syncer};
use crate::domain::audit::{Actor, Origin};
use crate::domain::directory::RunStatus;
use crate::domain::mfa::links::Delivery;
use crate::domain::mfa::{Outcome, Selection};
use crate::domain::tokens::{self, Tokens};
use crate::domain::Services;

/// Reads the command line. `--version` also says which commit this is and which databases it
/// can use (`-V` only the version).
pub fn parse() -> Cli {
    let long_version = format!("{}\ncommit {}\nbackends: {}", env!("CARGO_PKG_VERSION"), env!("SOURCE_COMMIT"), app::backends());
    let matches = Cli::command().long_version(long_version).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the command; the error is printed by `main` as one line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            app::check(&config)?;
            app::load_mailer(&config)?;
            println!("{}: ok", cli.config.display());
            Ok(())
        }
        Command::Serve => {
            crate::logging::init(&config.log);
            serve(config)
        }
        Command::Migrate { status: false } => {
            crate::logging::init(&config.log);
            app::open_database(&config)?;
            println!("database is up to date");
            Ok(())
        }
        Command::Migrate { status: true } => migration_status(&config),
        Command::Backup { file } => {
            let copy = app::backup(&config, &file)?;
            println!("backed up {} users (schema {}) to {}; integrity checked", copy.users, copy.schema, file.display());
            println!(
                "the MFA key is not in the backup: keep a copy of it with the backup, or the second factors in it \
                 cannot be opened. The key: {}",
                mfa_key_location(&config)
            );
            Ok(())
        }
        Command::Restore { file } => {
            let copy = app::restore(&config, &file)?;
            println!(
                "restored {} users (schema {}) from {} into {}",
                copy.users,
                copy.schema,
                file.display(),
                config.database.url
            );
            if copy.pending > 0 {
                println!("the backup is older than this provisiond: {} migrations run at its next start", copy.pending);
            }
            println!(
                "its second factors open only with the MFA key that sealed them: put that key in place before \
                 starting provisiond. The key: {}",
                mfa_key_location(&config)
            );
            Ok(())
        }
        Command::Token(cmd) => {
            crate::logging::init(&config.log);
            token(&config, cmd)
        }
        Command::Mfa(cmd) => {
            crate::logging::init(&config.log);
            mfa(&config, cmd)
        }
        Command::Operator(cmd) => {
            crate::logging::init(&config.log);
            operator(&config, cmd)
        }
        Command::Sync { full, dry_run, allow_mass_deactivation } => {
            crate::logging::init(&config.log);
            let options = Options { full, dry_run, allow_mass_deactivation, started_by: StartedBy::Cli };
            sync(&config, &cli.config, options)
        }
    }
}

/// Where the MFA key this configuration uses is, for the backup and restore messages: its
/// absolute path, or, when the configuration leaves it to systemd (the default `key_file`, no
/// `$CREDENTIALS_DIRECTORY` in a shell), the credential too.
fn mfa_key_location(config: &Config) -> String {
    let key = &config.mfa.key_file;
    let absolute = std::path::absolute(key).unwrap_or_else(|_| key.clone());
    match *key == crate::config::Mfa::default().key_file {
        true => format!(
            "the systemd credential mfa-key, /etc/provisiond/credentials/mfa.key with the shipped unit (without systemd: {})",
            absolute.display()
        ),
        false => absolute.display().to_string(),
    }
}

/// One line per migration, oldest first: `applied`, `pending`, or `unknown` (a newer
/// provisiond's); then who migrated the database last.
fn migration_status(config: &Config) -> anyhow::Result<()> {
    let status = app::migration_status(config)?;
    for m in &status.applied {
        println!("applied  {}", m.name);
    }
    for m in &status.pending {
        println!("pending  {}", m.name);
    }
    for version in &status.unknown {
        println!("unknown  {version} (applied by a newer provisiond)");
    }
    if let Some(by) = &status.migrated_by {
        println!("last migrated by {by}");
    }
    match status.newer_schema() {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

fn sync(config: &Config, path: &std::path::Path, options: Options) -> anyhow::Result<()> {
    let Some(ldap) = config.ldap.clone() else {
        anyhow::bail!("{} has no [ldap] section: there is nothing to sync", path.display());
    };
    let pool = app::open_database(config)?;
    let clock = std::sync::Arc::new(SystemClock);
    let runs = crate::domain::directory::Runs::new(pool, clock.clone());
    let syncer = std::sync::Arc::new(Syncer::new(ldap, runs, clock)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = rt.block_on(syncer.run(options))?;
    println!("{}", serde_json::to_string_pretty(&summary.view())?);
    if summary.run.status != RunStatus::Succeeded {
        anyhow::bail!("the sync run failed: {}", serde_json::Value::from(summary.run.errors));
    }
    Ok(())
}

fn mfa(config: &Config, cmd: MfaCommand) -> anyhow::Result<()> {
    let pool = app::open_database(config)?;
    let sealer = std::sync::Arc::new(app::load_sealer(config)?);
    let Services { mfa, users: directory, groups: services_groups, mut links, .. } =
        Services::new(pool, sealer, config, std::sync::Arc::new(SystemClock));
    match cmd {
        MfaCommand::Reset { users, groups, filter, reason } => {
            let reason =
                crate::domain::mfa::Reason::parse(Some(&reason)).map_err(|e| anyhow::anyhow!("--reason: {}", e.detail))?;
            let actor = cli_actor();
            let mut lines = Vec::new();
            let selection = match filter {
                None if !groups.is_empty() => {
                    let mut ids = Vec::new();
                    for name in &groups {
                        let group = services_groups
                            .find_by_display_name(name)?
                            .ok_or_else(|| anyhow::anyhow!("--group: no group with displayName {name:?}"))?;
                        ids.push(group.id);
                    }
                    let filter = services_groups.members_filter(&ids).map_err(|e| anyhow::anyhow!("{e}"))?;
                    Selection::Matching(crate::domain::users::Matching { filter: Some(filter), ..Default::default() })
                }
                Some(f) => Selection::Matching(crate::domain::users::Matching {
                    filter: Some(crate::scim::filter::parse_filter(&f).map_err(|e| anyhow::anyhow!("--filter: {e}"))?),
                    ..crate::domain::users::Matching::default()
                }),
                None => {
                    let mut ids = Vec::new();
                    for name in &users {
                        match directory.find_by_user_name(name)? {
                            Some(u) => ids.push(u.id),
                            None => lines.push(format!("not_found\t{name}")),
                        }
                    }
                    Selection::Ids(ids)
                }
            };
            let mut failed = lines.len();
            let results = mfa.reset_many(&selection, &actor, &reason).map_err(|e| anyhow::anyhow!("{e}"))?;
            for r in &results {
                let name = r.user_name.as_deref().unwrap_or("-");
                match &r.detail {
                    Some(d) => lines.push(format!("{}\t{name}\t{}\t{d}", r.outcome.as_str(), r.id)),
                    None => lines.push(format!("{}\t{name}\t{}", r.outcome.as_str(), r.id)),
                }
                if r.outcome != Outcome::Reset {
                    failed += 1;
                }
            }
            for l in &lines {
                println!("{l}");
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} users were not reset", lines.len());
            }
            Ok(())
        }
        MfaCommand::Link { user, ttl, send } => {
            links.check_ready().map_err(|e| anyhow::anyhow!("{e}"))?;
            if send {
                links = links.with_mailer(app::load_mailer(config)?);
                links.check_mail_ready().map_err(|e| anyhow::anyhow!("--send: {e}"))?;
            }
            let found = directory.find_by_user_name(&user)?.ok_or_else(|| anyhow::anyhow!("no user with userName {user:?}"))?;
            let actor = cli_actor();
            let link = links.create(&found.id, ttl, &actor).map_err(|e| anyhow::anyhow!("{e}"))?;
            let delivery = match send {
                true => links.send(std::slice::from_ref(&link), &actor).map_err(|e| anyhow::anyhow!("{e}"))?.pop(),
                false => None,
            };
            let until = link.expires_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            match &delivery {
                Some(Delivery::Sent { to }) => println!("sent to {to}"),
                Some(other) => eprintln!("not sent: {}", other.problem().unwrap_or_default()),
                None => {}
            }
            println!("created an enrolment link for {user:?} (id {}); it works once, until {until}:", link.user_id);
            println!("{}", link.url.expose());
            if delivery.is_some_and(|d| !matches!(d, Delivery::Sent { .. })) {
                anyhow::bail!("the link was created but not sent by email");
            }
            Ok(())
        }
        MfaCommand::Rekey => {
            let n = mfa.rekey().map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("re-sealed {n} secrets under the current key");
            Ok(())
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
    let tokens = Tokens::new(app::open_database(config)?, std::sync::Arc::new(SystemClock));
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

/// Who acts from the command line: the login name (of whoever ran `sudo`), for the audit trail.
fn cli_actor() -> Actor {
    let login = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into());
    Actor::new(Origin::Cli, login, None)
}

fn operator(config: &Config, cmd: OperatorCommand) -> anyhow::Result<()> {
    use crate::domain::operators::Role;
    let pool = app::open_database(config)?;
    let sealer = std::sync::Arc::new(app::load_sealer(config)?);
    let operators = Services::new(pool, sealer, config, std::sync::Arc::new(SystemClock)).operators;
    let link = |token: &str| config.server.setup_link(token);
    match cmd {
        OperatorCommand::Add { name, role } => {
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Helpdesk => Role::Helpdesk,
            };
            let token = operators.add(&name, role, &cli_actor())?;
            println!("added operator {name:?} ({role}); its setup link works once, for 24 hours:");
            println!("{}", link(token.expose()));
        }
        OperatorCommand::List => {
            println!("{:<24} {:<9} {:<14} {:<20} LAST SIGN-IN", "NAME", "ROLE", "STATE", "CREATED");
            for o in operators.list()? {
                let last = o.last_sign_in_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                println!(
                    "{:<24} {:<9} {:<14} {:<20} {}",
                    o.name,
                    o.role.as_str(),
                    o.state.as_str(),
                    o.created_at.format("%Y-%m-%d %H:%M:%S"),
                    last.as_deref().unwrap_or("never")
                );
            }
        }
        OperatorCommand::Disable { name } => {
            operators.disable(&name, &cli_actor())?;
            println!("disabled operator {name:?}");
        }
        OperatorCommand::Reset { name } => {
            let token = operators.reset(&name, &cli_actor())?;
            println!(
                "reset operator {name:?}: password and second factor forgotten; its new setup link works once, for 24 hours:"
            );
            println!("{}", link(token.expose()));
        }
    }
    Ok(())
}
