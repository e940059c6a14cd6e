//! `POST /.search` at the root (RFC 7644 §3.4.3): one query over every resource type, users
//! first, then groups, paged as one list. A filter that names what only one type has (a
//! group's `members`, a user's `userName`) matches none of the other.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};

use super::scim_io::{base_url, blocking, method_not_allowed, read_json, scim_json};
use super::{scim_groups, scim_users, AppState};
use crate::domain::{Error, Invalid};
use crate::scim::error::ScimError;
use crate::scim::list::{list_response, refuse_cursor, ListParams, ListQuery};
use crate::scim::resource::Rendered;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/.search").route(web::post().to(search)).default_service(web::to(method_not_allowed)));
}

/// A filter one type cannot answer matches none of its resources.
fn none_if_unfilterable<T>(answer: Result<T, Error>) -> Result<Option<T>, Error> {
    match answer {
        Ok(t) => Ok(Some(t)),
        Err(Error::Invalid { reason: Invalid::Filter, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn search(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<actix_web::HttpResponse, ScimError> {
    let body = read_json(&state, &req, payload).await?;
    let scim = &state.config.scim;
    let query = ListQuery::parse(&ListParams::from_search_body(&body)?, scim.default_page_size, scim.max_page_size)?;
    refuse_cursor(&query, "POST /.search")?;
    let (users, groups, q) = (state.users.clone(), state.groups.clone(), query.clone());
    let (user_page, group_page) = blocking(move || {
        let user_page = none_if_unfilterable(users.list(&q))?;
        let users_total = user_page.as_ref().map_or(0, |p| p.total);
        let shown = user_page.as_ref().map_or(0, |p| p.users.len() as i64);
        // Groups continue where the users end.
        let group_query = ListQuery { start_index: (q.start_index - users_total).max(1), count: q.count - shown, ..q.clone() };
        let group_page = none_if_unfilterable(groups.list(&group_query))?;
        if user_page.is_none() && group_page.is_none() {
            return Err(users.list(&q).err().expect("refused above"));
        }
        Ok((user_page, group_page))
    })
    .await?;
    let base = base_url(&state, &req);
    let mut resources = Vec::new();
    let mut total = 0;
    if let Some(page) = user_page {
        total += page.total;
        resources.extend(scim_users::rendered(&state, page.users, &base, &query.projection).await?);
    }
    if let Some(page) = group_page {
        total += page.total;
        resources
            .extend(scim_groups::rendered(&state, page.groups, &base, &query.projection).await?.into_iter().map(Rendered::Doc));
    }
    Ok(scim_json(StatusCode::OK, &list_response(total, query.start_index, resources)))
}
