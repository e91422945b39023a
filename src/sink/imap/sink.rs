//! The IMAP APPEND [`Sink`]: one connection per target account, reused across messages and
//! reconnected when dropped, a bounded number of connections per server, and a search for an
//! earlier copy before appending a message that may already have been appended.

use super::config::{Account, ImapSettings, InternalDate, PasswordSource};
use super::{compare, headers};
use crate::imap::{ImapError, ImapTls, Session};
use crate::key::IdempotencyKey;
use crate::secret::Secret;
use crate::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

pub struct ImapSink {
    name: String,
    settings: ImapSettings,
    tls: Option<async_native_tls::TlsConnector>,
    /// Open sessions by target user name.
    sessions: Mutex<HashMap<String, Slot>>,
    /// Deliveries (so connections in use) to the server at once.
    permits: Arc<Semaphore>,
    /// Keys whose APPEND was sent but not confirmed (a dropped connection, a timeout), with
    /// the folder's `(UIDVALIDITY, UIDNEXT)` just before it when the server said them: the
    /// next attempt looks for the message, from that UID on, before appending it again.
    uncertain: Mutex<HashMap<String, Option<(u32, u32)>>>,
    /// `daily_upload_limit`, per account.
    budget: Option<super::budget::UploadBudget>,
}

impl ImapSink {
    pub fn new(name: impl Into<String>, settings: ImapSettings) -> Result<Self, String> {
        let settings_budget = settings.daily_upload_limit;
        let tls = match settings.server.tls {
            ImapTls::None => None,
            _ => Some(
                crate::tls::connector(settings.ca_file.as_deref(), !settings.tls_verify)
                    .map_err(|e| e.to_string())?,
            ),
        };
        Ok(Self {
            name: name.into(),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            tls,
            sessions: Mutex::new(HashMap::new()),
            uncertain: Mutex::new(HashMap::new()),
            budget: settings_budget.map(super::budget::UploadBudget::new),
        })
    }

    /// Test seam: the budget with another clock.
    pub fn with_budget_clock(mut self, clock: super::budget::Clock) -> Self {
        if let Some(b) = &self.budget {
            self.budget = Some(super::budget::UploadBudget::with_clock(b.limit(), clock));
        }
        self
    }

