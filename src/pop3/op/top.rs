//! TOP (RFC 1939): headers plus the first lines of a message, capped in memory at `max_bytes`;
//! one at a time, or pipelined within the session's window.

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
        self.read_top(&command, max_bytes).await
    }

    /// [`Transaction::top`] of each of `msgnos`, in order, pipelined like RETR: up to the
    /// window (`pipeline_window` with PIPELINING, else 1) in flight, so a hundred new messages
    /// cost about one round trip instead of a hundred. Each answer goes to `each` as soon as it
    /// is read whole, so memory holds one answer (at most `max_bytes`) whatever the window;
    /// the answers not read yet wait in the socket. Any error (a `-ERR`, the server closing
    /// mid-window) ends the call; what `each` got before was complete.
    pub async fn tops(
        &mut self,
        msgnos: &[u32],
        lines: u32,
        max_bytes: usize,
        mut each: impl FnMut(u32, Vec<u8>),
    ) -> Result<(), Pop3Error> {
        let mut sent = 0;
        for (i, &msgno) in msgnos.iter().enumerate() {
            let upto = msgnos.len().min(i + self.window);
            if sent < upto {
                let batch: String = msgnos[sent..upto]
                    .iter()
                    .map(|n| format!("TOP {n} {lines}\r\n"))
                    .collect();
                self.conn.write(batch.as_bytes(), "sending TOP").await?;
                sent = upto;
            }
            let command = format!("TOP {msgno} {lines}");
            match self.read_top(&command, max_bytes).await {
                Ok(head) => each(msgno, head),
                Err(e) => {
                    // Answers still in flight would be taken for the next command's.
                    self.conn.poison();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Reads one TOP answer: its status, then the body up to the terminator.
    async fn read_top(&mut self, command: &str, max_bytes: usize) -> Result<Vec<u8>, Pop3Error> {
        self.conn.expect_ok(command).await?;
        let mut dec = BodyDecoder::new(self.conn.max_line);
        let mut kept = Vec::new();
        let mut out = Vec::new();
        loop {
            out.clear();
            let done = self.conn.body_chunk(&mut dec, &mut out, command).await?;
            let room = max_bytes.saturating_sub(kept.len());
            kept.extend_from_slice(&out[..out.len().min(room)]);
            if done {
                return Ok(kept);
            }
        }
    }
}
