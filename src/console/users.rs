//! The Users page (search, filters, sort, paging), a user's page, and the reset of one user's
//! or many users' second factor: the procedure the console exists for. Resets go through
//! `Mfa::reset_many`, the path the API's bulk reset takes, with origin `console`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::page::{blocking, capital, page_with, Fields, Me, Nav, Problem};
use super::Console;
use crate::domain::audit::Query;
use crate::domain::mfa::{Outcome, Reason, Selection};
use crate::domain::users::{Matching, Source, StoredUser};
use crate::scim::filter::{self, AttrPath, Filter};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::get().to(list))
        .route("/users/reset", web::get().to(confirm))
        .route("/users/reset", web::post().to(reset))
        // Ticked users travel in a form body: a thousand ids do not fit a URL.
        .route("/users/reset/confirm", web::post().to(confirm_ticked))
        .route("/users/{id}", web::get().to(user))
        .route("/users/{id}/factors/{credential}/remove", web::post().to(remove_factor));
}

/// Rows per page an operator may choose; the first is the default.
const PAGE_SIZES: [i64; 3] = [50, 200, 1000];
/// Names a confirmation shows of the users it is about.
const FIRST_NAMES: usize = 5;

/// What the search form asks for; it travels in the query string of every link and form of
/// the page, so that paging, sorting and a reset come back to the same list.
#[derive(Debug, Clone)]
pub struct Search {
    pub q: String,
    pub mfa: String,
    pub active: String,
    pub source: String,
    /// A group's displayName: its members, through nested groups too.
    pub group: String,
    pub filter: String,
    pub sort: String,
    pub order: String,
    pub page: i64,
    /// Rows per page, one of [`PAGE_SIZES`].
    pub per: i64,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            q: String::new(),
            mfa: String::new(),
            active: String::new(),
            source: String::new(),
            group: String::new(),
            filter: String::new(),
            sort: String::new(),
            order: String::new(),
            page: 1,
            per: PAGE_SIZES[0],
        }
    }
}

/// The columns a list sorts by, and the SCIM attribute of each.
const SORTS: &[(&str, &str)] = &[
    ("userName", "userName"),
    ("displayName", "displayName"),
    ("email", "emails"),
    ("active", "active"),
    ("mfa", "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:status"),
    ("lastReset", "urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:lastResetAt"),
];

impl Search {
    fn from(f: &Fields) -> Self {
        let text = |name: &str| f.get(name).trim().to_string();
        let pick = |name: &str, allowed: &[&str]| {
            let v = f.get(name).trim();
            if allowed.contains(&v) {
                v.to_string()
            } else {
                String::new()
            }
        };
        Search {
            q: text("q"),
            mfa: pick("mfa", &["none", "pending", "enrolled"]),
            active: pick("active", &["true", "false"]),
            source: pick("source", &["scim", "ldap"]),
            group: text("group"),
            filter: text("filter"),
            sort: pick("sort", &SORTS.iter().map(|(k, _)| *k).collect::<Vec<_>>()),
            order: pick("order", &["desc"]),
            page: f.get("page").trim().parse::<i64>().unwrap_or(1).max(1),
            per: f.get("per").trim().parse::<i64>().ok().filter(|n| PAGE_SIZES.contains(n)).unwrap_or(PAGE_SIZES[0]),
        }
    }

