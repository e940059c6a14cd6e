//! Email through the `[smtp]` server: the enrolment link after a reset, as plain text and HTML.
//!
//! [`Mailer::send`] blocks (connecting, TLS, the SMTP dialogue): callers run it off the async
//! workers, after the transaction that created what the message tells about has committed.
//!
//! The dialogue is lettre's `SmtpConnection` driven step by step rather than its
//! `SmtpTransport`, so that an error says which step the server refused (the login, the sender,
//! the recipient, the message) instead of only the reply code. Connections are kept for a
//! while and reused, so that a bulk reset does not open one per user.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use crate::config::{Secret, Smtp, SmtpSecurity};

/// Login mechanisms offered to the server, in order of preference.
const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];
/// An idle connection older than this is closed rather than reused (servers drop idle clients
/// after a few minutes; RFC 5321 §4.5.3.2.7 suggests five).
const KEEP_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept at most (one per sender running at the same time, up to this).
const MAX_IDLE: usize = 4;
/// Server replies are cut to this many characters in an error.
const MAX_REPLY: usize = 300;

/// One email: to one recipient, a subject, and the same content as plain text and as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// An address (`ada@example.com`) or a mailbox (`Ada Lovelace <ada@example.com>`).
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What an enrolment-link email says.
#[derive(Debug, Clone, Copy)]
pub struct EnrolmentLinkMail<'a> {
    /// `mfa.issuer`: the name the authenticator app shows.
    pub issuer: &'a str,
    pub user_name: &'a str,
    /// The one-time link (`{server.public_url}/enrol/{token}`).
    pub url: &'a str,
    /// When the link ends, RFC 3339 in UTC.
    pub expires_at: &'a str,
}

#[derive(Template)]
#[template(path = "email/enrolment_link.txt")]
struct EnrolmentLinkText<'a> {
    issuer: &'a str,
    user_name: &'a str,
    url: &'a str,
    expires: &'a str,
}

#[derive(Template)]
#[template(path = "email/enrolment_link.html")]
struct EnrolmentLinkHtml<'a> {
    issuer: &'a str,
    user_name: &'a str,
    url: &'a str,
    expires: &'a str,
}

/// The email that brings a user their one-time enrolment link after a reset.
pub fn enrolment_link(to: &str, link: &EnrolmentLinkMail) -> Message {
    let expires = readable_time(link.expires_at);
    let (issuer, user_name, url, expires) = (link.issuer, link.user_name, link.url, expires.as_str());
    // Rendering only fails when a value's Display fails; these are strings.
    let text = EnrolmentLinkText { issuer, user_name, url, expires }.render().expect("a text template renders");
    let html = EnrolmentLinkHtml { issuer, user_name, url, expires }.render().expect("an HTML template renders");
    Message { to: to.to_string(), subject: format!("Set up your authenticator app for {issuer}"), text, html }
}

/// `2026-12-03T16:00:00Z` as `2026-12-03 16:00 UTC`; anything else as it is.
fn readable_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// Why a message was not sent (or the mailer not built). Each says in one sentence what an
/// operator needs to know; none contains the password.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp.password_file: cannot read {}: {source}", path.display())]
    PasswordFile { path: std::path::PathBuf, source: io::Error },
    #[error("smtp.from: {from:?} is not a mailbox such as \"provisiond <noreply@example.com>\"")]
    From { from: String },
    #[error("cannot set up TLS for {host}: {reason}")]
    TlsSetup { host: String, reason: String },
    /// The recipient is not an email address: nothing was sent.
    #[error("{address:?} is not an email address")]
    BadRecipient { address: String },
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect { host: String, port: u16, reason: String },
    #[error("TLS with {host}:{port} failed: {reason}")]
    Tls { host: String, port: u16, reason: String },
    #[error("{host}:{port} does not offer STARTTLS, which smtp.starttls requires (for TLS from the first byte, as on port 465, set smtp.tls = true and smtp.starttls = false)")]
    NoStartTls { host: String, port: u16 },
    #[error("{host}:{port} offers no login provisiond knows (AUTH PLAIN or LOGIN) on this connection")]
    NoLogin { host: String, port: u16 },
    #[error("the server {host}:{port} refused the login of {username}: {reply}")]
    Login { host: String, port: u16, username: String, reply: String },
    #[error("the server {host}:{port} wants a login first (set smtp.username and a password): {reply}")]
    LoginRequired { host: String, port: u16, reply: String },
    #[error("the server {host}:{port} wants STARTTLS first (set smtp.starttls = true): {reply}")]
    TlsRequired { host: String, port: u16, reply: String },
    #[error("the server refused the sender {from}: {reply}")]
    Sender { from: String, reply: String },
    /// The server refused this recipient: other messages may well go through.
    #[error("the server refused the recipient {to}: {reply}")]
    Recipient { to: String, reply: String },
    #[error("the server refused the message to {to}: {reply}")]
    Refused { to: String, reply: String },
    #[error("the connection to {host}:{port} failed: {reason}")]
    Connection { host: String, port: u16, reason: String },
    #[error("cannot build the message to {to}: {reason}")]
    Build { to: String, reason: String },
}

