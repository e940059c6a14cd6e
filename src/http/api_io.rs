//! The JSON API's edge: error documents `{"error", "detail"}` and body reading.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::Value;

use super::auth::principal;
use super::request_id::request_id;
use super::AppState;
use crate::domain::audit::{Actor, Origin};
use crate::domain::tokens::Scope;
use crate::domain::{self};
use crate::scim::error::ScimError;

/// An API error: HTTP status, a stable machine word and a human sentence (never a secret).
#[derive(Debug, thiserror::Error)]
#[error("{status} {error}: {detail}")]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, error, detail: detail.into() }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", detail)
    }
}

/// The body of every API error.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ApiErrorBody {
    /// A stable machine word: `invalid_request`, `not_found`, `conflict`, `unauthorized`, …
    pub error: String,
    /// A human sentence.
    pub detail: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.status == 503 {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, super::scim_io::RETRY_AFTER_SECS));
        }
        resp.json(ApiErrorBody { error: self.error.into(), detail: self.detail.clone() })
    }
}

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        let error = match e.status {
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            408 => "request_timeout",
            409 => "conflict",
            413 => "too_large",
            415 => "unsupported_media_type",
            503 => "unavailable",
            s if s >= 500 => "internal",
            _ => "invalid_request",
        };
        ApiError::new(e.status, error, e.detail)
    }
}

impl From<domain::Error> for ApiError {
    fn from(e: domain::Error) -> Self {
        ScimError::from(e).into()
    }
}

/// Runs blocking work off the async workers (see `scim_io::blocking`).
pub(crate) async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ScimError> + Send + 'static,
{
    super::scim_io::blocking(f).await.map_err(Into::into)
}

/// Reads a JSON object body within `server.max_body_bytes`.
pub(crate) async fn read_object(state: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<Value, ApiError> {
    let v = super::scim_io::read_json(state, req, payload).await?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// Reads a JSON object body, or `{}` when the request has none (every member is optional).
pub(crate) async fn read_optional_object(state: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<Value, ApiError> {
    let v = super::scim_io::read_json_or(state, req, payload, Some(Value::Object(Default::default()))).await?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// The caller, if its token carries one of `scopes` (403 otherwise), as an audit actor.
pub(crate) fn require(req: &HttpRequest, scopes: &[Scope], origin: Origin) -> Result<Actor, ApiError> {
    let p = principal(req).ok_or_else(|| ApiError::new(401, "unauthorized", "missing bearer token"))?;
    if !scopes.iter().any(|s| p.has(*s)) {
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(403, "forbidden", format!("this needs a token with scope {}", names.join(" or "))));
    }
    Ok(Actor::new(origin, p.name, request_id(req)))
}

/// A string member of a JSON body.
pub(crate) fn string_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// A path or method `/api/v1` does not have: a JSON error like every other answer.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(404, "not_found", format!("no such endpoint: {} {}", req.method(), req.path())).error_response()
}
