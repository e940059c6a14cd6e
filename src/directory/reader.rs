//! The reading half of a run: the directory's paged search streamed into batches of entries
//! for the writer (the entries that failed before read again after it), and the look-ups the
//! writer needs between its transactions. Every wait on the directory ends when the daemon
//! stops.

use std::collections::HashSet;
use std::sync::Arc;

use ldap3::asn1::StructureTag;
use tokio::sync::{mpsc, watch};

use super::ldap::{Directory, DirectoryError};
use super::mapping::Mapping;
use super::report::{Report, RunError};
use super::writer::Batch;
use crate::config;

/// Entries written per transaction, at least: a commit writes every index page the batch
/// touched, so fewer, larger commits write less (100,000 new users on SQLite: 19.4 s in
/// batches of 500, 15.8 s in batches of 2,000), while the write lock is held for a fraction
/// of a second. Larger pages (`ldap.page_size`) make larger batches, up to five times this.
pub const WRITE_BATCH: usize = 5000;

/// Resolves when the daemon shuts down (never, if it cannot tell).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for a directory operation, unless the daemon shuts down first.
pub async fn until_stopped<T>(
    shutdown: &mut watch::Receiver<bool>,
    op: impl std::future::Future<Output = Result<T, DirectoryError>>,
) -> Result<T, RunError> {
    tokio::select! {
        r = op => r.map_err(RunError::from),
        _ = stopping(shutdown) => Err(RunError::Stopped),
    }
}

/// Reads the entries matching `filter` into batches for the writer, then the entries with the
/// keys `retry` (entries whose write failed before: they may not have changed since). A read
/// that does not complete fails the run.
///
/// The search's messages are only collected here; a thread of its own maps them. So the next
/// page is asked for as soon as a page ends, and the directory finds it while the last one is
/// mapped (a no-change run of 100,000 entries: the directory and the mapping took turns).
pub async fn read(
    directory: &mut Directory,
    mapping: &Arc<Mapping>,
    page_size: u32,
    filter: &str,
    retry: &[String],
    shutdown: &mut watch::Receiver<bool>,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), RunError> {
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<StructureTag>>(4);
    let mapper = {
        let (mapping, tx) = (mapping.clone(), tx.clone());
        let batch_size = (page_size as usize).clamp(WRITE_BATCH, 5 * WRITE_BATCH);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| map_pages(&mapping, raw_rx, batch_size, &tx)))
    };
    let pulled = pull(directory, mapping, filter, shutdown, raw_tx).await;
    // The mapping's own failure (a malformed entry) is the cause of a "mapping stopped".
    mapper.await.map_err(RunError::MappingFailed)??;
    pulled?;
    if !retry.is_empty() {
        let again = until_stopped(shutdown, directory.entries_with_keys(retry, mapping.attributes())).await?;
        tx.send(again.into_iter().map(|e| mapping.map(e)).collect()).await.map_err(|_| RunError::WriterStopped)?;
    }
    Ok(())
}

/// The messages of the search, in chunks for the mapping thread.
async fn pull(
    directory: &mut Directory,
    mapping: &Mapping,
    filter: &str,
    shutdown: &mut watch::Receiver<bool>,
    raw_tx: mpsc::Sender<Vec<StructureTag>>,
) -> Result<(), RunError> {
    let mut stream = until_stopped(shutdown, directory.search(filter, mapping.attributes())).await?;
    let mut page = Vec::new();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = stopping(shutdown) => return Err(RunError::Stopped),
        };
        match next {
            Ok(Some(raw)) => {
                page.push(raw.0);
                if page.len() >= PULL_CHUNK {
                    raw_tx.send(std::mem::take(&mut page)).await.map_err(|_| RunError::WriterStopped)?;
                }
            }
            Ok(None) => break,
            Err(e) => return Err(RunError::Search(Box::new(e))),
        }
    }
    let done = tokio::select! {
        done = stream.finish() => done,
        _ = stopping(shutdown) => return Err(RunError::Stopped),
    };
    done.success().map_err(|e| RunError::Search(Box::new(e)))?;
    if !page.is_empty() {
        raw_tx.send(page).await.map_err(|_| RunError::WriterStopped)?;
    }
    Ok(())
}

/// Messages handed to the mapping thread at a time.
const PULL_CHUNK: usize = 250;

