//! `/api/v1/users/{id}/mfa…`: enrolment and verification for login front ends (scope `mfa`),
//! and the single-user reset for admins (scope `admin`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::api_io::{blocking, read_object, require, string_field, ApiError};
use super::AppState;
use crate::domain::audit::Origin;
use crate::domain::tokens::Scope;
use crate::mfa::{Reason, Verification};
use crate::scim::resource::datetime;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/{id}/mfa", web::get().to(status))
        .route("/users/{id}/mfa/totp", web::post().to(start_enrolment))
        .route("/users/{id}/mfa/totp/confirm", web::post().to(confirm))
        .route("/users/{id}/mfa/verify", web::post().to(verify))
        .route("/users/{id}/mfa/backup-codes", web::post().to(backup_codes))
        .route("/users/{id}/mfa/reset", web::post().to(reset));
}

type Reply = Result<HttpResponse, ApiError>;

fn time(t: Option<chrono::NaiveDateTime>) -> serde_json::Value {
    t.map(|t| json!(datetime(&t.and_utc()))).unwrap_or(serde_json::Value::Null)
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

async fn status(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Mfa, Scope::Admin], Origin::Api)?;
    let mfa = state.mfa.clone();
    let s = blocking(move || mfa.status(&id)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": s.status,
        "enrolledAt": time(s.enrolled_at),
        "lastResetAt": time(s.last_reset_at),
        "backupCodesRemaining": s.backup_codes_remaining,
    })))
}

async fn start_enrolment(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    require(&req, &[Scope::Mfa], Origin::Api)?;
    let mfa = state.mfa.clone();
    let e = blocking(move || mfa.start_enrolment(&id)).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"secret": e.secret_base32, "otpauthUri": e.otpauth_uri, "qrPng": e.qr_png})))
}

async fn confirm(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let code = code(&state, &req, payload).await?;
    let mfa = state.mfa.clone();
    let codes = blocking(move || mfa.confirm(&id, &code, &actor)).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({"backupCodes": codes.0})))
}

async fn verify(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let code = code(&state, &req, payload).await?;
    let mfa = state.mfa.clone();
    Ok(match blocking(move || mfa.verify(&id, &code, &actor)).await? {
        Verification::Valid(method) => HttpResponse::Ok().json(json!({"valid": true, "method": method.as_str()})),
        Verification::Invalid => HttpResponse::Unauthorized().json(json!({"valid": false})),
        Verification::LockedOut { retry_after_secs } => HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, retry_after_secs.to_string()))
            .json(json!({"valid": false, "error": "locked_out", "detail": "too many wrong codes; try again later"})),
    })
}

async fn backup_codes(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let mfa = state.mfa.clone();
    let codes = blocking(move || mfa.regenerate_backup_codes(&id, &actor)).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({"backupCodes": codes.0})))
}

async fn reset(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let actor = require(&req, &[Scope::Admin], Origin::Api)?;
    let body = read_object(&state, &req, payload).await?;
    let reason = Reason::parse(string_field(&body, "reason")?)?;
    let mfa = state.mfa.clone();
    let done = blocking(move || mfa.reset(&id, &actor, &reason)).await?;
    Ok(HttpResponse::Ok().json(json!({"id": done.id, "status": "pending", "resetAt": datetime(&done.reset_at.and_utc())})))
}
