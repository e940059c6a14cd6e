//! The group half of a run (`[ldap.groups]`), after the users: a paged search of the groups
//! (full, or changed since the last good mark) streamed in batches to the domain's
//! [`GroupMirror`], their members read from the configured attribute (Active Directory's range
//! retrieval followed to its end), then the members mirrored, and, after a complete full read,
//! the groups whose entries are gone deleted within `[ldap.safety]`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ldap3::{Scope, SearchEntry};
use tokio::sync::watch;

use super::ldap::Directory;
use super::mapping::{key_of, Mapping};
use super::reader::{stopping, until_stopped};
use super::report::{Report, RunError};
use crate::config::{self, LdapGroups};
use crate::domain::directory::{dn_key, GroupEntry, GroupMirror, TooManyDeletions};

/// Group entries written per transaction.
const GROUP_BATCH: usize = 500;

/// What the group half is asked to do.
pub struct GroupRun<'a> {
    pub cfg: &'a Arc<config::Ldap>,
    pub groups: &'a LdapGroups,
    pub mapping: &'a Mapping,
    pub full: bool,
    /// The last good run's mark (incremental runs read the groups changed since).
    pub since: Option<&'a str>,
    pub allow_mass_deletion: bool,
}

/// Runs the group half; the mirror comes back with its counts and notes (also when it failed).
pub async fn sync(
    run: GroupRun<'_>,
    directory: &mut Directory,
    mirror: GroupMirror,
    shutdown: &mut watch::Receiver<bool>,
    report: &mut Report,
) -> (GroupMirror, Result<(), RunError>) {
    let mut mirror = Some(mirror);
    let result = sync_into(&run, directory, &mut mirror, shutdown).await;
    let mut mirror = mirror.expect("the mirror comes back from every blocking step");
    for e in mirror.errors.drain(..) {
        report.error(e);
    }
    if mirror.skipped_members > 0 {
        report.error(format!(
            "{} member values of groups named neither a synced user nor a synced group: skipped",
            mirror.skipped_members
        ));
        mirror.skipped_members = 0;
    }
    (mirror, result)
}

/// Runs `f` on the mirror on a blocking thread (the database is never called from async tasks).
async fn on_mirror<T: Send + 'static>(
    slot: &mut Option<GroupMirror>,
    f: impl FnOnce(&mut GroupMirror) -> T + Send + 'static,
) -> Result<T, RunError> {
    let mut mirror = slot.take().expect("the mirror is here");
    let span = tracing::Span::current();
    let (mirror, out) = tokio::task::spawn_blocking(move || {
        let out = span.in_scope(|| f(&mut mirror));
        (mirror, out)
    })
    .await
    .map_err(RunError::GroupsFailed)?;
    *slot = Some(mirror);
    Ok(out)
}

