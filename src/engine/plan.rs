//! Deciding, with no I/O, what one poll must do: which messages to fetch for which sinks,
//! which to delete, and what looks wrong with the server's listing.

use crate::config::DeletePolicy;
use crate::store::{DeliveryState, KnownMessage, Millis};
use std::collections::HashMap;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// One message as the server listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub msgno: u32,
    pub size: u64,
    /// `None` when the server has no UIDL command.
    pub uidl: Option<String>,
}

/// How a message is named in the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// By its UIDL, unique in the listing.
    Uidl(String),
    /// By its content, known only after fetching: the server gave no UIDL, or gave this one to
    /// several messages at once.
    ByContent { uidl: Option<String> },
}

impl Identity {
    /// The state name of a message whose identity comes from its content.
    pub fn content_uidl(listed_uidl: Option<&str>, sha256: &str) -> String {
        let short = sha256.get(..16).unwrap_or(sha256);
        match listed_uidl {
            Some(u) => format!("{u}#{short}"),
            None => format!("sha256:{short}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchItem {
    pub msgno: u32,
    pub size: u64,
    pub identity: Identity,
    /// Sinks that still need the message (for `ByContent`, decided again after the fetch).
    pub sinks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteItem {
    pub msgno: u32,
    pub uidl: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The server gave one UIDL to several messages (RFC 1939 forbids it).
    DuplicateUidl { uidl: String, count: usize },
    /// The server has no UIDL command: every message is fetched to be identified by content.
    NoUidl,
    /// None of the messages we knew on the server is listed any more, and new ones are: the
    /// server probably lost its UIDL state. New messages are matched by content before delivery.
    UidlReset { known: usize, new: usize },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub fetch: Vec<FetchItem>,
    pub delete: Vec<DeleteItem>,
    pub warnings: Vec<Warning>,
    /// Every distinct UIDL listed (for `Store::record_presence`).
    pub listed: Vec<String>,
    /// Deliveries waiting for their next attempt time.
    pub waiting: usize,
    /// Deliveries dead-lettered: their messages stay on the server until an operator acts.
    pub dead: usize,
    /// Dead letters an operator dropped (`dlq drop`): still on the server, but given up on
    /// purpose, so they do not make a poll incomplete.
    pub dropped: usize,
}

/// Sinks of `sinks` that still need this message now.
pub fn pending_sinks(
    known: Option<&KnownMessage>,
    sinks: &[String],
    now: Millis,
) -> (Vec<String>, usize, usize) {
    let mut pending = Vec::new();
    let (mut waiting, mut dead) = (0, 0);
    for sink in sinks {
        match known.and_then(|m| m.deliveries.get(sink)) {
            None => pending.push(sink.clone()),
            Some(DeliveryState::Delivered { .. }) => {}
            Some(DeliveryState::Dead { .. }) => dead += 1,
            // Given up on by the operator: neither pending nor a failure (see `dropped_sinks`).
            Some(DeliveryState::Dropped { .. }) => {}
            Some(DeliveryState::Pending {
                next_attempt_at, ..
            }) => match next_attempt_at {
                Some(t) if *t > now => waiting += 1,
                _ => pending.push(sink.clone()),
            },
        }
    }
    (pending, waiting, dead)
}

/// How many of `sinks` an operator dropped for this message (`dlq drop`).
pub fn dropped_sinks(known: Option<&KnownMessage>, sinks: &[String]) -> usize {
    sinks
        .iter()
        .filter(|s| {
            matches!(
                known.and_then(|m| m.deliveries.get(*s)),
                Some(DeliveryState::Dropped { .. })
            )
        })
        .count()
}

/// True when every sink holds the message and the policy says it may go.
pub fn deletable(
    known: &KnownMessage,
    sinks: &[String],
    policy: DeletePolicy,
    now: Millis,
) -> bool {
    let mut last_delivery = 0;
    for sink in sinks {
        match known.deliveries.get(sink) {
            Some(DeliveryState::Delivered { at, .. }) => last_delivery = last_delivery.max(*at),
            _ => return false,
        }
    }
    match policy {
        DeletePolicy::Never => false,
        DeletePolicy::AfterDelivery => true,
        DeletePolicy::AfterDays(days) => last_delivery + i64::from(days) * DAY_MS <= now,
    }
}

pub fn plan(
    listing: &[Listed],
    known: &HashMap<String, KnownMessage>,
    sinks: &[String],
    policy: DeletePolicy,
    now: Millis,
) -> Plan {
    let mut out = Plan::default();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in listing {
        if let Some(u) = &l.uidl {
            *counts.entry(u.as_str()).or_default() += 1;
        }
    }
    if listing.iter().any(|l| l.uidl.is_none()) {
        out.warnings.push(Warning::NoUidl);
    }
    let mut dups: Vec<(&str, usize)> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(u, c)| (*u, *c))
        .collect();
    dups.sort();
    for (uidl, count) in dups {
        out.warnings.push(Warning::DuplicateUidl {
            uidl: uidl.to_string(),
            count,
        });
    }

    for l in listing {
        let uidl = match &l.uidl {
            Some(u) if counts.get(u.as_str()) == Some(&1) => u,
            other => {
                // Identity by content: fetch, then decide (see `pending_sinks`).
                out.fetch.push(FetchItem {
                    msgno: l.msgno,
                    size: l.size,
                    identity: Identity::ByContent {
                        uidl: other.clone(),
                    },
                    sinks: sinks.to_vec(),
                });
                continue;
            }
        };
        out.listed.push(uidl.clone());
        let k = known.get(uidl);
        let (pending, waiting, dead) = pending_sinks(k, sinks, now);
        out.waiting += waiting;
        out.dead += dead;
        out.dropped += dropped_sinks(k, sinks);
        if !pending.is_empty() {
            out.fetch.push(FetchItem {
                msgno: l.msgno,
                size: l.size,
                identity: Identity::Uidl(uidl.clone()),
                sinks: pending,
            });
        } else if let Some(k) = k {
            if deletable(k, sinks, policy, now) {
                out.delete.push(DeleteItem {
                    msgno: l.msgno,
                    uidl: uidl.clone(),
                });
            }
        }
    }

    let was_on_server = known
        .values()
        .filter(|m| m.on_server && m.deleted_at.is_none() && m.replaced_by.is_none())
        .count();
    let still_listed = out.listed.iter().filter(|u| known.contains_key(*u)).count();
    let new = out.listed.len() - still_listed;
    if was_on_server > 0 && still_listed == 0 && new > 0 {
        out.warnings.push(Warning::UidlReset {
            known: was_on_server,
            new,
        });
    }
    out
}

#[cfg(test)]
mod tests;
