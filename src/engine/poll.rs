//! One poll of one mailbox, in the order of its steps, one module each: [`connect`], [`listing`]
//! (LIST, UIDL), [`planning`] (state + listing -> what to fetch and delete), [`retrieve`] (RETR
//! into the spool, pipelined with [`message`]: identify, record the attempt, deliver, record
//! the receipts), and [`delete`] (sync, DELE, QUIT).
//!
//! The order is the delivery guarantee: a message is recorded as fetched before any sink sees it,
//! each receipt is committed as it arrives, the state is synced to disk before the first DELE,
//! and a deletion is recorded only after QUIT's `+OK` (before that the server rolls DELEs back).
//!
//! QUIT is also where some servers act on what was *retrieved*: Gmail hides every message
//! RETR'd in a session that ends with QUIT, and a server advertising `EXPIRE 0` deletes them.
//! So a session in which any retrieved message is not yet held by every sink ends without
//! QUIT (RFC 1939: no UPDATE state, nothing changes on the server), and the deletions of the
//! messages that are fully delivered go through a second session that retrieves nothing.

mod connect;
mod delete;
mod listing;
mod message;
mod planning;
mod retrieve;

pub(crate) use listing::merge_listing;
pub(crate) use planning::describe;

use super::deliver::SinkHandle;
use crate::config::MailboxConfig;
use crate::pop3::{ErrorKind, Pop3Error};
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;
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
    /// History older than this is pruned from the state.
    pub retention: Duration,
    /// RETRs that may break the connection before a message is dead-lettered.
    pub max_retrieval_failures: u32,
    /// A poll taking longer is abandoned (as if killed; nothing is lost).
    pub poll_timeout: Duration,
    /// When this mailbox's history was last pruned (Unix ms).
    pub last_prune: AtomicI64,
    /// Whether this process still owns the mailbox (its lease on PostgreSQL), for the sinks.
    pub owner: crate::sink::Ownership,
    /// What every mailbox on this POP3 host shares: connection cap key, minimum poll
    /// interval, bytes per second, daily download budget.
    pub host: Arc<crate::politeness::HostLimits>,
}

/// Prune a mailbox's history at most this often.
const PRUNE_EVERY_MS: i64 = 3600 * 1000;

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
    #[error("the poll took longer than limits.poll_timeout ({0:?}) and was abandoned; nothing was deleted that is not in every sink")]
    Timeout(Duration),
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
            Self::Timeout(_) => "timeout",
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
    /// Of the delivered pairs, how many went as a stub (the message over the target's size
    /// limit, the original in the offload bucket: `oversize: stub`).
    pub stubbed: usize,
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
    /// Messages that arrived under a UIDL the server had used for another message before.
    pub uidl_reused: usize,
    /// The session ended without QUIT because a retrieved message is not in every sink yet.
    pub ended_without_quit: bool,
    /// The server's CAPA LOGIN-DELAY: no new login before this much time has passed since this one.
    pub login_delay: Option<std::time::Duration>,
    /// How long the poll took, connect to QUIT.
    pub duration_ms: u64,
    /// Sinks whose target for this mailbox refuses deliveries until a known time (a used-up
    /// daily quota): their messages wait on the server, undeleted, and resume by themselves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<PausedSink>,
    /// New messages the routing rules kept on the server (`unmatched: keep`), not fetched.
    pub kept_by_rules: usize,
    /// Messages left on the server because the host's daily download budget is spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_held: Option<DownloadHeld>,
}

/// Messages a host's daily download budget keeps on the server, as the summary, the report
/// file and the log show them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DownloadHeld {
    /// The POP3 host (its `servers:` key).
    pub host: String,
    /// Messages not fetched in this poll.
    pub messages: usize,
    /// RFC 3339, UTC: the next UTC midnight, when the budget starts again.
    pub until: String,
    /// `servers.<host>.bytes_per_day` (this process's share of it).
    pub budget: u64,
}

/// One sink paused for a mailbox, as the summary, the report file and the progress show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PausedSink {
    pub sink: String,
    /// RFC 3339, UTC.
    pub until: String,
    pub reason: String,
}

