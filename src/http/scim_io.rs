//! SCIM over HTTP: reading JSON bodies within limits, writing `application/scim+json`,
//! and turning domain errors into SCIM error documents.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use serde_json::Value;

use super::auth::principal;
use super::request_id::request_id;
use super::AppState;
use crate::domain;
use crate::domain::audit::{Actor, Origin};
use crate::scim::error::{ScimError, ScimType};
use crate::scim::list::ListParams;
use crate::scim::resource::Projection;

pub(crate) const SCIM_JSON: &str = "application/scim+json";

impl ResponseError for ScimError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        scim_error_response(self)
    }
}

pub(crate) fn scim_error_response(e: &ScimError) -> HttpResponse {
    let mut resp = HttpResponse::build(e.status_code());
    if e.status == 503 {
        resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
    }
    resp.content_type(SCIM_JSON).body(e.to_json().to_string())
}

/// When a client should try again after a 503 (the database busy or unreachable).
pub(crate) const RETRY_AFTER_SECS: &str = "5";

impl From<domain::Error> for ScimError {
    fn from(e: domain::Error) -> Self {
        use domain::{Conflict, Error, Invalid};
        match e {
            Error::NotFound(m) => ScimError::not_found(m),
            Error::Conflict { kind: Conflict::Taken, detail } => ScimError::uniqueness(detail),
            Error::Conflict { kind: Conflict::State, detail } => ScimError::new(409, None, detail),
            Error::PreconditionFailed => ScimError::precondition_failed(e.to_string()),
            Error::Invalid { reason, detail } => {
                let scim_type = match reason {
                    Invalid::Syntax => ScimType::InvalidSyntax,
                    Invalid::Filter => ScimType::InvalidFilter,
                    Invalid::Path => ScimType::InvalidPath,
                    Invalid::Value => ScimType::InvalidValue,
                    Invalid::Mutability => ScimType::Mutability,
                    Invalid::TooMany => ScimType::TooMany,
                    Invalid::NoTarget => ScimType::NoTarget,
                    Invalid::Version => ScimType::InvalidVers,
                    Invalid::Cursor => ScimType::InvalidCursor,
                    Invalid::Count => ScimType::InvalidCount,
                };
                ScimError::bad_request(scim_type, detail)
            }
            Error::Busy(e) => {
                tracing::warn!(error = %e, "storage unavailable");
                ScimError::new(503, None, "the database is busy or unreachable; try again shortly")
            }
            Error::Store(e) => {
                tracing::error!(error = %e, "storage failure");
                ScimError::new(500, None, "internal storage error; see the server log")
            }
        }
    }
}

/// Runs blocking (database) work on actix's blocking pool, off the async workers.
pub(crate) async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ScimError>
where
    T: Send + 'static,
    E: Into<ScimError> + Send + 'static,
{
    match web::block(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ScimError::new(503, None, "server is shutting down")),
    }
}

/// Reads a JSON body of at most `server.max_body_bytes` (413 beyond it), arriving within
/// `server.request_timeout` (408 after it: a client that declares a body and stalls would
/// otherwise hold its connection and a worker's attention for ever).
pub(crate) async fn read_json(state: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<Value, ScimError> {
    read_json_or(state, req, payload, None).await
}

/// Reads a JSON body, or gives `empty` for a request without one (when `empty` is given).
pub(crate) async fn read_json_or(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    empty: Option<Value>,
) -> Result<Value, ScimError> {
    check_content_type(req)?;
    let server = &state.config.server;
    let timeout = std::time::Duration::from_secs(server.request_timeout);
    let body = tokio::time::timeout(timeout, read_body(req, payload, server.max_body_bytes)).await.map_err(|_| {
        ScimError::new(
            408,
            None,
            format!("the request body did not arrive within {} s (server.request_timeout)", server.request_timeout),
        )
    })??;
    if body.is_empty() {
        return empty.ok_or_else(|| ScimError::invalid_syntax("the request body is empty; a JSON document is expected"));
    }
    serde_json::from_slice(&body).map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))
}

/// A body is JSON: `application/json`, `application/scim+json` (any parameters), or no
/// `Content-Type` at all, which Okta's own SCIM test suite sends. Anything else (`text/plain`,
/// a form) is 415: it would be read as JSON only by accident.
fn check_content_type(req: &HttpRequest) -> Result<(), ScimError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if ["application/json", SCIM_JSON].iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        return Ok(());
    }
    Err(ScimError::new(
        415,
        None,
        format!("Content-Type {essence:?} is not accepted: send application/scim+json or application/json"),
    ))
}