async fn sync_into(
    run: &GroupRun<'_>,
    directory: &mut Directory,
    mirror: &mut Option<GroupMirror>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RunError> {
    let g = run.groups;
    let id_attribute = g.id_attribute.clone().unwrap_or_else(|| run.cfg.id_attribute.clone());
    let base = g.base_dn.clone().unwrap_or_else(|| run.cfg.base_dn.clone());
    let membership = g.membership;
    let by_user = users_membership(run, directory, shutdown).await?;
    let mut attributes = vec![id_attribute.clone(), g.name_attribute.clone()];
    let member_attribute = match membership {
        config::GroupMembership::MemberOf => None,
        m => Some(m.attribute().to_string()),
    };
    attributes.extend(member_attribute.clone());
    let filter = match (run.full, run.since.and_then(|m| run.mapping.since_filter(m, run.cfg.overlap))) {
        (false, Some(since)) => format!("(&{}{since})", g.filter),
        _ => g.filter.clone(),
    };
    let mut stream = until_stopped(shutdown, directory.search_under(&base, Scope::Subtree, &filter, attributes)).await?;
    let mut seen = HashSet::new();
    let mut batch = Vec::with_capacity(GROUP_BATCH);
    let mut problems = Vec::new();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = stopping(shutdown) => return Err(RunError::Stopped),
        };
        let raw = match next {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => return Err(RunError::Search(Box::new(e))),
        };
        let entry = super::sync_wire::entry(raw.0)?;
        let Some(key) = key_of(&entry, &id_attribute) else {
            problems.push(format!("group {}: no {id_attribute} (ldap.groups.id_attribute); skipped", entry.dn));
            continue;
        };
        if !seen.insert(key.clone()) {
            problems
                .push(format!("group {}: another group read in this run has the same {id_attribute} ({key}); skipped", entry.dn));
            continue;
        }
        let Some(name) = first(&entry, &g.name_attribute) else {
            problems.push(format!("group {}: no {} (ldap.groups.name_attribute); skipped", entry.dn, g.name_attribute));
            continue;
        };
        let members = match (&member_attribute, &by_user) {
            (Some(attribute), by_user) => {
                let values = until_stopped(shutdown, all_values(directory, &entry, attribute)).await?;
                match by_user {
                    // memberUid: user names, as DNs of the users that hold them; a name no user
                    // holds stays as `uid=NAME`, a relative DN no synced entry has (skipped, counted).
                    Some(UsersBy::Name(dns)) => values
                        .iter()
                        .map(|v| dns.get(&v.to_lowercase()).cloned().unwrap_or_else(|| format!("{}={v}", g.member_uid_attribute)))
                        .collect(),
                    _ => values,
                }
            }
            (None, Some(UsersBy::Group(members))) => members.get(&dn_key(&entry.dn)).cloned().unwrap_or_default(),
            (None, _) => Vec::new(),
        };
        batch.push(GroupEntry { key, dn: entry.dn, name, members });
        if batch.len() >= GROUP_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(GROUP_BATCH));
            on_mirror(mirror, move |m| m.write_groups(full)).await??;
        }
    }
    let done = tokio::select! {
        done = stream.finish() => done,
        _ = stopping(shutdown) => return Err(RunError::Stopped),
    };
    done.success().map_err(|e| RunError::Search(Box::new(e)))?;
    on_mirror(mirror, move |m| {
        m.errors.extend(problems);
        m.write_groups(batch)
    })
    .await??;
    on_mirror(mirror, |m| m.mirror_members()).await??;
    if run.full {
        let (percent, max, allow) =
            (run.cfg.safety.max_deactivate_percent, run.cfg.safety.max_deactivate, run.allow_mass_deletion);
        let checked = on_mirror(mirror, move |m| m.delete_missing(&seen, percent, max, allow)).await??;
        if let Err(TooManyDeletions { count, present, limit }) = checked {
            return Err(RunError::MassGroupDeletion {
                count,
                present,
                limit,
                percent,
                max: max.map_or("unset".to_string(), |n| n.to_string()),
            });
        }
    }
    Ok(())
}

/// What the users' entries say, for the memberships that need them.
enum UsersBy {
    /// `memberUid`: the user's name (lower-cased) → its DN.
    Name(HashMap<String, String>),
    /// `memberOf`: a group's DN (as [`dn_key`]) → its members' DNs.
    Group(HashMap<String, Vec<String>>),
}

