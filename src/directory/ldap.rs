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
    Connect { url: String, source: Box<ldap3::LdapError> },
    #[error("bind as {dn:?} refused: {source}")]
    Bind { dn: String, source: Box<ldap3::LdapError> },
    #[error(transparent)]
    Password(#[from] config::PasswordError),
    #[error("ldap.ca_file: {}: {reason}", path.display())]
    CaFile { path: std::path::PathBuf, reason: String },
    #[error("LDAP {what} failed: {source}")]
    Operation { what: &'static str, source: Box<ldap3::LdapError> },
    #[error("the directory sent a malformed message: {0}")]
    Malformed(#[from] super::sync_wire::Malformed),
}

impl DirectoryError {
    /// The server answered the operation, refusing it (as opposed to no answer in time, or a
    /// connection lost, where its outcome is unknown).
    pub fn answered(&self) -> bool {
        matches!(self, DirectoryError::Operation { source, .. } if matches!(**source, ldap3::LdapError::LdapResult { .. }))
    }
}

/// A bound connection; clones share it (LDAP operations are multiplexed).
#[derive(Clone)]
pub struct Directory {
    ldap: Ldap,
    cfg: Arc<config::Ldap>,
}

pub type Entries = SearchStream<'static, String, Vec<String>>;

/// The task that reads a connection's messages: it ends when the connection does.
pub type Driver = tokio::task::JoinHandle<ldap3::result::Result<()>>;

impl Directory {
    pub async fn connect(cfg: Arc<config::Ldap>) -> Result<Self, DirectoryError> {
        let (directory, driver) = Self::open(cfg).await?;
        // The connection's reader task: a failure (or a panic on a malformed message) ends the
        // operations waiting on it with an error, and is logged here.
        tokio::spawn(async move {
            match driver.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "LDAP connection failed"),
                Err(e) if e.is_panic() => tracing::warn!("LDAP connection dropped: the server sent a malformed message"),
                Err(_) => {}
            }
        });
        Ok(directory)
    }

    /// Connects and binds; the connection's reader task is the caller's to watch (the change
    /// feed treats its end, a panic on a malformed message included, as a lost connection).
    pub async fn open(cfg: Arc<config::Ldap>) -> Result<(Self, Driver), DirectoryError> {
        let timeout = Duration::from_secs(cfg.timeout);
        let mut settings = LdapConnSettings::new().set_conn_timeout(timeout).set_starttls(cfg.starttls);
        if let Some(ca) = &cfg.ca_file {
            settings = settings.set_config(tls_config(ca)?);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
            .await
            .map_err(|source| DirectoryError::Connect { url: cfg.url.clone(), source: Box::new(source) })?;
        let driver = tokio::spawn(conn.drive());
        ldap.with_timeout(timeout);
        if let Some(dn) = &cfg.bind_dn {
            let password = cfg.password()?;
            let password = password.as_ref().map(|p| p.expose()).unwrap_or_default();
            let bound = ldap.simple_bind(dn, password).await.and_then(|r| r.success());
            if let Err(source) = bound {
                driver.abort();
                return Err(DirectoryError::Bind { dn: dn.clone(), source: Box::new(source) });
            }
        }
        Ok((Directory { ldap, cfg }, driver))
    }

    /// Whether the server lists control `oid` in its root DSE's `supportedControl`.
    pub async fn supports_control(&mut self, oid: &str) -> Result<bool, DirectoryError> {
        let root = self.read_entry("", vec!["supportedControl".into()]).await?;
        Ok(root.is_some_and(|r| values(&r, "supportedControl").any(|v| v == oid)))
    }

    /// The `contextCSN` values (OpenLDAP: the newest change of each provider) of the database
    /// holding `base_dn`: the naming context of the root DSE that `base_dn` ends with. `None`
    /// when the server shows none (389-ds, Active Directory).
    pub async fn context_csn(&mut self) -> Result<Option<Vec<String>>, DirectoryError> {
        let Some(root) = self.read_entry("", vec!["namingContexts".into()]).await? else { return Ok(None) };
        let base = normalise_dn(&self.cfg.base_dn);
        let Some(context) = values(&root, "namingContexts")
            .filter(|c| base == normalise_dn(c) || base.ends_with(&format!(",{}", normalise_dn(c))))
            .max_by_key(|c| c.len())
            .cloned()
        else {
            return Ok(None);
        };
        let Some(entry) = self.read_entry(&context, vec!["contextCSN".into()]).await? else { return Ok(None) };
        let csns: Vec<String> = values(&entry, "contextCSN").cloned().collect();
        Ok((!csns.is_empty()).then_some(csns))
    }

    /// Opens the content synchronization search (RFC 4533, refreshAndPersist, critical: a server
    /// without it refuses instead of answering a plain search) of the users, resuming from
    /// `cookie`. No timeout: the search stays open as long as the connection does.
    pub async fn sync_search(&mut self, cookie: Option<Vec<u8>>, attributes: Vec<String>) -> Result<Entries, DirectoryError> {
        use ldap3::controls::{MakeCritical, RefreshMode, SyncRequest};
        let scope = match self.cfg.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        };
        let request = SyncRequest { mode: RefreshMode::RefreshAndPersist, cookie, reload_hint: false };
        let (base, filter) = (self.cfg.base_dn.clone(), self.cfg.user_filter.clone());
        self.ldap
            .with_controls(request.critical())
            .streaming_search(&base, scope, &filter, attributes)
            .await
            .map_err(|source| DirectoryError::Operation { what: "sync search", source: Box::new(source) })
    }

    /// A cheap question on this connection, answered within `ldap.timeout` or not at all: is
    /// the server still there (an idle open search never says when it is gone).
    pub async fn ping(&mut self) -> Result<(), DirectoryError> {
        self.read_entry("", vec!["1.1".into()]).await.map(|_| ())
    }

    /// A paged search under `base_dn` for `filter`, entries streamed as they arrive.
    pub async fn search(&mut self, filter: &str, attributes: Vec<String>) -> Result<Entries, DirectoryError> {
        let scope = match self.cfg.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        };
        let base = self.cfg.base_dn.clone();
        self.search_under(&base, scope, filter, attributes).await
    }

    /// A paged search under `base` for `filter`, entries streamed as they arrive.
    pub async fn search_under(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: Vec<String>,
    ) -> Result<Entries, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<'static, String, Vec<String>>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(self.cfg.page_size.min(i32::MAX as u32) as i32))];
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        self.ldap
            .streaming_search_with(adapters, base, scope, filter, attributes)
            .await
            .map_err(|source| DirectoryError::Operation { what: "search", source: Box::new(source) })
    }

    /// The entry `dn` itself with `attributes` (`None`: the server has no such entry).
    pub async fn read_entry(&mut self, dn: &str, attributes: Vec<String>) -> Result<Option<SearchEntry>, DirectoryError> {
        self.base_entry(dn, "(objectClass=*)", attributes).await
    }

    /// The entry `dn` itself if it matches `filter`, with `attributes`.
    async fn base_entry(
        &mut self,
        dn: &str,
        filter: &str,
        attributes: Vec<String>,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let op = |source| DirectoryError::Operation { what: "search", source: Box::new(source) };
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        let (entries, _) = self.ldap.search(dn, Scope::Base, filter, attributes).await.and_then(|r| r.success()).map_err(op)?;
        entries.into_iter().next().map(|e| super::sync_wire::entry(e.0)).transpose().map_err(DirectoryError::from)
    }

    /// The DNs of entries under `base_dn` matching `filter` (small answers only).
    pub async fn dns(&mut self, filter: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self.entries(filter, vec!["1.1".into()]).await?.into_iter().map(|e| e.dn).collect())
    }

    /// The entries in the user filter that hold one of these keys, with `attributes`: a search
    /// for an OR of the escaped keys, a chunk at a time.
    pub async fn entries_with_keys(
        &mut self,
        keys: &[String],
        attributes: Vec<String>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_SEARCH) {
            let id = &self.cfg.id_attribute;
            let any: String = chunk.iter().map(|k| format!("({id}={})", escape_key(id, k))).collect();
            let filter = format!("(&{}(|{any}))", self.cfg.user_filter);
            out.extend(self.entries(&filter, attributes.clone()).await?);
        }
        Ok(out)
    }

    /// The entries under `base_dn` matching `filter` (small answers only).
    async fn entries(&mut self, filter: &str, attributes: Vec<String>) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut stream = self.search(filter, attributes).await?;
        let mut out = Vec::new();
        while let Some(e) =
            stream.next().await.map_err(|source| DirectoryError::Operation { what: "search", source: Box::new(source) })?
        {
            out.push(super::sync_wire::entry(e.0)?);
        }
        stream
            .finish()
            .await
            .success()
            .map_err(|source| DirectoryError::Operation { what: "search", source: Box::new(source) })?;
        Ok(out)
    }

    /// The names (and OIDs) of the attribute types in the server's schema (the subschema entry
    /// the root DSE names), lower-cased; `None` when the server does not show it.
    pub async fn schema_attribute_names(&mut self) -> Result<Option<std::collections::HashSet<String>>, DirectoryError> {
        let root = self.read_entry("", vec!["subschemaSubentry".into()]).await?;
        let Some(dn) = root.and_then(|e| first_value(&e, "subschemaSubentry")) else { return Ok(None) };
        // Some servers (Active Directory) show the subschema entry only to this filter.
        let entry = self.base_entry(&dn, "(objectClass=subschema)", vec!["attributeTypes".into()]).await?;
        let types: Vec<String> = entry.iter().flat_map(|e| values(e, "attributeTypes")).cloned().collect();
        if types.is_empty() {
            return Ok(None);
        }
        Ok(Some(types.iter().flat_map(|t| attribute_type_names(t)).collect()))
    }

    /// Removes the attribute `attribute` from entry `dn`; an entry without it (removed by a
    /// request of an earlier run the server applied late, or by an admin) is as good.
    pub async fn remove_attribute(&mut self, dn: &str, attribute: &str) -> Result<(), DirectoryError> {
        /// LDAP result code noSuchAttribute (RFC 4511).
        const NO_SUCH_ATTRIBUTE: u32 = 16;
        let all = std::collections::HashSet::<&str>::new();
        // The timeout applies to the next operation only: set it for each one.
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        let result = self.ldap.modify(dn, vec![Mod::Delete(attribute, all)]).await;
        match result {
            Ok(r) if r.rc == NO_SUCH_ATTRIBUTE => Ok(()),
            other => other
                .and_then(|r| r.success())
                .map(|_| ())
                .map_err(|source| DirectoryError::Operation { what: "modify", source: Box::new(source) }),
        }
    }

    pub async fn close(mut self) {
        self.ldap.with_timeout(Duration::from_secs(self.cfg.timeout));
        let _ = self.ldap.unbind().await;
    }
}

