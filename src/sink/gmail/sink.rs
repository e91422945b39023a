//! The Gmail [`Sink`]: resolve the target account and its label ids (created when missing,
//! cached), look for an earlier import when one may exist, then import by the multipart or
//! the resumable protocol, streamed from the spool. A 401 gets one fresh token, then the sink
//! is down.

use super::auth::{AccessToken, FileTokens};
use super::config::{Account, GmailSettings, MAX_IMPORT_BYTES};
use super::payload;
use super::quota::{cost, Pacer, Pauses};
use super::service::{build_client, classify_error, error_and_body, is_rate_limit, url};
use crate::key::IdempotencyKey;
use crate::secret::Secret;
use crate::sink::offload::Failed;
use crate::sink::{DeliveryError, Receipt, Sink, SinkPause, SpooledMessage};
use async_trait::async_trait;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Candidates compared by content before deciding a message is not in the account.
const MAX_CANDIDATES: usize = 20;

/// Messages up to this size are compared by content (`format=raw` is one JSON answer, held
/// in memory); a larger one is taken as there when its Message-ID matches.
const COMPARE_MAX: u64 = 32 << 20;

/// The longest quota wait slept through while holding a delivery slot; a longer one (a long
/// `Retry-After`) makes the delivery a retry for later, like the engine's in-poll limit.
const MAX_PACING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Times a resumable upload that lost an answer asks the session where it stands.
const MAX_PROBES: u32 = 3;

/// Gmail's base64url, with or without padding.
const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub struct GmailSink {
    name: String,
    settings: GmailSettings,
    client: reqwest::Client,
    tokens: Arc<dyn AccessToken>,
    /// Imports in flight, over all accounts.
    limit: Semaphore,
    /// Label ids by account (`user`), then by lower-case label name.
    labels: tokio::sync::Mutex<HashMap<String, HashMap<String, String>>>,
    /// Keys whose import was sent and not confirmed in this process: searched for first.
    uncertain: Mutex<HashSet<String>>,
    /// Quota units per account: every request waits for its units.
    pacer: Pacer,
    /// Accounts whose daily quota is used up, until it resets.
    pauses: Pauses,
    /// `oversize: stub`: stubs for messages over the limit.
    stubs: Option<crate::sink::offload::Stubs>,
}

#[derive(Deserialize)]
struct MessageRef {
    id: String,
}

#[derive(Deserialize)]
struct MessageList {
    #[serde(default)]
    messages: Vec<MessageRef>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    raw: String,
}

#[derive(Deserialize)]
struct Label {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct LabelList {
    #[serde(default)]
    labels: Vec<Label>,
}

fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::retryable(format!("Gmail: cannot {what}: {e}"))
}

/// A JSON answer of a successful call, read capped.
async fn json<T: for<'de> Deserialize<'de>>(
    resp: Response,
    cap: usize,
    what: &str,
) -> Result<T, DeliveryError> {
    let body = crate::sink::http::read_capped(resp, cap)
        .await
        .map_err(|e| classify_error(&e))?;
    serde_json::from_slice(&body)
        .map_err(|e| DeliveryError::retryable(format!("Gmail: unexpected answer to {what}: {e}")))
}

/// `len` bytes of the spool file from `offset`, streamed.
async fn file_body(path: &Path, offset: u64, len: u64) -> Result<reqwest::Body, DeliveryError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| spool_error("open the spooled message", e))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| spool_error("seek in the spooled message", e))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
    Ok(reqwest::Body::wrap_stream(stream))
}

/// The next byte a resumable session wants, from its `Range: bytes=0-N` (none: 0).
fn next_offset(resp: &Response) -> u64 {
    resp.headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('-').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(0, |n| n + 1)
}

/// Checked right before an import is sent, after the quota wait and the token: a replica
/// paused past its lease meanwhile must not import what the new owner imports (see
/// `sink::Ownership`).
fn still_owned(message: &SpooledMessage) -> Result<(), DeliveryError> {
    if message.owner.is_current() {
        Ok(())
    } else {
        Err(crate::sink::Ownership::lost())
    }
}

