//! HTTP doors: they parse requests into domain calls and render the answers.

pub mod auth;
pub mod discovery;
pub mod health;
pub mod scim_io;
pub mod scim_users;

use std::sync::Arc;

use actix_web::{middleware::from_fn, web};

use crate::config::Config;
use crate::domain::{tokens::Tokens, users::Users};
use crate::store::Pool;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub users: Users,
    pub tokens: Tokens,
}

impl AppState {
    pub fn new(config: Arc<Config>, pool: Pool) -> Self {
        AppState {
            users: Users::new(pool.clone()),
            tokens: Tokens::new(pool.clone()),
            config,
            pool,
        }
    }
}

/// All routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/scim/v2")
                .wrap(from_fn(auth::scim_scope))
                .configure(discovery::routes)
                .configure(scim_users::routes)
                .default_service(web::to(scim_io::not_found)),
        );
}
