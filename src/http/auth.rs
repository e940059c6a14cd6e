//! Bearer-token authentication with scopes.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};

use super::api_io::ApiError;
use super::scim_io::{blocking, scim_error_response};
use super::AppState;
use crate::domain::tokens::{Principal, Scope};
use crate::scim::error::ScimError;

/// `/scim/v2`: a token with scope `scim`; errors as SCIM error documents.
pub(crate) async fn scim_scope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    authenticated(req, next, Some(Scope::Scim), scim_error_response).await
}

/// `/api/v1`: any valid token (each handler checks its scope); errors as JSON.
pub(crate) async fn api_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    authenticated(req, next, None, |e| ApiError::from(e.clone()).error_response()).await
}

async fn authenticated(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    scope: Option<Scope>,
    render: fn(&ScimError) -> HttpResponse,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match authorize(&req, scope).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(refusal) => {
            let mut resp = render(&refusal.error);
            if let Some(challenge) = refusal.challenge {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(challenge));
            }
            Ok(req.into_response(resp))
        }
    }
}

/// Why a request was not let through, and the `WWW-Authenticate` challenge of a 401.
struct Refusal {
    error: ScimError,
    challenge: Option<&'static str>,
}

impl Refusal {
    /// No bearer token at all: the challenge carries no error code (RFC 6750 §3.1).
    fn missing() -> Self {
        Refusal { error: ScimError::new(401, None, "missing bearer token"), challenge: Some(r#"Bearer realm="provisiond""#) }
    }

    /// A token that is unknown, revoked or malformed: `error="invalid_token"` (RFC 6750 §3.1).
    fn invalid() -> Self {
        Refusal {
            error: ScimError::new(401, None, "invalid bearer token"),
            challenge: Some(r#"Bearer realm="provisiond", error="invalid_token""#),
        }
    }
}

impl From<ScimError> for Refusal {
    fn from(error: ScimError) -> Self {
        Refusal { error, challenge: None }
    }
}

/// The caller's principal if its bearer token is valid (and carries `scope`, when given).
async fn authorize(req: &ServiceRequest, scope: Option<Scope>) -> Result<Principal, Refusal> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, token)| token.trim().to_string())
        .ok_or_else(Refusal::missing)?;
    let state = req.app_data::<web::Data<AppState>>().expect("app state").clone();
    let principal = match state.tokens.recently_authenticated(&presented) {
        Some(p) => p,
        None => blocking(move || state.tokens.authenticate(&presented)).await?.ok_or_else(Refusal::invalid)?,
    };
    if let Some(scope) = scope.filter(|s| !principal.has(*s)) {
        return Err(ScimError::new(403, None, format!("token lacks the {} scope", scope.as_str())).into());
    }
    Ok(principal)
}

/// Who calls (for audit actors).
pub(crate) fn principal(req: &actix_web::HttpRequest) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}
