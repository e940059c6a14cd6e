//! What the LDAP sync keeps: the link of each mirrored user to its entry, the run history with
//! its high-water marks, and the lease that keeps runs from overlapping.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::schema::{directory_links, sync_feed, sync_lease, sync_quarantine, sync_runs, sync_ticks, users};
use super::{DbConn, Result, Tx};

// NULL for None (not DEFAULT, which a COPY cannot say; the columns have no default).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = directory_links, treat_none_as_default_value = false)]
pub struct Link {
    pub user_id: String,
    pub entry_key: String,
    pub dn: String,
    pub fingerprint: String,
    pub synced_version: i64,
    pub missing_since: Option<NaiveDateTime>,
    pub flag_mark: Option<String>,
}

/// The links of these entry keys, with the current version of their user.
pub fn links_by_key(conn: &mut DbConn, keys: &[&str]) -> Result<Vec<(Link, i64)>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        out.extend(
            directory_links::table
                .inner_join(users::table)
                .filter(directory_links::entry_key.eq_any(chunk))
                .select((Link::as_select(), users::version))
                .load::<(Link, i64)>(conn)?,
        );
    }
    Ok(out)
}

/// The links of `keys` (`None`: every link) as `(key, fingerprint, settled)`, where settled
/// means the user is as the sync last wrote it, present, and with no flag remembered: the cheap
/// first look of a run, which for an unchanged directory is all it needs.
pub fn link_states(conn: &mut DbConn, keys: Option<&[&str]>) -> Result<Vec<(String, String, bool)>> {
    let states = || {
        directory_links::table.inner_join(users::table).select((
            directory_links::entry_key,
            directory_links::fingerprint,
            directory_links::synced_version
                .eq(users::version)
                .and(directory_links::missing_since.is_null())
                .and(directory_links::flag_mark.is_null()),
        ))
    };
    let Some(keys) = keys else { return Ok(states().load(conn)?) };
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        out.extend(states().filter(directory_links::entry_key.eq_any(chunk)).load::<(String, String, bool)>(conn)?);
    }
    Ok(out)
}

pub fn link_of_user(conn: &mut DbConn, user_id: &str) -> Result<Option<Link>> {
    Ok(directory_links::table.find(user_id).select(Link::as_select()).first(conn).optional()?)
}

/// Inserts or replaces the link of `link.user_id`.
pub fn save_link(tx: &mut Tx, link: &Link) -> Result<(), DieselError> {
    let conn = tx.conn();
    diesel::delete(directory_links::table.find(&link.user_id)).execute(conn)?;
    diesel::insert_into(directory_links::table).values(link).execute(conn)?;
    Ok(())
}

/// Inserts the links of new users (in the caller's transaction), a few statements for many:
/// one `COPY` on PostgreSQL, multi-row INSERTs on SQLite.
pub fn insert_links(tx: &mut Tx, new: &[Link]) -> Result<(), DieselError> {
    let conn = tx.conn();
    if new.is_empty() {
        return Ok(());
    }
    if let DbConn::Pg(pg) = conn {
        diesel::copy_from(directory_links::table).from_insertable(new).execute(pg)?;
        return Ok(());
    }
    use super::sql::{insert_rows, Bind};
    let text = |s: &str| Some(Bind::Text(s.to_string()));
    for chunk in new.chunks(1000) {
        let rows = chunk.iter().map(|l| {
            vec![
                text(&l.user_id),
                text(&l.entry_key),
                text(&l.dn),
                text(&l.fingerprint),
                Some(Bind::Int(l.synced_version)),
                l.missing_since.map(Bind::Timestamp),
                l.flag_mark.as_deref().and_then(text),
            ]
        });
        let columns = ["user_id", "entry_key", "dn", "fingerprint", "synced_version", "missing_since", "flag_mark"];
        if let Some(s) = insert_rows("directory_links", &columns, rows) {
            s.execute(conn)?;
        }
    }
    Ok(())
}

/// A link as a deactivation sees it: `(user_id, entry_key, missing, active)`: whether a full run
/// already found its entry gone, and whether its user is active now (a SCIM client may have
/// re-activated a user whose entry is gone).
pub type LinkPresence = (String, String, bool, bool);

/// The links of these entry keys.
pub fn presence_of_keys(conn: &mut DbConn, keys: &[&str]) -> Result<Vec<LinkPresence>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        out.extend(
            directory_links::table
                .inner_join(users::table)
                .filter(directory_links::entry_key.eq_any(chunk))
                .select(presence())
                .load::<LinkPresence>(conn)?,
        );
    }
    Ok(out)
}

