//! Signing in and out, and the one-time setup page an operator's link opens.

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use serde::Deserialize;

use super::guard::COOKIE;
use super::page::{capital, page_with, see_other, Me, Nav, Problem};
use super::{qr, Console};
use crate::domain::operators::SignIn;
use crate::domain::Error;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sign-in", web::get().to(sign_in_page))
        .route("/sign-in", web::post().to(sign_in))
        .route("/sign-out", web::post().to(sign_out))
        .route("/setup/{token}", web::get().to(setup_page))
        .route("/setup/{token}", web::post().to(setup));
}

#[derive(Template, WebTemplate)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    nav: Nav,
    name: &'a str,
    problem: Option<&'a str>,
}

async fn sign_in_page(req: HttpRequest, me: Option<Me>) -> HttpResponse {
    if me.is_some() {
        return see_other("/console/users");
    }
    page_with(&req, StatusCode::OK, SignInPage { nav: Nav::none(), name: "", problem: None })
}

#[derive(Deserialize)]
struct SignInForm {
    name: String,
    password: String,
    code: String,
}

/// What a refused sign-in says, whichever part was wrong.
const REFUSED: &str = "The name, password or code is not right.";

async fn sign_in(console: web::Data<Arc<Console>>, req: HttpRequest, form: web::Form<SignInForm>) -> HttpResponse {
    let form = form.into_inner();
    let services = console.services.clone();
    let name = form.name.clone();
    let answer = web::block(move || match services.operators.sign_in(&form.name, &form.password, &form.code)? {
        // A new session at every sign-in: an id planted before it is worth nothing.
        SignIn::Accepted(op) => services.sessions.start(&op.name, op.role).map(|(id, _)| Ok(id)),
        other => Ok(Err(other)),
    })
    .await;
    let page =
        |status, problem: &str| page_with(&req, status, SignInPage { nav: Nav::none(), name: &name, problem: Some(problem) });
    match answer {
        Ok(Ok(Ok(id))) => {
            let mut res = see_other("/console/users");
            let _ = res.add_cookie(&session_cookie(id.expose()));
            res
        }
        Ok(Ok(Err(SignIn::LockedOut { retry_after_secs }))) => {
            let minutes = retry_after_secs.div_ceil(60);
            let problem =
                format!("Too many wrong sign-ins: try again in {minutes} minute{}.", if minutes == 1 { "" } else { "s" });
            let mut res = page(StatusCode::TOO_MANY_REQUESTS, &problem);
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
            res
        }
        Ok(Ok(Err(_))) => page(StatusCode::UNAUTHORIZED, REFUSED),
        Ok(Err(e)) => {
            tracing::error!(error = %crate::logging::chain(&e), "console sign-in failed");
            page(StatusCode::SERVICE_UNAVAILABLE, "The console cannot sign anyone in right now; try again shortly.")
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

/// `Secure`: browsers send it over https only, and to http://localhost (see the README's
/// Console section); `SameSite=Strict`: never with a request another site starts.
fn session_cookie(id: &str) -> Cookie<'static> {
    Cookie::build(COOKIE, id.to_string()).path("/console").http_only(true).secure(true).same_site(SameSite::Strict).finish()
}

async fn sign_out(console: web::Data<Arc<Console>>, me: Me) -> HttpResponse {
    let sessions = console.services.sessions.clone();
    let id = me.session_id().to_string();
    if let Ok(Err(e)) = web::block(move || sessions.end(&id)).await {
        tracing::warn!(error = %crate::logging::chain(&e), "console sign-out could not end the session");
    }
    let mut res = see_other("/console/sign-in");
    let mut gone = session_cookie("");
    gone.make_removal();
    let _ = res.add_cookie(&gone);
    res
}

#[derive(Template, WebTemplate)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    nav: Nav,
    operator: &'a str,
    qr_svg: &'a str,
    secret: &'a str,
    otpauth_uri: &'a str,
    problem: Option<&'a str>,
}

#[derive(Template, WebTemplate)]
#[template(path = "setup_done.html")]
struct SetupDone<'a> {
    nav: Nav,
    codes: &'a [String],
}

/// What a link that is unknown, used or expired shows (one page for all three).
fn dead_link() -> HttpResponse {
    let problem = Problem::Page {
        status: StatusCode::NOT_FOUND,
        me: None,
        title: "Setup link not valid",
        detail: "This setup link is unknown, used or expired. Ask an administrator for a new one \
                 (provisiond operator reset NAME)."
            .into(),
    };
    actix_web::ResponseError::error_response(&problem)
}

async fn setup_page(console: web::Data<Arc<Console>>, req: HttpRequest, token: web::Path<String>) -> HttpResponse {
    setup_form(&console, &req, token.into_inner(), StatusCode::OK, None).await
}

/// The setup form, with the secret waiting for this link.
async fn setup_form(
    console: &Console,
    req: &HttpRequest,
    token: String,
    status: StatusCode,
    problem: Option<&str>,
) -> HttpResponse {
    let operators = console.services.operators.clone();
    match web::block(move || operators.begin_setup(&token)).await {
        Ok(Ok((operator, enrolment))) => {
            let qr_svg = qr::svg(&enrolment.otpauth_uri).unwrap_or_default();
            page_with(
                req,
                status,
                SetupPage {
                    nav: Nav::none(),
                    operator: &operator,
                    qr_svg: &qr_svg,
                    secret: &enrolment.secret_base32,
                    otpauth_uri: &enrolment.otpauth_uri,
                    problem,
                },
            )
        }
        Ok(Err(Error::NotFound(_))) => dead_link(),
        Ok(Err(e)) => {
            tracing::error!(error = %crate::logging::chain(&e), "console setup page failed");
            HttpResponse::ServiceUnavailable().body("The setup page cannot be shown right now; try again shortly.")
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

#[derive(Deserialize)]
struct SetupForm {
    password: String,
    password_again: String,
    code: String,
}

async fn setup(
    console: web::Data<Arc<Console>>,
    req: HttpRequest,
    token: web::Path<String>,
    form: web::Form<SetupForm>,
) -> HttpResponse {
    let token = token.into_inner();
    let form = form.into_inner();
    if form.password != form.password_again {
        return setup_form(&console, &req, token, StatusCode::BAD_REQUEST, Some("The two passwords differ.")).await;
    }
    let operators = console.services.operators.clone();
    let link = token.clone();
    match web::block(move || operators.finish_setup(&link, &form.password, &form.code)).await {
        Ok(Ok(codes)) => page_with(&req, StatusCode::OK, SetupDone { nav: Nav::none(), codes: &codes.0 }),
        Ok(Err(Error::NotFound(_))) => dead_link(),
        Ok(Err(Error::Invalid { detail, .. } | Error::Conflict { detail, .. })) => {
            setup_form(&console, &req, token, StatusCode::BAD_REQUEST, Some(&format!("{}.", capital(&detail)))).await
        }
        Ok(Err(e)) => {
            tracing::error!(error = %crate::logging::chain(&e), "console setup failed");
            HttpResponse::ServiceUnavailable().body("The setup cannot be finished right now; try again shortly.")
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}
