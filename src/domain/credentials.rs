//! What tokens and operators share: names an administrator types on the command line, and
//! random secrets handed out once and stored only as hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Error, Invalid, Result};

/// A name `… list` can show on one line and that can be given back as typed: 1 to 100
/// characters, no control characters (newlines, tabs), no spaces around it. `kind` names what
/// it is the name of (`token`, `operator`) in the refusal.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    let refuse = |detail: String| Err(Error::invalid(Invalid::Value, detail));
    if name.is_empty() || name.len() > 100 {
        return refuse(format!("{kind} name must be 1 to 100 characters"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return refuse(format!("{kind} name must not contain control characters (it contains {c:?})"));
    }
    if name.trim() != name {
        return refuse(format!("{kind} name must not begin or end with spaces: {name:?}"));
    }
    Ok(())
}

/// 32 random bytes in hex after `prefix`: a secret shown once.
pub(crate) fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What is stored of a secret: its SHA-256, in hex (the secret has 256 random bits: no salt or
/// slow hash is needed to keep it from being guessed).
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
