//! Typed configuration: defaults, then the TOML file, then `PROVISIOND_<SECTION>__<KEY>`
//! environment overrides. Every problem is reported with the key's name.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod database;
mod events;
mod ldap;
mod server;
mod smtp;
mod webauthn;
pub use database::{percent_encode, redact, Database, DatabaseUrl, PasswordFileError, UrlError};
pub use events::{Events, Webhook, WebhookSecretError, EVENT_TYPES};
pub use ldap::{
    is_attribute_description, ChangeDetection, GroupMembership, Ldap, LdapGroups, LdapMfaReset, LdapSafety, LdapScope,
    PasswordError, Schedule, ScheduleError, SyncUuidKey,
};
pub use server::{Network, NetworkError, Server};
pub use smtp::{Smtp, SmtpPasswordError, SmtpSecurity, SMTP_PASSWORD_CREDENTIAL};
pub use webauthn::{RelyingParty, UserVerification, Webauthn};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub database: Database,
    pub scim: Scim,
    pub mfa: Mfa,
    pub log: Log,
    pub console: Console,
    /// LDAP sync; absent: no sync.
    pub ldap: Option<Ldap>,
    /// The mail server enrolment links are sent through; absent: links are not mailed.
    pub smtp: Option<Smtp>,
    /// The Shared Signals transmitter; absent: no security event tokens are signed or sent.
    pub ssf: Option<Ssf>,
    /// Delivery of events to every receiver.
    pub events: Events,
    /// Receivers of signed JSON posts.
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scim {
    /// Page size of a list request without `count`.
    pub default_page_size: i64,
    /// Largest page returned; larger `count`s are clamped to it (refused with `invalidCount`
    /// when paging by cursor, RFC 9865).
    pub max_page_size: i64,
    /// Seconds a list cursor (RFC 9865 `nextCursor`, `previousCursor`) stays good after it was
    /// issued (`cursorTimeout`), and an instance remembers where a `startIndex` page ended (a
    /// number of seconds, or a duration such as "10m").
    #[serde(with = "duration_secs")]
    pub cursor_timeout: u64,
}

impl Default for Scim {
    fn default() -> Self {
        Scim { default_page_size: 100, max_page_size: 1000, cursor_timeout: 600 }
    }
}

/// `[ssf]`: the Shared Signals Framework 1.0 transmitter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssf {
    /// The transmitter's issuer: `iss` of every token and `issuer` of
    /// `/.well-known/ssf-configuration` (the daemon's public URL).
    pub issuer: String,
    /// The private key that signs the tokens (PEM, PKCS#8), created with mode 0600 when absent.
    #[serde(default = "default_ssf_key_file")]
    pub key_file: PathBuf,
    #[serde(default)]
    pub algorithm: SignatureAlgorithm,
    /// Keys of before a rotation: still published at `jwks_uri` for the tokens they signed.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
}

impl Ssf {
    fn problems(&self, out: &mut Vec<String>) {
        // SSF §7.1: an https URL (http on loopback, for trying it out) without query or fragment.
        let issuer = &self.issuer;
        let scheme_ok = issuer.starts_with("https://") || issuer.starts_with("http://");
        if !scheme_ok
            || issuer.contains(['?', '#'])
            || issuer.split("://").nth(1).is_none_or(|h| h.is_empty() || h.starts_with('/'))
        {
            out.push(format!(
                "ssf.issuer: {issuer:?} must be the daemon's public URL (https://host[/path], no query or fragment)"
            ));
        }
    }
}

fn default_ssf_key_file() -> PathBuf {
    PathBuf::from("data/ssf.key")
}

/// How security event tokens are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureAlgorithm {
    /// ECDSA with P-256 and SHA-256: what every receiver's library checks.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TotpAlgorithm {
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mfa {
    /// Issuer shown in authenticator apps.
    pub issuer: String,
    /// 32-byte key that seals TOTP secrets; created with mode 0600 when absent.
    pub key_file: PathBuf,
    /// Keys of before a rotation: they still open secrets until `provisiond mfa rekey` ran.
    pub previous_key_files: Vec<PathBuf>,
    pub algorithm: TotpAlgorithm,
    pub digits: u8,
    /// Seconds per TOTP time step.
    pub period: u64,
    /// Steps accepted either side of the current one (clock drift of the phone).
    pub skew: u16,
    /// Wrong codes within `lockout_window` that lock verification.
    pub max_failures: u32,
    /// Seconds: the window in which failures count, and how long a lockout lasts.
    pub lockout_window: u64,
    /// Most users one bulk reset request may name or match.
    pub max_bulk_reset: usize,
    /// Seconds an enrolment link works unless its request says otherwise (a number of
    /// seconds, or a duration such as "72h").
    #[serde(with = "duration_secs")]
    pub enrolment_link_ttl: u64,
    /// `[mfa.webauthn]`: security keys and passkeys.
    pub webauthn: Webauthn,
}

