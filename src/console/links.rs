//! Enrolment links in the console: "Create enrolment link" on a user's page, and the links a
//! reset makes when its dialog's "also create enrolment links" is ticked. Each link is shown
//! once (only its hash is kept), so the page that shows them also offers them as a CSV file.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;

use super::audit::csv_line;
use super::page::{blocking, page_with, Me, Nav, Problem};
use super::Console;
use crate::domain::mfa::links::Created;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/{id}/enrolment-link", web::post().to(create));
}

/// One line of the result: a link made, or why a user has none.
pub struct LinkRow {
    pub user_id: String,
    pub user_name: String,
    pub url: Option<String>,
    pub expires_at: String,
    pub problem: Option<String>,
}

impl LinkRow {
    fn of(created: Created) -> Self {
        match created {
            Created::Link(l) => LinkRow {
                user_id: l.user_id,
                user_name: l.user_name,
                url: Some(l.url.expose().to_string()),
                expires_at: l.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                problem: None,
            },
            Created::Refused { user_id, user_name, detail } => LinkRow {
                user_name: user_name.unwrap_or_else(|| user_id.clone()),
                user_id,
                url: None,
                expires_at: String::new(),
                problem: Some(super::page::capital(&detail)),
            },
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "links_created.html")]
struct LinksPage<'a> {
    nav: Nav,
    /// What happened before the links were made ("Reset 3 users."), if anything.
    before: Option<&'a str>,
    rows: &'a [LinkRow],
    made: usize,
    /// The links as a CSV file in a `data:` address (they are not kept to fetch them again).
    csv_href: &'a str,
    /// Where "Back" leads.
    back: &'a str,
}

/// The page listing the links made (shown once), with their CSV.
pub fn page(req: &HttpRequest, me: &Me, before: Option<&str>, created: Vec<Created>, back: &str) -> HttpResponse {
    let rows: Vec<LinkRow> = created.into_iter().map(LinkRow::of).collect();
    let mut csv = csv_line(&["userName", "userId", "url", "expiresAt", "problem"]);
    for r in &rows {
        let url = r.url.as_deref().unwrap_or_default();
        csv.push_str(&csv_line(&[&r.user_name, &r.user_id, url, &r.expires_at, r.problem.as_deref().unwrap_or_default()]));
    }
    let csv_href = format!("data:text/csv;charset=utf-8,{}", crate::config::percent_encode(&csv));
    let made = rows.iter().filter(|r| r.url.is_some()).count();
    let page = LinksPage { nav: Nav::new(me, "users"), before, rows: &rows, made, csv_href: &csv_href, back };
    page_with(req, StatusCode::OK, page)
}

/// "Create enrolment link" on a user's page.
async fn create(
    console: web::Data<Arc<Console>>,
    me: Me,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let (links, actor, ids) = (console.services.links.clone(), me.actor(), vec![id.clone()]);
    let created = blocking(&me, move || links.create_many(&ids, None, &actor)).await?;
    Ok(page(&req, &me, None, created, &format!("/console/users/{}", super::page::segment(&id))))
}
