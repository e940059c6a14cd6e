//! The Tokens page (administrators): the API's bearer tokens listed (never their secrets), a
//! new one created (its secret shown once, with a copy button), one revoked after a
//! confirmation. The same `domain::tokens::Tokens` calls as `provisiond token`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;

use super::page::{blocking, capital, page_with, segment, Admin, Fields, Me, Nav, Problem};
use super::users::time;
use super::Console;
use crate::domain::tokens::{Scope, TokenInfo};
use crate::domain::Error;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list))
        .route("/tokens", web::post().to(create))
        .route("/tokens/{name}/revoke", web::get().to(confirm))
        .route("/tokens/{name}/revoke", web::post().to(revoke));
}

/// The scopes a token may have, in the order the form shows them, with what each allows.
pub const SCOPES: &[(&str, &str)] = &[
    ("scim", "SCIM provisioning (/scim/v2)"),
    ("mfa", "enrolment and verification of second factors"),
    ("admin", "resets, audit, sync and operations (/api/v1)"),
    ("ssf", "Shared Signals receivers: their own streams and poll delivery (/ssf)"),
];

/// A token as the list shows it.
pub struct Row {
    pub name: String,
    /// The name in a path.
    pub path: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
}

impl Row {
    fn of(t: &TokenInfo) -> Self {
        Row {
            name: t.name.clone(),
            path: segment(&t.name),
            scopes: t.scopes.replace(',', ", "),
            created: time(t.created_at),
            last_used: t.last_used_at.map(time).unwrap_or_else(|| "never".into()),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
struct TokensPage<'a> {
    nav: Nav,
    csrf: &'a str,
    rows: Vec<Row>,
    scopes: &'static [(&'static str, &'static str)],
    /// What the create form had, shown again with its problem.
    name: &'a str,
    ticked: &'a [String],
    problem: Option<&'a str>,
    /// A token just revoked.
    revoked: Option<&'a str>,
}

impl TokensPage<'_> {
    fn is_ticked(&self, scope: &str) -> bool {
        self.ticked.iter().any(|s| s == scope)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "token_created.html")]
struct CreatedPage<'a> {
    nav: Nav,
    name: &'a str,
    scopes: String,
    secret: &'a str,
}

#[derive(Template, WebTemplate)]
#[template(path = "token_revoke.html")]
struct RevokePage<'a> {
    nav: Nav,
    csrf: &'a str,
    row: &'a Row,
}

async fn list(console: web::Data<Arc<Console>>, Admin(me): Admin, req: HttpRequest) -> Result<HttpResponse, Problem> {
    tokens_page(&console, &req, &me, Form::default(), StatusCode::OK).await
}

/// What the page shows besides the list.
#[derive(Default)]
struct Form<'a> {
    name: &'a str,
    ticked: Vec<String>,
    problem: Option<String>,
    revoked: Option<&'a str>,
}

async fn tokens_page(
    console: &Console,
    req: &HttpRequest,
    me: &Me,
    form: Form<'_>,
    status: StatusCode,
) -> Result<HttpResponse, Problem> {
    let tokens = console.services.tokens.clone();
    let infos = blocking(me, move || tokens.list()).await?;
    let page = TokensPage {
        nav: Nav::new(me, "tokens"),
        csrf: &me.csrf,
        rows: infos.iter().map(Row::of).collect(),
        scopes: SCOPES,
        name: form.name,
        ticked: &form.ticked,
        problem: form.problem.as_deref(),
        revoked: form.revoked,
    };
    Ok(page_with(req, status, page))
}

/// Creates a token; its secret is shown once, on the page this answers.
async fn create(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let fields = Fields::parse(&body);
    let name = fields.get("name");
    let ticked = fields.all("scope");
    let again = |problem: String, ticked: Vec<String>| Form { name, ticked, problem: Some(problem), revoked: None };
    let scopes = match crate::domain::tokens::parse_scopes(&ticked.join(",")) {
        Ok(s) => s,
        Err(e) => return tokens_page(&console, &req, &me, again(capital(&e.to_string()), ticked), StatusCode::BAD_REQUEST).await,
    };
    let (tokens, owned) = (console.services.tokens.clone(), name.to_string());
    let wanted = scopes.clone();
    let created = web::block(move || tokens.create(&owned, &wanted)).await.map_err(|_| Problem::stopping(&me))?;
    let secret = match created {
        Ok(secret) => secret,
        Err(Error::Invalid { detail, .. }) => {
            return tokens_page(&console, &req, &me, again(capital(&detail), ticked), StatusCode::BAD_REQUEST).await
        }
        Err(Error::Conflict { detail, .. }) => {
            return tokens_page(&console, &req, &me, again(capital(&detail), ticked), StatusCode::CONFLICT).await
        }
        Err(e) => return Err(Problem::of(&me, e)),
    };
    tracing::info!(token = %name, operator = %me.name, "token created from the console");
    let scopes = scopes.iter().map(|s: &Scope| s.as_str()).collect::<Vec<_>>().join(", ");
    Ok(page_with(&req, StatusCode::OK, CreatedPage { nav: Nav::new(&me, "tokens"), name, scopes, secret: secret.expose() }))
}

/// The confirmation as a page of its own (without JavaScript; with it, the list's dialog).
async fn confirm(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let name = name.into_inner();
    let tokens = console.services.tokens.clone();
    let infos = blocking(&me, move || tokens.list()).await?;
    let Some(info) = infos.iter().find(|t| t.name == name) else {
        return Err(Problem::not_found(&me, format!("No token called {name:?}.")));
    };
    let row = Row::of(info);
    Ok(page_with(&req, StatusCode::OK, RevokePage { nav: Nav::new(&me, "tokens"), csrf: &me.csrf, row: &row }))
}

/// Revokes a token: it stops working at once; the list says so.
async fn revoke(
    console: web::Data<Arc<Console>>,
    Admin(me): Admin,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let name = name.into_inner();
    let (tokens, owned) = (console.services.tokens.clone(), name.clone());
    blocking(&me, move || tokens.revoke(&owned)).await?;
    tracing::info!(token = %name, operator = %me.name, "token revoked from the console");
    tokens_page(&console, &req, &me, Form { revoked: Some(&name), ..Form::default() }, StatusCode::OK).await
}
