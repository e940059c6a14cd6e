//! `/api/v1/mfa/resets` (bulk resets) and `/api/v1/audit` (the trail): scope `admin`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::api_io::{blocking, read_object, require, string_field, ApiError, ApiErrorBody};
use super::AppState;
use crate::domain::audit::{Origin, Query};
use crate::domain::mfa::{Outcome, Reason, Selection};
use crate::domain::tokens::Scope;
use crate::domain::users::Matching;
use crate::scim::filter;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mfa/resets", web::post().to(bulk_reset)).route("/audit", web::get().to(audit));
}

type Reply = Result<HttpResponse, ApiError>;

/// Which users to reset: a list of ids, or a SCIM filter; and why.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the body `bulk_reset` reads
pub(crate) enum BulkResetRequest {
    Ids(ResetByIds),
    Groups(ResetByGroups),
    Filter(ResetByFilter),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct ResetByGroups {
    /// SCIM group ids: their members, through nested groups too, each once (at most
    /// `mfa.max_bulk_reset` users).
    group_ids: Vec<String>,
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct ResetByIds {
    /// SCIM user ids (at most `mfa.max_bulk_reset`).
    user_ids: Vec<String>,
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(crate) struct ResetByFilter {
    /// A SCIM filter, e.g. `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Sales"`.
    filter: String,
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// One user's outcome.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResetOutcome {
    id: String,
    /// `reset`, `not_found` or `error`.
    #[schema(pattern = "^(reset|not_found|error)$")]
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Every selected user's outcome; one bad id does not stop the others.
#[derive(Serialize, ToSchema)]
pub(crate) struct BulkResetResults {
    results: Vec<ResetOutcome>,
    reset: usize,
    failed: usize,
}

/// The audit trail's query parameters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters `audit` reads
pub(crate) struct AuditParams {
    /// Only this user's events.
    #[param(rename = "userId")]
    user_id: Option<String>,
    /// Only events of this type (`mfa.reset`, `mfa.enrolled`, …).
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// 1-based; below 1 counts as 1.
    #[param(rename = "startIndex")]
    start_index: Option<i64>,
    /// Clamped to 0..`scim.max_page_size`.
    count: Option<i64>,
}

/// An audit event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents the events `domain::audit` renders
pub(crate) struct AuditEvent {
    id: i64,
    #[schema(format = DateTime)]
    time: String,
    /// `mfa.enrolled`, `mfa.reset`, `mfa.backup_codes.generated`, `mfa.backup_code.used`, `mfa.verify.locked_out`, and the console's `operator.added`, `operator.disabled`, `operator.reset`, `operator.set_up`, `operator.signed_in`, `operator.sign_in_failed`, `operator.locked_out`
    #[serde(rename = "type")]
    event_type: String,
    user_id: Option<String>,
    user_name: Option<String>,
    /// `api`, `bulk`, `scim`, `cli`, `directory`, `console`
    origin: String,
    actor: String,
    reason: Option<String>,
    request_id: Option<String>,
    /// Event-specific details.
    detail: Option<Object>,
}

/// A JSON object.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub(crate) struct Object(serde_json::Map<String, Value>);

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditPage {
    total_results: i64,
    start_index: i64,
    #[schema(value_type = Vec<AuditEvent>)]
    events: Vec<Value>,
}

/// Resets the factors of many users (audited one by one, origin `bulk`).
#[utoipa::path(post, path = "/api/v1/mfa/resets", tag = "admin",
    request_body(content = BulkResetRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Each user's outcome (scope admin)", body = BulkResetResults),
        (status = 400, description = "Not exactly one of userIds, groupIds and filter, an unknown group, an invalid filter, no reason, more users than mfa.max_bulk_reset, or a malformed body", body = ApiErrorBody),
    ))]
pub(crate) async fn bulk_reset(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Admin], Origin::Bulk)?;
    let body = read_object(&state, &req, payload).await?;
    let reason = Reason::parse(string_field(&body, "reason")?)?;
    let group_ids = match body.get("groupIds") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => Some(
            ids.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("groupIds must be a list of group ids (strings)"))?,
        ),
        Some(_) => return Err(ApiError::bad_request("groupIds must be a list of group ids (strings)")),
    };
    let selection = match (body.get("userIds"), string_field(&body, "filter")?, group_ids) {
        (None, None, Some(ids)) => {
            let groups = state.groups.clone();
            let filter = blocking(move || groups.members_filter(&ids)).await?;
            Selection::Matching(Matching { filter: Some(filter), ..Matching::default() })
        }
        (Some(Value::Array(ids)), None, None) => Selection::Ids(
            ids.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("userIds must be a list of user ids (strings)"))?,
        ),
        (None, Some(f), None) => Selection::Matching(Matching {
            filter: Some(filter::parse_filter(f).map_err(|e| ApiError::new(400, "invalid_filter", e.message))?),
            ..Matching::default()
        }),
        _ => return Err(ApiError::bad_request("give one of userIds (a list), groupIds (a list) or filter (a SCIM filter)")),
    };
    let mfa = state.mfa.clone();
    let results = blocking(move || mfa.reset_many(&selection, &actor, &reason)).await?;
    let reset = results.iter().filter(|r| r.outcome == Outcome::Reset).count();
    let failed = results.len() - reset;
    let results = results.into_iter().map(|r| ResetOutcome { outcome: r.outcome.as_str(), id: r.id, detail: r.detail }).collect();
    Ok(HttpResponse::Ok().json(BulkResetResults { results, reset, failed }))
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of events (scope admin)", body = AuditPage),
        (status = 400, description = "A malformed or unknown parameter", body = ApiErrorBody),
    ))]
pub(crate) async fn audit(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    require(&req, &[Scope::Admin], Origin::Api)?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut q = Query { offset: 0, limit: 100, ..Default::default() };
    let mut start_index = 1;
    for (k, v) in pairs {
        let int = |v: &str| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{k} must be an integer")));
        match k.as_str() {
            "userId" => q.user_id = Some(v),
            "type" => q.event_type = Some(v),
            "since" => {
                let t = chrono::DateTime::parse_from_rfc3339(&v)
                    .map_err(|_| ApiError::bad_request("since must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"))?;
                q.since = Some(t.naive_utc());
            }
            "startIndex" => start_index = int(&v)?.max(1),
            "count" => q.limit = int(&v)?.clamp(0, state.config.scim.max_page_size),
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    q.offset = start_index - 1;
    let audit = state.audit.clone();
    let (total, events) = blocking(move || audit.list(&q)).await?;
    Ok(HttpResponse::Ok().json(AuditPage { total_results: total, start_index, events }))
}
