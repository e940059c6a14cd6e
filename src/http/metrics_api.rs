//! `GET /metrics` (scope `admin`) and the per-request HTTP metrics.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};

use super::api_io::{blocking, require, ApiError};
use super::AppState;
use crate::domain::audit::Origin;
use crate::domain::tokens::Scope;
use crate::metrics::{Gauges, METRICS};

pub(crate) async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let stats = state.stats.clone();
    let counts = blocking(move || stats.snapshot()).await?;
    let text = METRICS.render(&Gauges {
        users: &counts.users,
        mfa_events: &counts.mfa_events,
        pool_open: counts.pool_open,
        pool_idle: counts.pool_idle,
        receivers: &counts.receivers,
    });
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

/// Counts a request under its route template (`/scim/v2/Users/{id}`, never the id itself).
///
/// Every label comes from a closed set, whatever the client sends: a new label value is a new
/// series kept for the life of the process, so a made-up method or path must not make one.
/// Route templates are the ones registered (else `unmatched`), methods the standard ones (else
/// `other`), statuses the ones this server answers with.
pub(crate) fn record(req: &HttpRequest, status: u16, took: Duration) {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let status = status.to_string();
    METRICS.http_requests.with_label_values(&[route.as_str(), method, status.as_str()]).inc();
    METRICS.http_duration.with_label_values(&[route.as_str(), method]).observe(took.as_secs_f64());
    if let Some(op) = scim_operation(&route, method) {
        METRICS.scim_operations.with_label_values(&[op, status.as_str()]).inc();
    }
}

/// The standard methods by name; anything else (`M00001AAAA…`) is `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|m| *m == method.as_str()).unwrap_or("other")
}

fn scim_operation(route: &str, method: &str) -> Option<&'static str> {
    let rest = route.strip_prefix("/scim/v2")?;
    Some(match (rest, method) {
        ("/Users", "POST") => "create",
        ("/Users", "GET") => "list",
        ("/Users/.search", "POST") => "search",
        ("/Users/{id}", "GET") => "get",
        ("/Users/{id}", "PUT") => "replace",
        ("/Users/{id}", "PATCH") => "patch",
        ("/Users/{id}", "DELETE") => "delete",
        ("/Groups", "POST") => "group_create",
        ("/Groups", "GET") => "group_list",
        ("/Groups/.search", "POST") => "group_search",
        ("/Groups/{id}", "GET") => "group_get",
        ("/Groups/{id}", "PUT") => "group_replace",
        ("/Groups/{id}", "PATCH") => "group_patch",
        ("/Groups/{id}", "DELETE") => "group_delete",
        ("/.search", "POST") => "search_all",
        _ => "discovery",
    })
}
