//! The offload bucket: create-only PUTs under `<prefix><sha256>` and the links to them. A
//! content address makes every retry, crash or second message with the same attachment land on
//! the one object already there; a HEAD first spares uploading it again.

use super::config::OffloadSettings;
use crate::sink::s3::credentials::Provider;
use crate::sink::s3::service::{build_client, classify, Call, Service};
use crate::sink::DeliveryError;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use std::path::Path;

/// Where offloaded content can be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub url: String,
    /// RFC 3339; `None` for `link_base` links, which do not expire.
    pub expires_at: Option<String>,
}

/// The most a small object read whole may hold.
const MAX_SMALL: usize = 4 << 20;

pub struct OffloadStore {
    svc: Service,
    prefix: String,
    link_expiry: std::time::Duration,
    link_base: Option<reqwest::Url>,
}

fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::retryable(format!("offload: cannot {what}: {e}"))
}

impl OffloadStore {
    pub fn new(settings: OffloadSettings) -> Result<Self, String> {
        let source = settings.s3.credential_source()?;
        let client = build_client(&settings.s3)?;
        Ok(Self {
            svc: Service {
                credentials: Provider::new(source, client.clone()),
                settings: settings.s3,
                client,
            },
            prefix: settings.prefix,
            link_expiry: settings.link_expiry,
            link_base: settings.link_base,
        })
    }

    /// The object key of content with this SHA-256.
    pub fn key(&self, sha256: &str) -> String {
        format!("{}{sha256}", self.prefix)
    }

    /// Store the file at `path` (of `size` bytes, hashing to `sha256`) unless its object is
    /// there already; gives the key.
    pub async fn put(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
        content_type: &str,
    ) -> Result<String, DeliveryError> {
        let key = self.key(sha256);
        if self.holds(&key, sha256).await? {
            return Ok(key);
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| spool_error("open the content to offload", e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        let s = &self.svc.settings;
        let mut headers = vec![
            ("content-type", content_type.to_string()),
            ("content-length", size.to_string()),
            ("if-none-match", "*".to_string()),
            ("x-amz-meta-sha256", sha256.to_string()),
        ];
        if let Some(sse) = s.sse {
            headers.push(("x-amz-server-side-encryption", sse.header_value().into()));
        }
        if let Some(k) = &s.sse_kms_key_id {
            headers.push(("x-amz-server-side-encryption-aws-kms-key-id", k.clone()));
        }
        if let Some(c) = &s.storage_class {
            headers.push(("x-amz-storage-class", c.clone()));
        }
        let answer = self
            .svc
            .send(Call {
                method: Method::PUT,
                key: Some(&key),
                query: &[],
                headers,
                body: reqwest::Body::wrap_stream(stream),
                payload_sha256: sha256,
            })
            .await?;
        match answer.status {
            // 412: a concurrent delivery of the same content stored it first.
            s if s.is_success() || s == StatusCode::PRECONDITION_FAILED => Ok(key),
            s => Err(classify(&format!("PUT {key}"), s, &answer.body)),
        }
    }

    /// A small object (a stub) whole, or `None` when there is none. Read capped at
    /// [`MAX_SMALL`]: anything larger under our stub keys is not ours.
    pub async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>, DeliveryError> {
        let resp = self
            .svc
            .send_streamed(Call {
                method: Method::GET,
                key: Some(key),
                query: &[],
                headers: Vec::new(),
                body: reqwest::Body::from(""),
                payload_sha256: crate::sink::s3::sigv4::EMPTY_SHA256,
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = crate::sink::http::read_capped(resp, MAX_SMALL)
            .await
            .map_err(|e| crate::sink::s3::service::transport_error(&e))?;
        if !status.is_success() {
            return Err(classify(
                &format!("GET {key}"),
                status,
                &String::from_utf8_lossy(&body),
            ));
        }
        Ok(Some(body))
    }

    /// Store `bytes` under `key` only if nothing is there (`If-None-Match: *`): `true` when
    /// ours was stored, `false` when an object was there first (it is left as it is).
    pub async fn create(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<bool, DeliveryError> {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let s = &self.svc.settings;
        let mut headers = vec![
            ("content-type", content_type.to_string()),
            ("content-length", bytes.len().to_string()),
            ("if-none-match", "*".to_string()),
            ("x-amz-meta-sha256", sha256.clone()),
        ];
        if let Some(sse) = s.sse {
            headers.push(("x-amz-server-side-encryption", sse.header_value().into()));
        }
        if let Some(k) = &s.sse_kms_key_id {
            headers.push(("x-amz-server-side-encryption-aws-kms-key-id", k.clone()));
        }
        let answer = self
            .svc
            .send(Call {
                method: Method::PUT,
                key: Some(key),
                query: &[],
                headers,
                body: reqwest::Body::from(bytes),
                payload_sha256: &sha256,
            })
            .await?;
        match answer.status {
            s if s.is_success() => Ok(true),
            StatusCode::PRECONDITION_FAILED => Ok(false),
            s => Err(classify(&format!("PUT {key}"), s, &answer.body)),
        }
    }

    /// `s3://bucket/key`, for receipts and logs.
    pub fn address(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.svc.settings.bucket)
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Is the object there with this content? One with other content under a content address
    /// is someone else's doing: a loud permanent error, never an overwrite.
    async fn holds(&self, key: &str, sha256: &str) -> Result<bool, DeliveryError> {
        let answer = self.svc.head(Some(key)).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => match answer.header("x-amz-meta-sha256") {
                Some(theirs) if theirs != sha256 => Err(DeliveryError::permanent(format!(
                    "offload: s3://{}/{key} holds other content (sha256 {theirs}); it was not overwritten",
                    self.svc.settings.bucket
                ))),
                _ => Ok(true),
            },
            s => Err(classify(&format!("HEAD {key}"), s, &answer.body)),
        }
    }

    /// A link to `key`: pre-signed now (so each delivery attempt gets a fresh one), or the
    /// stable `link_base` form.
    pub async fn link(&self, key: &str) -> Result<Link, DeliveryError> {
        self.link_at(key, Utc::now()).await
    }

    /// A link signed at `now` (tests use a time in the past to see expiry honoured).
    pub async fn link_at(&self, key: &str, now: DateTime<Utc>) -> Result<Link, DeliveryError> {
        if let Some(base) = &self.link_base {
            let url = base
                .join(&crate::sink::s3::sigv4::encode_path(key))
                .map_err(|e| DeliveryError::permanent(format!("offload: link for {key}: {e}")))?;
            return Ok(Link {
                url: url.to_string(),
                expires_at: None,
            });
        }
        let url = crate::sink::s3::presign::link(&self.svc, key, self.link_expiry, now).await?;
        let expires =
            now + chrono::Duration::from_std(self.link_expiry).unwrap_or(chrono::Duration::zero());
        Ok(Link {
            url,
            expires_at: Some(expires.to_rfc3339_opts(SecondsFormat::Secs, true)),
        })
    }

    /// HEAD on the bucket, as the S3 sink's healthcheck.
    pub async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let answer = self.svc.head(None).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(classify(
                "offload: HEAD bucket",
                answer.status,
                &answer.body,
            ))
        }
    }
}
