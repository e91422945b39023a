//! Prometheus metrics: every name defined here once, recorded through typed events.
//!
//! Labels are low-cardinality only: mailbox, sink, outcome, error kind. Never a UIDL, a
//! Message-ID, an address or a key.
//!
//! Even the mailbox is too many at 10,000 mailboxes (a histogram alone is a dozen series per
//! mailbox), so by default every series carries `mailbox="_all"`: counters and the poll
//! histogram are summed over mailboxes, pending/dead/listed gauges too, and the timestamp
//! gauges hold the worst mailbox's value (oldest successful poll, earliest certificate expiry,
//! longest backoff), so the same alerts fire. `http.per_mailbox_metrics: true` restores one
//! series per mailbox. Metric and label names are the same either way.

use crate::telemetry::event::PollFinished;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The `mailbox` label value of every series when per-mailbox series are off.
pub const ALL_MAILBOXES: &str = "_all";

static PER_MAILBOX: AtomicBool = AtomicBool::new(false);

/// One series per mailbox (`true`), or bounded series summed over mailboxes (the default).
pub fn configure(per_mailbox: bool) {
    PER_MAILBOX.store(per_mailbox, Ordering::Relaxed);
}

/// The `mailbox` label value for `mailbox`.
fn label(mailbox: &str) -> &str {
    if PER_MAILBOX.load(Ordering::Relaxed) {
        mailbox
    } else {
        ALL_MAILBOXES
    }
}

/// Per-mailbox values behind the bounded gauges: a few dozen bytes per mailbox, never a
/// series each. Mailbox and sink names are kept once each and referred to by number, so
/// 10,000 mailboxes do not hold each name once per gauge.
#[derive(Default)]
struct Rollup {
    /// Every mailbox and sink name seen, by number.
    names: HashMap<Box<str>, u32>,
    /// Last value per (gauge, mailbox, sink), so a sum moves by the difference.
    last: HashMap<(&'static str, u32, u32), i64>,
    /// Per gauge: the value of each mailbox, and the same ordered, for the minimum/maximum.
    extremes: HashMap<String, Ranked>,
}

/// Each mailbox's value, and the same values in order (mailboxes by number).
type Ranked = (HashMap<u32, i64>, BTreeSet<(i64, u32)>);

impl Rollup {
    /// The number of `name`, given at its first use.
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.insert(name.into(), id);
        id
    }

    /// The change of the sum of `gauge` over mailboxes when `mailbox` now has `value`.
    fn delta(&mut self, gauge: &'static str, mailbox: &str, sink: &str, value: i64) -> i64 {
        let key = (gauge, self.id(mailbox), self.id(sink));
        let old = self.last.insert(key, value).unwrap_or(0);
        value - old
    }

    /// `mailbox` now has `value` (`None`: no value any more); returns the (minimum, maximum)
    /// over mailboxes.
    fn extreme(&mut self, gauge: &str, mailbox: &str, value: Option<i64>) -> Option<(i64, i64)> {
        let id = self.id(mailbox);
        if !self.extremes.contains_key(gauge) {
            self.extremes.insert(gauge.to_string(), Ranked::default());
        }
        let (by_mailbox, ordered) = self.extremes.get_mut(gauge)?;
        if let Some(old) = by_mailbox.remove(&id) {
            ordered.remove(&(old, id));
        }
        if let Some(v) = value {
            by_mailbox.insert(id, v);
            ordered.insert((v, id));
        }
        Some((ordered.first()?.0, ordered.last()?.0))
    }
}

fn rollup() -> std::sync::MutexGuard<'static, Rollup> {
    static ROLLUP: OnceLock<Mutex<Rollup>> = OnceLock::new();
    ROLLUP
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets an integer gauge of `mailbox` (and `sink`), or moves the sum over mailboxes.
fn set_summed(g: &IntGaugeVec, name: &'static str, mailbox: &str, sink: Option<&str>, v: i64) {
    let per = PER_MAILBOX.load(Ordering::Relaxed);
    let mb = label(mailbox);
    let labels: Vec<&str> = std::iter::once(mb).chain(sink).collect();
    if per {
        g.with_label_values(&labels).set(v);
    } else {
        let d = rollup().delta(name, mailbox, sink.unwrap_or(""), v);
        g.with_label_values(&labels).add(d);
    }
}

