//! Deciding, with no I/O, what one poll must do: which messages to fetch for which sinks,
//! which to delete, and what looks wrong with the server's listing.

use crate::config::DeletePolicy;
use crate::store::{DeliveryState, KnownMessage, Millis, RetrievalFailure, Settled};
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

/// What the state says about a listed UIDL before the message is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prior {
    /// Nothing is known under this UIDL, or a message is known and listed as before.
    Plain,
    /// A message is known under this UIDL, but this may be another one: its LIST size changed,
    /// or the UIDL had left the listing and is back. Compared by content once fetched.
    Verify,
    /// The UIDL belonged to a message we deleted (or one that moved to another UIDL): the
    /// server reuses UIDLs, and this is a new message.
    Reused,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchItem {
    pub msgno: u32,
    /// The size LIST gave.
    pub size: u64,
    pub identity: Identity,
    /// Sinks that still need the message (for `ByContent` and `Verify`, decided again after
    /// the fetch).
    pub sinks: Vec<String>,
    pub prior: Prior,
    /// Earlier RETRs of this message that broke the connection.
    pub failures: u32,
}

/// What the state holds for one poll's plan.
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    /// Messages on the server at the last listing that every sink holds, by UIDL (compact).
    pub settled: &'a HashMap<String, Settled>,
    /// The other messages on the server at the last listing, by UIDL.
    pub listed: &'a HashMap<String, KnownMessage>,
    /// Rows at UIDLs listed now but not in `listed`: messages back after leaving the listing,
    /// and history (deleted or replaced) whose UIDL the server gave to a new message.
    pub others: &'a HashMap<String, KnownMessage>,
    /// Messages whose RETR broke the connection before, by UIDL.
    pub failures: &'a HashMap<String, RetrievalFailure>,
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
    /// UIDLs of messages we deleted (or that moved) are listed again: the server reuses UIDLs.
    UidlReused { count: usize },
    /// Messages known under their UIDL whose LIST size changed or that are back in the listing:
    /// fetched to compare before anything is deleted or skipped.
    Recheck { count: usize },
}

/// The plan borrows its UIDLs from the listing it was made from (`'a`): at a million listed
/// messages a second copy of every UIDL would be tens of megabytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    pub fetch: Vec<FetchItem>,
    pub delete: Vec<DeleteItem>,
    pub warnings: Vec<Warning>,
    /// Every UIDL listed exactly once, sorted (search it with [`Plan::is_listed`]).
    pub listed: Vec<&'a str>,
    /// Deliveries waiting for their next attempt time.
    pub waiting: usize,
    /// Deliveries dead-lettered: their messages stay on the server until an operator acts.
    pub dead: usize,
    /// Messages not fetched because their RETR broke the connection too often (dead letters
    /// under the pseudo-sink `(retrieval)`): `(msgno, uidl)`.
    pub unretrievable: Vec<(u32, String)>,
    /// Dead letters an operator dropped (`dlq drop`): still on the server, but given up on
    /// purpose, so they do not make a poll incomplete.
    pub dropped: usize,
}

impl Plan<'_> {
    /// `uidl` is listed, exactly once.
    pub fn is_listed(&self, uidl: &str) -> bool {
        self.listed.binary_search(&uidl).is_ok()
    }
}

