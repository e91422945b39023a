//! Delivering one spooled message to the sinks that still need it, with the in-poll retries.
//!
//! Retry classification belongs to each sink (`DeliveryError::Retryable` vs `Permanent`); the
//! loop here only decides when to try again and when to give up.

use crate::config::RetryPolicy;
use crate::key::IdempotencyKey;
use crate::metrics;
use crate::sink::{DeliveryError, Sink, SpooledMessage};
use crate::store::{Millis, Outcome, OutcomeResult};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A configured sink with its retry policy.
#[derive(Clone)]
pub struct SinkHandle {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub retry: RetryPolicy,
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
    let mut attempts = 0u32;
    let result = loop {
        attempts += 1;
        let (text, retry_after) = match handle.sink.deliver(message, key).await {
            Ok(receipt) => break OutcomeResult::Delivered(receipt),
            Err(DeliveryError::Permanent { message }) => {
                break OutcomeResult::Dead { error: message }
            }
            Err(DeliveryError::Retryable {
                message,
                retry_after,
            }) => (message, retry_after),
            // The sink's fault, not the message's: never dead-lettered on sight.
            Err(DeliveryError::SinkDown { message }) => (message, None),
        };
        let now = crate::store::now_millis();
        let delay = backoff(policy, attempts, retry_after);
        if now.saturating_sub(first) >= millis(policy.window) {
            break OutcomeResult::Dead {
                error: format!(
                    "gave up after the retry window of {}s: {text}",
                    policy.window.as_secs()
                ),
            };
        }
        if attempts >= policy.attempts_per_poll || shutdown.is_cancelled() {
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
        at: crate::store::now_millis(),
        result,
    }
}

#[cfg(test)]
mod tests;
