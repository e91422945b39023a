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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::pop3::{AuthMethod, ClientConfig, TlsMode};
    use crate::secret::Secret;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A POP3 server with PIPELINING that logs in anyone, then reads `wait_for` TOP commands
    /// before it answers any (a client that waits for each answer gets none, and its read times
    /// out), and answers them with `answers`, in order, then closes the connection. Returns the
    /// port and the TOP commands it read.
    async fn top_server(
        wait_for: usize,
        answers: Vec<&'static str>,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"+OK ready\r\n").await.unwrap();
            let mut tops = Vec::new();
            let mut line = String::new();
            while tops.len() < wait_for {
                line.clear();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                let got = line.trim_end().to_string();
                let reply = match got.split(' ').next().unwrap_or("") {
                    "CAPA" => "+OK\r\nUSER\r\nTOP\r\nPIPELINING\r\n.\r\n",
                    "USER" | "PASS" => "+OK\r\n",
                    "TOP" => {
                        tops.push(got);
                        continue;
                    }
                    _ => "-ERR what\r\n",
                };
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            for a in answers {
                w.write_all(a.as_bytes()).await.unwrap();
            }
            // Closing mid-answer, as a crashing server would.
            drop(w);
            tops
        });
        (port, task)
    }

    fn config(port: u16, window: usize) -> ClientConfig {
        ClientConfig {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            username: "user".into(),
            secret: Secret::new("pw"),
            password_file: None,
            auth: AuthMethod::User,
            ca_file: None,
            danger_accept_invalid_certs: false,
            allow_plaintext_auth: true,
            timeout: std::time::Duration::from_secs(20),
            max_line_length: 4096,
            max_message_bytes: 1 << 20,
            pipeline_window: window,
        }
    }

    #[tokio::test]
    async fn tops_go_out_together_and_come_back_in_order() {
        let (port, server) = top_server(
            3,
            vec![
                "+OK\r\nSubject: one\r\n\r\n.\r\n",
                "+OK\r\nSubject: two\r\n..dotted: x\r\n\r\n.\r\n",
                "+OK\r\nSubject: three\r\n\r\n.\r\n",
            ],
        )
        .await;
        let mut t = crate::pop3::connect(&config(port, 8)).await.unwrap();
        let mut got = Vec::new();
        t.tops(&[4, 7, 9], 0, 1024, |n, head| got.push((n, head)))
            .await
            .unwrap();
        // The server answered nothing before it had all three commands.
        assert_eq!(server.await.unwrap(), ["TOP 4 0", "TOP 7 0", "TOP 9 0"]);
        assert_eq!(
            got,
            vec![
                (4, b"Subject: one\r\n\r\n".to_vec()),
                (7, b"Subject: two\r\n.dotted: x\r\n\r\n".to_vec()),
                (9, b"Subject: three\r\n\r\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_server_closing_mid_window_ends_the_call_with_only_whole_answers_handed_on() {
        let (port, server) = top_server(
            3,
            vec![
                "+OK\r\nSubject: one\r\n\r\n.\r\n",
                // The second answer is cut off before its terminator.
                "+OK\r\nSubject: tw",
            ],
        )
        .await;
        let mut t = crate::pop3::connect(&config(port, 8)).await.unwrap();
        let mut got = Vec::new();
        let result = t
            .tops(&[1, 2, 3], 0, 1024, |n, head| got.push((n, head)))
            .await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(got, vec![(1, b"Subject: one\r\n\r\n".to_vec())]);
        // Nothing more may be read from or written to that connection.
        assert!(t.top(3, 0, 1024).await.is_err());
        drop(t);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_cut_and_the_next_one_still_lines_up() {
        let (port, server) = top_server(
            2,
            vec![
                "+OK\r\nSubject: a long one\r\nX: y\r\n\r\n.\r\n",
                "+OK\r\nSubject: b\r\n\r\n.\r\n",
            ],
        )
        .await;
        let mut t = crate::pop3::connect(&config(port, 2)).await.unwrap();
        let mut got = Vec::new();
        t.tops(&[1, 2], 0, 9, |n, head| got.push((n, head)))
            .await
            .unwrap();
        server.await.unwrap();
        assert_eq!(
            got,
            vec![(1, b"Subject: ".to_vec()), (2, b"Subject: ".to_vec())]
        );
    }
}
