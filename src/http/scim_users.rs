//! `/Users` and `/.search`: SCIM requests translated into calls on `domain::users`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::auth::principal;
use super::request_id::request_id;
use super::scim_io::{base_url, blocking, method_not_allowed, read_json, scim_json};
use super::AppState;
use crate::domain::audit::{Actor, Origin};
use crate::domain::users::StoredUser;
use crate::scim::error::ScimError;
use crate::scim::list::{list_response, ListParams, ListQuery};
use crate::scim::resource::{self, Meta, Projection};
use crate::scim::schema::USER_RESOURCE;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Users")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/Users/.search").route(web::post().to(search)).default_service(web::to(method_not_allowed)))
    .service(web::resource("/.search").route(web::post().to(search)).default_service(web::to(method_not_allowed)))
    .service(
        web::resource("/Users/{id}")
            .route(web::get().to(get))
            .route(web::put().to(replace))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

type Reply = Result<HttpResponse, ScimError>;

fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

fn projection(req: &HttpRequest) -> Projection {
    let p = ListParams::from_query(query_pairs(req));
    Projection::parse(p.attributes.as_deref(), p.excluded_attributes.as_deref())
}

fn if_match(req: &HttpRequest) -> Option<String> {
    req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The rendered resource at its location, projected.
fn render(user: &StoredUser, base: &str, projection: &Projection) -> Value {
    let meta = Meta { created: user.created_at.and_utc(), last_modified: user.updated_at.and_utc(), version: user.version };
    let mfa = crate::domain::users::mfa_view(user);
    let location = format!("{base}/Users/{}", user.id);
    let mut doc = resource::render(&USER_RESOURCE, &user.id, &user.body, mfa.computed(), &meta, &location);
    projection.apply(&USER_RESOURCE, &mut doc);
    doc
}

/// A single-resource response with its `ETag` (and `Location` on 201).
fn single(status: StatusCode, user: &StoredUser, base: &str, projection: &Projection) -> HttpResponse {
    let doc = render(user, base, projection);
    let mut resp = scim_json(status, &doc);
    let etag = format!("W/\"{}\"", user.version);
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, header::HeaderValue::from_str(&etag).expect("ascii etag"));
    if status == StatusCode::CREATED {
        let location = format!("{base}/Users/{}", user.id);
        if let Ok(v) = header::HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, v);
        }
    }
    resp
}

/// Who acts through SCIM: the token's name, for the audit trail.
fn actor(req: &HttpRequest) -> Actor {
    let name = principal(req).map(|p| p.name).unwrap_or_else(|| "unknown".into());
    Actor::new(Origin::Scim, name, request_id(req))
}

async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&USER_RESOURCE, &body)?;
    let (users, actor) = (state.users.clone(), actor(&req));
    let user = blocking(move || users.create(&body, crate::domain::users::Source::Scim, &actor)).await?;
    tracing::info!(user_id = %user.id, "user created via SCIM");
    Ok(single(StatusCode::CREATED, &user, &base_url(&state, &req), &projection(&req)))
}

async fn get(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let users = state.users.clone();
    let user = blocking(move || users.get(&id)).await?;
    Ok(single(StatusCode::OK, &user, &base_url(&state, &req), &projection(&req)))
}

async fn replace(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&USER_RESOURCE, &body)?;
    let (users, if_match, actor) = (state.users.clone(), if_match(&req), actor(&req));
    let user = blocking(move || users.replace(&id, &body, if_match.as_deref(), &actor)).await?;
    Ok(single(StatusCode::OK, &user, &base_url(&state, &req), &projection(&req)))
}

async fn patch(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    let (users, if_match, actor) = (state.users.clone(), if_match(&req), actor(&req));
    let user = blocking(move || users.patch(&id, &body, if_match.as_deref(), &actor)).await?;
    Ok(single(StatusCode::OK, &user, &base_url(&state, &req), &projection(&req)))
}

async fn delete(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let (users, if_match) = (state.users.clone(), if_match(&req));
    blocking(move || users.delete(&id, if_match.as_deref())).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    run_list(&state, &req, ListParams::from_query(query_pairs(&req))).await
}

async fn search(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    run_list(&state, &req, ListParams::from_search_body(&body)?).await
}

async fn run_list(state: &AppState, req: &HttpRequest, params: ListParams) -> Reply {
    let scim = &state.config.scim;
    let query = ListQuery::parse(&params, scim.default_page_size, scim.max_page_size)?;
    let users = state.users.clone();
    let q = query.clone();
    let page = blocking(move || users.list(&q)).await?;
    let base = base_url(state, req);
    let resources = page.users.iter().map(|u| render(u, &base, &query.projection)).collect();
    Ok(scim_json(StatusCode::OK, &list_response(page.total, query.start_index, resources)))
}
