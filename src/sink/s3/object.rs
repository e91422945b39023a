//! The object a message becomes, and what is already stored under its key: the HEAD that
//! turns a repeat into a duplicate receipt (or refuses to overwrite something else). Shared by
//! the single PUT (`sink.rs`) and the multipart upload (`multipart.rs`), so neither imports the
//! other.

use super::service::{classify, Call, Service};
use super::sigv4::EMPTY_SHA256;
use crate::sink::{DeliveryError, Receipt};
use reqwest::{Method, StatusCode};

/// The object's name and the headers that describe it (type, metadata, encryption, class).
pub(super) struct Object {
    pub key: String,
    pub headers: Vec<(&'static str, String)>,
}

pub(super) fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    // The spool is ours: a failure here (disk full, a file being replaced) may pass.
    DeliveryError::retryable(format!("s3: cannot {what}: {e}"))
}

pub(super) fn receipt_detail(bucket: &str, key: &str, etag: &str) -> String {
    format!("s3://{bucket}/{key} ETag {etag}")
}

/// Is the object already there? `None` when it is not; a duplicate receipt when it holds this
/// very message; a permanent error when it holds something else (never overwritten).
pub(super) async fn existing(
    svc: &Service,
    key: &str,
    sha256: &str,
    size: u64,
) -> Result<Option<Receipt>, DeliveryError> {
    let answer = svc.head(Some(key)).await?;
    match answer.status {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => {
            let mut theirs = answer.header("x-amz-meta-sha256");
            let same_size = answer.header("content-length").as_deref() == Some(&size.to_string());
            if theirs.is_none() && same_size {
                // Written without our metadata (another tool, or a server that stored the
                // bytes but not the metadata when our connection died): compare the content.
                theirs = Some(content_sha256(svc, key).await?);
            }
            if theirs.as_deref() == Some(sha256) {
                let etag = answer.header("etag").unwrap_or_default();
                Ok(Some(Receipt::duplicate(receipt_detail(
                    &svc.settings.bucket,
                    key,
                    &etag,
                ))))
            } else {
                tracing::error!(key, ours = sha256, theirs = ?theirs, "S3 object exists with different content; not overwritten");
                Err(DeliveryError::permanent(format!(
                    "s3: s3://{}/{key} already holds a different object (sha256 {}, this message {sha256}); it was not overwritten: check the `key` template or move the object away",
                    svc.settings.bucket,
                    theirs.as_deref().unwrap_or("not recorded"),
                )))
            }
        }
        s => Err(classify(&format!("HEAD {key}"), s, &answer.body)),
    }
}

/// SHA-256 of a stored object, streamed (memory stays bounded whatever its size).
async fn content_sha256(svc: &Service, key: &str) -> Result<String, DeliveryError> {
    use futures_util::StreamExt;
    use sha2::{Digest, Sha256};
    let resp = svc
        .send_streamed(Call {
            method: Method::GET,
            key: Some(key),
            query: &[],
            headers: Vec::new(),
            body: reqwest::Body::from(""),
            payload_sha256: EMPTY_SHA256,
        })
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let body = crate::sink::http::read_capped(resp, crate::sink::http::BODY_CAP)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        return Err(classify(&format!("GET {key}"), status, &body));
    }
    let mut hash = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| super::service::transport_error(&e))?;
        hash.update(&chunk);
    }
    Ok(hex::encode(hash.finalize()))
}
