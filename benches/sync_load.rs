//! LDAP sync benchmark against a real slapd: the release binary's `provisiond sync` of N users,
//! timed against `ldapsearch -E pr=500/noprompt` of the same entries in the same run.
//!
//! `cargo bench --bench sync_load [-- --users 100000 --groups 1000 --backend sqlite|postgres|both --keep]`
//! (see benches/README.md). `both`: SQLite, then PostgreSQL, against the same directory and
//! baseline, and the ratio of the two. With `--groups G`, the directory also holds G groups (the first of
//! 20,000 members, the others of 50) and the initial full sync is run again, with
//! `[ldap.groups]`, on a fresh database: its time over the users-only one is the figure. With
//! `--keep`, each backend's slapd and database stay up after its no-change re-sync until Enter
//! is pressed (to profile a run by hand). `SYNC_LOAD_PG_STATS=1` prints the PostgreSQL server's
//! statements of the initial sync (`pg_stat_statements`: time, rows, WAL), and its WAL and
//! checkpoint counters.

#[path = "../tests/api/slapd.rs"]
mod slapd;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use slapd::{Slapd, ADMIN_DN, ADMIN_PASSWORD, GROUPS, PEOPLE};

/// Entries changed before the incremental run (the figure).
const CHANGED: usize = 100;

fn main() {
    let mut users = 100_000usize;
    let mut groups = 0usize;
    let mut backend = "sqlite".to_string();
    let mut keep = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--users" => users = args.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--groups" => groups = args.next().and_then(|v| v.parse().ok()).expect("--groups N"),
            "--backend" => {
                backend = args
                    .next()
                    .filter(|b| ["sqlite", "postgres", "both"].contains(&b.as_str()))
                    .expect("--backend sqlite|postgres|both")
            }
            "--keep" => keep = true,
            "--bench" => {}
            other => {
                panic!("unknown argument {other:?}; usage: sync_load [--users N] [--groups G] [--backend sqlite|postgres|both] [--keep]")
            }
        }
    }
    let t = Instant::now();
    let slapd = Slapd::start(&(slapd::people(0..users) + &group_entries(users, groups)));
    println!("slapd with {users} users and {groups} groups loaded by slapadd in {:.1} s", t.elapsed().as_secs_f64());

    let raw = |label: &str| {
        // Best of three: the baseline should be the server's speed, not a hiccup.
        let best = (0..3).map(|_| slapd.timed_paged_search(users)).min().unwrap();
        println!("{label}: ldapsearch -E pr=500/noprompt of {users} entries: {:.0} ms (best of 3)", ms(best));
        best
    };
    let baseline = raw("baseline");
    let backends: Vec<&str> = if backend == "both" { vec!["sqlite", "postgres"] } else { vec![backend.as_str()] };
    let runs: Vec<Runs> =
        backends.iter().enumerate().map(|(round, b)| Runs::measure(&slapd, b, users, groups, round, keep)).collect();
    let baseline = baseline.min(raw("baseline again"));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for (b, r) in backends.iter().zip(&runs) {
        let r1 = r.first.as_secs_f64() / baseline.as_secs_f64();
        let r2 = r.again.as_secs_f64() / baseline.as_secs_f64();
        println!();
        println!("| {users} users, {b} | time | ratio to ldapsearch | aim |");
        println!("|---|---:|---:|---|");
        println!("| ldapsearch -E pr=500/noprompt (baseline) | {:.0} ms | 1.00 | |", ms(baseline));
        println!("| initial full sync | {:.0} ms | {r1:.2} | ≤ 4× {} |", ms(r.first), verdict(r1 <= 4.0));
        println!("| no-change full re-sync | {:.0} ms | {r2:.2} | ≤ 1.5× {} |", ms(r.again), verdict(r2 <= 1.5));
        println!(
            "| incremental, {CHANGED} changed | {:.0} ms | | < 1 s {} |",
            ms(r.incremental),
            verdict(r.incremental < Duration::from_secs(1))
        );
        println!("| peak RSS of the initial sync | {:.1} MB | | < 150 MB {} |", r.first_rss, verdict(r.first_rss < 150.0));
        if let Some((with_groups, again_groups, rss, memberships)) = r.groups {
            let r = (with_groups.as_secs_f64() / r.first.as_secs_f64(), again_groups.as_secs_f64() / r.again.as_secs_f64());
            println!();
            println!("| {users} users and {groups} groups ({memberships} memberships), {b} | time | over users-only | aim |");
            println!("|---|---:|---:|---|");
            println!("| initial full sync with groups | {:.0} ms | {:.2} | ≤ 2× {} |", ms(with_groups), r.0, verdict(r.0 <= 2.0));
            println!("| no-change full re-sync with groups | {:.0} ms | {:.2} | |", ms(again_groups), r.1);
            println!("| peak RSS of the initial sync with groups | {rss:.1} MB | | |");
        }
    }
    if let [sqlite, postgres] = &runs[..] {
        let r = postgres.first.as_secs_f64() / sqlite.first.as_secs_f64();
        println!();
        println!("| {users} users | SQLite | PostgreSQL | PostgreSQL / SQLite | aim |");
        println!("|---|---:|---:|---:|---|");
        println!(
            "| initial full sync | {:.0} ms | {:.0} ms | {r:.2} | ≤ 1.5× {} |",
            ms(sqlite.first),
            ms(postgres.first),
            verdict(r <= 1.5)
        );
        let r = postgres.again.as_secs_f64() / sqlite.again.as_secs_f64();
        println!("| no-change full re-sync | {:.0} ms | {:.0} ms | {r:.2} | |", ms(sqlite.again), ms(postgres.again));
    }
}

