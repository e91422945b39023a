//! APPEND streamed from the spool file. Everything that can fail on our side (opening the
//! file, its size, looking for NUL bytes) happens before the literal is announced: after that
//! the server takes the next `size` bytes as the message whatever they are, so any failure
//! leaves the session broken rather than let our next command become message data.

use super::{has, quote_folder, Session, MAX_UNTAGGED_LINES};
use crate::imap::codec::{self, Status};
use crate::imap::ImapError;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

const CHUNK: usize = 64 * 1024;

/// Bytes read after a failed connection while looking for a pending answer.
const MAX_PENDING: usize = 64 * 1024;

/// Above this size a message goes as a synchronising literal even when the server has
/// LITERAL+: one round trip lets the server refuse it (`NO [TOOBIG]`, quota) before the bytes
/// flow, where Cyrus would otherwise answer `BYE` in the middle of the literal and reset the
/// connection, which looks like a network failure and is retried forever.
pub(super) const SYNC_LITERAL_ABOVE: u64 = 64 * 1024;

/// The server-wide `APPENDLIMIT=n` (RFC 7889) among capabilities, if announced.
pub(super) fn append_limit(caps: &[String]) -> Option<u64> {
    caps.iter()
        .find_map(|c| c.strip_prefix("APPENDLIMIT="))
        .and_then(|n| n.parse().ok())
}

fn spool(source: std::io::Error) -> ImapError {
    ImapError::Spool { source }
}

/// Whether the file holds a NUL byte, which only a binary literal (RFC 3516) carries intact.
/// Rewinds the file.
fn has_nul(file: &mut File) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; CHUNK];
    let found = loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break false;
        }
        if chunk[..n].contains(&0) {
            break true;
        }
    };
    file.rewind()?;
    Ok(found)
}

