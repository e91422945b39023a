//! The webhook [`Sink`]: build the body (small ones in memory; large ones as a JSON spool file
//! or the raw spool file itself), sign it, send it in one POST, classify the answer.

use super::config::{Format, WebhookSettings};
use super::payload::{self, Meta, Options};
use super::service::{build_client, classify, classify_error};
use super::signature::sign;
use crate::key::IdempotencyKey;
use crate::sink::offload::OffloadStore;
use crate::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct WebhookSink {
    name: String,
    settings: Arc<WebhookSettings>,
    client: reqwest::Client,
    /// Requests in flight to this endpoint.
    limit: Arc<Semaphore>,
    /// Where big attachments go when `offload` is configured.
    offload: Option<Arc<OffloadStore>>,
}

/// Bodies up to this size are built and sent from memory; larger ones stream from disk.
const IN_MEMORY_BODY: u64 = 1 << 20;

/// How much of an error answer is kept (and read at all).
const ERROR_SNIPPET: usize = 200;

/// The request body: small ones in memory, large ones on disk (the raw spool file, or a JSON
/// file removed when dropped), so memory stays bounded whatever the message size.
enum Body {
    Memory(bytes::Bytes),
    Raw(PathBuf),
    Json(tempfile::TempPath),
}

fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    // The spool is ours: a failure here (disk full) may pass.
    DeliveryError::retryable(format!("webhook: cannot {what}: {e}"))
}

fn header(value: &str) -> Result<HeaderValue, DeliveryError> {
    HeaderValue::from_str(value)
        .map_err(|_| DeliveryError::permanent(format!("not a valid header value: {value:?}")))
}

impl WebhookSink {
    pub fn new(name: impl Into<String>, settings: WebhookSettings) -> Result<Self, String> {
        let client = build_client(&settings)?;
        let offload = match &settings.offload {
            Some(o) => Some(Arc::new(OffloadStore::new(o.clone())?)),
            None => None,
        };
        Ok(Self {
            name: name.into(),
            offload,
            limit: Arc::new(Semaphore::new(settings.concurrency)),
            settings: Arc::new(settings),
            client,
        })
    }

