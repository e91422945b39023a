//! TOP (RFC 1939): headers plus the first lines of a message, capped in memory at `max_bytes`.

use crate::pop3::codec::BodyDecoder;
use crate::pop3::error::Pop3Error;
use crate::pop3::session::Transaction;

impl Transaction {
    /// Headers and the first `lines` body lines of `msgno`, unstuffed. At most `max_bytes` are
    /// kept; the rest is read and dropped so the session stays in step.
    pub async fn top(
        &mut self,
        msgno: u32,
        lines: u32,
        max_bytes: usize,
    ) -> Result<Vec<u8>, Pop3Error> {
        let command = format!("TOP {msgno} {lines}");
        self.conn.send(&command, &command).await?;
        self.conn.expect_ok(&command).await?;
        let mut dec = BodyDecoder::new(self.conn.max_line);
        let mut kept = Vec::new();
        let mut out = Vec::new();
        loop {
            out.clear();
            let done = self.conn.body_chunk(&mut dec, &mut out, &command).await?;
            let room = max_bytes.saturating_sub(kept.len());
            kept.extend_from_slice(&out[..out.len().min(room)]);
            if done {
                return Ok(kept);
            }
        }
    }
}
