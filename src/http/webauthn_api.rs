//! `/api/v1/users/{id}/mfa/webauthn/…`: security keys and passkeys for login front ends (scope
//! `mfa`). A ceremony's start answers with the standard options a page hands to
//! `navigator.credentials` (`publicKey`, base64url for binary values, as
//! `PublicKeyCredential.parseCreationOptionsFromJSON()` reads them) and a `ceremonyId`; its
//! finish takes that id and the credential as the browser's `toJSON()` gives it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::api_io::{blocking, read_object, require, string_field, ApiError, ApiErrorBody};
use super::AppState;
use crate::domain::audit::Origin;
use crate::domain::mfa::webauthn::{Assertion, FactorInfo, Started};
use crate::domain::mfa::Mfa;
use crate::domain::tokens::Scope;
use crate::scim::resource::datetime;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // The fixed paths before `{credentialId}`.
    cfg.route("/users/{id}/mfa/webauthn/registration", web::post().to(start_registration))
        .route("/users/{id}/mfa/webauthn/registration/finish", web::post().to(finish_registration))
        .route("/users/{id}/mfa/webauthn/authentication", web::post().to(start_authentication))
        .route("/users/{id}/mfa/webauthn/authentication/finish", web::post().to(finish_authentication))
        .route("/users/{id}/mfa/webauthn/{credentialId}", web::delete().to(remove));
}

type Reply = Result<HttpResponse, ApiError>;

/// A started ceremony.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ceremony {
    /// Give it back to the finish; it works once, for 5 minutes.
    ceremony_id: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// `PublicKeyCredentialCreationOptions` (registration) or `PublicKeyCredentialRequestOptions`
    /// (authentication) in their JSON form.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    public_key: Value,
}

fn ceremony<T: Serialize>(started: Started<T>) -> Result<Ceremony, ApiError> {
    // webauthn-rs wraps the options in `{"publicKey": …}`, as `navigator.credentials` takes them.
    let mut options = serde_json::to_value(&started.options).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let public_key = options.get_mut("publicKey").map(Value::take).unwrap_or(options);
    Ok(Ceremony { ceremony_id: started.ceremony_id, expires_at: datetime(&started.expires_at.and_utc()), public_key })
}

/// One of a user's factors (never key material).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Factor {
    /// `totp` (the authenticator app) or `webauthn` (a security key or passkey).
    #[schema(pattern = "^(totp|webauthn)$")]
    #[serde(rename = "type")]
    kind: &'static str,
    /// A WebAuthn credential's id (base64url): what `DELETE …/mfa/webauthn/{credentialId}` takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    /// The authenticator's model id, as it reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    aaguid: Option<String>,
    /// The model's name, for models the daemon knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'static str>,
    #[schema(format = DateTime)]
    created: String,
    #[schema(format = DateTime)]
    last_used: Option<String>,
}

impl From<FactorInfo> for Factor {
    fn from(f: FactorInfo) -> Self {
        Factor {
            kind: f.kind,
            id: f.id,
            name: f.name,
            aaguid: f.aaguid,
            model: f.model,
            created: datetime(&f.created.and_utc()),
            last_used: f.last_used.map(|t| datetime(&t.and_utc())),
        }
    }
}

/// `{"ceremonyId", "name", "credential"}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body `finish_registration` reads
pub(crate) struct RegistrationFinish {
    ceremony_id: String,
    /// What the user calls this key: 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as its `toJSON()` gives it.
    #[schema(value_type = Object)]
    credential: Value,
}

/// A registered security key or passkey; with backup codes (shown once) when it is the user's
/// first factor.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Registered {
    factor: Factor,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_codes: Option<Vec<String>>,
}

/// `{"ceremonyId", "credential"}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // documents the body `finish_authentication` reads
pub(crate) struct AuthenticationFinish {
    ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as its `toJSON()` gives it.
    #[schema(value_type = Object)]
    credential: Value,
}

/// The key proved the user.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Verified {
    #[schema(pattern = "^true$")]
    valid: bool,
    #[schema(pattern = "^webauthn$")]
    method: &'static str,
    credential_id: String,
    name: String,
}

/// The response did not prove the key: `refused` (why in `detail`) or `clone_suspected` (its
/// signature counter went back: audited).
#[derive(Serialize, ToSchema)]
pub(crate) struct Refused {
    #[schema(pattern = "^false$")]
    valid: bool,
    #[schema(pattern = "^(refused|clone_suspected)$")]
    error: &'static str,
    detail: String,
}

/// A 401 of `finish_authentication`: a refused response, or the token check's error.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only
pub(crate) enum AssertionUnauthorized {
    Refused(Refused),
    NoToken(ApiErrorBody),
}

fn required<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    string_field(body, key)?.ok_or_else(|| ApiError::bad_request(format!("{key} is required")))
}

/// The `credential` member, as webauthn-rs reads it.
fn credential<T: DeserializeOwned>(body: &mut Value, from: &str) -> Result<T, ApiError> {
    let value = body.get_mut("credential").map(Value::take).ok_or_else(|| ApiError::bad_request("credential is required"))?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!("credential: not a PublicKeyCredential as {from} gives it (its toJSON()): {e}"))
    })
}