/// The Gmail sink's one size-limit decision: `Some` refusal when the sink will not import a
/// message of `size` bytes (over `limit`, at most Gmail's 150 MB, or empty). With
/// `oversize: stub` a message over the limit is stubbed instead (see `deliver`).
pub fn size_limit_refusal(size: u64, limit: u64) -> Option<DeliveryError> {
    if size > limit {
        return Some(DeliveryError::permanent(if limit == MAX_IMPORT_BYTES {
            format!(
                "the message is {size} bytes: Gmail imports at most {MAX_IMPORT_BYTES} (150 MB)"
            )
        } else {
            format!("the message is {size} bytes, over `max_message_bytes` ({limit})")
        }));
    }
    (size == 0).then(|| DeliveryError::permanent("the message is empty"))
}

impl GmailSink {
    /// A sink whose tokens come from `access_token_file`.
    pub fn new(name: impl Into<String>, settings: GmailSettings) -> Result<Self, String> {
        Self::with_tokens(name, settings, Arc::new(FileTokens))
    }

    /// A sink with another token source (the OAuth2 manager, tests).
    pub fn with_tokens(
        name: impl Into<String>,
        settings: GmailSettings,
        tokens: Arc<dyn AccessToken>,
    ) -> Result<Self, String> {
        let pacer = Pacer::new(settings.quota_units_per_minute, settings.quota_burst_units);
        let name: String = name.into();
        let stubs = match &settings.stub_offload {
            Some(o) => Some(crate::sink::offload::Stubs::new(&name, o.clone())?),
            None => None,
        };
        Ok(Self {
            stubs,
            name,
            client: build_client(&settings)?,
            limit: Semaphore::new(settings.concurrency),
            pacer,
            settings,
            tokens,
            labels: tokio::sync::Mutex::new(HashMap::new()),
            uncertain: Mutex::new(HashSet::new()),
            pauses: Pauses::default(),
        })
    }

