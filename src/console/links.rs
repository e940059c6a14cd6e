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
use crate::domain::mfa::links::{Created, Delivery};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/{id}/enrolment-link", web::post().to(create)).service(
        web::resource("/users/enrolment-links.csv")
            .app_data(web::PayloadConfig::new(super::guard::MAX_LINKS_CSV_BYTES))
            .route(web::post().to(csv)),
    );
}

/// One line of the result: a link made, or why a user has none.
pub struct LinkRow {
    pub user_id: String,
    pub user_name: String,
    pub url: Option<String>,
    pub expires_at: String,
    pub problem: Option<String>,
    /// With "send by email": what became of the email.
    pub email: Option<String>,
}

impl LinkRow {
    /// The user's page.
    pub fn href(&self) -> String {
        format!("/console/users/{}", super::page::segment(&self.user_id))
    }

    fn of(created: Created) -> Self {
        match created {
            Created::Link(l) => LinkRow {
                user_id: l.user_id,
                user_name: l.user_name,
                url: Some(l.url.expose().to_string()),
                expires_at: l.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                problem: None,
                email: None,
            },
            Created::Refused { user_id, user_name, detail } => LinkRow {
                user_name: user_name.unwrap_or_else(|| user_id.clone()),
                user_id,
                url: None,
                expires_at: String::new(),
                problem: Some(super::page::capital(&detail)),
                email: None,
            },
        }
    }
}

/// What a row's Email column says.
fn email_text(d: &Delivery) -> String {
    match d {
        Delivery::Sent { to } => format!("Sent to {to}"),
        other => format!("Not sent: {}", other.problem().unwrap_or_default()),
    }
}

/// Makes a link for each of `ids` (after a reset, or for one user) and, with `send`, emails
/// each one made, after they are committed.
pub async fn make(console: &Console, me: &Me, ids: Vec<String>, send: bool) -> Result<Vec<LinkRow>, Problem> {
    let (links, actor) = (console.services.links.clone(), me.actor());
    blocking(me, move || {
        let created = links.create_many(&ids, None, &actor)?;
        let made: Vec<_> = created.iter().filter_map(|c| if let Created::Link(l) = c { Some(l.clone()) } else { None }).collect();
        let mut deliveries = match send {
            true => links.send(&made, &actor)?.into_iter(),
            false => Vec::new().into_iter(),
        };
        let mut rows: Vec<LinkRow> = created.into_iter().map(LinkRow::of).collect();
        for row in rows.iter_mut().filter(|r| r.url.is_some()) {
            row.email = deliveries.next().as_ref().map(email_text);
        }
        Ok(rows)
    })
    .await
}

#[derive(Template, WebTemplate)]
#[template(path = "links_created.html")]
struct LinksPage<'a> {
    nav: Nav,
    /// What happened before the links were made ("Reset 3 users."), if anything.
    before: Option<&'a str>,
    rows: &'a [LinkRow],
    made: usize,
    /// The links were also sent by email: the table has an Email column.
    emailed: bool,
    /// The links as CSV, in the form that downloads them: they are kept nowhere to fetch them
    /// from again, so the page sends them back (a `data:` address is too short for thousands).
    csv: &'a str,
    /// Where "Back" leads.
    back: &'a str,
}

/// The page listing the links made (shown once), with their CSV.
pub fn page(req: &HttpRequest, me: &Me, before: Option<&str>, rows: &[LinkRow], back: &str) -> HttpResponse {
    let mut csv = csv_line(&["userName", "userId", "url", "expiresAt", "problem", "email"]);
    for r in rows {
        let cell = |v: &Option<String>| v.clone().unwrap_or_default();
        let url = cell(&r.url);
        csv.push_str(&csv_line(&[&r.user_name, &r.user_id, &url, &r.expires_at, &cell(&r.problem), &cell(&r.email)]));
    }
    let made = rows.iter().filter(|r| r.url.is_some()).count();
    let emailed = rows.iter().any(|r| r.email.is_some());
    let page = LinksPage { nav: Nav::new(me, "users"), before, rows, made, emailed, csv: &csv, back };
    page_with(req, StatusCode::OK, page)
}

/// "Download (.csv)": the links the page sent back, as a file.
async fn csv(me: Me, body: web::Bytes) -> Result<HttpResponse, Problem> {
    let fields = super::page::Fields::parse(&body);
    let csv = fields.get("csv");
    if csv.is_empty() {
        return Err(Problem::page_for(&me, StatusCode::BAD_REQUEST, "Nothing to download", "The form held no links."));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((actix_web::http::header::CONTENT_DISPOSITION, "attachment; filename=\"enrolment-links.csv\""))
        .body(csv.to_string()))
}

/// "Create enrolment link" on a user's page (with "Send by email" ticked, also sent).
async fn create(
    console: web::Data<Arc<Console>>,
    me: Me,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let send = super::page::Fields::parse(&body).get("send") == "1";
    if send {
        console.services.links.check_mail_ready().map_err(|e| Problem::of(&me, e))?;
    }
    let rows = make(&console, &me, vec![id.clone()], send).await?;
    Ok(page(&req, &me, None, &rows, &format!("/console/users/{}", super::page::segment(&id))))
}
