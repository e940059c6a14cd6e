//! HTTP doors: they parse requests into domain calls and render the answers.

pub mod admin_api;
pub mod api_io;
pub mod auth;
pub mod discovery;
pub mod health;
pub mod metrics_api;
pub mod mfa_api;
pub mod openapi;
pub mod origin;
pub mod request_id;
pub mod scim_groups;
pub mod scim_io;
pub mod scim_search;
pub mod scim_users;
pub mod ssf;
pub mod sync_api;
pub mod webauthn_api;

use std::sync::Arc;

use actix_web::{middleware::from_fn, web};

use crate::config::{Config, Network};
use crate::directory::Syncer;
use crate::domain::events::Outbox;
use crate::domain::mfa::{links::Links, Mfa};
use crate::domain::streams::Streams;
use crate::domain::Services;
use crate::domain::{
    audit::Audit, groups::Groups, health::Health, stats::Stats, tokens::Tokens, user_pages::UserPages, users::Users,
};
use crate::events::keys::SigningKeys;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub users: Users,
    pub user_pages: UserPages,
    pub groups: Groups,
    pub tokens: Tokens,
    pub mfa: Mfa,
    pub links: Links,
    pub audit: Audit,
    pub stats: Stats,
    pub health: Health,
    pub outbox: Outbox,
    /// Shared Signals streams (managed and polled under `/ssf`).
    pub streams: Streams,
    /// The LDAP sync, when `[ldap]` is configured.
    pub sync: Option<Arc<Syncer>>,
    /// `server.trusted_proxies`, parsed once.
    pub trusted_proxies: Arc<[Network]>,
    /// The keys that sign security event tokens, when `[ssf]` is configured.
    pub signing: Option<Arc<SigningKeys>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, services: Services, sync: Option<Arc<Syncer>>, signing: Option<Arc<SigningKeys>>) -> Self {
        // The sync's runs reach the handlers through `sync`.
        let Services {
            users,
            user_pages,
            groups,
            tokens,
            mfa,
            links,
            audit,
            stats,
            health,
            runs: _,
            operators: _,
            sessions: _,
            outbox,
            streams,
        } = services;
        let trusted_proxies = config.server.trusted_proxies.clone().into();
        AppState {
            config,
            users,
            user_pages,
            groups,
            tokens,
            mfa,
            links,
            audit,
            stats,
            health,
            outbox,
            streams,
            sync,
            trusted_proxies,
            signing,
        }
    }
}

/// All routes.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(web::resource("/metrics").wrap(from_fn(auth::api_token)).route(web::get().to(metrics_api::metrics)))
        .service(
            web::scope("/scim/v2")
                .wrap(from_fn(auth::scim_scope))
                .configure(discovery::routes)
                .configure(scim_users::routes)
                .configure(scim_groups::routes)
                .configure(scim_search::routes)
                .default_service(web::to(scim_io::not_found)),
        )
        // Before the scope, which would otherwise ask for a token.
        .route(openapi::PATH, web::get().to(openapi::serve))
        .configure(ssf::routes)
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(auth::api_token))
                .configure(mfa_api::routes)
                .configure(webauthn_api::routes)
                .configure(admin_api::routes)
                .configure(sync_api::routes)
                .default_service(web::to(api_io::not_found)),
        );
}