/// Which end of the per-mailbox values a bounded gauge shows.
#[derive(Clone, Copy)]
enum Worst {
    Lowest,
    Highest,
}

/// Sets a gauge of `mailbox`, or the lowest/highest over mailboxes; `v` in thousandths.
fn set_worst(g: &GaugeVec, name: &'static str, mailbox: &str, worst: Worst, v_milli: i64) {
    if PER_MAILBOX.load(Ordering::Relaxed) {
        g.with_label_values(&[mailbox]).set(v_milli as f64 / 1000.0);
        return;
    }
    if let Some((lo, hi)) = rollup().extreme(name, mailbox, Some(v_milli)) {
        let v = match worst {
            Worst::Lowest => lo,
            Worst::Highest => hi,
        };
        g.with_label_values(&[ALL_MAILBOXES]).set(v as f64 / 1000.0);
    }
}

pub struct Metrics {
    registry: Registry,
    messages_fetched: IntCounterVec,
    bytes_fetched: IntCounterVec,
    deliveries: IntCounterVec,
    delivery_duration: HistogramVec,
    poll_duration: HistogramVec,
    poll_errors: IntCounterVec,
    pending: IntGaugeVec,
    dead_letters: IntGaugeVec,
    last_success: GaugeVec,
    on_server: IntGaugeVec,
    cert_expiry: GaugeVec,
    retrieval_dead: IntCounterVec,
    downconverted: IntCounterVec,
    uidl_reused: IntCounterVec,
    without_quit: IntCounterVec,
    backoff: GaugeVec,
    panics: IntCounterVec,
    fenced_writes: IntCounterVec,
    leases_held: IntGaugeVec,
    lease_events: IntCounterVec,
    oauth2_refreshes: IntCounterVec,
    oauth2_expiry: GaugeVec,
    oauth2_relogin: IntGaugeVec,
    sasl_logins: IntCounterVec,
    sink_paused: GaugeVec,
    server_downloaded: IntGaugeVec,
    server_download_paused: GaugeVec,
}

