//! API bearer tokens: random secrets shown once, stored as SHA-256 hashes, each with scopes.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::{credentials, Error, Result};
use crate::clock::{self, Clock};
use crate::store::{self, tokens as store_tokens, Pool};

/// How often `last used` is written per token: a write per request would serialise every
/// request on the SQLite writer.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a successful authentication is remembered, saving a database read per request.
/// A token revoked from the command line (another process) stops working within this time.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on remembered tokens; the cache is emptied when it is reached.
const CACHE_MAX: usize = 10_000;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// SCIM provisioning (`/scim/v2`).
    Scim,
    /// Enrolment and verification of second factors.
    Mfa,
    /// Resets, audit, sync and operations.
    Admin,
    /// Shared Signals receivers: manage their own streams and poll them (`/ssf`).
    Ssf,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Scim => "scim",
            Scope::Mfa => "mfa",
            Scope::Admin => "admin",
            Scope::Ssf => "ssf",
        }
    }
}

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?} (expected scim, mfa, admin or ssf)")]
    Unknown(String),
    #[error("at least one scope is needed (scim, mfa, admin, ssf)")]
    None,
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scim" => Ok(Scope::Scim),
            "mfa" => Ok(Scope::Mfa),
            "admin" => Ok(Scope::Admin),
            "ssf" => Ok(Scope::Ssf),
            other => Err(ScopeError::Unknown(other.to_string())),
        }
    }
}

/// Parses `scim,mfa` into scopes (at least one).
pub(crate) fn parse_scopes(s: &str) -> Result<Vec<Scope>, ScopeError> {
    let mut scopes: Vec<Scope> = s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ScopeError::None);
    }
    Ok(scopes)
}

fn join(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// A new token's secret. `Debug` does not show it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Who is calling: the token's name and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub(crate) fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A token as listed: never the secret.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_used_at: Option<chrono::NaiveDateTime>,
}

#[derive(Clone)]
pub struct Tokens {
    pool: Pool,
    clock: Arc<dyn Clock>,
    last_touched: Arc<Mutex<HashMap<String, Instant>>>,
    /// Token hash → principal and when it was read from the database.
    recent: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
}

impl Tokens {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Tokens { pool, clock, last_touched: Arc::default(), recent: Arc::default() }
    }

    fn now(&self) -> chrono::NaiveDateTime {
        clock::stored(self.clock.now())
    }

    /// Creates a token called `name`; the secret is returned once and never stored.
    pub fn create(&self, name: &str, scopes: &[Scope]) -> Result<Secret> {
        credentials::check_name("token", name)?;
        let secret = credentials::random_secret("pvd_");
        let mut conn = self.pool.get()?;
        let created = store::write_tx(&mut conn, |tx| {
            store_tokens::insert(tx, name, &credentials::hash(&secret), &join(scopes), self.now())
        })?;
        if !created {
            return Err(Error::taken(format!("a token called {name:?} already exists")));
        }
        Ok(Secret(secret))
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let mut conn = self.pool.get()?;
        Ok(store_tokens::list(&mut conn)?
            .into_iter()
            .map(|t| TokenInfo { name: t.name, scopes: t.scopes, created_at: t.created_at, last_used_at: t.last_used_at })
            .collect())
    }

    pub fn revoke(&self, name: &str) -> Result<()> {
        self.recent.lock().expect("token cache").retain(|_, (p, _)| p.name != name);
        let mut conn = self.pool.get()?;
        if store::write_tx(&mut conn, |tx| store_tokens::delete(tx, name))? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no token called {name:?}")))
        }
    }

    /// The principal of a presented bearer token, if it is one of ours.
    pub(crate) fn authenticate(&self, presented: &str) -> Result<Option<Principal>> {
        if let Some(principal) = self.recently_authenticated(presented) {
            return Ok(Some(principal));
        }
        let digest = credentials::hash(presented);
        let mut conn = self.pool.get()?;
        let Some(row) = store_tokens::find_by_hash(&mut conn, &digest)? else {
            return Ok(None);
        };
        // The lookup is by hash already; compare in constant time anyway so that no path
        // through this function depends on how much of a secret matched.
        if !bool::from(row.token_hash.as_bytes().ct_eq(digest.as_bytes())) {
            return Ok(None);
        }
        let scopes = parse_scopes(&row.scopes).map_err(|e| store::Error::Corrupt(format!("token {}: {e}", row.name)))?;
        if self.should_touch(&row.name) {
            store::write_tx(&mut conn, |tx| store_tokens::touch(tx, &row.name, self.now()))?;
        }
        let principal = Principal { name: row.name, scopes };
        let mut recent = self.recent.lock().expect("token cache");
        if recent.len() >= CACHE_MAX {
            recent.clear();
        }
        recent.insert(digest, (principal.clone(), Instant::now()));
        Ok(Some(principal))
    }

    /// The principal of a token authenticated less than `CACHE_TTL` ago, without touching the
    /// database (so callers on an async thread need not move to the blocking pool).
    pub(crate) fn recently_authenticated(&self, presented: &str) -> Option<Principal> {
        let recent = self.recent.lock().expect("token cache");
        let (principal, at) = recent.get(&credentials::hash(presented))?;
        (at.elapsed() < CACHE_TTL).then(|| principal.clone())
    }

    fn should_touch(&self, name: &str) -> bool {
        let mut seen = self.last_touched.lock().expect("token touch map");
        let now = Instant::now();
        match seen.get(name) {
            Some(t) if now.duration_since(*t) < TOUCH_INTERVAL => false,
            _ => {
                seen.insert(name.to_string(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_reject_unknown() {
        assert_eq!(parse_scopes("scim, ADMIN").unwrap(), vec![Scope::Scim, Scope::Admin]);
        assert_eq!(parse_scopes("ssf").unwrap(), vec![Scope::Ssf]);
        assert!(parse_scopes("root").unwrap_err().to_string().contains("root"));
        assert!(parse_scopes("").is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret("pvd_abc".into())), "Secret(***)");
    }
}
