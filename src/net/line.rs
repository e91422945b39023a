//! The connection under a POP3 session and an IMAP session: one stream, one bounded read
//! buffer, a timeout on every connect, handshake, read and write, and a broken flag.
//!
//! Where POP3's and IMAP's hand-written transports had different rules, the stricter one is
//! kept for both:
//! - a line is refused once `max_line` bytes have come without LF, *and* when its LF comes at
//!   or after `max_line` (IMAP used to accept a line that arrived whole in one read, and kept
//!   reading until the buffer passed the limit);
//! - a write is complete only when flushed, both under the one timeout (IMAP did not flush);
//! - any error — timeout, I/O, close, over-long line, a failed handshake — marks the
//!   connection broken, and a broken connection refuses every later read and write: a
//!   half-read response can never be taken for the answer to the next command (IMAP left the
//!   flag unset after a failed handshake);
//! - asking for TLS on a connection that already has it is an error, not a no-op (POP3
//!   ignored it);
//! - bytes that arrived before a STARTTLS/STLS handshake are refused (the injection attack).
//!
//! Memory is bounded whatever the server sends: the buffer grows only by `fill`, which callers
//! use when no complete line is there (at most `max_line` plus one read) or while reading a
//! literal/body whose size they bounded themselves.

use super::stream::Stream;
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What went wrong below the protocol; each protocol turns it into its own error, adding the
/// server and the command.
#[derive(Debug)]
pub(crate) enum NetError {
    /// TCP connect failed.
    Connect(io::Error),
    /// Connect, handshake, read or write took longer than the timeout.
    Timeout {
        during: &'static str,
    },
    /// The server closed the connection while a response was owed.
    Closed {
        during: &'static str,
    },
    Io {
        during: &'static str,
        source: io::Error,
    },
    /// The connection had an earlier error and is not used again.
    Broken,
    /// A line reached `max` bytes without its end.
    LineTooLong {
        max: usize,
    },
    TlsHandshake(native_tls::Error),
    /// Bytes arrived before the STARTTLS/STLS handshake (they came unprotected).
    Injection,
    /// TLS asked for on a connection that has it.
    AlreadyTls,
}

/// Removes one complete line (LF included) from the front of `buf`, or `None` if it has no LF
/// yet. A line whose LF is at or beyond `max`, or `max` bytes without LF, is an error rather
/// than a reason to keep reading.
pub(crate) fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, NetError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i < max => Ok(Some(buf.split_to(i + 1))),
        Some(_) => Err(NetError::LineTooLong { max }),
        None if buf.len() >= max => Err(NetError::LineTooLong { max }),
        None => Ok(None),
    }
}

/// One connection: see the module comment for its rules.
pub(crate) struct LineConn {
    stream: Stream,
    buf: BytesMut,
    chunk: Box<[u8]>,
    timeout: Duration,
    max_line: usize,
    /// When the server's certificate expires (Unix seconds), once TLS is up.
    cert_not_after: Option<i64>,
    broken: bool,
}

