//! The IMAP APPEND [`Sink`]: one connection per target account, reused across messages and
//! reconnected when dropped, a bounded number of connections per server, and a search for an
//! earlier copy before appending a message that may already have been appended.
//!
//! Deliveries to one account queue up while its connection is busy; whoever gets the
//! connection next takes the whole queue (up to [`WINDOW`]) and sends those APPENDs pipelined
//! (`append_window`), answering each waiting delivery. The engine keeps up to
//! `limits.max_in_flight` messages in flight, so the window fills without any change there.

use super::config::{Account, ImapSettings, InternalDate, PasswordSource};
use super::login_backoff::LoginBackoff;
use super::{compare, headers};
use crate::imap::{AppendItem, ImapError, ImapTls, Session};
use crate::key::IdempotencyKey;
use crate::secret::Secret;
use crate::sink::offload::{Failed, Stubbed, Stubs};
use crate::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

/// APPENDs in flight at once on one connection.
const WINDOW: usize = 32;

/// One delivery waiting for its account's connection.
struct Job {
    message: SpooledMessage,
    key: IdempotencyKey,
    fields: headers::Fields,
    reply: oneshot::Sender<Result<Receipt, Failed>>,
}

/// A target account: its session, and the deliveries waiting for it.
#[derive(Default)]
struct AccountSlot {
    session: tokio::sync::Mutex<Option<Session>>,
    queue: Mutex<Vec<Job>>,
}

impl AccountSlot {
    /// `false` when the queue's lock is poisoned (the job is dropped, its delivery fails).
    fn push(&self, job: Job) -> bool {
        match self.queue.lock() {
            Ok(mut q) => {
                q.push(job);
                true
            }
            Err(_) => false,
        }
    }

