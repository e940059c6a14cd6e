//! The page a user's one-time enrolment link opens (`/enrol/{token}`): the QR code and the
//! secret of their new factor, a code to confirm it, or a security key or passkey to add
//! instead, and then their backup codes, shown once. No session: the link's token is the only
//! credential, and every dead link looks the same.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use serde::Deserialize;

use super::page::{page_with, Nav};
use super::{qr, Console};
use crate::domain::mfa::links::{Confirmed, KeyAdded};
use crate::domain::mfa::BackupCodes;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/{token}", web::get().to(show))
        .route("/{token}", web::post().to(confirm))
        .route("/{token}/webauthn/options", web::post().to(webauthn_options))
        .route("/{token}/webauthn", web::post().to(add_key));
}

#[derive(Template, WebTemplate)]
#[template(path = "enrol.html")]
struct EnrolPage<'a> {
    nav: Nav,
    issuer: &'a str,
    account: &'a str,
    qr_svg: &'a str,
    secret: &'a str,
    otpauth_uri: &'a str,
    problem: Option<&'a str>,
    /// Security keys and passkeys are configured: the page offers them.
    webauthn: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "enrol_done.html")]
struct EnrolDone<'a> {
    nav: Nav,
    issuer: &'a str,
    /// What was set up: "authenticator app" or "security key".
    factor: &'a str,
    codes: &'a [String],
    /// The codes as a text file, in a `data:` address: the download needs neither a script
    /// nor a second request (the codes are not kept anywhere to fetch them from).
    download_href: &'a str,
    download_name: &'a str,
}

#[derive(Template, WebTemplate)]
#[template(path = "enrol_gone.html")]
struct Gone {
    nav: Nav,
}

/// One answer for a link unknown, expired, replaced or used: nothing tells them apart, or
/// says whether the user exists.
fn gone(req: &HttpRequest) -> HttpResponse {
    page_with(req, StatusCode::GONE, Gone { nav: Nav::none() })
}

fn unavailable(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "enrolment page failed");
    HttpResponse::ServiceUnavailable()
        .content_type("text/plain; charset=utf-8")
        .body("The enrolment page cannot be shown right now; try again in a minute.")
}

async fn show(console: web::Data<Arc<Console>>, req: HttpRequest, token: web::Path<String>) -> HttpResponse {
    enrol_form(&console, &req, token.into_inner(), StatusCode::OK, None).await
}

/// The enrolment form with the secret waiting for this link; a lockout in force is said.
async fn enrol_form(
    console: &Console,
    req: &HttpRequest,
    token: String,
    status: StatusCode,
    problem: Option<String>,
) -> HttpResponse {
    let links = console.services.links.clone();
    let page = match web::block(move || links.open(&token)).await {
        Ok(Ok(Some(page))) => page,
        Ok(Ok(None)) => return gone(req),
        Ok(Err(e)) => return unavailable(crate::logging::chain(&e)),
        Err(e) => return unavailable(e),
    };
    let (status, problem) = match (problem, page.locked_for) {
        (None, Some(secs)) => (status, Some(locked(secs))),
        (problem, _) => (status, problem),
    };
    let qr_svg = qr::svg(&page.enrolment.otpauth_uri).unwrap_or_default();
    page_with(
        req,
        status,
        EnrolPage {
            nav: Nav::none(),
            issuer: &page.issuer,
            account: &page.account,
            qr_svg: &qr_svg,
            secret: &page.enrolment.secret_base32,
            otpauth_uri: &page.enrolment.otpauth_uri,
            problem: problem.as_deref(),
            webauthn: console.services.links.offers_webauthn(),
        },
    )
}

/// The page after enrolment: what was set up, and the backup codes, shown once.
fn done(console: &Console, req: &HttpRequest, factor: &str, codes: &BackupCodes) -> HttpResponse {
    let issuer = &console.config.mfa.issuer;
    let text = format!(
        "Backup codes for {issuer}\n\nEach code signs you in once. Keep them somewhere safe.\n\n{}\n",
        codes.0.join("\n")
    );
    let href = format!("data:text/plain;charset=utf-8,{}", crate::config::percent_encode(&text));
    page_with(
        req,
        StatusCode::OK,
        EnrolDone { nav: Nav::none(), issuer, factor, codes: &codes.0, download_href: &href, download_name: "backup-codes.txt" },
    )
}

