//! A time limit on every SQLite statement, as PostgreSQL's `statement_timeout` gives the other
//! backend: a query that runs away (a sort nobody indexed, a filter over a huge table) is
//! interrupted instead of holding its connection, and the SQLite writer, for as long as it likes.
//!
//! diesel does not hand out the raw `sqlite3*` of its connections, so the limit is installed
//! with SQLite's own hook for that: an auto-extension runs for every connection this process
//! opens and registers, on that connection, a trace callback that notes when each statement
//! starts and a progress handler (called every few thousand virtual-machine steps) that
//! interrupts a statement running past the limit. The statement then fails with
//! "interrupted", which the store reports as unavailable (503).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Once};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

/// The limit in milliseconds; 0: none. One value per process (one configuration per process).
static LIMIT_MS: AtomicU64 = AtomicU64::new(0);
/// The clock the per-connection start times count from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Virtual-machine steps between two looks at the clock: a few microseconds of work.
const STEPS: c_int = 10_000;

thread_local! {
    /// Set while this thread runs work that may take long on purpose (migrations).
    static UNLIMITED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets the limit of every statement on every SQLite connection of the process (0: none), and
/// installs the hooks once.
pub(crate) fn set_limit(limit: Duration) {
    LIMIT_MS.store(limit.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        LazyLock::force(&EPOCH);
        // SAFETY: `install` has the signature SQLite calls auto-extensions with.
        unsafe {
            ffi::sqlite3_auto_extension(Some(install));
        }
    });
}

/// Runs `f` with no time limit on this thread's statements (schema migrations).
pub(crate) fn unlimited<T>(f: impl FnOnce() -> T) -> T {
    let before = UNLIMITED.with(|u| u.replace(true));
    let out = f();
    UNLIMITED.with(|u| u.set(before));
    out
}

/// Per connection: when its current statement started (nanoseconds since `EPOCH`).
struct Started(AtomicU64);

unsafe extern "C" fn install(db: *mut ffi::sqlite3, _err: *mut *mut c_char, _api: *const ffi::sqlite3_api_routines) -> c_int {
    let state = Box::into_raw(Box::new(Started(AtomicU64::new(now()))));
    // SAFETY: `db` is the connection being opened; `state` lives until its close event.
    unsafe {
        ffi::sqlite3_trace_v2(db, ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_CLOSE, Some(on_trace), state.cast());
        ffi::sqlite3_progress_handler(db, STEPS, Some(on_progress), state.cast());
    }
    ffi::SQLITE_OK
}

fn now() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

unsafe extern "C" fn on_trace(event: c_uint, ctx: *mut c_void, p: *mut c_void, _x: *mut c_void) -> c_int {
    let state = ctx.cast::<Started>();
    if event == ffi::SQLITE_TRACE_STMT {
        // SAFETY: `state` was made by `install` and is freed only at the close event below.
        unsafe { (*state).0.store(now(), Ordering::Relaxed) };
    } else if event == ffi::SQLITE_TRACE_CLOSE {
        // SAFETY: for a close event `p` is the connection. Both callbacks are unregistered
        // before their state is freed, in case the close does not complete (open statements).
        unsafe {
            let db = p.cast::<ffi::sqlite3>();
            ffi::sqlite3_progress_handler(db, 0, None, std::ptr::null_mut());
            ffi::sqlite3_trace_v2(db, 0, None, std::ptr::null_mut());
            drop(Box::from_raw(state));
        }
    }
    0
}

unsafe extern "C" fn on_progress(ctx: *mut c_void) -> c_int {
    let limit = LIMIT_MS.load(Ordering::Relaxed);
    if limit == 0 || UNLIMITED.with(|u| u.get()) {
        return 0;
    }
    // SAFETY: as in `on_trace`.
    let started = unsafe { (*ctx.cast::<Started>()).0.load(Ordering::Relaxed) };
    c_int::from(now().saturating_sub(started) > limit * 1_000_000)
}
