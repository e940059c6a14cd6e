//! One-time backup codes: ten codes from an alphabet without look-alike characters, shown once,
//! stored as argon2 hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;

/// How many codes a set holds.
pub(crate) const COUNT: usize = 10;
/// No 0/O, 1/I/L, 5/S, 8/B: codes are read off paper and typed.
const ALPHABET: &[u8] = b"2345679ACDEFGHJKMNPQRTUVWXYZ";
const GROUP: usize = 5;

/// Argon2id with modest memory: codes carry ~48 bits of entropy and verification tries up to
/// ten hashes, so the cost per hash is kept near a few milliseconds.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 2, 1, None).expect("valid argon2 params"))
}

/// A new set of codes, formatted `XXXXX-XXXXX`.
pub(crate) fn generate() -> Vec<String> {
    let mut rng = rand::rng();
    (0..COUNT)
        .map(|_| {
            let mut code = String::with_capacity(GROUP * 2 + 1);
            for i in 0..GROUP * 2 {
                if i == GROUP {
                    code.push('-');
                }
                code.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
            }
            code
        })
        .collect()
}

/// The canonical form of a typed code: upper case, without separators or spaces.
pub(crate) fn normalize(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// Whether `code` could be a backup code at all (and is worth the hashing).
pub(crate) fn looks_like_one(code: &str) -> bool {
    let n = normalize(code);
    n.len() == GROUP * 2 && n.bytes().all(|b| ALPHABET.contains(&b))
}

pub(crate) fn hash(code: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt");
    argon2().hash_password(normalize(code).as_bytes(), &salt).expect("argon2 hashing").to_string()
}

/// The index of the hash that `code` matches (argon2 compares in constant time).
pub(crate) fn find(code: &str, hashes: &[String]) -> Option<usize> {
    let code = normalize(code);
    hashes
        .iter()
        .position(|h| PasswordHash::new(h).is_ok_and(|parsed| argon2().verify_password(code.as_bytes(), &parsed).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_readable_and_verify_once_hashed() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), COUNT);
        assert!(codes.iter().all(|c| c.len() == 11 && looks_like_one(c)));
        let hashes: Vec<String> = codes.iter().map(|c| hash(c)).collect();
        assert!(hashes.iter().all(|h| h.starts_with("$argon2id$") && !h.contains(&codes[0])));
        assert_eq!(find(&codes[3], &hashes), Some(3));
        assert_eq!(find(&codes[3].to_lowercase().replace('-', " "), &hashes), Some(3));
        assert_eq!(find("AAAAA-AAAAA", &hashes), None);
        assert!(!looks_like_one("123456"));
    }
}
