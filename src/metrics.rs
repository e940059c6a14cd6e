//! Prometheus metrics (`GET /metrics`, scope `admin`), with the `prometheus` crate: counters and
//! histograms the code updates as things happen, and gauges the scrape sets from the domain's
//! counts (`domain::stats`) just before rendering. A recorder any layer may count into, like
//! the log: it reads no tables and calls nothing of ours.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, Encoder, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Registry, TextEncoder,
};

/// What the gauges show, counted by the caller (the `/metrics` door asks the domain).
pub(crate) struct Gauges<'a> {
    /// `(source, active, users)`.
    pub users: &'a [(String, bool, i64)],
    /// `(event type, origin, events)`.
    pub mfa_events: &'a [(String, String, i64)],
    pub pool_open: u32,
    pub pool_idle: u32,
    /// `(receiver, messages owed, age in seconds of the oldest event owed)`.
    pub receivers: &'a [(String, i64, i64)],
}

pub(crate) struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub scim_operations: IntCounterVec,
    pub sync_runs: IntCounterVec,
    pub sync_duration: HistogramVec,
    pub sync_entries: IntCounterVec,
    pub mfa_verify_failures: IntCounter,
    pub sync_feed_messages: IntCounter,
    pub sync_feed_entries: IntCounter,
    pub events_delivered: IntCounterVec,
    pub events_failed: IntCounterVec,
    pub events_dropped: IntCounterVec,
    events_backlog: IntGaugeVec,
    events_oldest: IntGaugeVec,
    users: IntGaugeVec,
    mfa_events: IntGaugeVec,
    pool: IntGaugeVec,
}

/// One set per process (every daemon of a test process shares it).
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics::new().expect("metric definitions are valid"));

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let r = Registry::new_custom(Some("provisiond".into()), None)?;
        Ok(Metrics {
            http_requests: register_int_counter_vec_with_registry!(
                "http_requests_total",
                "HTTP requests by route template, method and status",
                &["route", "method", "status"],
                r
            )?,
            http_duration: register_histogram_vec_with_registry!(
                "http_request_duration_seconds",
                "HTTP request latency by route template and method",
                &["route", "method"],
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                r
            )?,
            scim_operations: register_int_counter_vec_with_registry!(
                "scim_operations_total",
                "SCIM operations by type (create, get, list, search, replace, patch, delete, discovery) and status",
                &["operation", "status"],
                r
            )?,
            sync_runs: register_int_counter_vec_with_registry!(
                "sync_runs_total",
                "LDAP sync runs by kind and status",
                &["kind", "status"],
                r
            )?,
            sync_duration: register_histogram_vec_with_registry!(
                "sync_run_duration_seconds",
                "LDAP sync run duration by kind",
                &["kind"],
                vec![0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0],
                r
            )?,
            sync_entries: register_int_counter_vec_with_registry!(
                "sync_entries_total",
                "Entries handled by LDAP sync runs, by outcome",
                &["outcome"],
                r
            )?,
            mfa_verify_failures: register_int_counter_with_registry!(
                "mfa_verify_failures_total",
                "Wrong TOTP or backup codes",
                r
            )?,
            sync_feed_messages: register_int_counter_with_registry!(
                "sync_feed_messages_total",
                "Messages received on the LDAP change feed (RFC 4533)",
                r
            )?,
            sync_feed_entries: register_int_counter_with_registry!(
                "sync_feed_entries_total",
                "Entries (added or changed) received on the LDAP change feed: a resumed feed reads only what changed",
                r
            )?,
            events_delivered: register_int_counter_vec_with_registry!(
                "events_delivered_total",
                "Messages (webhook posts, security event tokens) delivered by this instance, by receiver",
                &["receiver"],
                r
            )?,
            events_failed: register_int_counter_vec_with_registry!(
                "events_delivery_failures_total",
                "Failed delivery attempts by this instance, by receiver",
                &["receiver"],
                r
            )?,
            events_dropped: register_int_counter_vec_with_registry!(
                "events_dropped_total",
                "Messages given up by this instance (refused for good, or older than events.max_age), by receiver",
                &["receiver"],
                r
            )?,
            events_backlog: register_int_gauge_vec_with_registry!(
                "events_backlog",
                "Messages owed to each receiver (every instance's)",
                &["receiver"],
                r
            )?,
            events_oldest: register_int_gauge_vec_with_registry!(
                "events_oldest_age_seconds",
                "Age of the oldest event still owed to each receiver (0 when none is)",
                &["receiver"],
                r
            )?,
            users: register_int_gauge_vec_with_registry!("users", "Users by source and active state", &["source", "active"], r)?,
            mfa_events: register_int_gauge_vec_with_registry!(
                "mfa_events",
                "MFA resets by origin and verification lockouts, from the audit trail",
                &["event", "origin"],
                r
            )?,
            pool: register_int_gauge_vec_with_registry!(
                "db_pool_connections",
                "Database pool connections by state",
                &["state"],
                r
            )?,
            registry: r,
        })
    }

    /// The text exposition, with the gauges set from `counts`.
    pub(crate) fn render(&self, counts: &Gauges) -> String {
        self.pool.with_label_values(&["open"]).set(i64::from(counts.pool_open));
        self.pool.with_label_values(&["idle"]).set(i64::from(counts.pool_idle));
        self.users.reset();
        for (source, active, n) in counts.users {
            self.users.with_label_values(&[source.as_str(), if *active { "true" } else { "false" }]).set(*n);
        }
        self.events_backlog.reset();
        self.events_oldest.reset();
        for (receiver, backlog, oldest) in counts.receivers {
            self.events_backlog.with_label_values(&[receiver.as_str()]).set(*backlog);
            self.events_oldest.with_label_values(&[receiver.as_str()]).set(*oldest);
        }
        self.mfa_events.reset();
        for (event, origin, n) in counts.mfa_events {
            self.mfa_events.with_label_values(&[event.as_str(), origin.as_str()]).set(*n);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
