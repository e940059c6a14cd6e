//! The Operators page (administrators): who may sign in to the console, an operator added (its
//! one-time setup link shown), one disabled (its sessions end) or reset (a new setup link).
//! The same `domain::operators::Operators` calls as `provisiond operator`, with the signed-in
//! administrator as the audit actor. An operator cannot disable or reset itself here: that
//! would lock it out of the page it stands on (another administrator, or the command line,
//! can).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;

use super::page::{blocking, capital, page_with, segment, Admin, Fields, Me, Nav, Problem};
use super::users::time;
use super::Console;
use crate::domain::operators::{Operator, Role, State, SETUP_LINK_HOURS};
use crate::domain::Error;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/operators", web::get().to(list))
        .route("/operators", web::post().to(add))
        .route("/operators/{name}/{action}", web::get().to(confirm))
        .route("/operators/{name}/{action}", web::post().to(act));
}

/// What can be done to an operator from the list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Disable,
    Reset,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "disable" => Some(Action::Disable),
            "reset" => Some(Action::Reset),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Disable => "disable",
            Action::Reset => "reset",
        }
    }
}

/// Why the console does not let an operator act on itself.
pub fn not_yourself(action: Action) -> String {
    format!(
        "You cannot {} your own operator from the console: you would lose the session you are using. \
         Ask another administrator, or use `provisiond operator {} NAME` on the server.",
        action.as_str(),
        action.as_str()
    )
}

/// An operator as the list shows it.
pub struct Row {
    pub name: String,
    /// The name in a path.
    pub path: String,
    pub role: &'static str,
    pub state: &'static str,
    pub disabled: bool,
    pub created: String,
    pub last_sign_in: String,
    /// The operator signed in.
    pub me: bool,
}

impl Row {
    fn of(o: &Operator, me: &Me) -> Self {
        Row {
            name: o.name.clone(),
            path: segment(&o.name),
            role: o.role.as_str(),
            state: o.state.as_str(),
            disabled: o.state == State::Disabled,
            created: time(o.created_at),
            last_sign_in: o.last_sign_in_at.map(time).unwrap_or_else(|| "never".into()),
            me: o.name == me.name,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "operators.html")]
struct OperatorsPage<'a> {
    nav: Nav,
    csrf: &'a str,
    rows: Vec<Row>,
    name: &'a str,
    role: &'a str,
    problem: Option<&'a str>,
    /// What was just done, said above the list.
    done: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator_link.html")]
struct LinkPage<'a> {
    nav: Nav,
    title: String,
    name: &'a str,
    link: &'a str,
    hours: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator_confirm.html")]
struct ConfirmPage<'a> {
    nav: Nav,
    csrf: &'a str,
    row: &'a Row,
    action: &'a str,
}

/// What the page shows besides the list.
#[derive(Default)]
struct Extra<'a> {
    name: &'a str,
    role: &'a str,
    problem: Option<String>,
    done: Option<String>,
}

async fn list(console: web::Data<Arc<Console>>, Admin(me): Admin, req: HttpRequest) -> Result<HttpResponse, Problem> {
    operators_page(&console, &req, &me, Extra::default(), StatusCode::OK).await
}

async fn operators_page(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    extra: Extra<'_>,
    status: StatusCode,
) -> Result<HttpResponse, Problem> {
    let operators = console.services.operators.clone();
    let list = blocking(me, move || operators.list()).await?;
    let page = OperatorsPage {
        nav: Nav::new(me, "operators"),
        csrf: &me.csrf,
        rows: list.iter().map(|o| Row::of(o, me)).collect(),
        name: extra.name,
        role: extra.role,
        problem: extra.problem.as_deref(),
        done: extra.done.as_deref(),
    };
    Ok(page_with(req, status, page))
}

fn link_page(console: &Console, req: &HttpRequest, me: &Me, title: String, name: &str, token: &str) -> HttpResponse {
    let link = console.config.server.setup_link(token);
    page_with(req, StatusCode::OK, LinkPage { nav: Nav::new(me, "operators"), title, name, link: &link, hours: SETUP_LINK_HOURS })
}

/// Adds an operator; the page shows its setup link (once: only its hash is kept).
async fn add(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let fields = Fields::parse(&body);
    let (name, role_text) = (fields.get("name"), fields.get("role"));
    let again = |problem: String| Extra { name, role: role_text, problem: Some(problem), done: None };
    let role = match role_text {
        "admin" => Role::Admin,
        "helpdesk" => Role::Helpdesk,
        _ => {
            return operators_page(
                &console,
                &req,
                &me,
                again("Choose a role: admin or helpdesk.".into()),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    let (operators, owned, actor) = (console.services.operators.clone(), name.to_string(), me.actor());
    let added = web::block(move || operators.add(&owned, role, &actor)).await.map_err(|_| Problem::stopping(&me))?;
    let token = match added {
        Ok(token) => token,
        Err(Error::Invalid { detail, .. }) => {
            return operators_page(&console, &req, &me, again(capital(&detail)), StatusCode::BAD_REQUEST).await
        }
        Err(Error::Conflict { detail, .. }) => {
            return operators_page(&console, &req, &me, again(capital(&detail)), StatusCode::CONFLICT).await
        }
        Err(e) => return Err(Problem::of(&me, e)),
    };
    let title = format!("Operator {name} added ({})", role.as_str());
    Ok(link_page(&console, &req, &me, title, name, token.expose()))
}

/// The operator of a path, and the action asked for; refused for the operator signed in.
async fn target(console: &Console, me: &Me, name: String, action: &str) -> Result<(Row, Action), Problem> {
    let action = Action::parse(action).ok_or_else(|| Problem::not_found(me, "No such page."))?;
    if name == me.name {
        return Err(Problem::forbidden(Some(me), &not_yourself(action)));
    }
    let operators = console.services.operators.clone();
    let list = blocking(me, move || operators.list()).await?;
    let operator =
        list.iter().find(|o| o.name == name).ok_or_else(|| Problem::not_found(me, format!("No operator called {name:?}.")))?;
    Ok((Row::of(operator, me), action))
}

/// The confirmation as a page of its own (without JavaScript; with it, the list's dialog).
async fn confirm(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (name, action) = path.into_inner();
    let (row, action) = target(&console, &me, name, &action).await?;
    let page = ConfirmPage { nav: Nav::new(&me, "operators"), csrf: &me.csrf, row: &row, action: action.as_str() };
    Ok(page_with(&req, StatusCode::OK, page))
}

/// Disables an operator (the list says so) or resets it (the page shows its new setup link).
async fn act(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (name, action) = path.into_inner();
    let (row, action) = target(&console, &me, name, &action).await?;
    let (operators, owned, actor) = (console.services.operators.clone(), row.name.clone(), me.actor());
    match action {
        Action::Disable => {
            blocking(&me, move || operators.disable(&owned, &actor)).await?;
            let done = format!("Operator {} disabled: it can no longer sign in, and its sessions have ended.", row.name);
            operators_page(&console, &req, &me, Extra { done: Some(done), ..Extra::default() }, StatusCode::OK).await
        }
        Action::Reset => {
            let token = blocking(&me, move || operators.reset(&owned, &actor)).await?;
            let title = format!("Operator {} reset", row.name);
            Ok(link_page(&console, &req, &me, title, &row.name, token.expose()))
        }
    }
}
