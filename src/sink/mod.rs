//! Sinks: where a fetched message goes. One trait, keyed by the idempotency key.
//!
//! Every sink lives in its own directory with the same file roles: `config.rs` (serde raw
//! config and validation), `sink.rs` (the [`Sink`] impl), `tests.rs`, and where it has one,
//! `encoder.rs`/`payload.rs` and `service.rs` (transport).

pub mod gmail;
pub mod http;
pub mod imap;
pub mod maildir;
pub mod offload;
pub mod s3;
pub mod webhook;

use crate::key::IdempotencyKey;
pub use crate::receipt::{Receipt, StubbedOriginal};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;

/// One message as fetched from POP3, waiting in a spool file.
///
/// The bytes are exactly what the server sent after dot-unstuffing (CRLF line endings as on the
/// wire). Sinks stream from `path`; none may assume the message fits in memory.
#[derive(Clone, Debug)]
pub struct SpooledMessage {
    /// The config name of the mailbox it came from.
    pub mailbox: String,
    /// The POP3 UIDL (or the synthetic one used when the server has no UIDL, see ARCHITECTURE.md).
    pub uidl: String,
    /// Spool file holding the raw message.
    pub path: PathBuf,
    /// Size in bytes of the spool file.
    pub size: u64,
    /// Lower-case hex SHA-256 of the spool file.
    pub sha256: String,
    pub fetched_at: DateTime<Utc>,
    /// The state already knew this message (an earlier attempt may have reached a sink without
    /// being recorded): a sink that cannot deduplicate by key looks for a copy first.
    pub seen_before: bool,
    /// Per-delivery parameters a routing rule chose for this sink (`folder`, `subfolder`,
    /// `prefix`, `path`, `header.<Name>`; see `route::config::supported_params`). Empty without
    /// rules. A sink reads only its own keys; validation made sure no other reaches it.
    pub params: std::collections::BTreeMap<String, String>,
    /// Whether this process still owns the message's mailbox. Checked right before the bytes
    /// go out wherever a delivery may have waited (a retry, a queue, a permit).
    pub owner: Ownership,
}

/// Whether this process still owns a mailbox: on PostgreSQL, its lease is held and before the
/// local deadline; otherwise always. State writes are fenced by the lease, a sink's write
/// cannot be: a replica that was paused (SIGSTOP, a frozen VM) past its lease wakes up with
/// deliveries in flight while the new owner, finding no copy yet, sends the same messages. So
/// the engine checks before each attempt and a sink that queues (IMAP windows, permits) checks
/// again before sending. What is left is a pause between that check and the write itself.
#[derive(Clone, Default)]
pub struct Ownership(Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>);

impl Ownership {
    /// Owned while `still` says so.
    pub fn new(still: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(still)))
    }

    pub fn is_current(&self) -> bool {
        self.0.as_ref().is_none_or(|still| still())
    }

    /// The retryable error of a delivery not sent because the mailbox changed owner.
    pub fn lost() -> DeliveryError {
        DeliveryError::retryable(
            "not sent: this replica no longer holds the mailbox's lease (the new owner delivers it)",
        )
    }
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ownership(lease)"
        } else {
            "Ownership(always)"
        })
    }
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another try later (5xx, timeout, connection refused, disk full).
    #[error("{message}")]
    Retryable {
        message: String,
        /// The sink was told when to come back (HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Trying again will fail the same way (4xx, a rejected message): dead-letter it.
    #[error("{message}")]
    Permanent { message: String },
    /// The sink as a whole refuses (bad credentials, no permission, missing bucket or
    /// endpoint): every message would fail the same way until an operator acts, so it is not
    /// this message's fault and must not dead-letter it.
    #[error("{message}")]
    SinkDown { message: String },
    /// The sink refuses this message's target (one account of several) until a known time,
    /// e.g. a used-up daily API quota: the message waits until then, neither dead-lettered
    /// nor counted against the sink as a whole.
    #[error("{message}")]
    Paused {
        message: String,
        until: chrono::DateTime<Utc>,
    },
}

impl DeliveryError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    pub fn sink_down(message: impl Into<String>) -> Self {
        Self::SinkDown {
            message: message.into(),
        }
    }

    /// The message may still go through later: a passing failure, or a sink that is down.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Retryable { .. } | Self::SinkDown { .. } | Self::Paused { .. }
        )
    }

    /// The failure is the sink's, not this message's: the same answer awaits every message.
    pub fn is_sink_wide(&self) -> bool {
        matches!(self, Self::SinkDown { .. })
    }
}

/// A destination for messages.
///
/// `deliver` must be idempotent under `key`: delivering the same key twice must leave one copy
/// (or let the receiver see the same key twice, for webhooks). It returns only once the message
/// is durable at the sink.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The sink's config name (a metric label and a state column).
    fn name(&self) -> &str;

    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError>;

    /// Cheap check that the sink can accept messages now (`/readyz`, `check --connect`).
    async fn healthcheck(&self) -> Result<(), DeliveryError>;

    /// End of the run: close connections politely (IMAP LOGOUT). Nothing is lost without it.
    async fn close(&self) {}

    /// The sink refuses `mailbox`'s target until this time (a used-up daily quota of one
    /// account): its messages are not fetched for this sink before then. Default: never.
    fn paused_until(&self, _mailbox: &str) -> Option<SinkPause> {
        None
    }

    /// A sink with a daily budget (IMAP `daily_upload_limit`): since when it counts today's
    /// uploads. `None` (the default): no budget.
    fn daily_usage_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }

    /// Bytes the state says were delivered to this sink since [`Sink::daily_usage_since`], by
    /// mailbox: uploads of earlier processes today count against the budget.
    fn seed_daily_usage(&self, _by_mailbox: &std::collections::HashMap<String, u64>) {}

    /// The daily budget of `mailbox`'s target and what is left of it today, so the progress
    /// display can say how many days the remaining bytes need. Default: no budget.
    fn daily_budget(&self, _mailbox: &str) -> Option<DailyBudget> {
        None
    }
}

/// A target's daily byte budget as it stands now (IMAP `daily_upload_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyBudget {
    /// Bytes per day.
    pub limit: u64,
    /// Bytes still allowed today.
    pub left_today: u64,
    /// When the next day's budget starts.
    pub resets_at: DateTime<Utc>,
}

/// A target of a sink that refuses deliveries until a known time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkPause {
    pub until: DateTime<Utc>,
    /// Why, for people: "the Gmail API daily quota of alice@example.com is used up".
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_wide_errors_are_retryable_and_say_so() {
        let down = DeliveryError::sink_down("HTTP 401");
        assert!(down.is_sink_wide() && down.is_retryable());
        assert_eq!(down.to_string(), "HTTP 401");
        let passing = DeliveryError::retryable("HTTP 503");
        assert!(passing.is_retryable() && !passing.is_sink_wide());
        let bad = DeliveryError::permanent("HTTP 413");
        assert!(!bad.is_retryable() && !bad.is_sink_wide());
    }
}