/// Delivery outcomes, the values of the `outcome` label.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Delivered,
    Duplicate,
    /// Delivered as a stub, the original in the offload bucket (`oversize: stub`).
    Stubbed,
    Retried,
    DeadLettered,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Duplicate => "duplicate",
            Self::Stubbed => "stubbed",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let int_gauge =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let histogram = |name: &str,
                     help: &str,
                     labels: &[&str],
                     buckets: Vec<f64>|
     -> Result<HistogramVec, prometheus::Error> {
        let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
        registry.register(Box::new(h.clone()))?;
        Ok(h)
    };
    let build_info = IntGaugeVec::new(
        Opts::new(
            "popbridge_build_info",
            "Always 1; the version is in the label.",
        ),
        &["version"],
    )?;
    registry.register(Box::new(build_info.clone()))?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    Ok(Metrics {
        messages_fetched: counter(
            "popbridge_messages_fetched_total",
            "Messages retrieved from POP3.",
            &["mailbox"],
        )?,
        bytes_fetched: counter(
            "popbridge_fetched_bytes_total",
            "Bytes of messages retrieved from POP3.",
            &["mailbox"],
        )?,
        deliveries: counter(
            "popbridge_deliveries_total",
            "Delivery attempts that ended a poll, by outcome.",
            &["mailbox", "sink", "outcome"],
        )?,
        delivery_duration: histogram(
            "popbridge_delivery_duration_seconds",
            "Time to deliver one message to one sink, retries within the poll included.",
            &["sink"],
            prometheus::exponential_buckets(0.001, 4.0, 10)?,
        )?,
        poll_duration: histogram(
            "popbridge_poll_duration_seconds",
            "Time of one poll of one mailbox, from connect to QUIT.",
            &["mailbox"],
            prometheus::exponential_buckets(0.05, 3.0, 10)?,
        )?,
        poll_errors: counter(
            "popbridge_poll_errors_total",
            "Polls that failed, by kind.",
            &["mailbox", "kind"],
        )?,
        pending: int_gauge(
            "popbridge_pending_deliveries",
            "Deliveries waiting for a retry, after the last poll.",
            &["mailbox", "sink"],
        )?,
        dead_letters: int_gauge(
            "popbridge_dead_letters",
            "Dead-lettered deliveries, after the last poll.",
            &["mailbox", "sink"],
        )?,
        last_success: gauge(
            "popbridge_last_successful_poll_timestamp_seconds",
            "Unix time of the last poll that completed without a poll error.",
            &["mailbox"],
        )?,
        on_server: int_gauge(
            "popbridge_messages_on_server",
            "Messages the server listed at the last poll.",
            &["mailbox"],
        )?,
        cert_expiry: gauge(
            "popbridge_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the POP3 server's TLS certificate expires.",
            &["mailbox"],
        )?,
        retrieval_dead: counter(
            "popbridge_retrieval_dead_letters_total",
            "Messages dead-lettered because their RETR broke the connection too often.",
            &["mailbox"],
        )?,
        downconverted: counter(
            "popbridge_pop3_downconverted_total",
            "Messages the POP3 server served as a down-converted substitute (no UTF8 mode); kept on the server, not delivered.",
            &["mailbox"],
        )?,
        uidl_reused: counter(
            "popbridge_uidl_reused_total",
            "Messages delivered under a UIDL the server had used for another message before.",
            &["mailbox"],
        )?,
        without_quit: counter(
            "popbridge_sessions_without_quit_total",
            "POP3 sessions ended without QUIT because a retrieved message was not in every sink.",
            &["mailbox"],
        )?,
        backoff: gauge(
            "popbridge_poll_backoff_seconds",
            "Wait before the next poll forced by repeated auth/TLS failures; 0 when not backing off.",
            &["mailbox"],
        )?,
        panics: counter(
            "popbridge_poll_panics_total",
            "Polls that panicked (a bug); the mailbox is retried with backoff.",
            &["mailbox"],
        )?,
        fenced_writes: counter(
            "popbridge_fenced_writes_total",
            "State writes refused because the mailbox's lease was no longer ours (PostgreSQL).",
            &["mailbox"],
        )?,
        leases_held: int_gauge(
            "popbridge_leases_held",
            "Mailbox leases this replica holds (PostgreSQL).",
            &[],
        )?,
        lease_events: counter(
            "popbridge_lease_events_total",
            "Mailbox leases claimed, lost (taken over or expired) and released, by event.",
            &["event"],
        )?,
        oauth2_refreshes: counter(
            "popbridge_oauth2_refreshes_total",
            "OAuth2 token requests by credential and result (ok, transient, relogin_needed, config, local).",
            &["credential", "result"],
        )?,
        oauth2_expiry: gauge(
            "popbridge_oauth2_access_token_expiry_timestamp_seconds",
            "When the current OAuth2 access token of a credential expires (Unix time).",
            &["credential"],
        )?,
        oauth2_relogin: int_gauge(
            "popbridge_oauth2_relogin_needed",
            "1 while a credential's refresh token is refused: run `popbridge oauth2 login`.",
            &["credential"],
        )?,
        sasl_logins: counter(
            "popbridge_sasl_logins_total",
            "SASL logins (POP3 AUTH, IMAP AUTHENTICATE) by mechanism and result (ok, failed).",
            &["mechanism", "result"],
        )?,
        sink_paused: gauge(
            "popbridge_sink_paused_until_timestamp_seconds",
            "When a sink's target for a mailbox accepts deliveries again (Unix time; a used-up Gmail daily quota); 0 when not paused.",
            &["mailbox", "sink"],
        )?,
        server_downloaded: int_gauge(
            "popbridge_server_downloaded_bytes_today",
            "Message bytes counted against a POP3 host's daily download budget today (UTC), hosts with `bytes_per_day` only.",
            &["server"],
        )?,
        server_download_paused: gauge(
            "popbridge_server_download_paused_until_timestamp_seconds",
            "When a POP3 host's spent daily download budget starts again (Unix time, the next UTC midnight); 0 while it has room.",
            &["server"],
        )?,
        registry,
    })
}

