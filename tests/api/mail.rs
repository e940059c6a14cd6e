//! `provisiond::mail` against a real SMTP server (aiosmtpd, see smtp.rs): what arrives, and
//! what each failure says.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use provisiond::mail::{enrolment_link, EnrolmentLinkMail, MailError, Mailer, Message};

use crate::smtp::{SinkOptions, SmtpServer};

const URL: &str = "https://idm.example.com/enrol/4f9c2a7e?x=1&y=2";

fn link_for(to: &str, user_name: &str) -> Message {
    enrolment_link(to, &EnrolmentLinkMail { issuer: "Example Corp", user_name, url: URL, expires_at: "2026-12-03T16:00:00Z" })
}

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn mail_enrolment_link_arrives_with_both_parts() {
    let server = SmtpServer::start();
    let mailer = Mailer::new(&server.config()).unwrap();
    mailer.send(&link_for("ada@example.com", "ada")).unwrap();
    let got = server.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.to, ["ada@example.com"]);
    assert_eq!(m.from, "noreply@example.com");
    assert_eq!(m.subject, "Set up your authenticator app for Example Corp");
    assert_eq!(m.content_type, "multipart/alternative");
    assert!(m.raw.contains("From: provisiond <noreply@example.com>"), "{}", m.raw);
    assert!(m.raw.contains("To: ada@example.com"), "{}", m.raw);
    assert!(m.raw.contains("Message-ID: <") && m.raw.contains("@example.com>"), "{}", m.raw);
    let text = m.text.as_deref().expect("a text/plain part");
    assert!(text.contains(&format!("\n{URL}\n")), "the link alone on its line:\n{text}");
    assert!(text.contains("was reset") && text.contains("until 2026-12-03 16:00 UTC") && text.contains("IT helpdesk"), "{text}");
    let html = m.html.as_deref().expect("a text/html part");
    assert!(html.contains("href=\"https://idm.example.com/enrol/4f9c2a7e?x=1&#38;y=2\""), "{html}");
    assert!(m.login.is_none());
}

#[test]
fn mail_html_escapes_the_user_name() {
    let server = SmtpServer::start();
    let mailer = Mailer::new(&server.config()).unwrap();
    mailer.send(&link_for("x@example.com", "<b>x</b>")).unwrap();
    let m = &server.wait_for(1, Duration::from_secs(10))[0];
    let html = m.html.as_deref().unwrap();
    assert!(!html.contains("<b>"), "{html}");
    assert!(html.contains("&#60;b&#62;x&#60;/b&#62;"), "{html}");
    assert!(m.text.as_deref().unwrap().contains("Hello <b>x</b>,"), "the text part is not HTML");
}

#[test]
fn mail_reuses_one_connection_for_many_messages() {
    let server = SmtpServer::start();
    let mailer = Mailer::new(&server.config()).unwrap();
    let clone = mailer.clone();
    for (i, m) in [&mailer, &clone, &mailer].into_iter().enumerate() {
        m.send(&link_for(&format!("user{i}@example.com"), &format!("user{i}"))).unwrap();
    }
    let got = server.wait_for(3, Duration::from_secs(10));
    let to: Vec<_> = got.iter().map(|m| m.to[0].as_str()).collect();
    assert_eq!(to, ["user0@example.com", "user1@example.com", "user2@example.com"]);
    assert!(got.iter().all(|m| m.peer == got[0].peer), "one connection: {:?}", got.iter().map(|m| &m.peer).collect::<Vec<_>>());
}

#[test]
fn mail_refused_connection_names_host_and_port_quickly() {
    let port = closed_port();
    let mut config = provisiond::config::Smtp::new("127.0.0.1", "noreply@example.com");
    config.port = Some(port);
    config.starttls = false;
    config.timeout = 5;
    let mailer = Mailer::new(&config).unwrap();
    let start = Instant::now();
    let e = mailer.send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(matches!(e, MailError::Connect { .. }) && !e.concerns_recipient(), "{e:?}");
    assert_eq!(e.to_string(), format!("cannot connect to 127.0.0.1:{port}: connection refused"));
}

