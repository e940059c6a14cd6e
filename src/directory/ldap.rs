//! The LDAP side: connect (TLS, StartTLS, CA file), bind, paged streaming search (RFC 2696),
//! key lookups and clearing a flag. Values placed into filters are escaped (RFC 4515).

use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry, SearchStream};

use crate::config::{self, LdapScope};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: ldap3::LdapError },
    #[error("bind as {dn:?} refused: {source}")]
    Bind { dn: String, source: ldap3::LdapError },
    #[error("{0}")]
    Config(String),
    #[error("LDAP {what} failed: {source}")]
    Operation { what: &'static str, source: ldap3::LdapError },
}

/// A bound connection; clones share it (LDAP operations are multiplexed).
#[derive(Clone)]
pub struct Directory {
    ldap: Ldap,
    cfg: Arc<config::Ldap>,
}

pub type Entries = SearchStream<'static, String, Vec<String>>;

impl Directory {
    pub async fn connect(cfg: Arc<config::Ldap>) -> Result<Self, DirectoryError> {
        let timeout = Duration::from_secs(cfg.timeout);
        let mut settings = LdapConnSettings::new().set_conn_timeout(timeout).set_starttls(cfg.starttls);
        if let Some(ca) = &cfg.ca_file {
            settings = settings.set_config(tls_config(ca)?);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
            .await
            .map_err(|source| DirectoryError::Connect { url: cfg.url.clone(), source })?;
        ldap3::drive!(conn);
        ldap.with_timeout(timeout);
        if let Some(dn) = &cfg.bind_dn {
            let password = cfg.password().map_err(DirectoryError::Config)?;
            let password = password.as_ref().map(|p| p.expose()).unwrap_or_default();
            ldap.simple_bind(dn, password)
                .await
                .and_then(|r| r.success())
                .map_err(|source| DirectoryError::Bind { dn: dn.clone(), source })?;
        }
        Ok(Directory { ldap, cfg })
    }

    /// A paged search under `base_dn` for `filter`, entries streamed as they arrive.
    pub async fn search(&mut self, filter: &str, attributes: Vec<String>) -> Result<Entries, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<'static, String, Vec<String>>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(self.cfg.page_size.min(i32::MAX as u32) as i32))];
        let scope = match self.cfg.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        };
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        self.ldap
            .streaming_search_with(adapters, &self.cfg.base_dn, scope, filter, attributes)
            .await
            .map_err(|source| DirectoryError::Operation { what: "search", source })
    }

    /// The DNs of entries under `base_dn` matching `filter` (small answers only).
    pub async fn dns(&mut self, filter: &str) -> Result<Vec<String>, DirectoryError> {
        let mut stream = self.search(filter, vec!["1.1".into()]).await?;
        let mut out = Vec::new();
        while let Some(e) = stream.next().await.map_err(|source| DirectoryError::Operation { what: "search", source })? {
            out.push(SearchEntry::construct(e).dn);
        }
        stream.finish().await.success().map_err(|source| DirectoryError::Operation { what: "search", source })?;
        Ok(out)
    }

    /// Whether an entry with this key is still in the user filter.
    pub async fn has_key(&mut self, key: &str) -> Result<bool, DirectoryError> {
        let filter = format!("(&{}({}={}))", self.cfg.user_filter, self.cfg.id_attribute, escape_key(&self.cfg.id_attribute, key));
        Ok(!self.dns(&filter).await?.is_empty())
    }

    /// Removes the attribute `attribute` from entry `dn`.
    pub async fn remove_attribute(&mut self, dn: &str, attribute: &str) -> Result<(), DirectoryError> {
        let all = std::collections::HashSet::<&str>::new();
        // The timeout applies to the next operation only: set it for each one.
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        self.ldap
            .modify(dn, vec![Mod::Delete(attribute, all)])
            .await
            .and_then(|r| r.success())
            .map(|_| ())
            .map_err(|source| DirectoryError::Operation { what: "modify", source })
    }

    pub async fn close(mut self) {
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        let _ = self.ldap.unbind().await;
    }
}

/// Id attributes whose values are UUIDs in text form; others holding a UUID key were binary.
const TEXT_UUID_ATTRIBUTES: [&str; 2] = ["entryUUID", "ipaUniqueID"];

/// A key as a filter value: text escaped (RFC 4515); a binary key (AD's objectGUID, or another
/// 16-byte attribute the mapping stored as a UUID) as its bytes, each escaped.
pub fn escape_key(id_attribute: &str, key: &str) -> String {
    let text = TEXT_UUID_ATTRIBUTES.iter().any(|a| a.eq_ignore_ascii_case(id_attribute));
    match uuid::Uuid::parse_str(key) {
        Ok(u) if id_attribute.eq_ignore_ascii_case("objectGUID") => escape_bytes(&u.to_bytes_le()),
        Ok(u) if !text => escape_bytes(u.as_bytes()),
        _ => ldap3::ldap_escape(key).into_owned(),
    }
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The system roots plus the certificates of `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |e: String| DirectoryError::Config(format!("ldap.ca_file: {}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))?;
    let mut added = 0;
    for cert in certs {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_escaped_for_filters() {
        assert_eq!(super::escape_key("entryUUID", "a*b(c)\\"), r"a\2ab\28c\29\5c");
        assert_eq!(
            super::escape_key("objectGUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            r"\ff\19\96\6f\86\8b\11\d0\b4\2d\00\c0\4f\c9\64\ff"
        );
        assert_eq!(super::escape_key("mS-DS-ConsistencyGuid", "00000000-0000-0000-0000-0000000000ff"), format!("{}\\ff", r"\00".repeat(15)));
        assert_eq!(super::escape_key("entryUUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }
}