/// A sink's target for `mailbox` is paused until `until` (a used-up daily quota), or not.
/// Bounded: the `_all` series of a sink shows the latest end of its mailboxes' pauses.
pub fn sink_paused(mailbox: &str, sink: &str, until: Option<chrono::DateTime<chrono::Utc>>) {
    let Some(m) = get() else { return };
    if PER_MAILBOX.load(Ordering::Relaxed) {
        m.sink_paused
            .with_label_values(&[mailbox, sink])
            .set(until.map_or(0.0, |t| t.timestamp() as f64));
        return;
    }
    let latest = rollup()
        .extreme(
            &format!("paused\0{sink}"),
            mailbox,
            until.map(|t| t.timestamp()),
        )
        .map_or(0, |(_, hi)| hi);
    m.sink_paused
        .with_label_values(&[ALL_MAILBOXES, sink])
        .set(latest as f64);
}

/// A host's daily download budget after a poll planned its fetches: bytes counted today and,
/// when spent, when it starts again. Labelled by host: bounded by the `servers:` entries.
pub fn server_download(
    server: &str,
    used: u64,
    paused_until: Option<chrono::DateTime<chrono::Utc>>,
) {
    let Some(m) = get() else { return };
    m.server_downloaded
        .with_label_values(&[server])
        .set(i64::try_from(used).unwrap_or(i64::MAX));
    m.server_download_paused
        .with_label_values(&[server])
        .set(paused_until.map_or(0.0, |t| t.timestamp() as f64));
}

/// A state write was refused: the mailbox's lease is no longer ours.
pub fn fenced_write(mailbox: &str) {
    if let Some(m) = get() {
        m.fenced_writes.with_label_values(&[label(mailbox)]).inc();
    }
}

/// Leases held now, and `n` leases `event` (`claimed`, `lost`, `released`).
pub fn leases(held: usize, event: &str, n: usize) {
    if let Some(m) = get() {
        m.leases_held
            .with_label_values::<&str>(&[])
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        if n > 0 {
            m.lease_events
                .with_label_values(&[event])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }
}

/// This replica no longer polls `mailbox` (its lease went to a peer): drop its gauges here, so
/// that only the owner reports the mailbox's current state. Counters stay (they only grow).
pub fn forget_mailbox(mailbox: &str, sinks: &[String]) {
    let Some(m) = get() else { return };
    let _ = m.on_server.remove_label_values(&[mailbox]);
    let _ = m.last_success.remove_label_values(&[mailbox]);
    let _ = m.cert_expiry.remove_label_values(&[mailbox]);
    let _ = m.backoff.remove_label_values(&[mailbox]);
    for sink in sinks {
        let _ = m.pending.remove_label_values(&[mailbox, sink]);
        let _ = m.dead_letters.remove_label_values(&[mailbox, sink]);
    }
}

/// A message whose RETR kept breaking the connection became a dead letter.
pub fn retrieval_dead_lettered(mailbox: &str) {
    if let Some(m) = get() {
        m.retrieval_dead.with_label_values(&[label(mailbox)]).inc();
    }
}

/// The POP3 server served a down-converted substitute instead of a message (RFC 6856 `UTF8`
/// not in effect).
pub fn pop3_downconverted(mailbox: &str) {
    if let Some(m) = get() {
        m.downconverted.with_label_values(&[label(mailbox)]).inc();
    }
}

/// The process-wide metrics. `None` only if registration failed, which is a bug in this module
/// (caught by its tests); the service then runs without metrics rather than not at all.
pub fn get() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "Cannot register metrics");
                None
            }
        })
        .as_ref()
}

