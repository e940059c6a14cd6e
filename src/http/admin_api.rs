//! `/api/v1/mfa/resets` (bulk resets) and `/api/v1/audit` (the trail): scope `admin`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::api_io::{blocking, read_object, require, string_field, ApiError};
use super::AppState;
use crate::domain::audit::Origin;
use crate::domain::tokens::Scope;
use crate::mfa::{Outcome, Reason, Selection};
use crate::scim::filter;
use crate::store::audit::Query;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mfa/resets", web::post().to(bulk_reset)).route("/audit", web::get().to(audit));
}

type Reply = Result<HttpResponse, ApiError>;

async fn bulk_reset(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Admin], Origin::Bulk)?;
    let body = read_object(&state, &req, payload).await?;
    let reason = Reason::parse(string_field(&body, "reason")?)?;
    let selection = match (body.get("userIds"), string_field(&body, "filter")?) {
        (Some(Value::Array(ids)), None) => Selection::Ids(
            ids.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("userIds must be a list of user ids (strings)"))?,
        ),
        (None, Some(f)) => Selection::Filter(
            filter::parse_filter(f).map_err(|e| ApiError::new(400, "invalid_filter", e.message))?,
        ),
        _ => return Err(ApiError::bad_request("give either userIds (a list) or filter (a SCIM filter)")),
    };
    let mfa = state.mfa.clone();
    let results = blocking(move || mfa.reset_many(&selection, &actor, &reason)).await?;
    let reset = results.iter().filter(|r| r.outcome == Outcome::Reset).count();
    let rendered: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = json!({"id": r.id, "outcome": r.outcome.as_str()});
            if let Some(d) = &r.detail {
                v["detail"] = json!(d);
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"results": rendered, "reset": reset, "failed": results.len() - reset})))
}

async fn audit(state: web::Data<AppState>, req: HttpRequest) -> Reply {
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
    Ok(HttpResponse::Ok().json(json!({"totalResults": total, "startIndex": start_index, "events": events})))
}
