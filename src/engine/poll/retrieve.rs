//! Steps 4 to 6 of a poll, as a pipeline: RETR streams messages into the spool while earlier
//! ones are delivered and their receipts recorded (see [`super::message`]).

use super::message::{keep_substitute, process, Processed};
use super::planning::Planned;
use super::{MailboxContext, PollError, PollReport};
use crate::engine::plan::{DeleteItem, FetchItem, Listed};
use crate::pop3::{self, Pop3Error, Retrieved};
use futures_util::future::Either;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the fetching of one poll ended.
pub(super) struct Fetched {
    processed: Vec<Processed>,
    /// Messages asked for that were not retrieved and processed whole.
    missing: usize,
    /// The connection broke, while this message was being retrieved when that is known.
    broken: Option<(Option<u32>, Pop3Error)>,
}

impl Fetched {
    /// Every message asked for was retrieved and is now in every sink: the session may end
    /// with QUIT.
    pub(super) fn clean(&self) -> bool {
        self.missing == 0 && self.broken.is_none() && self.processed.iter().all(|p| p.held)
    }

    /// The retrieved messages that may now be deleted.
    pub(super) fn deletable(self) -> impl Iterator<Item = DeleteItem> {
        self.processed
            .into_iter()
            .filter(|p| p.deletable)
            .map(|p| DeleteItem {
                msgno: p.msgno,
                uidl: p.uidl,
            })
    }

    /// Counts a broken connection against the message being retrieved when it broke.
    pub(super) async fn record_broken(
        &self,
        ctx: &MailboxContext,
        listing: &[Listed],
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        match &self.broken {
            Some((Some(msgno), error)) => {
                record_broken_retrieval(ctx, listing, *msgno, error, report).await
            }
            Some((None, error)) => {
                report
                    .failures
                    .push(format!("the connection broke during RETR: {error}"));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// RETR of every planned message into the spool, each handed on as it completes to a bounded
/// set of concurrent [`process`] calls.
pub(super) async fn fetch_and_deliver(
    ctx: &MailboxContext,
    session: &mut pop3::Transaction,
    planned: Planned,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<Fetched, PollError> {
    let Planned {
        known,
        others,
        fetch,
        some_vanished,
        routes,
        ..
    } = planned;
    let (known, others, routes) = (&known, &others, &routes);
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
                            running.push(Either::Left(keep_substitute(ctx, item, retrieved)));
                        }
                        (Some(item), Ok(retrieved)) => {
                            let routed = routes.get(&msgno);
                            running.push(Either::Right(process(ctx, item, retrieved, known, others, some_vanished, routed, shutdown)));
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

fn merge_report(into: &mut PollReport, from: &PollReport) {
    into.fetched += from.fetched;
    into.uidl_reused += from.uidl_reused;
    into.bytes += from.bytes;
    into.delivered += from.delivered;
    into.duplicates += from.duplicates;
    into.stubbed += from.stubbed;
    into.matched_by_content += from.matched_by_content;
    into.retry_later += from.retry_later;
    into.dead_lettered += from.dead_lettered;
    into.dead_earlier += from.dead_earlier;
    into.waiting += from.waiting;
    into.kept_by_rules += from.kept_by_rules;
    into.warnings.extend(from.warnings.iter().cloned());
    into.failures.extend(from.failures.iter().cloned());
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
