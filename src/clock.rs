//! Time, injectable: the daemon reads the system clock; tests set one to walk TOTP windows
//! and lockouts.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves when told to, and otherwise by one microsecond per reading: it never
/// stands still, so that records written one after another are stamped in that order, as with
/// a real clock, while a test walks TOTP windows and lockouts by setting it.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock") = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let mut now = self.0.lock().expect("clock");
        *now += chrono::Duration::microseconds(1);
        *now
    }
}

/// A time as stored: naive UTC with microsecond precision (what both backends keep).
pub fn stored(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let t = t.naive_utc();
    t - chrono::Duration::nanoseconds(i64::from(t.and_utc().timestamp_subsec_nanos() % 1000))
}
