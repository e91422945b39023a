//! Group commit for the per-message writes ("record the attempt", "record the receipts").
//!
//! Every statement through sqlx's SQLite driver is a round trip to its worker thread, and a
//! transaction per message made thread wake-ups the largest cost of a poll of small messages.
//! Here concurrent writers queue their rows; whoever holds the leader lock takes the whole
//! queue and writes it in one transaction of multi-row statements, then tells every writer in
//! the batch. A caller returns only after the transaction holding its rows has committed, so
//! the guarantee is unchanged: when `record_outcomes` returns, the receipt is in the WAL.

use super::{StoreError, CHUNK};
use crate::store::{Outcome, OutcomeResult};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// A fetched message about to be delivered, owned so it can wait in the queue.
pub(super) struct Fetched {
    pub mailbox: String,
    pub uidl: String,
    pub idem_key: String,
    pub size: i64,
    pub sha256: String,
    pub fingerprint: String,
    pub list_size: i64,
    pub fetched_at: i64,
    pub sinks: Vec<String>,
    pub retire: bool,
    /// JSON of the routing decision, if any.
    pub route: Option<String>,
}

pub(super) enum Write {
    Fetched(Fetched),
    Outcomes(Vec<Outcome>),
}

pub(super) struct Job {
    write: Write,
    /// The batch's result, as text: one failure is reported to every writer in the batch.
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
pub(super) struct GroupCommit {
    pub(super) queue: Mutex<Vec<Job>>,
    pub(super) leader: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Queue `write` and return once a committed transaction holds it.
    pub async fn write(&self, pool: &SqlitePool, write: Write) -> Result<(), StoreError> {
        let (done, mut result) = oneshot::channel();
        self.queue
            .lock()
            .map_err(|_| StoreError::Batch("state write queue poisoned".into()))?
            .push(Job { write, done });
        let _leader = self.leader.lock().await;
        // A leader before us may already have written our rows: it finished before unlocking.
        if let Ok(r) = result.try_recv() {
            return r.map_err(StoreError::Batch);
        }
        let batch = std::mem::take(
            &mut *self
                .queue
                .lock()
                .map_err(|_| StoreError::Batch("state write queue poisoned".into()))?,
        );
        let (writes, senders): (Vec<Write>, Vec<_>) =
            batch.into_iter().map(|j| (j.write, j.done)).unzip();
        let outcome = write_batch(pool, &writes).await.map_err(|e| e.to_string());
        if outcome.is_err() && writes.len() > 1 {
            // One bad row must not fail every writer of the batch (other mailboxes' among
            // them): write each alone, so only the one that fails hears of it.
            for (w, s) in writes.iter().zip(senders) {
                let alone = write_batch(pool, std::slice::from_ref(w))
                    .await
                    .map_err(|e| e.to_string());
                let _ = s.send(alone);
            }
        } else {
            for s in senders {
                // A writer that went away (its task was cancelled) does not need the answer.
                let _ = s.send(outcome.clone());
            }
        }
        match result.try_recv() {
            Ok(r) => r.map_err(StoreError::Batch),
            // Our job was in the queue when we took it, so its sender was in `senders`.
            Err(_) => Err(StoreError::Batch("state write was not acknowledged".into())),
        }
    }
}

async fn write_batch(pool: &SqlitePool, writes: &[Write]) -> Result<(), StoreError> {
    let fetched: Vec<&Fetched> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Fetched(f) => Some(f),
            Write::Outcomes(_) => None,
        })
        .collect();
    let outcomes: Vec<&Outcome> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Outcomes(o) => Some(o),
            Write::Fetched(_) => None,
        })
        .flatten()
        .collect();
    let mut tx = pool.begin().await?;
    // A UIDL that held another message before: that row becomes history first, so the new
    // message starts with no deliveries. Asked for by the engine, or found here (a deleted or
    // replaced row), in one query per chunk.
    for chunk in fetched.chunks(CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT mailbox, uidl FROM messages WHERE (deleted_at IS NOT NULL OR replaced_by IS NOT NULL) AND (mailbox, uidl) IN (VALUES ",
        );
        let mut sep = q.separated(", ");
        for f in chunk {
            sep.push("(")
                .push_bind_unseparated(&f.mailbox)
                .push_unseparated(", ")
                .push_bind_unseparated(&f.uidl)
                .push_unseparated(")");
        }
        q.push(")");
        let history: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
        for f in chunk {
            if f.retire || history.iter().any(|(m, u)| *m == f.mailbox && *u == f.uidl) {
                super::retire(&mut tx, &f.mailbox, &f.uidl, f.fetched_at).await?;
            }
        }
    }
    // Messages before their deliveries (the foreign key), attempts before outcomes.
    for chunk in fetched.chunks(CHUNK / 10) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO messages (mailbox, uidl, idem_key, size, sha256, fingerprint, list_size,
                first_seen_at, fetched_at, on_server, route) ",
        );
        q.push_values(chunk, |mut row, f| {
            row.push_bind(&f.mailbox)
                .push_bind(&f.uidl)
                .push_bind(&f.idem_key)
                .push_bind(f.size)
                .push_bind(&f.sha256)
                .push_bind(&f.fingerprint)
                .push_bind(f.list_size)
                .push_bind(f.fetched_at)
                .push_bind(f.fetched_at)
                .push("1")
                .push_bind(&f.route);
        });
        q.push(
            " ON CONFLICT (mailbox, uidl) DO UPDATE SET size = excluded.size,
              sha256 = excluded.sha256, fingerprint = excluded.fingerprint,
              list_size = excluded.list_size, fetched_at = excluded.fetched_at, on_server = 1,
              gone_at = NULL, route = COALESCE(messages.route, excluded.route)",
        );
        q.build().execute(&mut *tx).await?;
    }
    let pending: Vec<(&str, &str, &str)> = fetched
        .iter()
        .flat_map(|f| {
            f.sinks
                .iter()
                .map(|s| (f.mailbox.as_str(), f.uidl.as_str(), s.as_str()))
        })
        .collect();
    for chunk in pending.chunks(CHUNK / 4) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO deliveries (mailbox, uidl, sink, status) ");
        q.push_values(chunk, |mut row, (mailbox, uidl, sink)| {
            row.push_bind(*mailbox)
                .push_bind(*uidl)
                .push_bind(*sink)
                .push("'pending'");
        });
        q.push(" ON CONFLICT (mailbox, uidl, sink) DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    let rows = outcomes
        .iter()
        .map(|o| OutcomeRow::new(o))
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in rows.chunks(CHUNK / 10) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO deliveries (mailbox, uidl, sink, status, attempts, first_attempt_at,
                last_attempt_at, next_attempt_at, last_error, receipt, delivered_at) ",
        );
        q.push_values(chunk, |mut row, r| {
            row.push_bind(&r.outcome.mailbox)
                .push_bind(&r.outcome.uidl)
                .push_bind(&r.outcome.sink)
                .push_bind(r.status)
                .push_bind(i64::from(r.outcome.attempts_made))
                .push_bind(r.outcome.at)
                .push_bind(r.outcome.at)
                .push_bind(r.next)
                .push_bind(r.error)
                .push_bind(&r.receipt)
                .push_bind(r.delivered_at);
        });
        // Rows are applied in order, so two outcomes for one delivery in a batch add up. A
        // delivered row never goes back: a late failure report of a concurrent attempt must
        // not turn a receipt into "pending".
        q.push(
            " ON CONFLICT (mailbox, uidl, sink) DO UPDATE SET
                status = excluded.status,
                attempts = deliveries.attempts + excluded.attempts,
                first_attempt_at = COALESCE(deliveries.first_attempt_at, excluded.first_attempt_at),
                last_attempt_at = excluded.last_attempt_at,
                next_attempt_at = excluded.next_attempt_at,
                last_error = COALESCE(excluded.last_error, deliveries.last_error),
                receipt = excluded.receipt,
                delivered_at = excluded.delivered_at
              WHERE deliveries.status != 'delivered'",
        );
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One outcome in the columns of `deliveries`.
struct OutcomeRow<'a> {
    outcome: &'a Outcome,
    status: &'static str,
    error: Option<&'a str>,
    next: Option<i64>,
    receipt: Option<String>,
    delivered_at: Option<i64>,
}

impl<'a> OutcomeRow<'a> {
    fn new(o: &'a Outcome) -> Result<Self, StoreError> {
        let (status, error, next, receipt, delivered_at) = match &o.result {
            OutcomeResult::Delivered(r) => (
                "delivered",
                None,
                None,
                Some(serde_json::to_string(r)?),
                Some(o.at),
            ),
            OutcomeResult::Retry {
                error,
                next_attempt_at,
            } => (
                "pending",
                Some(error.as_str()),
                Some(*next_attempt_at),
                None,
                None,
            ),
            OutcomeResult::Dead { error } => ("dead", Some(error.as_str()), None, None, None),
        };
        Ok(Self {
            outcome: o,
            status,
            error,
            next,
            receipt,
            delivered_at,
        })
    }
}