    /// The account's daily quota is used up: the error that makes its messages wait.
    fn paused(&self, account: &Account) -> Option<DeliveryError> {
        let until = self
            .pauses
            .paused_until(&account.user, chrono::Utc::now())?;
        Some(DeliveryError::Paused {
            message: format!(
                "Gmail: the daily API quota of {} is used up; paused until {}",
                account.user,
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            until,
        })
    }

    /// The error of a failed answer, after acting on what it says about the account: a rate
    /// limit blocks the account's bucket (for `Retry-After`, else a refill), a used-up daily
    /// quota pauses the account until it resets.
    async fn fail(&self, resp: Response, account: &Account) -> DeliveryError {
        let status = resp.status();
        let (e, body) = error_and_body(resp, &account.user).await;
        if is_rate_limit(status, &body) {
            let wait = match &e {
                DeliveryError::Retryable {
                    retry_after: Some(d),
                    ..
                } => *d,
                _ => self.pacer.default_backoff(),
            };
            self.pacer
                .rate_limited(&account.user, wait, std::time::Instant::now());
            tracing::info!(sink = %self.name, wait_ms = wait.as_millis() as u64,
                "Gmail rate limit: holding this account's requests back");
        }
        if let DeliveryError::Paused { until, .. } = &e {
            self.pauses.pause(&account.user, *until);
            tracing::warn!(sink = %self.name, until = %until.to_rfc3339(),
                "Gmail daily quota used up for an account: it is paused, the sink's other accounts carry on");
        }
        e
    }

    /// Sends the request `build` makes with a token, after waiting for `units` of the
    /// account's quota; on 401 the token is invalidated and the request built and sent once
    /// more with a fresh one (a 401 means it was not acted on). Any other answer is returned
    /// as is; `Err` is no answer, no token, 401 twice, or a paused account.
    async fn call<F, Fut>(
        &self,
        account: &Account,
        units: u32,
        build: F,
    ) -> Result<Response, DeliveryError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<RequestBuilder, DeliveryError>>,
    {
        for fresh in [false, true] {
            if let Some(e) = self.paused(account) {
                return Err(e);
            }
            if let Err(wait) = self
                .pacer
                .acquire(&account.user, units, MAX_PACING_WAIT)
                .await
            {
                return Err(DeliveryError::Retryable {
                    message: format!(
                        "Gmail: {} is rate limited for {}s more; trying later",
                        account.user,
                        wait.as_secs()
                    ),
                    retry_after: Some(wait),
                });
            }
            let token = self.tokens.token(account).await.map_err(|e| {
                DeliveryError::sink_down(format!(
                    "Gmail: no access token for {}: {e}",
                    account.user
                ))
            })?;
            let resp = build(token.clone())
                .await?
                .send()
                .await
                .map_err(|e| classify_error(&e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            self.tokens.invalidate(account, &token).await;
            if fresh {
                return Err(self.fail(resp, account).await);
            }
            tracing::debug!(sink = %self.name, "Gmail refused the access token; refreshing it once");
        }
        Err(DeliveryError::sink_down("Gmail: token refused twice"))
    }

    fn api(
        &self,
        account: &Account,
        rest: &[&str],
        query: &[(&str, &str)],
    ) -> Result<reqwest::Url, DeliveryError> {
        let mut segments = vec!["gmail", "v1", "users", account.user.as_str()];
        segments.extend_from_slice(rest);
        url(&self.settings.api_base, &segments, query)
    }

    /// `INBOX`/`UNREAD` unless switched off, then the account's labels by id, created
    /// when missing (`users.labels.list` once per account, then the cache).
    async fn label_ids(&self, account: &Account) -> Result<Vec<String>, DeliveryError> {
        let mut ids = Vec::new();
        if !self.settings.skip_inbox {
            ids.push("INBOX".to_string());
        }
        if !self.settings.mark_read {
            ids.push("UNREAD".to_string());
        }
        if account.labels.is_empty() {
            return Ok(ids);
        }
        let mut cache = self.labels.lock().await;
        let known = cache.entry(account.user.clone()).or_default();
        let missing = |known: &HashMap<String, String>| {
            account
                .labels
                .iter()
                .any(|l| !known.contains_key(&l.to_lowercase()))
        };
        if missing(known) {
            self.list_labels(account, known).await?;
        }
        for name in &account.labels {
            if known.contains_key(&name.to_lowercase()) {
                continue;
            }
            let body = serde_json::json!({
                "name": name,
                "labelListVisibility": "labelShow",
                "messageListVisibility": "show",
            })
            .to_string();
            let u = self.api(account, &["labels"], &[])?;
            let resp = self
                .call(account, cost::LABELS_CREATE, |t| {
                    let rb = self
                        .client
                        .post(u.clone())
                        .bearer_auth(t.expose())
                        .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                        .body(body.clone());
                    async move { Ok(rb) }
                })
                .await?;
            if resp.status() == StatusCode::CONFLICT {
                // Created meanwhile (another replica): read the list again.
                self.list_labels(account, known).await?;
                if !known.contains_key(&name.to_lowercase()) {
                    return Err(DeliveryError::sink_down(format!(
                        "Gmail: label {name:?} conflicts with an existing label in {}",
                        account.user
                    )));
                }
                continue;
            }
            if !resp.status().is_success() {
                return Err(self.fail(resp, account).await);
            }
            let label: Label = json(resp, crate::sink::http::BODY_CAP, "labels.create").await?;
            tracing::info!(sink = %self.name, label = %name, "Created Gmail label");
            known.insert(label.name.to_lowercase(), label.id);
        }
        ids.extend(
            account
                .labels
                .iter()
                .filter_map(|l| known.get(&l.to_lowercase()).cloned()),
        );
        Ok(ids)
    }

    async fn list_labels(
        &self,
        account: &Account,
        known: &mut HashMap<String, String>,
    ) -> Result<(), DeliveryError> {
        let u = self.api(account, &["labels"], &[])?;
        let resp = self
            .call(account, cost::LABELS_LIST, |t| {
                let rb = self.client.get(u.clone()).bearer_auth(t.expose());
                async move { Ok(rb) }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(resp, account).await);
        }
        let list: LabelList = json(resp, 4 << 20, "labels.list").await?;
        for l in list.labels {
            known.insert(l.name.to_lowercase(), l.id);
        }
        Ok(())
    }

    /// An earlier import of this message: candidates by `rfc822msgid:` (else by a size
    /// window), in spam and trash too, each confirmed by content fingerprint.
    async fn find_copy(
        &self,
        account: &Account,
        message: &SpooledMessage,
    ) -> Result<Option<String>, DeliveryError> {
        let path = message.path.clone();
        let (id, ours) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((
                payload::message_id(&path)?,
                crate::spool::fingerprint_file(&path)?,
            ))
        })
        .await
        .map_err(|e| spool_error("read the spooled message", e))?
        .map_err(|e| spool_error("read the spooled message", e))?;
        let (q, by_id) = payload::search_query(id.as_deref(), message.size);
        let max = MAX_CANDIDATES.to_string();
        let u = self.api(
            account,
            &["messages"],
            &[
                ("q", &q),
                ("includeSpamTrash", "true"),
                ("maxResults", &max),
            ],
        )?;
        let resp = self
            .call(account, cost::LIST, |t| {
                let rb = self.client.get(u.clone()).bearer_auth(t.expose());
                async move { Ok(rb) }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(resp, account).await);
        }
        let list: MessageList = json(resp, crate::sink::http::BODY_CAP, "messages.list").await?;
        for candidate in list.messages.into_iter().take(MAX_CANDIDATES) {
            if message.size > COMPARE_MAX {
                if by_id {
                    return Ok(Some(candidate.id));
                }
                continue;
            }
            let u = self.api(account, &["messages", &candidate.id], &[("format", "raw")])?;
            let resp = self
                .call(account, cost::GET, |t| {
                    let rb = self.client.get(u.clone()).bearer_auth(t.expose());
                    async move { Ok(rb) }
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                continue;
            }
            if !resp.status().is_success() {
                return Err(self.fail(resp, account).await);
            }
            let cap = (COMPARE_MAX as usize) / 3 * 4 + (1 << 20);
            let got: RawMessage = json(resp, cap, "messages.get").await?;
            let Ok(raw) = base64::Engine::decode(&B64URL, got.raw.trim()) else {
                continue;
            };
            if crate::content::fingerprint(&raw) == ours {
                return Ok(Some(candidate.id));
            }
        }
        Ok(None)
    }

    fn upload_url(
        &self,
        account: &Account,
        upload_type: &str,
    ) -> Result<reqwest::Url, DeliveryError> {
        let s = &self.settings;
        url(
            &s.api_base,
            &[
                "upload",
                "gmail",
                "v1",
                "users",
                &account.user,
                "messages",
                "import",
            ],
            &[
                ("uploadType", upload_type),
                ("internalDateSource", s.internal_date_source.as_str()),
                (
                    "neverMarkSpam",
                    if s.never_mark_spam { "true" } else { "false" },
                ),
                (
                    "processForCalendar",
                    if s.process_for_calendar {
                        "true"
                    } else {
                        "false"
                    },
                ),
            ],
        )
    }

    /// One `multipart/related` POST: metadata, then the message streamed from the spool.
    async fn import_multipart(
        &self,
        account: &Account,
        message: &SpooledMessage,
        meta: &[u8],
    ) -> Result<Response, DeliveryError> {
        let u = self.upload_url(account, "multipart")?;
        let framing = payload::multipart(meta, &payload::boundary());
        let len = framing.head.len() as u64 + message.size + framing.tail.len() as u64;
        self.call(account, cost::IMPORT, |t| {
            let (u, framing, path) = (u.clone(), &framing, &message.path);
            async move {
                still_owned(message)?;
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| spool_error("open the spooled message", e))?;
                let head = futures_util::stream::iter([Ok::<_, std::io::Error>(
                    bytes::Bytes::from(framing.head.clone()),
                )]);
                let tail = futures_util::stream::iter([Ok::<_, std::io::Error>(
                    bytes::Bytes::from(framing.tail.clone()),
                )]);
                let body = futures_util::StreamExt::chain(
                    futures_util::StreamExt::chain(
                        head,
                        tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024),
                    ),
                    tail,
                );
                Ok(self
                    .client
                    .post(u)
                    .bearer_auth(t.expose())
                    .header(CONTENT_TYPE, framing.content_type.as_str())
                    .header(CONTENT_LENGTH, len)
                    .body(reqwest::Body::wrap_stream(body)))
            }
        })
        .await
    }

