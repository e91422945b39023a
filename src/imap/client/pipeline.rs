//! Several APPENDs in flight on one connection (LITERAL+, RFC 7888): every command of a window
//! is written before the first answer is read, so a window of small messages costs one round
//! trip instead of one per message. Each message is read whole from its spool file before its
//! command is announced (only messages up to the synchronising-literal threshold come here), so
//! a spool failure never leaves half a literal on the wire.

use super::append::{append_limit, SYNC_LITERAL_ABOVE};
use super::{has, quote_folder, Session, MAX_UNTAGGED_LINES};
use crate::imap::codec::{self, Status};
use crate::imap::ImapError;
use std::collections::HashMap;
use std::path::Path;

/// Bytes of commands gathered before one write: fewer system calls, bounded memory.
const WRITE_BATCH: usize = 256 * 1024;

/// One message of a window.
pub struct AppendItem<'a> {
    pub path: &'a Path,
    pub size: u64,
    /// The INTERNALDATE, already formatted for IMAP.
    pub internal_date: String,
}

/// What one APPEND of a window came to: `(uidvalidity, uid)` with UIDPLUS.
pub type Appended = Result<Option<(u32, u32)>, ImapError>;

impl Session {
    /// Whether [`Self::append_window`] can put a message of `size` bytes in flight beside others.
    pub fn can_pipeline(&self, size: u64) -> bool {
        has(&self.caps, "LITERAL+") && size <= SYNC_LITERAL_ABOVE
    }

