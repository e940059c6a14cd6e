//! The audit trail as the console shows it: the Audit page (filters by type, user, origin,
//! actor and dates, newest first, paged) and the same events as a CSV download.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use askama_web::WebTemplate;
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::Value;

use super::page::{blocking, page_with, Fields, Me, Nav, Problem};
use super::Console;
use crate::domain::audit::{Origin, Query, EVENT_TYPES};
use crate::domain::{Error, Services};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(list)).route("/audit.csv", web::get().to(csv));
}

/// Rows per page.
const PAGE_SIZE: i64 = 50;
/// The most events a CSV holds (the newest that match); the page says so when more match.
pub const CSV_MAX_ROWS: i64 = 100_000;
/// Events read from the store at a time while a CSV is written.
const CSV_CHUNK: i64 = 1_000;

/// One event, as a row of a table.
pub struct EventRow {
    pub time: String,
    pub event_type: String,
    pub user_id: String,
    pub user_name: String,
    pub origin: String,
    pub actor: String,
    pub reason: String,
    pub request_id: String,
}

impl EventRow {
    /// From the JSON the audit service renders (the API's shape).
    pub fn of(e: &Value) -> Self {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        EventRow {
            time: text("time").replacen('T', " ", 1),
            event_type: text("type"),
            user_id: text("userId"),
            user_name: text("userName"),
            origin: text("origin"),
            actor: text("actor"),
            reason: text("reason"),
            request_id: text("requestId"),
        }
    }
}

/// What the filter form asks for; it travels in the query string of the paging links and of
/// the CSV link.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub event_type: String,
    /// A user id, or a userName.
    pub user: String,
    pub origin: String,
    pub actor: String,
    /// `YYYY-MM-DD`, inclusive, UTC.
    pub from: String,
    pub to: String,
    pub page: i64,
}

impl Filters {
    fn parse(query: &str) -> Self {
        let fields = Fields::parse(query.as_bytes());
        let get = |name: &str| fields.get(name).trim().to_string();
        let origin = get("origin");
        Filters {
            event_type: get("type"),
            user: get("user"),
            origin: if Origin::ALL.iter().any(|o| o.as_str() == origin) { origin } else { String::new() },
            actor: get("actor"),
            from: get("from"),
            to: get("to"),
            page: get("page").parse::<i64>().unwrap_or(1).max(1),
        }
    }

    /// The filters that are set (not the page), for query strings.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("type", &self.event_type),
            ("user", &self.user),
            ("origin", &self.origin),
            ("actor", &self.actor),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
        .collect()
    }

    fn query(&self) -> String {
        serde_urlencoded::to_string(self.fields()).unwrap_or_default()
    }

    /// The same events on another page.
    pub fn page_link(&self, page: i64) -> String {
        let mut fields = self.fields();
        let page = page.to_string();
        fields.push(("page", &page));
        format!("/console/audit?{}", serde_urlencoded::to_string(fields).unwrap_or_default())
    }

    /// The same events as a CSV file.
    pub fn csv_link(&self) -> String {
        match self.query() {
            q if q.is_empty() => "/console/audit.csv".into(),
            q => format!("/console/audit.csv?{q}"),
        }
    }

    /// The date range as times: from the start of `from` to the end of `to` (UTC); or what is
    /// wrong with it, in the operator's words.
    fn range(&self) -> Result<(Option<NaiveDateTime>, Option<NaiveDateTime>), String> {
        let day = |label: &str, text: &str| {
            if text.is_empty() {
                return Ok(None);
            }
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| format!("The {label} date {text:?} is not a date like 2026-01-31."))
        };
        let from = day("from", &self.from)?;
        let to = day("to", &self.to)?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(format!("The from date {} is after the to date {}.", self.from, self.to));
            }
        }
        let since = from.map(|d| d.and_time(chrono::NaiveTime::MIN));
        let until = to.and_then(|d| d.succ_opt()).map(|d| d.and_time(chrono::NaiveTime::MIN));
        Ok((since, until))
    }

    /// Which field the problem of `range` is about, for `aria-invalid`.
    pub fn date_invalid(&self, field: &str) -> bool {
        let text = if field == "from" { &self.from } else { &self.to };
        !text.is_empty() && NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err()
    }
}

