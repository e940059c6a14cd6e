//! Sealing TOTP secrets at rest with AES-256-GCM under a 32-byte key read from a file.
//!
//! A sealed value reads `v1.<key id>.<base64 nonce+ciphertext>`. The key id (first 4 bytes of the
//! key's SHA-256) says which key sealed it, so that after a rotation the previous keys still open
//! old values until `provisiond mfa rekey` has re-sealed them under the current key. The user id is
//! bound as associated data: a sealed secret copied onto another user's row does not open.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("MFA key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("a sealed MFA secret cannot be opened: {0}")]
    Open(&'static str),
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Self {
        Key { id: hex::encode(&Sha256::digest(bytes)[..4]), cipher: Aes256Gcm::new(bytes.into()) }
    }
}

/// Seals and opens secrets; `Debug` shows key ids only.
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current.id)
            .field("previous", &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Sealer {
    /// Loads the current key (created with mode 0600 when the file is absent) and the previous
    /// keys (which must exist).
    pub fn load(key_file: &Path, previous: &[PathBuf]) -> Result<Self, SealError> {
        let current = Key::new(&read_or_create(key_file)?);
        let previous = previous.iter().map(|p| read_key(p).map(|k| Key::new(&k))).collect::<Result<_, _>>()?;
        Ok(Sealer { current, previous })
    }

    /// A sealer over a fixed key, for tests.
    #[cfg(test)]
    fn from_key(key: [u8; 32]) -> Self {
        Sealer { current: Key::new(&key), previous: Vec::new() }
    }

    pub fn seal(&self, user_id: &str, secret: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad: user_id.as_bytes() })
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("v1.{}.{}", self.current.id, B64.encode(blob))
    }

    pub(crate) fn open(&self, user_id: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Open("unknown format"));
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or(SealError::Open("sealed under a key that is not configured (key_file / previous_key_files)"))?;
        let blob = B64.decode(data).map_err(|_| SealError::Open("corrupt encoding"))?;
        if blob.len() < 12 + 16 {
            return Err(SealError::Open("too short"));
        }
        let (nonce, ciphertext) = blob.split_at(12);
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: user_id.as_bytes() })
            .map_err(|_| SealError::Open("authentication failed (wrong key or tampered value)"))
    }

    /// The id of the key new secrets are sealed under.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Whether `id` is the current key's or a previous key's.
    pub(crate) fn knows(&self, id: &str) -> bool {
        std::iter::once(&self.current).chain(&self.previous).any(|k| k.id == id)
    }

    /// The ids among `key_ids` that are neither the current key nor a previous one.
    pub(crate) fn unknown_keys<'a>(&self, key_ids: &'a [String]) -> Vec<&'a str> {
        key_ids.iter().map(String::as_str).filter(|id| !self.knows(id)).collect()
    }

    /// Whether `sealed` is under a previous key (and should be re-sealed).
    pub(crate) fn is_stale(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.current.id.as_str())
    }
}

fn read_key(path: &Path) -> Result<[u8; 32], SealError> {
    let err = |reason: String| SealError::KeyFile { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    bytes.try_into().map_err(|b: Vec<u8>| err(format!("must hold exactly 32 bytes, holds {}", b.len())))
}

fn read_or_create(path: &Path) -> Result<[u8; 32], SealError> {
    if path.exists() {
        return read_key(path);
    }
    let err = |reason: String| SealError::KeyFile { path: path.to_path_buf(), reason };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| err(format!("cannot create: {e}")))?;
    file.write_all(&key).and_then(|_| file.sync_all()).map_err(|e| err(format!("cannot write: {e}")))?;
    tracing::warn!(path = %path.display(), "created a new MFA key file; back it up: without it enrolled factors cannot be verified");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let s = Sealer::from_key([7; 32]);
        let sealed = s.seal("user-1", b"JBSWY3DPEHPK3PXP");
        assert!(!sealed.contains("JBSWY3DP"));
        assert_eq!(s.open("user-1", &sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(s.open("user-2", &sealed).is_err());
        assert!(Sealer::from_key([8; 32]).open("user-1", &sealed).is_err());
        assert_ne!(s.seal("user-1", b"x"), s.seal("user-1", b"x"), "nonces differ");
    }

    #[test]
    fn key_file_is_created_0600_and_previous_keys_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.key");
        let old = Sealer::load(&old_path, &[]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&old_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = old.seal("u", b"secret");
        let rotated = Sealer::load(&dir.path().join("new.key"), std::slice::from_ref(&old_path)).unwrap();
        assert_eq!(rotated.open("u", &sealed).unwrap(), b"secret");
        assert!(rotated.is_stale(&sealed));
        assert!(!rotated.is_stale(&rotated.seal("u", b"secret")));
        assert!(format!("{rotated:?}").contains("previous"));
        std::fs::write(dir.path().join("short.key"), b"abc").unwrap();
        let e = Sealer::load(&dir.path().join("short.key"), &[]).unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
    }
}
