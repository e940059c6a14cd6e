//! What a receiver may ask of a stream (SSF 1.0 §8.1.1), checked and resolved: the fields it
//! supplies, their bounds, and the row they make.

use super::*;

/// Bounds on what a receiver sends: description and reasons, URLs and audiences, list lengths,
/// the authorization header.
pub(super) const MAX_TEXT: usize = 1000;
const MAX_URL: usize = 2000;
const MAX_LIST: usize = 100;
const MAX_AUDIENCES: usize = 20;
const MAX_HEADER: usize = 4096;

/// `aud` as the receiver gave it: one string or an array.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The delivery a receiver asks for. `Debug` leaves the authorization header out.
#[derive(Clone, Default)]
pub struct Delivery {
    /// [`PUSH`] or [`POLL`].
    pub method: String,
    /// Push: where to post (required). Poll: ignored, the transmitter sets it.
    pub endpoint_url: Option<String>,
    /// Push: sent as `Authorization` with every SET. Left out of a PATCH that keeps the
    /// method push and the endpoint, the stored one stays; a new endpoint gets none unless given.
    pub authorization_header: Option<String>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("method", &self.method)
            .field("endpoint_url", &self.endpoint_url)
            .field("authorization_header", &self.authorization_header.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The receiver-supplied fields of a stream's configuration (SSF §8.1.1) as the door read
/// them; `None` is a field left out (kept by a PATCH, reset to its default by a PUT).
#[derive(Debug, Clone, Default)]
pub struct Requested {
    pub audience: Option<Audience>,
    pub events_requested: Option<Vec<String>>,
    pub delivery: Option<Delivery>,
    pub description: Option<String>,
    pub subject_format: Option<String>,
}

/// A stream's receiver-supplied fields, resolved: defaults, then what was stored, then what
/// the request changes.
#[derive(Clone)]
pub(super) struct Settings {
    audience: Audience,
    events_requested: Vec<String>,
    method: String,
    endpoint_url: Option<String>,
    authorization_header: Option<String>,
    description: Option<String>,
    subject_format: String,
}

impl Settings {
    pub(super) fn defaults(t: &Transmitter) -> Self {
        Settings {
            audience: Audience::One(t.issuer.clone()),
            events_requested: t.supported.clone(),
            method: POLL.into(),
            endpoint_url: None,
            authorization_header: None,
            description: None,
            subject_format: "iss_sub".into(),
        }
    }

    pub(super) fn of(stream: &Stream) -> Self {
        Settings {
            audience: match (stream.audience_is_array, stream.audience.as_slice()) {
                (false, [one]) => Audience::One(one.clone()),
                _ => Audience::Many(stream.audience.clone()),
            },
            events_requested: stream.events_requested.clone(),
            method: stream.delivery_method.clone(),
            endpoint_url: stream.endpoint_url.clone().filter(|_| stream.is_push()),
            authorization_header: stream.authorization_header.clone(),
            description: stream.description.clone(),
            subject_format: stream.subject_format.clone(),
        }
    }

    /// Applies what the request gives, checking each value; then checks the whole.
    pub(super) fn apply(mut self, req: Requested) -> Result<Self> {
        if let Some(audience) = req.audience {
            self.audience = check_audience(audience)?;
        }
        if let Some(events) = req.events_requested {
            if events.len() > MAX_LIST {
                return Err(invalid(format!("events_requested: at most {MAX_LIST} event types")));
            }
            self.events_requested = events;
        }
        if let Some(description) = req.description {
            self.description = check_text("description", description)?;
        }
        if let Some(format) = req.subject_format {
            if !SUBJECT_FORMATS.contains(&format.as_str()) {
                return Err(invalid(format!("subject_format {format:?} is not one of {}", SUBJECT_FORMATS.join(", "))));
            }
            self.subject_format = format;
        }
        if let Some(delivery) = req.delivery {
            if delivery.method != PUSH && delivery.method != POLL {
                return Err(invalid(format!(
                    "delivery.method {:?} is not supported: use {PUSH} (push) or {POLL} (poll)",
                    delivery.method
                )));
            }
            // The stored header stays only while it goes where the receiver sent it for.
            let keep_header = delivery.authorization_header.is_none()
                && self.method == PUSH
                && delivery.method == PUSH
                && delivery.endpoint_url == self.endpoint_url;
            if !keep_header {
                self.authorization_header = delivery.authorization_header;
            }
            self.method = delivery.method;
            self.endpoint_url = delivery.endpoint_url;
        }
        if self.method == PUSH {
            let url =
                self.endpoint_url.as_deref().ok_or_else(|| invalid("delivery.endpoint_url is required for push delivery"))?;
            check_endpoint(url)?;
            if let Some(header) = &self.authorization_header {
                check_header(header)?;
            }
        } else {
            // Poll: the endpoint is ours and nothing is posted.
            self.endpoint_url = None;
            self.authorization_header = None;
        }
        Ok(self)
    }

    /// The row of stream `id` with these settings.
    pub(super) fn row(&self, t: &Transmitter, sealer: &Sealer, id: &str, base: RowBase) -> StreamRow {
        let delivered: Vec<&String> = {
            let mut seen = Vec::new();
            for e in &self.events_requested {
                if t.supported.contains(e) && !seen.contains(&e) {
                    seen.push(e);
                }
            }
            seen
        };
        let audience = match &self.audience {
            Audience::One(one) => Value::String(one.clone()),
            Audience::Many(many) => serde_json::json!(many),
        };
        StreamRow {
            id: id.to_string(),
            owner: base.owner,
            audience: audience.to_string(),
            events_requested: serde_json::json!(self.events_requested).to_string(),
            events_delivered: serde_json::json!(delivered).to_string(),
            delivery_method: self.method.clone(),
            endpoint_url: self.endpoint_url.clone(),
            authorization_header: self.authorization_header.as_ref().map(|h| sealer.seal(&seal_context(id), h.as_bytes())),
            subject_format: self.subject_format.clone(),
            description: self.description.clone(),
            status: base.status,
            status_reason: base.status_reason,
            created_at: base.created_at,
            updated_at: base.updated_at,
        }
    }
}

/// What a row keeps besides the receiver's settings.
pub(super) struct RowBase {
    pub(super) owner: Option<String>,
    pub(super) status: String,
    pub(super) status_reason: Option<String>,
    pub(super) created_at: NaiveDateTime,
    pub(super) updated_at: NaiveDateTime,
}

pub(super) fn invalid(detail: impl Into<String>) -> Error {
    Error::invalid(Invalid::Value, detail)
}

pub(super) fn check_text(name: &str, text: String) -> Result<Option<String>> {
    if text.chars().count() > MAX_TEXT {
        return Err(invalid(format!("{name}: at most {MAX_TEXT} characters")));
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}

fn check_audience(audience: Audience) -> Result<Audience> {
    let one = |a: &str| {
        if a.is_empty() || a.len() > MAX_URL || a.chars().any(char::is_control) {
            Err(invalid(format!("aud: each audience is 1 to {MAX_URL} characters, without control characters")))
        } else {
            Ok(())
        }
    };
    match &audience {
        Audience::One(a) => one(a)?,
        Audience::Many(all) => {
            if all.is_empty() || all.len() > MAX_AUDIENCES {
                return Err(invalid(format!("aud: 1 to {MAX_AUDIENCES} audiences")));
            }
            all.iter().try_for_each(|a| one(a))?;
        }
    }
    Ok(audience)
}

/// A push endpoint: an absolute http(s) URL with a host, no fragment, no spaces.
fn check_endpoint(url: &str) -> Result<()> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or_default().rsplit('@').next().unwrap_or_default());
    let ok = url.len() <= MAX_URL
        && host.is_some_and(|h| !h.is_empty() && !h.starts_with(':'))
        && !url.contains('#')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "delivery.endpoint_url must be an absolute http(s) URL (at most {MAX_URL} characters, no fragment), e.g. https://rp.example/ssf/events"
        )))
    }
}