    /// The fields that are set, for hidden inputs and query strings.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let page = if self.page > 1 { self.page.to_string() } else { String::new() };
        let per = if self.per != PAGE_SIZES[0] { self.per.to_string() } else { String::new() };
        [
            ("q", &self.q),
            ("mfa", &self.mfa),
            ("active", &self.active),
            ("source", &self.source),
            ("group", &self.group),
            ("filter", &self.filter),
            ("sort", &self.sort),
            ("order", &self.order),
            ("page", &page),
            ("per", &per),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }

    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self.fields()).unwrap_or_default()
    }

    /// The list on another page.
    pub fn page_link(&self, page: i64) -> String {
        format!("/console/users?{}", Search { page, ..self.clone() }.query())
    }

    /// The list sorted by `column`; a second click on the sorted column reverses it.
    pub fn sort_link(&self, column: &str) -> String {
        let order = if self.sort == column && self.order.is_empty() { "desc" } else { "" };
        format!("/console/users?{}", Search { sort: column.into(), order: order.into(), page: 1, ..self.clone() }.query())
    }

    /// `aria-sort` of a column header.
    pub fn aria_sort(&self, column: &str) -> &'static str {
        match (self.sort == column, self.order.as_str()) {
            (false, _) => "none",
            (true, "desc") => "descending",
            (true, _) => "ascending",
        }
    }

    pub fn list_link(&self) -> String {
        format!("/console/users?{}", self.query())
    }

    /// The users the search finds; an error names what is wrong with the advanced filter.
    fn matching(&self) -> Result<Matching, String> {
        // The selects' values are ours (checked in `Search::from`); the advanced filter is the
        // operator's, and its syntax error is what the page says.
        let mut parts = Vec::new();
        if !self.mfa.is_empty() {
            parts.push(format!("urn:provisiond:params:scim:schemas:extension:mfa:2.0:User:status eq \"{}\"", self.mfa));
        }
        if !self.active.is_empty() {
            parts.push(format!("active eq {}", self.active));
        }
        if !self.filter.is_empty() {
            parts.push(self.filter.clone());
        }
        let mut filters: Vec<Result<Filter, String>> =
            parts.iter().map(|p| filter::parse_filter(p).map_err(|e| e.message)).collect();
        if !self.group.is_empty() {
            // Built, not parsed: the name is the operator's and may hold quotes.
            let path = AttrPath { urn: None, name: "groups".into(), sub: Some("display".into()) };
            filters.push(Ok(Filter::Compare(path, filter::CompareOp::Eq, filter::CompValue::Str(self.group.clone()))));
        }
        let filter = filters.into_iter().try_fold(None, |all: Option<Filter>, f| {
            let f = f?;
            Ok::<_, String>(Some(match all {
                Some(all) => Filter::And(Box::new(all), Box::new(f)),
                None => f,
            }))
        })?;
        let source = match self.source.as_str() {
            "scim" => Some(Source::Scim),
            "ldap" => Some(Source::Ldap),
            _ => None,
        };
        // The start of a name or address: an index answers it (a search of any part would read
        // every user).
        let text = (!self.q.is_empty()).then(|| self.q.clone());
        Ok(Matching { filter, source, text })
    }

    fn sort_path(&self) -> Option<(AttrPath, bool)> {
        let (_, path) = SORTS.iter().find(|(k, _)| *k == self.sort)?;
        let path = filter::parse_path(path).ok()?.attr;
        Some((path, self.order == "desc"))
    }
}

/// One row of the table.
pub struct Row {
    pub id: String,
    pub user_name: String,
    pub display_name: String,
    pub email: String,
    pub source: &'static str,
    pub active: bool,
    pub mfa: &'static str,
    pub last_reset: String,
}

impl Row {
    fn of(u: &StoredUser) -> Self {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let emails = u.body.get("emails").and_then(Value::as_array);
        let email = emails
            .and_then(|list| list.iter().find(|e| e.get("primary") == Some(&Value::Bool(true))).or_else(|| list.first()))
            .and_then(|e| e.get("value"));
        Row {
            id: u.id.clone(),
            user_name: text(u.body.get("userName")),
            display_name: text(u.body.get("displayName")),
            email: text(email),
            source: u.source.as_str(),
            active: u.is_active(),
            mfa: u.mfa.status.as_str(),
            last_reset: u.mfa.last_reset_at.map(time).unwrap_or_default(),
        }
    }
}

