//! Mailbox targets (IMAP, Gmail) and messages over their size limit (`oversize: stub`): the
//! original goes whole to the offload bucket, and a short stub message
//! ([`super::stub_message`]) is delivered in its place.
//!
//! Exactly once: the stub is stored create-only beside the original, under
//! `<prefix>stubs/<sink>/<sha256 of the original>.eml`, and what is delivered is always the stored
//! bytes. A retry after a crash (the stub appended, the receipt not written) thus sends the
//! very bytes the target already holds, and the sink's own duplicate search (Message-ID and
//! content) finds them; a stub made anew would carry a freshly signed link, differ, and be
//! delivered a second time. A changed link expiry or `link_base` cannot change the stub of a
//! message already stubbed either. The sink's name is in the key because "stubbed before" is a
//! fact about one target: a sink with a higher limit sharing the bucket must not take another
//! sink's stub for its own (it may hold the original).

use super::{stub_message, OffloadSettings, OffloadStore};
use crate::sink::{DeliveryError, Receipt, SpooledMessage, StubbedOriginal};
use std::io::Write;

/// A failed delivery to a mailbox target, and whether the target refused the message for its
/// size (`TOOBIG`, HTTP 413): the one failure a stub can cure.
#[derive(Clone, Debug)]
pub struct Failed {
    pub error: DeliveryError,
    pub too_big: bool,
}

impl From<DeliveryError> for Failed {
    fn from(error: DeliveryError) -> Self {
        Self {
            error,
            too_big: false,
        }
    }
}

/// The offload bucket as the stub maker of one sink.
pub struct Stubs {
    store: OffloadStore,
    /// The sink's config name (a plain path component, as validated).
    sink: String,
}

/// A stub ready to deliver: a spooled message of its own (same mailbox, UIDL, key and
/// `seen_before` as the original), its file removed when this is dropped.
pub struct Stubbed {
    pub message: SpooledMessage,
    pub original: StubbedOriginal,
    _file: tempfile::TempPath,
}

fn spool_error(what: &str, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::retryable(format!("stub: cannot {what}: {e}"))
}

impl Stubs {
    pub fn new(sink: &str, settings: OffloadSettings) -> Result<Self, String> {
        Ok(Self {
            store: OffloadStore::new(settings)?,
            sink: sink.to_string(),
        })
    }

    /// Where the stub of the message with this SHA-256 is kept.
    pub fn stub_key(&self, sha256: &str) -> String {
        format!("{}stubs/{}/{sha256}.eml", self.store.prefix(), self.sink)
    }

    /// The stub of `message`: the stored one, or one made now and stored (create-only; when
    /// another delivery stored one first, that one). The original is stored first, so a
    /// stored stub always has its original.
    pub async fn stub(&self, message: &SpooledMessage) -> Result<Stubbed, DeliveryError> {
        let original = self
            .store
            .put(
                &message.path,
                &message.sha256,
                message.size,
                "message/rfc822",
            )
            .await?;
        let key = self.stub_key(&message.sha256);
        let bytes = match self.store.get_small(&key).await? {
            Some(stored) => stored,
            None => {
                let link = self.store.link(&original).await?;
                let (path, sha256, size) =
                    (message.path.clone(), message.sha256.clone(), message.size);
                let made = tokio::task::spawn_blocking(move || {
                    let file = std::io::BufReader::new(std::fs::File::open(&path)?);
                    stub_message::build_from(file, &sha256, size, &link)
                })
                .await
                .map_err(|e| spool_error("read the message", e))?
                .map_err(|e| spool_error("read the message", e))?;
                if self
                    .store
                    .create(&key, made.clone(), "message/rfc822")
                    .await?
                {
                    made
                } else {
                    self.store.get_small(&key).await?.ok_or_else(|| {
                        DeliveryError::retryable(format!(
                            "stub: {} was there a moment ago and is gone",
                            self.store.address(&key)
                        ))
                    })?
                }
            }
        };
        self.spooled(message, &original, bytes)
    }

    /// The stub stored for `message` by an earlier delivery to this sink, if any: a message
    /// stubbed once is stubbed again (its stub may be in the target already), whatever the
    /// limit says now.
    pub async fn earlier(
        &self,
        message: &SpooledMessage,
    ) -> Result<Option<Stubbed>, DeliveryError> {
        let key = self.stub_key(&message.sha256);
        match self.store.get_small(&key).await? {
            None => Ok(None),
            Some(bytes) => {
                let original = self.store.key(&message.sha256);
                self.spooled(message, &original, bytes).map(Some)
            }
        }
    }

    /// The stub's bytes as a spool file beside the original's.
    fn spooled(
        &self,
        message: &SpooledMessage,
        original: &str,
        bytes: Vec<u8>,
    ) -> Result<Stubbed, DeliveryError> {
        // Our own key holding something else is someone else's doing: never deliver it.
        match stub_message::marker(&bytes) {
            Some((sha, size)) if sha == message.sha256 && size == message.size => {}
            _ => {
                return Err(DeliveryError::permanent(format!(
                    "stub: {} is not the stub of this message; it was left as it is",
                    self.store.address(&self.stub_key(&message.sha256))
                )))
            }
        }
        use sha2::Digest;
        let dir = message
            .path
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".stub-")
            .tempfile_in(dir)
            .map_err(|e| spool_error("write the stub", e))?;
        file.write_all(&bytes)
            .and_then(|()| file.flush())
            .map_err(|e| spool_error("write the stub", e))?;
        let path = file.into_temp_path();
        let mut stub = message.clone();
        stub.path = path.to_path_buf();
        stub.size = bytes.len() as u64;
        stub.sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(Stubbed {
            message: stub,
            original: StubbedOriginal {
                object: self.store.address(original),
                size: message.size,
            },
            _file: path,
        })
    }

    pub async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.store.healthcheck().await
    }
}

impl Stubbed {
    /// The receipt of the stub's delivery, saying it was a stub and where the original is.
    pub fn receipt(&self, mut receipt: Receipt) -> Receipt {
        receipt.detail = format!(
            "{} (stub; original of {} bytes in {})",
            receipt.detail, self.original.size, self.original.object
        );
        receipt.stub = Some(self.original.clone());
        receipt
    }
}
