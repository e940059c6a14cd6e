//! Delivery of the outbox to every receiver, on threads of their own so that a receiver that is
//! down slows nothing else: resets and syncs only write their event rows.
//!
//! - The dispatcher turns new events into the messages each receiver is owed (webhooks from the
//!   configuration, Shared Signals streams from the database, read again on every round) and
//!   starts a sender for each receiver we push to.
//! - A sender claims the head of its receiver's queue (a lease, so that of several instances one
//!   sends to a receiver at a time, in order), posts the messages one by one outside any
//!   transaction and records the outcomes. A failure is retried with capped exponential backoff
//!   and jitter, holding back the messages after it, until the event is older than
//!   `events.max_age`; a Shared Signals receiver's 400 is final (RFC 8935 §2.3).
//! - Polling receivers (RFC 8936) take their messages through `/ssf/poll`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;

use super::keys::SigningKeys;
use super::route::{messages_for, set_for};
use super::webhook::{self, SigningSecret};
use crate::config::{Config, Events, Webhook};
use crate::domain::events::{Outbox, Owed};
use crate::domain::streams::{Stream, Streams};
use crate::metrics::METRICS;

/// How often the dispatcher looks for new events when nothing woke it.
const ROUND: Duration = Duration::from_millis(200);
/// Events dispatched per transaction.
const DISPATCH_BATCH: i64 = 500;
/// Messages a sender claims at a time.
const CLAIM_BATCH: i64 = 100;

/// The running deliverers; [`Deliverer::stop`] ends them.
pub struct Deliverer {
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
}

struct Shared {
    outbox: Outbox,
    streams: Streams,
    webhooks: Vec<Arc<WebhookTarget>>,
    /// Streams as the dispatcher read them last.
    stream_list: RwLock<Vec<Stream>>,
    signing: Option<(Arc<SigningKeys>, String)>,
    settings: Events,
    /// This process, as claims name it.
    me: String,
    agent: ureq::Agent,
    stopping: AtomicBool,
    /// Bumped when new messages were made or the daemon stops: senders wake at once.
    wake: (Mutex<u64>, Condvar),
}

struct WebhookTarget {
    config: Webhook,
    secret: SigningSecret,
}

/// Where one sender's messages go.
enum Target {
    Webhook(Arc<WebhookTarget>),
    Stream(Box<Stream>),
}

/// Why an attempt failed: to be retried, or final.
enum Failure {
    Retry(String),
    Final(String),
}

impl Deliverer {
    /// Reads every webhook's secret (a missing or malformed one stops the start, naming it) and
    /// starts the dispatcher.
    pub fn start(
        outbox: Outbox,
        streams: Streams,
        config: &Config,
        signing: Option<Arc<SigningKeys>>,
    ) -> anyhow::Result<Deliverer> {
        let mut webhooks = Vec::new();
        for w in &config.webhooks {
            let secret = w.secret()?;
            let secret = SigningSecret::parse(secret.expose())
                .map_err(|reason| anyhow::anyhow!("webhook {:?}: the signing secret {reason}", w.name))?;
            webhooks.push(Arc::new(WebhookTarget { config: w.clone(), secret }));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(config.events.timeout)))
            .http_status_as_error(false)
            // A signed post goes where it was configured to go, nowhere else.
            .max_redirects(0)
            .user_agent(concat!("provisiond/", env!("CARGO_PKG_VERSION")))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build())
            .build()
            .new_agent();
        let shared = Arc::new(Shared {
            outbox,
            streams,
            webhooks,
            stream_list: RwLock::new(Vec::new()),
            signing: signing.zip(config.ssf.as_ref().map(|s| s.issuer.clone())),
            settings: config.events.clone(),
            me: claimer(config.server.listen),
            agent,
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(0), Condvar::new()),
        });
        let for_thread = shared.clone();
        let dispatcher = std::thread::Builder::new().name("events-dispatch".into()).spawn(move || dispatch_loop(for_thread))?;
        Ok(Deliverer { shared, dispatcher: Some(dispatcher) })
    }

    /// Stops the threads: a post in flight ends within `events.timeout`; what it did not
    /// record is sent again by the next start (at least once).
    pub fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn wake_all(&self) {
        *self.wake.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.wake.1.notify_all();
    }

    /// Sleeps up to `wait`, or until woken.
    fn nap(&self, wait: Duration) {
        let guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *guard;
        let _ = self.wake.1.wait_timeout_while(guard, wait, |n| *n == seen && !self.stopping());
    }

    /// The target of `receiver` now: none when it is no longer one we push to (a stream that
    /// was deleted, paused, disabled or turned to polling).
    fn target(&self, receiver: &str) -> Option<Target> {
        if let Some(w) = self.webhooks.iter().find(|w| w.config.receiver() == receiver) {
            return Some(Target::Webhook(w.clone()));
        }
        let streams = self.stream_list.read().unwrap_or_else(|e| e.into_inner());
        streams.iter().find(|s| s.receiver() == receiver && pushes_to(s)).map(|s| Target::Stream(Box::new(s.clone())))
    }
}

