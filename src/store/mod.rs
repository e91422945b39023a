//! Delivery state: what each mailbox listed, what each sink has acknowledged.
//!
//! Callers see only the [`Store`] trait; SQLite (WAL) is the embedded backend, PostgreSQL the
//! backend for several replicas, where each mailbox's writes are fenced by its lease.

pub mod config;
#[cfg(test)]
mod contract;
pub mod copy;
pub mod lease;
pub mod lock;
pub mod postgres;
mod rows;
mod sqlite;

pub use lease::{Fence, LeaseSlot};
pub use lock::PollLock;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::receipt::Receipt;
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;

/// The store the config names, unbound (no lease): for `dlq` and `state` commands.
pub async fn open(state: &config::StateConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match &state.backend {
        config::StateBackend::Sqlite => std::sync::Arc::new(SqliteStore::open(&state.path).await?),
        config::StateBackend::Postgres(pg) => {
            std::sync::Arc::new(PgStore::open(&postgres::PgSettings::from_config(pg)?).await?)
        }
    })
}

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
    /// The mailbox's lease is no longer ours (taken over, expired): nothing was written.
    #[error("mailbox {mailbox}: its lease is no longer ours; nothing was written (another replica polls it now)")]
    Fenced { mailbox: String },
    /// A database call did not answer in time (sqlx has no TCP keepalive).
    #[error("state database did not answer within {0:?}: {1}")]
    Timeout(std::time::Duration, &'static str),
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
    /// The size LIST gave when the row was last confirmed (`None` before schema 2).
    pub list_size: Option<u64>,
    /// [`crate::content::Fingerprint`] of the message (`None` before schema 2).
    pub fingerprint: Option<String>,
    /// The routing decision recorded when the message was first fetched (`None` for a
    /// mailbox without rules, or a row from before schema 3): its sinks replace the
    /// mailbox's, so a retry routes the same way whatever the config says by then.
    pub route: Option<crate::route::Route>,
    pub deliveries: HashMap<String, DeliveryState>,
}

impl KnownMessage {
    /// History, not identity: we deleted it, or another UIDL took it over. A UIDL listed again
    /// after this is a new message.
    /// The sinks this message must reach: those of its recorded route, else `mailbox_sinks`.
    pub fn sinks_or<'a>(&'a self, mailbox_sinks: &'a [String]) -> std::borrow::Cow<'a, [String]> {
        match &self.route {
            Some(r) => std::borrow::Cow::Owned(r.sinks()),
            None => std::borrow::Cow::Borrowed(mailbox_sinks),
        }
    }

    pub fn is_history(&self) -> bool {
        self.deleted_at.is_some() || self.replaced_by.is_some()
    }

    /// False for a row whose content was never seen here (`state import`, `state baseline`).
    pub fn content_known(&self) -> bool {
        self.fingerprint.as_deref().is_some_and(|f| !f.is_empty())
            || self.sha256.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// True when `fingerprint`/`sha256` say a fetched message is this one.
    pub fn same_content(&self, sha256: &str, fingerprint: &str) -> bool {
        match &self.fingerprint {
            Some(f) => f == fingerprint,
            None => self.sha256.as_deref() == Some(sha256),
        }
    }
}

/// A listed message that every configured sink holds: all an idle poll needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The size LIST gave when the row was last confirmed (or the fetched size, before schema 2).
    pub list_size: Option<u64>,
    /// When the last of the sinks took it (for `delete: after N days`).
    pub last_delivery: Millis,
}

/// The messages of a mailbox on the server at the last listing, split so that an idle poll of
/// a big mailbox loads one compact row per message.
#[derive(Clone, Debug, Default)]
pub struct ListedState {
    /// Every one of the poll's sinks holds these.
    pub settled: HashMap<String, Settled>,
    /// The rest, whole (with their deliveries).
    pub open: HashMap<String, KnownMessage>,
}

impl ListedState {
    /// Splits whole rows by whether every sink of `sinks` holds them.
    pub fn split(all: HashMap<String, KnownMessage>, sinks: &[String]) -> Self {
        let mut out = Self::default();
        for (uidl, m) in all {
            match settled(&m, sinks) {
                Some(s) => {
                    out.settled.insert(uidl, s);
                }
                None => {
                    out.open.insert(uidl, m);
                }
            }
        }
        out
    }

    /// Sorts one narrow row of a backend's `load_listed` query: settled when all `sinks`
    /// hold the message and it has no recorded route (a route may name other sinks);
    /// otherwise its UIDL goes to `open`, to be loaded whole.
    pub(crate) fn sort_row(&mut self, open: &mut Vec<String>, row: NarrowRow, sinks: usize) {
        if usize::try_from(row.held).ok() == Some(sinks) && !row.routed {
            self.settled.insert(
                row.uidl,
                Settled {
                    list_size: row.list_size.and_then(|s| u64::try_from(s).ok()),
                    last_delivery: row.last_delivery.unwrap_or(0),
                },
            );
        } else {
            open.push(row.uidl);
        }
    }

    pub fn len(&self) -> usize {
        self.settled.len() + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, uidl: &str) -> bool {
        self.settled.contains_key(uidl) || self.open.contains_key(uidl)
    }
}

/// One row of a backend's narrow `load_listed` query.
pub(crate) struct NarrowRow {
    pub uidl: String,
    pub list_size: Option<i64>,
    /// How many of the asked-for sinks hold the message.
    pub held: i64,
    pub last_delivery: Option<i64>,
    pub routed: bool,
}

