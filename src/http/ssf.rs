//! The Shared Signals transmitter (SSF 1.0): its public documents (§7: the configuration
//! metadata at `/.well-known/ssf-configuration`, its signing keys at `jwks_uri`), the stream
//! management API (§8.1: streams, their status, verification) and poll delivery (RFC 8936).
//! The management API and the poll endpoints take a bearer token with scope `admin` (every
//! stream) or `ssf` (the streams that token created). Not found without `[ssf]`.

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::api_io::{blocking, read_object, read_optional_object, require, string_field, ApiError};
use super::auth::{self, principal};
use super::AppState;
use crate::domain;
use crate::domain::audit::{Actor, Origin};
use crate::domain::streams::{
    poll_path, split_issuer, Audience, Delivery, Requested, SetError, Stream, Verification, MIN_VERIFICATION_INTERVAL, POLL, PUSH,
};
use crate::domain::tokens::{Principal, Scope};
use crate::events::{route, set};

/// Where the public keys are served.
pub const JWKS_PATH: &str = "/ssf/jwks.json";
/// SSF §8.1.1: create, read, update, replace and delete streams.
pub const STREAMS_PATH: &str = "/ssf/streams";
/// SSF §8.1.2: read and set a stream's status.
pub const STATUS_PATH: &str = "/ssf/status";
/// SSF §8.1.4.2: ask for a verification event.
pub const VERIFY_PATH: &str = "/ssf/verify";

/// RFC 8936 §2.2: at most this many SETs in one poll's answer, and as many when it asks for
/// no number.
const MAX_EVENTS: i64 = 1000;
const DEFAULT_EVENTS: i64 = 100;

type Reply = Result<HttpResponse, ApiError>;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // SSF §7.2: the well-known suffix goes between the host and the issuer's path.
    cfg.route("/.well-known/ssf-configuration{path:(/.*)?}", web::get().to(configuration))
        .route(JWKS_PATH, web::get().to(jwks))
        .service(
            web::resource(STREAMS_PATH)
                .wrap(from_fn(auth::api_token))
                .route(web::get().to(read))
                .route(web::post().to(create))
                .route(web::patch().to(update))
                .route(web::put().to(replace))
                .route(web::delete().to(delete)),
        )
        .service(
            web::resource(STATUS_PATH)
                .wrap(from_fn(auth::api_token))
                .route(web::get().to(status))
                .route(web::post().to(set_status)),
        )
        .service(web::resource(VERIFY_PATH).wrap(from_fn(auth::api_token)).route(web::post().to(verify)))
        .service(web::resource(poll_path("{stream_id}")).wrap(from_fn(auth::api_token)).route(web::post().to(poll)));
}

async fn configuration(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(ssf) = &state.config.ssf else { return not_found() };
    let (origin, issuer_path) = split_issuer(&ssf.issuer);
    if path.trim_end_matches('/') != issuer_path {
        return not_found();
    }
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({
        "spec_version": "1_0",
        "issuer": ssf.issuer,
        "jwks_uri": format!("{origin}{JWKS_PATH}"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{origin}{STREAMS_PATH}"),
        "status_endpoint": format!("{origin}{STATUS_PATH}"),
        "verification_endpoint": format!("{origin}{VERIFY_PATH}"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    }))
}

async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    match &state.signing {
        Some(keys) => HttpResponse::Ok().insert_header(("Cache-Control", "max-age=300")).json(keys.jwks()),
        None => not_found(),
    }
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not_found", "detail": "no Shared Signals transmitter is configured ([ssf])"}))
}

/// The caller, with scope `admin` or `ssf` (401 without a token, 403 with neither scope).
fn caller(req: &HttpRequest) -> Result<(Principal, Actor), ApiError> {
    let actor = require(req, &[Scope::Admin, Scope::Ssf], Origin::Api)?;
    let principal = principal(req).ok_or_else(|| ApiError::new(401, "unauthorized", "missing bearer token"))?;
    Ok((principal, actor))
}

/// The stream's configuration as SSF §8.1.1 shows it (never its authorization header).
fn render(state: &AppState, stream: &Stream) -> Value {
    let issuer = state.config.ssf.as_ref().map(|s| s.issuer.as_str()).unwrap_or_default();
    let aud = match (stream.audience_is_array, stream.audience.as_slice()) {
        (false, [one]) => json!(one),
        _ => json!(stream.audience),
    };
    let mut out = json!({
        "stream_id": stream.id,
        "iss": issuer,
        "aud": aud,
        "events_supported": set::SUPPORTED,
        "events_requested": stream.events_requested,
        "events_delivered": stream.events_delivered,
        "delivery": {"method": stream.delivery_method, "endpoint_url": stream.endpoint_url},
        "min_verification_interval": MIN_VERIFICATION_INTERVAL,
        "subject_format": stream.subject_format,
    });
    if let Some(description) = &stream.description {
        out["description"] = json!(description);
    }
    out
}

fn config_reply(status: actix_web::http::StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(body)
}

