//! `/api/v1/users/{id}/mfa…`: enrolment and verification for login front ends (scope `mfa`),
//! and the single-user reset for admins (scope `admin`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::api_io::{blocking, read_object, read_optional_object, require, string_field, ApiError, ApiErrorBody};
use super::AppState;
use crate::domain::audit::Origin;
use crate::domain::mfa::{Reason, Verification};
use crate::domain::tokens::Scope;
use crate::scim::resource::datetime;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/{id}/mfa", web::get().to(status))
        .route("/users/{id}/mfa/totp", web::post().to(start_enrolment))
        .route("/users/{id}/mfa/totp/confirm", web::post().to(confirm))
        .route("/users/{id}/mfa/verify", web::post().to(verify))
        .route("/users/{id}/mfa/backup-codes", web::post().to(backup_codes))
        .route("/users/{id}/mfa/reset", web::post().to(reset))
        .route("/users/{id}/mfa/enrolment-links", web::post().to(enrolment_link));
}

type Reply = Result<HttpResponse, ApiError>;

/// A user's second factor.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MfaStatus {
    /// `none` (never enrolled), `pending` (must enrol at the next login) or `enrolled` (holds a
    /// factor).
    #[schema(pattern = "^(none|pending|enrolled)$")]
    status: &'static str,
    #[schema(format = DateTime)]
    enrolled_at: Option<String>,
    #[schema(format = DateTime)]
    last_reset_at: Option<String>,
    #[schema(minimum = 0)]
    backup_codes_remaining: usize,
    /// The factors the user holds: the authenticator app, then the security keys and passkeys.
    factors: Vec<super::webauthn_api::Factor>,
}

/// A started enrolment: the secret for the authenticator app, shown once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    /// Base32.
    secret: String,
    /// `otpauth://totp/…`
    otpauth_uri: String,
    /// The QR code of `otpauthUri`, as a `data:image/png;base64,…` URL.
    qr_png: String,
}

/// `{"code": "123456"}`: a TOTP code, or a backup code (`XXXXX-XXXXX`).
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body `code()` reads
pub(crate) struct CodeRequest {
    #[schema(min_length = 1, max_length = 64)]
    code: String,
}

/// Ten backup codes, shown once: each works once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCodes {
    backup_codes: Vec<String>,
}

/// A code that was accepted.
#[derive(Serialize, ToSchema)]
pub(crate) struct Verified {
    #[schema(pattern = "^true$")]
    valid: bool,
    /// `totp` or `backup_code`.
    #[schema(pattern = "^(totp|backup_code)$")]
    method: &'static str,
}

/// A wrong code (401), or too many of them (429, with `error` and `detail`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Refused {
    #[schema(pattern = "^false$")]
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

/// `{"reason": "lost phone"}`: why, for the audit trail.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body `reset` reads
pub(crate) struct ResetRequest {
    /// Trimmed, not empty.
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// A reset factor: the user enrols again at the next login.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetDone {
    id: String,
    #[schema(pattern = "^pending$")]
    status: &'static str,
    #[schema(format = DateTime)]
    reset_at: String,
}

fn time(t: Option<chrono::NaiveDateTime>) -> Option<String> {
    t.map(|t| datetime(&t.and_utc()))
}

/// A `{"code": "…"}` body.
async fn code(state: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<String, ApiError> {
    let body = read_object(state, req, payload).await?;
    let code = string_field(&body, "code")?.ok_or_else(|| ApiError::bad_request("code is required"))?;
    if code.len() > 64 {
        return Err(ApiError::bad_request("code is too long"));
    }
    Ok(code.to_string())
}

/// The factor's state: what a login front end asks after the password step.
#[utoipa::path(get, path = "/api/v1/users/{id}/mfa", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    responses(
        (status = 200, description = "The factor's state (scope mfa or admin)", body = MfaStatus),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub(crate) async fn status(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Mfa, Scope::Admin], Origin::Api)?;
    let mfa = state.mfa.clone();
    let s = blocking(move || mfa.status(&id)).await?;
    Ok(HttpResponse::Ok().json(MfaStatus {
        status: s.status.as_str(),
        enrolled_at: time(s.enrolled_at),
        last_reset_at: time(s.last_reset_at),
        backup_codes_remaining: s.backup_codes_remaining,
        factors: s.factors.into_iter().map(Into::into).collect(),
    }))
}

/// Starts an enrolment: a new secret, active once confirmed.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/totp", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    responses(
        (status = 201, description = "The secret and its QR code, shown once (scope mfa)", body = Enrolment),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user has a confirmed factor: reset it first", body = ApiErrorBody),
    ))]
pub async fn start_enrolment(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Mfa], Origin::Api)?;
    let mfa = state.mfa.clone();
    let e = blocking(move || mfa.start_enrolment(&id)).await?;
    Ok(shown_once(HttpResponse::Created(), Enrolment { secret: e.secret_base32, otpauth_uri: e.otpauth_uri, qr_png: e.qr_png }))
}

/// Confirms an enrolment with the first code from the app.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/totp/confirm", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = CodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The factor is active; the backup codes are shown once (scope mfa)", body = BackupCodes),
        (status = 400, description = "A wrong code, or a malformed body", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "No enrolment in progress, or it changed meanwhile", body = ApiErrorBody),
    ))]
pub async fn confirm(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let code = code(&state, &req, payload).await?;
    let mfa = state.mfa.clone();
    let codes = blocking(move || mfa.confirm(&id, &code, &actor)).await?;
    Ok(shown_once(HttpResponse::Ok(), BackupCodes { backup_codes: codes.0 }))
}