fn locked(secs: u64) -> String {
    let minutes = secs.div_ceil(60);
    format!("Too many wrong codes: try again in {minutes} minute{}.", if minutes == 1 { "" } else { "s" })
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

async fn confirm(
    console: web::Data<Arc<Console>>,
    req: HttpRequest,
    token: web::Path<String>,
    form: web::Form<CodeForm>,
) -> HttpResponse {
    let token = token.into_inner();
    let code: String = form.into_inner().code.chars().filter(|c| !c.is_whitespace()).take(64).collect();
    let (links, link) = (console.services.links.clone(), token.clone());
    let request_id = crate::logging::RequestId::of(&req);
    let answer = match web::block(move || links.confirm(&link, &code, request_id)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return unavailable(crate::logging::chain(&e)),
        Err(e) => return unavailable(e),
    };
    match answer {
        Confirmed::Enrolled(codes) => done(&console, &req, "authenticator app", &codes),
        Confirmed::WrongCode => {
            let problem = "That code is not right. Enter the code the app shows now for this account.";
            enrol_form(&console, &req, token, StatusCode::BAD_REQUEST, Some(problem.into())).await
        }
        Confirmed::LockedOut { retry_after_secs } => {
            let mut res = enrol_form(&console, &req, token, StatusCode::TOO_MANY_REQUESTS, Some(locked(retry_after_secs))).await;
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
            }
            res
        }
        Confirmed::Dead => gone(&req),
    }
}

/// The options for `navigator.credentials.create()`, fetched by the page's script when the
/// user chooses "Add a security key or passkey"; 410 for a dead link.
async fn webauthn_options(console: web::Data<Arc<Console>>, req: HttpRequest, token: web::Path<String>) -> HttpResponse {
    let links = console.services.links.clone();
    let token = token.into_inner();
    match web::block(move || links.start_webauthn(&token)).await {
        Ok(Ok(Some(started))) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"ceremonyId": started.ceremony_id, "options": started.options})),
        Ok(Ok(None) | Err(crate::domain::Error::NotFound(_))) => gone(&req),
        Ok(Err(e @ (crate::domain::Error::Conflict { .. } | crate::domain::Error::Invalid { .. }))) => {
            HttpResponse::Conflict().json(serde_json::json!({"detail": e.to_string()}))
        }
        Ok(Err(e)) => unavailable(crate::logging::chain(&e)),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    name: String,
    /// The new credential as the browser's `toJSON()` gives it.
    #[serde(default)]
    credential: String,
}

/// The form the page's script sends once the browser made the credential.
async fn add_key(
    console: web::Data<Arc<Console>>,
    req: HttpRequest,
    token: web::Path<String>,
    form: web::Form<KeyForm>,
) -> HttpResponse {
    let token = token.into_inner();
    let form = form.into_inner();
    let response = match serde_json::from_str(&form.credential) {
        Ok(r) => r,
        Err(_) => {
            let problem = "Your browser did not send the security key's answer. Try again, or use the authenticator app.";
            return enrol_form(&console, &req, token, StatusCode::BAD_REQUEST, Some(problem.into())).await;
        }
    };
    let (links, link) = (console.services.links.clone(), token.clone());
    let request_id = crate::logging::RequestId::of(&req);
    let answer = web::block(move || links.finish_webauthn(&link, &form.ceremony, &form.name, &response, request_id)).await;
    match answer {
        Ok(Ok(KeyAdded::Enrolled(codes))) => done(&console, &req, "security key", &codes),
        Ok(Ok(KeyAdded::Refused(why))) => {
            let problem = format!("The security key was not added: {why}.");
            enrol_form(&console, &req, token, StatusCode::BAD_REQUEST, Some(problem)).await
        }
        Ok(Ok(KeyAdded::Dead)) => gone(&req),
        Ok(Err(e)) => unavailable(crate::logging::chain(&e)),
        Err(e) => unavailable(e),
    }
}
