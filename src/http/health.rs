//! Liveness and readiness for process supervisors and load balancers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and answering.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and, with `[ldap]`, the change feed has not stopped deactivating (past
/// `[ldap.safety]`) and the last two sync runs did not both fail. `events` tells each event
/// receiver's backlog and last error: a receiver that is down does not make the daemon unready
/// (it slows nothing here), but whoever looks should see it.
/// `?check=database` looks at this instance's database connection only: the sync's history is
/// shared by every instance, so a load balancer that took it into account would take all of
/// them out of service during an LDAP outage.
pub async fn readyz(state: web::Data<AppState>, query: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let health = state.health.clone();
    let outbox = state.outbox.clone();
    let runs =
        state.sync.as_ref().filter(|_| query.get("check").map(String::as_str) != Some("database")).map(|s| s.runs().clone());
    let check = web::block(move || -> Result<(Option<String>, serde_json::Value), crate::domain::Error> {
        health.database_answers(CHECK_WAIT)?;
        let events = receivers(&outbox.receivers()?);
        if let Some(runs) = runs {
            if let Some(why) = runs.feed_held(CHECK_WAIT)? {
                return Ok((Some(format!("the LDAP change feed stopped deactivating users: {why}")), events));
            }
            if runs.last_runs_failed(2, CHECK_WAIT)? {
                return Ok((Some("the last two LDAP sync runs failed".into()), events));
            }
        }
        Ok((None, events))
    });
    // A load balancer asks often and waits little: the answer comes within a second, also when
    // the database hangs instead of refusing.
    let unavailable = |reason: &str| {
        HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
            .json(json!({"status": "unavailable", "reason": reason}))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), check).await {
        Ok(Ok(Ok((None, events)))) => HttpResponse::Ok().json(json!({"status": "ready", "events": events})),
        Ok(Ok(Ok((Some(reason), events)))) => HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
            .json(json!({"status": "unavailable", "reason": reason, "events": events})),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %crate::logging::chain(&e), "readiness check failed");
            unavailable("database does not answer")
        }
        Ok(Err(_)) => unavailable("shutting down"),
        Err(_) => unavailable("database does not answer within a second"),
    }
}

/// Each receiver's backlog, the age of its oldest event, counts and last error, by name.
fn receivers(states: &[crate::domain::events::ReceiverState]) -> serde_json::Value {
    let now = chrono::Utc::now().naive_utc();
    states
        .iter()
        .map(|r| {
            let age = r.waiting(now).map(|d| d.num_seconds());
            let detail = json!({"backlog": r.backlog, "oldestAgeSeconds": age, "delivered": r.delivered,
                                "dropped": r.dropped, "lastError": r.last_error});
            (r.receiver.clone(), detail)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// How long the readiness check waits for a pooled connection.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_millis(700);
