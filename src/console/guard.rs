//! What every console request passes through: the session its cookie names (put in the
//! request's extensions for [`Me`]), the CSRF and origin checks of every POST, and the security
//! headers of every response.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use futures_util::StreamExt;

use super::page::{Me, Problem};
use super::Console;

/// The session cookie's name.
pub const COOKIE: &str = "provisiond_session";

/// The form field, and the header (htmx sends it), that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The largest form body the console reads, here and in its handlers (a thousand ticked ids take
/// about 40 KB).
pub const MAX_FORM_BYTES: usize = 1 << 20;

/// The one form that carries more: a page's enrolment links sent back to be downloaded as CSV
/// (ten thousand links take about 3 MB encoded).
pub const LINKS_CSV_PATH: &str = "/console/users/enrolment-links.csv";
pub const MAX_LINKS_CSV_BYTES: usize = 32 << 20;

fn form_limit(path: &str) -> usize {
    if path == LINKS_CSV_PATH {
        MAX_LINKS_CSV_BYTES
    } else {
        MAX_FORM_BYTES
    }
}

/// POSTs made before there is a session: they check the origin only (and their own secrets).
fn before_session(path: &str) -> bool {
    path == "/console/sign-in" || path.starts_with("/console/setup/")
}

pub async fn guard(mut req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse, actix_web::Error> {
    let console = req.app_data::<web::Data<Arc<Console>>>().cloned();
    // The embedded files need no session: no database read for each of them.
    let needs_session = !req.path().starts_with("/console/static/");
    let me = match (&console, req.cookie(COOKIE).filter(|_| needs_session)) {
        (Some(console), Some(cookie)) => {
            find_session(console, cookie.value().to_string(), crate::logging::RequestId::of(req.request())).await
        }
        _ => None,
    };
    if let Some(me) = &me {
        req.extensions_mut().insert(me.clone());
    }
    if req.method() == Method::POST {
        if let Err(refusal) = check_post(&mut req, me.as_ref()).await {
            let res = refusal.error_response();
            return Ok(with_headers(req.into_response(res)));
        }
    }
    Ok(with_headers(next.call(req).await?.map_into_boxed_body()))
}

async fn find_session(console: &Console, id: String, request_id: Option<String>) -> Option<Me> {
    let sessions = console.services.sessions.clone();
    let lookup = id.clone();
    match web::block(move || sessions.find(&lookup)).await {
        Ok(Ok(Some(s))) => Some(Me::new(id, s, request_id)),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::logging::chain(&e), "console session look-up failed");
            None
        }
        _ => None,
    }
}

/// A POST must come from this origin (a browser always sends `Origin` on POST), and, once
/// signed in, carry this session's CSRF token in the form or the `X-CSRF-Token` header.
async fn check_post(req: &mut ServiceRequest, me: Option<&Me>) -> Result<(), Problem> {
    if !same_origin(req.request()) {
        return Err(Problem::forbidden(me, "This form was sent from another site, so it was refused."));
    }
    if before_session(req.path()) {
        return Ok(());
    }
    let Some(me) = me else {
        return Err(Problem::forbidden(None, "You are not signed in (or your session ended): sign in and try again."));
    };
    let sent = match req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(token) => Some(token.to_string()),
        None => form_field(req, CSRF_FIELD).await?,
    };
    if !me.csrf_matches(sent.as_deref()) {
        return Err(Problem::forbidden(Some(me), "The form's security token is missing or belongs to another session."));
    }
    Ok(())
}

/// Reads the form body to find one field, then puts the body back for the handler.
async fn form_field(req: &mut ServiceRequest, name: &str) -> Result<Option<String>, Problem> {
    let limit = form_limit(req.path());
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Problem::bad_request("The form could not be read."))?;
        if body.len() + chunk.len() > limit {
            return Err(Problem::too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let value = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v));
    req.set_payload(Payload::from(body));
    Ok(value)
}

/// `Origin`, when sent, names this host.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = req.connection_info().host().to_string();
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host.as_str())
}

/// What every page of ours says to the browser: nothing from elsewhere runs in or frames it,
/// and nothing of it is cached.
const HEADERS: [(&str, &str); 3] = [
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
];

fn with_headers(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    with(res, &[("referrer-policy", "same-origin")])
}

fn with(mut res: ServiceResponse<BoxBody>, extra: &[(&'static str, &'static str)]) -> ServiceResponse<BoxBody> {
    let headers = res.headers_mut();
    for (name, value) in HEADERS.iter().chain(extra) {
        headers.insert(header::HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    res
}

/// The guard of the pages a user opens from a one-time link (`/enrol/…`): no session, so no
/// CSRF token (the link's secret is in the address, which another site cannot know), but a POST
/// naming another site as its origin is refused. The address is never sent on as a referrer,
/// and search engines are told to forget the page. Under `no-referrer` a browser sends its own
/// form with `Origin: null`, so that one is let through.
pub async fn link_page(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse, actix_web::Error> {
    let extra = [("referrer-policy", "no-referrer"), ("x-robots-tag", "noindex, nofollow")];
    let null_origin = req.headers().get(header::ORIGIN).is_some_and(|o| o == "null");
    if req.method() == Method::POST && !null_origin && !same_origin(req.request()) {
        let refusal = Problem::forbidden(None, "This form was sent from another site, so it was refused.");
        let res = refusal.error_response();
        return Ok(with(req.into_response(res), &extra));
    }
    Ok(with(next.call(req).await?.map_into_boxed_body(), &extra))
}