/// The user the filter names: an id of a user, a userName (any case), or else the id of a user
/// that may be gone (its events stay). Answers the id and, when the user exists, its userName.
fn user_of(services: &Services, user: &str) -> crate::domain::Result<(String, Option<String>)> {
    let known = match services.users.get(user) {
        Ok(u) => Some(u),
        Err(Error::NotFound(_)) => services.users.find_by_user_name(user)?,
        Err(e) => return Err(e),
    };
    Ok(match known {
        Some(u) => (u.id.clone(), Some(u.user_name().to_string())),
        None => (user.to_string(), None),
    })
}

/// The store query of the filters; the user's name when the filter found one.
async fn query_of(console: &Console, me: &Me, filters: &Filters) -> Result<Result<(Query, Option<String>), String>, Problem> {
    let (since, until) = match filters.range() {
        Ok(range) => range,
        Err(problem) => return Ok(Err(problem)),
    };
    let (user_id, user_name) = if filters.user.is_empty() {
        (None, None)
    } else {
        let services = console.services.clone();
        let user = filters.user.clone();
        let (id, name) = blocking(me, move || user_of(&services, &user)).await?;
        (Some(id), name)
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let q = Query {
        user_id,
        event_type: some(&filters.event_type),
        origin: some(&filters.origin),
        actor: some(&filters.actor),
        since,
        until,
        ..Query::default()
    };
    Ok(Ok((q, user_name)))
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    nav: Nav,
    filters: &'a Filters,
    /// The user the user filter found, by name.
    user_name: Option<String>,
    rows: Vec<EventRow>,
    total: i64,
    last_page: i64,
    problem: Option<String>,
    event_types: &'static [&'static str],
    origins: Vec<&'static str>,
    csv_max: i64,
}

async fn list(console: web::Data<Arc<Console>>, me: Me, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let filters = Filters::parse(req.query_string());
    let page = |rows: Vec<EventRow>, total: i64, user_name: Option<String>, problem: Option<String>| {
        let last_page = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        page_with(
            &req,
            StatusCode::OK,
            AuditPage {
                nav: Nav::new(&me, "audit"),
                filters: &filters,
                user_name,
                rows,
                total,
                last_page,
                problem,
                event_types: EVENT_TYPES,
                origins: Origin::ALL.iter().map(|o| o.as_str()).collect(),
                csv_max: CSV_MAX_ROWS,
            },
        )
    };
    let (mut q, user_name) = match query_of(&console, &me, &filters).await? {
        Ok(found) => found,
        // Dates the operator is to fix are shown on the page, above an empty table.
        Err(problem) => return Ok(page(Vec::new(), 0, None, Some(problem))),
    };
    q.offset = (filters.page - 1).saturating_mul(PAGE_SIZE);
    q.limit = PAGE_SIZE;
    let audit = console.services.audit.clone();
    let (total, events) = blocking(&me, move || audit.list(&q)).await?;
    Ok(page(events.iter().map(EventRow::of).collect(), total, user_name, None))
}