/// Checks a code at login.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/verify", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = CodeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The code is right (scope mfa)", body = Verified),
        (status = 401, description = "A wrong code (`valid: false`), or no valid bearer token", body = inline(VerifyUnauthorized)),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user has no confirmed factor", body = ApiErrorBody),
        (status = 429, description = "Too many wrong codes: wait Retry-After seconds", body = Refused,
            headers(("Retry-After" = u64, description = "seconds until codes are checked again"))),
    ))]
pub async fn verify(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let code = code(&state, &req, payload).await?;
    let mfa = state.mfa.clone();
    Ok(match blocking(move || mfa.verify(&id, &code, &actor)).await? {
        Verification::Valid(method) => HttpResponse::Ok().json(Verified { valid: true, method: method.as_str() }),
        Verification::Invalid => HttpResponse::Unauthorized().json(Refused { valid: false, error: None, detail: None }),
        Verification::LockedOut { retry_after_secs } => HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, retry_after_secs.to_string()))
            .json(Refused { valid: false, error: Some("locked_out"), detail: Some("too many wrong codes; try again later") }),
    })
}

/// A 401 of `verify`: a wrong code, or the token check's error.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only
pub(crate) enum VerifyUnauthorized {
    WrongCode(Refused),
    NoToken(ApiErrorBody),
}

/// Issues a new set of backup codes; the old set stops working.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/backup-codes", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    responses(
        (status = 200, description = "The new codes, shown once (scope mfa)", body = BackupCodes),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user has no confirmed factor", body = ApiErrorBody),
    ))]
pub(crate) async fn backup_codes(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let mfa = state.mfa.clone();
    let codes = blocking(move || mfa.regenerate_backup_codes(&id, &actor)).await?;
    Ok(shown_once(HttpResponse::Ok(), BackupCodes { backup_codes: codes.0 }))
}

/// Resets the factor (audited): the user enrols again at the next login.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/reset", tag = "admin",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = ResetRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Reset (scope admin)", body = ResetDone),
        (status = 400, description = "No reason, or a malformed body", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
    ))]
pub(crate) async fn reset(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Admin], Origin::Api)?;
    let body = read_object(&state, &req, payload).await?;
    let reason = Reason::parse(string_field(&body, "reason")?)?;
    let mfa = state.mfa.clone();
    let done = blocking(move || mfa.reset(&id, &actor, &reason)).await?;
    Ok(HttpResponse::Ok().json(ResetDone { id: done.id, status: "pending", reset_at: datetime(&done.reset_at.and_utc()) }))
}

/// `{"ttl": 3600, "send": true}`: every member optional.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body `enrolment_link` reads
pub(crate) struct EnrolmentLinkRequest {
    /// Seconds the link works (default `mfa.enrolment_link_ttl`, 72 h).
    #[schema(minimum = 60, maximum = 2592000)]
    ttl: Option<u64>,
    /// Also send the link to the user's primary (else work) email; needs `[smtp]`.
    send: Option<bool>,
}

/// A one-time enrolment link, shown once: the user opens it to enrol again.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnrolmentLink {
    /// `{server.public_url}/enrol/{token}`
    url: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// With `"send": true`: what became of the email (the link works either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<EmailOutcome>,
}

/// An email with a link: `sent`, `failed` (`detail` says why) or `no_address`.
#[derive(Serialize, ToSchema)]
pub(crate) struct EmailOutcome {
    #[schema(pattern = "^(sent|failed|no_address)$")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Creates a one-time link to the enrolment page for a user who must enrol (`none` or
/// `pending`); the user's older link stops working.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/enrolment-links", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = EnrolmentLinkRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The link, shown once (scope mfa or admin)", body = EnrolmentLink),
        (status = 400, description = "A ttl out of bounds, or a malformed body", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user is enrolled (reset first) or deactivated, server.public_url is not set, \
            or send without an [smtp] section", body = ApiErrorBody),
    ))]
pub(crate) async fn enrolment_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    let actor = require(&req, &[Scope::Mfa, Scope::Admin], Origin::Api)?;
    let body = read_optional_object(&state, &req, payload).await?;
    let ttl = match body.get("ttl") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(std::time::Duration::from_secs(
            v.as_u64().ok_or_else(|| ApiError::bad_request("ttl must be a whole number of seconds"))?,
        )),
    };
    let send = match body.get("send") {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| ApiError::bad_request("send must be true or false"))?,
    };
    let links = state.links.clone();
    let (link, delivery) = blocking(move || {
        if send {
            links.check_mail_ready()?;
        }
        let link = links.create(&id, ttl, &actor)?;
        // After the commit: a send that fails leaves the link as it is.
        let delivery = match send {
            true => links.send(std::slice::from_ref(&link), &actor)?.pop(),
            false => None,
        };
        Ok::<_, crate::domain::Error>((link, delivery))
    })
    .await?;
    let email = delivery.map(|d| EmailOutcome { status: d.as_str(), to: d.to().map(str::to_string), detail: d.problem() });
    Ok(shown_once(
        HttpResponse::Created(),
        EnrolmentLink { url: link.url.expose().to_string(), expires_at: datetime(&link.expires_at.and_utc()), email },
    ))
}

/// A secret shown once (a TOTP secret, backup codes): no cache may keep the answer.
fn shown_once(mut response: actix_web::HttpResponseBuilder, body: impl Serialize) -> HttpResponse {
    response.insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}