#[allow(clippy::type_complexity)]
fn presence(
) -> (directory_links::user_id, directory_links::entry_key, diesel::dsl::IsNotNull<directory_links::missing_since>, users::active)
{
    (directory_links::user_id, directory_links::entry_key, directory_links::missing_since.is_not_null(), users::active)
}

pub fn count_present(conn: &mut DbConn) -> Result<i64> {
    Ok(directory_links::table.filter(directory_links::missing_since.is_null()).count().get_result(conn)?)
}

/// Records that a full run did not find the entry of `user_id` (since the first run that
/// missed it) and the user's version as the sync left it.
pub fn mark_missing(tx: &mut Tx, user_id: &str, at: NaiveDateTime, synced_version: i64) -> Result<(), DieselError> {
    let conn = tx.conn();
    diesel::update(directory_links::table.find(user_id)).set(directory_links::synced_version.eq(synced_version)).execute(conn)?;
    diesel::update(directory_links::table.find(user_id).filter(directory_links::missing_since.is_null()))
        .set(directory_links::missing_since.eq(at))
        .execute(conn)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Quarantine: entries whose write keeps failing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_quarantine)]
pub struct Failing {
    pub entry_key: String,
    pub dn: String,
    /// The entry's change mark when it failed: failures at one mark are counted together.
    pub change_mark: Option<String>,
    /// Runs in a row that failed to write the entry at this mark.
    pub failures: i64,
    pub error: String,
}

/// Every entry whose last write failed (a handful, normally none).
pub fn failing(conn: &mut DbConn) -> Result<Vec<Failing>> {
    Ok(sync_quarantine::table.order(sync_quarantine::entry_key.asc()).select(Failing::as_select()).load(conn)?)
}

/// Records these failures (replacing earlier ones of the same keys) and forgets `written`.
pub fn save_failing(tx: &mut Tx, failed: &[Failing], written: &[String]) -> Result<(), DieselError> {
    let conn = tx.conn();
    let keys: Vec<&str> = failed.iter().map(|f| f.entry_key.as_str()).chain(written.iter().map(String::as_str)).collect();
    for chunk in keys.chunks(500) {
        diesel::delete(sync_quarantine::table.filter(sync_quarantine::entry_key.eq_any(chunk))).execute(conn)?;
    }
    for f in failed {
        diesel::insert_into(sync_quarantine::table).values(f).execute(conn)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Eq, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = sync_runs, treat_none_as_null = true)]
pub struct Run {
    pub id: String,
    pub kind: String,
    pub started_by: String,
    pub status: String,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub deactivated: i64,
    pub reactivated: i64,
    pub resets_applied: i64,
    pub flags_cleared: i64,
    /// A JSON array of strings.
    pub errors: String,
    pub high_water: Option<String>,
    pub duration_ms: Option<i64>,
    pub groups_created: i64,
    pub groups_updated: i64,
    pub groups_deleted: i64,
    pub memberships_changed: i64,
}

pub fn insert_run(tx: &mut Tx, run: &Run) -> Result<(), DieselError> {
    diesel::insert_into(sync_runs::table).values(run).execute(tx.conn())?;
    Ok(())
}

pub fn get_run(conn: &mut DbConn, id: &str) -> Result<Option<Run>> {
    Ok(sync_runs::table.find(id).select(Run::as_select()).first(conn).optional()?)
}

