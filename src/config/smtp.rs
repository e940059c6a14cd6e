//! `[smtp]`: the mail server enrolment links are sent through. Optional: without it, links are
//! only shown (API, CLI, console) and never mailed.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// The systemd credential read as the password when `smtp.password_file` is unset.
pub const SMTP_PASSWORD_CREDENTIAL: &str = "smtp-password";

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP, then `STARTTLS` before anything else is said; a server without it is refused.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption at all: for a relay on the same machine.
    Plain,
}

/// `[smtp]`. No secret lives here (the password is read from its file when the mailer is
/// built), so `Debug` shows everything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// Host name (or address) of the mail server; TLS checks its certificate against this name.
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with neither.
    #[serde(default)]
    pub port: Option<u16>,
    /// Require STARTTLS (the default).
    #[serde(default = "yes")]
    pub starttls: bool,
    /// Implicit TLS from the first byte (e.g. port 465); then set `starttls = false`.
    #[serde(default)]
    pub tls: bool,
    /// Log in with this name (AUTH PLAIN or LOGIN); unset: no login.
    #[serde(default)]
    pub username: Option<String>,
    /// The password is the file's content (a final newline dropped). Unset: the systemd
    /// credential `smtp-password`, when there is one.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, a mailbox such as `provisiond <noreply@example.com>`.
    pub from: String,
    /// Seconds: connecting, and waiting for each answer of the server.
    #[serde(default = "ten")]
    pub timeout: u64,
}

fn yes() -> bool {
    true
}

fn ten() -> u64 {
    10
}

impl Smtp {
    /// A section with the defaults, for `host` and `from`.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        Smtp {
            host: host.into(),
            port: None,
            starttls: true,
            tls: false,
            username: None,
            password_file: None,
            from: from.into(),
            timeout: ten(),
        }
    }

    /// The protection in force. (Both flags set is a configuration problem; TLS wins here.)
    pub fn security(&self) -> SmtpSecurity {
        match (self.tls, self.starttls) {
            (true, _) => SmtpSecurity::Tls,
            (false, true) => SmtpSecurity::StartTls,
            (false, false) => SmtpSecurity::Plain,
        }
    }

    /// The port in force: the configured one, or the usual one for the protection.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security() {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        })
    }

    /// Whether the server is on this machine (`localhost` or a loopback address): the only
    /// place plain SMTP is reasonable.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The login password: the file's content without its final newline. `None` without a file.
    pub fn password(&self) -> Result<Option<Secret>, SmtpPasswordError> {
        let Some(path) = &self.password_file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|source| SmtpPasswordError { path: path.clone(), source })?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        Ok(Some(Secret(text.to_string())))
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        let host = self.host.trim();
        if host.is_empty() {
            out.push("smtp.host: required, e.g. \"smtp.example.com\"".into());
        } else if host.chars().any(|c| c.is_whitespace() || c == '/') || (host.contains(':') && host.parse::<IpAddr>().is_err()) {
            out.push(format!("smtp.host: {:?} must be a host name or an address alone (the port goes in smtp.port)", self.host));
        }
        if self.port == Some(0) {
            out.push("smtp.port: must be between 1 and 65535".into());
        }
        if self.starttls && self.tls {
            out.push(
                "smtp.tls: set one of smtp.starttls and smtp.tls (starttls is on by default: with tls = true, set starttls = false)"
                    .into(),
            );
        }
        if let Some(name) = &self.username {
            if name.trim().is_empty() {
                out.push("smtp.username: must not be empty (leave it out for no login)".into());
            } else if self.password_file.is_none() {
                out.push(format!("smtp.username: needs smtp.password_file or the systemd credential {SMTP_PASSWORD_CREDENTIAL}"));
            }
        } else if self.password_file.is_some() {
            out.push("smtp.password_file: needs smtp.username".into());
        }
        if let Err(e) = self.from.parse::<lettre::message::Mailbox>() {
            out.push(format!("smtp.from: {:?} is not a mailbox such as \"provisiond <noreply@example.com>\" ({e})", self.from));
        }
        if !(1..=300).contains(&self.timeout) {
            out.push("smtp.timeout: must be between 1 and 300 seconds".into());
        }
    }
}