/// Keys asked for in one search: an OR of this many stays well below servers' filter limits.
const KEYS_PER_SEARCH: usize = 100;

/// Id attributes whose values are binary: the mapping stores them as UUIDs (AD's objectGUID
/// in its mixed-endian order, `mS-DS-ConsistencyGuid` as its bytes in order).
const BINARY_ID_ATTRIBUTES: [&str; 2] = ["objectGUID", "mS-DS-ConsistencyGuid"];

/// A key as a filter value. Only a binary id attribute's key is turned back into its bytes
/// (each escaped); every other key is the directory's text, escaped (RFC 4515), even when it
/// looks like a UUID: an `employeeNumber` of 32 hex digits is text.
pub fn escape_key(id_attribute: &str, key: &str) -> String {
    let binary = BINARY_ID_ATTRIBUTES.iter().any(|a| a.eq_ignore_ascii_case(id_attribute));
    match uuid::Uuid::parse_str(key) {
        Ok(u) if binary && id_attribute.eq_ignore_ascii_case("objectGUID") => escape_bytes(&u.to_bytes_le()),
        Ok(u) if binary => escape_bytes(u.as_bytes()),
        _ => ldap3::ldap_escape(key).into_owned(),
    }
}

/// A DN compared loosely: lower case, no spaces around separators.
fn normalise_dn(dn: &str) -> String {
    dn.split(',').map(|rdn| rdn.trim().to_ascii_lowercase().replace(" = ", "=")).collect::<Vec<_>>().join(",")
}