    /// Google's resumable protocol: a POST with the metadata opens a session (`Location`),
    /// then PUTs of `chunk_size` bytes with `Content-Range`; `308` with `Range` asks for the
    /// rest. A chunk that got no answer is followed by a status query (`bytes */size`).
    async fn import_resumable(
        &self,
        account: &Account,
        message: &SpooledMessage,
        meta: &[u8],
    ) -> Result<Response, DeliveryError> {
        let size = message.size;
        let u = self.upload_url(account, "resumable")?;
        let resp = self
            .call(account, cost::IMPORT, |t| {
                let owned = still_owned(message);
                let rb = self
                    .client
                    .post(u.clone())
                    .bearer_auth(t.expose())
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", "message/rfc822")
                    .header("X-Upload-Content-Length", size)
                    .body(meta.to_vec());
                async move { owned.map(|()| rb) }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(resp, account).await);
        }
        let session = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| self.settings.api_base.join(l).ok())
            .ok_or_else(|| {
                DeliveryError::retryable("Gmail: the resumable upload answer has no Location")
            })?;
        // The token goes only where the API is: a session elsewhere is authorised by its URI.
        let authorised = session.origin() == self.settings.api_base.origin();
        let mut offset = 0;
        let mut probes = 0;
        loop {
            let len = self.settings.chunk_size.min(size - offset);
            let sent = self
                .call(account, 0, |t| {
                    let session = session.clone();
                    async move {
                        // The last chunk creates the message: not from a replica that lost
                        // the mailbox while this upload went on.
                        still_owned(message)?;
                        let body = file_body(&message.path, offset, len).await?;
                        let mut rb = self
                            .client
                            .put(session)
                            .header(
                                CONTENT_RANGE,
                                format!("bytes {offset}-{}/{size}", offset + len - 1),
                            )
                            .header(CONTENT_LENGTH, len)
                            .body(body);
                        if authorised {
                            rb = rb.bearer_auth(t.expose());
                        }
                        Ok(rb)
                    }
                })
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e @ DeliveryError::Retryable { .. }) if probes < MAX_PROBES => {
                    probes += 1;
                    tracing::debug!(sink = %self.name, error = %e, "Resumable chunk got no answer; asking the session");
                    self.call(account, 0, |t| {
                        let mut rb = self
                            .client
                            .put(session.clone())
                            .header(CONTENT_RANGE, format!("bytes */{size}"))
                            .header(CONTENT_LENGTH, 0);
                        if authorised {
                            rb = rb.bearer_auth(t.expose());
                        }
                        async move { Ok(rb) }
                    })
                    .await?
                }
                Err(e) => return Err(e),
            };
            if resp.status().as_u16() == 308 {
                offset = next_offset(&resp);
                if offset >= size {
                    return Err(DeliveryError::retryable(
                        "Gmail: the upload session has every byte but did not finish",
                    ));
                }
                continue;
            }
            return Ok(resp);
        }
    }
}

