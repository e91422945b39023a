//! Delivering one spooled message to the sinks that still need it, with the in-poll retries.
//!
//! Retry classification belongs to each sink (`DeliveryError::Retryable` vs `Permanent`); the
//! loop here only decides when to try again and when to give up.

use crate::config::RetryPolicy;
use crate::key::IdempotencyKey;
use crate::metrics;
use crate::sink::{DeliveryError, Sink, SpooledMessage};
use crate::store::{Millis, Outcome, OutcomeResult};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A configured sink with its retry policy.
#[derive(Clone)]
pub struct SinkHandle {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub retry: RetryPolicy,
    /// Shared by every mailbox that uses the sink.
    pub circuit: Arc<Circuit>,
}

impl SinkHandle {
    pub fn new(name: impl Into<String>, sink: Arc<dyn Sink>, retry: RetryPolicy) -> Self {
        Self {
            name: name.into(),
            sink,
            retry,
            circuit: Arc::default(),
        }
    }
}

/// The longest pause between two tries within one poll; a sink asking for more (`Retry-After`,
/// a long backoff) is tried again in a later poll, not while the POP3 session waits.
const MAX_IN_POLL_WAIT: Duration = Duration::from_secs(10);

/// Consecutive transport failures (no answer, 5xx…) after which a sink counts as down.
const TRIP_AFTER: u32 = 5;
/// How long a sink stays down after its first trip; doubled per further trip.
const COOLDOWN_MS: i64 = 30_000;
const MAX_COOLDOWN_MS: i64 = 15 * 60_000;

/// A circuit breaker per sink. A sink-wide answer (wrong credentials, a missing bucket or
/// endpoint), or a run of transport failures, opens it: until the cool-down ends no delivery
/// is attempted and no message is fetched only for that sink, so a poll neither spends its
/// retries nor downloads the mailbox again for a sink that cannot take anything. Messages
/// wait as pending, never dead-lettered for the sink's fault. After the cool-down one
/// delivery goes through (half-open): success closes the circuit, another failure doubles
/// the cool-down.
#[derive(Debug, Default)]
pub struct Circuit {
    open_until: AtomicI64,
    failures: AtomicU32,
    trips: AtomicU32,
    last_error: Mutex<String>,
}

impl Circuit {
    /// When the circuit closes again, if it is open at `now`.
    pub fn open_until(&self, now: Millis) -> Option<Millis> {
        let t = self.open_until.load(Ordering::Relaxed);
        (t > now).then_some(t)
    }

    /// Why it opened.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.trips.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
    }

    /// A message-specific refusal: the sink answered, so it is up.
    fn answered(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Returns the time until which the circuit is now open, if this failure opened it.
    fn failure(&self, sink_wide: bool, error: &str, now: Millis) -> Option<Millis> {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !sink_wide && n < TRIP_AFTER {
            return None;
        }
        let trips = self.trips.fetch_add(1, Ordering::Relaxed).min(10);
        let cooldown = COOLDOWN_MS.saturating_mul(1 << trips).min(MAX_COOLDOWN_MS);
        let until = now.saturating_add(cooldown);
        self.open_until.fetch_max(until, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = error.to_string();
        }
        Some(until)
    }
}

/// Backoff before attempt `n + 1` after `n` failures: exponential from `initial_backoff`, capped
/// at `max_backoff`, with "equal jitter" (half fixed, half random) so retries of many messages
/// do not arrive together. A server's `Retry-After` wins, within the cap.
pub fn backoff(policy: &RetryPolicy, failures: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(policy.max_backoff);
    }
    let exp = failures.saturating_sub(1).min(30);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let half = base / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Deliver to one sink: retry retryable failures up to `attempts_per_poll` times, then leave it