/// `stream_id` from the query string (required, or optional for the list).
fn query_stream_id(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut id = None;
    for (k, v) in pairs {
        match k.as_str() {
            "stream_id" => id = Some(v),
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    Ok(id)
}

fn required_stream_id(id: Option<String>) -> Result<String, ApiError> {
    id.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request("stream_id is required"))
}

/// The receiver-supplied fields of a configuration body (null counts as left out); the
/// transmitter's own (`iss`, `events_supported`, `events_delivered`, …) are ignored.
fn requested(body: &Value) -> Result<Requested, ApiError> {
    let strings = |name: &str, v: &Value| -> Result<Vec<String>, ApiError> {
        v.as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an array of strings")))
    };
    let audience = match body.get("aud") {
        None | Some(Value::Null) => None,
        Some(Value::String(one)) => Some(Audience::One(one.clone())),
        Some(v @ Value::Array(_)) => Some(Audience::Many(strings("aud", v)?)),
        Some(_) => return Err(ApiError::bad_request("aud must be a string or an array of strings")),
    };
    let events_requested = match body.get("events_requested") {
        None | Some(Value::Null) => None,
        Some(v) => Some(strings("events_requested", v)?),
    };
    let delivery = match body.get("delivery") {
        None | Some(Value::Null) => None,
        Some(d @ Value::Object(_)) => {
            let field = |name: &str| string_field(d, name).map_err(|e| ApiError::bad_request(format!("delivery.{}", e.detail)));
            let method = field("method")?.ok_or_else(|| ApiError::bad_request("delivery.method is required"))?;
            Some(Delivery {
                method: method.to_string(),
                endpoint_url: field("endpoint_url")?.map(str::to_string),
                authorization_header: field("authorization_header")?.map(str::to_string),
            })
        }
        Some(_) => return Err(ApiError::bad_request("delivery must be an object")),
    };
    Ok(Requested {
        audience,
        events_requested,
        delivery,
        description: string_field(body, "description")?.map(str::to_string),
        subject_format: string_field(body, "subject_format")?.map(str::to_string),
    })
}

/// `GET /ssf/streams?stream_id=…`: one stream; without `stream_id`, the caller's streams.
async fn read(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let (who, _) = caller(&req)?;
    let streams = state.streams.clone();
    let body = match query_stream_id(&req)? {
        Some(id) => {
            let stream = blocking(move || streams.get(&who, &id)).await?;
            render(&state, &stream)
        }
        None => {
            let all = blocking(move || streams.list(&who)).await?;
            Value::Array(all.iter().map(|s| render(&state, s)).collect())
        }
    };
    Ok(config_reply(actix_web::http::StatusCode::OK, body))
}

/// `POST /ssf/streams`: 201 with the new stream's configuration.
async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let (who, _) = caller(&req)?;
    let body = read_optional_object(&state, &req, payload).await?;
    let wanted = requested(&body)?;
    let streams = state.streams.clone();
    let stream = blocking(move || streams.create(&who, wanted)).await?;
    Ok(config_reply(actix_web::http::StatusCode::CREATED, render(&state, &stream)))
}

/// The `stream_id` a PATCH or PUT body names.
fn body_stream_id(body: &Value) -> Result<String, ApiError> {
    required_stream_id(string_field(body, "stream_id")?.map(str::to_string))
}

/// `PATCH /ssf/streams`: the fields given change.
async fn update(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let (who, _) = caller(&req)?;
    let body = read_object(&state, &req, payload).await?;
    let (id, wanted) = (body_stream_id(&body)?, requested(&body)?);
    let streams = state.streams.clone();
    let stream = blocking(move || streams.update(&who, &id, wanted)).await?;
    Ok(config_reply(actix_web::http::StatusCode::OK, render(&state, &stream)))
}

/// `PUT /ssf/streams`: the whole configuration; fields left out go back to their defaults.
async fn replace(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let (who, _) = caller(&req)?;
    let body = read_object(&state, &req, payload).await?;
    let (id, wanted) = (body_stream_id(&body)?, requested(&body)?);
    let streams = state.streams.clone();
    let stream = blocking(move || streams.replace(&who, &id, wanted)).await?;
    Ok(config_reply(actix_web::http::StatusCode::OK, render(&state, &stream)))
}

