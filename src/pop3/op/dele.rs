//! DELE, RSET, NOOP and QUIT. Deletions only mark messages; the server removes them when it
//! answers QUIT with `+OK` (RFC 1939 UPDATE state), so QUIT's answer is the commit.

use crate::pop3::conn::refusal;
use crate::pop3::error::Pop3Error;
use crate::pop3::response::Status;
use crate::pop3::session::Transaction;

impl Transaction {
    /// Pipelined DELE; per-message outcome (a `-ERR` for one does not stop the others).
    pub async fn dele_many(
        &mut self,
        msgnos: &[u32],
    ) -> Result<Vec<(u32, Result<(), Pop3Error>)>, Pop3Error> {
        let mut results = Vec::with_capacity(msgnos.len());
        let mut sent = 0;
        for (i, &msgno) in msgnos.iter().enumerate() {
            let upto = msgnos.len().min(i + self.window);
            if sent < upto {
                let batch: String = msgnos[sent..upto]
                    .iter()
                    .map(|n| format!("DELE {n}\r\n"))
                    .collect();
                self.conn.write(batch.as_bytes(), "sending DELE").await?;
                sent = upto;
            }
            let command = format!("DELE {msgno}");
            let status = self.conn.read_status(&command).await?;
            let result = match status.status {
                Status::Ok => Ok(()),
                _ => Err(refusal(&self.conn.server, &command, status)),
            };
            results.push((msgno, result));
        }
        Ok(results)
    }

    /// Unmarks every message marked deleted in this session.
    pub async fn rset(&mut self) -> Result<(), Pop3Error> {
        self.conn.send("RSET", "RSET").await?;
        self.conn.expect_ok("RSET").await.map(drop)
    }

    /// Keeps the connection alive and checks it still answers.
    pub async fn noop(&mut self) -> Result<(), Pop3Error> {
        self.conn.send("NOOP", "NOOP").await?;
        self.conn.expect_ok("NOOP").await.map(drop)
    }

    /// QUIT: Ok only on +OK, which is when the server commits DELEs (RFC 1939 UPDATE state).
    /// A connection closed before +OK is an Err (deletes rolled back, or unknown).
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.conn.send("QUIT", "QUIT").await?;
        let result = self.conn.expect_ok("QUIT").await.map(drop);
        self.conn.shutdown().await;
        result
    }
}
