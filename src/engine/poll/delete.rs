//! Step 7 of a poll: end the session. QUIT with the deletions when every retrieved message is
//! in every sink; otherwise hang up and delete through a second session that retrieves nothing.

use super::listing;
use super::{MailboxContext, PollError, PollReport};
use crate::engine::plan::{DeleteItem, Listed};
use crate::pop3;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// Ends the session; `clean` says every retrieved message is in every sink.
pub(super) async fn finish(
    ctx: &MailboxContext,
    session: pop3::Transaction,
    listing: &[Listed],
    to_delete: Vec<DeleteItem>,
    clean: bool,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<(), PollError> {
    let name = ctx.mailbox.name.as_str();
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
        return delete_in_new_session(ctx, listing, to_delete, report).await;
    }
    if to_delete.is_empty() || shutdown.is_cancelled() {
        if let Err(e) = session.quit().await {
            tracing::debug!(mailbox = name, error = %e, "QUIT failed after a poll with nothing to delete");
        }
        return Ok(());
    }
    delete_and_quit(ctx, session, to_delete, report).await
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
    let now_listed = listing::list(&mut session).await?;
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