    /// APPEND every item to `folder`, all in flight at once where [`Self::can_pipeline`], one
    /// after the other otherwise; one result per item, in order. An item without an answer
    /// (the connection dropped) gets an error like a single APPEND would: the caller treats it
    /// as uncertain.
    pub async fn append_window(
        &mut self,
        folder: &str,
        flags: &[String],
        items: &[AppendItem<'_>],
    ) -> Vec<Appended> {
        let mut results: Vec<Option<Appended>> = items.iter().map(|_| None).collect();
        let piped: Vec<usize> = (0..items.len())
            .filter(|&i| self.can_pipeline(items[i].size))
            .collect();
        if piped.len() > 1 && has(&self.caps, "MULTIAPPEND") {
            self.multiappend(folder, flags, items, &piped, &mut results)
                .await;
        }
        let piped: Vec<usize> = piped
            .into_iter()
            .filter(|&i| results[i].is_none())
            .collect();
        if piped.len() > 1 && !self.conn.is_broken() {
            self.pipelined(folder, flags, items, &piped, &mut results)
                .await;
        }
        for (i, item) in items.iter().enumerate() {
            if results[i].is_none() {
                let r = self
                    .append(folder, flags, &item.internal_date, item.path, item.size)
                    .await;
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ImapError::Protocol {
                        server: String::new(),
                        detail: "APPEND not attempted".into(),
                    })
                })
            })
            .collect()
    }

    async fn pipelined(
        &mut self,
        folder: &str,
        flags: &[String],
        items: &[AppendItem<'_>],
        piped: &[usize],
        results: &mut [Option<Appended>],
    ) {
        let name = match quote_folder(folder) {
            Ok(n) => n,
            Err(e) => {
                let text = e.to_string();
                for &i in piped {
                    results[i] = Some(Err(ImapError::Protocol {
                        server: self.server.clone(),
                        detail: text.clone(),
                    }));
                }
                return;
            }
        };
        let limit = append_limit(&self.caps);
        let binary_ok = has(&self.caps, "BINARY");
        let flags = flags.join(" ");
        // Tag → index of the item it carries.
        let mut waiting: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(WRITE_BATCH + SYNC_LITERAL_ABOVE as usize + 512);
        let mut failed: Option<ImapError> = None;
        for &i in piped {
            let item = &items[i];
            if let Some(limit) = limit.filter(|l| item.size > *l) {
                results[i] = Some(Err(self.over_limit(item.size, limit)));
                continue;
            }
            let body = match read_exactly(item.path, item.size) {
                Ok(b) => b,
                Err(source) => {
                    results[i] = Some(Err(ImapError::Spool { source }));
                    continue;
                }
            };
            let binary = binary_ok && body.contains(&0);
            let tag = self.next_tag();
            out.extend_from_slice(
                format!(
                    "{tag} APPEND {name} ({flags}) \"{}\" {}{{{}+}}\r\n",
                    item.internal_date,
                    if binary { "~" } else { "" },
                    item.size
                )
                .as_bytes(),
            );
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\r\n");
            waiting.insert(tag, i);
            if out.len() >= WRITE_BATCH {
                if let Err(e) = self.write(&out).await {
                    failed = Some(e);
                    break;
                }
                out.clear();
            }
        }
        if failed.is_none() && !out.is_empty() {
            if let Err(e) = self.write(&out).await {
                failed = Some(e);
            }
        }
        if failed.is_none() {
            failed = self.collect(&mut waiting, results).await.err();
        }
        if let Some(e) = failed {
            // Half a literal may be on the wire: the session is not used again, and every
            // APPEND without an answer may or may not have been stored.
            self.poison();
            let detail = e.to_string();
            for (_, i) in waiting.drain() {
                results[i] = Some(Err(ImapError::Closed {
                    server: self.server.clone(),
                    detail: format!("no answer to APPEND: {detail}"),
                }));
            }
        }
    }

    /// All of `piped` in one MULTIAPPEND (RFC 3502): the server stores them in one transaction
    /// (Dovecot: one fsync instead of one per message). All or nothing: on a refusal nothing
    /// was stored, and the items are left without a result for one APPEND each (which finds
    /// the one the server refuses); without an answer, every item gets the error.
    async fn multiappend(
        &mut self,
        folder: &str,
        flags: &[String],
        items: &[AppendItem<'_>],
        piped: &[usize],
        results: &mut [Option<Appended>],
    ) {
        let Ok(name) = quote_folder(folder) else {
            return;
        };
        if let Some(limit) = append_limit(&self.caps) {
            for &i in piped {
                if items[i].size > limit {
                    results[i] = Some(Err(self.over_limit(items[i].size, limit)));
                }
            }
        }
        let binary_ok = has(&self.caps, "BINARY");
        let flags = flags.join(" ");
        let mut sent = Vec::new();
        let tag = self.next_tag();
        let mut out = format!("{tag} APPEND {name}").into_bytes();
        for &i in piped {
            if results[i].is_some() {
                continue;
            }
            let item = &items[i];
            let body = match read_exactly(item.path, item.size) {
                Ok(b) => b,
                Err(source) => {
                    results[i] = Some(Err(ImapError::Spool { source }));
                    continue;
                }
            };
            let binary = binary_ok && body.contains(&0);
            out.extend_from_slice(
                format!(
                    " ({flags}) \"{}\" {}{{{}+}}\r\n",
                    item.internal_date,
                    if binary { "~" } else { "" },
                    item.size
                )
                .as_bytes(),
            );
            out.extend_from_slice(&body);
            sent.push(i);
        }
        if sent.len() < 2 {
            // Nothing announced yet: the rest go one APPEND each.
            return;
        }
        out.extend_from_slice(b"\r\n");
        let done = match self.write(&out).await {
            Ok(()) => self.finish(&tag, "APPEND").await.map(|(_, done)| done),
            Err(e) => Err(e),
        };
        match done {
            Ok(done) if done.status == Status::Ok => {
                let uids = done
                    .code
                    .as_deref()
                    .and_then(|c| codec::appenduid_set(c, sent.len()));
                for (n, &i) in sent.iter().enumerate() {
                    let uid = uids.as_ref().map(|(v, u)| (*v, u[n]));
                    self.advance_uid_next(uid);
                    results[i] = Some(Ok(uid));
                }
            }
            Ok(done) => {
                tracing::debug!(server = %self.server, code = ?done.code, text = %done.text,
                    "MULTIAPPEND refused as a whole; appending one by one");
            }
            Err(e) => {
                self.poison();
                let detail = e.to_string();
                for &i in &sent {
                    results[i] = Some(Err(ImapError::Closed {
                        server: self.server.clone(),
                        detail: format!("no answer to MULTIAPPEND: {detail}"),
                    }));
                }
            }
        }
    }

    /// Reads tagged answers until every tag in `waiting` has one (removing it from `waiting`).
    async fn collect(
        &mut self,
        waiting: &mut HashMap<String, usize>,
        results: &mut [Option<Appended>],
    ) -> Result<(), ImapError> {
        let mut untagged = 0;
        while !waiting.is_empty() {
            let line = self.read_line().await?;
            if let Some(done) = codec::parse_tagged(&line) {
                let Some(i) = waiting.remove(&done.tag) else {
                    return Err(self.protocol(&line));
                };
                results[i] = Some(if done.status == Status::Ok {
                    let uid = done.code.as_deref().and_then(codec::appenduid);
                    self.advance_uid_next(uid);
                    Ok(uid)
                } else {
                    Err(self.refused("APPEND", done))
                });
                continue;
            }
            if line.starts_with(b"* BYE") {
                let detail = String::from_utf8_lossy(&line).trim().to_string();
                return Err(self.closed(&detail));
            }
            untagged += 1;
            if untagged > MAX_UNTAGGED_LINES * 4 {
                return Err(self.too_much(format!(
                    "more than {} untagged response lines to pipelined APPENDs",
                    MAX_UNTAGGED_LINES * 4
                )));
            }
        }
        Ok(())
    }
}

/// The whole spool file, which must hold exactly `size` bytes.
fn read_exactly(path: &Path, size: u64) -> std::io::Result<Vec<u8>> {
    let body = std::fs::read(path)?;
    if body.len() as u64 != size {
        return Err(std::io::Error::other(format!(
            "the spool file has {} bytes, {size} expected",
            body.len()
        )));
    }
    Ok(body)
}
