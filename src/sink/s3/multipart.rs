//! Multipart upload for large messages: HEAD first (a repeat finds its object), then one part at
//! a time read from the spool file (so memory holds one part), and a conditional complete. Any
//! failure after the upload began aborts it, so no invisible parts are left to bill.

use super::object::{existing, receipt_detail, spool_error, Object};
use super::service::{classify, Call, Service};
use super::sigv4::EMPTY_SHA256;
use super::xml;
use crate::sink::{DeliveryError, Receipt, SpooledMessage};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub(super) async fn upload(
    svc: &Service,
    message: &SpooledMessage,
    obj: Object,
) -> Result<Receipt, DeliveryError> {
    if let Some(receipt) = existing(svc, &obj.key, &message.sha256, message.size).await? {
        return Ok(receipt);
    }
    let answer = svc
        .send(Call {
            method: Method::POST,
            key: Some(&obj.key),
            query: &[("uploads", "")],
            headers: obj.headers.clone(),
            body: reqwest::Body::from(""),
            payload_sha256: EMPTY_SHA256,
        })
        .await?;
    if !answer.status.is_success() {
        return Err(classify(
            &format!("CreateMultipartUpload {}", obj.key),
            answer.status,
            &answer.body,
        ));
    }
    let upload_id = xml::tag(&answer.body, "UploadId").ok_or_else(|| {
        DeliveryError::retryable(format!(
            "s3: CreateMultipartUpload {}: no UploadId in the answer",
            obj.key
        ))
    })?;
    let result = parts_and_complete(svc, message, &obj.key, &upload_id).await;
    match &result {
        Ok(r) if !r.duplicate => {}
        // Failed, or someone else's complete won: our parts must not linger.
        _ => abort(svc, &obj.key, &upload_id).await,
    }
    result
}

async fn parts_and_complete(
    svc: &Service,
    message: &SpooledMessage,
    key: &str,
    upload_id: &str,
) -> Result<Receipt, DeliveryError> {
    let mut file = tokio::fs::File::open(&message.path)
        .await
        .map_err(|e| spool_error("open the spooled message", e))?;
    let part_size = svc.settings.part_size;
    let mut whole = Sha256::new();
    let mut etags = Vec::new();
    let mut sent = 0u64;
    while sent < message.size {
        let want = part_size.min(message.size - sent);
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        (&mut file)
            .take(want)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| spool_error("read the spooled message", e))?;
        if buf.len() as u64 != want {
            return Err(spool_error(
                "read the spooled message",
                format!(
                    "it ended at byte {} of {}",
                    sent + buf.len() as u64,
                    message.size
                ),
            ));
        }
        whole.update(&buf);
        sent += want;
        let number = (etags.len() + 1).to_string();
        let part_sha = hex::encode(Sha256::digest(&buf));
        let answer = svc
            .send(Call {
                method: Method::PUT,
                key: Some(key),
                query: &[("partNumber", &number), ("uploadId", upload_id)],
                headers: vec![("content-length", want.to_string())],
                body: reqwest::Body::from(buf),
                payload_sha256: &part_sha,
            })
            .await?;
        if !answer.status.is_success() {
            return Err(classify(
                &format!("UploadPart {number} of {key}"),
                answer.status,
                &answer.body,
            ));
        }
        let etag = answer.header("etag").ok_or_else(|| {
            DeliveryError::retryable(format!("s3: UploadPart {number} of {key}: no ETag"))
        })?;
        etags.push(etag);
    }
    if hex::encode(whole.finalize()) != message.sha256 {
        return Err(spool_error(
            "upload the message",
            "the spool file changed while it was read",
        ));
    }
    let mut body = String::from("<CompleteMultipartUpload>");
    for (i, etag) in etags.iter().enumerate() {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            i + 1,
            xml::escape(etag)
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    let body_sha = hex::encode(Sha256::digest(body.as_bytes()));
    let answer = svc
        .send(Call {
            method: Method::POST,
            key: Some(key),
            query: &[("uploadId", upload_id)],
            headers: vec![
                ("content-type", "application/xml".into()),
                ("if-none-match", "*".into()),
            ],
            body: reqwest::Body::from(body),
            payload_sha256: &body_sha,
        })
        .await?;
    // A 200 can still carry an <Error> when S3 fails after it began answering.
    if answer.status.is_success() && !answer.body.contains("<Error>") {
        let etag = xml::tag(&answer.body, "ETag").unwrap_or_default();
        return Ok(Receipt::new(receipt_detail(
            &svc.settings.bucket,
            key,
            &etag,
        )));
    }
    if answer.status == StatusCode::PRECONDITION_FAILED {
        return existing(svc, key, &message.sha256, message.size)
            .await?
            .ok_or_else(|| {
                DeliveryError::retryable(format!(
                    "s3: {key} was reported as existing but HEAD finds nothing; will retry"
                ))
            });
    }
    let status = if answer.status.is_success() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        answer.status
    };
    Err(classify(
        &format!("CompleteMultipartUpload {key}"),
        status,
        &answer.body,
    ))
}

/// Best effort: a failed abort is logged (a bucket lifecycle rule catches what is left).
async fn abort(svc: &Service, key: &str, upload_id: &str) {
    let result = svc
        .send(Call {
            method: Method::DELETE,
            key: Some(key),
            query: &[("uploadId", upload_id)],
            headers: Vec::new(),
            body: reqwest::Body::from(""),
            payload_sha256: EMPTY_SHA256,
        })
        .await;
    match result {
        Ok(a) if a.status.is_success() || a.status == StatusCode::NOT_FOUND => {}
        Ok(a) => tracing::warn!(
            key,
            upload_id,
            status = a.status.as_u16(),
            "Cannot abort an S3 multipart upload"
        ),
        Err(e) => tracing::warn!(key, upload_id, error = %e, "Cannot abort an S3 multipart upload"),
    }
}
