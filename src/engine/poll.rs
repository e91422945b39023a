//! One poll of one mailbox: connect, list, plan, fetch and deliver as a pipeline, DELE, QUIT.
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

use super::deliver::{deliver_to_sink, SinkHandle};
use super::plan::{self, DeleteItem, FetchItem, Identity, Known, Listed, Plan, Prior, Warning};
use crate::config::MailboxConfig;
use crate::key::IdempotencyKey;
use crate::pop3::{self, ErrorKind, Pop3Error, Retrieved};
use crate::sink::SpooledMessage;
use crate::store::{DeliveryState, FetchRecord, KnownMessage, OutcomeResult, Store, StoreError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    /// History older than this is pruned from the state.
    pub retention: Duration,
    /// RETRs that may break the connection before a message is dead-lettered.
    pub max_retrieval_failures: u32,
    /// A poll taking longer is abandoned (as if killed; nothing is lost).
    pub poll_timeout: Duration,
    /// When this mailbox's history was last pruned (Unix ms).
    pub last_prune: AtomicI64,
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
    /// Every sink holds it now.
    held: bool,
    report: PollReport,
}

/// How the fetching of one poll ended.
struct Fetched {
    processed: Vec<Processed>,
    /// Messages asked for that were not retrieved and processed whole.
    missing: usize,
    /// The connection broke, while this message was being retrieved when that is known.
    broken: Option<(Option<u32>, Pop3Error)>,
}

