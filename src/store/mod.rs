//! Delivery state: what each mailbox listed, what each sink has acknowledged.
//!
//! Callers see only the [`Store`] trait; SQLite (WAL) is the embedded backend and a PostgreSQL
//! backend for several replicas can implement the same trait without changing them.

#[cfg(test)]
mod contract;
mod sqlite;

pub use sqlite::SqliteStore;

use crate::sink::Receipt;
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;

/// Unix time in milliseconds, the unit of every timestamp in the store.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot prepare state directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state database error: {0}")]
    Query(#[from] sqlx::Error),
    /// A grouped write failed; every writer in the group gets the same text.
    #[error("state database write failed: {0}")]
    Batch(String),
    #[error("state database holds an unreadable receipt: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Where one sink stands with one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeliveryState {
    Pending {
        attempts: u32,
        first_attempt_at: Option<Millis>,
        next_attempt_at: Option<Millis>,
        last_error: Option<String>,
    },
    Delivered {
        at: Millis,
        receipt: Receipt,
    },
    Dead {
        attempts: u32,
        error: String,
    },
    /// A dead letter an operator dropped with `dlq drop`.
    Dropped {
        error: String,
    },
}

/// A message the store knows, with its deliveries by sink name.
#[derive(Clone, Debug, Serialize)]
pub struct KnownMessage {
    pub uidl: String,
    pub idem_key: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub first_seen_at: Millis,
    pub on_server: bool,
    pub deleted_at: Option<Millis>,
    pub replaced_by: Option<String>,
    pub deliveries: HashMap<String, DeliveryState>,
}

/// A fetched message about to be delivered: "record the attempt".
#[derive(Clone, Debug)]
pub struct FetchRecord<'a> {
    pub mailbox: &'a str,
    pub uidl: &'a str,
    pub idem_key: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub fetched_at: Millis,
    /// Sinks that must end up with a delivery row (pending unless one exists).
    pub sinks: &'a [String],
}

/// The result of delivering one message to one sink, to be recorded.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub mailbox: String,
    pub uidl: String,
    pub sink: String,
    pub attempts_made: u32,
    pub at: Millis,
    pub result: OutcomeResult,
}

#[derive(Clone, Debug)]
pub enum OutcomeResult {
    Delivered(Receipt),
    /// Try again in a later poll, not before `next_attempt_at`.
    Retry {
        error: String,
        next_attempt_at: Millis,
    },
    Dead {
        error: String,
    },
}

/// One dead-lettered delivery, for `dlq list` and the summary.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    pub mailbox: String,
    pub uidl: String,
    pub idem_key: String,
    pub sink: String,
    pub attempts: u32,
    pub error: String,
    pub last_attempt_at: Option<Millis>,
}

/// Counts per mailbox, for `state show` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MailboxCounts {
    pub mailbox: String,
    pub messages: u64,
    pub on_server: u64,
    pub deleted: u64,
    pub delivered: u64,
    pub pending: u64,
    pub dead: u64,
}

/// Deliveries of one mailbox to one sink that are not done, for metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Backlog {
    pub sink: String,
    pub pending: u64,
    pub dead: u64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Everything known about a mailbox's messages, by UIDL.
    async fn load_mailbox(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, KnownMessage>, StoreError>;

    /// Record what changed in the listing: known UIDLs listed again (`back`) and known ones no
    /// longer listed (`gone`). Only the changes, so an idle poll of a big mailbox writes nothing.
    async fn record_presence(
        &self,
        mailbox: &str,
        back: &[String],
        gone: &[String],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Record that a message was fetched and is about to be delivered to `sinks`.
    async fn record_fetched(&self, record: &FetchRecord<'_>) -> Result<(), StoreError>;

    /// Record delivery outcomes, all in one transaction.
    async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), StoreError>;

    /// Record that the server confirmed (QUIT +OK) the removal of these messages.
    async fn record_deleted(
        &self,
        mailbox: &str,
        uidls: &[String],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// A message no longer listed, never deleted by us, with this exact content: the same message
    /// re-listed under a new UIDL.
    async fn find_vanished_by_content(
        &self,
        mailbox: &str,
        sha256: &str,
        size: u64,
    ) -> Result<Option<KnownMessage>, StoreError>;

    /// Let `new_uidl` take over `old`'s key and deliveries (content matched).
    async fn adopt(
        &self,
        mailbox: &str,
        old_uidl: &str,
        new_uidl: &str,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Make every recorded receipt durable on disk (called before any DELE).
    async fn sync(&self) -> Result<(), StoreError>;

    async fn dead_letters(&self, mailbox: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;

    /// Put dead letters back to pending so the next poll tries them again. Returns how many.
    async fn retry_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// Drop dead letters: given up for good, no longer listed or retried. The message is still
    /// never deleted from the server, since a sink lacks it. Returns how many.
    async fn drop_dead(
        &self,
        mailbox: &str,
        uidl: Option<&str>,
        sink: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// Forget a message (or a whole mailbox) so it is delivered again on purpose. Returns how many.
    async fn forget(&self, mailbox: &str, uidl: Option<&str>) -> Result<u64, StoreError>;

    async fn counts(&self) -> Result<Vec<MailboxCounts>, StoreError>;

    /// Pending and dead deliveries of a mailbox, by sink.
    async fn backlog(&self, mailbox: &str) -> Result<Vec<Backlog>, StoreError>;

    /// Cheap liveness query for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