/// An `Authorization` value we can send: visible ASCII and spaces.
fn check_header(header: &str) -> Result<()> {
    let ok = !header.trim().is_empty() && header.len() <= MAX_HEADER && header.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("delivery.authorization_header must be 1 to {MAX_HEADER} visible ASCII characters")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmitter() -> Transmitter {
        Transmitter {
            issuer: "https://idp.example".into(),
            origin: "https://idp.example".into(),
            supported: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_stream_left_unsaid_is_polled_for_every_supported_event_about_the_issuer() {
        let s = Settings::defaults(&transmitter()).apply(Requested::default()).unwrap();
        assert_eq!((s.method.as_str(), s.events_requested.len()), (POLL, 2));
        assert_eq!(s.audience, Audience::One("https://idp.example".into()));
        assert_eq!(s.subject_format, "iss_sub");
    }

    #[test]
    fn push_needs_an_http_endpoint_and_poll_keeps_no_header() {
        let push = |url: Option<&str>| {
            let delivery = Delivery {
                method: PUSH.into(),
                endpoint_url: url.map(String::from),
                authorization_header: Some("Bearer x".into()),
            };
            Settings::defaults(&transmitter()).apply(Requested { delivery: Some(delivery), ..Default::default() })
        };
        assert!(push(Some("https://rp.example/events")).is_ok());
        assert!(push(Some("http://127.0.0.1:8080/")).is_ok());
        for bad in [
            None,
            Some("ftp://rp.example/"),
            Some("https://"),
            Some("rp.example/x"),
            Some("https://rp.example/#f"),
            Some("https://rp .example/"),
        ] {
            assert!(push(bad).is_err(), "{bad:?}");
        }
        let poll = Delivery {
            method: POLL.into(),
            endpoint_url: Some("https://x".into()),
            authorization_header: Some("Bearer x".into()),
        };
        let s = Settings::defaults(&transmitter()).apply(Requested { delivery: Some(poll), ..Default::default() }).unwrap();
        assert_eq!((s.endpoint_url, s.authorization_header), (None, None));
    }

    #[test]
    fn a_patch_to_the_same_push_endpoint_keeps_the_header_it_does_not_give() {
        let t = transmitter();
        let first = Delivery {
            method: PUSH.into(),
            endpoint_url: Some("https://a/".into()),
            authorization_header: Some("Bearer x".into()),
        };
        let s = Settings::defaults(&t).apply(Requested { delivery: Some(first), ..Default::default() }).unwrap();
        let same = Delivery { method: PUSH.into(), endpoint_url: Some("https://a/".into()), authorization_header: None };
        let s = s.apply(Requested { delivery: Some(same), ..Default::default() }).unwrap();
        assert_eq!(s.authorization_header.as_deref(), Some("Bearer x"));
        let moved = Delivery { method: PUSH.into(), endpoint_url: Some("https://b/".into()), authorization_header: None };
        let s = s.apply(Requested { delivery: Some(moved), ..Default::default() }).unwrap();
        assert_eq!(
            (s.endpoint_url.as_deref(), s.authorization_header.as_deref()),
            (Some("https://b/"), None),
            "not sent elsewhere"
        );
    }

    #[test]
    fn values_outside_the_rules_are_refused() {
        let apply = |req: Requested| Settings::defaults(&transmitter()).apply(req);
        assert!(apply(Requested { subject_format: Some("phone_number".into()), ..Default::default() }).is_err());
        assert!(apply(Requested { audience: Some(Audience::Many(vec![])), ..Default::default() }).is_err());
        assert!(apply(Requested { description: Some("x".repeat(MAX_TEXT + 1)), ..Default::default() }).is_err());
        let method = Delivery { method: "urn:example:carrier-pigeon".into(), ..Default::default() };
        assert!(apply(Requested { delivery: Some(method), ..Default::default() }).is_err());
        let header =
            Delivery { method: PUSH.into(), endpoint_url: Some("https://a/".into()), authorization_header: Some("a\nb".into()) };
        assert!(apply(Requested { delivery: Some(header), ..Default::default() }).is_err());
    }
}
