//! The admin console: server-rendered pages under `/console` for operators (see
//! `domain::operators`), a door like SCIM and the JSON API: it calls the domain services and
//! renders what they answer (askama templates under `templates/`, htmx and our stylesheet
//! embedded in the binary). `guard` puts the security headers on every response, finds the
//! session, and refuses a POST without the session's CSRF token or from another origin.

mod audit;
mod auth;
mod enrol;
mod events;
mod guard;
mod links;
mod operators;
mod page;
mod qr;
mod sync;
mod tokens;
mod users;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::config::Config;
use crate::directory::Syncer;
use crate::domain::Services;

pub use guard::COOKIE;
pub use page::Me;

/// What the console's handlers reach.
pub struct Console {
    pub services: Services,
    pub config: Arc<Config>,
    /// The LDAP sync, when `[ldap]` is configured.
    pub sync: Option<Arc<Syncer>>,
}

/// The enrolment page of one-time links, and the embedded files its pages use: served even
/// with the console turned off, since links are made over the API and the command line too.
pub fn link_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/enrol")
            .wrap(actix_web::middleware::from_fn(guard::link_page))
            // A security key's answer (its attestation, JSON, form-encoded) fits in 16 KiB.
            .app_data(web::FormConfig::default().limit(16 * 1024))
            .configure(enrol::routes),
    );
}

/// The embedded files alone, for a daemon whose console is turned off.
pub fn asset_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console/static/{file}", web::get().to(asset));
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { page::see_other("/console") })).service(
        web::scope("/console")
            .wrap(actix_web::middleware::from_fn(guard::guard))
            .app_data(web::PayloadConfig::new(guard::MAX_FORM_BYTES))
            .app_data(web::FormConfig::default().limit(guard::MAX_FORM_BYTES))
            .route("", web::get().to(home))
            .route("/static/{file}", web::get().to(asset))
            .configure(auth::routes)
            .configure(users::routes)
            .configure(links::routes)
            .configure(audit::routes)
            .configure(sync::routes)
            .configure(events::routes)
            .configure(tokens::routes)
            .configure(operators::routes),
    );
}

/// The console's start: the users list, or the sign-in page.
async fn home(me: Option<Me>) -> HttpResponse {
    page::see_other(if me.is_some() { "/console/users" } else { "/console/sign-in" })
}

#[derive(rust_embed::Embed)]
#[folder = "templates/static/"]
struct Assets;

/// The stylesheet, scripts and htmx, from the binary: nothing is fetched from elsewhere.
async fn asset(file: web::Path<String>) -> HttpResponse {
    let Some(content) = Assets::get(&file) else { return HttpResponse::NotFound().finish() };
    let kind = match file.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    };
    HttpResponse::Ok().insert_header((header::CONTENT_TYPE, kind)).body(content.data.into_owned())
}
