//! `[database]`: where the data lives and how long anything may wait for it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://PATH` (embedded default) or `postgres://[USER@]HOST[:PORT]/DB[?sslmode=…]`.
    pub url: DatabaseUrl,
    /// Connections kept in the pool (each instance opens up to this many).
    pub pool_size: u32,
    /// Seconds to wait for a connection, from the pool and when connecting to PostgreSQL.
    pub connect_timeout: u64,
    /// PostgreSQL password, read from this file (one trailing newline dropped); the systemd
    /// credential `database-password` is used when this is unset.
    pub password_file: Option<PathBuf>,
    /// Seconds any one statement may run (PostgreSQL `statement_timeout`, a progress handler on
    /// SQLite): past it the statement is cancelled and the request answered 503.
    pub statement_timeout: u64,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: DatabaseUrl::Sqlite("data/provisiond.db".into()),
            pool_size: 8,
            connect_timeout: 10,
            password_file: None,
            statement_timeout: 10,
        }
    }
}

// By hand: a password written into the URL must not reach a log through `{:?}`.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("password_file", &self.password_file)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl Database {
    /// The URL handed to the driver. For PostgreSQL the password from `password_file` and
    /// `connect_timeout` are added as libpq URI parameters (so no password needs to be in the
    /// configuration file); everything else in the URL, `sslmode` included, is libpq's.
    pub fn connection_url(&self) -> Result<DatabaseUrl, PasswordFileError> {
        let DatabaseUrl::Postgres(base) = &self.url else { return Ok(self.url.clone()) };
        let mut params = Vec::new();
        if let Some(password) = self.password()? {
            params.push(format!("password={}", percent_encode(&password)));
        }
        if !base.contains("connect_timeout=") {
            params.push(format!("connect_timeout={}", self.connect_timeout));
        }
        // TCP keepalives and a bound on unacknowledged data: a database (or a network path to
        // it) that vanishes is noticed in seconds, not after the kernel's two hours.
        for (key, value) in [
            ("keepalives", "1"),
            ("keepalives_idle", "10"),
            ("keepalives_interval", "5"),
            ("keepalives_count", "3"),
            ("tcp_user_timeout", "30000"),
        ] {
            if !base.contains(&format!("{key}=")) {
                params.push(format!("{key}={value}"));
            }
        }
        let mut url = base.clone();
        for p in params {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&p);
        }
        Ok(DatabaseUrl::Postgres(url))
    }

    /// The PostgreSQL password from `password_file`, when one is named (for `pg_dump`, which
    /// takes it from its environment rather than its command line).
    pub fn password(&self) -> Result<Option<String>, PasswordFileError> {
        let Some(path) = &self.password_file else { return Ok(None) };
        let password =
            std::fs::read_to_string(path).map_err(|e| PasswordFileError::Unreadable { path: path.to_path_buf(), source: e })?;
        let password = password.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&password);
        // Empty, libpq would quietly try ~/.pgpass instead; a control character it would
        // quote back in its error message.
        if password.is_empty() {
            return Err(PasswordFileError::Empty(path.to_path_buf()));
        }
        if password.chars().any(char::is_control) {
            return Err(PasswordFileError::ControlCharacter(path.to_path_buf()));
        }
        Ok(Some(password.to_string()))
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if !(1..=1000).contains(&self.pool_size) {
            out.push("database.pool_size: must be between 1 and 1000".into());
        }
        if !(1..=3600).contains(&self.connect_timeout) {
            out.push("database.connect_timeout: must be between 1 and 3600 seconds".into());
        }
        if !(1..=3600).contains(&self.statement_timeout) {
            out.push("database.statement_timeout: must be between 1 and 3600 seconds".into());
        }
        if self.password_file.is_some() {
            if !self.url.is_postgres() {
                out.push("database.password_file: only for a postgres:// url".into());
            } else if self.url.has_password() {
                out.push("database.password_file: the url has a password already; give one or the other".into());
            }
        }
    }
}

