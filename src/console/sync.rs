//! The Directory sync page (administrators): the run history with counts and errors, a run
//! started by hand (incremental or full, as the API's `POST /api/v1/sync/runs` starts one), and
//! a preview: a dry run that lists what it would do (as `provisiond sync --dry-run`).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use serde_json::Value;

use super::page::{blocking, page_with, Admin, Fields, Me, Nav, Problem};
use super::users::time;
use super::Console;
use crate::directory::{Options, StartError, StartedBy, Summary, Syncer};
use crate::domain::directory::{Run, RunStatus};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sync", web::get().to(page))
        .route("/sync/run", web::post().to(run))
        .route("/sync/preview", web::post().to(preview));
}

/// Runs per page of the history.
const PAGE_SIZE: i64 = 25;
/// Actions a preview lists on the page; the rest are counted.
const SHOWN_ACTIONS: usize = 1000;

/// What the page says when there is nothing to sync.
pub const NOT_CONFIGURED: &str = "LDAP sync is not configured (no [ldap] section in the configuration)";

/// One run of the history, as the page shows it.
pub struct RunRow {
    pub id: String,
    pub kind: &'static str,
    pub started_by: &'static str,
    pub status: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub duration: String,
    pub counts: Vec<(&'static str, i64)>,
    pub errors: Vec<String>,
}

impl RunRow {
    fn of(r: &Run) -> Self {
        let c = &r.counts;
        RunRow {
            id: r.id.clone(),
            kind: r.kind.as_str(),
            started_by: r.started_by.as_str(),
            status: r.status.as_str(),
            started_at: time(r.started_at),
            finished_at: r.finished_at.map(time).unwrap_or_default(),
            duration: r.duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_default(),
            counts: vec![
                ("created", c.created),
                ("updated", c.updated),
                ("unchanged", c.unchanged),
                ("deactivated", c.deactivated),
                ("reactivated", c.reactivated),
                ("resets applied", c.resets_applied),
                ("flags cleared", c.flags_cleared),
            ],
            errors: r.errors.clone(),
        }
    }
}

/// One action of a preview: what it would do to whom.
pub struct ActionRow {
    pub action: String,
    pub user: String,
    pub dn: String,
    /// The user's id, when the action names it by id (a deactivation).
    user_id: Option<String>,
}

impl ActionRow {
    fn of(v: &Value) -> Self {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let user_id = v.get("userId").and_then(Value::as_str).map(str::to_string);
        let user = match &user_id {
            Some(id) => format!("user id {id}"),
            None => text("userName"),
        };
        ActionRow { action: text("action").replace('_', " "), user, dn: text("dn"), user_id }
    }
}

/// What a dry run would do.
pub struct Preview {
    pub run: RunRow,
    pub failed: bool,
    pub actions: Vec<ActionRow>,
    /// Actions beyond those listed.
    pub more: usize,
}

impl Preview {
    /// The ids of the users its actions name by id only, in order.
    fn ids_to_name(&self) -> Vec<String> {
        self.actions.iter().filter_map(|a| a.user_id.clone()).collect()
    }

    /// Their userNames (in the order of [`Preview::ids_to_name`]; `None`: not found).
    fn name_users(&mut self, names: Vec<Option<String>>) {
        let mut names = names.into_iter();
        for a in self.actions.iter_mut().filter(|a| a.user_id.is_some()) {
            if let Some(Some(name)) = names.next() {
                a.user = format!("{name} (id {})", a.user_id.as_deref().unwrap_or_default());
            }
        }
    }

