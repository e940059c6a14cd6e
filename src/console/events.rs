//! The Events page (administrators): every receiver of events — the webhooks of the
//! configuration and the Shared Signals streams receivers created — with what it is owed (the
//! backlog and the age of its oldest event), what it took, what was dropped and its last error.
//! Read-only; three queries however many users, events and receivers (`Outbox::receivers`,
//! `Streams::all`).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use chrono::NaiveDateTime;

use super::page::{blocking, page_with, Admin, Nav, Problem};
use super::users::time;
use super::Console;
use crate::config::{redact, Webhook};
use crate::domain::events::ReceiverState;
use crate::domain::streams::Stream;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(page));
}

/// What a receiver is owed and how its deliveries went, as both tables show it.
pub struct Queue {
    pub backlog: i64,
    /// The age of the oldest event still owed ("" with an empty backlog), and its time.
    pub oldest_age: String,
    pub oldest_at: String,
    pub delivered: i64,
    /// When the receiver last took a message: the time, and how long ago.
    pub last_delivered: String,
    pub last_delivered_ago: String,
    pub dropped: i64,
    pub failed_attempts: i64,
    pub last_error: Option<String>,
    pub last_error_at: String,
    pub last_error_ago: String,
    /// The last attempt failed (no delivery since the last error): the error is current.
    pub failing: bool,
}

impl Queue {
    /// `state` is `None` for a receiver the deliverer has not counted yet (just configured).
    fn of(state: Option<&ReceiverState>, now: NaiveDateTime) -> Self {
        let empty = ReceiverState::default();
        let s = state.unwrap_or(&empty);
        Queue {
            backlog: s.backlog,
            oldest_age: s.waiting(now).map(age).unwrap_or_default(),
            oldest_at: s.oldest.map(time).unwrap_or_default(),
            delivered: s.delivered,
            last_delivered: s.last_delivered_at.map(time).unwrap_or_default(),
            last_delivered_ago: s.last_delivered_at.map(|t| age(now - t)).unwrap_or_default(),
            dropped: s.dropped,
            failed_attempts: s.failed_attempts,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at.map(time).unwrap_or_default(),
            last_error_ago: s.last_error_at.map(|t| age(now - t)).unwrap_or_default(),
            failing: s.last_error.is_some() && s.last_error_at >= s.last_delivered_at,
        }
    }
}

/// A `[[webhooks]]` entry (a password in its URL shown as `***`, as every URL on the page).
pub struct WebhookRow {
    pub name: String,
    pub url: String,
    pub events: String,
    pub queue: Queue,
}

/// A Shared Signals stream. Its authorization header is never shown.
pub struct StreamRow {
    pub id: String,
    pub description: String,
    /// The `ssf` token that created it; `None`: an `admin` token.
    pub owner: Option<String>,
    /// Push (else poll), and where: the receiver's URL, or the endpoint it polls.
    pub push: bool,
    pub url: String,
    /// The event types delivered: short name and URI.
    pub events: Vec<(String, String)>,
    pub status: String,
    pub status_reason: String,
    pub queue: Queue,
}

#[derive(Template, WebTemplate)]
#[template(path = "events.html")]
struct EventsPage {
    nav: Nav,
    webhooks: Vec<WebhookRow>,
    streams: Vec<StreamRow>,
    /// `[events]`: how long a failing event is retried, and the longest wait between attempts.
    max_age: String,
    max_backoff: String,
    ssf_configured: bool,
}

async fn page(console: web::Data<Arc<Console>>, Admin(me): Admin, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let (outbox, streams) = (console.services.outbox.clone(), console.services.streams.clone());
    let (states, streams, now) = blocking(&me, move || Ok((outbox.receivers()?, streams.all()?, outbox.now()))).await?;
    let state = |receiver: &str| states.iter().find(|s| s.receiver == receiver);
    let events = &console.config.events;
    let page = EventsPage {
        nav: Nav::new(&me, "events"),
        webhooks: console.config.webhooks.iter().map(|w| webhook_row(w, state(&w.receiver()), now)).collect(),
        streams: streams.iter().map(|s| stream_row(s, state(&s.receiver()), now)).collect(),
        max_age: age(chrono::Duration::seconds(events.max_age as i64)),
        max_backoff: age(chrono::Duration::seconds(events.max_backoff as i64)),
        ssf_configured: console.config.ssf.is_some(),
    };
    Ok(page_with(&req, StatusCode::OK, page))
}

fn webhook_row(w: &Webhook, state: Option<&ReceiverState>, now: NaiveDateTime) -> WebhookRow {
    WebhookRow {
        name: w.name.clone(),
        url: redact(&w.url),
        events: if w.events.is_empty() { "all".into() } else { w.events.join(", ") },
        queue: Queue::of(state, now),
    }
}

fn stream_row(s: &Stream, state: Option<&ReceiverState>, now: NaiveDateTime) -> StreamRow {
    StreamRow {
        id: s.id.clone(),
        description: s.description.clone().unwrap_or_default(),
        owner: s.owner.clone(),
        push: s.is_push(),
        url: redact(s.endpoint_url.as_deref().unwrap_or_default()),
        // An event type's URI ends in its name (`…/caep/event-type/credential-change`).
        events: s.events_delivered.iter().map(|uri| (uri.rsplit('/').next().unwrap_or(uri).to_string(), uri.clone())).collect(),
        status: s.status.clone(),
        status_reason: s.status_reason.clone().unwrap_or_default(),
        queue: Queue::of(state, now),
    }
}

/// A span as the page says it: its two largest units ("45 s", "12 min", "3 h 20 min", "2 d 4 h").
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| match small {
        0 => format!("{big} {big_unit}"),
        _ => format!("{big} {big_unit} {small} {small_unit}"),
    };
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{minutes} min"),
        3600..=86399 => two(hours, "h", minutes, "min"),
        _ => two(days, "d", hours, "h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_is_said_in_its_two_largest_units() {
        let said = |s: i64| age(chrono::Duration::seconds(s));
        assert_eq!(
            [said(-3), said(0), said(59), said(60), said(3599), said(3600), said(3660), said(86400), said(3 * 86400 + 7200 + 59)],
            ["0 s", "0 s", "59 s", "1 min", "59 min", "1 h", "1 h 1 min", "1 d", "3 d 2 h"]
        );
    }

    #[test]
    fn an_error_is_current_until_a_delivery_follows_it() {
        let at = |m: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap().and_hms_opt(3, m, 0).unwrap();
        let state = |error: Option<u32>, delivered: Option<u32>| ReceiverState {
            last_error: error.map(|_| "HTTP 500".into()),
            last_error_at: error.map(at),
            last_delivered_at: delivered.map(at),
            ..ReceiverState::default()
        };
        let failing = |error, delivered| Queue::of(Some(&state(error, delivered)), at(30)).failing;
        assert!(failing(Some(5), None));
        assert!(failing(Some(5), Some(4)));
        assert!(!failing(Some(5), Some(6)));
        assert!(!failing(None, Some(6)));
        assert!(!Queue::of(None, at(30)).failing);
    }

    #[test]
    fn the_oldest_age_counts_from_now_and_only_with_a_backlog() {
        let at = |m: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap().and_hms_opt(3, m, 0).unwrap();
        let owed = ReceiverState { backlog: 2, oldest: Some(at(10)), ..ReceiverState::default() };
        assert_eq!(Queue::of(Some(&owed), at(25)).oldest_age, "15 min");
        let none = ReceiverState { backlog: 0, ..owed };
        assert_eq!(Queue::of(Some(&none), at(25)).oldest_age, "");
    }
}