/// One delivery to one sink ended (with its in-poll retries).
pub fn delivery(mailbox: &str, sink: &str, outcome: Outcome, took: Duration) {
    if let Some(m) = get() {
        m.deliveries
            .with_label_values(&[label(mailbox), sink, outcome.as_str()])
            .inc();
        m.delivery_duration
            .with_label_values(&[sink])
            .observe(took.as_secs_f64());
    }
}

/// A poll ended.
pub fn poll_finished(report: &PollFinished<'_>) {
    let Some(m) = get() else { return };
    let mb = label(report.mailbox);
    m.poll_duration
        .with_label_values(&[mb])
        .observe(report.took.as_secs_f64());
    m.messages_fetched
        .with_label_values(&[mb])
        .inc_by(report.fetched as u64);
    m.bytes_fetched
        .with_label_values(&[mb])
        .inc_by(report.bytes);
    m.uidl_reused
        .with_label_values(&[mb])
        .inc_by(report.uidl_reused as u64);
    if report.ended_without_quit {
        m.without_quit.with_label_values(&[mb]).inc();
    }
    match report.error {
        Some(kind) => m.poll_errors.with_label_values(&[mb, kind]).inc(),
        None => {
            let listed = i64::try_from(report.listed).unwrap_or(i64::MAX);
            set_summed(&m.on_server, "on_server", report.mailbox, None, listed);
            let now = chrono::Utc::now().timestamp_millis();
            set_worst(
                &m.last_success,
                "last_success",
                report.mailbox,
                Worst::Lowest,
                now,
            );
        }
    }
}

/// Pending and dead-lettered deliveries per (mailbox, sink), as the store counts them.
pub fn delivery_backlog(mailbox: &str, sink: &str, pending: u64, dead: u64) {
    if let Some(m) = get() {
        let (pending, dead) = (
            i64::try_from(pending).unwrap_or(i64::MAX),
            i64::try_from(dead).unwrap_or(i64::MAX),
        );
        set_summed(&m.pending, "pending", mailbox, Some(sink), pending);
        set_summed(&m.dead_letters, "dead", mailbox, Some(sink), dead);
    }
}

/// The POP3 server's certificate expiry, seen at the TLS handshake.
pub fn certificate_expiry(mailbox: &str, not_after_unix: i64) {
    if let Some(m) = get() {
        let milli = not_after_unix.saturating_mul(1000);
        set_worst(&m.cert_expiry, "cert_expiry", mailbox, Worst::Lowest, milli);
    }
}

/// The scheduler backs off (or stops backing off, with zero) after auth/TLS failures.
pub fn poll_backoff(mailbox: &str, wait: Duration) {
    if let Some(m) = get() {
        let milli = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        set_worst(&m.backoff, "backoff", mailbox, Worst::Highest, milli);
    }
}

/// A poll panicked.
pub fn poll_panicked(mailbox: &str) {
    if let Some(m) = get() {
        m.panics.with_label_values(&[label(mailbox)]).inc();
    }
}

/// One OAuth2 token request finished with `result`.
pub fn oauth2_refresh(credential: &str, result: &str) {
    if let Some(m) = get() {
        m.oauth2_refreshes
            .with_label_values(&[credential, result])
            .inc();
    }
}

/// A credential's new access token expires at `unix` seconds.
pub fn oauth2_token_expiry(credential: &str, unix: u64) {
    if let Some(m) = get() {
        m.oauth2_expiry
            .with_label_values(&[credential])
            .set(unix as f64);
    }
}

/// Whether a credential needs a new login.
pub fn oauth2_relogin_needed(credential: &str, needed: bool) {
    if let Some(m) = get() {
        m.oauth2_relogin
            .with_label_values(&[credential])
            .set(i64::from(needed));
    }
}