impl GmailSink {
    /// One import of `message` (the original or a stub); `too_big` on a size refusal.
    async fn import(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, Failed> {
        let account = self
            .settings
            .account_for(&message.mailbox)
            .map_err(DeliveryError::permanent)?;
        if let Some(refusal) = size_limit_refusal(message.size, self.settings.max_message_bytes) {
            return Err(Failed {
                too_big: message.size > 0,
                error: refusal,
            });
        }
        if let Some(paused) = self.paused(&account) {
            return Err(paused.into());
        }
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|e| DeliveryError::retryable(format!("Gmail limiter closed: {e}")))?;
        let labels = self.label_ids(&account).await?;
        let unsure = self
            .uncertain
            .lock()
            .map_or(true, |u| u.contains(key.as_str()));
        if message.seen_before || unsure {
            if let Some(id) = self.find_copy(&account, message).await? {
                if let Ok(mut u) = self.uncertain.lock() {
                    u.remove(key.as_str());
                }
                return Ok(Receipt::duplicate(format!(
                    "Gmail message {id} for {} (already there)",
                    account.user
                )));
            }
        }
        let meta = payload::metadata(&labels);
        if let Ok(mut u) = self.uncertain.lock() {
            u.insert(key.as_str().to_string());
        }
        let resp = if message.size > self.settings.resumable_threshold {
            self.import_resumable(&account, message, &meta).await?
        } else {
            self.import_multipart(&account, message, &meta).await?
        };
        if !resp.status().is_success() {
            let too_big = resp.status() == StatusCode::PAYLOAD_TOO_LARGE;
            return Err(Failed {
                error: self.fail(resp, &account).await,
                too_big,
            });
        }
        let imported: MessageRef =
            json(resp, crate::sink::http::BODY_CAP, "messages.import").await?;
        if let Ok(mut u) = self.uncertain.lock() {
            u.remove(key.as_str());
        }
        Ok(Receipt::new(format!(
            "Gmail message {} for {}",
            imported.id, account.user
        )))
    }