/// Sinks of `sinks` (or of the message's recorded route) that still need this message now.
pub fn pending_sinks(
    known: Option<&KnownMessage>,
    sinks: &[String],
    now: Millis,
) -> (Vec<String>, usize, usize) {
    let mut pending = Vec::new();
    let (mut waiting, mut dead) = (0, 0);
    let sinks = known.map_or(std::borrow::Cow::Borrowed(sinks), |k| k.sinks_or(sinks));
    for sink in sinks.iter() {
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
    let sinks = known.map_or(std::borrow::Cow::Borrowed(sinks), |k| k.sinks_or(sinks));
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
    for sink in known.sinks_or(sinks).iter() {
        match known.deliveries.get(sink) {
            Some(DeliveryState::Delivered { at, .. }) => last_delivery = last_delivery.max(*at),
            _ => return false,
        }
    }
    deletable_after(last_delivery, policy, now)
}

/// True when the policy lets a message go whose last sink took it at `last_delivery`.
pub fn deletable_after(last_delivery: Millis, policy: DeletePolicy, now: Millis) -> bool {
    match policy {
        DeletePolicy::Never => false,
        DeletePolicy::AfterDelivery => true,
        DeletePolicy::AfterDays(days) => last_delivery + i64::from(days) * DAY_MS <= now,
    }
}

pub fn plan<'a>(
    listing: &'a [Listed],
    known: &Known<'_>,
    sinks: &[String],
    policy: DeletePolicy,
    now: Millis,
) -> Plan<'a> {
    let mut out = Plan::default();
    // One sorted list of borrowed UIDLs finds the repeated ones (next to each other) and, once
    // they are taken out, is the set of listed UIDLs: 16 bytes a message, no hash map.
    let mut listed: Vec<&'a str> = listing.iter().filter_map(|l| l.uidl.as_deref()).collect();
    listed.sort_unstable();
    let mut repeated: HashMap<&'a str, usize> = HashMap::new();
    for pair in listed.windows(2) {
        if pair[0] == pair[1] {
            *repeated.entry(pair[0]).or_insert(1) += 1;
        }
    }
    listed.dedup();
    if !repeated.is_empty() {
        listed.retain(|u| !repeated.contains_key(u));
    }
    listed.shrink_to_fit();
    out.listed = listed;
    if listing.iter().any(|l| l.uidl.is_none()) {
        out.warnings.push(Warning::NoUidl);
    }
    let mut dups: Vec<(&str, usize)> = repeated.iter().map(|(u, c)| (*u, *c)).collect();
    dups.sort();
    for (uidl, count) in dups {
        out.warnings.push(Warning::DuplicateUidl {
            uidl: uidl.to_string(),
            count,
        });
    }

    let (mut reused, mut recheck) = (0, 0);
    for l in listing {
        let uidl = match &l.uidl {
            Some(u) if !repeated.contains_key(u.as_str()) => u,
            other => {
                // Identity by content: fetch, then decide (see `pending_sinks`).
                out.fetch.push(FetchItem {
                    msgno: l.msgno,
                    size: l.size,
                    identity: Identity::ByContent {
                        uidl: other.clone(),
                    },
                    sinks: sinks.to_vec(),
                    prior: Prior::Plain,
                    failures: 0,
                });
                continue;
            }
        };
        let failures = match known.failures.get(uidl) {
            Some(f) if f.dead => {
                out.unretrievable.push((l.msgno, uidl.clone()));
                continue;
            }
            Some(f) if f.dropped => {
                out.dropped += 1;
                continue;
            }
            Some(f) => f.failures,
            None => 0,
        };
        let item = |sinks: Vec<String>, prior| FetchItem {
            msgno: l.msgno,
            size: l.size,
            identity: Identity::Uidl(uidl.clone()),
            sinks,
            prior,
            failures,
        };
        if let Some(s) = known.settled.get(uidl) {
            if s.list_size.is_some_and(|size| size != l.size) {
                // Another size under a known UIDL: fetch and compare before deleting anything.
                recheck += 1;
                out.fetch.push(item(sinks.to_vec(), Prior::Verify));
            } else if deletable_after(s.last_delivery, policy, now) {
                out.delete.push(DeleteItem {
                    msgno: l.msgno,
                    uidl: uidl.clone(),
                });
            }
            continue;
        }
        let k = match (known.listed.get(uidl), known.others.get(uidl)) {
            (Some(k), _) => k,
            (None, Some(o)) if o.is_history() => {
                reused += 1;
                out.fetch.push(item(sinks.to_vec(), Prior::Reused));
                continue;
            }
            (None, Some(_)) => {
                // Back after leaving the listing: maybe the same message, maybe a new one
                // under a reused UIDL. Never skipped or deleted on the strength of the UIDL.
                recheck += 1;
                out.fetch.push(item(sinks.to_vec(), Prior::Verify));
                continue;
            }
            (None, None) => {
                out.fetch.push(item(sinks.to_vec(), Prior::Plain));
                continue;
            }
        };
        if k.list_size.or(k.size).is_some_and(|s| s != l.size) {
            // Another size under a known UIDL: fetch and compare before deleting anything.
            recheck += 1;
            out.fetch.push(item(sinks.to_vec(), Prior::Verify));
            continue;
        }
        let (pending, waiting, dead) = pending_sinks(Some(k), sinks, now);
        out.waiting += waiting;
        out.dead += dead;
        out.dropped += dropped_sinks(Some(k), sinks);
        if !pending.is_empty() {
            out.fetch.push(item(pending, Prior::Plain));
        } else if deletable(k, sinks, policy, now) {
            out.delete.push(DeleteItem {
                msgno: l.msgno,
                uidl: uidl.clone(),
            });
        }
    }
    // Messages whose RETR broke the connection before go last, so they cannot hold up the
    // others again.
    out.fetch.sort_by_key(|f| (f.failures, f.msgno));

    let was_on_server = known.listed.len() + known.settled.len();
    let still_listed = out
        .listed
        .iter()
        .filter(|u| known.listed.contains_key(**u) || known.settled.contains_key(**u))
        .count();
    let new = out.listed.len() - still_listed;
    if was_on_server > 0 && still_listed == 0 && new > 0 {
        out.warnings.push(Warning::UidlReset {
            known: was_on_server,
            new,
        });
    }
    if reused > 0 {
        out.warnings.push(Warning::UidlReused { count: reused });
    }
    if recheck > 0 {
        out.warnings.push(Warning::Recheck { count: recheck });
    }
    out
}

#[cfg(test)]
mod tests;
