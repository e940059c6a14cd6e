//! `/api/v1/sync/runs`: start an LDAP sync run and read the run history (scope `admin`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::api_io::{blocking, read_object, require, ApiError};
use super::AppState;
use crate::directory::sync::render;
use crate::directory::{Options, StartError, StartedBy};
use crate::domain::audit::Origin;
use crate::domain::tokens::Scope;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sync/runs", web::post().to(start))
        .route("/sync/runs", web::get().to(list))
        .route("/sync/runs/{id}", web::get().to(get));
}

type Reply = Result<HttpResponse, ApiError>;

/// `{"full": bool}` → 202 with the run (status `running`); 409 when a run is in progress.
async fn start(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let syncer = state
        .sync
        .clone()
        .ok_or_else(|| ApiError::new(409, "not_configured", "LDAP sync is not configured (no [ldap] section)"))?;
    let body = read_object(&state, &req, payload).await?;
    let full = match body.get("full") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("full must be true or false")),
    };
    let options = Options { full, started_by: StartedBy::Api, ..Options::default() };
    // Taking the lease is a database write: off the HTTP worker.
    let run = web::block(move || syncer.spawn(options))
        .await
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))?
        .map_err(|e| match e {
            StartError::Busy(_) => ApiError::new(409, "sync_running", e.to_string()),
            StartError::Store(e) => ApiError::new(503, "unavailable", e.to_string()),
        })?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/api/v1/sync/runs/{}", run.id)))
        .json(render(&run)))
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (mut start_index, mut count) = (1i64, 100i64);
    for (k, v) in pairs {
        let n = v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{k} must be an integer")))?;
        match k.as_str() {
            "startIndex" => start_index = n.max(1),
            "count" => count = n.clamp(0, state.config.scim.max_page_size),
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    let Some(syncer) = state.sync.clone() else {
        return Ok(HttpResponse::Ok().json(json!({"totalResults": 0, "startIndex": start_index, "runs": []})));
    };
    let (total, runs) = blocking(move || syncer.list(start_index - 1, count).map_err(crate::domain::Error::from)).await?;
    let runs: Vec<Value> = runs.iter().map(render).collect();
    Ok(HttpResponse::Ok().json(json!({"totalResults": total, "startIndex": start_index, "runs": runs})))
}

async fn get(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let id = id.into_inner();
    let not_found = || ApiError::new(404, "not_found", format!("no sync run with id {id}"));
    let Some(syncer) = state.sync.clone() else { return Err(not_found()) };
    let lookup = id.clone();
    let run = blocking(move || syncer.get(&lookup).map_err(crate::domain::Error::from)).await?;
    run.map(|r| HttpResponse::Ok().json(render(&r))).ok_or_else(not_found)
}