    async fn body(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Body, DeliveryError> {
        let small = message.size <= IN_MEMORY_BODY;
        if self.settings.format == Format::Raw {
            if !small {
                return Ok(Body::Raw(message.path.clone()));
            }
            let raw = tokio::fs::read(&message.path)
                .await
                .map_err(|e| spool_error("read the spooled message", e))?;
            return Ok(Body::Memory(raw.into()));
        }
        let links = match (&self.offload, &self.settings.offload) {
            (Some(store), Some(o)) => {
                let max_inline = self.settings.max_inline_attachment_bytes;
                super::offload::links(store, o.raw, max_inline, message).await?
            }
            _ => payload::Links::default(),
        };
        let (message, key, settings) = (message.clone(), key.clone(), self.settings.clone());
        tokio::task::spawn_blocking(move || -> Result<Body, DeliveryError> {
            let raw = std::fs::read(&message.path)
                .map_err(|e| spool_error("read the spooled message", e))?;
            let meta = Meta {
                key: key.as_str(),
                mailbox: &message.mailbox,
                uidl: &message.uidl,
                size: message.size,
                sha256: &message.sha256,
                fetched_at: message.fetched_at,
            };
            let opts = Options {
                max_inline_attachment_bytes: settings.max_inline_attachment_bytes,
                include_raw: settings.include_raw,
            };
            let json_err = |e| spool_error("write the JSON body", e);
            if small {
                let mut out = Vec::with_capacity(raw.len() * 2 + 1024);
                payload::write_json_with_links(&raw, &meta, opts, &links, &mut out)
                    .map_err(json_err)?;
                return Ok(Body::Memory(out.into()));
            }
            let dir = message.path.parent().unwrap_or_else(|| Path::new("."));
            let file = tempfile::Builder::new()
                .prefix(".webhook-")
                .suffix(".json")
                .tempfile_in(dir)
                .map_err(|e| spool_error("create the JSON body file", e))?;
            let (file, path) = file.into_parts();
            let mut out = std::io::BufWriter::new(file);
            payload::write_json_with_links(&raw, &meta, opts, &links, &mut out)
                .map_err(json_err)?;
            std::io::Write::flush(&mut out).map_err(json_err)?;
            Ok(Body::Json(path))
        })
        .await
        .map_err(|e| spool_error("build the body", e))?
    }

    /// Length, signature and the reqwest body: from memory, or streamed from the file.
    async fn prepare(
        &self,
        body: &Body,
        key: &IdempotencyKey,
        timestamp: i64,
    ) -> Result<(u64, Option<String>, reqwest::Body), DeliveryError> {
        let keys = &self.settings.keys;
        let path = match body {
            Body::Memory(bytes) => {
                let sig = if keys.is_empty() {
                    None
                } else {
                    Some(
                        sign(keys, key.as_str(), timestamp, &bytes[..])
                            .map_err(|e| spool_error("sign the body", e))?,
                    )
                };
                return Ok((bytes.len() as u64, sig, reqwest::Body::from(bytes.clone())));
            }
            Body::Raw(p) => p.clone(),
            Body::Json(t) => t.to_path_buf(),
        };
        let len = std::fs::metadata(&path)
            .map_err(|e| spool_error("stat the body", e))?
            .len();
        let sig = if keys.is_empty() {
            None
        } else {
            let (keys, id, p) = (keys.clone(), key.as_str().to_string(), path.clone());
            let sig = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&p)?;
                sign(&keys, &id, timestamp, std::io::BufReader::new(file))
            })
            .await
            .map_err(|e| spool_error("sign the body", e))?
            .map_err(|e| spool_error("sign the body", e))?;
            Some(sig)
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| spool_error("open the body", e))?;
        // Streamed from disk: a 100 MB message never sits in memory.
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        Ok((len, sig, reqwest::Body::wrap_stream(stream)))
    }

    fn headers(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
        timestamp: i64,
        signature: Option<String>,
        len: u64,
    ) -> Result<HeaderMap, DeliveryError> {
        let mut h = HeaderMap::new();
        for (name, value) in &self.settings.headers {
            h.insert(name.clone(), header(value.expose())?);
        }
        // Headers a routing rule chose for this message.
        for (param, value) in &message.params {
            if let Some(name) = param.strip_prefix("header.") {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                    DeliveryError::permanent(format!("routing header {name:?}: {e}"))
                })?;
                h.insert(name, header(value)?);
            }
        }
        let content_type = match self.settings.format {
            Format::Json => "application/json",
            Format::Raw => "message/rfc822",
        };
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(HeaderName::from_static("webhook-id"), header(key.as_str())?);
        h.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(timestamp),
        );
        if let Some(sig) = signature {
            h.insert(HeaderName::from_static("webhook-signature"), header(&sig)?);
        }
        if self.settings.format == Format::Raw {
            h.insert(
                HeaderName::from_static("popbridge-mailbox"),
                header(&message.mailbox)?,
            );
            h.insert(
                HeaderName::from_static("popbridge-uidl"),
                header(&message.uidl)?,
            );
            h.insert(
                HeaderName::from_static("popbridge-sha256"),
                header(&message.sha256)?,
            );
            h.insert(
                HeaderName::from_static("popbridge-size"),
                HeaderValue::from(message.size),
            );
            h.insert(
                HeaderName::from_static("popbridge-fetched-at"),
                header(
                    &message
                        .fetched_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )?,
            );
        }
        Ok(h)
    }
}

/// The configured URL, with the path suffix a routing rule chose for this message appended.
fn routed_url(url: &reqwest::Url, message: &SpooledMessage) -> reqwest::Url {
    let mut out = url.clone();
    if let Some(suffix) = message.params.get("path") {
        let path = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            suffix.trim_start_matches('/')
        );
        out.set_path(&path);
    }
    out
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(
        &self,
        message: &SpooledMessage,
        key: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|e| DeliveryError::retryable(format!("webhook limiter closed: {e}")))?;
        let body = self.body(message, key).await?;
        let timestamp = chrono::Utc::now().timestamp();
        let (len, signature, request_body) = self.prepare(&body, key, timestamp).await?;
        let headers = self.headers(message, key, timestamp, signature, len)?;
        let response = self
            .client
            .post(routed_url(&self.settings.url, message))
            .headers(headers)
            .body(request_body)
            .send()
            .await
            .map_err(|e| classify_error(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A short piece of the answer, for the dead-letter record; only that much is read, so
        // an endless or huge error body costs nothing.
        let snippet = if status.is_success() {
            String::new()
        } else {
            let bytes = crate::sink::http::read_capped(response, ERROR_SNIPPET)
                .await
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).trim().to_string()
        };
        drop(body);
        let code = classify(status, retry_after.as_deref(), &snippet)?;
        Ok(Receipt::new(format!(
            "HTTP {code} at {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )))
    }

    /// Can we reach the endpoint? A TCP connect to its host and port; it never POSTs, so the
    /// receiver sees no test traffic.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        crate::sink::http::reachable(
            &self.settings.url,
            self.settings.timeout,
            DeliveryError::permanent("webhook url has no host"),
        )
        .await?;
        match &self.offload {
            Some(store) => store.healthcheck().await,
            None => Ok(()),
        }
    }
}