pub async fn poll(ctx: &MailboxContext, shutdown: &CancellationToken) -> PollReport {
    let mut report = PollReport {
        mailbox: ctx.mailbox.name.clone(),
        ..Default::default()
    };
    let clock = std::time::Instant::now();
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
    ctx.progress.finish();
    report.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
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
    // The directory is `<spool root>/<mailbox name>`: never empty anything whose last
    // component is not a plain name (a mailbox called `..` would name the state directory).
    if !matches!(
        dir.components().next_back(),
        Some(std::path::Component::Normal(_))
    ) {
        return Err(err(std::io::Error::other(
            "the mailbox's spool directory is not a plain name under the spool root",
        )));
    }
    // Left over from a killed run: nothing in it was ever acknowledged to the server.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

/// How long to wait before the one retry of a login refused with `[LOGIN-DELAY]` (RFC 2449).
/// The refusal does not say how much of the delay is left; a minute is the shortest Cyrus
/// enforces (`popminpoll` counts minutes), which is the case of `check --connect` (a login)
/// followed by `once`.
const LOGIN_DELAY_RETRY: Duration = Duration::from_secs(61);

/// Logs in; when the server refuses because the last login was too recent (`[LOGIN-DELAY]`),
/// waits [`LOGIN_DELAY_RETRY`] once and tries again, rather than failing a `once` that came
/// right after another client's or our own login. Shutdown ends the wait with the refusal.
async fn connect_after_login_delay(
    ctx: &MailboxContext,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<pop3::Transaction, PollError> {
    let refused = match pop3::connect(&ctx.mailbox.pop3).await {
        Err(
            e @ Pop3Error::Temporary {
                code: pop3::RespCode::LoginDelay,
                ..
            },
        ) => e,
        other => return Ok(other?),
    };
    let text = format!(
        "The server refused the login: the last one was too recent (LOGIN-DELAY); waiting {}s, then trying once more",
        LOGIN_DELAY_RETRY.as_secs()
    );
    tracing::warn!(mailbox = %ctx.mailbox.name, error = %refused, "{text}");
    report.warnings.push(text);
    tokio::select! {
        () = tokio::time::sleep(LOGIN_DELAY_RETRY) => {}
        () = shutdown.cancelled() => return Err(refused.into()),
    }
    Ok(pop3::connect(&ctx.mailbox.pop3).await?)
}

async fn poll_inner(
    ctx: &MailboxContext,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
    reset_spool(&ctx.spool_dir)?;
    let mut session = connect_after_login_delay(ctx, shutdown, report).await?;
    if let Some(t) = session.certificate_expiry() {
        crate::metrics::certificate_expiry(name, t);
    }
    report.login_delay = session.capabilities().login_delay();
    if session.capabilities().expire() == Some(Some(0))
        && ctx.mailbox.delete != crate::config::DeletePolicy::AfterDelivery
    {
        let text = "The server removes every retrieved message when a session ends with QUIT \
                    (EXPIRE 0): messages are kept only until they are in every sink, whatever `delete` says";
        tracing::warn!(mailbox = name, "{text}");
        report.warnings.push(text.into());
    }
    let sizes = session.list().await?;
    let uidls = session.uidl().await?;
    let listing = merge_listing(&sizes, uidls.as_deref());
    drop((sizes, uidls));
    report.listed = listing.len();

    let known = ctx.store.load_mailbox(name).await?;
    let unknown: Vec<String> = listing
        .iter()
        .filter_map(|l| l.uidl.as_ref())
        .filter(|u| !known.contains_key(*u))
        .cloned()
        .collect();
    let others = if unknown.is_empty() {
        HashMap::new()
    } else {
        ctx.store.lookup(name, &unknown).await?
    };
    let failures = ctx.store.retrieval_failures(name).await?;
    let sink_names: Vec<String> = ctx.sinks.iter().map(|s| s.name.clone()).collect();
    let now = crate::store::now_millis();
    let plan = plan::plan(
        &listing,
        &Known {
            listed: &known,
            others: &others,
            failures: &failures,
        },
        &sink_names,
        ctx.mailbox.delete,
        now,
    );
    for w in &plan.warnings {
        let text = describe(w);
        tracing::warn!(mailbox = name, "{text}");
        report.warnings.push(text);
    }
    let listed: HashSet<&str> = plan.listed.iter().map(String::as_str).collect();
    let gone: Vec<String> = known
        .values()
        .filter(|k| !listed.contains(k.uidl.as_str()))
        .map(|k| k.uidl.clone())
        .collect();
    drop(listed);
    ctx.store.record_presence(name, &[], &gone, now).await?;
    prune(ctx, now).await;
    report.waiting = plan.waiting;
    report.dead_earlier = plan.dead + plan.unretrievable.len();
    report.dropped_earlier = plan.dropped;
    for (msgno, uidl) in &plan.unretrievable {
        report.failures.push(format!(
            "message {msgno} ({uidl}) is not retrieved: its RETR broke the connection {} times (dead letter under {}; `dlq retry` tries again)",
            ctx.max_retrieval_failures,
            crate::store::RETRIEVAL
        ));
    }

    let Plan {
        mut fetch, delete, ..
    } = plan;
    skip_sinks_that_are_down(ctx, &mut fetch, report);
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
    let mut clean = true;
    if !fetch.is_empty() {
        // Only a message gone from the listing can come back under a new UIDL; without one,
        // skip the per-message lookup by content.
        let some_vanished = !gone.is_empty() || ctx.store.has_vanished(name).await?;
        let fetched = fetch_and_deliver(
            ctx,
            &mut session,
            fetch,
            &known,
            &others,
            some_vanished,
            shutdown,
            report,
        )
        .await?;
        clean = fetched.missing == 0
            && fetched.broken.is_none()
            && fetched.processed.iter().all(|p| p.held);
        match &fetched.broken {
            Some((Some(msgno), error)) => {
                record_broken_retrieval(ctx, &listing, *msgno, error, report).await?
            }
            Some((None, error)) => report
                .failures
                .push(format!("the connection broke during RETR: {error}")),
            None => {}
        }
        to_delete.extend(
            fetched
                .processed
                .into_iter()
                .filter(|p| p.deletable)
                .map(|p| DeleteItem {
                    msgno: p.msgno,
                    uidl: p.uidl,
                }),
        );
    }

    if !clean {
        // Retrieved but not in every sink: a QUIT now could make the server hide (Gmail) or
        // delete (EXPIRE 0) it. Hang up instead; the server changes nothing.
        report.ended_without_quit = true;
        tracing::info!(
            mailbox = name,
            "Ending the session without QUIT: a retrieved message is not in every sink yet"
        );
        drop(session);
        if to_delete.is_empty() || shutdown.is_cancelled() {
            return Ok(());
        }
        if let Some(delay) = report.login_delay {
            let text = format!(
                "{} deletions wait for the next poll: the server allows one login per {}s (LOGIN-DELAY)",
                to_delete.len(),
                delay.as_secs()
            );
            tracing::info!(mailbox = name, "{text}");
            report.warnings.push(text);
            return Ok(());
        }
        return delete_in_new_session(ctx, &listing, to_delete, report).await;
    }
    if to_delete.is_empty() || shutdown.is_cancelled() {
        if let Err(e) = session.quit().await {
            tracing::debug!(mailbox = name, error = %e, "QUIT failed after a poll with nothing to delete");
        }
        return Ok(());
    }
    delete_and_quit(ctx, session, to_delete, report).await
}

/// Messages are not downloaded for a sink whose circuit is open (see `deliver::Circuit`):
/// they wait, counted as waiting, until it closes. Messages that must be compared by content
/// are fetched anyway (their sinks are decided after the fetch).
fn skip_sinks_that_are_down(
    ctx: &MailboxContext,
    fetch: &mut Vec<FetchItem>,
    report: &mut PollReport,
) {
    let now = crate::store::now_millis();
    let down: Vec<&str> = ctx
        .sinks
        .iter()
        .filter(|h| h.circuit.open_until(now).is_some())
        .map(|h| h.name.as_str())
        .collect();
    if down.is_empty() {
        return;
    }
    let before = fetch.len();
    let mut waiting = 0;
    fetch.retain_mut(|f| {
        if f.prior != Prior::Plain || !matches!(f.identity, Identity::Uidl(_)) {
            return true;
        }
        let n = f.sinks.len();
        f.sinks.retain(|s| !down.contains(&s.as_str()));
        waiting += n - f.sinks.len();
        !f.sinks.is_empty()
    });
    report.waiting += waiting;
    let text = format!(
        "sink(s) {} down: {} message(s) wait on the server for them, not fetched this poll",
        down.join(", "),
        before - fetch.len()
    );
    tracing::warn!(mailbox = %ctx.mailbox.name, "{text}");
    report.warnings.push(text);
}

/// Prune the mailbox's history now and then.
async fn prune(ctx: &MailboxContext, now: crate::store::Millis) {
    let last = ctx.last_prune.load(Ordering::Relaxed);
    if now - last < PRUNE_EVERY_MS {
        return;
    }
    ctx.last_prune.store(now, Ordering::Relaxed);
    let retention = i64::try_from(ctx.retention.as_millis()).unwrap_or(i64::MAX);
    match ctx
        .store
        .prune(&ctx.mailbox.name, now.saturating_sub(retention))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(mailbox = %ctx.mailbox.name, removed = n, "Pruned history older than state.retention")
        }
        Err(e) => {
            tracing::warn!(mailbox = %ctx.mailbox.name, error = %e, "Cannot prune the state's history")
        }
    }
}