/// The ceremony `begin` starts for user `id`: its options, kept by no cache.
async fn start<T: Serialize + Send + 'static>(
    state: &AppState,
    req: &HttpRequest,
    id: String,
    begin: impl FnOnce(&Mfa, &str) -> crate::domain::Result<Started<T>> + Send + 'static,
) -> Reply {
    require(req, &[Scope::Mfa], Origin::Api)?;
    let mfa = state.mfa.clone();
    let started = blocking(move || begin(&mfa, &id)).await?;
    Ok(HttpResponse::Ok().insert_header(no_store()).json(ceremony(started)?))
}

/// Starts registering a security key or passkey.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/webauthn/registration", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    responses(
        (status = 200, description = "The creation options for navigator.credentials.create() (scope mfa)", body = Ceremony),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user holds 10 credentials already, or security keys are not configured", body = ApiErrorBody),
    ))]
pub(crate) async fn start_registration(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    start(&state, &req, id.into_inner(), |mfa, id| mfa.start_registration(id)).await
}

/// Finishes a registration: the key is the user's.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/webauthn/registration/finish", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = RegistrationFinish, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered (scope mfa); backup codes when it is the first factor", body = Registered),
        (status = 400, description = "A refused response (wrong origin, challenge, a model not allowed…), a bad name, \
            or a malformed body", body = ApiErrorBody),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "No such registration waiting (finished already, expired), the key is registered \
            already, or the user holds 10", body = ApiErrorBody),
    ))]
pub(crate) async fn finish_registration(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let mut body = read_object(&state, &req, payload).await?;
    let ceremony_id = required(&body, "ceremonyId")?.to_string();
    let name = required(&body, "name")?.to_string();
    let response = credential(&mut body, "navigator.credentials.create()")?;
    let mfa = state.mfa.clone();
    let done = blocking(move || mfa.finish_registration(&id, &ceremony_id, &name, &response, &actor, |_| Ok(()))).await?;
    let body = Registered { factor: done.factor.into(), backup_codes: done.backup_codes.map(|c| c.0) };
    Ok(HttpResponse::Created().insert_header(no_store()).json(body))
}

/// Starts an authentication with one of the user's security keys or passkeys.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/webauthn/authentication", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    responses(
        (status = 200, description = "The request options for navigator.credentials.get() (scope mfa)", body = Ceremony),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "The user has no security key or passkey, or they are not configured", body = ApiErrorBody),
    ))]
pub(crate) async fn start_authentication(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    start(&state, &req, id.into_inner(), |mfa, id| mfa.start_authentication(id)).await
}

/// Finishes an authentication: whether the key proved the user.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/webauthn/authentication/finish", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id")),
    request_body(content = AuthenticationFinish, content_type = "application/json"),
    responses(
        (status = 200, description = "The key proved the user (scope mfa)", body = Verified),
        (status = 400, description = "A malformed body", body = ApiErrorBody),
        (status = 401, description = "The response was refused (`valid: false`), or no valid bearer token",
            body = inline(AssertionUnauthorized)),
        (status = 404, description = "No such user", body = ApiErrorBody),
        (status = 409, description = "No such authentication waiting (finished already, which refuses a replay, \
            or expired)", body = ApiErrorBody),
    ))]
pub(crate) async fn finish_authentication(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    let actor = require(&req, &[Scope::Mfa], Origin::Api)?;
    let mut body = read_object(&state, &req, payload).await?;
    let ceremony_id = required(&body, "ceremonyId")?.to_string();
    let response = credential(&mut body, "navigator.credentials.get()")?;
    let mfa = state.mfa.clone();
    Ok(match blocking(move || mfa.finish_authentication(&id, &ceremony_id, &response, &actor)).await? {
        Assertion::Valid { credential_id, name } => {
            HttpResponse::Ok().json(Verified { valid: true, method: "webauthn", credential_id, name })
        }
        Assertion::Refused(detail) => HttpResponse::Unauthorized().json(Refused { valid: false, error: "refused", detail }),
        Assertion::CloneSuspected { .. } => HttpResponse::Unauthorized().json(Refused {
            valid: false,
            error: "clone_suspected",
            detail: "the key's signature counter went back: another copy of it may be in use (audited)".into(),
        }),
    })
}

/// Removes one security key or passkey (audited). The user's last factor removed, they enrol
/// again at the next login.
#[utoipa::path(delete, path = "/api/v1/users/{id}/mfa/webauthn/{credentialId}", tag = "mfa",
    params(("id" = String, Path, description = "SCIM user id"), ("credentialId" = String, Path, description = "The credential's id (base64url)")),
    responses(
        (status = 204, description = "Removed (scope mfa or admin)"),
        (status = 404, description = "No such user, or the user has no such credential", body = ApiErrorBody),
    ))]
pub(crate) async fn remove(state: web::Data<AppState>, req: HttpRequest, path: web::Path<(String, String)>) -> Reply {
    let actor = require(&req, &[Scope::Mfa, Scope::Admin], Origin::Api)?;
    let (id, credential_id) = path.into_inner();
    let mfa = state.mfa.clone();
    blocking(move || mfa.remove_credential(&id, &credential_id, &actor)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A challenge is not to be kept by any cache.
fn no_store() -> (actix_web::http::header::HeaderName, &'static str) {
    (actix_web::http::header::CACHE_CONTROL, "no-store")
}