/// For `memberUid` and `memberOf`, one paged read of every user entry (whatever changed: a
/// group's members depend on users that did not).
async fn users_membership(
    run: &GroupRun<'_>,
    directory: &mut Directory,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<UsersBy>, RunError> {
    use config::GroupMembership as Membership;
    let attribute = match run.groups.membership {
        Membership::MemberUid => run.groups.member_uid_attribute.clone(),
        Membership::MemberOf => "memberOf".to_string(),
        _ => return Ok(None),
    };
    let mut stream = until_stopped(shutdown, directory.search(&run.cfg.user_filter, vec![attribute.clone()])).await?;
    let (mut names, mut groups) = (HashMap::new(), HashMap::<String, Vec<String>>::new());
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = stopping(shutdown) => return Err(RunError::Stopped),
        };
        let entry = match next {
            Ok(Some(raw)) => super::sync_wire::entry(raw.0)?,
            Ok(None) => break,
            Err(e) => return Err(RunError::Search(Box::new(e))),
        };
        for value in values(&entry, &attribute) {
            match run.groups.membership {
                Membership::MemberUid => {
                    names.insert(value.to_lowercase(), entry.dn.clone());
                }
                _ => groups.entry(dn_key(value)).or_default().push(entry.dn.clone()),
            }
        }
    }
    let done = tokio::select! {
        done = stream.finish() => done,
        _ = stopping(shutdown) => return Err(RunError::Stopped),
    };
    done.success().map_err(|e| RunError::Search(Box::new(e)))?;
    Ok(Some(match run.groups.membership {
        Membership::MemberUid => UsersBy::Name(names),
        _ => UsersBy::Group(groups),
    }))
}

fn values<'e>(entry: &'e SearchEntry, attribute: &str) -> &'e [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(attribute)).map_or(&[], |(_, v)| v.as_slice())
}

fn first(entry: &SearchEntry, attribute: &str) -> Option<String> {
    values(entry, attribute).first().cloned()
}

/// Every value of `attribute` of a group entry: the values it came with and, when the server
/// answered with a range (Active Directory's `member;range=0-1499` for large groups), the
/// following ranges, read until the one that ends with `*`.
async fn all_values(
    directory: &Directory,
    entry: &SearchEntry,
    attribute: &str,
) -> Result<Vec<String>, super::ldap::DirectoryError> {
    follow_ranges(entry, attribute, |start| {
        let mut directory = directory.clone();
        let wanted = format!("{attribute};range={start}-*");
        let dn = entry.dn.clone();
        async move { directory.read_entry(&dn, vec![wanted]).await }
    })
    .await
}

/// The values of `attribute` of `entry`, then of each following range `fetch(start)` answers
/// (the entry again, with `attribute;range=START-END` or `…-*`), until the last one. A range
/// that brings nothing new ends the reading (a server answering so would otherwise be asked
/// forever).
async fn follow_ranges<F, Fut, E>(entry: &SearchEntry, attribute: &str, mut fetch: F) -> Result<Vec<String>, E>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Option<SearchEntry>, E>>,
{
    let (mut out, mut next) = ranged_values(entry, attribute);
    while let Some(start) = next {
        let Some(more) = fetch(start).await? else { break };
        let (values, after) = ranged_values(&more, attribute);
        if values.is_empty() || after.is_some_and(|a| a <= start) {
            break;
        }
        out.extend(values);
        next = after;
    }
    Ok(out)
}

/// The values of `attribute` in `entry`, and where the next range starts when the server sent
/// only a part (`member;range=0-1499`: next 1500; `member;range=1500-*`: none).
pub fn ranged_values(entry: &SearchEntry, attribute: &str) -> (Vec<String>, Option<u64>) {
    for (name, values) in &entry.attrs {
        if name.eq_ignore_ascii_case(attribute) {
            return (values.clone(), None);
        }
        if let Some((base, _, end)) = parse_range(name) {
            if base.eq_ignore_ascii_case(attribute) {
                return (values.clone(), end.map(|e| e + 1));
            }
        }
    }
    (Vec::new(), None)
}

/// An attribute name with a range option taken apart: the attribute, the first value's index,
/// and the last one's (`None`: `*`, the last range).
pub type Range<'a> = (&'a str, u64, Option<u64>);

