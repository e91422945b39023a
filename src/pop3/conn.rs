//! The POP3 side of the shared transport ([`crate::net::line::LineConn`]): the same bounded
//! reader, timeouts and broken flag as IMAP's, with POP3's errors and its codec (status lines,
//! multi-line items, bodies) on top. It knows lines and bodies only through `codec`.

use super::codec::{self, BodyDecoder};
use super::error::{CodeText, Pop3Error};
use super::response::{Status, StatusLine};
use super::ClientConfig;
use crate::net::line::{LineConn, NetError};
use bytes::BytesMut;

/// Bytes asked from the socket per read; with `max_line` this bounds the read buffer.
const READ_CHUNK: usize = 64 * 1024;

/// One connection. After any transport or protocol error it is marked broken and refuses
/// further commands, because pipelined responses could no longer be matched to commands.
pub(crate) struct Conn {
    net: LineConn,
    pub(crate) server: String,
    pub(crate) max_line: usize,
    pub(crate) max_message_bytes: u64,
    /// When the server's certificate expires (Unix seconds), once TLS is up.
    pub(crate) cert_not_after: Option<i64>,
    /// The host's bytes-per-second bucket, charged for every read of a message body.
    pub(crate) throttle: Option<std::sync::Arc<crate::net::throttle::Throttle>>,
}

impl Conn {
    /// Opens TCP, and TLS straight away when `tls` is given (implicit TLS).
    pub(crate) async fn open(
        cfg: &ClientConfig,
        tls: Option<&tokio_native_tls::TlsConnector>,
    ) -> Result<Self, Pop3Error> {
        let server = cfg.server();
        let net = LineConn::connect(
            &cfg.host,
            cfg.port,
            cfg.timeout,
            cfg.max_line_length,
            READ_CHUNK,
        )
        .await
        .map_err(|e| net_error(&server, cfg.timeout.as_secs_f64(), "connecting", e))?;
        let mut conn = Self {
            max_line: net.max_line(),
            net,
            server,
            max_message_bytes: cfg.max_message_bytes,
            cert_not_after: None,
            throttle: None,
        };
        if let Some(connector) = tls {
            conn.handshake(connector, &cfg.host)
                .await
                .map_err(plain_port_hint)?;
        }
        Ok(conn)
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.net.is_tls()
    }

    /// This connection's [`NetError`] as a [`Pop3Error`].
    fn err(&self, command: &str, e: NetError) -> Pop3Error {
        net_error(&self.server, self.net.timeout().as_secs_f64(), command, e)
    }

    /// Wraps the TCP stream in TLS. Bytes already buffered before the handshake would have
    /// come unprotected, so they are refused (the STARTTLS injection attack).
    pub(crate) async fn handshake(
        &mut self,
        connector: &tokio_native_tls::TlsConnector,
        host: &str,
    ) -> Result<(), Pop3Error> {
        self.net
            .start_tls(connector, host)
            .await
            .map_err(|e| self.err("STLS", e))?;
        self.cert_not_after = self.net.cert_not_after();
        Ok(())
    }

    /// Marks the connection unusable after an error in the middle of a response.
    pub(crate) fn poison(&mut self) {
        self.net.poison();
    }

    /// Writes raw bytes (one or more CRLF-terminated commands) and flushes.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), Pop3Error> {
        self.net
            .write(bytes, during)
            .await
            .map_err(|e| self.err(during, e))
    }

    /// Sends one command. `shown` is what the log may say (no secrets).
    pub(crate) async fn send(&mut self, command: &str, shown: &str) -> Result<(), Pop3Error> {
        tracing::debug!(server = %self.server, command = shown, "Sending POP3 command");
        let mut line = Vec::with_capacity(command.len() + 2);
        line.extend_from_slice(command.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.write(&line, "sending a command").await
    }

    fn protocol(&mut self, command: &str, err: codec::CodecError) -> Pop3Error {
        self.net.poison();
        Pop3Error::codec(&self.server, command, err)
    }

    /// One line, with its line ending.
    pub(crate) async fn read_line(&mut self, command: &str) -> Result<BytesMut, Pop3Error> {
        self.net
            .read_line("waiting for a response")
            .await
            .map_err(|e| self.err(command, e))
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
                self.net.poison();
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
        if self.net.buf().is_empty() {
            self.net
                .fill("reading a message")
                .await
                .map_err(|e| self.err(command, e))?;
        }
        let before = self.net.buf().len();
        let done = dec
            .decode_buf(self.net.buf(), out)
            .map_err(|e| self.protocol(command, e))?;
        // Body bytes only, each counted once; the next read waits until the host's rate
        // allows it (the socket is read later, nothing is buffered).
        if let Some(t) = &self.throttle {
            t.take(before.saturating_sub(self.net.buf().len())).await;
        }
        Ok(done)
    }

    /// Closes the write side politely; errors do not matter any more.
    pub(crate) async fn shutdown(mut self) {
        self.net.shutdown().await;
    }
}

/// A transport error as the POP3 error users have always seen for it.
fn net_error(server: &str, secs: f64, command: &str, e: NetError) -> Pop3Error {
    let server = server.to_owned();
    match e {
        NetError::Connect(source) => Pop3Error::Connect { server, source },
        NetError::Timeout { during } => Pop3Error::Timeout {
            server,
            during,
            secs,
        },
        NetError::Closed { during } => Pop3Error::Closed { server, during },
        NetError::Io { during, source } => Pop3Error::Io {
            server,
            during,
            source,
        },
        NetError::Broken => Pop3Error::Broken { server },
        NetError::LineTooLong { max } => {
            Pop3Error::codec(&server, command, codec::CodecError::LineTooLong { max })
        }
        NetError::TlsHandshake(source) => Pop3Error::TlsHandshake { server, source },
        NetError::Injection => Pop3Error::StlsInjection { server },
        NetError::AlreadyTls => Pop3Error::Protocol {
            server,
            command: command.to_owned(),
            detail: "TLS requested on a connection that already has it".into(),
        },
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
