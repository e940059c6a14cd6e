//! A request id for every request: taken from `X-Request-Id` when the caller sent a sane one,
//! made up otherwise; returned in the answer, recorded in audit events and the request's span.
//! The request's metrics are recorded here too (this middleware wraps everything).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use tracing::Instrument;

pub(crate) const HEADER: &str = "x-request-id";

use crate::logging::RequestId;

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) async fn assign(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %loggable(req.path()));
    let started = std::time::Instant::now();
    let mut resp = next.call(req).instrument(span.clone()).await?;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    crate::http::metrics_api::record(resp.request(), resp.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HeaderName::from_static(HEADER), v);
    }
    Ok(resp)
}

/// Paths whose last segment is a one-time secret (an enrolment link, an operator's setup link):
/// the log shows them without it.
const SECRET_PATHS: [&str; 2] = ["/enrol/", "/console/setup/"];

/// The path as the log may show it.
fn loggable(path: &str) -> std::borrow::Cow<'_, str> {
    match SECRET_PATHS.iter().find(|prefix| path.starts_with(*prefix)) {
        Some(prefix) => format!("{prefix}***").into(),
        None => path.into(),
    }
}

/// The id of this request.
pub(crate) fn request_id(req: &HttpRequest) -> Option<String> {
    RequestId::of(req)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_time_links_are_logged_without_their_token() {
        assert_eq!(super::loggable("/enrol/0123abcd"), "/enrol/***");
        assert_eq!(super::loggable("/console/setup/0123abcd"), "/console/setup/***");
        assert_eq!(super::loggable("/scim/v2/Users/42"), "/scim/v2/Users/42");
    }
}
