//! The S3 [`Sink`]: a deterministic key, a conditional create (`If-None-Match: *`), and on a
//! "412 already exists" a HEAD that compares the stored sha256 with ours — equal is a repeat
//! after a crash, different is a loud permanent error, never an overwrite.

use super::config::S3Settings;
use super::credentials::{Provider, Source};
use super::key::{header_fields, KeyInput};
use super::multipart;
use super::object::{existing, receipt_detail, spool_error, Object};
use super::service::{build_client, classify, Call, Service};
use crate::key::IdempotencyKey;
use crate::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

pub struct S3Sink {
    name: String,
    service: Arc<Service>,
    /// Uploads in flight; with one part buffered each, this bounds the memory used.
    limit: Arc<Semaphore>,
}

/// The header block is looked for in this much of the message (for `Date:` and `Message-ID:`).
const HEAD_BYTES: u64 = 64 * 1024;

/// Metadata values must be plain visible ASCII; anything else is %-escaped.
fn meta_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// S3 refuses a PUT whose user metadata passes 2 KB: a longer Message-ID (a hostile or broken
/// header) is left out of the metadata rather than failing the message.
const MAX_MESSAGE_ID_META: usize = 1024;

/// The `x-amz-meta-message-id` value, when it fits.
fn message_id_meta(message_id: &str) -> Option<String> {
    Some(meta_value(message_id)).filter(|v| v.len() <= MAX_MESSAGE_ID_META)
}

impl S3Sink {
    /// Keys from the config, else the standard chain read from the environment now.
    pub fn new(name: impl Into<String>, settings: S3Settings) -> Result<Self, String> {
        let source = settings.credential_source()?;
        Self::with_source(name, settings, source)
    }

    pub fn with_source(
        name: impl Into<String>,
        settings: S3Settings,
        source: Source,
    ) -> Result<Self, String> {
        let client = build_client(&settings)?;
        Ok(Self {
            name: name.into(),
            limit: Arc::new(Semaphore::new(settings.concurrency)),
            service: Arc::new(Service {
                credentials: Provider::new(source, client.clone()),
                settings,
                client,
            }),
        })
    }

    /// The key and headers for a message; reads only its header block.
    async fn object(
        &self,
        message: &SpooledMessage,
        id: &IdempotencyKey,
    ) -> Result<Object, DeliveryError> {
        let file = tokio::fs::File::open(&message.path)
            .await
            .map_err(|e| spool_error("open the spooled message", e))?;
        let mut head = Vec::new();
        file.take(HEAD_BYTES)
            .read_to_end(&mut head)
            .await
            .map_err(|e| spool_error("read the spooled message", e))?;
        let (date, message_id) = header_fields(&head);
        let s = &self.service.settings;
        let key = s.key.render(&KeyInput {
            mailbox: &message.mailbox,
            id: id.as_str(),
            uidl: &message.uidl,
            sha256: &message.sha256,
            date,
        });
        // A routing rule may put the object under a prefix (recorded with the message, so
        // every attempt names the same key).
        let key = match message.params.get("prefix") {
            Some(prefix) => format!("{prefix}{key}"),
            None => key,
        };
        let mut headers = vec![
            ("content-type", "message/rfc822".to_string()),
            ("x-amz-meta-mailbox", meta_value(&message.mailbox)),
            ("x-amz-meta-uidl", meta_value(&message.uidl)),
            ("x-amz-meta-id", id.as_str().to_string()),
            ("x-amz-meta-sha256", message.sha256.clone()),
        ];
        if let Some(m) = message_id.as_deref().and_then(message_id_meta) {
            headers.push(("x-amz-meta-message-id", m));
        }
        if let Some(sse) = s.sse {
            headers.push(("x-amz-server-side-encryption", sse.header_value().into()));
        }
        if let Some(k) = &s.sse_kms_key_id {
            headers.push(("x-amz-server-side-encryption-aws-kms-key-id", k.clone()));
        }
        if let Some(c) = &s.storage_class {
            headers.push(("x-amz-storage-class", c.clone()));
        }
        Ok(Object { key, headers })
    }

    /// One PUT streamed from the spool file, signed with the sha256 we already have.
    async fn put(&self, message: &SpooledMessage, obj: Object) -> Result<Receipt, DeliveryError> {
        let file = tokio::fs::File::open(&message.path)
            .await
            .map_err(|e| spool_error("open the spooled message", e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        let mut headers = obj.headers;
        headers.push(("content-length", message.size.to_string()));
        headers.push(("if-none-match", "*".to_string()));
        let answer = self
            .service
            .send(Call {
                method: Method::PUT,
                key: Some(&obj.key),
                query: &[],
                headers,
                body: reqwest::Body::wrap_stream(stream),
                payload_sha256: &message.sha256,
            })
            .await?;
        match answer.status {
            s if s.is_success() => Ok(Receipt::new(receipt_detail(
                &self.service.settings.bucket,
                &obj.key,
                &answer.header("etag").unwrap_or_default(),
            ))),
            StatusCode::PRECONDITION_FAILED => {
                existing(&self.service, &obj.key, &message.sha256, message.size)
                    .await?
                    .ok_or_else(|| {
                        DeliveryError::retryable(format!(
                            "s3: {} was reported as existing but HEAD finds nothing; will retry",
                            obj.key
                        ))
                    })
            }
            s => Err(classify(&format!("PUT {}", obj.key), s, &answer.body)),
        }
    }
}

#[async_trait]
impl Sink for S3Sink {
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
            .map_err(|e| DeliveryError::retryable(format!("s3 limiter closed: {e}")))?;
        let obj = self.object(message, key).await?;
        if message.size >= self.service.settings.multipart_threshold {
            multipart::upload(&self.service, message, obj).await
        } else {
            self.put(message, obj).await
        }
    }

    /// HEAD on the bucket: proves the endpoint answers, the keys sign, and the bucket exists.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let answer = self.service.head(None).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(DeliveryError::sink_down(format!(
                "s3: bucket {} does not exist (create the bucket or fix `bucket`)",
                self.service.settings.bucket
            ))),
            s => Err(classify("HEAD bucket", s, &answer.body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_are_visible_ascii() {
        assert_eq!(meta_value("<a b@x>"), "<a%20b@x>");
        assert_eq!(meta_value("ventes-été"), "ventes-%C3%A9t%C3%A9");
        assert_eq!(meta_value("50%"), "50%25");
    }

    #[test]
    fn an_oversized_message_id_is_left_out_of_the_metadata() {
        assert_eq!(message_id_meta("m1@x").as_deref(), Some("m1@x"));
        let head = format!("Message-ID: <{}@x>\r\n\r\n", "\u{e9}".repeat(3000));
        let (_, mid) = super::super::key::header_fields(head.as_bytes());
        assert!(mid.is_some());
        assert_eq!(mid.as_deref().and_then(message_id_meta), None);
    }
}
