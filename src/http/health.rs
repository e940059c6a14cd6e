//! Liveness and readiness for process supervisors and load balancers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and, with `[ldap]`, the last two sync runs did not both fail.
/// `?check=database` looks at this instance's database connection only: the sync's history is
/// shared by every instance, so a load balancer that took it into account would take all of
/// them out of service during an LDAP outage.
pub async fn readyz(state: web::Data<AppState>, query: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let pool = state.pool.clone();
    let syncing = state.sync.is_some() && query.get("check").map(String::as_str) != Some("database");
    let check = web::block(move || -> Result<Option<&'static str>, crate::store::Error> {
        crate::store::ping(&pool)?;
        if syncing && crate::store::directory::last_runs_failed(&mut *pool.get()?, 2)? {
            return Ok(Some("the last two LDAP sync runs failed"));
        }
        Ok(None)
    });
    match check.await {
        Ok(Ok(None)) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Ok(Some(reason))) => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": reason})),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": "database does not answer"}))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"})),
    }
}