impl MailError {
    /// Whether the error is about this recipient alone (a bad or refused address), rather than
    /// the server or the configuration (which every other message would meet too).
    pub fn concerns_recipient(&self) -> bool {
        matches!(self, MailError::BadRecipient { .. } | MailError::Recipient { .. })
    }
}

/// Sends email through the `[smtp]` server. Cheap to clone: clones share the settings and the
/// idle connections.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    security: Security,
    login: Option<Login>,
    from: Mailbox,
    timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<Idle>>,
}

enum Security {
    StartTls(TlsParameters),
    Tls(TlsParameters),
    Plain,
}

/// `smtp.username` and its password (kept to blank it out of server replies).
struct Login {
    username: String,
    credentials: Credentials,
    password: Secret,
}

struct Idle {
    conn: SmtpConnection,
    since: Instant,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").field("host", &self.inner.host).field("port", &self.inner.port).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for mut idle in self.idle.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            idle.conn.abort();
        }
    }
}

impl Mailer {
    /// Reads the password (file or systemd credential) and prepares TLS; connects only when a
    /// message is sent. Warns when plain SMTP goes to another machine.
    pub fn new(config: &Smtp) -> Result<Mailer, MailError> {
        let from: Mailbox = config.from.parse().map_err(|_| MailError::From { from: config.from.clone() })?;
        let host = config.host.trim().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = config.port();
        let tls = || {
            TlsParameters::builder(host.clone())
                .build_rustls()
                .map_err(|e| MailError::TlsSetup { host: host.clone(), reason: innermost(&e) })
        };
        let security = match config.security() {
            SmtpSecurity::StartTls => Security::StartTls(tls()?),
            SmtpSecurity::Tls => Security::Tls(tls()?),
            SmtpSecurity::Plain => {
                if !config.is_loopback() {
                    tracing::warn!(
                        host = %host,
                        port,
                        "smtp: plain SMTP to another machine: messages and the login cross the network unencrypted \
                         (set smtp.starttls or smtp.tls)"
                    );
                }
                Security::Plain
            }
        };
        let password = config.password().map_err(|e| MailError::PasswordFile { path: e.path, source: e.source })?;
        let login = match (&config.username, password) {
            (Some(username), Some(password)) => Some(Login {
                username: username.clone(),
                credentials: Credentials::new(username.clone(), password.expose().to_string()),
                password,
            }),
            _ => None,
        };
        Ok(Mailer {
            inner: Arc::new(Inner {
                host,
                port,
                security,
                login,
                from,
                timeout: Duration::from_secs(config.timeout),
                hello: ClientId::default(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends one message (multipart/alternative: plain text, then HTML). Blocks until the
    /// server took it or refused it, each step bounded by `smtp.timeout`.
    pub fn send(&self, m: &Message) -> Result<(), MailError> {
        let to: Mailbox = m.to.trim().parse().map_err(|_| MailError::BadRecipient { address: m.to.clone() })?;
        let email = self.build(&to, m)?;
        let mut conn = self.connection()?;
        match self.transmit(&mut conn, &to, &email) {
            Ok(()) => {
                self.keep(conn);
                Ok(())
            }
            Err(e) => {
                conn.abort();
                Err(e)
            }
        }
    }

    fn build(&self, to: &Mailbox, m: &Message) -> Result<Vec<u8>, MailError> {
        let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), self.inner.from.email.domain());
        lettre::Message::builder()
            .from(self.inner.from.clone())
            .to(to.clone())
            .subject(m.subject.as_str())
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(m.text.clone(), m.html.clone()))
            .map(|email| email.formatted())
            .map_err(|e| MailError::Build { to: to.email.to_string(), reason: e.to_string() })
    }

    /// MAIL, RCPT, DATA and the message, each refusal named for its step.
    fn transmit(&self, conn: &mut SmtpConnection, to: &Mailbox, email: &[u8]) -> Result<(), MailError> {
        let inner = &*self.inner;
        let from = inner.from.email.clone();
        let recipient = to.email.to_string();
        let utf8 = conn.server_info().supports_feature(Extension::SmtpUtfEight);
        let mut parameters = Vec::new();
        if !from.to_string().is_ascii() || !recipient.is_ascii() {
            if !utf8 {
                let reply = "the server does not take addresses beyond ASCII (no SMTPUTF8)".to_string();
                return Err(if recipient.is_ascii() {
                    MailError::Sender { from: from.to_string(), reply }
                } else {
                    MailError::Recipient { to: recipient, reply }
                });
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !email.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                let reply = "the server does not take 8-bit content (no 8BITMIME)".to_string();
                return Err(MailError::Refused { to: recipient, reply });
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(Some(from.clone()), parameters)).map_err(|e| match self.reply(&e) {
            // 530: "Authentication required", or "Must issue a STARTTLS command first".
            Some(reply) if reply.starts_with("530") && reply.to_ascii_uppercase().contains("STARTTLS") => {
                MailError::TlsRequired { host: inner.host.clone(), port: inner.port, reply }
            }
            Some(reply) if reply.starts_with("530") => {
                MailError::LoginRequired { host: inner.host.clone(), port: inner.port, reply }
            }
            Some(reply) => MailError::Sender { from: from.to_string(), reply },
            None => self.broken(&e),
        })?;
        conn.command(Rcpt::new(to.email.clone(), Vec::new())).map_err(|e| match self.reply(&e) {
            Some(reply) => MailError::Recipient { to: recipient.clone(), reply },
            None => self.broken(&e),
        })?;
        let refused = |e: lettre::transport::smtp::Error| match self.reply(&e) {
            Some(reply) => MailError::Refused { to: recipient.clone(), reply },
            None => self.broken(&e),
        };
        conn.command(Data).map_err(refused)?;
        conn.message(email).map_err(refused)?;
        Ok(())
    }

    /// An idle connection that still answers, or a new one.
    fn connection(&self) -> Result<SmtpConnection, MailError> {
        loop {
            let idle = self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(Idle { mut conn, since }) = idle else { return self.connect() };
            if since.elapsed() < KEEP_IDLE && !conn.has_broken() && conn.test_connected() {
                return Ok(conn);
            }
            conn.abort();
        }
    }

    /// Keeps a connection for the next message (up to [`MAX_IDLE`]), closing the stale ones.
    fn keep(&self, conn: SmtpConnection) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closing: Vec<SmtpConnection> = Vec::new();
        let (fresh, stale): (Vec<Idle>, Vec<Idle>) = idle.drain(..).partition(|i| i.since.elapsed() < KEEP_IDLE);
        *idle = fresh;
        closing.extend(stale.into_iter().map(|i| i.conn));
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: Instant::now() });
        } else {
            closing.push(conn);
        }
        drop(idle);
        for mut conn in closing {
            conn.abort();
        }
    }

