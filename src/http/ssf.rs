//! The Shared Signals transmitter's public documents (SSF 1.0 §7): its configuration metadata
//! at `/.well-known/ssf-configuration` and its signing keys at `jwks_uri`. Not found without
//! `[ssf]`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// Where the public keys are served.
pub const JWKS_PATH: &str = "/ssf/jwks.json";

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // SSF §7.2: the well-known suffix goes between the host and the issuer's path.
    cfg.route("/.well-known/ssf-configuration{path:(/.*)?}", web::get().to(configuration)).route(JWKS_PATH, web::get().to(jwks));
}

async fn configuration(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(ssf) = &state.config.ssf else { return not_found() };
    let (origin, issuer_path) = split_issuer(&ssf.issuer);
    if path.trim_end_matches('/') != issuer_path {
        return not_found();
    }
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
        "spec_version": "1_0",
        "issuer": ssf.issuer,
        "jwks_uri": format!("{origin}{JWKS_PATH}"),
    }))
}

async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    match &state.signing {
        Some(keys) => HttpResponse::Ok().insert_header(("Cache-Control", "max-age=300")).json(keys.jwks()),
        None => not_found(),
    }
}

/// `https://idp.example/tenant` → (`https://idp.example`, `/tenant`).
fn split_issuer(issuer: &str) -> (&str, &str) {
    let issuer = issuer.trim_end_matches('/');
    let host_start = issuer.find("://").map_or(0, |i| i + 3);
    match issuer[host_start..].find('/') {
        Some(i) => issuer.split_at(host_start + i),
        None => (issuer, ""),
    }
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not_found", "detail": "no Shared Signals transmitter is configured ([ssf])"}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_well_known_suffix_goes_between_the_host_and_the_issuers_path() {
        assert_eq!(super::split_issuer("https://idp.example"), ("https://idp.example", ""));
        assert_eq!(super::split_issuer("https://idp.example/"), ("https://idp.example", ""));
        assert_eq!(super::split_issuer("https://idp.example:8443/t/1/"), ("https://idp.example:8443", "/t/1"));
    }
}
