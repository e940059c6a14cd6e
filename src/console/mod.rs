//! The admin console: server-rendered pages under `/console` for operators (see
//! `domain::operators`), a door like SCIM and the JSON API: it calls the domain services and
//! renders what they answer. Every response carries the security headers below; every POST but
//! the sign-in carries the session's CSRF token, and every POST a same-origin `Origin` when the
//! browser sends one.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::domain::operators::{Operators, SignIn};
use crate::domain::sessions::{Session, Sessions};

/// What the console's handlers reach.
#[derive(Clone)]
pub struct Console {
    pub operators: Operators,
    pub sessions: Sessions,
}

/// The session cookie's name.
pub const COOKIE: &str = "provisiond_session";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { see_other("/console") })).service(
        web::scope("/console")
            .wrap(from_fn(security_headers))
            .route("", web::get().to(home))
            .route("/sign-in", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-out", web::post().to(sign_out)),
    );
}

/// The headers of every console response: nothing from elsewhere runs or frames it, nothing
/// is cached.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(header::HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    Ok(res)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

fn html(status: actix_web::http::StatusCode, page: impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body),
        Err(e) => {
            tracing::error!(error = %e, "console page failed to render");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The session the request's cookie names, while it lives.
async fn session(console: &Console, req: &HttpRequest) -> Option<(String, Session)> {
    let id = req.cookie(COOKIE)?.value().to_string();
    let sessions = console.sessions.clone();
    let lookup = id.clone();
    match web::block(move || sessions.find(&lookup)).await {
        Ok(Ok(Some(s))) => Some((id, s)),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::logging::chain(&e), "console session look-up failed");
            None
        }
        _ => None,
    }
}

/// A POST from another site (a browser always sends `Origin` on POST) is refused.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = req.connection_info().host().to_string();
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host.as_str())
}

fn forbidden(why: &str) -> HttpResponse {
    HttpResponse::Forbidden().content_type("text/plain; charset=utf-8").body(why.to_string())
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home<'a> {
    operator: &'a str,
    csrf: &'a str,
}

async fn home(console: web::Data<Arc<Console>>, req: HttpRequest) -> HttpResponse {
    match session(&console, &req).await {
        Some((_, s)) => html(actix_web::http::StatusCode::OK, Home { operator: &s.operator, csrf: &s.csrf_token }),
        None => see_other("/console/sign-in"),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    name: &'a str,
    problem: Option<&'a str>,
}

async fn sign_in_page() -> HttpResponse {
    html(actix_web::http::StatusCode::OK, SignInPage { name: "", problem: None })
}

#[derive(Deserialize)]
struct SignInForm {
    name: String,
    password: String,
    code: String,
}

/// What a refused sign-in says, whichever part was wrong.
const REFUSED: &str = "The name, password or code is not right.";

async fn sign_in(console: web::Data<Arc<Console>>, req: HttpRequest, form: web::Form<SignInForm>) -> HttpResponse {
    if !same_origin(&req) {
        return forbidden("cross-site request refused");
    }
    let form = form.into_inner();
    let c = console.get_ref().clone();
    let name = form.name.clone();
    let answer = web::block(move || {
        let answer = c.operators.sign_in(&form.name, &form.password, &form.code)?;
        match answer {
            SignIn::Accepted(op) => c.sessions.start(&op.name).map(|(id, _)| Ok(id)),
            other => Ok(Err(other)),
        }
    })
    .await;
    match answer {
        Ok(Ok(Ok(id))) => {
            // `Secure`: browsers keep it on https, and on http://localhost for trying it out.
            let cookie = Cookie::build(COOKIE, id.expose().to_string())
                .path("/console")
                .http_only(true)
                .secure(true)
                .same_site(SameSite::Strict)
                .finish();
            let mut res = see_other("/console");
            let _ = res.add_cookie(&cookie);
            res
        }
        Ok(Ok(Err(SignIn::LockedOut { retry_after_secs }))) => {
            let problem = format!("Too many wrong sign-ins: try again in {} minutes.", retry_after_secs.div_ceil(60));
            let mut res =
                html(actix_web::http::StatusCode::TOO_MANY_REQUESTS, SignInPage { name: &name, problem: Some(&problem) });
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            res
        }
        Ok(Ok(Err(_))) => html(actix_web::http::StatusCode::UNAUTHORIZED, SignInPage { name: &name, problem: Some(REFUSED) }),
        Ok(Err(e)) => {
            tracing::error!(error = %crate::logging::chain(&e), "console sign-in failed");
            html(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                SignInPage { name: &name, problem: Some("The console cannot sign anyone in right now; try again shortly.") },
            )
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_out(console: web::Data<Arc<Console>>, req: HttpRequest, form: web::Form<CsrfForm>) -> HttpResponse {
    let Some((id, s)) = session(&console, &req).await else { return see_other("/console/sign-in") };
    if !same_origin(&req) || !csrf_matches(form.csrf.as_deref(), &s.csrf_token) {
        return forbidden("the form's CSRF token is missing or not this session's");
    }
    let sessions = console.sessions.clone();
    let _ = web::block(move || sessions.end(&id)).await;
    let mut res = see_other("/console/sign-in");
    let mut gone = Cookie::build(COOKIE, "").path("/console").finish();
    gone.make_removal();
    let _ = res.add_cookie(&gone);
    res
}

/// Compared in constant time: the token is a secret.
fn csrf_matches(sent: Option<&str>, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
}
