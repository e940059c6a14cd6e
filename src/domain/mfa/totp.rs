//! TOTP (RFC 6238) through totp-rs: new secrets, the otpauth URI and QR code, and checking a
//! code at a given time. Replay refusal is the caller's job: [`Policy::check`] returns the step.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::config;

/// The configured TOTP parameters.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: String,
    pub algorithm: config::TotpAlgorithm,
    pub digits: u8,
    pub period: u64,
    pub skew: u16,
}

/// What a user needs to add the factor to an authenticator app. `Debug` hides it.
pub struct Enrolment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    /// `data:image/png;base64,…`
    pub qr_png: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(***)")
    }
}

/// Length of new secrets: 160 bits, as RFC 4226 recommends for HMAC-SHA1.
const SECRET_BYTES: usize = 20;

impl Policy {
    pub fn from_config(c: &config::Mfa) -> Self {
        Policy { issuer: c.issuer.clone(), algorithm: c.algorithm, digits: c.digits, period: c.period, skew: c.skew }
    }

    pub fn new_secret() -> Vec<u8> {
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        secret
    }

    fn totp(&self, secret: &[u8], account: &str) -> Result<Totp, totp_rs::TotpError> {
        Builder::new()
            .with_algorithm(match self.algorithm {
                config::TotpAlgorithm::Sha1 => Algorithm::SHA1,
                config::TotpAlgorithm::Sha256 => Algorithm::SHA256,
                config::TotpAlgorithm::Sha512 => Algorithm::SHA512,
            })
            .with_digits(self.digits)
            .with_step_duration(self.period)
            .with_skew(self.skew)
            .with_secret(secret.to_vec())
            // otpauth labels cannot hold ':' (it separates issuer and account).
            .with_account_name(account.replace(':', "_"))
            .with_issuer(Some(self.issuer.replace(':', "_")))
            .build()
    }

    /// The secret, otpauth URI and QR code of a new factor for `account`.
    pub(crate) fn enrolment(&self, secret: &[u8], account: &str) -> Result<Enrolment, totp_rs::TotpError> {
        let totp = self.totp(secret, account)?;
        Ok(Enrolment {
            secret_base32: totp.secret().to_base32(),
            otpauth_uri: totp.to_url()?,
            qr_png: format!("data:image/png;base64,{}", B64.encode(totp.to_qr_png()?)),
        })
    }

    /// The matched time step when `code` is valid at `unix_time` (within the skew).
    pub(crate) fn check(&self, secret: &[u8], code: &str, unix_time: u64) -> Option<u64> {
        let totp = self.totp(secret, "check").ok()?;
        totp.check(code.trim(), unix_time)
    }

    /// The code for `unix_time` (tests and benchmarks play the authenticator app with it).
    pub fn code_at(&self, secret: &[u8], unix_time: u64) -> String {
        self.totp(secret, "code").expect("valid policy").generate(unix_time).to_string()
    }

    /// Decodes a base32 secret as shown at enrolment.
    pub fn decode_base32(secret: &str) -> Option<Vec<u8>> {
        Secret::try_from_base32(secret).ok().map(|s| s.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy { issuer: "provisiond".into(), algorithm: config::TotpAlgorithm::Sha1, digits: 6, period: 30, skew: 1 }
    }

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 Appendix B: secret "12345678901234567890", T = 59 → 94287082 (8 digits).
        let p = Policy { digits: 8, ..policy() };
        assert_eq!(p.code_at(b"12345678901234567890", 59), "94287082");
        assert_eq!(p.check(b"12345678901234567890", "94287082", 59), Some(1));
    }

    #[test]
    fn skew_allows_one_step_either_side_only() {
        let p = policy();
        let secret = Policy::new_secret();
        let code = p.code_at(&secret, 1_000_000_020);
        let step = 1_000_000_020 / 30;
        assert_eq!(p.check(&secret, &code, 1_000_000_020), Some(step));
        assert_eq!(p.check(&secret, &code, 1_000_000_020 + 30), Some(step));
        assert_eq!(p.check(&secret, &code, 1_000_000_020 - 30), Some(step));
        assert_eq!(p.check(&secret, &code, 1_000_000_020 + 60), None);
        assert_eq!(p.check(&secret, "abcdef", 1_000_000_020), None);
    }

    #[test]
    fn enrolment_carries_uri_and_png() {
        let secret = Policy::new_secret();
        let e = policy().enrolment(&secret, "bjensen@example.com").unwrap();
        assert!(e.otpauth_uri.starts_with("otpauth://totp/provisiond:bjensen%40example.com?"), "{}", e.otpauth_uri);
        assert!(e.otpauth_uri.contains(&format!("secret={}", e.secret_base32)));
        assert!(e.qr_png.starts_with("data:image/png;base64,iVBOR"));
        assert_eq!(Policy::decode_base32(&e.secret_base32).unwrap(), secret);
        assert_eq!(format!("{e:?}"), "Enrolment(***)");
    }
}
