//! Step 3 of a poll: the listing against the state, the plan, and what the plan leaves out
//! (sinks that are down, messages over the size cap).

use super::{MailboxContext, PollError, PollReport, PRUNE_EVERY_MS};
use crate::engine::deliver::SinkHandle;
use crate::engine::plan::{
    self, DeleteItem, FetchItem, Identity, Known, Listed, Plan, Prior, Warning,
};
use crate::engine::routing;
use crate::store::{KnownMessage, ListedState};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// What the rest of the poll works from.
pub(super) struct Planned {
    /// Messages listed last time that some sink still lacks, by UIDL (the ones every sink
    /// holds are never fetched, except to be compared by content, and are then here too).
    pub known: HashMap<String, KnownMessage>,
    /// Rows at listed UIDLs that were not listed last time (back again, or history).
    pub others: HashMap<String, KnownMessage>,
    pub fetch: Vec<FetchItem>,
    pub delete: Vec<DeleteItem>,
    /// Some message left the listing without being deleted by us, so a new UIDL may be one
    /// of them renamed (worth a lookup by content). Only asked when something is fetched.
    pub some_vanished: bool,
    /// New messages the routing rules decided from their headers (`TOP n 0`), by number.
    pub routes: HashMap<u32, crate::route::Route>,
}

