//! `popbridge plan`: what a run would do to each listed message, with no side effect — the
//! server is listed (LIST, UIDL, for routing rules `TOP n 0` of new messages, then QUIT: no
//! RETR, no DELE), the state is read, never written, and no sink is called.

use super::plan::{self, Identity, Known, Listed, Prior};
use super::poll::{MailboxContext, PollError};
use crate::pop3;
use crate::store::{DeliveryState, KnownMessage};
use serde::Serialize;
use std::collections::HashMap;

/// What a run would do with one listed message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Retrieved and delivered to these sinks.
    Fetch { sinks: Vec<String>, why: String },
    /// Every sink holds it and the policy says it goes.
    Delete,
    /// Left on the server, and why.
    Keep { why: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub msgno: u32,
    pub uidl: Option<String>,
    pub size: u64,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, Serialize)]
pub struct Preview {
    pub mailbox: String,
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
}

impl Preview {
    pub fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.steps.iter().filter(|s| f(&s.action)).count()
    }
}

pub async fn preview(ctx: &MailboxContext) -> Result<Preview, PollError> {
    let name = ctx.mailbox.name.as_str();
    let mut session = pop3::connect(&ctx.mailbox.pop3).await?;
    let sizes = session.list().await?;
    let uidls = session.uidl().await?;
    let listing = super::poll::merge_listing(&sizes, uidls);
    let known = ctx.store.load_mailbox(name).await?;
    let unknown: Vec<String> = listing
        .iter()
        .filter_map(|l| l.uidl.clone())
        .filter(|u| !known.contains_key(u))
        .collect();
    let others = ctx.store.lookup(name, &unknown).await?;
    let failures = ctx.store.retrieval_failures(name).await?;
    let sinks: Vec<String> = ctx.mailbox.sinks.clone();
    let now = crate::store::now_millis();
    let p = plan::plan(
        &listing,
        &Known {
            settled: &HashMap::new(),
            listed: &known,
            others: &others,
            failures: &failures,
        },
        &sinks,
        ctx.mailbox.delete,
        now,
    );
    let decisions = match &ctx.mailbox.routes {
        Some(rules) => {
            super::routing::decide_by_headers(rules, name, &mut session, &p.fetch, &known).await?
        }
        None => HashMap::new(),
    };
    let _ = session.quit().await;
    let after_retrieval = ctx.mailbox.routes.as_ref().map(|r| r.needs_body());
    let fetch: HashMap<u32, &plan::FetchItem> = p.fetch.iter().map(|f| (f.msgno, f)).collect();
    let delete: Vec<u32> = p.delete.iter().map(|d| d.msgno).collect();
    let cap = ctx.mailbox.pop3.max_message_bytes;
    let mut steps: Vec<Step> = listing
        .iter()
        .map(|l| Step {
            msgno: l.msgno,
            uidl: l.uidl.clone(),
            size: l.size,
            action: routed(
                action(
                    l,
                    fetch.get(&l.msgno).copied(),
                    &delete,
                    &known,
                    &p,
                    cap,
                    &sinks,
                    now,
                ),
                l,
                decisions.get(&l.msgno),
                &known,
                after_retrieval,
            ),
        })
        .collect();
    let order: Vec<u32> = p.fetch.iter().map(|f| f.msgno).collect();
    hold_over_download_budget(ctx, &order, &mut steps);
    Ok(Preview {
        mailbox: name.to_string(),
        steps,
        warnings: p.warnings.iter().map(super::poll::describe).collect(),
    })
}

/// What a run would leave on the server for the host's daily download budget: fetches in
/// the order a run reserves them, against what the budget has left (nothing is reserved).
fn hold_over_download_budget(ctx: &MailboxContext, order: &[u32], steps: &mut [Step]) {
    use crate::politeness::budget::Held;
    let Some(budget) = &ctx.host.budget else {
        return;
    };
    let host = ctx.host.host();
    let mut planned = 0u64;
    for msgno in order {
        let Some(step) = steps.iter_mut().find(|s| s.msgno == *msgno) else {
            continue;
        };
        if !matches!(step.action, Action::Fetch { .. }) {
            continue;
        }
        let why = match budget.would_fit(planned, step.size) {
            Ok(()) => {
                planned += step.size;
                continue;
            }
            Err(Held::Until(t)) => format!(
                "the daily download budget of {host} is spent (servers.{host}.bytes_per_day); fetched from {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Err(Held::TooLarge) => format!(
                "{} bytes, over the whole daily download budget of {host} (servers.{host}.bytes_per_day)",
                step.size
            ),
        };
        step.action = Action::Keep { why };
    }
}

