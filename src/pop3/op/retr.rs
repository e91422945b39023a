//! RETR into spool files: pipelined within the window, each message streamed through the
//! dot-unstuffing decoder straight to a temp file while its SHA-256 and size are computed, so
//! a message of any size costs one read buffer of memory.

use crate::pop3::codec::BodyDecoder;
use crate::pop3::conn::refusal;
use crate::pop3::error::Pop3Error;
use crate::pop3::response::Status;
use crate::pop3::session::Transaction;
use std::io::Write;
use std::path::Path;
use tokio::sync::mpsc::Sender;

/// Spool writes are buffered to this size and done in place: they land in the page cache and
/// take microseconds, where a hop to tokio's blocking pool per chunk cost more than the write.
const SPOOL_BUFFER: usize = 256 * 1024;

/// One retrieved message, byte-identical to what the server sent after unstuffing.
#[derive(Debug)]
pub struct Retrieved {
    /// The spool file; deleted when dropped unless persisted or kept by the caller.
    pub file: tempfile::TempPath,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file's content.
    pub sha256: String,
    /// [`crate::content::Fingerprint`]: the content without what servers rewrite.
    pub fingerprint: String,
}

impl Transaction {
    /// Pipelined RETR of `msgnos` (window = `pipeline_window` when PIPELINING is advertised,
    /// else 1), each message streamed with dot-unstuffing into a new temp file in `spool_dir`,
    /// SHA-256 and size computed while streaming. Each result is sent on `tx` in order as soon
    /// as it is complete (`tx.send().await` gives backpressure). A per-message `-ERR` (or a
    /// spool write failure) yields Err for that message only and the rest continue; a
    /// connection-level error ends the call with Err. If the receiver is dropped, no new RETR
    /// is sent, the ones in flight are read to keep the session usable, and the call returns Ok.
    pub async fn retr_to_spool(
        &mut self,
        msgnos: &[u32],
        spool_dir: &Path,
        tx: Sender<(u32, Result<Retrieved, Pop3Error>)>,
    ) -> Result<(), Pop3Error> {
        let mut broken_at = None;
        self.retr_to_spool_tracked(msgnos, spool_dir, tx, &mut broken_at)
            .await
    }

    /// [`Transaction::retr_to_spool`], and on a connection-level error, the message whose
    /// answer was being read in `broken_at` (a message that always breaks the connection is
    /// counted against, then skipped, so it cannot wedge the mailbox).
    pub async fn retr_to_spool_tracked(
        &mut self,
        msgnos: &[u32],
        spool_dir: &Path,
        tx: Sender<(u32, Result<Retrieved, Pop3Error>)>,
        broken_at: &mut Option<u32>,
    ) -> Result<(), Pop3Error> {
        let mut sent = 0;
        let mut stop_sending = false;
        let mut write_failed = None;
        let mut out = Vec::new();
        for (i, &msgno) in msgnos.iter().enumerate() {
            if !stop_sending {
                let upto = msgnos.len().min(i + self.window);
                if sent < upto {
                    let batch: String = msgnos[sent..upto]
                        .iter()
                        .map(|n| format!("RETR {n}\r\n"))
                        .collect();
                    tracing::debug!(server = %self.conn.server, count = upto - sent, "Sending RETR commands");
                    if let Err(e) = self.conn.write(batch.as_bytes(), "sending RETR").await {
                        // The server hung up, maybe in the middle of an answer we have not
                        // read yet: read what it sent before that, so the error lands on
                        // the message it broke on.
                        write_failed = Some(e);
                        stop_sending = true;
                    } else {
                        sent = upto;
                    }
                }
            }
            if i >= sent {
                break;
            }
            let result = match self.retr_one(msgno, spool_dir, &mut out).await {
                Ok(r) => r,
                Err(e) => {
                    *broken_at = Some(msgno);
                    return Err(e);
                }
            };
            if tx.send((msgno, result)).await.is_err() {
                stop_sending = true;
            }
        }
        match write_failed {
            // Every answer that arrived was read whole: the culprit is unknown.
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads one RETR answer. The outer error is the connection's, the inner this message's.
    async fn retr_one(
        &mut self,
        msgno: u32,
        spool_dir: &Path,
        out: &mut Vec<u8>,
    ) -> Result<Result<Retrieved, Pop3Error>, Pop3Error> {
        let command = format!("RETR {msgno}");
        match self.conn.read_status(&command).await? {
            s if s.status == Status::Err => {
                return Ok(Err(refusal(&self.conn.server, &command, s)))
            }
            s if s.status == Status::Continue => {
                return Err(Pop3Error::Protocol {
                    server: self.conn.server.clone(),
                    command,
                    detail: "unexpected `+` continuation".into(),
                })
            }
            _ => {}
        }
        let spool_err = |source| Pop3Error::Spool {
            dir: spool_dir.display().to_string(),
            source,
        };
        // A spool failure must not desynchronise the session: keep reading, drop the bytes.
        let mut failed: Option<std::io::Error> = None;
        let (mut file, path) = match tempfile::Builder::new()
            .prefix(".pop3-")
            .tempfile_in(spool_dir)
        {
            Ok(named) => {
                let (file, path) = named.into_parts();
                (
                    Some(std::io::BufWriter::with_capacity(SPOOL_BUFFER, file)),
                    Some(path),
                )
            }
            Err(e) => {
                failed = Some(e);
                (None, None)
            }
        };
        // No line limit inside a message: nothing is held per line, and a real message with a
        // long line must not become undeliverable. The size cap bounds an endless one.
        let mut dec = BodyDecoder::new(usize::MAX);
        let mut digests = crate::spool::Digests::new();
        loop {
            out.clear();
            let done = self.conn.body_chunk(&mut dec, out, &command).await?;
            digests.update(out);
            if digests.size() > self.conn.max_message_bytes {
                self.conn.poison();
                return Err(Pop3Error::Protocol {
                    server: self.conn.server.clone(),
                    command: command.clone(),
                    detail: format!(
                        "message {msgno} is larger than max_message_bytes ({} bytes); the connection was dropped",
                        self.conn.max_message_bytes
                    ),
                });
            }
            if let Some(f) = file.as_mut() {
                if let Err(e) = f.write_all(out) {
                    failed = Some(e);
                    file = None;
                }
            }
            if done {
                break;
            }
        }
        if let Some(mut f) = file {
            // Flush the buffer so the file is complete when we hand it over.
            if let Err(e) = f.flush() {
                failed = Some(e);
            }
        }
        let digested = digests.finish();
        tracing::debug!(server = %self.conn.server, msgno, size = digested.size, "Retrieved message");
        Ok(match (failed, path) {
            (None, Some(file)) => Ok(Retrieved {
                file,
                size: digested.size,
                sha256: digested.sha256,
                fingerprint: digested.fingerprint,
            }),
            (Some(e), _) => Err(spool_err(e)),
            (None, None) => Err(spool_err(std::io::Error::other("no spool file"))),
        })
    }
}