/// The connection broke while `msgno` was being retrieved: count it against that message, so
/// one that always breaks it is dead-lettered and skipped instead of wedging the mailbox.
async fn record_broken_retrieval(
    ctx: &MailboxContext,
    listing: &[Listed],
    msgno: u32,
    error: &Pop3Error,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
    report
        .failures
        .push(format!("message {msgno}: the connection broke: {error}"));
    let Some(uidl) = listing
        .iter()
        .find(|l| l.msgno == msgno)
        .and_then(|l| l.uidl.as_deref())
    else {
        tracing::warn!(mailbox = name, msgno, error = %error, "The connection broke during RETR");
        return Ok(());
    };
    let f = ctx
        .store
        .record_retrieval_failure(
            name,
            uidl,
            &error.to_string(),
            ctx.max_retrieval_failures,
            crate::store::now_millis(),
        )
        .await?;
    if f.dead {
        tracing::error!(mailbox = name, msgno, uidl, failures = f.failures, error = %error,
            "Retrieving this message broke the connection every time; dead-lettered and skipped from now on");
        crate::metrics::retrieval_dead_lettered(name);
    } else {
        tracing::warn!(mailbox = name, msgno, uidl, failures = f.failures, error = %error,
            "The connection broke during RETR; the message is retried last in the next poll");
    }
    Ok(())
}