/// Loads what the state knows about the listing, plans, records what left the listing, and
/// trims the fetch list to what may be fetched now.
pub(super) async fn plan_poll(
    ctx: &MailboxContext,
    session: &mut crate::pop3::Transaction,
    listing: &[Listed],
    report: &mut PollReport,
) -> Result<Planned, PollError> {
    let name = ctx.mailbox.name.as_str();
    // The mailbox's own sinks; a message with a recorded route goes to the route's instead
    // (`ctx.sinks` holds every sink the rules can name).
    let sink_names: Vec<String> = ctx.mailbox.sinks.clone();
    let ListedState {
        mut settled,
        open: mut known,
    } = ctx.store.load_listed(name, &sink_names).await?;
    // A settled message listed at another size is compared by content after the fetch,
    // which needs its whole row.
    let resized: Vec<String> = listing
        .iter()
        .filter_map(|l| {
            let u = l.uidl.as_ref()?;
            let s = settled.get(u)?;
            s.list_size
                .is_some_and(|size| size != l.size)
                .then(|| u.clone())
        })
        .collect();
    if !resized.is_empty() {
        for u in &resized {
            settled.remove(u);
        }
        known.extend(ctx.store.lookup(name, &resized).await?);
    }
    let unknown: Vec<String> = listing
        .iter()
        .filter_map(|l| l.uidl.as_ref())
        .filter(|u| !known.contains_key(*u) && !settled.contains_key(*u))
        .cloned()
        .collect();
    let others = if unknown.is_empty() {
        HashMap::new()
    } else {
        ctx.store.lookup(name, &unknown).await?
    };
    let failures = ctx.store.retrieval_failures(name).await?;
    let now = crate::store::now_millis();
    let plan = plan::plan(
        listing,
        &Known {
            settled: &settled,
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
    let gone: Vec<String> = known
        .keys()
        .chain(settled.keys())
        .filter(|u| !plan.is_listed(u))
        .cloned()
        .collect();
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
    let configured: Vec<String> = ctx.sinks.iter().map(|s| s.name.clone()).collect();
    routing::drop_unconfigured(&mut fetch, &known, &configured, report);
    let routes = match &ctx.mailbox.routes {
        Some(rules) => {
            routing::route_before_fetch(rules, name, session, &mut fetch, &known, report).await?
        }
        None => HashMap::new(),
    };
    skip_sinks_that_are_down(ctx, &mut fetch, report);
    skip_too_large(ctx, &mut fetch, report);
    skip_over_download_budget(ctx, &mut fetch, report);
    ctx.progress
        .plan(fetch.len() as u64, fetch.iter().map(|f| f.size).sum());
    ctx.progress.budgets(
        ctx.sinks
            .iter()
            .filter_map(|h| h.sink.daily_budget(name))
            .collect(),
    );
    // Only a message gone from the listing can come back under a new UIDL; without one,
    // skip the per-message lookup by content.
    let some_vanished =
        !fetch.is_empty() && (!gone.is_empty() || ctx.store.has_vanished(name).await?);
    Ok(Planned {
        known,
        others,
        fetch,
        delete,
        some_vanished,
        routes,
    })
}

/// Too large to fetch: reported every poll (never skipped in silence), kept on the server.
fn skip_too_large(ctx: &MailboxContext, fetch: &mut Vec<FetchItem>, report: &mut PollReport) {
    let cap = ctx.mailbox.pop3.max_message_bytes;
    fetch.retain(|f| {
        if f.size > cap {
            let text = format!(
                "message {} is {} bytes, over max_message_bytes ({cap}); left on the server",
                f.msgno, f.size
            );
            tracing::error!(
                mailbox = %ctx.mailbox.name,
                msgno = f.msgno,
                size = f.size,
                "Message too large, not fetched"
            );
            report.failures.push(text);
        }
        f.size <= cap
    });
}

/// The host's daily download budget: each message is reserved by its LIST size, in plan order;
/// one that does not fit stays on the server (waiting, never dead-lettered) until the next UTC
/// midnight, and the poll says so (log, summary, report file, metric).
fn skip_over_download_budget(
    ctx: &MailboxContext,
    fetch: &mut Vec<FetchItem>,
    report: &mut PollReport,
) {
    use crate::politeness::budget::Held;
    let Some(budget) = &ctx.host.budget else {
        return;
    };
    let host = ctx.host.host().to_string();
    let (mut held, mut until) = (0usize, None);
    fetch.retain(|f| match budget.reserve(f.size) {
        Ok(()) => true,
        Err(Held::Until(t)) => {
            held += 1;
            until = Some(t);
            false
        }
        Err(Held::TooLarge) => {
            report.failures.push(format!(
                "message {} is {} bytes, over the whole daily download budget of {host} ({} bytes, servers.{host}.bytes_per_day); left on the server",
                f.msgno, f.size, budget.limit()
            ));
            false
        }
    });
    crate::metrics::server_download(&host, budget.used(), until);
    let Some(until) = until else { return };
    // The fleet view counts the account as paused until then, like a sink's daily quota.
    ctx.progress
        .paused(&format!("download budget of {host}"), until);
    let until = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tracing::warn!(mailbox = %ctx.mailbox.name, host = %host, held, budget = budget.limit(), until = %until,
        "Daily download budget of the host spent: messages wait on the server until then");
    report.download_held = Some(super::DownloadHeld {
        host,
        messages: held,
        until,
        budget: budget.limit(),
    });
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
    let paused = |h: &&SinkHandle| h.sink.paused_until(&ctx.mailbox.name).is_some();
    let down: Vec<&str> = ctx
        .sinks
        .iter()
        .filter(|h| h.circuit.open_until(now).is_some() || paused(h))
        .map(|h| h.name.as_str())
        .collect();
    if down.is_empty() {
        return;
    }
    // Paused sinks have a known end, so the progress can say when their messages go.
    let pauses: Vec<_> = ctx
        .sinks
        .iter()
        .filter_map(|h| Some((h.name.as_str(), h.sink.paused_until(&ctx.mailbox.name)?)))
        .collect();
    for (sink, p) in &pauses {
        ctx.progress.paused(sink, p.until);
    }
    let before = fetch.len();
    let mut waiting = 0;
    let (mut deferred, mut deferred_bytes) = (0u64, 0u64);
    fetch.retain_mut(|f| {
        if f.prior != Prior::Plain || !matches!(f.identity, Identity::Uidl(_)) {
            return true;
        }
        let n = f.sinks.len();
        if f.sinks.iter().any(|s| pauses.iter().any(|(p, _)| p == s)) {
            deferred += 1;
            deferred_bytes += f.size;
        }
        f.sinks.retain(|s| !down.contains(&s.as_str()));
        waiting += n - f.sinks.len();
        !f.sinks.is_empty()
    });
    ctx.progress.deferred(deferred, deferred_bytes);
    report.waiting += waiting;
    let text = format!(
        "sink(s) {} down or paused: {} message(s) wait on the server for them, not fetched this poll",
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
