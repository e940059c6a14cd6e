//! `/Users` and `/.search`: SCIM requests translated into calls on `domain::users`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::HashMap;

use serde_json::{json, Value};

use super::scim_io::{actor, base_url, blocking, if_match, method_not_allowed, projection, query_pairs, read_json, scim_json};
use super::AppState;
use crate::domain::groups::{Groups, Membership};
use crate::domain::users::{OneConnection, StoredUser};
use crate::scim::error::ScimError;
use crate::scim::list::{cursor_list_response, list_response, ListParams, ListQuery};
use crate::scim::resource::{self, Meta, Projection, Rendered};
use crate::scim::schema::USER_RESOURCE;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Users")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/Users/.search").route(web::post().to(search)).default_service(web::to(method_not_allowed)))
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

/// The rendered resource at its location, projected, with the groups it belongs to. Without a
/// projection it is written from the body's stored text (`resource::render_stored`).
fn render(user: StoredUser, groups: &[Membership], base: &str, projection: &Projection) -> Rendered {
    let meta = Meta { created: user.created_at.and_utc(), last_modified: user.updated_at.and_utc(), version: user.version };
    let mfa = crate::domain::users::mfa_view(&user);
    let location = format!("{base}/Users/{}", user.id);
    let mut computed = mfa.computed();
    if !groups.is_empty() {
        let list = groups.iter().map(|g| {
            let kind = if g.direct { "direct" } else { "indirect" };
            json!({"value": g.group_id, "$ref": format!("{base}/Groups/{}", g.group_id), "display": g.display, "type": kind})
        });
        computed.insert("groups".into(), Value::Array(list.collect()));
    }
    if projection.is_none() {
        let fields = user.body.fields();
        return Rendered::Stored(resource::render_stored(&USER_RESOURCE, &user.id, &fields, computed, &meta, &location));
    }
    let mut doc = resource::render(&USER_RESOURCE, &user.id, user.body.into_map(), computed, &meta, &location);
    projection.apply(&USER_RESOURCE, &mut doc);
    Rendered::Doc(doc)
}

/// The groups of these users, read once for all of them, when the answer shows `groups` (not
/// at all otherwise).
fn memberships(groups: &Groups, users: &[StoredUser], shown: bool) -> crate::domain::Result<HashMap<String, Vec<Membership>>> {
    match shown {
        true => groups.memberships(&ids(users)),
        false => Ok(HashMap::new()),
    }
}

fn ids(users: &[StoredUser]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

/// Users as a list shows them, with the groups read for them.
fn render_all(
    users: Vec<StoredUser>,
    groups: &HashMap<String, Vec<Membership>>,
    base: &str,
    projection: &Projection,
) -> Vec<Rendered> {
    let none = Vec::new();
    users
        .into_iter()
        .map(|u| {
            let of_user = groups.get(&u.id).unwrap_or(&none);
            render(u, of_user, base, projection)
        })
        .collect()
}

/// Users as a list shows them, with their groups read once for all of them.
pub(crate) async fn rendered(
    state: &AppState,
    users: Vec<StoredUser>,
    base: &str,
    projection: &Projection,
) -> Result<Vec<Rendered>, ScimError> {
    let groups = match projection.shows(&USER_RESOURCE, "groups") {
        true => {
            let (groups, ids) = (state.groups.clone(), ids(&users));
            blocking(move || groups.memberships(&ids)).await?
        }
        false => HashMap::new(),
    };
    Ok(render_all(users, &groups, base, projection))
}

/// Runs `op` (a read or a write of one user) and reads the groups the answer shows, in one trip
/// to the blocking pool and on one connection (`Users::showing`): every trip is a hand-over
/// between threads, which costs a single GET as much as its queries.
async fn one_user(
    state: &AppState,
    projection: &Projection,
    op: impl FnOnce(&mut OneConnection) -> crate::domain::Result<StoredUser> + Send + 'static,
) -> Result<(StoredUser, Vec<Membership>), ScimError> {
    let users = state.users.clone();
    let shown = projection.shows(&USER_RESOURCE, "groups");
    blocking(move || users.showing(shown, op)).await
}

/// A single-resource response with its `ETag` (and `Location` on 201), from `op` (see [`one_user`]).
async fn single(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    op: impl FnOnce(&mut OneConnection) -> crate::domain::Result<StoredUser> + Send + 'static,
) -> Reply {
    let projection = projection(req);
    let (user, groups) = one_user(state, &projection, op).await?;
    let base = base_url(state, req);
    let (id, etag) = (user.id.clone(), format!("W/\"{}\"", user.version));
    let doc = render(user, &groups, &base, &projection);
    let mut resp = scim_json(status, &doc);
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, header::HeaderValue::from_str(&etag).expect("ascii etag"));
    if status == StatusCode::CREATED {
        let location = format!("{base}/Users/{id}");
        if let Ok(v) = header::HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, v);
        }
    }
    Ok(resp)
}

async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&USER_RESOURCE, &body)?;
    let actor = actor(&req);
    single(&state, &req, StatusCode::CREATED, move |users| {
        let user = users.create(&body, crate::domain::users::Source::Scim, &actor)?;
        tracing::info!(user_id = %user.id, "user created via SCIM");
        Ok(user)
    })
    .await
}

async fn get(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    single(&state, &req, StatusCode::OK, move |users| users.get(&id)).await
}

async fn replace(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&USER_RESOURCE, &body)?;
    let (if_match, actor) = (if_match(&req), actor(&req));
    single(&state, &req, StatusCode::OK, move |users| users.replace(&id, &body, if_match.as_deref(), &actor)).await
}

async fn patch(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    let (if_match, actor) = (if_match(&req), actor(&req));
    single(&state, &req, StatusCode::OK, move |users| users.patch(&id, &body, if_match.as_deref(), &actor)).await
}

async fn delete(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let (users, if_match, actor) = (state.users.clone(), if_match(&req), actor(&req));
    blocking(move || users.delete(&id, if_match.as_deref(), &actor)).await?;
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
    let (pages, groups, q, client) = (state.user_pages.clone(), state.groups.clone(), query.clone(), actor(req).name);
    let shown = query.projection.shows(&USER_RESOURCE, "groups");
    // The page and its users' groups in one trip to the blocking pool (see `one_user`).
    let (page, of_users) = blocking(move || {
        let page = pages.list(&q, &client)?;
        let of_users = memberships(&groups, &page.users, shown)?;
        Ok::<_, crate::domain::Error>((page, of_users))
    })
    .await?;
    let base = base_url(state, req);
    let resources = render_all(page.users, &of_users, &base, &query.projection);
    let doc = match query.cursor {
        None => list_response(page.total, query.start_index, resources),
        Some(_) => cursor_list_response(page.total, resources, page.next_cursor, page.previous_cursor),
    };
    Ok(scim_json(StatusCode::OK, &doc))
}
