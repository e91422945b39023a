//! A thin IMAP client for the APPEND sink: connect (TCP, implicit TLS or STARTTLS), log in
//! (LOGIN or AUTHENTICATE PLAIN), SELECT/CREATE, APPEND with LITERAL+ when offered, UID SEARCH,
//! UID FETCH of a body to hash it. Every read and write has a timeout, every response line a
//! length limit, and the message literal streams from its file.

use super::codec::{self, Status, Tagged};
use super::{ImapConfig, ImapError, ImapTls};
use crate::pop3::Stream;
use bytes::{Buf, BytesMut};
use std::io::Read;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A literal in a response we did not ask for a body in is skipped up to this size.
const MAX_RESPONSE_LITERAL: usize = 1 << 20;

pub struct Session {
    stream: Stream,
    buf: BytesMut,
    server: String,
    timeout: std::time::Duration,
    max_line: usize,
    caps: Vec<String>,
    tag: u32,
    /// The folder SELECTed now.
    selected: Option<String>,
    /// After a transport or protocol error the session is not used again.
    broken: bool,
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c == cap)
}

impl Session {
    /// Connects, secures the connection as configured and logs in.
    pub async fn connect(
        cfg: &ImapConfig,
        tls: Option<&async_native_tls::TlsConnector>,
        username: &str,
        password: &crate::secret::Secret,
    ) -> Result<Self, ImapError> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let tcp = tokio::time::timeout(
            cfg.timeout,
            TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| ImapError::Timeout {
            server: server.clone(),
            during: "connecting",
        })?
        .map_err(|source| ImapError::Connect {
            server: server.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let mut s = Self {
            stream: Stream::Plain(tcp),
            buf: BytesMut::with_capacity(16 * 1024),
            server,
            timeout: cfg.timeout,
            max_line: 64 * 1024,
            caps: Vec::new(),
            tag: 0,
            selected: None,
            broken: false,
        };
        if cfg.tls == ImapTls::Implicit {
            s.handshake(tls, &cfg.host).await?;
        }
        let greeting = s.read_line().await?;
        let text = String::from_utf8_lossy(&greeting).to_string();
        if !text.starts_with("* OK") && !text.starts_with("* PREAUTH") {
            return Err(ImapError::Refused {
                server: s.server.clone(),
                command: "greeting".into(),
                code: None,
                text: text.trim().to_string(),
            });
        }
        // Dovecot and most servers announce capabilities in the greeting: one round trip less.
        let announced = codec::capabilities(
            text.split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map_or("", |(code, _)| code),
        );
        if announced.is_empty() {
            s.capability().await?;
        } else {
            s.caps = announced;
        }
        if cfg.tls == ImapTls::StartTls {
            if !has(&s.caps, "STARTTLS") {
                return Err(ImapError::Protocol {
                    server: s.server.clone(),
                    detail: "the server does not offer STARTTLS (tls: starttls)".into(),
                });
            }
            s.simple("STARTTLS").await?;
            if !s.buf.is_empty() {
                // Bytes before the handshake came unprotected: the STARTTLS injection attack.
                return Err(ImapError::Protocol {
                    server: s.server.clone(),
                    detail: "data arrived before the TLS handshake".into(),
                });
            }
            s.handshake(tls, &cfg.host).await?;
            s.capability().await?;
        }
        if !matches!(s.stream, Stream::Tls(_)) && !cfg.allow_plaintext_auth {
            return Err(ImapError::Plaintext {
                server: s.server.clone(),
            });
        }
        s.login(cfg, username, password).await?;
        Ok(s)
    }

    async fn handshake(
        &mut self,
        tls: Option<&async_native_tls::TlsConnector>,
        host: &str,
    ) -> Result<(), ImapError> {
        let connector = tls.ok_or_else(|| ImapError::Protocol {
            server: self.server.clone(),
            detail: "no TLS connector".into(),
        })?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(ImapError::Protocol {
                server: self.server.clone(),
                detail: "TLS requested twice".into(),
            });
        };
        let tls = tokio::time::timeout(self.timeout, connector.connect(host, tcp))
            .await
            .map_err(|_| ImapError::Timeout {
                server: self.server.clone(),
                during: "the TLS handshake",
            })?
            .map_err(|e| ImapError::Tls {
                server: self.server.clone(),
                detail: e.to_string(),
            })?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    async fn capability(&mut self) -> Result<(), ImapError> {
        let (untagged, done) = self.command("CAPABILITY").await?;
        let mut caps = Vec::new();
        for line in &untagged {
            caps.extend(codec::capabilities(&String::from_utf8_lossy(line)));
        }
        if let Some(code) = &done.code {
            caps.extend(codec::capabilities(code));
        }
        self.caps = caps;
        Ok(())
    }

    async fn login(
        &mut self,
        cfg: &ImapConfig,
        username: &str,
        password: &crate::secret::Secret,
    ) -> Result<(), ImapError> {
        let plain = match cfg.auth {
            super::ImapAuth::Plain => true,
            super::ImapAuth::Login => false,
            super::ImapAuth::Auto => has(&self.caps, "AUTH=PLAIN"),
        };
        let done = if plain {
            let mut mechanism = crate::pop3::op::sasl::Plain::new(username, password);
            self.authenticate(&mut mechanism).await?
        } else {
            let (Some(u), Some(p)) = (codec::quoted(username), codec::quoted(password.expose()))
            else {
                return Err(ImapError::Protocol {
                    server: self.server.clone(),
                    detail: "LOGIN needs an ASCII user name and password; use auth: plain".into(),
                });
            };
            self.send_hidden(&format!("LOGIN {u} {p}"), "LOGIN").await?
        };
        if done.status != Status::Ok {
            return Err(self.auth_error(done, username));
        }
        // Servers may change their capabilities after login (UIDPLUS, LITERAL+).
        match &done.code {
            Some(code) if code.to_ascii_uppercase().starts_with("CAPABILITY") => {
                self.caps = codec::capabilities(code)
            }
            _ => self.capability().await?,
        }
        Ok(())
    }

    /// AUTHENTICATE (RFC 3501 6.2.2) driven by any SASL mechanism, the same interface as POP3's
    /// AUTH: PLAIN today, XOAUTH2 (two-step: an error challenge is answered with an empty line)
    /// ready. The initial response goes on the command line when the server has SASL-IR.
    pub async fn authenticate(
        &mut self,
        mechanism: &mut dyn crate::pop3::SaslMechanism,
    ) -> Result<Tagged, ImapError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let tag = self.next_tag();
        let what = format!("AUTHENTICATE {}", mechanism.name());
        let mut pending = mechanism.initial_response();
        let mut line = format!("{tag} {what}");
        if has(&self.caps, "SASL-IR") {
            if let Some(first) = pending.take() {
                line.push(' ');
                line.push_str(&if first.is_empty() {
                    "=".into()
                } else {
                    b64.encode(first)
                });
            }
        }
        line.push_str("\r\n");
        self.write(line.as_bytes()).await?;
        loop {
            let answer = self.read_line().await?;
            if let Some(challenge) = answer.strip_prefix(b"+") {
                let text = String::from_utf8_lossy(challenge).trim().to_string();
                let response = match pending.take() {
                    Some(first) => first,
                    None => mechanism.respond(&b64.decode(text.as_bytes()).unwrap_or_default()),
                };
                self.write(format!("{}\r\n", b64.encode(response)).as_bytes())
                    .await?;
                continue;
            }
            match codec::parse_tagged(&answer) {
                Some(done) if done.tag == tag => return Ok(done),
                Some(_) => return Err(self.protocol(&answer)),
                // Untagged data during authentication (a CAPABILITY line): skip it.
                None => continue,
            }
        }
    }