/// One SASL exchange ended.
pub fn sasl_login(mechanism: &str, ok: bool) {
    if let Some(m) = get() {
        m.sasl_logins
            .with_label_values(&[mechanism, if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// The text exposition format, for `/metrics`.
pub fn render() -> String {
    let Some(m) = get() else { return String::new() };
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "Cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_gauges_sum_or_keep_the_worst_mailbox() {
        let mut r = Rollup::default();
        assert_eq!(r.delta("pending", "a", "s", 3), 3);
        assert_eq!(r.delta("pending", "b", "s", 2), 2);
        assert_eq!(r.delta("pending", "a", "s", 1), -2, "a's 3 became 1");
        assert_eq!(r.extreme("last", "a", Some(10)), Some((10, 10)));
        assert_eq!(r.extreme("last", "b", Some(5)), Some((5, 10)));
        assert_eq!(
            r.extreme("last", "b", Some(20)),
            Some((10, 20)),
            "b's 5 is gone"
        );
        assert_eq!(r.extreme("last", "a", None), Some((20, 20)));
    }

    #[test]
    fn metrics_register_and_render_with_their_documented_names() {
        // Bounded (the default): one series for every mailbox; gauges summed or the worst.
        configure(false);
        delivery_backlog("m1", "archive", 2, 0);
        delivery_backlog("m2", "archive", 3, 0);
        certificate_expiry("m1", 2_000);
        certificate_expiry("m2", 1_000);
        let text = render();
        for name in [
            "popbridge_pending_deliveries{mailbox=\"_all\",sink=\"archive\"} 5",
            "popbridge_tls_certificate_expiry_timestamp_seconds{mailbox=\"_all\"} 1000",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            !text.contains("m1"),
            "no per-mailbox series by default:\n{text}"
        );

        configure(true);
        delivery(
            "alice",
            "archive",
            Outcome::Delivered,
            Duration::from_millis(3),
        );
        poll_finished(&PollFinished {
            mailbox: "alice",
            listed: 4,
            fetched: 2,
            bytes: 10,
            took: Duration::from_millis(20),
            ..Default::default()
        });
        delivery_backlog("alice", "archive", 1, 2);
        poll_backoff("alice", Duration::from_secs(120));
        poll_panicked("alice");
        fenced_write("alice");
        leases(3, "claimed", 3);
        sink_paused(
            "alice",
            "gmail",
            chrono::DateTime::from_timestamp(1_764_662_400, 0),
        );
        server_download(
            "pop.example.com",
            2048,
            chrono::DateTime::from_timestamp(1_764_662_400, 0),
        );
        let text = render();
        for name in [
            "popbridge_build_info",
            "popbridge_server_downloaded_bytes_today{server=\"pop.example.com\"} 2048",
            "popbridge_server_download_paused_until_timestamp_seconds{server=\"pop.example.com\"} 1764662400",
            "popbridge_deliveries_total{mailbox=\"alice\",outcome=\"delivered\",sink=\"archive\"} 1",
            "popbridge_messages_fetched_total{mailbox=\"alice\"} 2",
            "popbridge_fetched_bytes_total{mailbox=\"alice\"} 10",
            "popbridge_messages_on_server{mailbox=\"alice\"} 4",
            "popbridge_pending_deliveries{mailbox=\"alice\",sink=\"archive\"} 1",
            "popbridge_dead_letters{mailbox=\"alice\",sink=\"archive\"} 2",
            "popbridge_poll_duration_seconds_bucket",
            "popbridge_delivery_duration_seconds_bucket",
            "popbridge_last_successful_poll_timestamp_seconds{mailbox=\"alice\"}",
            "popbridge_poll_backoff_seconds{mailbox=\"alice\"} 120",
            "popbridge_fenced_writes_total{mailbox=\"alice\"} 1",
            "popbridge_leases_held 3",
            "popbridge_lease_events_total{event=\"claimed\"} 3",
            "popbridge_poll_panics_total{mailbox=\"alice\"} 1",
            "popbridge_sink_paused_until_timestamp_seconds{mailbox=\"alice\",sink=\"gmail\"} 1764662400",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        configure(false);
    }
}