/// `Some` when every sink of `sinks` (at least one) holds `m` and it has no recorded route.
fn settled(m: &KnownMessage, sinks: &[String]) -> Option<Settled> {
    // A routed message is held when its route's sinks hold it, which may be others.
    if m.route.is_some() {
        return None;
    }
    let mut last = None;
    for sink in sinks {
        match m.deliveries.get(sink) {
            Some(DeliveryState::Delivered { at, .. }) => last = Some(last.unwrap_or(0).max(*at)),
            _ => return None,
        }
    }
    Some(Settled {
        list_size: m.list_size.or(m.size),
        last_delivery: last?,
    })
}

/// A message whose RETR broke the connection, by UIDL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetrievalFailure {
    pub failures: u32,
    pub last_error: String,
    /// Skipped by polls: a dead letter until `dlq retry`.
    pub dead: bool,
    /// Skipped by polls for good: an operator gave up on it (`dlq drop`).
    pub dropped: bool,
}

/// The pseudo-sink under which a message that cannot be retrieved is dead-lettered.
pub const RETRIEVAL: &str = "(retrieval)";

/// A fetched message about to be delivered: "record the attempt".
#[derive(Clone, Debug)]
pub struct FetchRecord<'a> {
    pub mailbox: &'a str,
    pub uidl: &'a str,
    pub idem_key: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub fingerprint: &'a str,
    /// The size the server's LIST gave.
    pub list_size: u64,
    pub fetched_at: Millis,
    /// Sinks that must end up with a delivery row (pending unless one exists).
    pub sinks: &'a [String],
    /// Another message held this UIDL before: move its row to history first. (A deleted or
    /// replaced row at this UIDL is moved to history in any case.)
    pub retire: bool,
    /// The routing decision to record; a decision already recorded for the row is kept.
    pub route: Option<&'a crate::route::Route>,
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
    /// The messages of a mailbox that were on the server at the last listing, by UIDL. History
    /// (deleted, gone, replaced) is not loaded: a poll costs the listing, not the past.
    async fn load_mailbox(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, KnownMessage>, StoreError>;

    /// [`Store::load_mailbox`] for a poll with these sinks: messages every sink holds as
    /// compact [`Settled`] rows, the others whole. Backends override it with a query that
    /// does not read the settled messages' deliveries.
    async fn load_listed(
        &self,
        mailbox: &str,
        sinks: &[String],
    ) -> Result<ListedState, StoreError> {
        Ok(ListedState::split(self.load_mailbox(mailbox).await?, sinks))
    }

    /// The rows, of any status, at these UIDLs (for UIDLs listed but not loaded).
    async fn lookup(
        &self,
        mailbox: &str,
        uidls: &[String],
    ) -> Result<HashMap<String, KnownMessage>, StoreError>;

    /// Record what changed in the listing: known UIDLs confirmed listed again (`back`) and
    /// known ones no longer listed (`gone`). Only the changes, so an idle poll of a big
    /// mailbox writes nothing.
    async fn record_presence(
        &self,
        mailbox: &str,
        back: &[String],
        gone: &[String],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// A fetched message proved to be the one known under its UIDL: remember its LIST size
    /// (and fingerprint, for rows from before schema 2) and that it is listed.
    async fn confirm(
        &self,
        mailbox: &str,
        uidl: &str,
        list_size: u64,
        fingerprint: &str,
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

    /// A message no longer listed, never deleted by us, with this content: the same message
    /// re-listed under a new UIDL. Matched by fingerprint, or for rows from before schema 2 by
    /// SHA-256 and size.
    async fn find_vanished_by_content(
        &self,
        mailbox: &str,
        sha256: &str,
        size: u64,
        fingerprint: &str,
    ) -> Result<Option<KnownMessage>, StoreError>;

    /// True when some message of the mailbox left the listing without being deleted by us (so
    /// a new UIDL may be one of them, renamed).
    async fn has_vanished(&self, mailbox: &str) -> Result<bool, StoreError>;

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

    /// Count a RETR of `uidl` that broke the connection; at `max` failures the message becomes
    /// a dead letter (under the sink name [`RETRIEVAL`]). Returns the new state.
    async fn record_retrieval_failure(
        &self,
        mailbox: &str,
        uidl: &str,
        error: &str,
        max: u32,
        now: Millis,
    ) -> Result<RetrievalFailure, StoreError>;

    /// Messages of a mailbox whose RETR broke the connection, by UIDL.
    async fn retrieval_failures(
        &self,
        mailbox: &str,
    ) -> Result<HashMap<String, RetrievalFailure>, StoreError>;

    /// A message was retrieved whole: forget its earlier broken retrievals.
    async fn clear_retrieval_failure(&self, mailbox: &str, uidl: &str) -> Result<(), StoreError>;

    /// Remove history (deleted, gone or replaced messages) that ended before `before`.
    /// Returns how many messages were removed.
    async fn prune(&self, mailbox: &str, before: Millis) -> Result<u64, StoreError>;

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

    /// Bytes (message sizes) delivered to `sink` since `since`, by mailbox, duplicates left
    /// out: what counts against a daily upload budget.
    async fn delivered_bytes_since(
        &self,
        sink: &str,
        since: Millis,
    ) -> Result<HashMap<String, u64>, StoreError>;

    /// Bytes (stored message sizes) fetched since `since`, per mailbox: what counts against a
    /// host's daily download budget. A message fetched again counts once, at its last fetch.
    async fn fetched_bytes_since(&self, since: Millis) -> Result<Vec<(String, u64)>, StoreError>;

    /// Cheap liveness query for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