impl LineConn {
    /// Opens TCP to `host:port` within `timeout`. `read_chunk` is what one read asks the socket
    /// for; with `max_line` it bounds the buffer.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        max_line: usize,
        read_chunk: usize,
    ) -> Result<Self, NetError> {
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(NetError::Connect(source)),
            Err(_) => {
                return Err(NetError::Timeout {
                    during: "connecting",
                })
            }
        };
        // Commands are small and we wait for their answers; do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        Ok(Self {
            stream: Stream::Plain(tcp),
            buf: BytesMut::with_capacity(read_chunk),
            chunk: vec![0; read_chunk.max(1)].into_boxed_slice(),
            timeout,
            max_line: max_line.max(16),
            cert_not_after: None,
            broken: false,
        })
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn max_line(&self) -> usize {
        self.max_line
    }

    pub(crate) fn cert_not_after(&self) -> Option<i64> {
        self.cert_not_after
    }

    /// Marks the connection unusable (an error in the middle of a response, an answer that
    /// does not fit the command).
    pub(crate) fn poison(&mut self) {
        self.broken = true;
    }

    /// The bytes read and not yet consumed, for a protocol's codec (bodies, literals).
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Wraps the TCP stream in TLS: implicit TLS right after connecting, or the STARTTLS/STLS
    /// upgrade once the server said go ahead.
    pub(crate) async fn start_tls(
        &mut self,
        connector: &tokio_native_tls::TlsConnector,
        host: &str,
    ) -> Result<(), NetError> {
        self.check()?;
        if !self.buf.is_empty() {
            return Err(self.fail(NetError::Injection));
        }
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(self.fail(NetError::AlreadyTls));
            }
        };
        // Until the handshake succeeds the connection has no stream.
        self.broken = true;
        match tokio::time::timeout(self.timeout, connector.connect(host, tcp)).await {
            Ok(Ok(tls)) => {
                self.cert_not_after = tls
                    .get_ref()
                    .peer_certificate()
                    .ok()
                    .flatten()
                    .and_then(|c| c.to_der().ok())
                    .and_then(|der| crate::tls::not_after_unix(&der));
                self.stream = Stream::Tls(Box::new(tls));
                self.broken = false;
                Ok(())
            }
            Ok(Err(source)) => Err(NetError::TlsHandshake(source)),
            Err(_) => Err(NetError::Timeout {
                during: "doing the TLS handshake",
            }),
        }
    }

    fn check(&self) -> Result<(), NetError> {
        if self.broken {
            return Err(NetError::Broken);
        }
        Ok(())
    }

    fn fail(&mut self, e: NetError) -> NetError {
        self.broken = true;
        e
    }

    /// Writes `bytes` whole and flushes, within the timeout.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), NetError> {
        self.check()?;
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.fail(NetError::Io { during, source })),
            Err(_) => Err(self.fail(NetError::Timeout { during })),
        }
    }

    /// Reads more bytes into the buffer (one read). A closed connection is an error here,
    /// because we only read when a response is owed to us.
    pub(crate) async fn fill(&mut self, during: &'static str) -> Result<(), NetError> {
        self.check()?;
        match tokio::time::timeout(self.timeout, self.stream.read(&mut self.chunk)).await {
            Ok(Ok(0)) => Err(self.fail(NetError::Closed { during })),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(())
            }
            Ok(Err(source)) => Err(self.fail(NetError::Io { during, source })),
            Err(_) => Err(self.fail(NetError::Timeout { during })),
        }
    }

    /// One line with its line ending, at most `max_line` bytes.
    pub(crate) async fn read_line(&mut self, during: &'static str) -> Result<BytesMut, NetError> {
        loop {
            match take_line(&mut self.buf, self.max_line) {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => self.fill(during).await?,
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// After a failure: reads what the peer already sent (until `max` bytes are buffered, the
    /// peer closes, or `wait` passes) and returns the buffer. The connection stays broken; this
    /// only lets a protocol find a last answer (IMAP: a refusal sent before a reset
    /// mid-literal) that says more than the I/O error did. Bounded like every read.
    pub(crate) async fn salvage(&mut self, max: usize, wait: Duration) -> &[u8] {
        self.broken = true;
        let deadline = tokio::time::Instant::now() + wait.min(self.timeout);
        while self.buf.len() < max {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut self.chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&self.chunk[..n]),
                _ => break,
            }
        }
        &self.buf[..]
    }

    /// Closes the write side politely; errors do not matter any more.
    pub(crate) async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A loopback server that sends `script` and then keeps the connection open (or closes it
    /// when `close`), and the client's connection to it.
    async fn pair(script: &'static [u8], close: bool) -> LineConn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.write_all(script).await.unwrap();
            if !close {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        LineConn::connect("127.0.0.1", port, Duration::from_millis(300), 32, 8)
            .await
            .unwrap()
    }

    #[test]
    fn take_line_refuses_a_line_whose_end_comes_too_late() {
        let mut buf = BytesMut::from(&b"0123456789\r\nrest"[..]);
        assert!(matches!(
            take_line(&mut buf, 11),
            Err(NetError::LineTooLong { max: 11 })
        ));
        let mut buf = BytesMut::from(&b"0123456789\r\nrest"[..]);
        assert_eq!(
            &take_line(&mut buf, 12).unwrap().unwrap()[..],
            b"0123456789\r\n"
        );
        assert_eq!(&buf[..], b"rest");
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert!(take_line(&mut buf, 10).is_err());
        assert!(take_line(&mut BytesMut::from(&b"012345678"[..]), 10)
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn an_endless_line_breaks_the_connection_with_bounded_memory() {
        let mut conn = pair(&[b'x'; 200], false).await;
        let err = conn.read_line("waiting").await.unwrap_err();
        assert!(matches!(err, NetError::LineTooLong { max: 32 }), "{err:?}");
        // Never more than the limit plus one read was buffered.
        assert!(conn.buf().len() < 32 + 8, "{}", conn.buf().len());
        assert!(conn.is_broken());
        assert!(matches!(
            conn.write(b"NOOP\r\n", "w").await,
            Err(NetError::Broken)
        ));
    }

    #[tokio::test]
    async fn a_timeout_mid_line_is_never_followed_by_another_read() {
        let mut conn = pair(b"+OK half a li", false).await;
        let err = conn.read_line("waiting").await.unwrap_err();
        assert!(
            matches!(err, NetError::Timeout { during: "waiting" }),
            "{err:?}"
        );
        assert!(matches!(
            conn.read_line("again").await,
            Err(NetError::Broken)
        ));
    }

    #[tokio::test]
    async fn lines_then_close() {
        let mut conn = pair(b"one\r\ntwo\n", true).await;
        assert_eq!(&conn.read_line("r").await.unwrap()[..], b"one\r\n");
        assert_eq!(&conn.read_line("r").await.unwrap()[..], b"two\n");
        let err = conn.read_line("reading").await.unwrap_err();
        assert!(
            matches!(err, NetError::Closed { during: "reading" }),
            "{err:?}"
        );
        assert!(conn.is_broken());
    }

    #[tokio::test]
    async fn bytes_before_the_tls_upgrade_are_refused() {
        let mut conn = pair(b"+OK go ahead\r\n* injected\r\n", false).await;
        conn.read_line("r").await.unwrap();
        // Make sure the injected line is in our buffer, as it would be after one read.
        while conn.buf().is_empty() {
            conn.fill("r").await.unwrap();
        }
        let connector =
            tokio_native_tls::TlsConnector::from(native_tls::TlsConnector::new().unwrap());
        let err = conn.start_tls(&connector, "localhost").await.unwrap_err();
        assert!(matches!(err, NetError::Injection), "{err:?}");
        assert!(conn.is_broken());
    }
}
