//! Liveness and readiness for process supervisors and load balancers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and, with `[ldap]`, the change feed has not stopped deactivating (past
/// `[ldap.safety]`) and the last two sync runs did not both fail.
/// `?check=database` looks at this instance's database connection only: the sync's history is
/// shared by every instance, so a load balancer that took it into account would take all of
/// them out of service during an LDAP outage.
pub async fn readyz(state: web::Data<AppState>, query: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let health = state.health.clone();
    let runs =
        state.sync.as_ref().filter(|_| query.get("check").map(String::as_str) != Some("database")).map(|s| s.runs().clone());
    let check = web::block(move || -> Result<Option<String>, crate::domain::Error> {
        health.database_answers(CHECK_WAIT)?;
        if let Some(runs) = runs {
            if let Some(why) = runs.feed_held(CHECK_WAIT)? {
                return Ok(Some(format!("the LDAP change feed stopped deactivating users: {why}")));
            }
            if runs.last_runs_failed(2, CHECK_WAIT)? {
                return Ok(Some("the last two LDAP sync runs failed".into()));
            }
        }
        Ok(None)
    });
    // A load balancer asks often and waits little: the answer comes within a second, also when
    // the database hangs instead of refusing.
    let unavailable = |reason: &str| {
        HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
            .json(json!({"status": "unavailable", "reason": reason}))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), check).await {
        Ok(Ok(Ok(None))) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Ok(Ok(Some(reason)))) => unavailable(&reason),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %crate::logging::chain(&e), "readiness check failed");
            unavailable("database does not answer")
        }
        Ok(Err(_)) => unavailable("shutting down"),
        Err(_) => unavailable("database does not answer within a second"),
    }
}

/// How long the readiness check waits for a pooled connection.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_millis(700);
