//! `[mfa.webauthn]`: security keys and passkeys. The relying party is who the credentials are
//! made for: its id (a domain) is built into every credential, and a browser only signs for a
//! page whose origin is on that domain, so these values are fixed once users have registered.

use serde::{Deserialize, Serialize};

/// Whether authenticators are asked to verify the user (a PIN, a fingerprint) besides their
/// presence (a touch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    /// Asked for where the authenticator can; a touch is enough where it cannot.
    #[default]
    Preferred,
    /// A touch only: for old U2F keys without a PIN (the password is the first factor).
    Discouraged,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webauthn {
    /// The relying party id: the domain of the login pages (`example.com` serves
    /// `login.example.com` too). Default: the host of `server.public_url`.
    pub rp_id: Option<String>,
    /// The name authenticators may show. Default: `mfa.issuer`.
    pub rp_name: Option<String>,
    /// Every origin (`https://login.example.com`) whose pages run the ceremonies: the login
    /// front ends' and the daemon's own enrolment page. Default: `server.public_url`'s origin.
    pub origins: Vec<String>,
    pub user_verification: UserVerification,
    /// When not empty, only authenticators whose AAGUID (model id) is listed may register. The
    /// AAGUID is as the authenticator reports it (attestation is not verified).
    pub allowed_aaguids: Vec<String>,
}

/// The relying party as configured, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub name: String,
    pub origins: Vec<url::Url>,
    pub user_verification: UserVerification,
    pub allowed_aaguids: Vec<uuid::Uuid>,
}

impl Webauthn {
    /// The relying party, or why there is none: `Ok(None)` when neither `rp_id` nor
    /// `server.public_url` is set (security keys are then off).
    pub fn relying_party(&self, public_url: Option<&str>, issuer: &str) -> Result<Option<RelyingParty>, String> {
        let public = match public_url {
            Some(u) => Some(url::Url::parse(u).map_err(|e| format!("server.public_url: {e}"))?),
            None => None,
        };
        let id = match (&self.rp_id, &public) {
            (Some(id), _) => id.trim().to_ascii_lowercase(),
            // A public URL on an IP address (a test, a private deployment) cannot name a relying
            // party: security keys stay off unless rp_id says otherwise.
            (None, Some(url)) => match url.host() {
                Some(url::Host::Domain(host)) => host.to_ascii_lowercase(),
                _ => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        if id.is_empty()
            || id.parse::<std::net::IpAddr>().is_ok()
            || id.trim_start_matches('[').parse::<std::net::Ipv6Addr>().is_ok()
        {
            return Err(format!(
                "mfa.webauthn.rp_id: {id:?} must be a domain name (browsers refuse IP addresses; use localhost for a test)"
            ));
        }
        let mut origins = Vec::new();
        for text in &self.origins {
            origins.push(url::Url::parse(text).map_err(|e| format!("mfa.webauthn.origins: {text:?} is not a URL ({e})"))?);
        }
        if origins.is_empty() {
            match public {
                Some(url) => origins.push(url::Url::parse(&url.origin().ascii_serialization()).expect("an origin is a URL")),
                None => return Err("mfa.webauthn.origins: list the origins of the pages that run the ceremonies".into()),
            }
        }
        for o in &origins {
            let host = o.host_str().unwrap_or_default().to_ascii_lowercase();
            // Browsers run WebAuthn on secure contexts only: https, or http on localhost.
            if !(o.scheme() == "https" || (o.scheme() == "http" && host == "localhost")) {
                return Err(format!("mfa.webauthn.origins: {o} must start with https:// (or http:// for localhost)"));
            }
            if host != id && !host.ends_with(&format!(".{id}")) {
                return Err(format!("mfa.webauthn.origins: {o} is not on the domain {id} (mfa.webauthn.rp_id)"));
            }
        }
        let mut allowed_aaguids = Vec::new();
        for text in &self.allowed_aaguids {
            allowed_aaguids
                .push(uuid::Uuid::parse_str(text).map_err(|_| format!("mfa.webauthn.allowed_aaguids: {text:?} is not a UUID"))?);
        }
        let name = self.rp_name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| issuer.to_string());
        Ok(Some(RelyingParty { id, name, origins, user_verification: self.user_verification, allowed_aaguids }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(toml: &str, public_url: Option<&str>) -> Result<Option<RelyingParty>, String> {
        use figment::providers::Format;
        let w: Webauthn = figment::Figment::from(figment::providers::Toml::string(toml)).extract().unwrap();
        w.relying_party(public_url, "Example")
    }

    #[test]
    fn defaults_come_from_the_public_url_and_the_issuer() {
        let r = rp("", Some("https://id.example.com/provisiond")).unwrap().unwrap();
        assert_eq!((r.id.as_str(), r.name.as_str()), ("id.example.com", "Example"));
        assert_eq!(r.origins.iter().map(|o| o.as_str()).collect::<Vec<_>>(), ["https://id.example.com/"]);
        assert_eq!(r.user_verification, UserVerification::Preferred);
        assert_eq!(rp("", None).unwrap(), None);
    }

    #[test]
    fn origins_must_be_on_the_relying_partys_domain() {
        let ok = rp(
            r#"rp_id = "example.com"
origins = ["https://login.example.com", "https://example.com:8443"]"#,
            None,
        );
        assert_eq!(ok.unwrap().unwrap().origins.len(), 2);
        let e = rp(
            r#"rp_id = "example.com"
origins = ["https://example.org"]"#,
            None,
        )
        .unwrap_err();
        assert!(e.contains("not on the domain example.com"), "{e}");
        let e = rp(
            r#"rp_id = "example.com"
origins = ["http://login.example.com"]"#,
            None,
        )
        .unwrap_err();
        assert!(e.contains("must start with https://"), "{e}");
        assert!(rp("", Some("http://localhost:8080")).unwrap().is_some(), "http on localhost");
        let e = rp(r#"rp_id = "example.com""#, None).unwrap_err();
        assert!(e.starts_with("mfa.webauthn.origins"), "{e}");
        assert_eq!(rp("", Some("http://127.0.0.1:8080")).unwrap(), None, "no relying party on an IP address");
        let e = rp(r#"rp_id = "127.0.0.1""#, Some("http://127.0.0.1:8080")).unwrap_err();
        assert!(e.contains("must be a domain name"), "{e}");
        let e = rp(r#"allowed_aaguids = ["yubikey"]"#, Some("https://example.com")).unwrap_err();
        assert!(e.contains("is not a UUID"), "{e}");
    }
}
