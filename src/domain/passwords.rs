//! Operators' passwords: a length floor and a strength check (zxcvbn: dictionary words, names,
//! keyboard walks, repeats and dates are what guessers try first), stored as argon2id hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;

use super::{Error, Invalid, Result};

/// The shortest password accepted.
pub(crate) const MIN_CHARS: usize = 12;

/// Argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane): tens of
/// milliseconds per sign-in, expensive for anyone with a stolen table.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params"))
}

/// Refuses a password that is short or easy to guess; `context` holds words a guesser would try
/// for this account (its name, the issuer).
pub(crate) fn check(password: &str, context: &[&str]) -> Result<()> {
    if password.chars().count() < MIN_CHARS {
        return Err(Error::invalid(Invalid::Value, format!("the password must have at least {MIN_CHARS} characters")));
    }
    let estimate = zxcvbn::zxcvbn(password, context);
    if estimate.score() < zxcvbn::Score::Three {
        let hint = estimate.feedback().and_then(|f| f.warning()).map(|w| format!(": {w}")).unwrap_or_default();
        return Err(Error::invalid(Invalid::Value, format!("the password is too easy to guess{hint}")));
    }
    Ok(())
}

pub(crate) fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt");
    argon2().hash_password(password.as_bytes(), &salt).expect("argon2 hashing").to_string()
}

/// Whether `password` is the one `stored` was made from (argon2 compares in constant time).
pub(crate) fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_guessable_passwords_are_refused_naming_why() {
        let refused = |p: &str| check(p, &["alice", "provisiond"]).unwrap_err().to_string();
        assert!(refused("Tr0ub4dor&3").contains("at least 12"));
        assert!(refused("password1234").contains("too easy"));
        assert!(refused("qwertyuiopasdf").contains("too easy"));
        assert!(refused("passwordpassword").contains("too easy"));
        assert!(refused("123456789012").contains("too easy"));
        assert!(check("correct horse battery staple", &["alice"]).is_ok());
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify_only_the_password() {
        let (a, b) = (hash("correct horse battery staple"), hash("correct horse battery staple"));
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") && a != b, "{a}");
        assert!(verify("correct horse battery staple", &a));
        assert!(!verify("correct horse battery stapl", &a));
        assert!(!verify("correct horse battery staple", "not a hash"));
    }
}
