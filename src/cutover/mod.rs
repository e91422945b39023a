//! Switching to popbridge from another tool without sending anything again: the UIDLs that
//! tool already retrieved (`state import`), or everything on the server now (`state
//! baseline`), are recorded as delivered to the chosen sinks, so they are never fetched.

pub mod formats;
pub mod rc;

use crate::config::MailboxConfig;
use crate::key::IdempotencyKey;
use crate::pop3::{self, Pop3Error};
use crate::sink::Receipt;
use crate::store::{FetchRecord, Millis, Outcome, OutcomeResult, Store, StoreError};
use formats::Seen;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the server of mailbox {0} has no UIDL command: another tool's state cannot be matched \
         to its messages"
    )]
    NoUidl(String),
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    pub mailbox: String,
    /// Listed on the server and in the other tool's state: recorded as delivered.
    pub imported: usize,
    /// Listed, not in the other tool's state: a run will fetch them.
    pub to_fetch: usize,
    /// In the other tool's state, no longer on the server: nothing to do.
    pub not_on_server: usize,
    /// Listed and already in popbridge's state: left as they are.
    pub already_known: usize,
    pub dry_run: bool,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would skip" } else { "skips" };
        let fetch = if self.dry_run {
            "would fetch"
        } else {
            "will fetch"
        };
        write!(
            f,
            "mailbox {}: {verb} {} (imported), {fetch} {} (new), {} listed in the file but not on \
             the server, {} already in popbridge's state",
            self.mailbox, self.imported, self.to_fetch, self.not_on_server, self.already_known
        )
    }
}

/// Record the listed messages that `seen` names as delivered to `sinks`, with `receipt` (e.g.
/// "imported from fetchmail /home/a/.fetchids"). Messages popbridge already knows are left
/// alone. With `dry_run`, only count.
pub async fn import(
    store: &dyn Store,
    mailbox: &MailboxConfig,
    sinks: &[String],
    seen: &[Seen],
    receipt: &str,
    dry_run: bool,
) -> Result<ImportReport, CutoverError> {
    let listing = list(mailbox).await?;
    let name = mailbox.name.as_str();
    let seen_by_uidl: HashMap<&str, Option<Millis>> = seen
        .iter()
        .map(|s| (s.uidl.as_str(), s.first_seen))
        .collect();
    let listed_uidls: Vec<String> = listing.keys().cloned().collect();
    let mut known: HashSet<String> = store.load_mailbox(name).await?.into_keys().collect();
    // History (a message we deleted) does not count: its UIDL now names another message.
    known.extend(
        store
            .lookup(name, &listed_uidls)
            .await?
            .into_iter()
            .filter(|(_, m)| !m.is_history())
            .map(|(u, _)| u),
    );
    let mut report = ImportReport {
        mailbox: name.to_string(),
        dry_run,
        not_on_server: seen
            .iter()
            .filter(|s| !listing.contains_key(&s.uidl))
            .count(),
        ..Default::default()
    };
    let now = crate::store::now_millis();
    let mut uidls: Vec<&String> = listing.keys().collect();
    uidls.sort();
    for uidl in uidls {
        if known.contains(uidl) {
            report.already_known += 1;
            continue;
        }
        let Some(first_seen) = seen_by_uidl.get(uidl.as_str()) else {
            report.to_fetch += 1;
            continue;
        };
        report.imported += 1;
        if !dry_run {
            record(
                store,
                name,
                uidl,
                listing[uidl],
                sinks,
                receipt,
                first_seen.unwrap_or(now),
            )
            .await?;
        }
    }
    Ok(report)
}

/// Everything on the server now counts as delivered to `sinks`, without fetching.
pub async fn baseline(
    store: &dyn Store,
    mailbox: &MailboxConfig,
    sinks: &[String],
    dry_run: bool,
) -> Result<ImportReport, CutoverError> {
    let listing = list(mailbox).await?;
    let all: Vec<Seen> = listing
        .keys()
        .map(|u| Seen {
            uidl: u.clone(),
            first_seen: None,
        })
        .collect();
    import(store, mailbox, sinks, &all, "baseline", dry_run).await
}

/// UIDL → LIST size of every message with a unique UIDL (QUIT at once: nothing is retrieved).
async fn list(mailbox: &MailboxConfig) -> Result<HashMap<String, u64>, CutoverError> {
    let mut session = pop3::connect(&mailbox.pop3).await?;
    let sizes = session.list().await?;
    let uidls = session
        .uidl()
        .await?
        .ok_or_else(|| CutoverError::NoUidl(mailbox.name.clone()))?;
    let _ = session.quit().await;
    let sizes: HashMap<u32, u64> = sizes.into_iter().collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, u) in &uidls {
        *count.entry(u.as_str()).or_default() += 1;
    }
    // A UIDL the server gives to several messages names none of them for sure: not imported.
    Ok(uidls
        .iter()
        .filter(|(_, u)| count.get(u.as_str()) == Some(&1))
        .filter_map(|(n, u)| sizes.get(n).map(|s| (u.clone(), *s)))
        .collect())
}

/// One message as delivered by the other tool. Its content was never seen here: the row has no
/// hash, so if its LIST size ever changes it is fetched and treated as new (a duplicate at
/// worst, never a loss).
async fn record(
    store: &dyn Store,
    mailbox: &str,
    uidl: &str,
    list_size: u64,
    sinks: &[String],
    receipt: &str,
    at: Millis,
) -> Result<(), CutoverError> {
    let key = IdempotencyKey::derive(mailbox, uidl);
    store
        .record_fetched(&FetchRecord {
            mailbox,
            uidl,
            idem_key: key.as_str(),
            size: list_size,
            sha256: "",
            fingerprint: "",
            list_size,
            fetched_at: at,
            sinks,
            retire: false,
            route: None,
        })
        .await?;
    let outcomes: Vec<Outcome> = sinks
        .iter()
        .map(|sink| Outcome {
            mailbox: mailbox.to_string(),
            uidl: uidl.to_string(),
            sink: sink.clone(),
            attempts_made: 0,
            at,
            result: OutcomeResult::Delivered(Receipt::new(receipt)),
        })
        .collect();
    store.record_outcomes(&outcomes).await?;
    Ok(())
}
