//! Builds the HTTP server and its shared state.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sd_notify::NotifyState;

use crate::clock::{self, Clock, SystemClock};
use crate::config::ChangeDetection;
use crate::config::{Config, DatabaseUrl};
use crate::directory::mapping::Mapping;
use crate::directory::{feed, scheduler, Syncer};
use crate::domain::mfa::{KeyMismatch, Mfa};
use crate::domain::Services;
use crate::events::deliver::Deliverer;
use crate::events::keys::SigningKeys;
use crate::http::{self, AppState};
use crate::store;

/// A bound, migrated, ready-to-run daemon.
pub struct Application {
    server: Server,
    port: u16,
    /// The LDAP sync and its scheduler, when `[ldap]` is configured.
    sync: Option<(Arc<Syncer>, tokio::task::JoinHandle<()>)>,
    /// Delivery of events to webhooks and Shared Signals streams.
    events: Deliverer,
}

impl Application {
    /// Opens the database, applies migrations, loads the MFA key and binds the listener.
    pub fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Application::build`], with a clock of the caller's (tests walk TOTP windows).
    pub fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        check(&config)?;
        let config = Arc::new(config);
        let pool = open_database(&config)?;
        let sealer = Arc::new(load_sealer(&config)?);
        let mut services = Services::new(pool.clone(), sealer, &config, clock.clone());
        services.links = services.links.with_mailer(load_mailer(&config)?);
        if let Some(ssf) = &config.ssf {
            services.streams = services.streams.transmitting(&ssf.issuer, crate::events::set::SUPPORTED);
        }
        check_sealing_keys(&services.mfa, &config)?;
        let listener = TcpListener::bind(config.server.listen)
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        let port = listener.local_addr()?.port();
        let sync = match &config.ldap {
            Some(ldap) => {
                let syncer = Arc::new(Syncer::new(ldap.clone(), services.runs.clone(), clock.clone())?);
                // With the change feed, changes come as they happen: no incremental runs.
                let incremental = match ldap.change_detection {
                    ChangeDetection::Poll => ldap.schedule.cron().map_err(|e| anyhow::anyhow!("ldap.schedule: {e}"))?.cloned(),
                    ChangeDetection::Syncrepl => None,
                };
                let full = ldap.full_schedule.cron().map_err(|e| anyhow::anyhow!("ldap.full_schedule: {e}"))?.cloned();
                let task = tokio::spawn(scheduler::run(syncer.clone(), incremental, full));
                Some((syncer, task))
            }
            None => None,
        };
        let syncer = sync.as_ref().map(|(s, _)| s.clone());
        let console = web::Data::new(Arc::new(crate::console::Console {
            services: services.clone(),
            config: config.clone(),
            sync: syncer.clone(),
        }));
        let signing = match &config.ssf {
            Some(ssf) => Some(Arc::new(SigningKeys::load(&ssf.key_file, ssf.algorithm, &ssf.previous_key_files)?)),
            None => None,
        };
        let events = Deliverer::start(services.outbox.clone(), services.streams.clone(), &config, signing.clone())?;
        let state = web::Data::new(AppState::new(config.clone(), services, syncer, signing));
        let console_enabled = config.console.enabled;
        let mut server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(console.clone())
                .wrap(from_fn(http::scim_io::canonical_path))
                .wrap(from_fn(http::request_id::assign))
                .configure(http::routes)
                .configure(crate::console::link_routes);
            match console_enabled {
                true => app.configure(crate::console::routes),
                false => app.configure(crate::console::asset_routes),
            }
        })
        .shutdown_timeout(config.server.shutdown_timeout)
        // Headers only: bodies are bounded by the same timeout in `scim_io::read_json`.
        .client_request_timeout(Duration::from_secs(config.server.request_timeout))
        // Signals are ours (`run_until_stopped`): systemd hears STOPPING=1 first.
        .disable_signals()
        .listen(listener)?;
        if let Some(n) = config.server.workers {
            server = server.workers(n);
        }
        tracing::info!(listen = %config.server.listen, port, "listening");
        Ok(Application { server: server.run(), port, sync, events })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT: tells systemd READY=1 (migrations done, listener bound),
    /// pings its watchdog when `WatchdogSec=` asks for it, and on the signal says STOPPING=1,
    /// stops accepting, lets requests in flight finish (`server.shutdown_timeout`), stops the sync scheduler
    /// and waits for a run in progress to record its state. Outside systemd the notifications
    /// are no-ops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let syncer = self.sync.as_ref().map(|(s, _)| s.clone());
        let signals = tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stop signal received: finishing requests in flight");
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
            // A sync run stops now, not after the requests in flight.
            if let Some(s) = syncer {
                s.stop();
            }
            handle.stop(true).await;
        });
        let watchdog = sd_notify::watchdog_enabled().map(|every| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every / 2);
                loop {
                    tick.tick().await;
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
            })
        });
        let feed = match &self.sync {
            Some((syncer, _)) if syncer.config().change_detection == ChangeDetection::Syncrepl => {
                let cfg = Arc::new(syncer.config().clone());
                match feed::check_server(cfg.clone()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let e = feed::unsupported(&cfg.url);
                        tracing::error!(error = %e, "cannot start");
                        return Err(std::io::Error::other(e));
                    }
                    Err(e) => tracing::warn!(
                        error = %crate::logging::chain(&e),
                        "cannot ask the directory whether it offers the change feed; the feed keeps trying"
                    ),
                }
                Some(tokio::spawn(feed::run(syncer.clone())))
            }
            _ => None,
        };
        let _ = sd_notify::notify(&[NotifyState::Ready]);
        let served = self.server.await;
        signals.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        if let Some((syncer, scheduler)) = self.sync {
            syncer.shutdown().await;
            let _ = scheduler.await;
            if let Some(feed) = feed {
                let _ = feed.await;
            }
        }
        let events = self.events;
        let _ = tokio::task::spawn_blocking(move || events.stop()).await;
        served
    }
}

/// SIGTERM (systemd, kill) or SIGINT (Ctrl-C). SIGHUP, which would otherwise end the process,
/// only logs that configuration changes need a restart.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => tracing::warn!("SIGHUP ignored: configuration changes take effect at a restart (systemctl restart provisiond)"),
        }
    }
}

/// What the configuration cannot check alone, for `check-config` and `serve`: that
/// `[ldap.attributes]` maps onto writable SCIM paths (the SCIM schema is not the
/// configuration's to know).
pub fn check(config: &Config) -> anyhow::Result<()> {
    if let Some(ldap) = &config.ldap {
        Mapping::new(ldap)?;
    }
    Ok(())
}

/// The databases this binary can use.
pub fn backends() -> String {
    store::backends()
}

/// The pool, as it is: no migration (`migrate --status`, `backup`).
fn open_unmigrated(config: &Config) -> anyhow::Result<store::Pool> {
    let db = &config.database;
    let url = db.connection_url()?;
    let limits = store::Limits {
        connect_timeout: Duration::from_secs(db.connect_timeout),
        statement_timeout: Duration::from_secs(db.statement_timeout),
    };
    store::connect(url, db.pool_size, limits).with_context(|| format!("cannot open the database (database.url = {})", db.url))
}

/// Where the database's schema stands against this binary's migrations; changes nothing.
pub fn migration_status(config: &Config) -> anyhow::Result<store::migrations::Status> {
    // A SQLite file that does not exist yet is not created just to say so.
    if let DatabaseUrl::Sqlite(path) = &config.database.url {
        if !std::path::Path::new(path).exists() {
            return Ok(store::migrations::Status::new_sqlite_database());
        }
    }
    Ok(store::migrations::status(&open_unmigrated(config)?)?)
}

/// Copies the database into the new file `file` while the daemon serves, and checks the copy
/// (SQLite); `pg_dump` on PostgreSQL.
pub fn backup(config: &Config, file: &std::path::Path) -> anyhow::Result<store::backup::Copy> {
    Ok(match &config.database.url {
        DatabaseUrl::Sqlite(path) => {
            store::backup::sqlite_exists(std::path::Path::new(path))?;
            store::backup::sqlite_backup(&open_unmigrated(config)?, file)?
        }
        DatabaseUrl::Postgres(_) => store::backup::pg_backup(&open_unmigrated(config)?, &pg_target(config)?, file)?,
    })
}

/// Restores the backup `file` as the configured database, which must not exist yet (SQLite) or
/// must be empty (PostgreSQL).
pub fn restore(config: &Config, file: &std::path::Path) -> anyhow::Result<store::backup::Copy> {
    Ok(match &config.database.url {
        DatabaseUrl::Sqlite(path) => store::backup::sqlite_restore(file, std::path::Path::new(path))?,
        DatabaseUrl::Postgres(_) => store::backup::pg_restore(&open_unmigrated(config)?, &pg_target(config)?, file)?,
    })
}

fn pg_target(config: &Config) -> anyhow::Result<store::backup::PgTarget<'_>> {
    Ok(store::backup::PgTarget { url: &config.database.url, password: config.database.password()? })
}

/// The pool, with migrations applied.
pub fn open_database(config: &Config) -> anyhow::Result<store::Pool> {
    let pool = open_unmigrated(config)?;
    // Migrations run before any service, on the system's clock.
    let applied = store::migrate(&pool, clock::stored(SystemClock.now())).context("cannot migrate the database")?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(pool)
}

/// Checks this instance's MFA key against the deployment's (see [`Mfa::check_deployment_key`]),
/// in the operator's terms: which file to copy where.
fn check_sealing_keys(mfa: &Mfa, config: &Config) -> anyhow::Result<()> {
    let key_file = config.mfa.key_file.display();
    match mfa.check_deployment_key() {
        Ok(()) => Ok(()),
        Err(KeyMismatch::Unknown(ids)) => anyhow::bail!(
            "the database holds TOTP secrets sealed under key id {ids} that neither mfa.key_file ({key_file}) nor \
             mfa.previous_key_files holds: give every instance the same key file (if this start created {key_file}, \
             remove it and copy the shared one)",
            ids = ids.join(", "),
        ),
        Err(KeyMismatch::Wrong { mine, recorded }) => anyhow::bail!(
            "this instance has the wrong MFA key: mfa.key_file ({key_file}) holds key id {mine}, but the deployment \
             seals with key id {recorded} (recorded by the first instance): copy the shared key file to {key_file} \
             (or, when rotating, list the old key in mfa.previous_key_files)"
        ),
        Err(KeyMismatch::Unreadable(e)) => Err(anyhow::Error::new(e).context("cannot read the deployment's MFA key id")),
    }
}

/// The mailer of `[smtp]`, when configured (its password is read now, once).
pub fn load_mailer(config: &Config) -> anyhow::Result<Option<crate::mail::Mailer>> {
    Ok(config.smtp.as_ref().map(crate::mail::Mailer::new).transpose()?)
}

/// The sealer of TOTP secrets, from `[mfa] key_file` (created when absent).
pub fn load_sealer(config: &Config) -> anyhow::Result<crate::domain::mfa::Sealer> {
    crate::domain::mfa::Sealer::load(&config.mfa.key_file, &config.mfa.previous_key_files)
        .context("cannot load the MFA key (mfa.key_file)")
}

#[cfg(test)]
mod tests {
    use crate::domain;
    use crate::http::api_io::ApiError;
    use crate::scim::error::ScimError;

    /// Across the layers (hence here): the store's words stay in the log.
    #[test]
    fn a_store_failure_reaches_clients_as_a_fixed_sentence_and_the_log_with_its_cause() {
        let cause = "table users: disk image is malformed";
        let failure = || domain::Error::from(crate::store::Error::Corrupt(cause.into()));
        let shown = [failure().to_string(), ScimError::from(failure()).detail, ApiError::from(failure()).detail];
        for text in shown {
            assert!(!text.contains("malformed"), "{text}");
        }
        assert!(crate::logging::chain(&failure()).contains(cause));
    }
}
