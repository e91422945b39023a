//! One retrieved message, top-down: who it is (identify, or adopt a renamed one), record the
//! attempt, deliver to each pending sink, record the receipts, and whether it may be deleted.

use super::{MailboxContext, PollError, PollReport};
use crate::engine::deliver::{deliver_to_sink, SinkHandle};
use crate::engine::plan::{self, FetchItem, Identity, Prior};
use crate::engine::routing;
use crate::key::IdempotencyKey;
use crate::pop3::Retrieved;
use crate::sink::SpooledMessage;
use crate::store::{DeliveryState, FetchRecord, KnownMessage, Millis, Outcome, OutcomeResult};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// Result of processing one fetched message.
pub(super) struct Processed {
    pub msgno: u32,
    pub uidl: String,
    pub deletable: bool,
    /// Every sink holds it now.
    pub held: bool,
    pub report: PollReport,
}

/// Who a retrieved message is, and which sinks still need it.
struct Identified {
    /// Its name in the state.
    uidl: String,
    /// What the state knew about it (`None`: a new message).
    state: Option<KnownMessage>,
    pending: Vec<String>,
    /// Another message held this UIDL: move that row to history first.
    retire: bool,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn process(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: Retrieved,
    known: &HashMap<String, KnownMessage>,
    others: &HashMap<String, KnownMessage>,
    some_vanished: bool,
    routed: Option<&crate::route::Route>,
    shutdown: &CancellationToken,
) -> Result<Processed, PollError> {
    let name = ctx.mailbox.name.as_str();
    let mut r = PollReport {
        fetched: 1,
        bytes: retrieved.size,
        ..Default::default()
    };
    let now = crate::store::now_millis();
    if item.failures > 0 {
        ctx.store
            .clear_retrieval_failure(name, item_uidl(item))
            .await?;
    }
    let mut id = identify(ctx, item, &retrieved, known, others, now, &mut r).await?;
    if id.state.is_none() && some_vanished {
        adopt_renamed(ctx, &retrieved, &mut id, now, &mut r).await?;
    }
    let route = match choose_route(ctx, item, &retrieved, &mut id, routed).await? {
        Routed::To(route) => route,
        Routed::Kept(reason) => {
            routing::note_kept(&mut r, vec![format!("message {}: {reason}", item.msgno)]);
            ctx.progress.message_done(retrieved.size);
            return Ok(Processed {
                msgno: item.msgno,
                uidl: id.uidl,
                deletable: false,
                held: false,
                report: r,
            });
        }
    };
    let key = IdempotencyKey::from_stored(match &id.state {
        Some(s) => s.idem_key.clone(),
        None => IdempotencyKey::derive_content(name, &id.uidl, &retrieved.fingerprint)
            .as_str()
            .to_string(),
    });
    let message = SpooledMessage {
        mailbox: name.to_string(),
        uidl: id.uidl.clone(),
        path: retrieved.file.to_path_buf(),
        size: retrieved.size,
        sha256: retrieved.sha256.clone(),
        fetched_at: chrono::Utc::now(),
        seen_before: id.state.is_some(),
        params: Default::default(),
        owner: ctx.owner.clone(),
    };
    record_attempt(ctx, item, &retrieved, &id, &key, route.as_ref(), now).await?;
    let outcomes = deliver_pending(
        ctx,
        item.msgno,
        &id,
        &message,
        &key,
        route.as_ref(),
        &mut r,
        shutdown,
    )
    .await;
    ctx.store.record_outcomes(&outcomes).await?;
    ctx.progress.message_done(retrieved.size);
    let fingerprint = retrieved.fingerprint.clone();
    // The spool file goes as soon as every sink has answered.
    drop(retrieved);
    Ok(settle(
        ctx,
        item,
        id,
        &key,
        &message,
        fingerprint,
        &outcomes,
        route,
        now,
        r,
    ))
}

/// Where a message goes: a known one where its recorded route said (or the mailbox's sinks);
/// a new one where the rules say, decided from its headers before RETR or from the spool
/// file now.
enum Routed {
    To(Option<crate::route::Route>),
    Kept(String),
}

async fn choose_route(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: &Retrieved,
    id: &mut Identified,
    routed: Option<&crate::route::Route>,
) -> Result<Routed, PollError> {
    let name = ctx.mailbox.name.as_str();
    let (None, Some(rules)) = (&id.state, &ctx.mailbox.routes) else {
        return Ok(Routed::To(id.state.as_ref().and_then(|s| s.route.clone())));
    };
    let decision = match routed {
        Some(rt) => crate::route::Decision::Route(rt.clone()),
        None => routing::decide_spooled(rules, name, &retrieved.file, item.size)
            .await
            .map_err(|source| PollError::Spool {
                path: retrieved.file.display().to_string(),
                source,
            })?,
    };
    Ok(match decision {
        crate::route::Decision::Keep { reason } => {
            tracing::info!(mailbox = name, uidl = %id.uidl, reason = %reason, "Kept on the server by the routing rules");
            Routed::Kept(reason)
        }
        crate::route::Decision::Route(rt) => {
            tracing::debug!(mailbox = name, uidl = %id.uidl, route = %rt.describe(), "Routed");
            id.pending = rt.sinks();
            Routed::To(Some(rt))
        }
    })
}

/// A message the server served as a down-converted substitute (no `UTF8` mode): not delivered
/// (the substitute is not the message, and differs at every RETR) and never deleted. With a
/// UIDL it becomes a retrieval dead letter at once, so it is warned about once, not fetched
/// again, and stays on the server until `dlq retry` (after the server's UTF8 is fixed).
pub(super) async fn keep_substitute(
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

/// Names the message in the state: by its UIDL (confirmed by content where the plan asked),
/// or by its content.
async fn identify(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: &Retrieved,
    known: &HashMap<String, KnownMessage>,
    others: &HashMap<String, KnownMessage>,
    now: Millis,
    r: &mut PollReport,
) -> Result<Identified, PollError> {
    let name = ctx.mailbox.name.as_str();
    let store = ctx.store.as_ref();
    let sink_names = || ctx.mailbox.sinks.clone();
    let reused = |u: &str, r: &mut PollReport| {
        r.uidl_reused += 1;
        Identified {
            uidl: u.to_string(),
            state: None,
            pending: sink_names(),
            retire: true,
        }
    };
    Ok(match (&item.identity, item.prior) {
        (Identity::Uidl(u), Prior::Plain) => match known.get(u) {
            // Fetched again for a sink that lacks it, and it is not what we fetched before:
            // the UIDL was reused between two polls for a message of the same size.
            Some(k)
                if k.content_known()
                    && !k.same_content(&retrieved.sha256, &retrieved.fingerprint) =>
            {
                tracing::warn!(mailbox = name, uidl = %u,
                    "UIDL now names another message (different content): delivering it as a new one");
                reused(u, r)
            }
            k => Identified {
                uidl: u.clone(),
                state: k.cloned(),
                pending: item.sinks.clone(),
                retire: false,
            },
        },
        (Identity::Uidl(u), Prior::Reused) => reused(u, r),
        (Identity::Uidl(u), Prior::Verify) => {
            match known.get(u).or_else(|| others.get(u)) {
                Some(p) if p.same_content(&retrieved.sha256, &retrieved.fingerprint) => {
                    // The message we knew: carry on from its deliveries.
                    store
                        .confirm(name, u, item.size, &retrieved.fingerprint)
                        .await?;
                    let (pending, waiting, dead) = plan::pending_sinks(Some(p), &sink_names(), now);
                    r.waiting += waiting;
                    r.dead_earlier += dead;
                    Identified {
                        uidl: u.clone(),
                        state: Some(p.clone()),
                        pending,
                        retire: false,
                    }
                }
                _ => {
                    tracing::warn!(mailbox = name, uidl = %u,
                        "UIDL now names another message (different content): delivering it as a new one");
                    reused(u, r)
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
            let (pending, waiting, dead) = plan::pending_sinks(k.as_ref(), &sink_names(), now);
            r.waiting += waiting;
            r.dead_earlier += dead;
            Identified {
                uidl: u,
                state: k,
                pending,
                retire: false,
            }
        }
    })
}

/// A new message with the content of one that vanished from the listing: the server renamed
/// it. It takes over the old row's key and deliveries, so it is not sent again.
async fn adopt_renamed(
    ctx: &MailboxContext,
    retrieved: &Retrieved,
    id: &mut Identified,
    now: Millis,
    r: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
    let Some(old) = ctx
        .store
        .find_vanished_by_content(
            name,
            &retrieved.sha256,
            retrieved.size,
            &retrieved.fingerprint,
        )
        .await?
        .filter(|old| old.uidl != id.uidl)
    else {
        return Ok(());
    };
    tracing::warn!(mailbox = name, uidl = %id.uidl, previous_uidl = %old.uidl, key = %old.idem_key,
        "Known message re-listed under a new UIDL; keeping its deliveries");
    ctx.store.adopt(name, &old.uidl, &id.uidl, now).await?;
    let sink_names: Vec<String> = ctx.mailbox.sinks.clone();
    let (pending, waiting, dead) = plan::pending_sinks(Some(&old), &sink_names, now);
    r.matched_by_content += 1;
    r.uidl_reused = 0;
    r.waiting += waiting;
    r.dead_earlier += dead;
    id.retire = false;
    id.pending = pending;
    id.state = Some(KnownMessage {
        uidl: id.uidl.clone(),
        ..old
    });
    Ok(())
}

/// The message row and a pending row per sink, committed before any sink sees the message.
async fn record_attempt(
    ctx: &MailboxContext,
    item: &FetchItem,
    retrieved: &Retrieved,
    id: &Identified,
    key: &IdempotencyKey,
    route: Option<&crate::route::Route>,
    now: Millis,
) -> Result<(), PollError> {
    if id.pending.is_empty() && !id.retire {
        return Ok(());
    }
    ctx.store
        .record_fetched(&FetchRecord {
            mailbox: &ctx.mailbox.name,
            uidl: &id.uidl,
            idem_key: key.as_str(),
            size: retrieved.size,
            sha256: &retrieved.sha256,
            fingerprint: &retrieved.fingerprint,
            list_size: item.size,
            fetched_at: now,
            sinks: &id.pending,
            retire: id.retire,
            route,
        })
        .await?;
    Ok(())
}

/// Every pending sink at once, each with its own in-poll retries and the parameters its
/// target in the route names.
#[allow(clippy::too_many_arguments)]
async fn deliver_pending(
    ctx: &MailboxContext,
    msgno: u32,
    id: &Identified,
    message: &SpooledMessage,
    key: &IdempotencyKey,
    route: Option<&crate::route::Route>,
    r: &mut PollReport,
    shutdown: &CancellationToken,
) -> Vec<Outcome> {
    let handles: Vec<&SinkHandle> = ctx
        .sinks
        .iter()
        .filter(|h| id.pending.contains(&h.name))
        .collect();
    if handles.len() < id.pending.len() {
        let missing: Vec<String> = id
            .pending
            .iter()
            .filter(|s| !handles.iter().any(|h| &h.name == *s))
            .cloned()
            .collect();
        r.failures
            .push(routing::unconfigured_text(msgno, &id.uidl, &missing));
    }
    // Without a route every sink gets the message as it is; with one, a copy carrying the
    // parameters of that sink's target.
    let messages: Vec<std::borrow::Cow<'_, SpooledMessage>> = handles
        .iter()
        .map(|h| match route {
            Some(rt) => std::borrow::Cow::Owned(SpooledMessage {
                params: rt.params(&h.name),
                ..message.clone()
            }),
            None => std::borrow::Cow::Borrowed(message),
        })
        .collect();
    let outcomes =
        futures_util::future::join_all(handles.iter().zip(&messages).map(|(h, message)| {
            let first = id
                .state
                .as_ref()
                .and_then(|s| match s.deliveries.get(&h.name) {
                    Some(DeliveryState::Pending {
                        first_attempt_at, ..
                    }) => *first_attempt_at,
                    _ => None,
                });
            deliver_to_sink(h, message.as_ref(), key, first, shutdown)
        }))
        .await;
    for h in &handles {
        if let Some(p) = h.sink.paused_until(&ctx.mailbox.name) {
            ctx.progress.paused(&h.name, p.until);
        }
    }
    outcomes
}

/// The message's state after its recorded outcomes: counted, logged, and whether it may be
/// deleted now.
#[allow(clippy::too_many_arguments)]
fn settle(
    ctx: &MailboxContext,
    item: &FetchItem,
    id: Identified,
    key: &IdempotencyKey,
    message: &SpooledMessage,
    fingerprint: String,
    outcomes: &[Outcome],
    route: Option<crate::route::Route>,
    now: Millis,
    mut r: PollReport,
) -> Processed {
    let name = ctx.mailbox.name.as_str();
    let Identified { uidl, state, .. } = id;
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
        fingerprint: Some(fingerprint),
        route,
        deliveries: HashMap::new(),
    });
    for o in outcomes {
        let (sink, key) = (o.sink.as_str(), key.as_str());
        match &o.result {
            OutcomeResult::Delivered(receipt) => {
                r.delivered += 1;
                if receipt.duplicate {
                    r.duplicates += 1;
                }
                if let Some(stub) = &receipt.stub {
                    r.stubbed += 1;
                    tracing::info!(mailbox = name, sink, key, original = %stub.object,
                        size = stub.size, "Delivered a stub: the message is over the target's size limit");
                }
                tracing::debug!(mailbox = name, sink, key,
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
                tracing::warn!(mailbox = name, sink, key,
                    attempts = o.attempts_made, error = %error, "Delivery failed, will retry in a later poll");
            }
            OutcomeResult::Dead { error } => {
                r.dead_lettered += 1;
                r.failures
                    .push(format!("{uidl} -> {}: dead-lettered: {error}", o.sink));
                tracing::error!(mailbox = name, sink, key,
                    attempts = o.attempts_made, error = %error, "Delivery failed permanently, dead-lettered");
            }
        }
    }
    let sink_names: Vec<String> = ctx.mailbox.sinks.clone();
    let deletable = plan::deletable(
        &after,
        &sink_names,
        ctx.mailbox.delete,
        crate::store::now_millis(),
    );
    let held = after.sinks_or(&sink_names).iter().all(|s| {
        matches!(
            after.deliveries.get(s),
            Some(DeliveryState::Delivered { .. })
        )
    });
    Processed {
        msgno: item.msgno,
        uidl,
        deletable,
        held,
        report: r,
    }
}
