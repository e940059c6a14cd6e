//! The MFA reset flag on the LDAP side: flags outside the user filter are reported (never
//! applied), and applied flags are removed from their entries once the read is done. What a
//! flag means (applied once per setting) is the domain's: `domain::directory::decide_flag`.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::ldap::Directory;
use super::reader::{stopping, until_stopped};
use super::report::{Report, RunError};
use crate::config;

/// The whole run's flag clearing may take this many `ldap.timeout`s.
const CLEARING_TIMEOUTS: u64 = 3;
/// Flags cleared at once over the run's connection.
const CLEARING_CONCURRENCY: usize = 32;

/// An LDAP filter for entries that carry the flag but are outside the user filter: their flag is
/// reported, never applied. `value` is escaped (RFC 4515).
pub fn outside_filter(user_filter: &str, attribute: &str, value: &str) -> String {
    format!("(&({attribute}={})(!{user_filter}))", ldap3::ldap_escape(value))
}

/// Reports the entries outside `ldap.user_filter` that carry the flag.
pub async fn report_outside(
    cfg: &config::Ldap,
    flag: &config::LdapMfaReset,
    directory: &mut Directory,
    shutdown: &mut watch::Receiver<bool>,
    report: &mut Report,
) {
    let outside = outside_filter(&cfg.user_filter, &flag.attribute, &flag.value);
    match until_stopped(shutdown, directory.dns(&outside)).await {
        Ok(dns) => {
            for dn in dns {
                report.error(format!("{dn}: MFA reset flag not applied: the entry is outside ldap.user_filter"));
            }
        }
        Err(RunError::Stopped) => report.fatal(RunError::Stopped),
        Err(e) => report.error(format!("cannot look for MFA reset flags outside ldap.user_filter: {e}")),
    }
}

/// Removes the flag from these entries, concurrently over the run's one (multiplexed)
/// connection, within one deadline for them all (`CLEARING_TIMEOUTS` × `ldap.timeout`): a
/// stalled directory cannot hold the run for a timeout per flag. Returns how many the server
/// confirmed; the others are listed, and a deadline (or shutdown) that leaves some unconfirmed
/// fails the run. A flag left set is cleared by a later run without a second reset (its mark is
/// remembered).
pub async fn clear(
    timeout: u64,
    directory: &Directory,
    dns: Vec<String>,
    attribute: &str,
    shutdown: &mut watch::Receiver<bool>,
    report: &mut Report,
) -> i64 {
    if dns.is_empty() {
        return 0;
    }
    let bound = timeout * CLEARING_TIMEOUTS;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(bound);
    let slots = Arc::new(tokio::sync::Semaphore::new(CLEARING_CONCURRENCY));
    let mut pending: HashSet<String> = dns.iter().cloned().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for dn in dns {
        let (mut directory, attribute, slots) = (directory.clone(), attribute.to_string(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let outcome = directory.remove_attribute(&dn, &attribute).await;
            (dn, outcome)
        });
    }
    let mut cleared = 0;
    let mut unanswered = Vec::new();
    let unfinished = loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                None => break None,
                Some(Ok((dn, outcome))) => {
                    pending.remove(&dn);
                    match outcome {
                        Ok(()) => cleared += 1,
                        Err(e) if e.answered() => report.error(format!(
                            "{dn}: MFA reset applied but the flag could not be cleared ({e}); it is not applied again until it is set anew"
                        )),
                        // No answer: the server may yet apply it, or not.
                        Err(_) => unanswered.push(dn),
                    }
                }
                Some(Err(_)) => {}
            },
            _ = tokio::time::sleep_until(deadline) => break Some(RunError::ClearingTimedOut { bound, timeouts: CLEARING_TIMEOUTS }),
            _ = stopping(shutdown) => break Some(RunError::Stopped),
        }
    };
    tasks.abort_all();
    let mut left: Vec<String> = pending.into_iter().chain(unanswered).collect();
    if !left.is_empty() {
        left.sort();
        let why = Box::new(unfinished.unwrap_or(RunError::ClearingUnanswered));
        report.fatal(RunError::FlagsUnconfirmed { why, left: left.len(), total: left.len() as i64 + cleared });
        for dn in left {
            report.error(format!(
                "{dn}: MFA reset applied; clearing the flag was not confirmed by the server (the next run clears it without a second reset)"
            ));
        }
    } else if let Some(why) = unfinished {
        report.fatal(why);
    }
    cleared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_escaped_in_filters() {
        assert_eq!(
            outside_filter("(objectClass=inetOrgPerson)", "mfaResetRequested", "T*)(uid=*"),
            r"(&(mfaResetRequested=T\2a\29\28uid=\2a)(!(objectClass=inetOrgPerson)))"
        );
    }
}