/// Where the data lives: `[database] url`, parsed once. `Debug` and `Display` show it with any
/// password replaced by `***`; only the store reads the whole of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatabaseUrl {
    /// A file path (created with its directory when missing), or `:memory:`.
    Sqlite(String),
    /// A libpq URI, as written (its parameters are libpq's).
    Postgres(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("sqlite:// needs a file path, e.g. sqlite://data/provisiond.db")]
    NoPath,
    #[error("must start with sqlite:// or postgres://")]
    Scheme,
}

impl std::str::FromStr for DatabaseUrl {
    type Err = UrlError;
    fn from_str(url: &str) -> Result<Self, UrlError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(UrlError::NoPath);
            }
            Ok(DatabaseUrl::Sqlite(path.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else {
            Err(UrlError::Scheme)
        }
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = UrlError;
    fn try_from(url: String) -> Result<Self, UrlError> {
        url.parse()
    }
}

impl From<DatabaseUrl> for String {
    fn from(url: DatabaseUrl) -> String {
        match url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{path}"),
            DatabaseUrl::Postgres(url) => url,
        }
    }
}

impl DatabaseUrl {
    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }

    /// Whether the URL carries a password of its own.
    pub fn has_password(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(url) if redact(url) != *url)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{path}"),
            DatabaseUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// Why `database.password_file` gives no password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("database.password_file: cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("database.password_file: {} is empty", .0.display())]
    Empty(PathBuf),
    #[error("database.password_file: {} holds a control character besides the final newline", .0.display())]
    ControlCharacter(PathBuf),
}

/// A URL fit for messages and pages: a password in the user part, or in a `password=` or
/// `sslpassword=` parameter (keys percent-decoded, as libpq reads them), becomes `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    // The user part ends at the last `@` before the path, as libpq reads it (a password may hold
    // a `?`); the authority then ends at the path or the query.
    let path_start = url[scheme..].find('/').map_or(url.len(), |i| scheme + i);
    let host_start = url[scheme..path_start].rfind('@').map_or(scheme, |i| scheme + i);
    let authority_end = url[host_start..].find(['/', '?']).map_or(url.len(), |i| host_start + i);
    let mut out = url[..scheme].to_string();
    let authority = &url[scheme..authority_end];
    match authority.rfind('@').map(|at| authority.split_at(at)) {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***{host}")),
            None => out.push_str(authority),
        },
        None => out.push_str(authority),
    }
    let rest = &url[authority_end..];
    match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if ["password", "sslpassword"].contains(&percent_decode(k).as_str()) => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", params.join("&")));
        }
        None => out.push_str(rest),
    }
    out
}

/// Percent-encodes a URI component (RFC 3986 unreserved characters stay).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> DatabaseUrl {
        s.parse().unwrap()
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db?sslmode=require&password=p%40ss"), "postgres://u@h/db?sslmode=require&password=***");
        assert_eq!(redact("postgres://u:a:b@h:5432/db?password=x"), "postgres://u:***@h:5432/db?password=***");
        assert_eq!(redact("sqlite://data/p.db"), "sqlite://data/p.db");
        // An `@` after the host is not a user part; encoded keys are what libpq reads.
        let at_in_query = "postgres://u@h:5432/db?sslrootcert=/run/credentials/provisiond@2.service/ca.pem";
        assert_eq!(redact(at_in_query), at_in_query);
        assert!(!url(at_in_query).has_password());
        assert_eq!(redact("postgres://h/db?pass%77ord=x&sslpassword=y"), "postgres://h/db?pass%77ord=***&sslpassword=***");
        // libpq takes everything before the `@` as the user part, a `?` included.
        assert_eq!(redact("postgres://u:p?ss@h/db"), "postgres://u:***@h/db");
        assert!(url("postgres://u:p?ss@h:5432/db?sslmode=require").has_password());
    }
}
