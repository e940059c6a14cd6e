//! Liveness and readiness for process supervisors and load balancers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.pool.clone();
    match web::block(move || crate::store::ping(&pool)).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": "database does not answer"}))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"})),
    }
}
