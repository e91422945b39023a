//! Step 1 of a poll: an empty spool directory, then a logged-in POP3 session.

use super::{MailboxContext, PollError, PollReport};
use crate::pop3::{self, Pop3Error};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Empties (or creates) the mailbox's spool directory: what a killed run left there was never
/// acknowledged to the server.
pub(super) fn reset_spool(dir: &std::path::Path) -> Result<(), PollError> {
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
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

/// Logs in and notes what the server's capabilities mean for this poll (certificate expiry,
/// LOGIN-DELAY, EXPIRE 0).
pub(super) async fn open(
    ctx: &MailboxContext,
    shutdown: &CancellationToken,
    report: &mut PollReport,
) -> Result<pop3::Transaction, PollError> {
    let name = ctx.mailbox.name.as_str();
    let mut session = connect_after_login_delay(ctx, shutdown, report).await?;
    session.throttle_reads(ctx.host.throttle.clone());
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
    Ok(session)
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
