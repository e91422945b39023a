//! STAT, LIST and UIDL: what is in the mailbox. Sizes are the server's word and only used for
//! reporting; retrieval trusts the terminator, not these numbers.

use crate::pop3::conn::refusal;
use crate::pop3::error::Pop3Error;
use crate::pop3::response::Status;
use crate::pop3::session::Transaction;

impl Transaction {
    /// Message count and mailbox size in octets.
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        self.conn.send("STAT", "STAT").await?;
        let status = self.conn.expect_ok("STAT").await?;
        let mut words = status.text.split_ascii_whitespace();
        match (
            words.next().and_then(|w| w.parse().ok()),
            words.next().and_then(|w| w.parse().ok()),
        ) {
            (Some(count), Some(size)) => Ok((count, size)),
            _ => Err(Pop3Error::Protocol {
                server: self.conn.server.clone(),
                command: "STAT".into(),
                detail: format!("expected `+OK <count> <size>`, got {:?}", status.text),
            }),
        }
    }

    /// `(msgno, size)` for every message not marked deleted. A line that cannot be read is
    /// skipped with a warning (that message is neither fetched nor deleted), so one odd line
    /// cannot stop the whole mailbox.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.conn.send("LIST", "LIST").await?;
        self.read_list().await
    }

    /// LIST and UIDL. Sent back to back when the server offers PIPELINING (RFC 2449), which
    /// saves a round trip on every poll.
    #[allow(clippy::type_complexity)]
    pub async fn listing(
        &mut self,
    ) -> Result<(Vec<(u32, u64)>, Option<Vec<(u32, String)>>), Pop3Error> {
        if !self.capabilities().pipelining() {
            return Ok((self.list().await?, self.uidl().await?));
        }
        self.conn.send("LIST", "LIST").await?;
        self.conn.send("UIDL", "UIDL").await?;
        let sizes = self.read_list().await?;
        Ok((sizes, self.read_uidl().await?))
    }

    async fn read_list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.conn.expect_ok("LIST").await?;
        let mut out = Vec::new();
        let server = self.conn.server.clone();
        self.conn
            .read_items("LIST", |line| {
                cap(out.len())?;
                let parsed = two_words(line).and_then(|(n, size)| {
                    Ok((
                        n.parse().map_err(|_| bad_line(line))?,
                        size.parse().map_err(|_| bad_line(line))?,
                    ))
                });
                match parsed {
                    Ok(item) => out.push(item),
                    Err(e) => {
                        tracing::warn!(server = %server, detail = %e, "Unreadable LIST line skipped; that message stays on the server")
                    }
                }
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// `(msgno, unique id)` for every message, or `None` when the server answers `-ERR`
    /// (UIDL is optional in RFC 1939).
    pub async fn uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        self.conn.send("UIDL", "UIDL").await?;
        self.read_uidl().await
    }

    async fn read_uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        let status = self.conn.read_status("UIDL").await?;
        match status.status {
            Status::Ok => {}
            // A temporary code is not "unsupported": let the caller retry.
            Status::Err if status.code.as_ref().is_some_and(|c| c.is_temporary()) => {
                return Err(refusal(&self.conn.server, "UIDL", status))
            }
            _ => return Ok(None),
        }
        let mut out = Vec::new();
        let server = self.conn.server.clone();
        self.conn
            .read_items("UIDL", |line| {
                cap(out.len())?;
                match uidl_line(line) {
                    Some(item) => out.push(item),
                    // That message is identified by its content instead.
                    None => {
                        tracing::warn!(server = %server, line = %crate::pop3::codec::preview(line), "Unreadable UIDL line skipped; that message is identified by content")
                    }
                }
                Ok(())
            })
            .await?;
        Ok(Some(out))
    }
}

/// More entries than any real mailbox lists: a server past it is hostile or broken, and the
/// listing is refused rather than held in memory.
pub const MAX_LISTING: usize = 5_000_000;

fn cap(len: usize) -> Result<(), String> {
    if len >= MAX_LISTING {
        return Err(format!(
            "the server listed more than {MAX_LISTING} messages"
        ));
    }
    Ok(())
}

/// One UIDL line. RFC 1939 allows 1 to 70 characters in 0x21..=0x7E; a server that breaks
/// that (longer ids, spaces, 8-bit bytes) still names each message the same way every time,
/// so such an id is kept as `x-sha256-` + 32 hex digits of its bytes, stable across sessions.
fn uidl_line(line: &[u8]) -> Option<(u32, String)> {
    let line = line.trim_ascii();
    let split = line.iter().position(|b| b.is_ascii_whitespace())?;
    let n = std::str::from_utf8(&line[..split]).ok()?.parse().ok()?;
    let uid = line[split..].trim_ascii();
    if uid.is_empty() {
        return None;
    }
    if uid.len() <= 70 && uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Some((n, String::from_utf8_lossy(uid).into_owned()));
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(uid);
    Some((n, format!("x-sha256-{}", hex::encode(&digest[..16]))))
}

fn two_words(line: &[u8]) -> Result<(&str, &str), String> {
    let text = std::str::from_utf8(line).map_err(|_| bad_line(line))?;
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(bad_line(line)),
    }
}

fn bad_line(line: &[u8]) -> String {
    format!(
        "expected `<msgno> <value>`, got {:?}",
        crate::pop3::codec::preview(line)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn odd_uidls_are_kept_under_a_stable_name() {
        assert_eq!(uidl_line(b"1 abc"), Some((1, "abc".into())));
        let long = format!("2 {}", "u".repeat(71));
        let (n, named) = uidl_line(long.as_bytes()).unwrap();
        assert_eq!(n, 2);
        assert!(
            named.starts_with("x-sha256-") && named.len() == 9 + 32,
            "{named}"
        );
        assert_eq!(uidl_line(long.as_bytes()).unwrap().1, named);
        assert_ne!(
            uidl_line(b"2 with space").unwrap().1,
            uidl_line(b"2 with  space").unwrap().1
        );
        assert!(uidl_line(b"3 caf\xc3\xa9").is_some());
        assert_eq!(uidl_line(b"x abc"), None);
        assert_eq!(uidl_line(b"4"), None);
    }
}