/// Every matching event (up to `CSV_MAX_ROWS`, newest first) as CSV, written while it is read
/// from the store in chunks.
async fn csv(console: web::Data<Arc<Console>>, me: Me, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let filters = Filters::parse(req.query_string());
    let (q, _) = query_of(&console, &me, &filters)
        .await?
        .map_err(|problem| Problem::page_for(&me, StatusCode::BAD_REQUEST, "Not accepted", problem))?;
    // The first chunk is read before the answer starts: a store that fails now is an error
    // page, not a file cut short.
    let audit = console.services.audit.clone();
    let first_query = Query { limit: CSV_CHUNK.min(CSV_MAX_ROWS), ..q.clone() };
    let first = blocking(&me, move || audit.rows(&first_query)).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    let audit = console.services.audit.clone();
    actix_web::rt::task::spawn_blocking(move || {
        let mut chunk = first;
        let mut written: i64 = 0;
        let mut out = csv_line(&CSV_COLUMNS.map(|(title, _)| title));
        loop {
            written += chunk.len() as i64;
            for e in &chunk {
                out.push_str(&csv_line(&CSV_COLUMNS.map(|(_, key)| cell_text(e, key))));
            }
            if tx.blocking_send(Ok(web::Bytes::from(std::mem::take(&mut out)))).is_err() {
                return; // the browser went away
            }
            let last_id = chunk.last().and_then(|e| e.get("id")).and_then(Value::as_i64);
            let (Some(last_id), true) = (last_id, chunk.len() as i64 == CSV_CHUNK && written < CSV_MAX_ROWS) else { return };
            let next = Query { before_id: Some(last_id), limit: CSV_CHUNK.min(CSV_MAX_ROWS - written), ..q.clone() };
            chunk = match audit.rows(&next) {
                Ok(rows) => rows,
                Err(e) => {
                    // Headers are gone already: end the answer with an error, so that the
                    // download fails instead of looking complete.
                    tracing::error!(error = %e, "console audit CSV failed while reading events");
                    let _ = tx.blocking_send(Err(std::io::Error::other("reading the audit events failed")));
                    return;
                }
            };
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""))
        .streaming(body))
}

/// The CSV's columns: title, and the key of the event's JSON (the API's names).
const CSV_COLUMNS: [(&str, &str); 9] = [
    ("time", "time"),
    ("type", "type"),
    ("userId", "userId"),
    ("userName", "userName"),
    ("origin", "origin"),
    ("actor", "actor"),
    ("reason", "reason"),
    ("requestId", "requestId"),
    ("detail", "detail"),
];

/// A field of an event as text (`detail` as its JSON).
fn cell_text(e: &Value, key: &str) -> String {
    match e.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One CSV record, CRLF-terminated (RFC 4180).
pub(super) fn csv_line<S: AsRef<str>>(cells: &[S]) -> String {
    let mut line = cells.iter().map(|c| csv_cell(c.as_ref())).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// A cell a spreadsheet shows as text: one that starts like a formula (`=`, `+`, `-`, `@`, tab,
/// CR) gets a leading apostrophe; one with a comma, quote or line break is quoted.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        for (text, cell) in [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"http://x\",\"y\")", "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            ("a=b", "a=b"),
        ] {
            assert_eq!(csv_cell(text), cell, "{text:?}");
        }
        assert_eq!(csv_line(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn dates_are_whole_utc_days_and_a_wrong_one_is_named() {
        let f = Filters { from: "2026-01-31".into(), to: "2026-02-01".into(), ..Filters::default() };
        let (since, until) = f.range().unwrap();
        assert_eq!(since.unwrap().to_string(), "2026-01-31 00:00:00");
        assert_eq!(until.unwrap().to_string(), "2026-02-02 00:00:00");
        assert_eq!(Filters::default().range().unwrap(), (None, None));
        let wrong = Filters { to: "31/01/2026".into(), ..Filters::default() };
        assert_eq!(wrong.range().unwrap_err(), "The to date \"31/01/2026\" is not a date like 2026-01-31.");
        assert!(wrong.date_invalid("to") && !wrong.date_invalid("from"));
        let reversed = Filters { from: "2026-02-01".into(), to: "2026-01-31".into(), ..Filters::default() };
        assert!(reversed.range().unwrap_err().contains("after"));
    }

    #[test]
    fn links_keep_the_filters() {
        let f = Filters::parse("type=mfa.reset&origin=console&actor=ann+b&user=&page=3&origin=nope");
        assert_eq!(f.csv_link(), "/console/audit.csv?type=mfa.reset&origin=console&actor=ann+b");
        assert_eq!(f.page_link(2), "/console/audit?type=mfa.reset&origin=console&actor=ann+b&page=2");
        assert_eq!(Filters::parse("origin=nope").origin, "", "an unknown door is no filter");
        assert_eq!(Filters::default().csv_link(), "/console/audit.csv");
    }
}
