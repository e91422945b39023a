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

    /// `(msgno, size)` for every message not marked deleted.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.conn.send("LIST", "LIST").await?;
        self.conn.expect_ok("LIST").await?;
        let mut out = Vec::new();
        self.conn
            .read_items("LIST", |line| {
                let (n, size) = two_words(line)?;
                let n = n.parse().map_err(|_| bad_line(line))?;
                let size = size.parse().map_err(|_| bad_line(line))?;
                out.push((n, size));
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// `(msgno, unique id)` for every message, or `None` when the server answers `-ERR`
    /// (UIDL is optional in RFC 1939).
    pub async fn uidl(&mut self) -> Result<Option<Vec<(u32, String)>>, Pop3Error> {
        self.conn.send("UIDL", "UIDL").await?;
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
        self.conn
            .read_items("UIDL", |line| {
                let (n, uid) = two_words(line)?;
                let n = n.parse().map_err(|_| bad_line(line))?;
                // RFC 1939: 1 to 70 characters in the range 0x21 to 0x7E.
                if uid.is_empty()
                    || uid.len() > 70
                    || !uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
                {
                    return Err(bad_line(line));
                }
                out.push((n, uid.to_owned()));
                Ok(())
            })
            .await?;
        Ok(Some(out))
    }
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