    /// The oldest waiting deliveries, at most [`WINDOW`].
    fn take(&self) -> Vec<Job> {
        match self.queue.lock() {
            Ok(mut q) => {
                let n = q.len().min(WINDOW);
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

type Slot = Arc<AccountSlot>;

pub struct ImapSink {
    name: String,
    settings: ImapSettings,
    tls: Option<tokio_native_tls::TlsConnector>,
    /// Target accounts by user name.
    sessions: Mutex<HashMap<String, Slot>>,
    /// Deliveries (so connections in use) to the server at once.
    permits: Arc<Semaphore>,
    /// Keys whose APPEND was sent but not confirmed (a dropped connection, a timeout), with
    /// the folder's `(UIDVALIDITY, UIDNEXT)` just before it when the server said them: the
    /// next attempt looks for the message, from that UID on, before appending it again.
    uncertain: Mutex<HashMap<String, Option<(u32, u32)>>>,
    /// `daily_upload_limit`, per account.
    budget: Option<super::budget::UploadBudget>,
    /// Accounts whose login was refused, not tried again for a while.
    logins: LoginBackoff,
    /// `oversize: stub`: stubs for messages over the target's limit.
    stubs: Option<Stubs>,
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
        let name: String = name.into();
        let stubs = match &settings.stub_offload {
            Some(o) => Some(Stubs::new(&name, o.clone())?),
            None => None,
        };
        Ok(Self {
            stubs,
            name,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            settings,
            tls,
            sessions: Mutex::new(HashMap::new()),
            uncertain: Mutex::new(HashMap::new()),
            budget: settings_budget.map(super::budget::UploadBudget::new),
            logins: LoginBackoff::default(),
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
            return Slot::default();
        };
        if !sessions.contains_key(username) && sessions.len() >= self.settings.max_connections {
            sessions.retain(|_, slot| {
                let waiting = slot.queue.lock().map(|q| !q.is_empty()).unwrap_or(true);
                match slot.session.try_lock() {
                    Ok(mut s) if !waiting => {
                        if let Some(idle) = s.take() {
                            tokio::spawn(idle.logout());
                        }
                        false
                    }
                    _ => true,
                }
            });
        }
        sessions
            .entry(username.to_string())
            .or_insert_with(Slot::default)
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
            if let Some(session) = slot.session.lock().await.take() {
                session.logout().await;
            }
        }
    }

    /// Logs in to the target account of `mailbox` and out again (`check --connect`), and checks
    /// that the folder lies in the personal namespace: the user name on success.
    pub async fn check_login(&self, mailbox: &str) -> Result<String, String> {
        let account = self.settings.account_for(mailbox)?;
        let mut session = self.connect(&account).await.map_err(|e| e.to_string())?;
        // Without creating anything: a folder outside the personal namespace would be refused.
        let hint = session.namespace_hint(&self.settings.folder).await;
        session.logout().await;
        match hint {
            Ok(Some(hint)) => Err(format!(
                "login ok, but folder {:?} is outside the personal namespace{hint}",
                self.settings.folder
            )),
            Ok(None) => Ok(account.username),
            Err(e) => Err(e.to_string()),
        }
    }

    fn server(&self) -> String {
        format!(
            "{}:{}",
            self.settings.server.host, self.settings.server.port
        )
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

    /// Delivers `jobs` on `session`: those that may already be there (seen before, or an
    /// unconfirmed APPEND of this process) are looked for first, one by one; the rest go as
    /// one pipelined window. Every intent is recorded before the window's first byte is sent.
    async fn deliver_window(
        &self,
        session: &mut Session,
        account: &Account,
        jobs: Vec<Job>,
    ) -> Vec<(Job, Result<Receipt, ImapError>)> {
        // A routing rule may name the folder per message: one window per folder.
        let mut groups: Vec<(String, Vec<Job>)> = Vec::new();
        for job in jobs {
            let folder = job
                .message
                .params
                .get("folder")
                .cloned()
                .unwrap_or_else(|| self.settings.folder.clone());
            match groups.iter_mut().find(|(f, _)| *f == folder) {
                Some((_, group)) => group.push(job),
                None => groups.push((folder, vec![job])),
            }
        }
        let mut out = Vec::new();
        for (folder, jobs) in groups {
            out.extend(self.deliver_folder(session, account, &folder, jobs).await);
        }
        out
    }

    /// [`Self::deliver_window`] for the jobs of one folder.
    async fn deliver_folder(
        &self,
        session: &mut Session,
        account: &Account,
        folder: &str,
        jobs: Vec<Job>,
    ) -> Vec<(Job, Result<Receipt, ImapError>)> {
        let at = format!("{folder} of {}", account.username);
        // A job that may already be there is looked for: in a fresh view of the folder.
        let lookups = jobs.iter().any(|j| {
            j.message.seen_before
                || self
                    .uncertain
                    .lock()
                    .map_or(true, |u| u.contains_key(j.key.as_str()))
        });
        let selected = if lookups {
            session.select_fresh(folder).await
        } else {
            session.select(folder).await
        };
        if let Err(e) = selected {
            return jobs.into_iter().map(|j| (j, Err(e.duplicate()))).collect();
        }
        let mut done = Vec::with_capacity(jobs.len());
        let mut to_append = Vec::with_capacity(jobs.len());
        for job in jobs {
            let intent = match self.uncertain.lock() {
                Ok(u) => u.get(job.key.as_str()).copied(),
                Err(_) => Some(None),
            };
            if !job.message.seen_before && intent.is_none() {
                to_append.push(job);
                continue;
            }
            // Only an APPEND of this process, under the same UIDVALIDITY, bounds the search:
            // a message the state knew may have been appended before a crash, anywhere.
            let since = match (
                job.message.seen_before,
                intent.flatten(),
                session.uid_next(),
            ) {
                (false, Some((then, next)), Some((now, _))) if then == now => Some(next),
                _ => None,
            };
            match find_copy(session, &job.message, &job.fields, since).await {
                Ok(Some(uid)) => {
                    let receipt = Receipt::duplicate(format!("UID {uid} in {at} (already there)"));
                    done.push((job, Ok(receipt)));
                }
                Ok(None) => to_append.push(job),
                Err(e) => done.push((job, Err(e))),
            }
        }
        // The jobs may have waited for the session (and the search above took round trips):
        // a job whose mailbox changed owner meanwhile is not sent (see `Ownership`).
        let (to_append, lost): (Vec<Job>, Vec<Job>) = to_append
            .into_iter()
            .partition(|j| j.message.owner.is_current());
        for job in lost {
            let e = ImapError::Protocol {
                server: self.server(),
                detail: crate::sink::Ownership::lost().to_string(),
            };
            done.push((job, Err(e)));
        }
        if to_append.is_empty() {
            return done;
        }
        let before = session.uid_next();
        if let Ok(mut u) = self.uncertain.lock() {
            for job in &to_append {
                u.insert(job.key.as_str().to_string(), before);
            }
        }
        let items: Vec<AppendItem> = to_append
            .iter()
            .map(|j| AppendItem {
                path: &j.message.path,
                size: j.message.size,
                internal_date: self.internal_date(&j.fields, &j.message),
            })
            .collect();
        let results = session
            .append_window(folder, &self.settings.flags, &items)
            .await;
        drop(items);
        for (job, result) in to_append.into_iter().zip(results) {
            let result = result.map(|uid| {
                if let Ok(mut u) = self.uncertain.lock() {
                    u.remove(job.key.as_str());
                }
                Receipt::new(match uid {
                    Some((validity, uid)) => format!("APPENDUID {validity} {uid} in {at}"),
                    None => format!("appended to {at} (server without UIDPLUS)"),
                })
            });
            done.push((job, result));
        }
        done
    }

    /// Runs one window of `jobs` on the account's session (connecting, or reconnecting once
    /// when a kept session turns out to be gone) and answers every job.
    async fn run_window(&self, guard: &mut Option<Session>, account: &Account, jobs: Vec<Job>) {
        let _permit = match self.permits.acquire().await {
            Ok(p) => p,
            Err(e) => {
                let e = DeliveryError::retryable(format!("IMAP limiter closed: {e}"));
                return answer_all(jobs, &e);
            }
        };
        let mut jobs = jobs;
        for fresh in [false, true] {
            if let Some((left, error)) = self.logins.blocked(&account.username) {
                let e = DeliveryError::Retryable {
                    message: format!(
                        "not logging in to {} again for {}s after a refused login: {error}",
                        account.username,
                        left.as_secs()
                    ),
                    retry_after: Some(left),
                };
                return answer_all(jobs, &e);
            }
            let reused = guard.is_some() && !fresh;
            if guard.as_ref().is_none_or(Session::is_broken) {
                match self.connect(account).await {
                    Ok(s) => {
                        self.logins.succeeded(&account.username);
                        *guard = Some(s);
                    }
                    Err(e) => return answer_all(jobs, &self.login_failed(account, e)),
                }
            }
            let Some(session) = guard.as_mut() else {
                continue;
            };
            let results = self.deliver_window(session, account, jobs).await;
            let broken = session.is_broken();
            if broken {
                *guard = None;
            }
            let mut again = Vec::new();
            for (job, result) in results {
                match result {
                    Ok(receipt) => {
                        let _ = job.reply.send(Ok(receipt));
                    }
                    // A kept session may have been closed by the server while idle: one
                    // fresh try (the intent makes it look for a copy first).
                    Err(e) if broken && reused => {
                        tracing::debug!(sink = %self.name, error = %e, "IMAP session was gone; reconnecting");
                        again.push(job);
                    }
                    Err(e) => {
                        let too_big = is_too_big(&e);
                        let _ = job.reply.send(Err(Failed {
                            error: classify(e),
                            too_big,
                        }));
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            jobs = again;
        }
        answer_all(jobs, &DeliveryError::retryable("IMAP session lost twice"));
    }

    /// A failed login: a refused one backs the account off (logged at once the first time);
    /// the error for every waiting delivery.
    fn login_failed(&self, account: &Account, e: ImapError) -> DeliveryError {
        if !matches!(e, ImapError::Auth { .. }) {
            return classify(e);
        }
        let text = e.to_string();
        let (failures, wait) = self.logins.refused(&account.username, &text);
        if failures == 1 {
            tracing::error!(sink = %self.name, account = %account.username, server = %self.server(),
                error = %text, retry_in_s = wait.as_secs(),
                "Target account refused the login; its messages wait on the POP3 server");
        } else {
            tracing::warn!(sink = %self.name, account = %account.username, server = %self.server(),
                error = %text, failures, retry_in_s = wait.as_secs(),
                "Target account still refuses the login");
        }
        DeliveryError::Retryable {
            message: text,
            retry_after: Some(wait),
        }
    }
}

fn answer_all(jobs: Vec<Job>, e: &DeliveryError) {
    for job in jobs {
        let _ = job.reply.send(Err(e.clone().into()));
    }
}

/// The server refused the APPEND for the message's size (`TOOBIG`, RFC 4469/7889, also what
/// we answer ourselves over `APPENDLIMIT`): the refusal a stub can cure.
fn is_too_big(e: &ImapError) -> bool {
    matches!(e, ImapError::Refused { command, code: Some(code), .. }
        if command == "APPEND" && code.eq_ignore_ascii_case("TOOBIG"))
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
    /// One APPEND of `message` (the original or a stub) within the day's budget.
    async fn append(
        &self,
        account: &Account,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, Failed> {
        let fields = headers::read(&message.path).map_err(|e| {
            DeliveryError::retryable(format!("cannot read the spooled message: {e}"))
        })?;
        self.reserve(account, message)?;
        let result = self.deliver_queued(account, message, key, fields).await;
        if let Some(b) = &self.budget {
            // Nothing was uploaded: a failure, or the copy was already there.
            if result.as_ref().map_or(true, |r| r.duplicate) {
                b.release(&account.username, message.size);
            }
        }
        result
    }

    async fn append_stub(
        &self,
        account: &Account,
        stub: Stubbed,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let receipt = self
            .append(account, &stub.message, key)
            .await
            .map_err(|f| f.error)?;
        Ok(stub.receipt(receipt))
    }

    /// One delivery with its budget reserved: queued beside the account's session; whoever
    /// holds the session next takes the queue as one window.
    async fn deliver_queued(
        &self,
        account: &Account,
        message: &SpooledMessage,
        key: &IdempotencyKey,
        fields: headers::Fields,
    ) -> Result<Receipt, Failed> {
        let slot = self.slot(&account.username);
        let (reply, mut answer) = oneshot::channel();
        let job = Job {
            message: message.clone(),
            key: key.clone(),
            fields,
            reply,
        };
        if !slot.push(job) {
            return Err(DeliveryError::retryable("IMAP delivery queue poisoned").into());
        }
        let mut guard = slot.session.lock().await;
        // Deliveries started together (the engine polls its in-flight messages in one task)
        // queue up behind this one before the window is taken.
        tokio::task::yield_now().await;
        loop {
            // Answered by whoever held the connection before us?
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(DeliveryError::retryable(
                        "the IMAP delivery carrying this message was interrupted",
                    )
                    .into())
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let jobs = slot.take();
            if jobs.is_empty() {
                return Err(DeliveryError::retryable("IMAP delivery lost its queue entry").into());
            }
            self.run_window(&mut guard, account, jobs).await;
        }
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

    /// With `oversize: stub`, a message over the limit (`max_message_bytes`, or refused as
    /// `TOOBIG`, which the server's `APPENDLIMIT` makes us answer without sending) goes as
    /// its stub, and so does one stubbed before: its stub may be in the folder already, and
    /// only the stored stub's bytes let the duplicate search recognise it.
    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let account = self
            .settings
            .account_for(&message.mailbox)
            .map_err(DeliveryError::permanent)?;
        let over = self
            .settings
            .max_message_bytes
            .filter(|max| message.size > *max);
        let Some(stubs) = &self.stubs else {
            if let Some(max) = over {
                return Err(DeliveryError::permanent(format!(
                    "the message is {} bytes, over `max_message_bytes` ({max})",
                    message.size
                )));
            }
            return self
                .append(&account, message, key)
                .await
                .map_err(|f| f.error);
        };
        if message.seen_before {
            if let Some(stub) = stubs.earlier(message).await? {
                return self.append_stub(&account, stub, key).await;
            }
        }
        if over.is_some() {
            return self
                .append_stub(&account, stubs.stub(message).await?, key)
                .await;
        }
        match self.append(&account, message, key).await {
            Err(f) if f.too_big => {
                tracing::info!(sink = %self.name, size = message.size, error = %f.error,
                    "The IMAP server refused the message as too big; appending a stub");
                self.append_stub(&account, stubs.stub(message).await?, key)
                    .await
            }
            other => other.map_err(|f| f.error),
        }
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

    fn paused_until(&self, mailbox: &str) -> Option<crate::sink::SinkPause> {
        let b = self.budget.as_ref()?;
        let account = self.settings.account_for(mailbox).ok()?;
        let until = b.spent_until(&account.username)?;
        Some(crate::sink::SinkPause {
            until,
            reason: format!(
                "the daily upload budget of {} bytes of {} is used up",
                b.limit(),
                account.username
            ),
        })
    }

    fn daily_budget(&self, mailbox: &str) -> Option<crate::sink::DailyBudget> {
        let b = self.budget.as_ref()?;
        let account = self.settings.account_for(mailbox).ok()?;
        Some(crate::sink::DailyBudget {
            limit: b.limit(),
            left_today: b.left_today(&account.username),
            resets_at: b.next_reset(),
        })
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
        match &self.stubs {
            Some(stubs) => stubs.healthcheck().await,
            None => Ok(()),
        }
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