    fn of(s: &Summary) -> Self {
        Preview {
            run: RunRow::of(&s.run),
            failed: s.run.status == RunStatus::Failed,
            actions: s.actions.iter().take(SHOWN_ACTIONS).map(ActionRow::of).collect(),
            more: s.actions.len().saturating_sub(SHOWN_ACTIONS),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "sync.html")]
struct SyncPage {
    nav: Nav,
    csrf: String,
    configured: bool,
    not_configured: &'static str,
    /// A run was started: its id and kind.
    started: Option<RunRow>,
    /// Why the run or preview asked for could not start.
    problem: Option<String>,
    preview: Option<Preview>,
    /// A run of the history is running now.
    running: bool,
    runs: Vec<RunRow>,
    total: i64,
    page: i64,
    last_page: i64,
}

/// What the page shows besides the history.
#[derive(Default)]
struct Extra {
    started: Option<RunRow>,
    problem: Option<String>,
    preview: Option<Preview>,
}

async fn page(console: web::Data<Arc<Console>>, Admin(me): Admin, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let page = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.iter().find(|(k, _)| k == "page").and_then(|(_, v)| v.parse::<i64>().ok()))
        .unwrap_or(1)
        .max(1);
    sync_page(&console, &req, &me, page, Extra::default(), StatusCode::OK).await
}

async fn sync_page(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    page: i64,
    extra: Extra,
    status: StatusCode,
) -> Result<HttpResponse, Problem> {
    let runs = console.services.runs.clone();
    let offset = (page - 1).saturating_mul(PAGE_SIZE);
    let (total, list) = blocking(me, move || runs.list(offset, PAGE_SIZE)).await?;
    let rows: Vec<RunRow> = list.iter().map(RunRow::of).collect();
    let page = SyncPage {
        nav: Nav::new(me, "sync"),
        csrf: me.csrf.clone(),
        configured: console.sync.is_some(),
        not_configured: NOT_CONFIGURED,
        started: extra.started,
        problem: extra.problem,
        preview: extra.preview,
        running: list.iter().any(|r| r.status == RunStatus::Running),
        runs: rows,
        total,
        page,
        last_page: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
    };
    Ok(page_with(req, status, page))
}

/// `full=true` for a full run, else incremental.
fn full(body: &[u8]) -> bool {
    Fields::parse(body).get("full") == "true"
}

fn syncer(console: &Console, me: &Me) -> Result<Arc<Syncer>, Problem> {
    console.sync.clone().ok_or_else(|| Problem::page_for(me, StatusCode::CONFLICT, "Not configured", NOT_CONFIGURED))
}

/// A run that could not start: one in progress is said on the page (409); a database failure
/// is logged and shown as a fixed sentence.
fn refusal(me: &Me, e: StartError) -> Result<String, Problem> {
    match e {
        StartError::Busy(holder) => {
            Ok(format!("A sync run is already in progress (run {holder}); try again when it has finished."))
        }
        StartError::Store(e) => Err(Problem::of(me, e)),
    }
}

/// Starts an incremental or full run in the background, then shows the page with it.
async fn run(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let syncer = syncer(&console, &me)?;
    let options = Options { full: full(&body), started_by: StartedBy::Console, ..Options::default() };
    // Taking the lease is a database write: off the HTTP worker.
    let started = web::block(move || syncer.spawn(options)).await.map_err(|_| Problem::stopping(&me))?;
    match started {
        Ok(run) => {
            tracing::info!(run = %run.id, kind = run.kind.as_str(), operator = %me.name, "sync run started from the console");
            sync_page(&console, &req, &me, 1, Extra { started: Some(RunRow::of(&run)), ..Extra::default() }, StatusCode::OK).await
        }
        Err(e) => {
            let problem = refusal(&me, e)?;
            sync_page(&console, &req, &me, 1, Extra { problem: Some(problem), ..Extra::default() }, StatusCode::CONFLICT).await
        }
    }
}

/// A dry run (nothing written, nothing recorded, nothing touched in LDAP), waited for; the
/// page lists what it would do.
async fn preview(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let syncer = syncer(&console, &me)?;
    let options = Options { full: full(&body), dry_run: true, started_by: StartedBy::Console, ..Options::default() };
    match syncer.run(options).await {
        Ok(summary) => {
            let mut preview = Preview::of(&summary);
            // A deactivation names the user by id: show its userName too.
            let (users, ids): (_, Vec<String>) = (console.services.users.clone(), preview.ids_to_name());
            let names =
                blocking(&me, move || Ok(ids.iter().map(|id| users.get(id).ok().map(|u| u.user_name().to_string())).collect()))
                    .await?;
            preview.name_users(names);
            let extra = Extra { preview: Some(preview), ..Extra::default() };
            sync_page(&console, &req, &me, 1, extra, StatusCode::OK).await
        }
        Err(e) => {
            let problem = refusal(&me, e)?;
            sync_page(&console, &req, &me, 1, Extra { problem: Some(problem), ..Extra::default() }, StatusCode::CONFLICT).await
        }
    }
}
