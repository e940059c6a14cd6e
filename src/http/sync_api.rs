//! `/api/v1/sync/runs`: start an LDAP sync run and read the run history (scope `admin`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::api_io::{blocking, read_object, require, ApiError, ApiErrorBody};
use super::AppState;
use crate::directory::{Options, RunView, StartError, StartedBy};
use crate::domain::audit::Origin;
use crate::domain::tokens::Scope;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sync/runs", web::post().to(start))
        .route("/sync/runs", web::get().to(list))
        .route("/sync/runs/{id}", web::get().to(get));
}

type Reply = Result<HttpResponse, ApiError>;

/// `{"full": true}`: a full run (deactivates departed users); incremental when false or absent.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documents the body `start` reads
pub struct StartRequest {
    full: Option<bool>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRunPage<'a> {
    total_results: i64,
    start_index: i64,
    runs: Vec<RunView<'a>>,
}

/// Paging of the run history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters `list` reads
pub struct PageParams {
    /// 1-based; below 1 counts as 1.
    #[param(rename = "startIndex")]
    start_index: Option<i64>,
    /// Clamped to 0..`scim.max_page_size`.
    count: Option<i64>,
}

/// Starts an LDAP sync run in the background.
#[utoipa::path(post, path = "/api/v1/sync/runs", tag = "sync",
    request_body(content = StartRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Started; the run (status `running`) (scope admin)", body = RunView,
            headers(("Location" = String, description = "/api/v1/sync/runs/{id}"))),
        (status = 400, description = "full is not a boolean, or a malformed body", body = ApiErrorBody),
        (status = 409, description = "`sync_running`: a run is in progress; `not_configured`: no [ldap] section", body = ApiErrorBody),
    ))]
pub async fn start(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
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
            StartError::Store(e) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %crate::logging::chain(&e), "cannot start a sync run");
                ApiError::new(503, "unavailable", "the database is not available; try again later")
            }
        })?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/api/v1/sync/runs/{}", run.id)))
        .json(RunView::of(&run)))
}

/// The run history, newest first.
#[utoipa::path(get, path = "/api/v1/sync/runs", tag = "sync",
    params(PageParams),
    responses(
        (status = 200, description = "A page of runs (scope admin)", body = SyncRunPage),
        (status = 400, description = "A malformed or unknown parameter", body = ApiErrorBody),
    ))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Reply {
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
        return Ok(HttpResponse::Ok().json(SyncRunPage { total_results: 0, start_index, runs: Vec::new() }));
    };
    let (total, runs) = blocking(move || syncer.runs().list(start_index - 1, count)).await?;
    let runs = runs.iter().map(RunView::of).collect();
    Ok(HttpResponse::Ok().json(SyncRunPage { total_results: total, start_index, runs }))
}

/// One run; while running, its counts so far.
#[utoipa::path(get, path = "/api/v1/sync/runs/{id}", tag = "sync",
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "The run (scope admin)", body = RunView),
        (status = 404, description = "No such run", body = ApiErrorBody),
    ))]
pub async fn get(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let id = id.into_inner();
    let not_found = || ApiError::new(404, "not_found", format!("no sync run with id {id}"));
    let Some(syncer) = state.sync.clone() else { return Err(not_found()) };
    let lookup = id.clone();
    let run = blocking(move || syncer.runs().get(&lookup)).await?;
    run.map(|r| HttpResponse::Ok().json(RunView::of(&r))).ok_or_else(not_found)
}