/// The body's bytes, refused (413) as soon as they exceed `limit`.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ScimError> {
    let too_large = || ScimError::new(413, None, format!("request body larger than {limit} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ScimError::invalid_syntax(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `https://host/scim/v2`: from `server.public_url`, else from the request (see `origin`).
pub(crate) fn base_url(state: &AppState, req: &HttpRequest) -> String {
    format!("{}/scim/v2", super::origin::public_origin(state, req))
}

/// A SCIM JSON response.
pub(crate) fn scim_json(status: StatusCode, doc: &impl serde::Serialize) -> HttpResponse {
    let body = serde_json::to_vec(doc).expect("a JSON document serialises");
    HttpResponse::build(status).content_type(SCIM_JSON).body(body)
}

pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    scim_error_response(&ScimError::not_found(format!("no such endpoint: {} {}", req.method(), req.path())))
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    scim_error_response(&ScimError::new(405, None, format!("{} is not allowed on {}", req.method(), req.path())))
}

/// The query string's pairs, as sent.
pub(crate) fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

/// `attributes` / `excludedAttributes` of the query string.
pub(crate) fn projection(req: &HttpRequest) -> Projection {
    let p = ListParams::from_query(query_pairs(req));
    Projection::parse(p.attributes.as_deref(), p.excluded_attributes.as_deref())
}

/// The `If-Match` header, when sent.
pub(crate) fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Who acts through SCIM: the token's name, for the audit trail.
pub(crate) fn actor(req: &HttpRequest) -> Actor {
    let name = principal(req).map(|p| p.name).unwrap_or_else(|| "unknown".into());
    Actor::new(Origin::Scim, name, request_id(req))
}

/// The endpoints under `/scim/v2` in their canonical spelling.
const ENDPOINTS: [&str; 6] = ["Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", ".search"];

/// A `/scim/v2` path as routed: the endpoint spelled canonically (`/users` → `/Users`) and a
/// trailing slash dropped (`/Users/?filter=…`), as Microsoft's SCIM reference tests send them.
/// `None` when it is canonical already.
fn canonical_scim_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/scim/v2/")?;
    let (endpoint, tail) = rest.split_once('/').map(|(e, t)| (e, Some(t))).unwrap_or((rest, None));
    let canonical = ENDPOINTS.iter().find(|e| e.eq_ignore_ascii_case(endpoint)).copied().unwrap_or(endpoint);
    let tail = tail.map(|t| t.trim_end_matches('/')).filter(|t| !t.is_empty());
    let fixed = match tail {
        Some(t) => format!("/scim/v2/{canonical}/{t}"),
        None => format!("/scim/v2/{canonical}"),
    };
    (fixed != path).then_some(fixed)
}

/// Routes `/scim/v2/users/` as `/scim/v2/Users` (see [`canonical_scim_path`]).
pub(crate) async fn canonical_path(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if let Some(path) = canonical_scim_path(req.path()) {
        let with_query = match req.query_string() {
            "" => path,
            q => format!("{path}?{q}"),
        };
        if let Ok(uri) = with_query.parse::<actix_web::http::Uri>() {
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod path_tests {
    #[test]
    fn scim_endpoints_route_ignoring_case_and_a_trailing_slash() {
        let c = super::canonical_scim_path;
        assert_eq!(c("/scim/v2/users").as_deref(), Some("/scim/v2/Users"));
        assert_eq!(c("/scim/v2/Users/").as_deref(), Some("/scim/v2/Users"));
        assert_eq!(c("/scim/v2/groups/abc").as_deref(), Some("/scim/v2/Groups/abc"));
        assert_eq!(c("/scim/v2/GROUPS/abc/").as_deref(), Some("/scim/v2/Groups/abc"));
        assert_eq!(c("/scim/v2/serviceproviderconfig").as_deref(), Some("/scim/v2/ServiceProviderConfig"));
        assert_eq!(c("/scim/v2/Users"), None);
        assert_eq!(c("/scim/v2/Users/abc"), None);
        assert_eq!(c("/api/v1/users"), None);
        assert_eq!(c("/scim/v2/Unknown/"), Some("/scim/v2/Unknown".into()));
    }
}