impl PollReport {
    /// What telemetry records of this poll.
    pub fn event(&self, took: Duration) -> crate::telemetry::event::PollFinished<'_> {
        crate::telemetry::event::PollFinished {
            mailbox: &self.mailbox,
            listed: self.listed,
            fetched: self.fetched,
            bytes: self.bytes,
            uidl_reused: self.uidl_reused,
            ended_without_quit: self.ended_without_quit,
            error: self.error.as_ref().map(|(kind, _)| kind.as_str()),
            took,
        }
    }

    /// Every listed message is in every sink (nothing failed, waits — for a retry or the host's
    /// daily download budget —, or is dead-lettered);
    /// dropped dead letters were given up on purpose and do not count.
    pub fn complete(&self) -> bool {
        self.error.is_none()
            && self.failures.is_empty()
            && self.retry_later == 0
            && self.dead_lettered == 0
            && self.dead_earlier == 0
            && self.waiting == 0
            && self.download_held.is_none()
    }
}

pub async fn poll(ctx: &MailboxContext, shutdown: &CancellationToken) -> PollReport {
    let mut report = PollReport {
        mailbox: ctx.mailbox.name.clone(),
        ..Default::default()
    };
    let clock = std::time::Instant::now();
    ctx.progress.begin();
    // A server sending one byte per read timeout must not hold a poll slot for days. Dropping
    // the poll mid-way is what a kill -9 does, which the state is built to survive.
    let result = match tokio::time::timeout(
        ctx.poll_timeout,
        poll_inner(ctx, shutdown, &mut report),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(PollError::Timeout(ctx.poll_timeout)),
    };
    if let Err(e) = result {
        tracing::error!(mailbox = %ctx.mailbox.name, kind = e.kind(), error = %e, "Poll failed");
        report.error = Some((e.kind().to_string(), e.to_string()));
    }
    note_pauses(ctx, &mut report);
    ctx.progress.finish(ended(&report));
    report.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    crate::metrics::poll_finished(&report.event(clock.elapsed()));
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

/// How the poll ended, for the fleet view: the error, or the first reason it is incomplete.
fn ended(report: &PollReport) -> crate::progress::Ended {
    use crate::progress::Ended;
    if let Some((kind, message)) = &report.error {
        return Ended::Failed(format!("{kind}: {message}"));
    }
    if report.complete() {
        return Ended::Complete;
    }
    let pending = report.retry_later + report.waiting;
    let dead = report.dead_lettered + report.dead_earlier;
    Ended::Incomplete(match report.failures.first() {
        Some(f) => f.clone(),
        None => format!("{pending} delivery(ies) pending, {dead} dead-lettered"),
    })
}

/// The sinks paused for this mailbox's target at the end of the poll: in the report (summary,
/// report file), the progress line, the log and the `popbridge_sink_paused_until` metric.
fn note_pauses(ctx: &MailboxContext, report: &mut PollReport) {
    let name = ctx.mailbox.name.as_str();
    for h in &ctx.sinks {
        let pause = h.sink.paused_until(name);
        crate::metrics::sink_paused(name, &h.name, pause.as_ref().map(|p| p.until));
        let Some(p) = pause else { continue };
        let until = p.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tracing::warn!(mailbox = name, sink = %h.name, until = %until, reason = %p.reason,
            "Sink paused for this mailbox: its messages wait on the server, undeleted, until then");
        ctx.progress.paused(&h.name, p.until);
        report.paused.push(PausedSink {
            sink: h.name.clone(),
            until,
            reason: p.reason,
        });
    }
}

/// One poll, step by step. Each step is a module of its own, in the order a message goes
/// through them.
async fn poll_inner(
    ctx: &MailboxContext,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<(), PollError> {
    connect::reset_spool(&ctx.spool_dir)?;
    let mut session = connect::open(ctx, shutdown, report).await?;
    let listing = listing::list(&mut session).await?;
    report.listed = listing.len();
    let mut planned = planning::plan_poll(ctx, &mut session, &listing, report).await?;
    let mut to_delete = std::mem::take(&mut planned.delete);
    let mut clean = true;
    if !planned.fetch.is_empty() {
        let fetched =
            retrieve::fetch_and_deliver(ctx, &mut session, planned, shutdown, report).await?;
        clean = fetched.clean();
        fetched.record_broken(ctx, &listing, report).await?;
        to_delete.extend(fetched.deletable());
    }
    delete::finish(ctx, session, &listing, to_delete, clean, shutdown, report).await
}