    fn auth_error(&self, done: Tagged, username: &str) -> ImapError {
        ImapError::Auth {
            server: self.server.clone(),
            username: username.to_string(),
            text: done.text,
        }
    }

    /// SELECT `folder`, creating it first when it does not exist.
    pub async fn select(&mut self, folder: &str) -> Result<(), ImapError> {
        if self.selected.as_deref() == Some(folder) {
            return Ok(());
        }
        let name = quote_folder(folder)?;
        let (_, done) = self.command(&format!("SELECT {name}")).await?;
        if done.status != Status::Ok {
            let (_, created) = self.command(&format!("CREATE {name}")).await?;
            if created.status != Status::Ok {
                return Err(self.refused("CREATE", created));
            }
            tracing::info!(server = %self.server, folder, "Created the target folder");
            let (_, done) = self.command(&format!("SELECT {name}")).await?;
            if done.status != Status::Ok {
                return Err(self.refused("SELECT", done));
            }
        }
        self.selected = Some(folder.to_string());
        Ok(())
    }

    /// UIDs in the selected folder matching `criteria` (already in IMAP syntax).
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        let (untagged, done) = self.command(&format!("UID SEARCH {criteria}")).await?;
        if done.status != Status::Ok {
            return Err(self.refused("UID SEARCH", done));
        }
        Ok(untagged
            .iter()
            .filter_map(|l| codec::search_results(l))
            .flatten()
            .collect())
    }

    /// SHA-256 (lower-case hex) of the message with `uid`, as the server serves it. The body
    /// literal is hashed as it arrives, never held: bounded memory for any message size.
    pub async fn uid_body_sha256(&mut self, uid: u32) -> Result<Option<String>, ImapError> {
        use sha2::{Digest, Sha256};
        let tag = self.next_tag();
        self.write(format!("{tag} UID FETCH {uid} (BODY.PEEK[])\r\n").as_bytes())
            .await?;
        let mut digest = None;
        loop {
            let line = self.read_raw_line().await?;
            if let Some(done) = codec::parse_tagged(&line) {
                if done.tag != tag {
                    return Err(self.protocol(&line));
                }
                if done.status != Status::Ok {
                    return Err(self.refused("UID FETCH", done));
                }
                return Ok(digest);
            }
            let Some(mut left) = codec::literal_len(&line) else {
                continue;
            };
            let mut hasher = Sha256::new();
            while left > 0 {
                if self.buf.is_empty() {
                    self.fill().await?;
                }
                let n = left.min(self.buf.len());
                hasher.update(&self.buf[..n]);
                self.buf.advance(n);
                left -= n;
            }
            digest = Some(hex::encode(hasher.finalize()));
            // The rest of the FETCH line after the literal (`)` and CRLF), possibly with more
            // literals we did not ask for: read like any response line.
            self.read_line().await?;
        }
    }

    /// APPEND the file at `path` (`size` bytes) to `folder`; `(uidvalidity, uid)` when the
    /// server has UIDPLUS.
    pub async fn append(
        &mut self,
        folder: &str,
        flags: &[String],
        internal_date: &str,
        path: &Path,
        size: u64,
    ) -> Result<Option<(u32, u32)>, ImapError> {
        let name = quote_folder(folder)?;
        let tag = self.next_tag();
        let plus = has(&self.caps, "LITERAL+");
        let head = format!(
            "{tag} APPEND {name} ({}) \"{internal_date}\" {{{size}{}}}\r\n",
            flags.join(" "),
            if plus { "+" } else { "" }
        );
        self.write(head.as_bytes()).await?;
        if !plus {
            let line = self.read_line().await?;
            if !line.starts_with(b"+") {
                let done = codec::parse_tagged(&line).ok_or_else(|| self.protocol(&line))?;
                return Err(self.refused("APPEND", done));
            }
        }
        let mut file = std::fs::File::open(path).map_err(|source| ImapError::Spool { source })?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            // Page-cache reads in place: cheaper than a blocking-pool hop per chunk.
            let n = file
                .read(&mut chunk)
                .map_err(|source| ImapError::Spool { source })?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if sent > size {
                break;
            }
            self.write(&chunk[..n]).await?;
        }
        if sent != size {
            // The literal length is already on the wire: the connection cannot be saved.
            self.broken = true;
            return Err(ImapError::Protocol {
                server: self.server.clone(),
                detail: format!("the spool file changed size ({sent} bytes, {size} announced)"),
            });
        }
        self.write(b"\r\n").await?;
        let (_, done) = self.finish(&tag, "APPEND").await?;
        if done.status != Status::Ok {
            return Err(self.refused("APPEND", done));
        }
        Ok(done.code.as_deref().and_then(codec::appenduid))
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("P{}", self.tag)
    }

    /// A command whose refusal is an error.
    async fn simple(&mut self, command: &str) -> Result<(), ImapError> {
        let (_, done) = self.command(command).await?;
        if done.status != Status::Ok {
            return Err(self.refused(command, done));
        }
        Ok(())
    }

    async fn command(&mut self, command: &str) -> Result<(Vec<Vec<u8>>, Tagged), ImapError> {
        let tag = self.next_tag();
        self.write(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let verb = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        self.finish(&tag, &verb).await
    }

    /// A command carrying a secret: the logged name is `what`, never the line.
    async fn send_hidden(&mut self, command: &str, what: &str) -> Result<Tagged, ImapError> {
        let tag = self.next_tag();
        self.write(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        Ok(self.finish(&tag, what).await?.1)
    }

    /// Reads untagged lines until the tagged answer to `tag`.
    async fn finish(&mut self, tag: &str, what: &str) -> Result<(Vec<Vec<u8>>, Tagged), ImapError> {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.starts_with(b"* BYE") {
                self.broken = true;
                return Err(ImapError::Closed {
                    server: self.server.clone(),
                    detail: String::from_utf8_lossy(&line).trim().to_string(),
                });
            }
            if let Some(done) = codec::parse_tagged(&line) {
                if done.tag == tag {
                    tracing::debug!(server = %self.server, command = what, status = ?done.status, "IMAP response");
                    return Ok((untagged, done));
                }
                return Err(self.protocol(&line));
            }
            if line.starts_with(b"* ") {
                untagged.push(line);
            }
        }
    }

    fn refused(&self, command: &str, done: Tagged) -> ImapError {
        ImapError::Refused {
            server: self.server.clone(),
            command: command.to_string(),
            code: done.code,
            text: done.text,
        }
    }

    fn protocol(&mut self, line: &[u8]) -> ImapError {
        self.broken = true;
        ImapError::Protocol {
            server: self.server.clone(),
            detail: format!(
                "unexpected response {:?}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            ),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        if self.broken {
            return Err(self.closed("the connection was dropped after an earlier error"));
        }
        match tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io(e)),
            Err(_) => Err(self.timed_out("writing")),
        }
    }

    /// One logical response line; a literal inside it (`{n}`) is read and kept when small,
    /// so lines stay in step, and refused when large: we never ask for bodies.
    async fn read_line(&mut self) -> Result<Vec<u8>, ImapError> {
        let mut line = self.read_raw_line().await?;
        while let Some(n) = codec::literal_len(&line) {
            if n > MAX_RESPONSE_LITERAL {
                self.broken = true;
                return Err(ImapError::Protocol {
                    server: self.server.clone(),
                    detail: format!("a {n}-byte literal in a response"),
                });
            }
            while self.buf.len() < n {
                self.fill().await?;
            }
            line.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            line.extend_from_slice(&self.read_raw_line().await?);
        }
        Ok(line)
    }

    async fn read_raw_line(&mut self) -> Result<Vec<u8>, ImapError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(i + 1).to_vec());
            }
            if self.buf.len() > self.max_line {
                self.broken = true;
                return Err(ImapError::Protocol {
                    server: self.server.clone(),
                    detail: format!("a response line longer than {} bytes", self.max_line),
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ImapError> {
        if self.broken {
            return Err(self.closed("the connection was dropped after an earlier error"));
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => Err(self.closed("the server closed the connection")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(self.io(e)),
            Err(_) => Err(self.timed_out("waiting for a response")),
        }
    }

    fn closed(&mut self, detail: &str) -> ImapError {
        self.broken = true;
        ImapError::Closed {
            server: self.server.clone(),
            detail: detail.to_string(),
        }
    }

    fn io(&mut self, source: std::io::Error) -> ImapError {
        self.broken = true;
        ImapError::Io {
            server: self.server.clone(),
            source,
        }
    }

    fn timed_out(&mut self, during: &'static str) -> ImapError {
        self.broken = true;
        ImapError::Timeout {
            server: self.server.clone(),
            during,
        }
    }
}

/// Folder names are sent quoted; modified UTF-7 is not implemented, so they must be ASCII.
fn quote_folder(folder: &str) -> Result<String, ImapError> {
    codec::quoted(folder).ok_or_else(|| ImapError::Protocol {
        server: String::new(),
        detail: format!("folder {folder:?} must be ASCII without line breaks"),
    })
}