#[test]
fn mail_silent_server_times_out_naming_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and never greets.
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.read(&mut [0; 64]);
        }
    });
    let mut config = provisiond::config::Smtp::new("127.0.0.1", "noreply@example.com");
    config.port = Some(port);
    config.starttls = false;
    config.timeout = 1;
    let start = Instant::now();
    let e = Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(e.to_string(), format!("cannot connect to 127.0.0.1:{port}: no answer within 1 s (smtp.timeout)"));
}

#[test]
fn mail_refused_recipient_is_named_and_the_next_message_goes() {
    let server = SmtpServer::start_with(SinkOptions { refuse: vec!["gone@example.com".into()], ..Default::default() });
    let mailer = Mailer::new(&server.config()).unwrap();
    let e = mailer.send(&link_for("gone@example.com", "gone")).unwrap_err();
    assert!(matches!(e, MailError::Recipient { .. }) && e.concerns_recipient(), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("the server refused the recipient gone@example.com: 550 "), "{text}");
    assert!(text.contains("User unknown"), "the server's words: {text}");
    let e = mailer.send(&link_for("not an address", "x")).unwrap_err();
    assert_eq!(e.to_string(), "\"not an address\" is not an email address");
    mailer.send(&link_for("ada@example.com", "ada")).unwrap();
    let got = server.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["ada@example.com"]);
}

#[test]
fn mail_login_with_a_password_file() {
    let password = "correct horse battery staple";
    let server = SmtpServer::start_with(SinkOptions { login: Some(("mailer".into(), password.into())), ..Default::default() });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smtp-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let mut config = server.config();
    config.username = Some("mailer".into());
    config.password_file = Some(file.clone());
    Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap();
    let got = server.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].login.as_deref(), Some("mailer"));

    // A wrong password: the login is refused, and the error does not show the password.
    std::fs::write(&file, "wrong-password\n").unwrap();
    let e = Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::Login { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with(&format!("the server 127.0.0.1:{} refused the login of mailer: 535", server.port())), "{text}");
    assert!(!text.contains("wrong-password") && !format!("{e:?}").contains("wrong-password"), "{text}");

    // No login where the server wants one.
    let e = Mailer::new(&server.config()).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::LoginRequired { .. }), "{e:?}");
    assert!(e.to_string().contains("wants a login first"), "{e}");
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn mail_starttls_required_but_not_offered_is_refused() {
    let server = SmtpServer::start();
    let mut config = server.config();
    config.starttls = true;
    let e = Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::NoStartTls { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("127.0.0.1:{} does not offer STARTTLS", server.port())), "{e}");
    assert!(server.messages().is_empty(), "nothing in the clear");
}

#[test]
fn mail_tls_to_a_plain_server_is_a_tls_failure() {
    let server = SmtpServer::start();
    let mut config = server.config();
    config.tls = true;
    let e = Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("TLS with 127.0.0.1:{} failed: ", server.port())), "{e}");
    assert!(server.messages().is_empty());
}

#[test]
fn mail_starttls_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed (tests/run-all.sh installs it)");
    assert!(status.success());
    let server = SmtpServer::start_with(SinkOptions { starttls: Some((cert, key)), ..Default::default() });
    let mut config = server.config();
    config.starttls = true;
    // The server offers STARTTLS, but its certificate is signed by nobody this machine trusts.
    let e = Mailer::new(&config).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with(&format!("TLS with 127.0.0.1:{} failed: invalid peer certificate", server.port())), "{text}");
    // Plain SMTP to a server that requires STARTTLS is refused by the server.
    let e = Mailer::new(&server.config()).unwrap().send(&link_for("ada@example.com", "ada")).unwrap_err();
    assert!(matches!(e, MailError::TlsRequired { .. }), "{e:?}");
    assert!(e.to_string().contains("wants STARTTLS first (set smtp.starttls = true): 530 "), "{e}");
    assert!(server.messages().is_empty());
}
