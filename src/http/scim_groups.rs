//! `/Groups`: SCIM requests translated into calls on `domain::groups`. Members are read only
//! when the answer shows them (`excludedAttributes=members` reads none), and a PATCH answers
//! 204 unless `attributes` asks for the resource (Entra's guidance).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::scim_io::{actor, base_url, blocking, if_match, method_not_allowed, projection, query_pairs, read_json, scim_json};
use super::AppState;
use crate::domain::groups::{Member, MemberKind, StoredGroup};
use crate::domain::users::Source;
use crate::scim::error::ScimError;
use crate::scim::list::{list_response, refuse_cursor, ListParams, ListQuery};
use crate::scim::resource::{self, Meta, Projection};
use crate::scim::schema::GROUP_RESOURCE;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/Groups")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/Groups/.search").route(web::post().to(search)).default_service(web::to(method_not_allowed)))
    .service(
        web::resource("/Groups/{id}")
            .route(web::get().to(get))
            .route(web::put().to(replace))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed)),
    );
}

type Reply = Result<HttpResponse, ScimError>;

/// The rendered resource at its location, projected; `members` when they were read.
fn render(group: &StoredGroup, members: Option<&[Member]>, base: &str, projection: &Projection) -> Value {
    let meta = Meta { created: group.created_at.and_utc(), last_modified: group.updated_at.and_utc(), version: group.version };
    let location = format!("{base}/Groups/{}", group.id);
    let mut computed = serde_json::Map::new();
    if let Some(members) = members.filter(|m| !m.is_empty()) {
        let list = members.iter().map(|member| serde_json::to_value(MemberOut { member, base }).expect("a member serialises"));
        computed.insert("members".into(), Value::Array(list.collect()));
    }
    let mut doc = resource::render(&GROUP_RESOURCE, &group.id, group.body.clone(), computed, &meta, &location);
    projection.apply(&GROUP_RESOURCE, &mut doc);
    doc
}

/// A member as an answer shows it, serialised straight from the row (a group of fifty
/// thousand makes no JSON value per member).
struct MemberOut<'a> {
    member: &'a Member,
    base: &'a str,
}

impl serde::Serialize for MemberOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (id, kind) = (&self.member.id, self.member.kind);
        let endpoint = if kind == MemberKind::User { "Users" } else { "Groups" };
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("value", id)?;
        map.serialize_entry("$ref", &format_args!("{}/{endpoint}/{id}", self.base).to_string())?;
        map.serialize_entry("type", kind.as_str())?;
        map.end()
    }
}

/// A rendered group with its members beside it.
#[derive(serde::Serialize)]
struct WithMembers<'a> {
    #[serde(flatten)]
    doc: &'a serde_json::Map<String, Value>,
    members: Vec<MemberOut<'a>>,
}

/// A single-resource answer with its `ETag` (and `Location` on 201), members read if shown.
async fn single(state: &AppState, req: &HttpRequest, status: StatusCode, group: StoredGroup) -> Reply {
    let projection = projection(req);
    let members = match projection.shows(&GROUP_RESOURCE, "members") {
        true => {
            let (groups, id) = (state.groups.clone(), group.id.clone());
            blocking(move || groups.members(&id)).await?
        }
        false => Vec::new(),
    };
    let base = base_url(state, req);
    let doc = render(&group, None, &base, &projection);
    let mut resp = match (members.is_empty(), doc.as_object()) {
        (false, Some(doc)) => {
            let members = members.iter().map(|member| MemberOut { member, base: &base }).collect();
            scim_json(status, &WithMembers { doc, members })
        }
        _ => scim_json(status, &doc),
    };
    let headers = resp.headers_mut();
    let etag = format!("W/\"{}\"", group.version);
    headers.insert(header::ETAG, header::HeaderValue::from_str(&etag).expect("ascii etag"));
    if status == StatusCode::CREATED {
        if let Ok(v) = header::HeaderValue::from_str(&format!("{base}/Groups/{}", group.id)) {
            headers.insert(header::LOCATION, v);
        }
    }
    Ok(resp)
}

async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&GROUP_RESOURCE, &body)?;
    let (groups, actor) = (state.groups.clone(), actor(&req));
    let group = blocking(move || groups.create(&body, Source::Scim, &actor)).await?;
    tracing::info!(group_id = %group.id, "group created via SCIM");
    single(&state, &req, StatusCode::CREATED, group).await
}

async fn get(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let groups = state.groups.clone();
    let group = blocking(move || groups.get(&id)).await?;
    single(&state, &req, StatusCode::OK, group).await
}

async fn replace(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    resource::check_schemas(&GROUP_RESOURCE, &body)?;
    let (groups, if_match, actor) = (state.groups.clone(), if_match(&req), actor(&req));
    let group = blocking(move || groups.replace(&id, &body, if_match.as_deref(), &actor)).await?;
    single(&state, &req, StatusCode::OK, group).await
}

async fn patch(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>, payload: web::Payload) -> Reply {
    let body = read_json(&state, &req, payload).await?;
    let (groups, if_match, actor) = (state.groups.clone(), if_match(&req), actor(&req));
    let group = blocking(move || groups.patch(&id, &body, if_match.as_deref(), &actor)).await?;
    let asked = ListParams::from_query(query_pairs(&req)).attributes.is_some();
    if asked {
        return single(&state, &req, StatusCode::OK, group).await;
    }
    let etag = format!("W/\"{}\"", group.version);
    Ok(HttpResponse::NoContent().insert_header((header::ETAG, etag)).finish())
}

async fn delete(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let (groups, if_match) = (state.groups.clone(), if_match(&req));
    blocking(move || groups.delete(&id, if_match.as_deref())).await?;
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
    refuse_cursor(&query, "/Groups")?;
    let (groups, q) = (state.groups.clone(), query.clone());
    let page = blocking(move || groups.list(&q)).await?;
    let base = base_url(state, req);
    let resources = rendered(state, page.groups, &base, &query.projection).await?;
    Ok(scim_json(StatusCode::OK, &list_response(page.total, query.start_index, resources)))
}

/// Groups as a list shows them: members read only when the projection shows them.
pub(crate) async fn rendered(
    state: &AppState,
    page: Vec<StoredGroup>,
    base: &str,
    projection: &Projection,
) -> Result<Vec<Value>, ScimError> {
    let (groups, with_members) = (state.groups.clone(), projection.shows(&GROUP_RESOURCE, "members"));
    let ids: Vec<String> = page.iter().map(|g| g.id.clone()).collect();
    let members = blocking(move || match with_members {
        true => ids.iter().map(|id| groups.members(id).map(Some)).collect::<Result<Vec<_>, _>>(),
        false => Ok(vec![None; ids.len()]),
    })
    .await?;
    Ok(page.iter().zip(&members).map(|(g, m)| render(g, m.as_deref(), base, projection)).collect())
}
