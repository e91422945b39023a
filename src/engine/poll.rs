//! One poll of one mailbox: connect, list, plan, fetch and deliver as a pipeline, DELE, QUIT.
//!
//! The order is the delivery guarantee: a message is recorded as fetched before any sink sees it,
//! each receipt is committed as it arrives, the state is synced to disk before the first DELE,
//! and a deletion is recorded only after QUIT's `+OK` (before that the server rolls DELEs back).

use super::deliver::{deliver_to_sink, SinkHandle};
use super::plan::{self, DeleteItem, FetchItem, Identity, Listed, Plan, Warning};
use crate::config::MailboxConfig;
use crate::key::IdempotencyKey;
use crate::pop3::{self, ErrorKind, Pop3Error, Retrieved};
use crate::sink::SpooledMessage;
use crate::store::{DeliveryState, FetchRecord, KnownMessage, OutcomeResult, Store, StoreError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything a poll of one mailbox needs, built once from the config.
pub struct MailboxContext {
    pub mailbox: MailboxConfig,
    pub sinks: Vec<SinkHandle>,
    pub store: Arc<dyn Store>,
    /// This mailbox's own spool directory (emptied at the start of each poll).
    pub spool_dir: PathBuf,
    pub max_in_flight: usize,
    /// Live counters for the terminal progress display.
    pub progress: Arc<crate::progress::Progress>,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare spool directory {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PollError {
    /// Low-cardinality kind, for summaries and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pop3(e) => match e.kind() {
                ErrorKind::Auth => "auth",
                ErrorKind::Tls => "tls",
                ErrorKind::Network => "network",
                ErrorKind::Protocol => "protocol",
                ErrorKind::Timeout => "timeout",
                ErrorKind::Temporary => "temporary",
                ErrorKind::Spool => "spool",
            },
            Self::Store(_) => "state",
            Self::Spool { .. } => "spool",
        }
    }
}

/// What one poll did. `complete()` is the exit status of `popbridge once`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PollReport {
    pub mailbox: String,
    pub listed: usize,
    pub fetched: usize,
    pub bytes: u64,
    /// (message, sink) pairs delivered in this poll.
    pub delivered: usize,
    /// Of those, how many the sink already had (a repeat after a crash).
    pub duplicates: usize,
    /// Messages recognised by content under a new UIDL, not sent again.
    pub matched_by_content: usize,
    /// (message, sink) pairs that failed retryably and wait for a later poll.
    pub retry_later: usize,
    /// (message, sink) pairs dead-lettered in this poll.
    pub dead_lettered: usize,
    /// Dead-lettered (message, sink) pairs from earlier polls, still on the server.
    pub dead_earlier: usize,
    /// Dead letters an operator dropped (`dlq drop`), still on the server; not a failure.
    pub dropped_earlier: usize,
    /// (message, sink) pairs waiting for their next attempt time.
    pub waiting: usize,
    pub deleted: usize,
    pub warnings: Vec<String>,
    /// One line per failed message or sink.
    pub failures: Vec<String>,
    /// The poll itself failed (login, network, state): its kind and message.
    pub error: Option<(String, String)>,
    /// The server's CAPA LOGIN-DELAY: no new login before this much time has passed since this one.
    pub login_delay: Option<std::time::Duration>,
}

impl PollReport {
    /// Every listed message is in every sink (nothing failed, waits, or is dead-lettered);
    /// dropped dead letters were given up on purpose and do not count.
    pub fn complete(&self) -> bool {
        self.error.is_none()
            && self.failures.is_empty()
            && self.retry_later == 0
            && self.dead_lettered == 0
            && self.dead_earlier == 0
            && self.waiting == 0
    }
}

/// Result of processing one fetched message.
struct Processed {
    msgno: u32,
    uidl: String,
    deletable: bool,
    report: PollReport,
}

pub async fn poll(ctx: &MailboxContext, shutdown: &CancellationToken) -> PollReport {
    let mut report = PollReport {
        mailbox: ctx.mailbox.name.clone(),
        ..Default::default()
    };
    let clock = std::time::Instant::now();
    if let Err(e) = poll_inner(ctx, shutdown, &mut report).await {
        tracing::error!(mailbox = %ctx.mailbox.name, kind = e.kind(), error = %e, "Poll failed");
        report.error = Some((e.kind().to_string(), e.to_string()));
    }
    ctx.progress.finish();
    crate::metrics::poll_finished(&report, clock.elapsed());
    match ctx.store.backlog(&ctx.mailbox.name).await {
        Ok(rows) => {
            for h in &ctx.sinks {
                let (p, d) = rows
                    .iter()
                    .find(|r| r.sink == h.name)
                    .map(|r| (r.pending, r.dead))
                    .unwrap_or((0, 0));
                crate::metrics::delivery_backlog(&ctx.mailbox.name, &h.name, p, d);
            }
        }
        Err(e) => {
            tracing::warn!(mailbox = %ctx.mailbox.name, error = %e, "Cannot count the delivery backlog")
        }
    }
    report
}