/// The routing side of a step: the decision for a new message (kept ones are not fetched),
/// the recorded route of a known one.
fn routed(
    action: Action,
    l: &Listed,
    decision: Option<&crate::route::Decision>,
    known: &HashMap<String, KnownMessage>,
    after_retrieval: Option<bool>,
) -> Action {
    use crate::route::Decision;
    let Action::Fetch { sinks, why } = action else {
        return action;
    };
    let recorded = l
        .uidl
        .as_ref()
        .and_then(|u| known.get(u))
        .and_then(|k| k.route.as_ref());
    match (decision, recorded, after_retrieval) {
        (Some(Decision::Keep { reason }), _, _) => Action::Keep {
            why: format!("{reason}; not fetched"),
        },
        (Some(Decision::Route(r)), _, _) => Action::Fetch {
            sinks: r.sinks(),
            why: format!("{why}; route {}", r.describe()),
        },
        (None, Some(r), _) => Action::Fetch {
            sinks,
            why: format!("{why}; recorded route {}", r.describe()),
        },
        (None, None, Some(true)) => Action::Fetch {
            sinks,
            why: format!("{why}; routing rules need the body: decided after retrieval"),
        },
        _ => Action::Fetch { sinks, why },
    }
}

#[allow(clippy::too_many_arguments)]
fn action(
    l: &Listed,
    fetch: Option<&plan::FetchItem>,
    delete: &[u32],
    known: &HashMap<String, KnownMessage>,
    p: &plan::Plan,
    cap: u64,
    sinks: &[String],
    now: crate::store::Millis,
) -> Action {
    if let Some(f) = fetch {
        if f.size > cap {
            return Action::Keep {
                why: format!("{} bytes, over max_message_bytes ({cap})", f.size),
            };
        }
        let why = match (&f.identity, f.prior) {
            (Identity::ByContent { .. }, _) => "identified by content (no unique UIDL)",
            (_, Prior::Reused) => "new message under a reused UIDL",
            (_, Prior::Verify) => {
                "known UIDL with another size or back in the listing: compared by content"
            }
            _ if l.uidl.as_ref().is_some_and(|u| known.contains_key(u)) => "retry",
            _ => "new",
        };
        return Action::Fetch {
            sinks: f.sinks.clone(),
            why: why.to_string(),
        };
    }
    if delete.contains(&l.msgno) {
        return Action::Delete;
    }
    if p.unretrievable.iter().any(|(n, _)| *n == l.msgno) {
        return Action::Keep {
            why: "its RETR broke the connection too often (dead letter, sink (retrieval))".into(),
        };
    }
    let k = l.uidl.as_ref().and_then(|u| known.get(u));
    let Some(k) = k else {
        return Action::Keep {
            why: "dropped by an operator".into(),
        };
    };
    let mut waiting = Vec::new();
    let mut dead = Vec::new();
    for s in sinks {
        match k.deliveries.get(s) {
            Some(DeliveryState::Pending {
                next_attempt_at: Some(t),
                ..
            }) if *t > now => waiting.push(format!("{s} (next try in {}s)", (t - now) / 1000)),
            Some(DeliveryState::Dead { .. }) => dead.push(format!("{s} (dead letter)")),
            Some(DeliveryState::Dropped { .. }) => dead.push(format!("{s} (dropped)")),
            _ => {}
        }
    }
    let why = if !waiting.is_empty() || !dead.is_empty() {
        format!("waiting for {}", [waiting, dead].concat().join(", "))
    } else {
        "in every sink; the delete policy keeps it".into()
    };
    Action::Keep { why }
}