/// The SMTP password file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("smtp.password_file: cannot read {}: {source}", path.display())]
pub struct SmtpPasswordError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: &Smtp) -> Vec<String> {
        let mut out = Vec::new();
        s.problems(&mut out);
        out
    }

    fn base() -> Smtp {
        Smtp::new("smtp.example.com", "provisiond <noreply@example.com>")
    }

    #[test]
    fn smtp_ports_follow_the_protection_unless_given() {
        let mut s = base();
        assert_eq!((s.security(), s.port()), (SmtpSecurity::StartTls, 587));
        s.starttls = false;
        s.tls = true;
        assert_eq!((s.security(), s.port()), (SmtpSecurity::Tls, 465));
        s.tls = false;
        assert_eq!((s.security(), s.port()), (SmtpSecurity::Plain, 25));
        s.port = Some(2525);
        assert_eq!(s.port(), 2525);
        assert!(problems(&s).is_empty(), "{:?}", problems(&s));
        s.port = Some(0);
        assert!(problems(&s).iter().any(|p| p.starts_with("smtp.port:")));
    }

    #[test]
    fn smtp_both_tls_flags_are_one_too_many() {
        let mut s = base();
        s.tls = true;
        let p = problems(&s);
        assert!(p.iter().any(|p| p.contains("set one of smtp.starttls and smtp.tls")), "{p:?}");
    }

    #[test]
    fn smtp_from_must_be_a_mailbox() {
        for good in ["noreply@example.com", "provisiond <noreply@example.com>", "\"IT, Helpdesk\" <it@example.com>"] {
            let mut s = base();
            s.from = good.into();
            assert!(problems(&s).is_empty(), "{good}: {:?}", problems(&s));
        }
        for bad in ["", "noreply", "provisiond <noreply>", "a@b@c", "<noreply@example.com"] {
            let mut s = base();
            s.from = bad.into();
            let p = problems(&s);
            assert!(p.len() == 1 && p[0].starts_with("smtp.from:"), "{bad:?}: {p:?}");
        }
    }

    #[test]
    fn smtp_username_needs_a_password_source() {
        let mut s = base();
        s.username = Some("mailer".into());
        let p = problems(&s);
        assert!(p.len() == 1 && p[0].starts_with("smtp.username:") && p[0].contains("smtp-password"), "{p:?}");
        s.password_file = Some("/run/credentials/provisiond/smtp-password".into());
        assert!(problems(&s).is_empty());
        s.username = None;
        assert!(problems(&s).iter().any(|p| p.starts_with("smtp.password_file: needs smtp.username")));
    }

    #[test]
    fn smtp_host_is_a_name_without_a_port_and_timeout_is_bounded() {
        let mut s = base();
        s.host = "smtp.example.com:587".into();
        assert!(problems(&s).iter().any(|p| p.starts_with("smtp.host:") && p.contains("smtp.port")));
        s.host = "::1".into();
        assert!(problems(&s).is_empty() && s.is_loopback());
        s.host = " ".into();
        assert!(problems(&s).iter().any(|p| p.starts_with("smtp.host: required")));
        let mut s = base();
        for (timeout, ok) in [(0, false), (1, true), (300, true), (301, false)] {
            s.timeout = timeout;
            assert_eq!(problems(&s).is_empty(), ok, "{timeout}");
        }
    }

    #[test]
    fn smtp_loopback_hosts() {
        for (host, loopback) in [("localhost", true), ("127.0.0.1", true), ("127.0.0.53", true), ("[::1]", true), ("mail", false)]
        {
            let mut s = base();
            s.host = host.into();
            assert_eq!(s.is_loopback(), loopback, "{host}");
        }
    }

    #[test]
    fn smtp_password_file_loses_one_final_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = base();
        s.username = Some("mailer".into());
        for (content, password) in
            [("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), ("s3cret", "s3cret"), (" a b \n\n", " a b \n")]
        {
            let path = dir.path().join("pw");
            std::fs::write(&path, content).unwrap();
            s.password_file = Some(path);
            assert_eq!(s.password().unwrap().unwrap().expose(), password, "{content:?}");
        }
        s.password_file = Some(dir.path().join("missing"));
        let e = s.password().unwrap_err().to_string();
        assert!(e.starts_with("smtp.password_file: cannot read") && e.contains("missing"), "{e}");
        s.password_file = None;
        assert!(s.password().unwrap().is_none());
    }
}