    /// Connects, greets, secures and logs in.
    fn connect(&self) -> Result<SmtpConnection, MailError> {
        let inner = &*self.inner;
        let (host, port) = (inner.host.clone(), inner.port);
        let wrapper = match &inner.security {
            Security::Tls(tls) => Some(tls),
            _ => None,
        };
        let mut conn = SmtpConnection::connect((inner.host.as_str(), port), Some(inner.timeout), &inner.hello, wrapper, None)
            .map_err(|e| match (self.tls_failure(&e), self.reply(&e)) {
                (Some(tls), _) => tls,
                (None, Some(reply)) => {
                    MailError::Connect { host: host.clone(), port, reason: format!("the server answered {reply}") }
                }
                (None, None) => MailError::Connect { host: host.clone(), port, reason: self.io_reason(&e) },
            })?;
        if let Security::StartTls(tls) = &inner.security {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                conn.abort();
                return Err(MailError::NoStartTls { host, port });
            }
            if let Err(e) = conn.starttls(tls, &inner.hello) {
                conn.abort();
                return Err(self.tls_failure(&e).unwrap_or_else(|| self.broken(&e)));
            }
        }
        if let Some(Login { username, credentials, .. }) = &inner.login {
            if conn.server_info().get_auth_mechanism(&MECHANISMS).is_none() {
                conn.abort();
                return Err(MailError::NoLogin { host, port });
            }
            if let Err(e) = conn.auth(&MECHANISMS, credentials) {
                conn.abort();
                return Err(match self.reply(&e) {
                    Some(reply) => MailError::Login { host, port, username: username.clone(), reply },
                    None => self.broken(&e),
                });
            }
        }
        Ok(conn)
    }

    /// The server's negative reply (`550 no such user`), cut short and without the password.
    fn reply(&self, e: &lettre::transport::smtp::Error) -> Option<String> {
        let code = e.status()?;
        let text = e.source().map(|s| s.to_string()).unwrap_or_default();
        let mut reply = format!("{code} {text}").trim().to_string();
        if let Some(login) = &self.inner.login {
            if !login.password.expose().is_empty() {
                reply = reply.replace(login.password.expose(), "***");
            }
        }
        if reply.chars().count() > MAX_REPLY {
            reply = reply.chars().take(MAX_REPLY).chain("…".chars()).collect();
        }
        Some(reply)
    }

    /// A TLS error anywhere in the chain (a handshake fails on the first read or write).
    fn tls_failure(&self, e: &lettre::transport::smtp::Error) -> Option<MailError> {
        let tls = find::<rustls::Error>(e)?;
        Some(MailError::Tls { host: self.inner.host.clone(), port: self.inner.port, reason: tls.to_string() })
    }

    /// A connection that broke mid-dialogue: TLS, a timeout, a reset, an unreadable answer.
    fn broken(&self, e: &lettre::transport::smtp::Error) -> MailError {
        self.tls_failure(e).unwrap_or_else(|| MailError::Connection {
            host: self.inner.host.clone(),
            port: self.inner.port,
            reason: self.io_reason(e),
        })
    }

    /// What went wrong on the wire, in words: `connection refused`, `no answer within 10 s`, …
    fn io_reason(&self, e: &lettre::transport::smtp::Error) -> String {
        match find::<io::Error>(e) {
            Some(io) => match io.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".into(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    format!("no answer within {} s (smtp.timeout)", self.inner.timeout.as_secs())
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                    "the server closed the connection".into()
                }
                _ => io.to_string(),
            },
            None => innermost(e),
        }
    }
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s too (which hide
/// their payload from `source()`).
fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(payload) = err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(found) = find::<T>(payload) {
                return Some(found);
            }
        }
        next = err.source();
    }
    None
}