fn pushes_to(stream: &Stream) -> bool {
    stream.is_push() && stream.status == "enabled"
}

fn dispatch_loop(shared: Arc<Shared>) {
    let configured: Vec<String> = shared.webhooks.iter().map(|w| w.config.receiver()).collect();
    if let Err(e) = shared.outbox.forget_webhooks_except(&configured.iter().map(String::as_str).collect::<Vec<_>>()) {
        tracing::warn!(error = %e, "events: forgetting webhooks no longer configured failed");
    }
    let mut senders: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut known = Vec::<String>::new();
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    while !shared.stopping() {
        let busy = match dispatch_round(&shared, &mut known) {
            Ok(n) => n as i64 == DISPATCH_BATCH,
            Err(e) => {
                tracing::warn!(error = %e, "events: dispatch failed; trying again shortly");
                false
            }
        };
        // A sender per receiver we push to, started when it has none (or its last one ended).
        senders.retain(|_, h| !h.is_finished());
        for receiver in &known {
            if !senders.contains_key(receiver) && shared.target(receiver).is_some() {
                let (s, r) = (shared.clone(), receiver.clone());
                match std::thread::Builder::new().name("events-send".into()).spawn(move || send_loop(s, r)) {
                    Ok(h) => {
                        senders.insert(receiver.clone(), h);
                    }
                    Err(e) => tracing::error!(error = %e, receiver, "events: cannot start a sender"),
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = Instant::now();
            let before = shared.outbox.now() - chrono::Duration::seconds(shared.settings.max_age as i64);
            match shared.outbox.prune(before) {
                Ok(n) if n > 0 => tracing::info!(events = n, "events: delivered events past events.max_age deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "events: pruning failed"),
            }
        }
        if !busy {
            shared.nap(ROUND);
        }
    }
    shared.wake_all();
    for (_, h) in senders {
        let _ = h.join();
    }
}

/// The name this daemon claims deliveries under: its host and the address it listens on, which
/// no other live daemon can share (its bind would fail). A daemon restarted after a crash is
/// then the same claimer, and takes up at once what its predecessor had claimed instead of
/// waiting out the lease. A random name when the system picks the port, or the host is unknown.
fn claimer(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    match (host.is_empty(), listen.port()) {
        (false, port) if port != 0 => format!("{host}/{listen}"),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// Reads the streams, makes the receivers' rows, dispatches one batch; returns how many events.
fn dispatch_round(shared: &Shared, known: &mut Vec<String>) -> crate::domain::Result<usize> {
    let streams = shared.streams.all()?;
    let mut receivers: Vec<String> = shared.webhooks.iter().map(|w| w.config.receiver()).collect();
    receivers.extend(streams.iter().map(Stream::receiver));
    if receivers != *known {
        shared.outbox.ensure_receivers(&receivers.iter().map(String::as_str).collect::<Vec<_>>())?;
        *known = receivers;
    }
    let webhooks: Vec<Webhook> = shared.webhooks.iter().map(|w| w.config.clone()).collect();
    let n = shared.outbox.dispatch(DISPATCH_BATCH, &|event| messages_for(event, &webhooks, &streams))?;
    *shared.stream_list.write().unwrap_or_else(|e| e.into_inner()) = streams;
    if n > 0 {
        shared.wake_all();
    }
    Ok(n)
}

/// Sends `receiver`'s messages until it is no longer one we push to or the daemon stops.
fn send_loop(shared: Arc<Shared>, receiver: String) {
    let lease = Duration::from_secs(30 + 2 * shared.settings.timeout);
    let lease_until = chrono::Duration::from_std(lease).expect("small");
    // Posted but not yet recorded: recorded in the transaction that claims the next batch.
    let mut sent: Vec<String> = Vec::new();
    while !shared.stopping() {
        let Some(target) = shared.target(&receiver) else { break };
        let claimed_at = Instant::now();
        let jtis: Vec<&str> = sent.iter().map(String::as_str).collect();
        let claimed = match shared.outbox.delivered_and_claim(&receiver, &jtis, &shared.me, CLAIM_BATCH, lease_until) {
            Ok((n, claimed)) => {
                if n > 0 {
                    METRICS.events_delivered.with_label_values(&[&receiver]).inc_by(n as u64);
                }
                sent.clear();
                claimed
            }
            Err(e) => {
                tracing::warn!(error = %e, receiver, "events: claiming failed; trying again shortly");
                // What was sent is recorded on its own (sent again later if that fails too).
                record_sent(&shared, &receiver, &mut sent);
                shared.nap(ROUND);
                continue;
            }
        };
        if claimed.is_empty() {
            shared.nap(ROUND);
            continue;
        }
        for owed in &claimed {
            // Within the lease, with room for one more post: the rest is claimed again at once.
            if shared.stopping() || claimed_at.elapsed() + Duration::from_secs(shared.settings.timeout + 5) > lease {
                break;
            }
            match send(&shared, &target, owed) {
                Ok(()) => sent.push(owed.jti.clone()),
                Err(failure) => {
                    record_sent(&shared, &receiver, &mut sent);
                    let retry = record_failure(&shared, &receiver, owed, failure);
                    if retry {
                        // In order: what follows waits for this one.
                        break;
                    }
                }
            }
        }
    }
    record_sent(&shared, &receiver, &mut sent);
}

fn record_sent(shared: &Shared, receiver: &str, sent: &mut Vec<String>) {
    if sent.is_empty() {
        return;
    }
    let jtis: Vec<&str> = sent.iter().map(String::as_str).collect();
    match shared.outbox.delivered(receiver, &jtis) {
        Ok(n) => METRICS.events_delivered.with_label_values(&[receiver]).inc_by(n as u64),
        // Sent but not recorded: sent again later (at least once; the id tells the receiver).
        Err(e) => tracing::warn!(error = %e, receiver, "events: recording deliveries failed"),
    }
    sent.clear();
}

/// Records a failed attempt; returns whether it will be retried.
fn record_failure(shared: &Shared, receiver: &str, owed: &Owed, failure: Failure) -> bool {
    let now = shared.outbox.now();
    let too_old = now - owed.event.at > chrono::Duration::seconds(shared.settings.max_age as i64);
    let (error, retry_at) = match failure {
        Failure::Final(e) => (e, None),
        Failure::Retry(e) if too_old => (format!("{e} (dropped: older than events.max_age)"), None),
        Failure::Retry(e) => (e, Some(now + backoff(owed.attempts, shared.settings.max_backoff))),
    };
    METRICS.events_failed.with_label_values(&[receiver]).inc();
    if retry_at.is_none() {
        METRICS.events_dropped.with_label_values(&[receiver]).inc();
    }
    tracing::warn!(receiver, event = %owed.event.id, jti = %owed.jti, attempts = owed.attempts + 1, error, retry = retry_at.is_some(), "events: delivery failed");
    if let Err(e) = shared.outbox.failed(receiver, &owed.jti, &error, retry_at) {
        tracing::warn!(error = %e, receiver, "events: recording a failed delivery failed");
    }
    retry_at.is_some()
}

/// The wait before attempt `attempts + 1`: 1 s doubling per attempt up to `max_secs`, of which
/// a random half (so that receivers coming back are not met by every sender at once).
fn backoff(attempts: i32, max_secs: u64) -> chrono::Duration {
    let full = 2u64.saturating_pow(attempts.clamp(0, 30) as u32).min(max_secs).max(1) * 1000;
    let ms = rand::rng().random_range(full / 2..=full);
    chrono::Duration::milliseconds(ms as i64)
}

fn send(shared: &Shared, target: &Target, owed: &Owed) -> Result<(), Failure> {
    let now = Utc::now();
    let response = match target {
        Target::Webhook(w) => {
            let body = webhook::body(&owed.event);
            let mut request = shared.agent.post(&w.config.url).header("content-type", "application/json");
            for (name, value) in webhook::headers(&w.secret, &owed.jti, now, &body) {
                request = request.header(name, value);
            }
            request.send(body.as_bytes())
        }
        Target::Stream(stream) => {
            let Some((keys, issuer)) = &shared.signing else {
                return Err(Failure::Retry("no [ssf] signing key is configured".into()));
            };
            let endpoint = stream.endpoint_url.as_deref().unwrap_or_default();
            let token = set_for(keys, issuer, stream, owed, now).map_err(|e| Failure::Retry(format!("signing: {e}")))?;
            let mut request = shared
                .agent
                .post(endpoint)
                .header("content-type", "application/secevent+jwt")
                .header("accept", "application/json");
            if let Some(auth) = &stream.authorization_header {
                request = request.header("authorization", auth);
            }
            request.send(token.as_bytes())
        }
    };
    let mut response = response.map_err(|e| Failure::Retry(e.to_string()))?;
    let status = response.status().as_u16();
    match (status, target) {
        (200..=299, _) => Ok(()),
        // RFC 8935 §2.3: the receiver refuses this SET for good, and says why.
        (400, Target::Stream(_)) => {
            let body: serde_json::Value = response.body_mut().read_json().unwrap_or_default();
            let err = body["err"].as_str().unwrap_or("invalid_request");
            let description = body["description"].as_str().map(|d| format!(": {}", cut(d, 200))).unwrap_or_default();
            Err(Failure::Final(format!("HTTP 400 {err}{description}")))
        }
        _ => Err(Failure::Retry(format!("HTTP {status}"))),
    }
}

/// At most `max` characters of a receiver's text.
fn cut(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_restarted_on_its_address_claims_as_before_and_one_on_a_system_picked_port_does_not() {
        let fixed: std::net::SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(claimer(fixed), claimer(fixed), "the same host and address: the same claimer");
        assert!(claimer(fixed).ends_with("/127.0.0.1:8443"));
        let other: std::net::SocketAddr = "127.0.0.1:8444".parse().unwrap();
        assert_ne!(claimer(fixed), claimer(other));
        let picked: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_ne!(claimer(picked), claimer(picked), "port 0 may be any port: a name of its own");
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        for attempts in 0..40 {
            let full = 2i64.saturating_pow(attempts.min(30) as u32).min(600) * 1000;
            let wait = backoff(attempts, 600).num_milliseconds();
            assert!((full / 2..=full).contains(&wait), "attempt {attempts}: {wait} ms");
        }
        assert!(backoff(100, 5).num_milliseconds() <= 5000);
    }
}