/// pending for a later poll, or dead-letter it once `window` has passed since the first failure.
pub async fn deliver_to_sink(
    handle: &SinkHandle,
    message: &SpooledMessage,
    key: &IdempotencyKey,
    first_attempt_at: Option<Millis>,
    shutdown: &CancellationToken,
) -> Outcome {
    let policy = &handle.retry;
    let clock = std::time::Instant::now();
    let started = crate::store::now_millis();
    let first = first_attempt_at.unwrap_or(started);
    if handle.circuit.open_until(started).is_some() {
        // The sink is down for everyone: do not knock, keep the message pending. The circuit
        // lives in this process only: the stored retry time stays "now", so a fresh run
        // (`once` after the operator fixed the sink) tries at once.
        return Outcome {
            mailbox: message.mailbox.clone(),
            uidl: message.uidl.clone(),
            sink: handle.name.clone(),
            attempts_made: 0,
            at: started,
            result: OutcomeResult::Retry {
                error: format!(
                    "sink is down, not tried until its circuit closes: {}",
                    handle.circuit.last_error()
                ),
                next_attempt_at: started,
            },
        };
    }
    let mut attempts = 0u32;
    // A pause is recorded as of its end, so a message whose first failure is the pause gets
    // its whole retry window after it (the store keeps the time of the first failure).
    let mut recorded_at = None;
    let result = loop {
        if !message.owner.is_current() {
            // Paused past the lease: the new owner delivers it; not a failure of the sink.
            break OutcomeResult::Retry {
                error: crate::sink::Ownership::lost().to_string(),
                next_attempt_at: crate::store::now_millis(),
            };
        }
        attempts += 1;
        let (text, retry_after) = match handle.sink.deliver(message, key).await {
            Ok(receipt) => {
                handle.circuit.success();
                break OutcomeResult::Delivered(receipt);
            }
            Err(DeliveryError::Permanent { message }) => {
                handle.circuit.answered();
                break OutcomeResult::Dead { error: message };
            }
            Err(DeliveryError::SinkDown { message: text }) => {
                // Not this message's fault: no retry now, and never a dead letter for it.
                let now = crate::store::now_millis();
                let until = handle.circuit.failure(true, &text, now).unwrap_or(now);
                tracing::warn!(sink = %handle.name, error = %text, until_ms = until,
                    "Sink refuses every message (configuration or credentials?); pausing deliveries to it");
                break OutcomeResult::Retry {
                    error: text,
                    next_attempt_at: now.saturating_add(millis(backoff(policy, attempts, None))),
                };
            }
            Err(DeliveryError::Paused {
                message: text,
                until,
            }) => {
                // One target of the sink is closed until a known time (a daily quota): the
                // message waits for it, never dead-lettered for the pause itself, and the
                // sink's other targets are not held back (no circuit).
                handle.circuit.answered();
                let at = until.timestamp_millis();
                recorded_at = Some(at);
                tracing::warn!(mailbox = %message.mailbox, sink = %handle.name, key = %key,
                    error = %text, until = %until.to_rfc3339(),
                    "Sink target paused; the message waits on the server until then");
                break OutcomeResult::Retry {
                    error: text,
                    next_attempt_at: at,
                };
            }
            Err(DeliveryError::Retryable {
                message,
                retry_after,
            }) => (message, retry_after),
        };
        let now = crate::store::now_millis();
        if !message.owner.is_current() {
            // Refused (or failed) because the mailbox changed owner meanwhile: not the sink's
            // fault, so no circuit; the new owner delivers it.
            break OutcomeResult::Retry {
                error: format!("{}; last error: {text}", crate::sink::Ownership::lost()),
                next_attempt_at: now,
            };
        }
        let delay = backoff(policy, attempts, retry_after);
        if now.saturating_sub(first) >= millis(policy.window) {
            break OutcomeResult::Dead {
                error: format!(
                    "gave up after the retry window of {}s: {text}",
                    policy.window.as_secs()
                ),
            };
        }
        if let Some(until) = handle.circuit.failure(false, &text, now) {
            tracing::warn!(sink = %handle.name, error = %text, until_ms = until,
                "Sink failing for every message in a row; pausing deliveries to it");
            break OutcomeResult::Retry {
                error: text,
                next_attempt_at: now.saturating_add(millis(delay)),
            };
        }
        // A long wait is not spent holding the POP3 session open: later polls take over.
        if attempts >= policy.attempts_per_poll
            || delay > MAX_IN_POLL_WAIT
            || shutdown.is_cancelled()
        {
            break OutcomeResult::Retry {
                error: text,
                next_attempt_at: now.saturating_add(millis(delay)),
            };
        }
        tracing::debug!(
            mailbox = %message.mailbox, sink = %handle.name, key = %key,
            attempt = attempts, delay_ms = millis(delay), error = %text,
            "Delivery failed, retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {
                break OutcomeResult::Retry { error: text, next_attempt_at: now };
            }
        }
    };
    let kind = match &result {
        OutcomeResult::Delivered(r) if r.stub.is_some() => metrics::Outcome::Stubbed,
        OutcomeResult::Delivered(r) if r.duplicate => metrics::Outcome::Duplicate,
        OutcomeResult::Delivered(_) => metrics::Outcome::Delivered,
        OutcomeResult::Retry { .. } => metrics::Outcome::Retried,
        OutcomeResult::Dead { .. } => metrics::Outcome::DeadLettered,
    };
    metrics::delivery(&message.mailbox, &handle.name, kind, clock.elapsed());
    Outcome {
        mailbox: message.mailbox.clone(),
        uidl: message.uidl.clone(),
        sink: handle.name.clone(),
        attempts_made: attempts,
        at: recorded_at.unwrap_or_else(crate::store::now_millis),
        result,
    }
}

#[cfg(test)]
mod tests;