/// Maps the search's messages into batches of `batch_size` for the writer (the last one
/// smaller), until the search's side is done.
fn map_pages(
    mapping: &Mapping,
    mut raw_rx: mpsc::Receiver<Vec<StructureTag>>,
    batch_size: usize,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), RunError> {
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(page) = raw_rx.blocking_recv() {
        for raw in page {
            batch.push(mapping.map(super::sync_wire::entry(raw)?));
            if batch.len() >= batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                tx.blocking_send(full).map_err(|_| RunError::WriterStopped)?;
            }
        }
    }
    if !batch.is_empty() {
        tx.blocking_send(batch).map_err(|_| RunError::WriterStopped)?;
    }
    Ok(())
}
/// Asks the directory, from the writer's blocking thread and outside any transaction, which
/// of some keys it no longer has.
pub struct KeyProbe {
    directory: Directory,
    mapping: Arc<Mapping>,
    id_attribute: String,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
}

impl KeyProbe {
    pub fn new(directory: Directory, mapping: Arc<Mapping>, cfg: &config::Ldap, shutdown: watch::Receiver<bool>) -> Self {
        KeyProbe {
            directory,
            mapping,
            id_attribute: cfg.id_attribute.clone(),
            runtime: tokio::runtime::Handle::current(),
            shutdown,
        }
    }

    /// Whether the daemon is shutting down.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Of these keys, those the directory does not have (in a few searches).
    pub fn absent(&mut self, keys: &[String]) -> Result<HashSet<String>, RunError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let attributes = vec![self.id_attribute.clone()];
        let (runtime, shutdown, directory) = (&self.runtime, &mut self.shutdown, &mut self.directory);
        let found = runtime.block_on(async {
            tokio::select! {
                r = directory.entries_with_keys(keys, attributes) => r.map_err(|e| RunError::Contested(Box::new(e))),
                _ = stopping(shutdown) => Err(RunError::Stopped),
            }
        })?;
        let present: HashSet<String> = found.iter().filter_map(|e| self.mapping.entry_key(e)).collect();
        Ok(keys.iter().filter(|k| !present.contains(*k)).cloned().collect())
    }
}

/// Once per process, at its first run: warns (log and run errors) about configured attributes
/// the directory's schema does not have, a misspelling that would otherwise go unnoticed (a
/// flag nobody can set, a mapping to nothing). Servers that do not show their schema are not
/// checked. Errs only when the daemon stops meanwhile.
pub async fn check_schema(
    cfg: &config::Ldap,
    directory: &mut Directory,
    shutdown: &mut watch::Receiver<bool>,
    report: &mut Report,
) -> Result<(), RunError> {
    let names = match until_stopped(shutdown, directory.schema_attribute_names()).await {
        Ok(Some(names)) => names,
        Ok(None) => return Ok(()),
        Err(RunError::Stopped) => return Err(RunError::Stopped),
        Err(e) => {
            tracing::info!(error = %e, "cannot read the directory's schema: configured attribute names not checked");
            return Ok(());
        }
    };
    let known = |a: &str| names.contains(&a.to_ascii_lowercase());
    if let Some(flag) = &cfg.mfa_reset {
        if !known(&flag.attribute) {
            report.error(format!(
                "ldap.mfa_reset.attribute: {:?} is not an attribute type of the directory's schema: no entry can carry \
                 the flag, so no MFA reset will ever be applied from LDAP (misspelt?)",
                flag.attribute
            ));
        }
    }
    for (path, attribute) in cfg.mapping() {
        let name = attribute.trim_start_matches('!');
        let name = name.split(';').next().unwrap_or(name);
        if !known(name) {
            report.error(format!(
                "ldap.attributes.{path:?}: {name:?} is not an attribute type of the directory's schema: it maps to nothing (misspelt?)"
            ));
        }
    }
    if let Some(g) = &cfg.groups {
        let mut names =
            vec![("ldap.groups.name_attribute", g.name_attribute.as_str()), ("ldap.groups.membership", g.membership.attribute())];
        names.extend(g.id_attribute.as_deref().map(|a| ("ldap.groups.id_attribute", a)));
        if g.membership == config::GroupMembership::MemberUid {
            names.push(("ldap.groups.member_uid_attribute", g.member_uid_attribute.as_str()));
        }
        for (key, name) in names.into_iter().filter(|(_, n)| !known(n)) {
            report.error(format!("{key}: {name:?} is not an attribute type of the directory's schema (misspelt?)"));
        }
    }
    Ok(())
}