/// A number of seconds, also written as a duration such as `"72h"` or `"30m"`.
pub(crate) mod duration_secs {
    pub(crate) fn serialize<S: serde::Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*secs)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct Secs;
        impl serde::de::Visitor<'_> for Secs {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("seconds, or a duration such as \"72h\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
                super::parse_duration(v).map(|d| d.as_secs()).map_err(E::custom)
            }
        }
        d.deserialize_any(Secs)
    }
}

pub use crate::duration::parse_duration;

impl Default for Mfa {
    fn default() -> Self {
        Mfa {
            issuer: "provisiond".into(),
            key_file: PathBuf::from("data/mfa.key"),
            previous_key_files: Vec::new(),
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
            skew: 1,
            max_failures: 5,
            lockout_window: 900,
            max_bulk_reset: 10_000,
            enrolment_link_ttl: 72 * 3600,
            webauthn: Webauthn::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `provisiond=debug,actix_web=info`, …
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::Text, level: "info".into() }
    }
}

/// The admin console under `/console`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Serve the console (and redirect `/` to it).
    pub enabled: bool,
    /// Seconds without a request after which a session ends.
    pub session_idle_timeout: u64,
    /// Seconds after sign-in after which a session ends however busy.
    pub session_lifetime: u64,
}

impl Default for Console {
    fn default() -> Self {
        Console { enabled: true, session_idle_timeout: 30 * 60, session_lifetime: 12 * 3600 }
    }
}