impl Session {
    /// APPEND the file at `path` (`size` bytes) to `folder`; `(uidvalidity, uid)` when the
    /// server has UIDPLUS. A message with a NUL byte goes as a binary literal (`~{n}`) when
    /// the server has BINARY, else as a normal literal. A message over the server's
    /// `APPENDLIMIT` is refused here with `TOOBIG`, without sending anything.
    pub async fn append(
        &mut self,
        folder: &str,
        flags: &[String],
        internal_date: &str,
        path: &Path,
        size: u64,
    ) -> Result<Option<(u32, u32)>, ImapError> {
        let name = quote_folder(folder)?;
        let mut file = File::open(path).map_err(spool)?;
        let on_disk = file.metadata().map_err(spool)?.len();
        if on_disk != size {
            return Err(spool(std::io::Error::other(format!(
                "the spool file has {on_disk} bytes, {size} expected"
            ))));
        }
        if let Some(limit) = append_limit(&self.caps).filter(|limit| size > *limit) {
            return Err(self.over_limit(size, limit));
        }
        let binary = has(&self.caps, "BINARY") && has_nul(&mut file).map_err(spool)?;
        let tag = self.next_tag();
        let plus = has(&self.caps, "LITERAL+") && size <= SYNC_LITERAL_ABOVE;
        let head = format!(
            "{tag} APPEND {name} ({}) \"{internal_date}\" {}{{{size}{}}}\r\n",
            flags.join(" "),
            if binary { "~" } else { "" },
            if plus { "+" } else { "" }
        );
        self.write(head.as_bytes()).await?;
        if !plus {
            self.await_continuation(&tag).await?;
        }
        if let Err(e) = self.send_literal(&mut file, size).await {
            // The server is inside the literal: whatever we send next would be message data.
            self.poison();
            // A server refusing in mid-literal (Cyrus: `NO [TOOBIG]`, then it closes) makes our
            // write fail; its answer may still be readable, and says more than "reset".
            return match self.pending_answer(&tag).await {
                Some(done) => self.appended(done),
                None => Err(e),
            };
        }
        let done = match self.finish(&tag, "APPEND").await {
            Ok((_, done)) => done,
            Err(e @ (ImapError::Io { .. } | ImapError::Closed { .. })) => {
                match self.pending_answer(&tag).await {
                    Some(done) => done,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.appended(done)
    }

    /// The result of APPEND's tagged answer; an OK advances the known UIDNEXT.
    fn appended(&mut self, done: codec::Tagged) -> Result<Option<(u32, u32)>, ImapError> {
        if done.status != Status::Ok {
            return Err(self.refused("APPEND", done));
        }
        let uid = done.code.as_deref().and_then(codec::appenduid);
        self.advance_uid_next(uid);
        Ok(uid)
    }

    pub(super) fn advance_uid_next(&mut self, uid: Option<(u32, u32)>) {
        if let (Some((validity, new)), Some((known, next))) = (uid, self.uids) {
            if validity == known {
                self.uids = Some((known, next.max(new.saturating_add(1))));
            }
        }
    }

    /// What the server would answer to an APPEND over its `APPENDLIMIT`: permanent, and
    /// nothing was sent, so the session stays usable.
    pub(super) fn over_limit(&self, size: u64, limit: u64) -> ImapError {
        ImapError::Refused {
            server: self.server.clone(),
            command: "APPEND".into(),
            code: Some("TOOBIG".into()),
            text: format!(
                "the message has {size} bytes, over the server's APPENDLIMIT of {limit} \
                 (RFC 7889): not sent"
            ),
        }
    }

    /// After the connection failed, the tagged answer to `tag` if the server sent it before
    /// closing: what is buffered, then whatever the socket still yields (briefly). The
    /// session stays broken either way.
    async fn pending_answer(&mut self, tag: &str) -> Option<codec::Tagged> {
        let wait = std::time::Duration::from_secs(2);
        let found = self
            .conn
            .salvage(MAX_PENDING, wait)
            .await
            .split(|&b| b == b'\n')
            .filter_map(codec::parse_tagged)
            .find(|done| done.tag == tag);
        if let Some(done) = &found {
            tracing::debug!(server = %self.server, status = ?done.status, code = ?done.code,
                "Read APPEND's answer after the connection failed");
        }
        found
    }

    /// Waits for `+` before a synchronising literal. Untagged data (`* 3 EXISTS`, an alert)
    /// may come first; the tagged answer instead means the server refused the literal, and
    /// nothing of it was sent, so the session stays in step.
    async fn await_continuation(&mut self, tag: &str) -> Result<(), ImapError> {
        for _ in 0..=MAX_UNTAGGED_LINES {
            let line = self.read_line().await?;
            if line.starts_with(b"+") {
                return Ok(());
            }
            if let Some(done) = codec::parse_tagged(&line) {
                if done.tag != tag {
                    return Err(self.protocol(&line));
                }
                return Err(self.refused("APPEND", done));
            }
            if line.starts_with(b"* BYE") {
                let detail = String::from_utf8_lossy(&line).trim().to_string();
                return Err(self.closed(&detail));
            }
        }
        Err(self.too_much(format!(
            "more than {MAX_UNTAGGED_LINES} untagged response lines before APPEND's continuation"
        )))
    }

    /// The literal's `size` bytes from `file`, then the CRLF that ends the command.
    async fn send_literal(&mut self, file: &mut File, size: u64) -> Result<(), ImapError> {
        let mut chunk = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            // Page-cache reads in place: cheaper than a blocking-pool hop per chunk.
            let n = file.read(&mut chunk).map_err(spool)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if sent > size {
                break;
            }
            self.write(&chunk[..n]).await?;
        }
        if sent != size {
            return Err(ImapError::Protocol {
                server: self.server.clone(),
                detail: format!("the spool file changed size ({sent} bytes, {size} announced)"),
            });
        }
        self.write(b"\r\n").await
    }
}

#[cfg(test)]
mod tests {
    use super::append_limit;

    #[test]
    fn reads_the_server_wide_append_limit() {
        let caps = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            append_limit(&caps("IMAP4REV1 LITERAL+ APPENDLIMIT=100000")),
            Some(100_000)
        );
        // Without a value the limit is per mailbox (STATUS), not known here.
        assert_eq!(append_limit(&caps("IMAP4REV1 APPENDLIMIT")), None);
        assert_eq!(append_limit(&caps("IMAP4REV1 APPENDLIMIT=x")), None);
    }
}
