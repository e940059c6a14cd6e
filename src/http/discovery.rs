//! Discovery (RFC 7644 §4): what this server supports, generated from the resource types of
//! `scim::schema`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::scim_io::{base_url, method_not_allowed, scim_json};
use super::AppState;
use crate::scim::error::ScimError;
use crate::scim::list::list_response;
use crate::scim::schema;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // Discovery is read-only: every other method gets 405.
    let only_get = |path: &str| web::resource(path.to_string()).default_service(web::to(method_not_allowed));
    cfg.service(only_get("/ServiceProviderConfig").route(web::get().to(service_provider_config)))
        .service(only_get("/ResourceTypes").route(web::get().to(resource_types)))
        .service(only_get("/ResourceTypes/{name}").route(web::get().to(resource_type)))
        .service(only_get("/Schemas").route(web::get().to(schemas)))
        .service(only_get("/Schemas/{id}").route(web::get().to(schema_by_id)));
}

type Reply = Result<HttpResponse, ScimError>;

async fn service_provider_config(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    let base = base_url(&state, &req);
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [schema::SERVICE_PROVIDER_CONFIG],
            "documentationUri": "https://github.com/provisiond/provisiond#readme",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": state.config.scim.max_page_size},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            // RFC 9865 §4: both ways of paging; startIndex when a request names neither (as
            // before cursors, for the clients that expect it).
            "pagination": {
                "cursor": true,
                "index": true,
                "defaultPaginationMethod": "index",
                "defaultPageSize": state.config.scim.default_page_size,
                "maxPageSize": state.config.scim.max_page_size,
                "cursorTimeout": state.config.scim.cursor_timeout,
            },
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication with a bearer token created by `provisiond token create`",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }),
    ))
}

/// Discovery lists take no filter (RFC 7644 §4).
fn refuse_filter(req: &HttpRequest) -> Result<(), ScimError> {
    if req.query_string().to_ascii_lowercase().contains("filter=") {
        return Err(ScimError::new(403, None, "discovery endpoints cannot be filtered"));
    }
    Ok(())
}

async fn resource_types(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    refuse_filter(&req)?;
    let base = base_url(&state, &req);
    let all: Vec<Value> = schema::RESOURCE_TYPES.iter().map(|t| t.to_json(&base)).collect();
    Ok(scim_json(StatusCode::OK, &list_response(all.len() as i64, 1, all)))
}

async fn resource_type(state: web::Data<AppState>, req: HttpRequest, name: web::Path<String>) -> Reply {
    let t = schema::resource_type(&name).ok_or_else(|| ScimError::not_found(format!("no resource type {name}")))?;
    Ok(scim_json(StatusCode::OK, &t.to_json(&base_url(&state, &req))))
}

async fn schemas(state: web::Data<AppState>, req: HttpRequest) -> Reply {
    refuse_filter(&req)?;
    let base = base_url(&state, &req);
    let all: Vec<Value> = schema::all_schemas().map(|s| s.to_json(&base)).collect();
    Ok(scim_json(StatusCode::OK, &list_response(all.len() as i64, 1, all)))
}

async fn schema_by_id(state: web::Data<AppState>, req: HttpRequest, id: web::Path<String>) -> Reply {
    let s = schema::any_schema(&id).ok_or_else(|| ScimError::not_found(format!("no schema {id}")))?;
    Ok(scim_json(StatusCode::OK, &s.to_json(&base_url(&state, &req))))
}