/// The text of the deepest cause: lettre's own wrappers add only `network error: ` and such.
fn innermost(e: &(dyn StdError + 'static)) -> String {
    let mut last = e;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(user_name: &str) -> Message {
        enrolment_link(
            "ada@example.com",
            &EnrolmentLinkMail {
                issuer: "Example & Co",
                user_name,
                url: "https://idm.example.com/enrol/abc?x=1&y=2",
                expires_at: "2026-12-03T16:00:00Z",
            },
        )
    }

    #[test]
    fn enrolment_link_text_says_what_happened_and_what_to_do() {
        let m = link("ada");
        assert_eq!(m.to, "ada@example.com");
        assert_eq!(m.subject, "Set up your authenticator app for Example & Co");
        for words in [
            "second factor of your account ada at Example & Co was reset",
            "set up your authenticator app once more",
            "https://idm.example.com/enrol/abc?x=1&y=2\n",
            "The link works once, until 2026-12-03 16:00 UTC.",
            "tell your IT helpdesk",
        ] {
            assert!(m.text.contains(words), "{words:?} in\n{}", m.text);
        }
    }

    #[test]
    fn enrolment_link_html_escapes_everything() {
        let m = link("<b>x</b>");
        assert!(m.html.contains("&#60;b&#62;x&#60;/b&#62;") || m.html.contains("&lt;b&gt;x&lt;/b&gt;"), "{}", m.html);
        assert!(!m.html.contains("<b>x"), "{}", m.html);
        assert!(m.html.contains("Example &#38; Co") || m.html.contains("Example &amp; Co"), "{}", m.html);
        assert!(m.html.contains("href=\"https://idm.example.com/enrol/abc?x=1&#38;y=2\"") || m.html.contains("x=1&amp;y=2\""));
        assert!(m.text.contains("Hello <b>x</b>,"), "plain text is not HTML");
    }

    #[test]
    fn expiry_is_shown_in_utc_or_as_given() {
        assert_eq!(readable_time("2026-12-03T17:30:00+01:00"), "2026-12-03 16:30 UTC");
        assert_eq!(readable_time("soon"), "soon");
    }

    #[test]
    fn mailer_debug_shows_the_server_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut config = Smtp::new("smtp.example.com", "provisiond <noreply@example.com>");
        config.username = Some("mailer".into());
        config.password_file = Some(path);
        let mailer = Mailer::new(&config).unwrap();
        let debug = format!("{mailer:?}");
        assert!(debug.contains("smtp.example.com") && debug.contains("587") && !debug.contains("s3cret"), "{debug}");
        config.password_file = Some(dir.path().join("missing"));
        let e = Mailer::new(&config).unwrap_err().to_string();
        assert!(e.starts_with("smtp.password_file: cannot read"), "{e}");
    }

    #[test]
    fn mailer_and_its_errors_travel_between_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Mailer>();
        send_sync::<MailError>();
    }

    /// What `Mailer::new` logs for `config`.
    fn logged_by_new(config: &Smtp) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || Mailer::new(config).unwrap());
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_smtp_to_another_machine_is_warned_about() {
        let mut config = Smtp::new("mail.example.com", "noreply@example.com");
        config.starttls = false;
        let log = logged_by_new(&config);
        assert!(
            log.contains("WARN") && log.contains("plain SMTP to another machine") && log.contains("mail.example.com"),
            "{log}"
        );
        for host in ["localhost", "127.0.0.1", "::1"] {
            config.host = host.into();
            assert_eq!(logged_by_new(&config), "", "{host}");
        }
        config.host = "mail.example.com".into();
        config.starttls = true;
        assert_eq!(logged_by_new(&config), "", "STARTTLS");
    }

    #[test]
    fn a_bad_recipient_is_refused_before_any_connection() {
        let mut config = Smtp::new("127.0.0.1", "noreply@example.com");
        config.port = Some(9); // nothing is sent: the address is checked first
        let mailer = Mailer::new(&config).unwrap();
        for bad in ["", "ada", "ada@", "ada@example.com\r\nBcc: eve@example.com"] {
            let e = mailer.send(&Message { to: bad.into(), ..link("ada") }).unwrap_err();
            assert!(matches!(e, MailError::BadRecipient { .. }) && e.concerns_recipient(), "{bad:?}: {e}");
        }
    }
}