/// `DELETE /ssf/streams?stream_id=…`: 204; the messages still owed to it go with it.
async fn delete(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let (who, _) = caller(&req)?;
    let id = required_stream_id(query_stream_id(&req)?)?;
    let streams = state.streams.clone();
    blocking(move || streams.delete(&who, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn status_body(stream: &Stream) -> Value {
    let mut out = json!({"stream_id": stream.id, "status": stream.status});
    if let Some(reason) = &stream.status_reason {
        out["reason"] = json!(reason);
    }
    out
}

/// `GET /ssf/status?stream_id=…`.
async fn status(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let (who, _) = caller(&req)?;
    let id = required_stream_id(query_stream_id(&req)?)?;
    let streams = state.streams.clone();
    let stream = blocking(move || streams.get(&who, &id)).await?;
    Ok(config_reply(actix_web::http::StatusCode::OK, status_body(&stream)))
}

/// `POST /ssf/status` `{stream_id, status, reason?}`.
async fn set_status(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let (who, _) = caller(&req)?;
    let body = read_object(&state, &req, payload).await?;
    let id = body_stream_id(&body)?;
    let status = string_field(&body, "status")?.ok_or_else(|| ApiError::bad_request("status is required"))?.to_string();
    let reason = string_field(&body, "reason")?.map(str::to_string);
    let streams = state.streams.clone();
    let stream = blocking(move || streams.set_status(&who, &id, &status, reason)).await?;
    Ok(config_reply(actix_web::http::StatusCode::OK, status_body(&stream)))
}

/// `POST /ssf/verify` `{stream_id, state?}`: 204, the verification event follows by the
/// stream's delivery; 429 with `Retry-After` when asked again within the stream's
/// `min_verification_interval`.
async fn verify(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let (who, actor) = caller(&req)?;
    let body = read_object(&state, &req, payload).await?;
    let id = body_stream_id(&body)?;
    let verification_state = string_field(&body, "state")?.map(str::to_string);
    let streams = state.streams.clone();
    match blocking(move || streams.verify(&who, &id, verification_state.as_deref(), &actor)).await? {
        Verification::Requested => Ok(HttpResponse::NoContent().finish()),
        Verification::TooSoon { retry_after } => {
            let error = ApiError::new(
                429,
                "too_many_requests",
                format!("a verification was asked for less than {MIN_VERIFICATION_INTERVAL} s ago; try again in {retry_after} s"),
            );
            let mut resp = actix_web::ResponseError::error_response(&error);
            resp.headers_mut().insert(actix_web::http::header::RETRY_AFTER, retry_after.into());
            Ok(resp)
        }
    }
}

/// What a poll request asks (RFC 8936 §2.2).
struct PollRequest {
    max_events: i64,
    acks: Vec<String>,
    errors: Vec<SetError>,
}

fn poll_request(body: &Value) -> Result<PollRequest, ApiError> {
    let max_events = match body.get("maxEvents") {
        None | Some(Value::Null) => DEFAULT_EVENTS,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => n.min(MAX_EVENTS),
            _ => return Err(ApiError::bad_request("maxEvents must be a whole number, 0 or more")),
        },
    };
    match body.get("returnImmediately") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => return Err(ApiError::bad_request("returnImmediately must be true or false")),
    }
    let acks = match body.get("ack") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| ApiError::bad_request("ack must be an array of jti strings"))?,
    };
    let errors = match body.get("setErrs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(errs)) => errs
            .iter()
            .map(|(jti, e)| {
                let err = e.get("err").and_then(Value::as_str);
                let description = e.get("description").and_then(Value::as_str);
                match err {
                    Some(err) => {
                        Ok(SetError { jti: jti.clone(), err: err.to_string(), description: description.map(str::to_string) })
                    }
                    None => Err(ApiError::bad_request(format!("setErrs.{jti} must be an object with an err string"))),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("setErrs must be an object of jti: {err, description}")),
    };
    Ok(PollRequest { max_events, acks, errors })
}

/// A poll's SETs by `jti`, and whether more wait.
type Signed = (Map<String, Value>, bool);

/// `POST /ssf/poll/{stream_id}` (RFC 8936): acknowledges the `ack`ed SETs, drops those in
/// `setErrs`, and answers at once (no long polling, whatever `returnImmediately` says) with
/// up to `maxEvents` SETs the stream is owed and whether more wait.
async fn poll(state: web::Data<AppState>, req: HttpRequest, path: web::Path<String>, payload: web::Payload) -> Reply {
    let (who, _) = caller(&req)?;
    let body = read_optional_object(&state, &req, payload).await?;
    let asked = poll_request(&body)?;
    let id = path.into_inner();
    let streams = state.streams.clone();
    let keys = state.signing.clone();
    let issuer = state.config.ssf.as_ref().map(|s| s.issuer.clone());
    // The database's answer, then the signatures (both off the async workers).
    let (sets, more) = blocking(move || -> Result<Result<Signed, ApiError>, domain::Error> {
        let polled = streams.poll(&who, &id, &asked.acks, &asked.errors, asked.max_events)?;
        let (Some(keys), Some(issuer)) = (keys, issuer) else {
            return Ok(Err(ApiError::new(404, "not_found", "no Shared Signals transmitter is configured ([ssf])")));
        };
        let now = chrono::Utc::now();
        let mut sets = Map::new();
        for owed in &polled.owed {
            match route::set_for(&keys, &issuer, &polled.stream, owed, now) {
                Ok(token) => sets.insert(owed.jti.clone(), Value::String(token)),
                Err(e) => {
                    tracing::error!(stream = %polled.stream.id, jti = %owed.jti, error = %e, "cannot sign a SET");
                    return Ok(Err(ApiError::new(500, "internal", "a SET could not be signed; see the server log")));
                }
            };
        }
        Ok(Ok((sets, polled.more)))
    })
    .await??;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({"sets": sets, "moreAvailable": more})))
}
