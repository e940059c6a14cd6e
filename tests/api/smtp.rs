//! A real SMTP server for the tests: Python's aiosmtpd running `tests/smtp_sink.py` from the
//! virtualenv `.venv/smtp` (tests/run-all.sh creates it), on a free loopback port, plain SMTP.
//! Every message it accepts is kept, with what Python's `email` package reads from it (an
//! implementation independent of lettre's). Killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned server, as tests/run-all.sh installs it.
pub const AIOSMTPD: &str = "aiosmtpd==1.4.6";
/// The sender the [`SmtpServer::config`] section uses.
pub const FROM: &str = "provisiond <noreply@example.com>";

/// One message the server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    /// Envelope sender (MAIL FROM).
    pub from: String,
    /// Envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The user name of the login before it, if any.
    pub login: Option<String>,
    /// The client's address and port: one per connection.
    pub peer: String,
    /// The message as received (headers and MIME parts, transfer-encoded).
    pub raw: String,
    /// The Subject header, decoded.
    pub subject: String,
    /// The top-level content type, e.g. `multipart/alternative`.
    pub content_type: String,
    /// The decoded plain-text body, if there is one.
    pub text: Option<String>,
    /// The decoded HTML body, if there is one.
    pub html: Option<String>,
}

/// What the server demands or refuses.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// A login (AUTH PLAIN or LOGIN, allowed without TLS) with this name and password before
    /// any message; `None`: no login.
    pub login: Option<(String, String)>,
    /// Recipients answered `550` at RCPT.
    pub refuse: Vec<String>,
    /// Offer (and require) STARTTLS with this certificate and key (PEM files).
    pub starttls: Option<(PathBuf, PathBuf)>,
}

pub struct SmtpServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The command that creates the virtualenv the server runs from.
pub fn setup_command() -> String {
    format!("cd {} && python3 -m venv .venv/smtp && .venv/smtp/bin/python -m pip install {AIOSMTPD}", root().display())
}

fn python() -> PathBuf {
    let python = root().join(".venv/smtp/bin/python");
    assert!(
        python.exists(),
        "the SMTP test server needs Python's aiosmtpd in .venv/smtp; create it with:\n  {}\n(tests/run-all.sh does it)",
        setup_command()
    );
    python
}

impl SmtpServer {
    /// A server that takes every message, without a login.
    pub fn start() -> SmtpServer {
        SmtpServer::start_with(SinkOptions::default())
    }

    pub fn start_with(options: SinkOptions) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let messages = dir.path().join("messages");
        std::fs::create_dir(&messages).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut command = Command::new(python());
        command.arg(root().join("tests/smtp_sink.py")).arg(&messages);
        if let Some((user, password)) = &options.login {
            let file = dir.path().join("password");
            std::fs::write(&file, password).unwrap();
            command.arg("--user").arg(user).arg("--password-file").arg(file);
        }
        for address in &options.refuse {
            command.arg("--refuse").arg(address);
        }
        if let Some((cert, key)) = &options.starttls {
            command.arg("--starttls-cert").arg(cert).arg("--starttls-key").arg(key);
        }
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("start tests/smtp_sink.py");
        // The first line is the port; read it on a thread so that a hung start fails the test.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            panic!(
                "the SMTP test server did not start:\n{log}\nIf aiosmtpd is missing, create the virtualenv with:\n  {}",
                setup_command()
            );
        };
        SmtpServer { dir, port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An `[smtp]` section for this server: plain SMTP to 127.0.0.1 (no TLS), from [`FROM`].
    pub fn config(&self) -> provisiond::config::Smtp {
        let mut smtp = provisiond::config::Smtp::new("127.0.0.1", FROM);
        smtp.port = Some(self.port);
        smtp.starttls = false;
        smtp.timeout = 5;
        smtp
    }

    /// The same section as TOML, for a daemon's configuration file.
    pub fn toml(&self) -> String {
        format!("[smtp]\nhost = \"127.0.0.1\"\nport = {}\nstarttls = false\nfrom = {FROM:?}\ntimeout = 5\n", self.port)
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("messages"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived and returns them all; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                start.elapsed() < timeout,
                "{n} messages expected within {timeout:?}, {} arrived; the server's log:\n{}",
                messages.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