/// Receipts on disk, DELE, QUIT, and only after QUIT's `+OK` the deletions recorded.
async fn delete_and_quit(
    ctx: &MailboxContext,
    mut session: pop3::Transaction,
    to_delete: Vec<DeleteItem>,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
    // Receipts on disk before the server may forget a message.
    ctx.store.sync().await?;
    let msgnos: Vec<u32> = to_delete.iter().map(|d| d.msgno).collect();
    let by_msgno: HashMap<u32, &DeleteItem> = to_delete.iter().map(|d| (d.msgno, d)).collect();
    let results = session.dele_many(&msgnos).await?;
    let mut accepted = Vec::new();
    for (msgno, r) in results {
        let Some(item) = by_msgno.get(&msgno) else {
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
    report.deleted += accepted.len();
    Ok(())
}

/// The deletions of a session that ended without QUIT, in a new session that retrieves
/// nothing. Messages are found again by UIDL (and the same LIST size); one named by content
/// only when the listing is exactly the one the first session saw.
async fn delete_in_new_session(
    ctx: &MailboxContext,
    before: &[Listed],
    to_delete: Vec<DeleteItem>,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let mut session = pop3::connect(&ctx.mailbox.pop3).await?;
    let sizes = session.list().await?;
    let uidls = session.uidl().await?;
    let now_listed = merge_listing(&sizes, uidls.as_deref());
    let unchanged = now_listed.as_slice() == before;
    let old: HashMap<u32, &Listed> = before.iter().map(|l| (l.msgno, l)).collect();
    let by_uidl: HashMap<&str, &Listed> = now_listed
        .iter()
        .filter_map(|l| l.uidl.as_deref().map(|u| (u, l)))
        .collect();
    let mut again = Vec::new();
    for d in to_delete {
        let Some(was) = old.get(&d.msgno) else {
            continue;
        };
        let found = if unchanged {
            Some(*was)
        } else {
            was.uidl
                .as_deref()
                .filter(|u| *u == d.uidl)
                .and_then(|u| by_uidl.get(u).copied())
                .filter(|l| l.size == was.size)
        };
        if let Some(l) = found {
            again.push(DeleteItem {
                msgno: l.msgno,
                uidl: d.uidl,
            });
        }
    }
    if again.is_empty() {
        let _ = session.quit().await;
        return Ok(());
    }
    delete_and_quit(ctx, session, again, report).await
}

/// Pair LIST sizes with UIDLs by message number.
pub(crate) fn merge_listing(sizes: &[(u32, u64)], uidls: Option<&[(u32, String)]>) -> Vec<Listed> {
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

pub(crate) fn describe(w: &Warning) -> String {
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
        Warning::UidlReused { count } => format!(
            "{count} listed UIDLs belonged to messages already deleted or moved: the server \
             reuses UIDLs. They are new messages and are delivered under new keys"
        ),
        Warning::Recheck { count } => format!(
            "{count} known UIDLs changed LIST size or came back into the listing: fetching them \
             to compare with what we delivered before anything is skipped or deleted"
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_and_deliver(
    ctx: &MailboxContext,
    session: &mut pop3::Transaction,
    fetch: Vec<FetchItem>,
    known: &HashMap<String, KnownMessage>,
    others: &HashMap<String, KnownMessage>,
    some_vanished: bool,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<Fetched, PollError> {
    let msgnos: Vec<u32> = fetch.iter().map(|f| f.msgno).collect();
    let asked = msgnos.len();
    let items: HashMap<u32, FetchItem> = fetch.into_iter().map(|f| (f.msgno, f)).collect();
    let (tx, mut rx) =
        mpsc::channel::<(u32, Result<Retrieved, Pop3Error>)>(ctx.max_in_flight.max(1));

    let utf8_mode = session.utf8_mode();
    let mut broken_at = None;
    let fetching = session.retr_to_spool_tracked(&msgnos, &ctx.spool_dir, tx, &mut broken_at);
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
                        (Some(item), Ok(retrieved)) if !utf8_mode && pop3::substitute::is_substitute(&retrieved.file) => {
                            running.push(futures_util::future::Either::Left(keep_substitute(ctx, item, retrieved)));
                        }
                        (Some(item), Ok(retrieved)) => {
                            running.push(futures_util::future::Either::Right(process(ctx, item, retrieved, known, others, some_vanished, shutdown)));
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
    let broken = match fetched {
        Ok(()) => None,
        Err(e) if shutdown.is_cancelled() => {
            tracing::debug!(mailbox = %ctx.mailbox.name, error = %e, "RETR ended by shutdown");
            None
        }
        // A broken connection ends the fetching, not the poll: what was delivered is recorded,
        // and its deletions still happen (in a new session).
        Err(e) => Some((broken_at, e)),
    };
    Ok(Fetched {
        missing: asked - processed.len(),
        processed,
        broken,
    })
}

/// A message the server served as a down-converted substitute (no `UTF8` mode): not delivered
/// (the substitute is not the message, and differs at every RETR) and never deleted. With a
/// UIDL it becomes a retrieval dead letter at once, so it is warned about once, not fetched
/// again, and stays on the server until `dlq retry` (after the server's UTF8 is fixed).
async fn keep_substitute(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: Retrieved,
) -> Result<Processed, PollError> {
    let name = ctx.mailbox.name.as_str();
    let uidl = item_uidl(item).to_string();
    let text =
        "the server served a down-converted substitute (\"Cannot display Unicode content\"; \
                it did not accept UTF8, RFC 6856): not delivered, kept on the server";
    tracing::warn!(mailbox = name, msgno = item.msgno, uidl = %uidl, "{text}");
    crate::metrics::pop3_downconverted(name);
    if !uidl.is_empty() {
        ctx.store
            .record_retrieval_failure(name, &uidl, text, 1, crate::store::now_millis())
            .await?;
    }
    Ok(Processed {
        msgno: item.msgno,
        uidl: uidl.clone(),
        deletable: false,
        held: false,
        report: PollReport {
            fetched: 1,
            bytes: retrieved.size,
            failures: vec![format!("message {} ({uidl}): {text}", item.msgno)],
            ..Default::default()
        },
    })
}

/// The UIDL of a plan item as listed (for the retrieval-failure count).
fn item_uidl(item: &FetchItem) -> &str {
    match &item.identity {
        Identity::Uidl(u) => u,
        Identity::ByContent { uidl } => uidl.as_deref().unwrap_or(""),
    }
}

fn merge_report(into: &mut PollReport, from: &PollReport) {
    into.fetched += from.fetched;
    into.uidl_reused += from.uidl_reused;
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
    others: &HashMap<String, KnownMessage>,
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
    if item.failures > 0 {
        store.clear_retrieval_failure(name, item_uidl(item)).await?;
    }

    let mut retire = false;
    let (uidl, mut state, mut pending) = match (&item.identity, item.prior) {
        (Identity::Uidl(u), Prior::Plain) => match known.get(u) {
            // Fetched again for a sink that lacks it, and it is not what we fetched before:
            // the UIDL was reused between two polls for a message of the same size.
            Some(k)
                if k.content_known()
                    && !k.same_content(&retrieved.sha256, &retrieved.fingerprint) =>
            {
                tracing::warn!(mailbox = name, uidl = %u,
                    "UIDL now names another message (different content): delivering it as a new one");
                r.uidl_reused += 1;
                retire = true;
                (u.clone(), None, sink_names.clone())
            }
            k => (u.clone(), k.cloned(), item.sinks.clone()),
        },
        (Identity::Uidl(u), Prior::Reused) => {
            r.uidl_reused += 1;
            retire = true;
            (u.clone(), None, sink_names.clone())
        }
        (Identity::Uidl(u), Prior::Verify) => {
            let prior = known.get(u).or_else(|| others.get(u));
            match prior {
                Some(p) if p.same_content(&retrieved.sha256, &retrieved.fingerprint) => {
                    // The message we knew: carry on from its deliveries.
                    store
                        .confirm(name, u, item.size, &retrieved.fingerprint)
                        .await?;
                    let (p_sinks, waiting, dead) = plan::pending_sinks(Some(p), &sink_names, now);
                    r.waiting += waiting;
                    r.dead_earlier += dead;
                    (u.clone(), Some(p.clone()), p_sinks)
                }
                _ => {
                    tracing::warn!(mailbox = name, uidl = %u,
                        "UIDL now names another message (different content): delivering it as a new one");
                    r.uidl_reused += 1;
                    retire = true;
                    (u.clone(), None, sink_names.clone())
                }
            }
        }
        (Identity::ByContent { uidl }, _) => {
            let u = Identity::content_uidl(uidl.as_deref(), &retrieved.sha256);
            // Named by content, so not in the listing's UIDLs: this poll marked it gone before
            // fetching. Seen again now: back on the server.
            let mut k = known.get(&u).cloned();
            if k.is_none() {
                k = store
                    .lookup(name, std::slice::from_ref(&u))
                    .await?
                    .remove(&u)
                    .filter(|m| !m.is_history());
            }
            if k.is_some() {
                store
                    .confirm(name, &u, item.size, &retrieved.fingerprint)
                    .await?;
            }
            let (p, waiting, dead) = plan::pending_sinks(k.as_ref(), &sink_names, now);
            r.waiting += waiting;
            r.dead_earlier += dead;
            (u, k, p)
        }
    };
    if state.is_none() && some_vanished {
        // Same content as a message that vanished from the listing: the server renamed it.
        if let Some(old) = store
            .find_vanished_by_content(
                name,
                &retrieved.sha256,
                retrieved.size,
                &retrieved.fingerprint,
            )
            .await?
            .filter(|old| old.uidl != uidl)
        {
            tracing::warn!(mailbox = name, uidl = %uidl, previous_uidl = %old.uidl, key = %old.idem_key,
                "Known message re-listed under a new UIDL; keeping its deliveries");
            store.adopt(name, &old.uidl, &uidl, now).await?;
            let (p, waiting, dead) = plan::pending_sinks(Some(&old), &sink_names, now);
            r.matched_by_content += 1;
            r.uidl_reused = 0;
            retire = false;
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
        .unwrap_or_else(|| {
            IdempotencyKey::derive_content(name, &uidl, &retrieved.fingerprint)
                .as_str()
                .to_string()
        });
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
    if !pending.is_empty() || retire {
        store
            .record_fetched(&FetchRecord {
                mailbox: name,
                uidl: &uidl,
                idem_key: key.as_str(),
                size: retrieved.size,
                sha256: &retrieved.sha256,
                fingerprint: &retrieved.fingerprint,
                list_size: item.size,
                fetched_at: now,
                sinks: &pending,
                retire,
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
    let retrieved_fingerprint = retrieved.fingerprint.clone();
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
        list_size: Some(item.size),
        fingerprint: Some(retrieved_fingerprint),
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
    let held = sink_names.iter().all(|s| {
        matches!(
            after.deliveries.get(s),
            Some(DeliveryState::Delivered { .. })
        )
    });
    Ok(Processed {
        msgno: item.msgno,
        uidl,
        deletable,
        held,
        report: r,
    })
}
