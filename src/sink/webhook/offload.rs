//! The webhook's use of the offload bucket: before a JSON body is built, store what will not
//! travel inline (attachments over `max_inline_attachment_bytes`, and with `raw: true` the
//! whole message) and link to it. Links are signed anew at every attempt.

use super::payload::{self, Links};
use crate::sink::offload::OffloadStore;
use crate::sink::{DeliveryError, SpooledMessage};
use std::io::Write;
use std::path::Path;

/// One attachment written out of the message, waiting to be stored.
struct Extracted {
    sha256: String,
    content_type: Option<String>,
    size: u64,
    path: tempfile::TempPath,
}

fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::retryable(format!("webhook offload: cannot {what}: {e}"))
}

/// Store what must not go inline and give the links to put in the payload.
pub(super) async fn links(
    store: &OffloadStore,
    raw_too: bool,
    max_inline: u64,
    message: &SpooledMessage,
) -> Result<Links, DeliveryError> {
    let mut links = Links::default();
    if raw_too {
        let key = store
            .put(
                &message.path,
                &message.sha256,
                message.size,
                "message/rfc822",
            )
            .await?;
        links.raw = Some(store.link(&key).await?);
    }
    // Decoded content is never larger than the message: a small message has nothing to store.
    if message.size <= max_inline {
        return Ok(links);
    }
    let path = message.path.clone();
    let extracted = tokio::task::spawn_blocking(move || extract(&path, max_inline))
        .await
        .map_err(|e| spool_error("extract the attachments", e))?
        .map_err(|e| spool_error("extract the attachments", e))?;
    for e in extracted {
        let content_type = e
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let key = store.put(&e.path, &e.sha256, e.size, content_type).await?;
        links.attachments.insert(e.sha256, store.link(&key).await?);
    }
    Ok(links)
}

/// Each large attachment decoded into its own temp file beside the spool file.
fn extract(path: &Path, max_inline: u64) -> std::io::Result<Vec<Extracted>> {
    let raw = std::fs::read(path)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut out = Vec::new();
    payload::large_attachments(&raw, max_inline, |a| {
        let mut file = tempfile::Builder::new()
            .prefix(".offload-")
            .tempfile_in(dir)?;
        file.write_all(a.contents)?;
        file.flush()?;
        out.push(Extracted {
            sha256: a.sha256,
            content_type: a.content_type,
            size: a.contents.len() as u64,
            path: file.into_temp_path(),
        });
        Ok(())
    })?;
    Ok(out)
}