fn first_value(entry: &SearchEntry, name: &str) -> Option<String> {
    values(entry, name).next().cloned()
}

/// The values of attribute `name` (any case) of an entry.
fn values<'e>(entry: &'e SearchEntry, name: &'e str) -> impl Iterator<Item = &'e String> {
    entry.attrs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).flat_map(|(_, v)| v)
}

/// The NAMEs and the OID of an attribute type description (RFC 4512 §4.1.2), lower-cased:
/// `( 2.5.4.3 NAME ( 'cn' 'commonName' ) … )`.
fn attribute_type_names(description: &str) -> Vec<String> {
    let mut out = Vec::new();
    let body = description.trim().trim_start_matches('(').trim_start();
    if let Some(oid) = body.split_whitespace().next() {
        out.push(oid.to_ascii_lowercase());
    }
    if let Some(rest) = body.split_once(" NAME ").map(|(_, r)| r.trim_start()) {
        let names = match rest.strip_prefix('(') {
            Some(list) => list.split(')').next().unwrap_or_default(),
            None => rest.split_whitespace().next().unwrap_or_default(),
        };
        out.extend(names.split_whitespace().map(|n| n.trim_matches('\'').to_ascii_lowercase()).filter(|n| !n.is_empty()));
    }
    out
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The system roots plus the certificates of `ca_file`.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |reason: String| DirectoryError::CaFile { path: ca_file.to_path_buf(), reason };
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
        assert_eq!(
            super::escape_key("mS-DS-ConsistencyGuid", "00000000-0000-0000-0000-0000000000ff"),
            format!("{}\\ff", r"\00".repeat(15))
        );
        assert_eq!(
            super::escape_key("entryUUID", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        // Text that looks like a UUID stays text.
        assert_eq!(super::escape_key("employeeNumber", "6f9619ff8b86d011b42d00c04fc964ff"), "6f9619ff8b86d011b42d00c04fc964ff");
        assert_eq!(
            super::escape_key("nsUniqueId", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
    }

    #[test]
    fn attribute_type_descriptions_give_their_names_and_oid() {
        let names = super::attribute_type_names("( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'x' SUP name )");
        assert_eq!(names, ["2.5.4.3", "cn", "commonname"]);
        let names = super::attribute_type_names("( 1.3.6.1.4.1.99999.42.1.1 NAME 'mfaResetRequested' EQUALITY booleanMatch )");
        assert_eq!(names, ["1.3.6.1.4.1.99999.42.1.1", "mfaresetrequested"]);
    }
}