/// Newest first, and how many there are.
pub fn list_runs(conn: &mut DbConn, offset: i64, limit: i64) -> Result<(i64, Vec<Run>)> {
    let total = sync_runs::table.count().get_result(conn)?;
    let runs = sync_runs::table
        .order((sync_runs::started_at.desc(), sync_runs::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(Run::as_select())
        .load(conn)?;
    Ok((total, runs))
}

/// The high-water mark of the newest successful run that recorded one.
pub fn last_high_water(conn: &mut DbConn) -> Result<Option<String>> {
    Ok(sync_runs::table
        .filter(sync_runs::status.eq(SUCCEEDED))
        .filter(sync_runs::high_water.is_not_null())
        .order(sync_runs::started_at.desc())
        .select(sync_runs::high_water)
        .first::<Option<String>>(conn)
        .optional()?
        .flatten())
}

/// Whether the last `n` finished runs all failed (and there are `n`).
pub fn last_runs_failed(conn: &mut DbConn, n: i64) -> Result<bool> {
    let statuses: Vec<String> = sync_runs::table
        .filter(sync_runs::status.ne(RUNNING))
        .order((sync_runs::started_at.desc(), sync_runs::id.desc()))
        .limit(n)
        .select(sync_runs::status)
        .load(conn)?;
    Ok(statuses.len() as i64 == n && statuses.iter().all(|s| s == FAILED))
}

/// Runs left `running` by a process that stopped without finishing them.
pub fn fail_abandoned_runs(tx: &mut Tx, at: NaiveDateTime) -> Result<usize, DieselError> {
    diesel::update(sync_runs::table.filter(sync_runs::status.eq(RUNNING)))
        .set((
            sync_runs::status.eq(FAILED),
            sync_runs::finished_at.eq(at),
            sync_runs::errors.eq(r#"["interrupted: the process running it stopped"]"#),
        ))
        .execute(tx.conn())
}

// ---------------------------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------------------------

/// Makes a lease or tick claim never wait on a row lock held by another session (PostgreSQL
/// `lock_timeout`, for the rest of the caller's transaction): a holder frozen inside a
/// transaction must not make every other instance's claims queue behind it, each holding a
/// pooled connection. A claim that meets such a lock fails with an error that
/// [`super::is_lock_timeout`] recognises; its transaction is then spoilt and must end.
fn claim<T>(tx: &mut Tx, f: impl FnOnce(&mut DbConn) -> Result<T, DieselError>) -> Result<T, DieselError> {
    let conn = tx.conn();
    if let DbConn::Pg(pg) = conn {
        diesel::sql_query("SET LOCAL lock_timeout = '200ms'").execute(pg)?;
    }
    f(conn)
}

/// Takes the lease `name` for `holder` until `until` if nobody holds it (or theirs expired).
pub fn take_lease(tx: &mut Tx, name: &str, holder: &str, now: NaiveDateTime, until: NaiveDateTime) -> Result<bool, DieselError> {
    claim(tx, |conn| {
        diesel::delete(sync_lease::table.filter(sync_lease::name.eq(name)).filter(sync_lease::expires_at.lt(now)))
            .execute(conn)?;
        super::insert_unless_taken(conn, |conn| {
            diesel::insert_into(sync_lease::table)
                .values((sync_lease::name.eq(name), sync_lease::holder.eq(holder), sync_lease::expires_at.eq(until)))
                .execute(conn)
        })
    })
}

/// Extends a held lease; false when it was lost (expired and taken by another). What the
/// caller's transaction writes besides then commits only while the lease is still its own.
pub fn renew_lease(tx: &mut Tx, name: &str, holder: &str, until: NaiveDateTime) -> Result<bool, DieselError> {
    let n = diesel::update(sync_lease::table.filter(sync_lease::name.eq(name)).filter(sync_lease::holder.eq(holder)))
        .set(sync_lease::expires_at.eq(until))
        .execute(tx.conn())?;
    Ok(n == 1)
}

/// Records a finished run (`None`: a dry run, not recorded) and releases its lease, in one
/// transaction.
pub fn save_run(tx: &mut Tx, run: &Run) -> Result<(), DieselError> {
    diesel::update(sync_runs::table.find(&run.id)).set(run).execute(tx.conn())?;
    Ok(())
}

pub fn release_lease(tx: &mut Tx, name: &str, holder: &str) -> Result<(), DieselError> {
    diesel::delete(sync_lease::table.filter(sync_lease::name.eq(name)).filter(sync_lease::holder.eq(holder)))
        .execute(tx.conn())?;
    Ok(())
}

/// Claims tick `tick` of the sync schedule `schedule` (`incremental` or `full`): true for the
/// first instance that asks, false for every other instance firing at the same tick.
pub fn claim_tick(tx: &mut Tx, schedule: &str, tick: NaiveDateTime) -> Result<bool, DieselError> {
    claim(tx, |conn| {
        // On PostgreSQL a second claimant waits briefly for the first one's row lock here, then
        // finds the tick taken (or gives up waiting: the tick is someone else's either way).
        let moved = diesel::update(sync_ticks::table.find(schedule).filter(sync_ticks::last_tick.lt(tick)))
            .set(sync_ticks::last_tick.eq(tick))
            .execute(conn)?;
        if moved == 1 {
            return Ok(true);
        }
        // No row yet (the first tick ever), or the tick is taken: the insert tells which.
        super::insert_unless_taken(conn, |conn| {
            diesel::insert_into(sync_ticks::table)
                .values((sync_ticks::schedule.eq(schedule), sync_ticks::last_tick.eq(tick)))
                .execute(conn)
        })
    })
}

/// Who holds the lease, if anyone does now.
pub fn lease_holder(conn: &mut DbConn, name: &str, now: NaiveDateTime) -> Result<Option<String>> {
    Ok(sync_lease::table
        .filter(sync_lease::name.eq(name))
        .filter(sync_lease::expires_at.ge(now))
        .select(sync_lease::holder)
        .first(conn)
        .optional()?)
}

/// The counts of a run in progress (a full run's deactivations are recorded at its end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub reactivated: i64,
    pub resets_applied: i64,
    pub flags_cleared: i64,
}

/// Records the counts of a run in progress, in the caller's transaction: the counts commit
/// with what they count.
pub fn save_progress(tx: &mut Tx, id: &str, c: &Progress) -> Result<(), DieselError> {
    diesel::update(sync_runs::table.find(id))
        .set((
            sync_runs::created.eq(c.created),
            sync_runs::updated.eq(c.updated),
            sync_runs::unchanged.eq(c.unchanged),
            sync_runs::reactivated.eq(c.reactivated),
            sync_runs::resets_applied.eq(c.resets_applied),
            sync_runs::flags_cleared.eq(c.flags_cleared),
        ))
        .execute(tx.conn())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The change feed (RFC 4533)
// ---------------------------------------------------------------------------------------------

/// Where the change feed `name` resumes, and whether it stopped deactivating.
#[derive(Debug, Clone, PartialEq, Eq, Default, Queryable, Selectable)]
#[diesel(table_name = sync_feed)]
pub struct Feed {
    /// Hex of the server's cookie.
    pub cookie: Option<String>,
    /// What the cookie was given for.
    pub scope: String,
    /// Why the feed stopped deactivating users.
    pub held: Option<String>,
}

pub fn feed(conn: &mut DbConn, name: &str) -> Result<Option<Feed>> {
    Ok(sync_feed::table.find(name).select(Feed::as_select()).first(conn).optional()?)
}

/// Saves the cookie of feed `name` (given for `scope`), keeping what else it holds.
pub fn save_cookie(tx: &mut Tx, name: &str, cookie: Option<&str>, scope: &str, at: NaiveDateTime) -> Result<(), DieselError> {
    let conn = tx.conn();
    let n = diesel::update(sync_feed::table.find(name))
        .set((sync_feed::cookie.eq(cookie), sync_feed::scope.eq(scope), sync_feed::updated_at.eq(at)))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(sync_feed::table)
            .values((
                sync_feed::name.eq(name),
                sync_feed::cookie.eq(cookie),
                sync_feed::scope.eq(scope),
                sync_feed::updated_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Sets (or with `None` clears) why feed `name` stopped deactivating.
pub fn set_held(tx: &mut Tx, name: &str, held: Option<&str>, at: NaiveDateTime) -> Result<(), DieselError> {
    let conn = tx.conn();
    let n = diesel::update(sync_feed::table.find(name))
        .set((sync_feed::held.eq(held), sync_feed::updated_at.eq(at)))
        .execute(conn)?;
    if n == 0 && held.is_some() {
        diesel::insert_into(sync_feed::table)
            .values((sync_feed::name.eq(name), sync_feed::scope.eq(""), sync_feed::held.eq(held), sync_feed::updated_at.eq(at)))
            .execute(conn)?;
    }
    Ok(())
}

/// Users deactivated by runs of `kind` that started at or after `since` (the feed's sliding
/// window of `[ldap.safety]`).
pub fn deactivated_since(conn: &mut DbConn, kind: &str, since: NaiveDateTime) -> Result<i64> {
    // The runs that deactivated anyone in the window: a handful; summed here, since SUM's type
    // differs between the backends.
    let counts: Vec<i64> = sync_runs::table
        .filter(sync_runs::kind.eq(kind))
        .filter(sync_runs::started_at.ge(since))
        .filter(sync_runs::deactivated.gt(0))
        .select(sync_runs::deactivated)
        .load(conn)?;
    Ok(counts.into_iter().sum())
}