/// `member;range=0-1499` → `("member", 0, Some(1499))`; `member;range=1500-*` → `("member",
/// 1500, None)`; anything else → `None`.
pub fn parse_range(name: &str) -> Option<Range<'_>> {
    let at = name.to_ascii_lowercase().find(";range=")?;
    let (base, range) = (&name[..at], &name[at + ";range=".len()..]);
    let (start, end) = range.split_once('-')?;
    let start = start.parse().ok()?;
    let end = match end {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    Some((base, start, end))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "cn=big,ou=groups,dc=example,dc=org".into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn range_options_are_parsed_and_the_last_range_ends_with_a_star() {
        let cases: &[(&str, Option<Range>)] = &[
            ("member;range=0-1499", Some(("member", 0, Some(1499)))),
            ("member;range=1500-2999", Some(("member", 1500, Some(2999)))),
            ("member;range=3000-*", Some(("member", 3000, None))),
            ("Member;Range=0-4", Some(("Member", 0, Some(4)))),
            ("member", None),
            ("member;range=x-1", None),
            ("member;range=0-", None),
            ("member;range=0", None),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_range(name), *expected, "{name}");
        }
    }

    #[test]
    fn a_ranged_answer_says_where_the_next_range_starts() {
        let part = entry(&[("cn", &["big"]), ("member;range=0-1", &["uid=a", "uid=b"])]);
        assert_eq!(ranged_values(&part, "member"), (vec!["uid=a".to_string(), "uid=b".to_string()], Some(2)));
        let last = entry(&[("member;range=2-*", &["uid=c"])]);
        assert_eq!(ranged_values(&last, "member"), (vec!["uid=c".to_string()], None));
        let whole = entry(&[("member", &["uid=a"])]);
        assert_eq!(ranged_values(&whole, "MEMBER"), (vec!["uid=a".to_string()], None));
        let other = entry(&[("uniqueMember;range=0-1", &["uid=a"])]);
        assert_eq!(ranged_values(&other, "member"), (Vec::new(), None));
    }

    /// What Active Directory answers for a group of `total` members, 1,500 values a range.
    fn ad_range(total: u64, start: u64) -> SearchEntry {
        let end = (start + 1499).min(total - 1);
        let name = if end == total - 1 { format!("member;range={start}-*") } else { format!("member;range={start}-{end}") };
        let values: Vec<String> = (start..=end).map(|i| format!("uid=user{i},ou=people")).collect();
        SearchEntry { dn: "cn=big".into(), attrs: HashMap::from([(name, values)]), bin_attrs: HashMap::new() }
    }

    #[tokio::test]
    async fn ranges_are_followed_to_the_one_ending_with_a_star() {
        let total = 3200;
        let mut asked = Vec::new();
        let values = follow_ranges(&ad_range(total, 0), "member", |start| {
            asked.push(start);
            async move { Ok::<_, ()>(Some(ad_range(total, start))) }
        })
        .await
        .unwrap();
        assert_eq!(asked, [1500, 3000]);
        assert_eq!(values.len(), 3200);
        assert_eq!(values.iter().collect::<std::collections::HashSet<_>>().len(), 3200, "each value once");
        assert_eq!(values[3199], "uid=user3199,ou=people");

        // A whole attribute asks for nothing more; a server that answers a range with nothing,
        // or with a range that goes backwards, is not asked forever.
        let whole = entry(&[("member", &["uid=a"])]);
        let none = follow_ranges(&whole, "member", |_| async { Err::<Option<SearchEntry>, _>("asked") }).await;
        assert_eq!(none, Ok(vec!["uid=a".to_string()]));
        let stuck = follow_ranges(&ad_range(total, 0), "member", |_| async { Ok::<_, ()>(Some(ad_range(total, 0))) }).await;
        assert_eq!(stuck.unwrap().len(), 1500);
        let empty = follow_ranges(&ad_range(total, 0), "member", |_| async { Ok::<_, ()>(Some(entry(&[]))) }).await;
        assert_eq!(empty.unwrap().len(), 1500);
    }
}