/// A time as the console shows it.
pub fn time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// What a reset did, shown above the table.
pub struct Summary {
    pub reset: Vec<String>,
    pub not_found: Vec<String>,
    pub failed: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    nav: Nav,
    search: &'a Search,
    rows: Vec<Row>,
    total: i64,
    last_page: i64,
    filter_problem: Option<String>,
    summary: Option<Summary>,
    max_bulk: usize,
}

async fn list(console: web::Data<Arc<Console>>, me: Me, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let search = Search::from(&Fields::parse(req.query_string().as_bytes()));
    users_page(&console, &req, &me, &search, None, StatusCode::OK).await
}

async fn users_page(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    search: &Search,
    summary: Option<Summary>,
    status: StatusCode,
) -> Result<HttpResponse, Problem> {
    let max_bulk = console.config.mfa.max_bulk_reset;
    let page = |rows: Vec<Row>, total: i64, filter_problem: Option<String>| {
        let last_page = ((total + search.per - 1) / search.per).max(1);
        page_with(
            req,
            status,
            UsersPage { nav: Nav::new(me, "users"), search, rows, total, last_page, filter_problem, summary, max_bulk },
        )
    };
    let matching = match search.matching() {
        Ok(m) => m,
        Err(problem) => return Ok(page(Vec::new(), 0, Some(problem))),
    };
    let users = console.services.users.clone();
    let sort = search.sort_path();
    let (offset, limit) = ((search.page - 1).saturating_mul(search.per), search.per);
    let found = actix_web::web::block(move || users.search(&matching, sort.as_ref().map(|(p, d)| (p, *d)), offset, limit))
        .await
        .map_err(|_| Problem::stopping(me))?;
    match found {
        Ok(found) => Ok(page(found.users.iter().map(Row::of).collect(), found.total, None)),
        // A filter that parses but names what cannot be searched is the operator's to fix.
        Err(crate::domain::Error::Invalid { detail, .. }) => Ok(page(Vec::new(), 0, Some(detail))),
        Err(e) => Err(Problem::of(me, e)),
    }
}

/// What a reset is for: ticked users, or every user the search finds.
enum Chosen {
    Ids(Vec<String>),
    All,
}

impl Chosen {
    fn of(f: &Fields) -> Self {
        if f.get("all") == "1" {
            Chosen::All
        } else {
            Chosen::Ids(f.all("id"))
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_dialog.html")]
struct ResetDialog<'a> {
    search: &'a Search,
    ids: &'a [String],
    all: bool,
    count: i64,
    first_names: &'a [String],
    problem: Option<&'a str>,
    /// Shown in the page's dialog slot (htmx), not as a page of its own.
    fragment: bool,
    /// The form posts without htmx: it carries the session's CSRF token itself.
    csrf: &'a str,
    /// "Also create enrolment links" ticked.
    links: bool,
    /// Links can be made (`server.public_url` is set): else the box says what they need.
    links_ready: bool,
    /// Links can be sent by email (`[smtp]`): the "Send by email" box is offered.
    mail_ready: bool,
    /// "Send by email" ticked.
    send: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "reset_page.html")]
struct ResetPage<'a> {
    nav: Nav,
    dialog: ResetDialog<'a>,
}

/// The confirmation: which users, what a reset does, and a required reason.
async fn confirm(console: web::Data<Arc<Console>>, me: Me, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let fields = Fields::parse(req.query_string().as_bytes());
    confirmation(&console, &req, &me, &fields, None, in_dialog(&req)).await
}

/// The confirmation of the users ticked on the list.
async fn confirm_ticked(
    console: web::Data<Arc<Console>>,
    me: Me,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    confirmation(&console, &req, &me, &Fields::parse(&body), None, in_dialog(&req)).await
}

/// Whether htmx asked for the confirmation to fill the page's dialog slot (else it is a page).
fn in_dialog(req: &HttpRequest) -> bool {
    req.headers().get("hx-target").is_some_and(|t| t == "dialog-slot")
}

