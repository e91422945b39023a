//! The byte pipe under a POP3 session: TCP or TLS, one bounded read buffer, and a timeout on
//! every connect, read and write. It knows lines and bodies only through `codec`.

use super::codec::{self, BodyDecoder};
use super::error::{CodeText, Pop3Error};
use super::response::{Status, StatusLine};
use super::ClientConfig;
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked from the socket per read; with `max_line` this bounds the read buffer.
const READ_CHUNK: usize = 64 * 1024;

/// TCP before STLS or with `tls: none`, TLS otherwise.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<async_native_tls::TlsStream<TcpStream>>),
    /// Only while the TCP stream is inside a TLS handshake.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during TLS handshake",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// One connection. After any transport or protocol error it is marked broken and refuses
/// further commands, because pipelined responses could no longer be matched to commands.
pub(crate) struct Conn {
    stream: Stream,
    buf: BytesMut,
    chunk: Box<[u8]>,
    pub(crate) server: String,
    timeout: Duration,
    pub(crate) max_line: usize,
    pub(crate) max_message_bytes: u64,
    /// When the server's certificate expires (Unix seconds), once TLS is up.
    pub(crate) cert_not_after: Option<i64>,
    broken: bool,
}

impl Conn {
    /// Opens TCP, and TLS straight away when `tls` is given (implicit TLS).
    pub(crate) async fn open(
        cfg: &ClientConfig,
        tls: Option<&async_native_tls::TlsConnector>,
    ) -> Result<Self, Pop3Error> {
        let server = cfg.server();
        let tcp = match tokio::time::timeout(
            cfg.timeout,
            TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(Pop3Error::Connect { server, source }),
            Err(_) => {
                return Err(Pop3Error::Timeout {
                    server,
                    during: "connecting",
                    secs: cfg.timeout.as_secs_f64(),
                })
            }
        };
        // Commands are tiny and we wait for their answers; do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        let mut conn = Self {
            stream: Stream::Plain(tcp),
            buf: BytesMut::with_capacity(READ_CHUNK),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            server,
            timeout: cfg.timeout,
            max_line: cfg.max_line_length.max(16),
            max_message_bytes: cfg.max_message_bytes,
            cert_not_after: None,
            broken: false,
        };
        if let Some(connector) = tls {
            conn.handshake(connector, &cfg.host)
                .await
                .map_err(plain_port_hint)?;
        }
        Ok(conn)
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Wraps the TCP stream in TLS. Bytes already buffered before the handshake would have
    /// come unprotected, so they are refused (the STARTTLS injection attack).
    pub(crate) async fn handshake(
        &mut self,
        connector: &async_native_tls::TlsConnector,
        host: &str,
    ) -> Result<(), Pop3Error> {
        if !self.buf.is_empty() {
            self.broken = true;
            return Err(Pop3Error::StlsInjection {
                server: self.server.clone(),
            });
        }
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Ok(());
            }
        };
        // Until the handshake succeeds the connection has no stream.
        self.broken = true;
        match tokio::time::timeout(self.timeout, connector.connect(host, tcp)).await {
            Ok(Ok(tls)) => {
                self.cert_not_after = tls
                    .peer_certificate()
                    .ok()
                    .flatten()
                    .and_then(|c| c.to_der().ok())
                    .and_then(|der| crate::tls::not_after_unix(&der));
                self.stream = Stream::Tls(Box::new(tls));
                self.broken = false;
                Ok(())
            }
            Ok(Err(source)) => Err(Pop3Error::TlsHandshake {
                server: self.server.clone(),
                source,
            }),
            Err(_) => Err(self.timeout_err("doing the TLS handshake")),
        }
    }

    /// Marks the connection unusable after an error in the middle of a response.
    pub(crate) fn poison(&mut self) {
        self.broken = true;
    }

    fn timeout_err(&mut self, during: &'static str) -> Pop3Error {
        self.broken = true;
        Pop3Error::Timeout {
            server: self.server.clone(),
            during,
            secs: self.timeout.as_secs_f64(),
        }
    }

    fn check(&self) -> Result<(), Pop3Error> {
        if self.broken {
            return Err(Pop3Error::Broken {
                server: self.server.clone(),
            });
        }
        Ok(())
    }

    /// Writes raw bytes (one or more CRLF-terminated commands) and flushes.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), Pop3Error> {
        self.check()?;
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => {
                self.broken = true;
                Err(Pop3Error::Io {
                    server: self.server.clone(),
                    during,
                    source,
                })
            }
            Err(_) => Err(self.timeout_err(during)),
        }
    }

    /// Sends one command. `shown` is what the log may say (no secrets).
    pub(crate) async fn send(&mut self, command: &str, shown: &str) -> Result<(), Pop3Error> {
        tracing::debug!(server = %self.server, command = shown, "Sending POP3 command");
        let mut line = Vec::with_capacity(command.len() + 2);
        line.extend_from_slice(command.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.write(&line, "sending a command").await
    }

    /// Reads more bytes into the buffer; a closed connection is an error here, because we
    /// only read when a response is owed to us.
    async fn fill(&mut self, during: &'static str) -> Result<(), Pop3Error> {
        self.check()?;
        match tokio::time::timeout(self.timeout, self.stream.read(&mut self.chunk)).await {
            Ok(Ok(0)) => {
                self.broken = true;
                Err(Pop3Error::Closed {
                    server: self.server.clone(),
                    during,
                })
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(())
            }
            Ok(Err(source)) => {
                self.broken = true;
                Err(Pop3Error::Io {
                    server: self.server.clone(),
                    during,
                    source,
                })
            }
            Err(_) => Err(self.timeout_err(during)),
        }
    }

    fn protocol(&mut self, command: &str, err: codec::CodecError) -> Pop3Error {
        self.broken = true;
        Pop3Error::codec(&self.server, command, err)
    }

    /// One line, with its line ending.
    pub(crate) async fn read_line(&mut self, command: &str) -> Result<BytesMut, Pop3Error> {
        loop {
            match codec::take_line(&mut self.buf, self.max_line) {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => self.fill("waiting for a response").await?,
                Err(e) => return Err(self.protocol(command, e)),
            }
        }
    }

    /// The status line answering `command`.
    pub(crate) async fn read_status(&mut self, command: &str) -> Result<StatusLine, Pop3Error> {
        let line = self.read_line(command).await?;
        let status = codec::parse_status(&line).map_err(|e| self.protocol(command, e))?;
        tracing::debug!(server = %self.server, command, ok = status.is_ok(), "POP3 response");
        Ok(status)
    }

    /// Reads a status line and turns `-ERR` into an error (a `+` challenge is a protocol error
    /// here).
    pub(crate) async fn expect_ok(&mut self, command: &str) -> Result<StatusLine, Pop3Error> {
        let status = self.read_status(command).await?;
        match status.status {
            Status::Ok => Ok(status),
            Status::Err => Err(refusal(&self.server, command, status)),
            Status::Continue => Err(self.protocol(
                command,
                codec::CodecError::Malformed("unexpected SASL continuation".into()),
            )),
        }
    }

    /// The lines of a line-oriented multi-line response, each handed to `item` unstuffed.
    pub(crate) async fn read_items(
        &mut self,
        command: &str,
        mut item: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), Pop3Error> {
        loop {
            let line = self.read_line(command).await?;
            let Some(content) = codec::multiline_item(&line) else {
                return Ok(());
            };
            if let Err(detail) = item(content) {
                self.broken = true;
                return Err(Pop3Error::Protocol {
                    server: self.server.clone(),
                    command: command.to_owned(),
                    detail,
                });
            }
        }
    }

    /// Decodes the next piece of a body into `out`; `true` once the terminator is read. Reads
    /// from the socket only when the buffer is empty, so `out` never exceeds one read.
    pub(crate) async fn body_chunk(
        &mut self,
        dec: &mut BodyDecoder,
        out: &mut Vec<u8>,
        command: &str,
    ) -> Result<bool, Pop3Error> {
        if self.buf.is_empty() {
            self.fill("reading a message").await?;
        }
        dec.decode_buf(&mut self.buf, out)
            .map_err(|e| self.protocol(command, e))
    }

    /// Closes the write side politely; errors do not matter any more.
    pub(crate) async fn shutdown(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// Implicit TLS against a plain port gets a plain-text greeting back, which OpenSSL reports
/// only as "wrong version number": say what that means.
fn plain_port_hint(e: Pop3Error) -> Pop3Error {
    match e {
        Pop3Error::TlsHandshake { server, source }
            if source.to_string().contains("wrong version number") =>
        {
            Pop3Error::TlsOnPlainPort { server, source }
        }
        other => other,
    }
}

/// The error for a `-ERR` answer: temporary codes become [`Pop3Error::Temporary`].
pub(crate) fn refusal(server: &str, command: &str, status: StatusLine) -> Pop3Error {
    let message = sanitize(&status.text);
    match status.code {
        Some(code) if code.is_temporary() => Pop3Error::Temporary {
            server: server.to_owned(),
            command: command.to_owned(),
            code,
            message,
        },
        code => Pop3Error::Refused {
            server: server.to_owned(),
            command: command.to_owned(),
            code: CodeText(code),
            message,
        },
    }
}

/// Server text for error messages: printable and short.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