/// A secret from the configuration or the environment: never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    /// Any scalar is taken as its text, and an error never shows the value.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a secret that looks like a number must be quoted"))
            }
        }
        d.deserialize_any(Text)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} not found (pass --config FILE or set PROVISIOND_CONFIG)")]
    Missing(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path` and the environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            // The bind password is read as it is, below: figment would turn `12345` into a number.
            .merge(Env::prefixed("PROVISIOND_").ignore(&["CONFIG", "LDAP__BIND_PASSWORD"]).split("__"))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.into_iter().map(|e| describe(&e)).collect::<Vec<_>>().join("\n")))?;
        let mut config = config;
        if let (Some(ldap), Ok(password)) = (config.ldap.as_mut(), std::env::var("PROVISIOND_LDAP__BIND_PASSWORD")) {
            ldap.bind_password = Some(Secret(password));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            config.use_credentials(Path::new(&dir));
        }
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
    }

    /// systemd credentials (`LoadCredential=`, in `$CREDENTIALS_DIRECTORY`): `mfa-key`,
    /// `ldap-bind-password`, `database-password` and `smtp-password` (with `smtp.username`)
    /// are used when present, unless the configuration names its own.
    pub fn use_credentials(&mut self, dir: &Path) {
        let db_password = dir.join("database-password");
        let database = &self.database;
        if db_password.is_file() && database.password_file.is_none() && database.url.is_postgres() && !database.url.has_password()
        {
            self.database.password_file = Some(db_password);
        }
        let key = dir.join("mfa-key");
        if key.is_file() && self.mfa.key_file == Mfa::default().key_file {
            self.mfa.key_file = key;
        }
        let password = dir.join("ldap-bind-password");
        if let Some(ldap) = self.ldap.as_mut() {
            if password.is_file() && ldap.bind_password.is_none() && ldap.bind_password_file.is_none() {
                ldap.bind_password_file = Some(password);
            }
        }
        let password = dir.join(SMTP_PASSWORD_CREDENTIAL);
        if let Some(smtp) = self.smtp.as_mut() {
            if password.is_file() && smtp.username.is_some() && smtp.password_file.is_none() {
                smtp.password_file = Some(password);
            }
        }
    }

    /// Values that parse but cannot work, each prefixed with its key.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.server.workers.is_some_and(|n| !(1..=1024).contains(&n)) {
            out.push("server.workers: must be between 1 and 1024".into());
        }
        if !(1..=86400).contains(&self.server.shutdown_timeout) {
            out.push("server.shutdown_timeout: must be between 1 and 86400 seconds".into());
        }
        if !(1024..=1 << 30).contains(&self.server.max_body_bytes) {
            out.push("server.max_body_bytes: must be between 1024 and 1073741824 (1 GiB)".into());
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push(format!("server.public_url: {url:?} must start with http:// or https://"));
            }
        }
        if !(1..=3600).contains(&self.server.request_timeout) {
            out.push("server.request_timeout: must be 1 to 3600 seconds".into());
        }
        self.database.problems(&mut out);
        if !(1..=100_000).contains(&self.scim.max_page_size) {
            out.push("scim.max_page_size: must be between 1 and 100000".into());
        }
        if !(0..=self.scim.max_page_size).contains(&self.scim.default_page_size) {
            out.push("scim.default_page_size: must be between 0 and scim.max_page_size".into());
        }
        if !(1..=86_400).contains(&self.scim.cursor_timeout) {
            out.push("scim.cursor_timeout: must be between 1 second and 24h".into());
        }
        if !(6..=8).contains(&self.mfa.digits) {
            out.push("mfa.digits: must be 6, 7 or 8".into());
        }
        if !(1..=3600).contains(&self.mfa.period) {
            out.push("mfa.period: must be between 1 and 3600 seconds".into());
        }
        if self.mfa.issuer.trim().is_empty() {
            out.push("mfa.issuer: must not be empty".into());
        }
        if !(0..=10).contains(&self.mfa.skew) {
            out.push("mfa.skew: must be between 0 and 10 steps".into());
        }
        if !(1..=1000).contains(&self.mfa.max_failures) {
            out.push("mfa.max_failures: must be between 1 and 1000".into());
        }
        if !(1..=366 * 86400).contains(&self.mfa.lockout_window) {
            out.push("mfa.lockout_window: must be between 1 second and 366 days (31622400 seconds)".into());
        }
        if !(1..=1_000_000).contains(&self.mfa.max_bulk_reset) {
            out.push("mfa.max_bulk_reset: must be between 1 and 1000000".into());
        }
        if !(60..=30 * 86400).contains(&self.mfa.enrolment_link_ttl) {
            out.push("mfa.enrolment_link_ttl: must be between 60 seconds and 30 days (2592000 seconds)".into());
        }
        if let Err(e) = self.mfa.webauthn.relying_party(self.server.public_url.as_deref(), &self.mfa.issuer) {
            out.push(e);
        }
        if !(60..=86400).contains(&self.console.session_idle_timeout) {
            out.push("console.session_idle_timeout: must be between 60 and 86400 seconds".into());
        }
        if !(60..=30 * 86400).contains(&self.console.session_lifetime) {
            out.push("console.session_lifetime: must be between 60 seconds and 30 days (2592000 seconds)".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            out.push(format!("log.level: {:?} is not a log filter ({e})", self.log.level));
        }
        if let Some(ldap) = &self.ldap {
            ldap.problems(&mut out);
        }
        if let Some(smtp) = &self.smtp {
            smtp.problems(&mut out);
        }
        if let Some(ssf) = &self.ssf {
            ssf.problems(&mut out);
        }
        self.events.problems(&mut out);
        let mut names = std::collections::HashSet::new();
        for webhook in &self.webhooks {
            webhook.problems(&mut out);
            if !names.insert(&webhook.name) {
                out.push(format!("webhooks: two entries are named {:?}", webhook.name));
            }
        }
        out
    }
}

/// One figment error as `key: problem (source)`.
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let mut kind = e.kind.to_string();
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        kind = format!("unknown key {field:?}");
    }
    let key = match (&e.kind, key.is_empty()) {
        (figment::error::Kind::UnknownField(field, _), _) if !key.ends_with(field.as_str()) => {
            if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            }
        }
        (figment::error::Kind::MissingField(field), _) => {
            kind = "required".into();
            if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            }
        }
        (_, true) => "(top level)".into(),
        _ => key,
    };
    match e.metadata.as_ref() {
        Some(m) => format!("{key}: {kind} (from {})", m.name),
        None => format!("{key}: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path)
    }

    #[test]
    fn defaults_fill_what_the_file_omits() {
        let c = load("[server]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9");
        assert_eq!(c.database.url.to_string(), "sqlite://data/provisiond.db");
        assert_eq!(c.scim.max_page_size, 1000);
    }

    #[test]
    fn ldap_attribute_names_are_rfc_4512_descriptions() {
        for good in ["mfaResetRequested", "entryUUID", "mS-DS-ConsistencyGuid", "1.3.6.1.4.1.99999.42.1.1", "cn;lang-en"] {
            assert!(is_attribute_description(good), "{good}");
        }
        for bad in ["mfaResetRequested)(uid=*", "", "1abc", "a b", "mail*", "1.02", "-x", "a;", "1"] {
            assert!(!is_attribute_description(bad), "{bad:?}");
        }
        let base = "[ldap]\nurl = \"ldap://h\"\nbase_dn = \"dc=x\"\nid_attribute = \"entry UUID\"\nchange_attribute = \"x=y\"\n";
        let e = load(&format!("{base}[ldap.mfa_reset]\nattribute = \"mfaResetRequested)(uid=*\"\nvalue = \"TRUE\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ldap.mfa_reset.attribute") && e.contains("ldap.id_attribute") && e.contains("ldap.change_attribute"),
            "{e}"
        );
    }

    #[test]
    fn ldap_section_is_checked_key_by_key_and_never_shows_the_password() {
        let base = "[ldap]\nurl = \"ldap://h\"\nbase_dn = \"dc=x\"\nbind_dn = \"cn=a\"\n";
        let e = load(&format!("{base}schedule = \"* *\"\n")).unwrap_err().to_string();
        assert!(e.contains("ldap.schedule") && e.contains("ldap.bind_dn: needs"), "{e}");
        let e = load(&format!("{base}bind_password = 1.5\n")).unwrap_err().to_string();
        assert!(e.contains("must be quoted") && !e.contains("1.5"), "{e}");
        let c = load(&format!("{base}bind_password = 12345678\n")).unwrap();
        assert_eq!(c.ldap.as_ref().unwrap().bind_password.as_ref().unwrap().expose(), "12345678");
        assert!(!format!("{c:?}").contains("12345678"), "Debug hides it");
        let e = load("[ldap]\nurl = \"http://h\"\n").unwrap_err().to_string();
        assert!(e.contains("ldap.url") && e.contains("ldap.base_dn"), "{e}");
    }

    #[test]
    fn ldap_groups_section_has_defaults_and_is_checked_key_by_key() {
        let base = "[ldap]\nurl = \"ldap://h\"\nbase_dn = \"dc=x\"\n";
        assert!(load(base).unwrap().ldap.unwrap().groups.is_none(), "absent: no group sync");
        let g = load(&format!("{base}[ldap.groups]\n")).unwrap().ldap.unwrap().groups.unwrap();
        assert_eq!((g.name_attribute.as_str(), g.membership.attribute(), g.base_dn), ("cn", "member", None));
        let g = load(&format!("{base}[ldap.groups]\nmembership = \"memberUid\"\n")).unwrap().ldap.unwrap().groups.unwrap();
        assert_eq!(g.membership.attribute(), "memberUid");
        let e = load(&format!(
            "{base}[ldap.groups]\nfilter = \"objectClass=x\"\nname_attribute = \"c n\"\nmember_uid_attribute = \"u)\"\n"
        ))
        .unwrap_err()
        .to_string();
        for key in ["ldap.groups.filter", "ldap.groups.name_attribute", "ldap.groups.member_uid_attribute"] {
            assert!(e.contains(key), "{key} in {e}");
        }
        let e = load(&format!("{base}[ldap.groups]\nmembership = \"members\"\n")).unwrap_err().to_string();
        assert!(e.contains("membership"), "{e}");
    }

    #[test]
    fn ssf_section_is_optional_and_its_issuer_is_a_url() {
        assert!(load("[server]\n").unwrap().ssf.is_none(), "no [ssf]: no transmitter");
        let c = load("[ssf]\nissuer = \"https://idp.example\"\n").unwrap();
        let ssf = c.ssf.unwrap();
        assert_eq!((ssf.algorithm, ssf.key_file), (SignatureAlgorithm::Es256, PathBuf::from("data/ssf.key")));
        assert_eq!(
            load("[ssf]\nissuer = \"https://i\"\nalgorithm = \"EdDSA\"\n").unwrap().ssf.unwrap().algorithm,
            SignatureAlgorithm::EdDsa
        );
        for bad in ["idp.example", "https://idp.example/?x=1", "https:///x"] {
            let e = load(&format!("[ssf]\nissuer = {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("ssf.issuer"), "{bad}: {e}");
        }
        let e = load("[ssf]\nissuer = \"https://i\"\nalgorithm = \"RS256\"\n").unwrap_err().to_string();
        assert!(e.contains("algorithm"), "{e}");
    }

    #[test]
    fn smtp_section_is_optional_and_checked_key_by_key() {
        assert!(load("[server]\n").unwrap().smtp.is_none(), "no [smtp]: no mail");
        let base = "[smtp]\nhost = \"smtp.example.com\"\nfrom = \"provisiond <noreply@example.com>\"\n";
        let c = load(base).unwrap();
        let smtp = c.smtp.as_ref().unwrap();
        assert_eq!((smtp.port(), smtp.security(), smtp.timeout), (587, SmtpSecurity::StartTls, 10));
        let c = load(&format!("{base}starttls = false\ntls = true\n")).unwrap();
        assert_eq!(c.smtp.unwrap().port(), 465);
        let e = load("[smtp]\nfrom = \"noreply@example.com\"\n").unwrap_err().to_string();
        assert!(e.contains("smtp.host"), "{e}");
        let e = load("[smtp]\nhost = \"h\"\n").unwrap_err().to_string();
        assert!(e.contains("smtp.from"), "{e}");
        for (extra, key) in [
            ("tls = true\n", "set one of smtp.starttls and smtp.tls"),
            ("port = 70000\n", "smtp.port"),
            ("timeout = 0\n", "smtp.timeout"),
            ("username = \"mailer\"\n", "smtp.username: needs"),
            ("password = \"s3cret\"\n", "smtp.password"),
        ] {
            let e = load(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("s3cret"), "{extra}: {e}");
        }
        let e = load("[smtp]\nhost = \"h\"\nfrom = \"nobody\"\nstarttls = true\ntls = true\n").unwrap_err().to_string();
        assert!(e.contains("smtp.from") && e.contains("smtp.tls"), "every problem at once: {e}");
    }

    /// The commented-out section `[name]` of the example configuration, uncommented (up to the
    /// next blank line).
    fn example_section(name: &str) -> String {
        let example = include_str!("../config/provisiond.example.toml");
        let header = format!("[{name}]");
        let start = example.find(&format!("# {header}")).expect("the section in the example");
        let section = &example[start..];
        let section = &section[..section.find("\n\n").unwrap_or(section.len())];
        section
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with(&header)
                    || l.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn ssf_example_section_uncommented_is_valid() {
        let ssf = load(&example_section("ssf")).unwrap().ssf.unwrap();
        assert_eq!((ssf.issuer.as_str(), ssf.algorithm), ("https://idm.example.com", SignatureAlgorithm::Es256));
    }

    #[test]
    fn smtp_example_section_uncommented_is_valid() {
        let toml = example_section("smtp");
        assert!(toml.contains("host = ") && toml.contains("password_file = "), "{toml}");
        let smtp = load(&toml).unwrap().smtp.unwrap();
        assert_eq!((smtp.host.as_str(), smtp.port(), smtp.username.as_deref()), ("smtp.example.com", 587, Some("provisiond")));
    }

    #[test]
    fn smtp_password_from_the_systemd_credential_when_a_username_wants_one() {
        let dir = tempfile::tempdir().unwrap();
        let credential = dir.path().join("smtp-password");
        std::fs::write(&credential, "s3cret\n").unwrap();
        let mut smtp = Smtp::new("smtp.example.com", "noreply@example.com");
        let mut c = Config { smtp: Some(smtp.clone()), ..Config::default() };
        c.use_credentials(dir.path());
        assert!(c.smtp.as_ref().unwrap().password_file.is_none(), "no username: no login, no password");
        smtp.username = Some("mailer".into());
        c.smtp = Some(smtp.clone());
        c.use_credentials(dir.path());
        let used = c.smtp.as_ref().unwrap();
        assert_eq!(used.password_file.as_deref(), Some(credential.as_path()));
        assert_eq!(used.password().unwrap().unwrap().expose(), "s3cret");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(!format!("{c:?}").contains("s3cret"));
        smtp.password_file = Some("/etc/provisiond/smtp.pw".into());
        c.smtp = Some(smtp);
        c.use_credentials(dir.path());
        assert_eq!(c.smtp.unwrap().password_file.unwrap().to_str(), Some("/etc/provisiond/smtp.pw"), "the configured file wins");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let c = load("[server]\ntrusted_proxies = [\"10.1.0.0/16\", \"::1\", \"192.0.2.7\"]\n").unwrap();
        let nets = c.server.trusted_proxies.clone();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(nets.iter().any(|n| n.contains(ip("10.1.200.3"))));
        assert!(!nets.iter().any(|n| n.contains(ip("10.2.0.1"))));
        assert!(nets.iter().any(|n| n.contains(ip("::1"))));
        assert!(nets.iter().any(|n| n.contains(ip("::ffff:192.0.2.7"))), "IPv4-mapped peers match IPv4 entries");
        assert!(!nets.iter().any(|n| n.contains(ip("192.0.2.8"))));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        assert!(load("[server]\n").unwrap().server.trusted_proxies.is_empty(), "nobody by default");
        for bad in ["proxy.example.com", "10.0.0.0/33", "::/129", "10.0.0.1/x"] {
            let e = load(&format!("[server]\ntrusted_proxies = [{bad:?}]\n")).unwrap_err().to_string();
            assert!(e.contains("server.trusted_proxies") && e.contains(bad), "{e}");
        }
        let e = load("[server]\nrequest_timeout = 0\n").unwrap_err().to_string();
        assert!(e.contains("server.request_timeout"), "{e}");
    }

    #[test]
    fn every_number_is_bounded_and_named_when_out_of_bounds() {
        let huge = i64::MAX.to_string(); // the largest integer TOML has
        let cases = [
            ("server", "workers", "0"),
            ("server", "workers", huge.as_str()),
            ("server", "max_body_bytes", huge.as_str()),
            ("server", "shutdown_timeout", "0"),
            ("server", "shutdown_timeout", huge.as_str()),
            ("server", "request_timeout", huge.as_str()),
            ("database", "pool_size", "0"),
            ("database", "pool_size", "4000000000"),
            ("database", "connect_timeout", "0"),
            ("database", "statement_timeout", huge.as_str()),
            ("scim", "max_page_size", "0"),
            ("scim", "max_page_size", "9223372036854775807"),
            ("scim", "default_page_size", "-1"),
            ("mfa", "digits", "0"),
            ("mfa", "period", "0"),
            ("mfa", "skew", "65535"),
            ("mfa", "max_failures", "0"),
            ("mfa", "max_failures", "4294967295"),
            ("mfa", "lockout_window", huge.as_str()),
            ("mfa", "max_bulk_reset", "0"),
            ("mfa", "max_bulk_reset", huge.as_str()),
            ("mfa", "enrolment_link_ttl", "0"),
            ("mfa", "enrolment_link_ttl", "\"31d\""),
            ("mfa", "enrolment_link_ttl", "\"forever\""),
            ("console", "session_idle_timeout", "0"),
            ("console", "session_lifetime", huge.as_str()),
            ("ldap", "page_size", "0"),
            ("ldap", "page_size", "4294967295"),
            ("ldap", "timeout", huge.as_str()),
            ("ldap", "overlap", huge.as_str()),
            ("ldap.safety", "max_deactivate_percent", "nan"),
            ("ldap.safety", "max_deactivate_percent", "101.0"),
        ];
        for (section, key, value) in cases {
            let e = load(&format!("[{section}]\n{key} = {value}\n")).unwrap_err().to_string();
            assert!(e.contains(&format!("{section}.{key}")), "{section}.{key} = {value}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[server]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = load("[server]\nmax_body_bytes = \"big\"\n").unwrap_err().to_string();
        assert!(e.contains("server.max_body_bytes"), "{e}");
        let e = load("[scim]\npage = 3\n").unwrap_err().to_string();
        assert!(e.contains("scim.page"), "{e}");
        let e = load("[database]\nurl = \"mysql://x\"\n").unwrap_err().to_string();
        assert!(e.contains("database.url"), "{e}");
    }
}
