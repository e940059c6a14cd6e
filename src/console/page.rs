//! What every page shares: the operator signed in ([`Me`], and [`Admin`] for the pages of
//! administrators), the navigation, and the pages of refusals and failures ([`Problem`]).

use std::future::{ready, Ready};

use actix_web::body::BoxBody;
use actix_web::http::{header, StatusCode};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError};
use askama::Template;

use crate::domain::audit::{Actor, Origin};
use crate::domain::sessions::{Role, Session};
use crate::domain::Error;

/// The operator of a request, found by its session cookie. A handler taking `Me` is only
/// reached signed in; one without a session is sent to the sign-in page.
#[derive(Clone)]
pub struct Me {
    session_id: String,
    /// The request's id, for the audit events it writes.
    request_id: Option<String>,
    pub name: String,
    pub role: Role,
    /// Every form sends it back (see `guard`).
    pub csrf: String,
}

impl Me {
    pub(super) fn new(session_id: String, s: Session, request_id: Option<String>) -> Self {
        Me { session_id, request_id, name: s.operator, role: s.role, csrf: s.csrf_token }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Who acts, for the audit trail: origin `console`, the operator's name, this request.
    pub fn actor(&self) -> Actor {
        Actor::new(Origin::Console, self.name.clone(), self.request_id.clone())
    }

    pub(super) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Compared in constant time: the token is a secret.
    pub(super) fn csrf_matches(&self, sent: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

impl std::fmt::Debug for Me {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Me").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

impl FromRequest for Me {
    type Error = Problem;
    type Future = Ready<Result<Me, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(req.extensions().get::<Me>().cloned().ok_or(Problem::SignIn))
    }
}

/// The operator of a request to an administrators' page; a helpdesk operator gets a 403 page.
pub struct Admin(pub Me);

impl FromRequest for Admin {
    type Error = Problem;
    type Future = Ready<Result<Admin, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(match req.extensions().get::<Me>().cloned() {
            Some(me) if me.is_admin() => Ok(Admin(me)),
            Some(me) => Err(Problem::forbidden(Some(&me), "This page is for administrators; your role is helpdesk.")),
            None => Err(Problem::SignIn),
        })
    }
}

/// The navigation of a page: who is signed in, and which section is shown.
pub struct Nav {
    pub me: Option<Me>,
    pub section: &'static str,
}

impl Nav {
    pub fn new(me: &Me, section: &'static str) -> Self {
        Nav { me: Some(me.clone()), section }
    }

    /// Pages before sign-in.
    pub fn none() -> Self {
        Nav { me: None, section: "" }
    }

    /// The session's CSRF token, for a page's forms.
    pub fn csrf(&self) -> &str {
        self.me.as_ref().map(|m| m.csrf.as_str()).unwrap_or_default()
    }

    /// `aria-current` for the link of `section`.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// A page (a template deriving askama_web's `WebTemplate`, so an actix `Responder`) answered
/// with `status`.
pub fn page_with<T: Responder>(req: &HttpRequest, status: StatusCode, page: T) -> HttpResponse {
    page.customize().with_status(status).respond_to(req).map_into_boxed_body()
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage<'a> {
    nav: Nav,
    title: &'a str,
    detail: &'a str,
}

/// A request the console refuses or cannot answer, as a page.
#[derive(Debug)]
pub enum Problem {
    /// No session: to the sign-in page.
    SignIn,
    Page {
        status: StatusCode,
        /// Boxed: a `Problem` travels in every handler's `Result`.
        me: Option<Box<Me>>,
        title: &'static str,
        detail: String,
    },
}

impl Problem {
    fn page(status: StatusCode, me: Option<&Me>, title: &'static str, detail: impl Into<String>) -> Self {
        Problem::Page { status, me: me.cloned().map(Box::new), title, detail: detail.into() }
    }

    pub fn forbidden(me: Option<&Me>, detail: &str) -> Self {
        Problem::page(StatusCode::FORBIDDEN, me, "Not allowed", detail)
    }

    pub fn bad_request(detail: &str) -> Self {
        Problem::page(StatusCode::BAD_REQUEST, None, "Bad request", detail)
    }

    pub fn too_large() -> Self {
        Problem::page(StatusCode::PAYLOAD_TOO_LARGE, None, "Too large", "The form is larger than the console accepts.")
    }

    /// A page of its own words for `me`.
    pub fn page_for(me: &Me, status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Problem::page(status, Some(me), title, detail)
    }

    pub fn not_found(me: &Me, detail: impl Into<String>) -> Self {
        Problem::page(StatusCode::NOT_FOUND, Some(me), "Not found", detail)
    }

    /// What a domain error shows: its own words where they are the operator's business; a
    /// store failure is logged and shown as a fixed sentence.
    pub fn of(me: &Me, e: Error) -> Self {
        match e {
            Error::NotFound(detail) => Problem::not_found(me, detail),
            Error::Conflict { detail, .. } => Problem::page(StatusCode::CONFLICT, Some(me), "Conflict", detail),
            Error::PreconditionFailed => {
                Problem::page(StatusCode::CONFLICT, Some(me), "Conflict", "It changed meanwhile; reload and try again.")
            }
            Error::Invalid { detail, .. } => Problem::page(StatusCode::BAD_REQUEST, Some(me), "Not accepted", detail),
            Error::Busy(e) => {
                tracing::warn!(error = %crate::logging::chain(&e), "console request found the database busy");
                Problem::page(StatusCode::SERVICE_UNAVAILABLE, Some(me), "Busy", "The database is busy; try again shortly.")
            }
            Error::Store(e) => {
                tracing::error!(error = %crate::logging::chain(&e), "console request failed");
                Problem::page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some(me),
                    "Failed",
                    "The console could not do this; the daemon log has the cause.",
                )
            }
        }
    }

    /// A blocking call's thread pool is gone (the daemon is stopping).
    pub fn stopping(me: &Me) -> Self {
        Problem::page(StatusCode::SERVICE_UNAVAILABLE, Some(me), "Stopping", "The daemon is stopping; try again shortly.")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::SignIn => f.write_str("not signed in"),
            Problem::Page { title, detail, .. } => write!(f, "{title}: {detail}"),
        }
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        match self {
            Problem::SignIn => StatusCode::SEE_OTHER,
            Problem::Page { status, .. } => *status,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        match self {
            Problem::SignIn => see_other("/console/sign-in"),
            // An error is answered without its request at hand: rendered here, not as a Responder.
            Problem::Page { status, me, title, detail } => {
                match (ProblemPage { nav: Nav { me: me.as_deref().cloned(), section: "" }, title, detail }).render() {
                    Ok(body) => HttpResponse::build(*status).content_type("text/html; charset=utf-8").body(body),
                    Err(e) => {
                        tracing::error!(error = %e, "console error page failed to render");
                        HttpResponse::build(*status).finish()
                    }
                }
            }
        }
    }
}

/// Runs a domain call off the HTTP workers; its error becomes the page for `me`.
pub async fn blocking<T: Send + 'static>(
    me: &Me,
    f: impl FnOnce() -> crate::domain::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    match actix_web::web::block(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Problem::of(me, e)),
        Err(_) => Err(Problem::stopping(me)),
    }
}

/// The fields of a form or query string, in order (a name may repeat: `id=…&id=…`).
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(bytes: &[u8]) -> Self {
        Fields(serde_urlencoded::from_bytes(bytes).unwrap_or_default())
    }

    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.0.iter().filter(|(k, v)| k == name && seen.insert(v.clone())).map(|(_, v)| v.clone()).collect()
    }
}

/// A domain sentence as one of a page: its first letter in capitals.
pub fn capital(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A name as one segment of a path (names may hold `/`, spaces or markup).
pub use crate::config::percent_encode as segment;