    /// Reserve today's upload budget for `message`, or refuse: retryable until the next UTC
    /// midnight (the message stays pending and on the POP3 server), or permanent for a message
    /// larger than the whole daily budget.
    fn reserve(&self, account: &Account, message: &SpooledMessage) -> Result<(), DeliveryError> {
        use super::budget::Refusal;
        let Some(b) = &self.budget else { return Ok(()) };
        match b.reserve(&account.username, message.size) {
            Ok(()) => Ok(()),
            Err(Refusal::TooLarge) => Err(DeliveryError::permanent(format!(
                "message of {} bytes is over the daily upload budget of {} bytes of {}",
                message.size,
                b.limit(),
                account.username
            ))),
            Err(Refusal::Tomorrow(wait)) => Err(DeliveryError::Paused {
                message: format!(
                    "daily upload budget of {} bytes of {} reached; resuming at 00:00 UTC",
                    b.limit(),
                    account.username
                ),
                until: chrono::Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1)),
            }),
        }
    }

    /// The account's slot. Idle sessions of other accounts beyond `max_connections` are
    /// logged out (in the background: the delivery does not wait), so a migration of hundreds
    /// of mailboxes keeps a bounded number open.
    fn slot(&self, username: &str) -> Slot {
        let Ok(mut sessions) = self.sessions.lock() else {
            return Arc::new(tokio::sync::Mutex::new(None));
        };
        if !sessions.contains_key(username) && sessions.len() >= self.settings.max_connections {
            sessions.retain(|_, slot| match slot.try_lock() {
                Ok(mut s) => {
                    if let Some(idle) = s.take() {
                        tokio::spawn(idle.logout());
                    }
                    false
                }
                Err(_) => true,
            });
        }
        sessions
            .entry(username.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    /// Logs out of every open session, for the end of a run: the target server then logs a
    /// clean LOGOUT, not a dropped connection.
    pub async fn close_sessions(&self) {
        let slots: Vec<Slot> = match self.sessions.lock() {
            Ok(mut sessions) => sessions.drain().map(|(_, slot)| slot).collect(),
            Err(_) => return,
        };
        for slot in slots {
            if let Some(session) = slot.lock().await.take() {
                session.logout().await;
            }
        }
    }

    async fn connect(&self, account: &Account) -> Result<Session, ImapError> {
        if let (PasswordSource::OAuth2, Some(source)) = (&account.password, &self.settings.oauth2) {
            return self.connect_oauth2(account, source).await;
        }
        let password = match &account.password {
            PasswordSource::OAuth2 => Secret::new(""),
            PasswordSource::Value(s) => s.clone(),
            PasswordSource::File(p) => Secret::new(
                std::fs::read_to_string(p)
                    .map_err(|source| ImapError::PasswordFile {
                        path: p.display().to_string(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
        };
        Session::connect(
            &self.settings.server,
            self.tls.as_ref(),
            &account.username,
            &password,
        )
        .await
    }

    /// Logs in with the credential's token; a refused token is dropped and the login tried
    /// once more with a fresh one.
    async fn connect_oauth2(
        &self,
        account: &Account,
        source: &crate::oauth2::TokenSource,
    ) -> Result<Session, ImapError> {
        let server = &self.settings.server;
        let oauth2_error = |source| ImapError::OAuth2 {
            server: format!("{}:{}", server.host, server.port),
            source,
        };
        let mut refused = None;
        for _ in 0..2 {
            let token = source
                .access_token(&account.username)
                .await
                .map_err(oauth2_error)?;
            match Session::connect(server, self.tls.as_ref(), &account.username, &token).await {
                Err(e @ ImapError::Auth { .. }) => {
                    tracing::warn!(sink = %self.name, credential = %source.settings().name, error = %e, "The IMAP server refused the OAuth2 token; getting a fresh one");
                    source.invalidate(&account.username, &token).await;
                    refused = Some(e);
                }
                other => return other,
            }
        }
        Err(refused.unwrap_or_else(|| ImapError::Protocol {
            server: format!("{}:{}", server.host, server.port),
            detail: "OAuth2 login failed".into(),
        }))
    }

    fn internal_date(&self, fields: &headers::Fields, message: &SpooledMessage) -> String {
        let received = || fields.received.as_deref().and_then(headers::received_date);
        let date = || fields.date.as_deref().and_then(headers::parse_date);
        let picked = match self.settings.internaldate {
            InternalDate::Received => received().or_else(date),
            InternalDate::Date => date(),
            InternalDate::FetchTime => None,
        };
        headers::internaldate(&picked.unwrap_or_else(|| message.fetched_at.fixed_offset()))
    }

    async fn deliver_on(
        &self,
        session: &mut Session,
        account: &Account,
        message: &SpooledMessage,
        key: &IdempotencyKey,
        fields: &headers::Fields,
    ) -> Result<Receipt, ImapError> {
        // A routing rule may name the folder for this message.
        let folder = message
            .params
            .get("folder")
            .unwrap_or(&self.settings.folder);
        session.select(folder).await?;
        let at = format!("{folder} of {}", account.username);
        let intent = match self.uncertain.lock() {
            Ok(u) => u.get(key.as_str()).copied(),
            Err(_) => Some(None),
        };
        if message.seen_before || intent.is_some() {
            // Only an APPEND of this process, under the same UIDVALIDITY, bounds the search:
            // a message the state knew may have been appended before a crash, anywhere.
            let since = match (message.seen_before, intent.flatten(), session.uid_next()) {
                (false, Some((then, next)), Some((now, _))) if then == now => Some(next),
                _ => None,
            };
            if let Some(uid) = find_copy(session, message, fields, since).await? {
                return Ok(Receipt::duplicate(format!(
                    "UID {uid} in {at} (already there)"
                )));
            }
        }
        let date = self.internal_date(fields, message);
        if let Ok(mut u) = self.uncertain.lock() {
            u.insert(key.as_str().to_string(), session.uid_next());
        }
        let uid = session
            .append(
                folder,
                &self.settings.flags,
                &date,
                &message.path,
                message.size,
            )
            .await?;
        if let Ok(mut u) = self.uncertain.lock() {
            u.remove(key.as_str());
        }
        Ok(Receipt::new(match uid {
            Some((validity, uid)) => format!("APPENDUID {validity} {uid} in {at}"),
            None => format!("appended to {at} (server without UIDPLUS)"),
        }))
    }
}

/// Candidates looked at, newest first, before deciding the message is not there.
const MAX_CANDIDATES: usize = 20;

/// Bytes a target may add to a message it stores (`Received:`, `Return-Path:`), and that an
/// mbox source may have had in the first copy and not now (`X-UIDL:`, `Status:`).
const ADDED_MARGIN: u64 = 4096;

/// An earlier APPEND of this message that the state did not record (a crash, an unanswered
/// APPEND): candidates by Message-ID, else all UIDs from the UIDNEXT before our APPEND, else
/// by a size window wide enough for LF storage and added headers; then the candidate whose
/// normalised content ([`compare`]) equals ours. Never the size or the bytes as stored:
/// Courier stores LF, Cyrus munges 8-bit header bytes, servers add headers. Content decides,
/// so a different message sharing a Message-ID is not taken for ours.
async fn find_copy(
    session: &mut Session,
    message: &SpooledMessage,
    fields: &headers::Fields,
    since: Option<u32>,
) -> Result<Option<u32>, ImapError> {
    use crate::imap::codec::quoted;
    let ours =
        compare::normalise_file(&message.path).map_err(|source| ImapError::Spool { source })?;
    let range = since.map(|n| format!("UID {n}:*"));
    let criteria = match (fields.message_id.as_deref().and_then(quoted), &range) {
        (Some(id), Some(range)) => format!("{range} HEADER Message-ID {id}"),
        (Some(id), None) => format!("HEADER Message-ID {id}"),
        (None, Some(range)) => range.clone(),
        (None, None) => format!(
            "LARGER {} SMALLER {}",
            ours.len.saturating_sub(1),
            ours.raw_len + ours.lines + ADDED_MARGIN + 1
        ),
    };
    let mut uids = session.uid_search(&criteria).await?;
    // `n:*` also matches the highest UID when it is below n.
    uids.retain(|uid| since.is_none_or(|n| *uid >= n));
    uids.sort_unstable_by(|a, b| b.cmp(a));
    for uid in uids.into_iter().take(MAX_CANDIDATES) {
        let mut theirs = compare::Normaliser::new();
        if session
            .uid_body(uid, &mut |chunk| theirs.update(chunk))
            .await?
            && theirs.finish().fingerprint == ours.fingerprint
        {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

/// APPEND refusals without a response code that the same message always gets: Cyrus'
/// `reject8bit` and its other content checks (`imap_err.et`), answered with a bare `NO`.
const PERMANENT_TEXTS: &[&str] = &[
    "Message contains non-ASCII characters in headers",
    "Message contains NUL characters",
    "Message contains bare newlines",
    "Message contains invalid header",
    "Message has no header/body separator",
];

fn classify(e: ImapError) -> DeliveryError {
    let text = e.to_string();
    match &e {
        // The server will refuse this message the same way every time.
        ImapError::Refused {
            command,
            code: Some(code),
            ..
        } if command == "APPEND"
            && ["TOOBIG", "LIMIT", "PARSE", "CANNOT"]
                .iter()
                .any(|c| code.eq_ignore_ascii_case(c)) =>
        {
            DeliveryError::permanent(text)
        }
        // Refusals without a response code that can never succeed, known by their text.
        ImapError::Refused {
            command,
            code: None,
            text: said,
            ..
        } if command == "APPEND" && PERMANENT_TEXTS.iter().any(|t| said.contains(t)) => {
            DeliveryError::permanent(text)
        }
        ImapError::Plaintext { .. } => DeliveryError::permanent(text),
        // A wrong target password is a configuration error: the messages stay on the POP3
        // server (retried, then dead-lettered after the retry window) until it is fixed.
        _ => DeliveryError::retryable(text),
    }
}

impl ImapSink {
    /// One delivery with its budget reserved: the account's session (a fresh one when the kept
    /// one was closed), then [`Self::deliver_on`].
    async fn deliver_reserved(
        &self,
        account: &Account,
        message: &SpooledMessage,
        key: &IdempotencyKey,
        fields: &headers::Fields,
    ) -> Result<Receipt, DeliveryError> {
        let slot = self.slot(&account.username);
        let mut guard = slot.lock().await;
        // A kept session may have been closed by the server while idle: one fresh try.
        for fresh in [false, true] {
            let reused = guard.is_some() && !fresh;
            if guard.as_ref().is_none_or(Session::is_broken) {
                *guard = Some(self.connect(account).await.map_err(classify)?);
            }
            let Some(session) = guard.as_mut() else {
                continue;
            };
            match self
                .deliver_on(session, account, message, key, fields)
                .await
            {
                Ok(receipt) => return Ok(receipt),
                Err(e) => {
                    let broken = session.is_broken();
                    if broken {
                        *guard = None;
                    }
                    if !(broken && reused) {
                        return Err(classify(e));
                    }
                    tracing::debug!(sink = %self.name, error = %e, "IMAP session was gone; reconnecting");
                }
            }
        }
        Err(DeliveryError::retryable("IMAP session lost twice"))
    }
}

#[async_trait]
impl Sink for ImapSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn close(&self) {
        self.close_sessions().await;
    }

    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let account = self
            .settings
            .account_for(&message.mailbox)
            .map_err(DeliveryError::permanent)?;
        let fields = headers::read(&message.path).map_err(|e| {
            DeliveryError::retryable(format!("cannot read the spooled message: {e}"))
        })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| DeliveryError::retryable(format!("IMAP limiter closed: {e}")))?;
        self.reserve(&account, message)?;
        let result = self.deliver_reserved(&account, message, key, &fields).await;
        if let Some(b) = &self.budget {
            // Nothing was uploaded: a failure, or the copy was already there.
            if result.as_ref().map_or(true, |r| r.duplicate) {
                b.release(&account.username, message.size);
            }
        }
        result
    }

    fn seed_daily_usage(&self, by_mailbox: &HashMap<String, u64>) {
        let Some(b) = &self.budget else { return };
        for (mailbox, bytes) in by_mailbox {
            if let Ok(account) = self.settings.account_for(mailbox) {
                b.seed(&account.username, *bytes);
            }
        }
    }

    fn daily_usage_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.budget.as_ref().map(|b| b.today_start())
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let s = &self.settings.server;
        tokio::time::timeout(
            s.timeout,
            tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
        )
        .await
        .map_err(|_| {
            DeliveryError::retryable(format!("IMAP {}:{}: connect timed out", s.host, s.port))
        })?
        .map_err(|e| DeliveryError::retryable(format!("IMAP {}:{}: {e}", s.host, s.port)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refusals_are_classified_by_their_response_code() {
        let refused = |code: &str| ImapError::Refused {
            server: "s".into(),
            command: "APPEND".into(),
            code: Some(code.into()),
            text: "no".into(),
        };
        assert!(!classify(refused("TOOBIG")).is_retryable());
        let bare = |text: &str| ImapError::Refused {
            server: "s".into(),
            command: "APPEND".into(),
            code: None,
            text: text.into(),
        };
        assert!(!classify(bare("Message contains non-ASCII characters in headers")).is_retryable());
        assert!(classify(bare("Mailbox is locked, try later")).is_retryable());
        assert!(!classify(refused("cannot")).is_retryable());
        assert!(classify(refused("OVERQUOTA")).is_retryable());
        let login = ImapError::Auth {
            server: "s".into(),
            username: "u".into(),
            text: "bad".into(),
        };
        assert!(
            classify(login).is_retryable(),
            "a wrong password keeps the mail"
        );
        assert_eq!(
            refused("TOOBIG").to_string(),
            "IMAP server s refused APPEND: [TOOBIG] no"
        );
    }
}