/// The figures of one backend: the initial full sync into an empty database, the no-change
/// full re-sync, an incremental run after [`CHANGED`] changes and, with groups, the initial and
/// no-change full sync with `[ldap.groups]` on a fresh database.
struct Runs {
    first: Duration,
    first_rss: f64,
    again: Duration,
    incremental: Duration,
    /// With groups: initial, no-change, peak RSS of the initial, memberships.
    groups: Option<(Duration, Duration, f64, usize)>,
}

impl Runs {
    /// `round`: the how-manieth backend of the run (the changes before the incremental run are
    /// new values each round).
    fn measure(slapd: &Slapd, backend: &str, users: usize, groups: usize, round: usize, keep: bool) -> Runs {
        let dir = tempfile::tempdir().expect("temp dir");
        let (database, mut _postgres) = support::database_section(dir.path(), backend);
        println!("database: {backend}");
        let config = write_config(dir.path(), &database, slapd, false);
        let stats = std::env::var_os("SYNC_LOAD_PG_STATS").is_some();
        if let (true, Some(pg)) = (stats, _postgres.as_mut()) {
            start_pg_stats(pg);
        }
        let (first, first_rss, summary) = sync(&config, &["--full"]);
        if let (true, Some(pg)) = (stats, _postgres.as_ref()) {
            print_pg_stats(pg);
        }
        assert_eq!(summary["created"], users as u64, "{summary:#}");
        println!("initial full sync: {:.0} ms, peak RSS {first_rss:.1} MB", ms(first));

        let (again, again_rss, summary) = sync(&config, &["--full"]);
        assert_eq!(summary["unchanged"], users as u64, "{summary:#}");
        println!("no-change full re-sync: {:.0} ms, peak RSS {again_rss:.1} MB", ms(again));
        if keep {
            // For profiling by hand: `provisiond --config <this> sync --full` runs the no-change re-sync again.
            println!("--keep: slapd and the database stay up for {}; press Enter to go on", config.display());
            let _ = std::io::stdin().read_line(&mut String::new());
        }

        let step = (users / CHANGED).max(1);
        let changes: String = (0..CHANGED)
            .map(|k| format!("dn: uid=user{},{PEOPLE}\nchangetype: modify\nreplace: title\ntitle: changed\n-\nreplace: givenName\ngivenName: Changed{k}r{round}\n\n", k * step))
            .collect();
        slapd.modify(&changes);
        let (incremental, _, summary) = sync(&config, &[]);
        assert_eq!(summary["updated"], CHANGED as u64, "{summary:#}");
        println!(
            "incremental run after {CHANGED} changes: {:.0} ms ({} entries read)",
            ms(incremental),
            CHANGED as u64 + summary["unchanged"].as_u64().unwrap()
        );
        drop(_postgres);

        let groups = (groups > 0).then(|| {
            // The same initial full sync with the groups, on a fresh database.
            let dir = tempfile::tempdir().expect("temp dir");
            let (database, _postgres) = support::database_section(dir.path(), backend);
            let config = write_config(dir.path(), &database, slapd, true);
            let (with_groups, rss, summary) = sync(&config, &["--full"]);
            assert_eq!(summary["created"], users as u64, "{summary:#}");
            assert_eq!(summary["groupsCreated"], groups as u64, "{summary:#}");
            let memberships = big_group(users) + (groups - 1) * SMALL;
            assert_eq!(summary["membershipsChanged"], memberships as u64, "{summary:#}");
            let (again_groups, _, summary) = sync(&config, &["--full"]);
            assert_eq!(summary["membershipsChanged"], 0, "{summary:#}");
            (with_groups, again_groups, rss, memberships)
        });
        Runs { first, first_rss, again, incremental, groups }
    }
}

