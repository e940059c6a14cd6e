//! `[events]` (how long and how hard events are retried) and `[[webhooks]]` (receivers of signed
//! JSON posts, Standard Webhooks).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{duration_secs, Secret};

/// The events about users that receivers hear of (the domain writes them; a test keeps the two
/// in step).
pub const EVENT_TYPES: &[&str] = &[
    "mfa.reset",
    "mfa.enrolled",
    "mfa.backup_codes_regenerated",
    "mfa.factor_removed",
    "user.deactivated",
    "user.reactivated",
    "user.deleted",
];

/// `[events]`: delivery to every receiver (webhooks and Shared Signals streams).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// How long an event is retried before it is dropped for a receiver that keeps failing
    /// (seconds, or a duration such as "3d").
    #[serde(with = "duration_secs")]
    pub max_age: u64,
    /// The longest wait between two attempts (retries back off exponentially up to it).
    #[serde(with = "duration_secs")]
    pub max_backoff: u64,
    /// How long one delivery may take before it counts as failed.
    #[serde(with = "duration_secs")]
    pub timeout: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events { max_age: 3 * 86400, max_backoff: 10 * 60, timeout: 10 }
    }
}

impl Events {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.max_age < 60 {
            out.push("events.max_age: must be at least 60 seconds".into());
        }
        if !(1..=86400).contains(&self.max_backoff) {
            out.push("events.max_backoff: must be between 1 second and 1 day".into());
        }
        if !(1..=300).contains(&self.timeout) {
            out.push("events.timeout: must be between 1 and 300 seconds".into());
        }
    }
}

/// One `[[webhooks]]` entry. The signing secret lives in a file (or a systemd credential), never
/// in the configuration, so `Debug` shows everything here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Names the receiver in metrics, `/readyz` and the console (letters, digits, `-`, `_`).
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// A file holding the signing secret (`whsec_` and base64, as Standard Webhooks issues them).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Or the name of a systemd credential (`LoadCredential=`) holding it.
    #[serde(default)]
    pub credential: Option<String>,
    /// The event types it receives (`mfa.reset`, `mfa.enrolled`, `mfa.backup_codes_regenerated`,
    /// `user.deactivated`, `user.reactivated`, `user.deleted`); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Why a webhook's secret cannot be used; never shows the secret.
#[derive(Debug, thiserror::Error)]
#[error("webhook {name:?}: signing secret {source_name}: {reason}")]
pub struct WebhookSecretError {
    pub name: String,
    pub source_name: String,
    pub reason: String,
}

impl Webhook {
    /// The receiver name its messages are owed to.
    pub fn receiver(&self) -> String {
        format!("webhook:{}", self.name)
    }

    /// Whether it receives events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    /// The signing key: the secret's bytes (the base64 after `whsec_`).
    pub fn secret(&self) -> Result<Secret, WebhookSecretError> {
        let fail = |source_name: String, reason: String| WebhookSecretError { name: self.name.clone(), source_name, reason };
        let path = match (&self.secret_file, &self.credential) {
            (Some(path), None) => path.clone(),
            (None, Some(credential)) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => PathBuf::from(dir).join(credential),
                None => {
                    return Err(fail(
                        format!("credential {credential:?}"),
                        "CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=)".into(),
                    ))
                }
            },
            _ => return Err(fail("".into(), "set exactly one of secret_file and credential".into())),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(path.display().to_string(), e.to_string()))?;
        Ok(Secret::new(text.trim()))
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        let name = &self.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            out.push(format!("webhooks: name {name:?} must be letters, digits, '-' or '_'"));
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            out.push(format!("webhooks.{name}.url: {:?} must be an http(s) URL", self.url));
        }
        if self.secret_file.is_some() == self.credential.is_some() {
            out.push(format!("webhooks.{name}: set exactly one of secret_file and credential"));
        }
        for kind in &self.events {
            if !EVENT_TYPES.contains(&kind.as_str()) {
                out.push(format!("webhooks.{name}.events: unknown event {kind:?} (expected one of {})", EVENT_TYPES.join(", ")));
            }
        }
    }
}