fn reset_spool(dir: &std::path::Path) -> Result<(), PollError> {
    let err = |source| PollError::Spool {
        path: dir.display().to_string(),
        source,
    };
    // Left over from a killed run: nothing in it was ever acknowledged to the server.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

async fn poll_inner(
    ctx: &MailboxContext,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
    reset_spool(&ctx.spool_dir)?;
    let mut session = pop3::connect(&ctx.mailbox.pop3).await?;
    if let Some(t) = session.certificate_expiry() {
        crate::metrics::certificate_expiry(name, t);
    }
    let sizes = session.list().await?;
    let uidls = session.uidl().await?;
    let listing = merge_listing(&sizes, uidls.as_deref());
    report.listed = listing.len();

    let known = ctx.store.load_mailbox(name).await?;
    let sink_names: Vec<String> = ctx.sinks.iter().map(|s| s.name.clone()).collect();
    let now = crate::store::now_millis();
    let plan = plan::plan(&listing, &known, &sink_names, ctx.mailbox.delete, now);
    for w in &plan.warnings {
        let text = describe(w);
        tracing::warn!(mailbox = name, "{text}");
        report.warnings.push(text);
    }
    let listed: std::collections::HashSet<&str> = plan.listed.iter().map(String::as_str).collect();
    let back: Vec<String> = plan
        .listed
        .iter()
        .filter(|u| known.get(*u).is_some_and(|k| !k.on_server))
        .cloned()
        .collect();
    let gone: Vec<String> = known
        .values()
        .filter(|k| k.on_server && !listed.contains(k.uidl.as_str()))
        .map(|k| k.uidl.clone())
        .collect();
    ctx.store.record_presence(name, &back, &gone, now).await?;
    // Only a known message missing from this listing can come back under a new UIDL; without
    // one, skip the per-message lookup by content.
    let some_vanished = known.values().any(|k| {
        k.deleted_at.is_none()
            && k.replaced_by.is_none()
            && k.sha256.is_some()
            && !listed.contains(k.uidl.as_str())
    });
    drop(listed);
    report.waiting = plan.waiting;
    report.dead_earlier = plan.dead;
    report.dropped_earlier = plan.dropped;

    let Plan {
        mut fetch, delete, ..
    } = plan;
    // Too large to fetch: reported every poll (never skipped in silence), kept on the server.
    let cap = ctx.mailbox.pop3.max_message_bytes;
    fetch.retain(|f| {
        if f.size > cap {
            let text = format!(
                "message {} is {} bytes, over max_message_bytes ({cap}); left on the server",
                f.msgno, f.size
            );
            tracing::error!(
                mailbox = name,
                msgno = f.msgno,
                size = f.size,
                "Message too large, not fetched"
            );
            report.failures.push(text);
        }
        f.size <= cap
    });
    ctx.progress
        .plan(fetch.len() as u64, fetch.iter().map(|f| f.size).sum());
    let mut to_delete: Vec<DeleteItem> = delete;
    if !fetch.is_empty() {
        let processed = fetch_and_deliver(
            ctx,
            &mut session,
            fetch,
            &known,
            some_vanished,
            shutdown,
            report,
        )
        .await?;
        to_delete.extend(
            processed
                .into_iter()
                .filter(|p| p.deletable)
                .map(|p| DeleteItem {
                    msgno: p.msgno,
                    uidl: p.uidl,
                }),
        );
    }

    if to_delete.is_empty() || shutdown.is_cancelled() {
        if let Err(e) = session.quit().await {
            tracing::debug!(mailbox = name, error = %e, "QUIT failed after a poll with nothing to delete");
        }
        return Ok(());
    }
    // Receipts on disk before the server may forget a message.
    ctx.store.sync().await?;
    let msgnos: Vec<u32> = to_delete.iter().map(|d| d.msgno).collect();
    let results = session.dele_many(&msgnos).await?;
    let mut accepted = Vec::new();
    for (msgno, r) in results {
        let Some(item) = to_delete.iter().find(|d| d.msgno == msgno) else {
            continue;
        };
        match r {
            Ok(()) => accepted.push(item.uidl.clone()),
            Err(e) => {
                tracing::warn!(mailbox = name, uidl = %item.uidl, error = %e, "Server refused DELE; the message stays");
                report
                    .warnings
                    .push(format!("DELE of {} refused: {e}", item.uidl));
            }
        }
    }
    session.quit().await?;
    ctx.store
        .record_deleted(name, &accepted, crate::store::now_millis())
        .await?;
    report.deleted = accepted.len();
    Ok(())
}

/// Pair LIST sizes with UIDLs by message number.
fn merge_listing(sizes: &[(u32, u64)], uidls: Option<&[(u32, String)]>) -> Vec<Listed> {
    let by_no: HashMap<u32, &str> = uidls
        .unwrap_or_default()
        .iter()
        .map(|(n, u)| (*n, u.as_str()))
        .collect();
    sizes
        .iter()
        .map(|(msgno, size)| Listed {
            msgno: *msgno,
            size: *size,
            uidl: if uidls.is_some() {
                // A message missing from UIDL but present in LIST is identified by content.
                by_no.get(msgno).map(|u| u.to_string())
            } else {
                None
            },
        })
        .collect()
}

fn describe(w: &Warning) -> String {
    match w {
        Warning::DuplicateUidl { uidl, count } => format!(
            "Server lists UIDL {uidl:?} for {count} messages; identifying them by content instead"
        ),
        Warning::NoUidl => {
            "Server has no UIDL command; every message is downloaded to be identified by content"
                .into()
        }
        Warning::UidlReset { known, new } => format!(
            "None of the {known} messages we knew is listed any more, and {new} unknown ones are: \
             the server may have lost its UIDL state. Matching by content before delivering, so \
             mail already delivered is not sent again"
        ),
    }
}

async fn fetch_and_deliver(
    ctx: &MailboxContext,
    session: &mut pop3::Transaction,
    fetch: Vec<FetchItem>,
    known: &HashMap<String, KnownMessage>,
    some_vanished: bool,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<Vec<Processed>, PollError> {
    let msgnos: Vec<u32> = fetch.iter().map(|f| f.msgno).collect();
    let items: HashMap<u32, FetchItem> = fetch.into_iter().map(|f| (f.msgno, f)).collect();
    let (tx, mut rx) =
        mpsc::channel::<(u32, Result<Retrieved, Pop3Error>)>(ctx.max_in_flight.max(1));

    let fetching = session.retr_to_spool(&msgnos, &ctx.spool_dir, tx);
    let delivering = async {
        let mut running = FuturesUnordered::new();
        let mut done: Vec<Result<Processed, PollError>> = Vec::new();
        let mut failures = Vec::new();
        loop {
            tokio::select! {
                biased;
                Some(p) = running.next(), if !running.is_empty() => done.push(p),
                next = rx.recv(), if running.len() < ctx.max_in_flight.max(1) => {
                    let Some((msgno, result)) = next else { break };
                    if shutdown.is_cancelled() {
                        // Stop taking messages; in-flight ones finish and are recorded.
                        break;
                    }
                    match (items.get(&msgno), result) {
                        (Some(item), Ok(retrieved)) => {
                            running.push(process(ctx, item, retrieved, known, some_vanished, shutdown));
                        }
                        (_, Err(e)) => failures.push(format!("message {msgno}: {e}")),
                        (None, Ok(_)) => {}
                    }
                }
            }
        }
        drop(rx);
        while let Some(p) = running.next().await {
            done.push(p);
        }
        (done, failures)
    };
    let (fetched, (done, failures)) = tokio::join!(fetching, delivering);
    report.failures.extend(failures);
    let mut processed = Vec::new();
    for p in done {
        let p = p?;
        merge_report(report, &p.report);
        processed.push(p);
    }
    if let Err(e) = fetched {
        if !shutdown.is_cancelled() {
            return Err(e.into());
        }
    }
    Ok(processed)
}

fn merge_report(into: &mut PollReport, from: &PollReport) {
    into.fetched += from.fetched;
    into.bytes += from.bytes;
    into.delivered += from.delivered;
    into.duplicates += from.duplicates;
    into.matched_by_content += from.matched_by_content;
    into.retry_later += from.retry_later;
    into.dead_lettered += from.dead_lettered;
    into.dead_earlier += from.dead_earlier;
    into.waiting += from.waiting;
    into.failures.extend(from.failures.iter().cloned());
}

/// Resolve the message's identity, record the attempt, deliver to each pending sink, record the
/// outcomes, and say whether it may now be deleted.
async fn process(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: Retrieved,
    known: &HashMap<String, KnownMessage>,
    some_vanished: bool,
    shutdown: &CancellationToken,
) -> Result<Processed, PollError> {
    let name = ctx.mailbox.name.as_str();
    let store = ctx.store.as_ref();
    let mut r = PollReport {
        fetched: 1,
        bytes: retrieved.size,
        ..Default::default()
    };
    let sink_names: Vec<String> = ctx.sinks.iter().map(|s| s.name.clone()).collect();
    let now = crate::store::now_millis();

    let (uidl, mut state, mut pending) = match &item.identity {
        Identity::Uidl(u) => (u.clone(), known.get(u).cloned(), item.sinks.clone()),
        Identity::ByContent { uidl } => {
            let u = Identity::content_uidl(uidl.as_deref(), &retrieved.sha256);
            let k = known.get(&u).cloned();
            let (p, waiting, dead) = plan::pending_sinks(k.as_ref(), &sink_names, now);
            r.waiting += waiting;
            r.dead_earlier += dead;
            (u, k, p)
        }
    };
    if state.is_none() && some_vanished {
        // Same bytes as a message that vanished from the listing: the server renamed it.
        if let Some(old) = store
            .find_vanished_by_content(name, &retrieved.sha256, retrieved.size)
            .await?
        {
            tracing::warn!(mailbox = name, uidl = %uidl, previous_uidl = %old.uidl, key = %old.idem_key,
                "Known message re-listed under a new UIDL; keeping its deliveries");
            store.adopt(name, &old.uidl, &uidl, now).await?;
            let (p, waiting, dead) = plan::pending_sinks(Some(&old), &sink_names, now);
            r.matched_by_content += 1;
            r.waiting += waiting;
            r.dead_earlier += dead;
            pending = p;
            state = Some(KnownMessage {
                uidl: uidl.clone(),
                ..old
            });
        }
    }
    let key_text = state
        .as_ref()
        .map(|s| s.idem_key.clone())
        .unwrap_or_else(|| IdempotencyKey::derive(name, &uidl).as_str().to_string());
    let key = IdempotencyKey::from_stored(key_text);

    let message = SpooledMessage {
        mailbox: name.to_string(),
        uidl: uidl.clone(),
        path: retrieved.file.to_path_buf(),
        size: retrieved.size,
        sha256: retrieved.sha256.clone(),
        fetched_at: chrono::Utc::now(),
        seen_before: state.is_some(),
    };
    if !pending.is_empty() {
        store
            .record_fetched(&FetchRecord {
                mailbox: name,
                uidl: &uidl,
                idem_key: key.as_str(),
                size: retrieved.size,
                sha256: &retrieved.sha256,
                fetched_at: now,
                sinks: &pending,
            })
            .await?;
    }
    let handles: Vec<&SinkHandle> = ctx
        .sinks
        .iter()
        .filter(|h| pending.contains(&h.name))
        .collect();
    let outcomes = futures_util::future::join_all(handles.iter().map(|h| {
        let first = state
            .as_ref()
            .and_then(|s| match s.deliveries.get(&h.name) {
                Some(DeliveryState::Pending {
                    first_attempt_at, ..
                }) => *first_attempt_at,
                _ => None,
            });
        deliver_to_sink(h, &message, &key, first, shutdown)
    }))
    .await;
    store.record_outcomes(&outcomes).await?;
    ctx.progress.message_done(retrieved.size);
    drop(retrieved);

    let mut after = state.unwrap_or_else(|| KnownMessage {
        uidl: uidl.clone(),
        idem_key: key.as_str().to_string(),
        size: Some(message.size),
        sha256: Some(message.sha256.clone()),
        first_seen_at: now,
        on_server: true,
        deleted_at: None,
        replaced_by: None,
        deliveries: HashMap::new(),
    });
    for o in &outcomes {
        let span_fields = (name, o.sink.as_str(), key.as_str());
        match &o.result {
            OutcomeResult::Delivered(receipt) => {
                r.delivered += 1;
                if receipt.duplicate {
                    r.duplicates += 1;
                }
                tracing::debug!(mailbox = span_fields.0, sink = span_fields.1, key = span_fields.2,
                    receipt = %receipt.detail, duplicate = receipt.duplicate, "Delivered");
                after.deliveries.insert(
                    o.sink.clone(),
                    DeliveryState::Delivered {
                        at: o.at,
                        receipt: receipt.clone(),
                    },
                );
            }
            OutcomeResult::Retry { error, .. } => {
                r.retry_later += 1;
                r.failures
                    .push(format!("{uidl} -> {}: will retry: {error}", o.sink));
                tracing::warn!(mailbox = span_fields.0, sink = span_fields.1, key = span_fields.2,
                    attempts = o.attempts_made, error = %error, "Delivery failed, will retry in a later poll");
            }
            OutcomeResult::Dead { error } => {
                r.dead_lettered += 1;
                r.failures
                    .push(format!("{uidl} -> {}: dead-lettered: {error}", o.sink));
                tracing::error!(mailbox = span_fields.0, sink = span_fields.1, key = span_fields.2,
                    attempts = o.attempts_made, error = %error, "Delivery failed permanently, dead-lettered");
            }
        }
    }
    let deletable = plan::deletable(
        &after,
        &sink_names,
        ctx.mailbox.delete,
        crate::store::now_millis(),
    );
    Ok(Processed {
        msgno: item.msgno,
        uidl,
        deletable,
        report: r,
    })
}