async fn confirmation(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    fields: &Fields,
    problem: Option<&str>,
    fragment: bool,
) -> Result<HttpResponse, Problem> {
    let search = Search::from(fields);
    let chosen = Chosen::of(fields);
    let users = console.services.users.clone();
    let (count, first_names, ids) = match chosen {
        Chosen::Ids(ids) if ids.is_empty() => {
            return Err(Problem::page_for(me, StatusCode::BAD_REQUEST, "Nothing chosen", "Tick at least one user first."))
        }
        Chosen::Ids(ids) => {
            let first: Vec<String> = ids.iter().take(FIRST_NAMES).cloned().collect();
            let names = blocking(me, move || {
                Ok(first.iter().filter_map(|id| users.get(id).ok().map(|u| u.user_name().to_string())).collect::<Vec<_>>())
            })
            .await?;
            (ids.len() as i64, names, ids)
        }
        Chosen::All => {
            let matching = search.matching().map_err(|e| Problem::page_for(me, StatusCode::BAD_REQUEST, "Not accepted", e))?;
            let page = blocking(me, move || users.search(&matching, None, 0, FIRST_NAMES as i64)).await?;
            (page.total, page.users.iter().map(|u| u.user_name().to_string()).collect(), Vec::new())
        }
    };
    let dialog = ResetDialog {
        search: &search,
        ids: &ids,
        all: matches!(Chosen::of(fields), Chosen::All),
        count,
        first_names: &first_names,
        problem,
        fragment,
        csrf: &me.csrf,
        links: fields.get("links") == "1",
        links_ready: console.services.links.check_ready().is_ok(),
        mail_ready: console.services.links.check_mail_ready().is_ok(),
        send: fields.get("send") == "1",
    };
    let status = if problem.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok(if fragment {
        page_with(req, status, dialog)
    } else {
        page_with(req, status, ResetPage { nav: Nav::new(me, "users"), dialog })
    })
}