    async fn import_stub(
        &self,
        stub: crate::sink::offload::Stubbed,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let receipt = self.import(&stub.message, key).await.map_err(|f| f.error)?;
        Ok(stub.receipt(receipt))
    }
}

#[async_trait]
impl Sink for GmailSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// A message over the limit becomes its stub (with `oversize: stub`), and so does one
    /// stubbed before: its stub may be in the account already, and only the stored stub's
    /// bytes let the duplicate search recognise it.
    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let Some(stubs) = &self.stubs else {
            return self.import(message, key).await.map_err(|f| f.error);
        };
        if message.seen_before {
            if let Some(stub) = stubs.earlier(message).await? {
                return self.import_stub(stub, key).await;
            }
        }
        if message.size > self.settings.max_message_bytes {
            return self.import_stub(stubs.stub(message).await?, key).await;
        }
        match self.import(message, key).await {
            Err(f) if f.too_big => {
                tracing::info!(sink = %self.name, size = message.size, "Gmail refused the message as too large; importing a stub");
                self.import_stub(stubs.stub(message).await?, key).await
            }
            other => other.map_err(|f| f.error),
        }
    }
    /// The target account of `mailbox` while its daily quota is used up.
    fn paused_until(&self, mailbox: &str) -> Option<SinkPause> {
        let account = self.settings.account_for(mailbox).ok()?;
        let until = self
            .pauses
            .paused_until(&account.user, chrono::Utc::now())?;
        Some(SinkPause {
            until,
            reason: format!("the Gmail API daily quota of {} is used up", account.user),
        })
    }

    /// Can we reach the API? A TCP connect to its host and port: no token is spent. With
    /// `oversize: stub`, the offload bucket too (a HEAD).
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        crate::sink::http::reachable(
            &self.settings.api_base,
            self.settings.timeout,
            DeliveryError::sink_down("Gmail api_base has no host"),
        )
        .await?;
        match &self.stubs {
            Some(stubs) => stubs.healthcheck().await,
            None => Ok(()),
        }
    }
}
