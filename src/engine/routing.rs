//! The engine's side of routing rules, kept out of `poll.rs`: which listed messages the rules
//! decide (those not yet in the state), reading their headers with `TOP n 0` so a message the
//! rules keep on the server is never downloaded, and deciding from the spool file when a rule
//! needs the body or the message's identity was only known after retrieval.

use super::plan::{FetchItem, Identity, Prior};
use super::poll::PollReport;
use crate::pop3::{Pop3Error, Transaction};
use crate::route::headers::{AttachmentScan, Headers};
use crate::route::matcher::Facts;
use crate::route::{decision, Decision, Route, RuleSet};
use crate::store::KnownMessage;
use std::collections::HashMap;
use std::path::Path;

/// Most header bytes kept from `TOP n 0` (the rest of a giant header is read and dropped).
const MAX_HEADER_BYTES: usize = 256 * 1024;

/// A message the rules decide: listed under a UIDL the state does not hold (or held by another
/// message before). Known messages keep their recorded route, or without one the mailbox's
/// sinks; messages named by content are decided after retrieval.
pub fn decided_by_rules(item: &FetchItem, known: &HashMap<String, KnownMessage>) -> bool {
    match (&item.identity, item.prior) {
        (Identity::Uidl(_), Prior::Reused) => true,
        (Identity::Uidl(u), Prior::Plain) => !known.contains_key(u),
        _ => false,
    }
}

/// Decide from the headers (`TOP msgno 0`) for every item the rules decide; nothing when a rule
/// needs the body (those are decided after retrieval).
pub async fn decide_by_headers(
    rules: &RuleSet,
    mailbox: &str,
    session: &mut Transaction,
    items: &[FetchItem],
    known: &HashMap<String, KnownMessage>,
) -> Result<HashMap<u32, Decision>, Pop3Error> {
    let mut out = HashMap::new();
    if rules.needs_body() {
        return Ok(out);
    }
    let decided: Vec<&FetchItem> = items
        .iter()
        .filter(|i| decided_by_rules(i, known))
        .collect();
    let msgnos: Vec<u32> = decided.iter().map(|i| i.msgno).collect();
    let sizes: HashMap<u32, u64> = decided.iter().map(|i| (i.msgno, i.size)).collect();
    // Pipelined; each header is decided as it arrives and dropped, so memory holds one.
    session
        .tops(&msgnos, 0, MAX_HEADER_BYTES, |msgno, raw| {
            let headers = Headers::parse(&raw);
            let facts = Facts {
                headers: &headers,
                size: sizes.get(&msgno).copied().unwrap_or(0),
                has_attachment: None,
            };
            out.insert(msgno, decision::decide(rules, mailbox, &facts));
        })
        .await?;
    Ok(out)
}

/// Before RETR: apply the header decisions to the plan. A kept message leaves `fetch` (with its
/// reason in the report); a routed one is fetched for its route's sinks. Returns the routes by
/// message number, for `process` to record.
pub async fn route_before_fetch(
    rules: &RuleSet,
    mailbox: &str,
    session: &mut Transaction,
    fetch: &mut Vec<FetchItem>,
    known: &HashMap<String, KnownMessage>,
    report: &mut PollReport,
) -> Result<HashMap<u32, Route>, Pop3Error> {
    let decisions = decide_by_headers(rules, mailbox, session, fetch, known).await?;
    let mut routes = HashMap::new();
    let mut kept = Vec::new();
    fetch.retain_mut(|item| match decisions.get(&item.msgno) {
        Some(Decision::Keep { reason }) => {
            tracing::info!(mailbox, msgno = item.msgno, reason = %reason, "Kept on the server by the routing rules");
            kept.push(format!("message {}: {reason}", item.msgno));
            false
        }
        Some(Decision::Route(r)) => {
            item.sinks = r.sinks();
            routes.insert(item.msgno, r.clone());
            true
        }
        None => true,
    });
    note_kept(report, kept);
    Ok(routes)
}

/// Count kept messages and show why (the first few reasons; every one is in the log).
pub fn note_kept(report: &mut PollReport, kept: Vec<String>) {
    if kept.is_empty() {
        return;
    }
    report.kept_by_rules += kept.len();
    let shown: Vec<&str> = kept.iter().take(3).map(String::as_str).collect();
    report.warnings.push(format!(
        "{} message(s) kept on the server by the routing rules, not fetched: {}{}",
        kept.len(),
        shown.join("; "),
        if kept.len() > 3 { "; …" } else { "" }
    ));
}

/// Decide for a retrieved message from its spool file (headers, and the body when a rule asks
/// for attachments).
pub async fn decide_spooled(
    rules: &RuleSet,
    mailbox: &str,
    path: &Path,
    size: u64,
) -> std::io::Result<Decision> {
    let path = path.to_path_buf();
    let needs_body = rules.needs_body();
    let (head, attachment) = tokio::task::spawn_blocking(move || read_for_rules(&path, needs_body))
        .await
        .map_err(std::io::Error::other)??;
    let headers = Headers::parse(&head);
    let facts = Facts {
        headers: &headers,
        size,
        has_attachment: attachment,
    };
    Ok(decision::decide(rules, mailbox, &facts))
}

/// The header section (at most [`MAX_HEADER_BYTES`]) and, when the body is needed, whether it
/// has an attachment: scanned line by line as it streams from the spool file.
fn read_for_rules(path: &Path, body: bool) -> std::io::Result<(Vec<u8>, Option<bool>)> {
    use std::io::{BufRead, Read};
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_HEADER_BYTES as u64)
        .read_to_end(&mut head)?;
    if !body {
        return Ok((head, None));
    }
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut scan = AttachmentScan::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A longer line is read in pieces; no MIME part header is that long.
        let n = (&mut reader).take(64 * 1024).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok((head, Some(false)));
        }
        if scan.line(&line) {
            return Ok((head, Some(true)));
        }
    }
}

/// Remove from each planned fetch the sinks its recorded route names that are no longer
/// configured: such a delivery can never happen, so the message stays on the server and every
/// poll says why (until the sink is configured again, or `state forget` lets the rules decide
/// anew).
pub fn drop_unconfigured(
    fetch: &mut Vec<FetchItem>,
    known: &HashMap<String, KnownMessage>,
    configured: &[String],
    report: &mut PollReport,
) {
    fetch.retain_mut(|item| {
        let Identity::Uidl(u) = &item.identity else {
            return true;
        };
        if known.get(u).and_then(|k| k.route.as_ref()).is_none() {
            return true;
        }
        let missing: Vec<String> = item
            .sinks
            .iter()
            .filter(|s| !configured.contains(s))
            .cloned()
            .collect();
        if missing.is_empty() {
            return true;
        }
        report
            .failures
            .push(unconfigured_text(item.msgno, u, &missing));
        item.sinks.retain(|s| configured.contains(s));
        !item.sinks.is_empty()
    });
}

pub fn unconfigured_text(msgno: u32, uidl: &str, missing: &[String]) -> String {
    format!(
        "message {msgno} ({uidl}): its recorded route names sink(s) {} that are no longer configured; \
         kept on the server (configure them again, or `state forget` it to route it anew)",
        missing.join(", ")
    )
}