/// Resets, then shows the list again with what was done above it.
async fn reset(console: web::Data<Arc<Console>>, me: Me, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, Problem> {
    let fields = Fields::parse(&body);
    let fragment = in_dialog(&req);
    let reason = match Reason::parse(Some(fields.get("reason"))) {
        Ok(r) => r,
        Err(e) => return confirmation(&console, &req, &me, &fields, Some(&capital(&e.detail)), fragment).await,
    };
    let search = Search::from(&fields);
    let selection = match Chosen::of(&fields) {
        Chosen::Ids(ids) if ids.is_empty() => {
            return Err(Problem::page_for(&me, StatusCode::BAD_REQUEST, "Nothing chosen", "Tick at least one user first."))
        }
        Chosen::Ids(ids) => Selection::Ids(ids),
        Chosen::All => Selection::Matching(
            search.matching().map_err(|e| Problem::page_for(&me, StatusCode::BAD_REQUEST, "Not accepted", e))?,
        ),
    };
    if fields.get("links") == "1" {
        let links = &console.services.links;
        let ready = links.check_ready().and_then(|_| if fields.get("send") == "1" { links.check_mail_ready() } else { Ok(()) });
        if let Err(e) = ready {
            return confirmation(&console, &req, &me, &fields, Some(&capital(&e.to_string())), fragment).await;
        }
    }
    let mfa = console.services.mfa.clone();
    let actor = me.actor();
    let done =
        actix_web::web::block(move || mfa.reset_many(&selection, &actor, &reason)).await.map_err(|_| Problem::stopping(&me))?;
    let results = match done {
        Ok(results) => results,
        Err(crate::domain::Error::Invalid { detail, .. }) => {
            return confirmation(&console, &req, &me, &fields, Some(&capital(&detail)), fragment).await
        }
        Err(e) => return Err(Problem::of(&me, e)),
    };
    if fields.get("links") == "1" {
        return reset_with_links(&console, &req, &me, &search, results, fields.get("send") == "1").await;
    }
    let mut summary = Summary { reset: Vec::new(), not_found: Vec::new(), failed: Vec::new() };
    for r in results {
        let name = r.user_name.unwrap_or(r.id);
        match r.outcome {
            Outcome::Reset => summary.reset.push(name),
            Outcome::NotFound => summary.not_found.push(name),
            Outcome::Error => summary.failed.push(name),
        }
    }
    users_page(&console, &req, &me, &search, Some(summary), StatusCode::OK).await
}

/// After a reset with "also create enrolment links": a link for every user reset, listed once.
async fn reset_with_links(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    search: &Search,
    results: Vec<crate::domain::mfa::BulkResult>,
    send: bool,
) -> Result<HttpResponse, Problem> {
    let ids: Vec<String> = results.iter().filter(|r| r.outcome == Outcome::Reset).map(|r| r.id.clone()).collect();
    let missed = results.len() - ids.len();
    let mut before =
        format!("Multi-factor authentication reset for {} user{}.", ids.len(), if ids.len() == 1 { "" } else { "s" });
    if missed > 0 {
        before.push_str(&format!(" {missed} could not be reset (see the audit trail and the daemon log)."));
    }
    let rows = super::links::make(console, me, ids, send).await?;
    Ok(super::links::page(req, me, Some(&before), &rows, &search.list_link()))
}

#[derive(Template, WebTemplate)]
#[template(path = "user.html")]
struct UserPage {
    nav: Nav,
    row: Row,
    attributes: Vec<(String, String)>,
    mfa: crate::domain::mfa::Status,
    events: Vec<super::audit::EventRow>,
    /// The groups the user is in, directly or through nested groups.
    groups: Vec<crate::domain::groups::Membership>,
    /// Links can be made (`server.public_url`): "Create enrolment link" is offered.
    links_ready: bool,
    /// Links can be sent by email (`[smtp]`): the "Send by email" box is offered.
    mail_ready: bool,
}

/// A user: the SCIM attributes, the second factor, the user's audit events, and the reset.
async fn user(
    console: web::Data<Arc<Console>>,
    req: HttpRequest,
    me: Me,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let services = console.services.clone();
    let (stored, mfa, events, groups) = blocking(&me, move || {
        let stored = services.users.get(&id)?;
        let mfa = services.mfa.status(&id)?;
        let (_, events) = services.audit.list(&Query { user_id: Some(id.clone()), offset: 0, limit: 50, ..Query::default() })?;
        let groups = services.groups.memberships(std::slice::from_ref(&id))?.remove(&id).unwrap_or_default();
        Ok((stored, mfa, events, groups))
    })
    .await?;
    let mut attributes = Vec::new();
    flatten("", &Value::Object(Map::clone(&stored.body)), &mut attributes);
    let page = UserPage {
        nav: Nav::new(&me, "users"),
        row: Row::of(&stored),
        attributes,
        mfa,
        events: events.iter().map(super::audit::EventRow::of).collect(),
        groups,
        links_ready: console.services.links.check_ready().is_ok(),
        mail_ready: console.services.links.check_mail_ready().is_ok(),
    };
    Ok(page_with(&req, StatusCode::OK, page))
}

/// Removes one security key or passkey of the user (audited), then shows the user again.
async fn remove_factor(
    console: web::Data<Arc<Console>>,
    me: Me,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, credential) = path.into_inner();
    let (mfa, actor, user) = (console.services.mfa.clone(), me.actor(), id.clone());
    blocking(&me, move || mfa.remove_credential(&user, &credential, &actor)).await?;
    Ok(super::page::see_other(&format!("/console/users/{}", super::page::segment(&id))))
}

/// Every leaf of a SCIM body as `path: value` (`emails[0].value`), for a read-only table.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "schemas" || k == "meta" {
                    continue;
                }
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&name, v, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => {}
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