/// Members of each group after the first.
const SMALL: usize = 50;

/// Members of the first group: 20,000, or every user of a smaller directory.
fn big_group(users: usize) -> usize {
    users.min(20_000)
}

/// `groups` groupOfNames entries: the first with [`big_group`] members, the others with
/// [`SMALL`] members each, spread over the users.
fn group_entries(users: usize, groups: usize) -> String {
    let mut out = String::new();
    for g in 0..groups {
        out.push_str(&format!("dn: cn=group{g},{GROUPS}\nobjectClass: groupOfNames\ncn: group{g}\n"));
        let members: Vec<usize> = match g {
            0 => (0..big_group(users)).collect(),
            _ => (0..SMALL).map(|k| (g * SMALL + k) % users).collect(),
        };
        for m in members {
            out.push_str(&format!("member: uid=user{m},{PEOPLE}\n"));
        }
        out.push('\n');
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_config(dir: &Path, database: &str, slapd: &Slapd, groups: bool) -> std::path::PathBuf {
    std::fs::write(dir.join("bind.password"), ADMIN_PASSWORD).unwrap();
    let config = format!(
        "{database}[mfa]\nkey_file = \"{d}/mfa.key\"\n[log]\nlevel = \"warn\"\n\
         [ldap]\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password_file = \"{d}/bind.password\"\nbase_dn = \"{PEOPLE}\"\n\
         page_size = 500\nschedule = \"\"\nfull_schedule = \"\"\n\
         [ldap.mfa_reset]\nattribute = \"mfaResetRequested\"\nvalue = \"TRUE\"\n{}",
        slapd.url,
        if groups { format!("[ldap.groups]\nbase_dn = \"{GROUPS}\"\n") } else { String::new() },
        d = dir.display()
    );
    let path = dir.join("provisiond.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `SYNC_LOAD_PG_STATS=1`: the PostgreSQL server's side of the initial sync, from
/// `pg_stat_statements` (loaded by a restart of the bench's server before the sync).
fn start_pg_stats(pg: &mut support::postgres::PgServer) {
    let url = pg.url_of(support::postgres::DATABASE);
    psql(&url, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    pg.restart();
    psql(&url, "CREATE EXTENSION pg_stat_statements");
}

/// Prints the statements by server time (with their rows and WAL), and the WAL and
/// checkpoint counters, after the initial sync.
fn print_pg_stats(pg: &support::postgres::PgServer) {
    let url = pg.url_of(support::postgres::DATABASE);
    psql(
        &url,
        "SELECT calls, round(total_exec_time::numeric) AS ms, round((total_exec_time / calls)::numeric, 3) AS ms_per_call, \
         rows, wal_records, pg_size_pretty(wal_bytes) AS wal, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query \
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12",
    );
    psql(&url, "SELECT sum(calls) AS calls, round(sum(total_exec_time)::numeric) AS ms FROM pg_stat_statements");
    psql(&url, "SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_backend FROM pg_stat_bgwriter");
    psql(&url, "SELECT wal_records, wal_fpi, pg_size_pretty(wal_bytes) AS wal_bytes, wal_buffers_full FROM pg_stat_wal");
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql").arg(url).args(["-X", "-c", sql]).output().expect("psql runs");
    println!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Runs the release binary's `sync`; returns its wall time, its peak RSS (VmHWM, sampled from
/// /proc while it runs) and its JSON summary. Prints the CPU time the daemon used (user and
/// system, from /proc, in clock ticks taken as 10 ms): on PostgreSQL, the rest of the wall time
/// is mostly the server's.
fn sync(config: &Path, args: &[&str]) -> (Duration, f64, Value) {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisiond"))
        .arg("--config")
        .arg(config)
        .arg("sync")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("provisiond sync runs");
    let mut peak_kb = 0f64;
    let status_file = format!("/proc/{}/status", child.id());
    let stat_file = format!("/proc/{}/stat", child.id());
    let mut cpu_ticks = 0u64;
    while child.try_wait().expect("status").is_none() {
        if let Ok(s) = std::fs::read_to_string(&stat_file) {
            let f: Vec<&str> = s.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            if f.len() > 13 {
                cpu_ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            }
        }
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = t.elapsed();
    println!("daemon CPU (user + system): {} ms in {} ms", cpu_ticks * 10, elapsed.as_millis());
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "sync failed: {}", String::from_utf8_lossy(&out.stdout));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    (elapsed, peak_kb / 1024.0, summary)
}
