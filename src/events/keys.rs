//! The keys that sign security event tokens: one current key that signs, and the keys of
//! before a rotation, still published (`jwks_uri`) so that receivers can verify what they
//! signed while it is on its way. Each lives in a PEM file (PKCS#8) created with mode 0600
//! when absent, as the MFA key is.

use std::io::Write;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::config::SignatureAlgorithm;

#[derive(Debug, thiserror::Error)]
#[error("signing key file {}: {reason}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub reason: String,
}

/// One signing key: its id (the RFC 7638 thumbprint of its public key), its algorithm and
/// its public half as a JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
    pub jwk: Jwk,
}

// The private half never reaches a log.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

/// The current key and the previous ones.
#[derive(Debug)]
pub struct SigningKeys {
    pub current: SigningKey,
    pub previous: Vec<SigningKey>,
}

impl SigningKeys {
    /// Reads the current key (creating it when its file is absent) and the previous ones
    /// (which must exist; each of either algorithm).
    pub fn load(path: &Path, alg: SignatureAlgorithm, previous: &[PathBuf]) -> Result<Self, KeyError> {
        let current = read_or_create(path, alg)?;
        let previous = previous.iter().map(|p| read_either(p)).collect::<Result<_, _>>()?;
        Ok(SigningKeys { current, previous })
    }

    /// What `jwks_uri` serves: every key's public half.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: std::iter::once(&self.current).chain(&self.previous).map(|k| k.jwk.clone()).collect() }
    }
}

fn read(path: &Path, alg: SignatureAlgorithm) -> Result<SigningKey, KeyError> {
    let err = |reason: String| KeyError { path: path.to_path_buf(), reason };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (key, alg) = match alg {
        SignatureAlgorithm::Es256 => (EncodingKey::from_ec_pem(&pem), Algorithm::ES256),
        SignatureAlgorithm::EdDsa => (EncodingKey::from_ed_pem(&pem), Algorithm::EdDSA),
    };
    let key = key.map_err(|e| err(format!("not a {} private key in PEM (PKCS#8): {e}", alg_name(alg))))?;
    let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| err(format!("no public key from it: {e}")))?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| err(format!("no key id from it: {e}")))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(SigningKey { kid, alg, key, jwk })
}

/// A key of before a rotation, whichever algorithm it was made for.
fn read_either(path: &Path) -> Result<SigningKey, KeyError> {
    read(path, SignatureAlgorithm::Es256)
        .or_else(|_| read(path, SignatureAlgorithm::EdDsa))
        .map_err(|e| KeyError { reason: "not a P-256 or Ed25519 private key in PEM (PKCS#8)".into(), ..e })
}

fn read_or_create(path: &Path, alg: SignatureAlgorithm) -> Result<SigningKey, KeyError> {
    if !path.exists() {
        create(path, alg)?;
    }
    read(path, alg)
}

fn create(path: &Path, alg: SignatureAlgorithm) -> Result<(), KeyError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |reason: String| KeyError { path: path.to_path_buf(), reason };
    let der = match alg {
        SignatureAlgorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| err("cannot generate a P-256 key".into()))?
            .as_ref()
            .to_vec(),
        SignatureAlgorithm::EdDsa => ed25519_pkcs8_v1()?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("cannot create: {e}")))?;
    // `mode` is filtered by the umask, which may take the owner's bits too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| err(format!("cannot set its mode: {e}")))?;
    file.write_all(pem(&der).as_bytes()).and_then(|_| file.sync_all()).map_err(|e| err(format!("cannot write: {e}")))?;
    tracing::warn!(path = %path.display(), "created a new event signing key file; back it up (receivers trust its public key)");
    Ok(())
}

/// An Ed25519 private key as PKCS#8 v1 (RFC 8410: the fixed prefix, then the 32-byte seed):
/// ring makes v2 documents, whose public key jsonwebtoken cannot derive a JWK from.
fn ed25519_pkcs8_v1() -> Result<Vec<u8>, KeyError> {
    const PREFIX: [u8; 16] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut seed)
        .map_err(|_| KeyError { path: PathBuf::new(), reason: "cannot generate an Ed25519 key".into() })?;
    Ok(PREFIX.iter().chain(&seed).copied().collect())
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "Ed25519",
        _ => "P-256",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_0600_once_and_published_with_their_previous_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (es, ed) = (dir.path().join("k/es.pem"), dir.path().join("ed.pem"));
        let first = SigningKeys::load(&es, SignatureAlgorithm::Es256, &[]).unwrap();
        assert_eq!(std::fs::metadata(&es).unwrap().permissions().mode() & 0o777, 0o600);
        let again = SigningKeys::load(&es, SignatureAlgorithm::Es256, &[]).unwrap();
        assert_eq!(first.current.kid, again.current.kid, "an existing key is read, not replaced");
        let rotated = SigningKeys::load(&ed, SignatureAlgorithm::EdDsa, std::slice::from_ref(&es)).unwrap();
        let jwks = serde_json::to_value(rotated.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
        assert_eq!((keys[1]["kty"].as_str(), keys[1]["crv"].as_str()), (Some("EC"), Some("P-256")));
        assert_eq!(keys[1]["kid"], first.current.kid.as_str());
        assert!(keys.iter().all(|k| k["use"] == "sig" && k.get("d").is_none()), "public halves only: {jwks}");
        assert!(!format!("{rotated:?}").contains("PRIVATE"), "no key material in Debug");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "not a key").unwrap();
        let e = SigningKeys::load(&path, SignatureAlgorithm::Es256, &[]).unwrap_err().to_string();
        assert!(e.contains("bad.pem") && e.contains("P-256"), "{e}");
    }
}
