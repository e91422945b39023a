//! A thin IMAP client for the APPEND sink: connect (TCP, implicit TLS or STARTTLS), log in
//! (LOGIN or AUTHENTICATE, `auth.rs`) unless the server sent PREAUTH, SELECT/CREATE, APPEND
//! (`append.rs`), UID SEARCH, UID FETCH of a body to hash it, LOGOUT. The transport (stream,
//! TLS, timeouts, the bounded line reader and its broken flag) is [`crate::net::line`], shared
//! with POP3; literals and the untagged lines per command are bounded here.

mod append;
mod auth;
mod pipeline;

pub use pipeline::{AppendItem, Appended};

use super::codec::{self, Greeting, Status, Tagged};
use super::{ImapConfig, ImapError, ImapTls};
use crate::net::line::{LineConn, NetError};
use bytes::Buf;

/// Longest response line (without its literals).
const MAX_LINE: usize = 64 * 1024;
/// Bytes asked from the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// A literal in a response we did not ask for a body in is skipped up to this size.
const MAX_RESPONSE_LITERAL: usize = 1 << 20;
/// One response line with all its literals: a line of endless small literals ends here.
const MAX_RESPONSE_BYTES: usize = 2 << 20;
/// Lines other than the tagged answer accepted while waiting for it: a server that sends
/// untagged data without end gets an error, not our memory.
const MAX_UNTAGGED_LINES: usize = 10_000;
/// Untagged bytes kept for one command (SEARCH results, CAPABILITY).
const MAX_UNTAGGED_BYTES: usize = 4 << 20;

pub struct Session {
    /// After a transport or protocol error it is broken and the session is not used again.
    conn: LineConn,
    server: String,
    caps: Vec<String>,
    tag: u32,
    /// The folder SELECTed now.
    selected: Option<String>,
    /// UIDVALIDITY and UIDNEXT of the selected folder, as SELECT said and our own APPENDUIDs
    /// advanced it: UIDs from there on are what an APPEND about to be sent can create.
    uids: Option<(u32, u32)>,
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c == cap)
}

impl Session {
    /// Connects, secures the connection as configured and logs in.
    pub async fn connect(
        cfg: &ImapConfig,
        tls: Option<&tokio_native_tls::TlsConnector>,
        username: &str,
        password: &crate::secret::Secret,
    ) -> Result<Self, ImapError> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let conn = LineConn::connect(&cfg.host, cfg.port, cfg.timeout, MAX_LINE, READ_CHUNK)
            .await
            .map_err(|e| net_error(&server, e))?;
        let mut s = Self {
            conn,
            server,
            caps: Vec::new(),
            tag: 0,
            selected: None,
            uids: None,
        };
        if cfg.tls == ImapTls::Implicit {
            s.handshake(tls, &cfg.host).await?;
        }
        let greeting = s.read_line().await?;
        let (kind, code) = codec::parse_greeting(&greeting);
        if kind == Greeting::Refused {
            return Err(ImapError::Refused {
                server: s.server.clone(),
                command: "greeting".into(),
                code: None,
                text: String::from_utf8_lossy(&greeting).trim().to_string(),
            });
        }
        // Dovecot and most servers announce capabilities in the greeting: one round trip less.
        let announced = codec::capabilities(code.as_deref().unwrap_or(""));
        if announced.is_empty() {
            s.capability().await?;
        } else {
            s.caps = announced;
        }
        if kind == Greeting::PreAuth {
            // Authenticated by the connection itself (a trusted network, a client certificate).
            // STARTTLS is not allowed in that state: a plain PREAUTH where TLS was asked for is
            // the STARTTLS-stripping attack, so the connection is dropped.
            if cfg.tls == ImapTls::StartTls {
                return Err(ImapError::Protocol {
                    server: s.server.clone(),
                    detail: "the server sent PREAUTH, which skips STARTTLS (tls: starttls): \
                             refusing to go on without TLS"
                        .into(),
                });
            }
            tracing::info!(server = %s.server, username, "IMAP server pre-authenticated the connection (PREAUTH); not logging in");
            return Ok(s);
        }
        if cfg.tls == ImapTls::StartTls {
            if !has(&s.caps, "STARTTLS") {
                return Err(ImapError::Protocol {
                    server: s.server.clone(),
                    detail: "the server does not offer STARTTLS (tls: starttls)".into(),
                });
            }
            s.simple("STARTTLS").await?;
            // Refuses bytes that came before the handshake (the STARTTLS injection attack).
            s.handshake(tls, &cfg.host).await?;
            s.capability().await?;
        }
        if !s.conn.is_tls() && !cfg.allow_plaintext_auth {
            return Err(ImapError::Plaintext {
                server: s.server.clone(),
            });
        }
        s.login(cfg, username, password).await?;
        Ok(s)
    }

    async fn handshake(
        &mut self,
        tls: Option<&tokio_native_tls::TlsConnector>,
        host: &str,
    ) -> Result<(), ImapError> {
        let connector = tls.ok_or_else(|| ImapError::Protocol {
            server: self.server.clone(),
            detail: "no TLS connector".into(),
        })?;
        self.conn
            .start_tls(connector, host)
            .await
            .map_err(|e| net_error(&self.server, e))
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

    /// SELECT `folder`, creating it first when it does not exist.
    pub async fn select(&mut self, folder: &str) -> Result<(), ImapError> {
        if self.selected.as_deref() == Some(folder) {
            return Ok(());
        }
        self.select_now(folder).await
    }

    /// SELECT `folder` even when it is selected already. A kept session's view of its folder
    /// is as of its last command: a server (Dovecot) answers SEARCH from that view, so a
    /// message another process appended since (a replica that held the mailbox before us)
    /// would not be found, and would be appended a second time.
    pub async fn select_fresh(&mut self, folder: &str) -> Result<(), ImapError> {
        self.select_now(folder).await
    }

    async fn select_now(&mut self, folder: &str) -> Result<(), ImapError> {
        let name = quote_folder(folder)?;
        self.selected = None;
        let (mut untagged, done) = self.command(&format!("SELECT {name}")).await?;
        if done.status != Status::Ok {
            let (_, created) = self.command(&format!("CREATE {name}")).await?;
            if created.status != Status::Ok {
                let mut refused = self.refused("CREATE", created);
                if let Some(hint) = self.namespace_hint(folder).await? {
                    if let ImapError::Refused { text, .. } = &mut refused {
                        text.push_str(&hint);
                    }
                }
                return Err(refused);
            }
            tracing::info!(server = %self.server, folder, "Created the target folder");
            let (again, done) = self.command(&format!("SELECT {name}")).await?;
            if done.status != Status::Ok {
                return Err(self.refused("SELECT", done));
            }
            untagged = again;
        }
        let code = |name| {
            untagged
                .iter()
                .find_map(|l| codec::untagged_ok_number(l, name))
        };
        self.uids = code("UIDVALIDITY").zip(code("UIDNEXT"));
        self.selected = Some(folder.to_string());
        Ok(())
    }

    /// When `folder` lies outside the server's personal namespace (Courier and Debian's Cyrus
    /// keep a user's folders under `INBOX.`, and refuse a top-level CREATE with "Invalid
    /// mailbox name" or "Permission denied"), the exact name to configure instead. We do not
    /// rename on our own: the folder would not be where the user looks for it.
    pub async fn namespace_hint(&mut self, folder: &str) -> Result<Option<String>, ImapError> {
        if !has(&self.caps, "NAMESPACE") {
            return Ok(None);
        }
        let (untagged, done) = self.command("NAMESPACE").await?;
        if done.status != Status::Ok {
            return Ok(None);
        }
        let Some((prefix, separator)) = untagged.iter().find_map(|l| codec::personal_namespace(l))
        else {
            return Ok(None);
        };
        if prefix.is_empty() || folder.starts_with(&prefix) || folder.eq_ignore_ascii_case("INBOX")
        {
            return Ok(None);
        }
        let sep = separator.map(String::from).unwrap_or_default();
        let wanted = match separator {
            Some(s) if s != '/' => folder.replace('/', &sep),
            _ => folder.to_string(),
        };
        Ok(Some(format!(
            " (the server keeps personal folders under {prefix:?} with separator {sep:?}: \
             use folder: \"{prefix}{wanted}\")"
        )))
    }

    /// The folders matching `pattern` (LIST "" pattern), names decoded from modified UTF-7.
    pub async fn list(&mut self, pattern: &str) -> Result<Vec<String>, ImapError> {
        let pattern = quote_folder(pattern)?;
        let (untagged, done) = self.command(&format!("LIST \"\" {pattern}")).await?;
        if done.status != Status::Ok {
            return Err(self.refused("LIST", done));
        }
        Ok(untagged
            .iter()
            .filter_map(|l| codec::list_mailbox(l))
            .collect())
    }

    /// `(UIDVALIDITY, UIDNEXT)` of the selected folder when the server said both: a message
    /// appended from now on gets a UID of at least UIDNEXT under that UIDVALIDITY.
    pub fn uid_next(&self) -> Option<(u32, u32)> {
        self.uids
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

    /// SHA-256 (lower-case hex) of the message with `uid`, as the server serves it.
    pub async fn uid_body_sha256(&mut self, uid: u32) -> Result<Option<String>, ImapError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let found = self
            .uid_body(uid, &mut |chunk| hasher.update(chunk))
            .await?;
        Ok(found.then(|| hex::encode(hasher.finalize())))
    }

    /// Streams the body of the message with `uid` into `each` as it arrives, never holding it:
    /// bounded memory for any message size. `false` when the server sent no body (the UID is
    /// gone).
    pub async fn uid_body(
        &mut self,
        uid: u32,
        each: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<bool, ImapError> {
        let tag = self.next_tag();
        self.write(format!("{tag} UID FETCH {uid} (BODY.PEEK[])\r\n").as_bytes())
            .await?;
        let mut found = false;
        let mut lines = 0;
        loop {
            let line = self.read_raw_line().await?;
            if let Some(done) = codec::parse_tagged(&line) {
                if done.tag != tag {
                    return Err(self.protocol(&line));
                }
                if done.status != Status::Ok {
                    return Err(self.refused("UID FETCH", done));
                }
                return Ok(found);
            }
            self.count_untagged(&mut lines, "UID FETCH")?;
            let Some(mut left) = codec::literal_len(&line) else {
                continue;
            };
            // Only one body per FETCH: a second literal (unasked) is not ours to hash.
            let first = !found;
            while left > 0 {
                if self.conn.buf().is_empty() {
                    self.fill().await?;
                }
                let buf = self.conn.buf();
                let n = left.min(buf.len());
                if first {
                    each(&buf[..n]);
                }
                buf.advance(n);
                left -= n;
            }
            found = true;
            // The rest of the FETCH line after the literal (`)` and CRLF), possibly with more
            // literals we did not ask for: read like any response line.
            self.read_line().await?;
        }
    }

    pub fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }

    /// Marks the session unusable (e.g. stopped inside a literal).
    fn poison(&mut self) {
        self.conn.poison();
    }

    /// Ends the session politely (LOGOUT), so the server sees a clean end rather than a
    /// dropped connection. Best effort: a broken session is just dropped.
    pub async fn logout(mut self) {
        if self.conn.is_broken() {
            return;
        }
        let tag = self.next_tag();
        if self
            .write(format!("{tag} LOGOUT\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        // `* BYE`, then the tagged OK (RFC 3501 6.1.3).
        for _ in 0..=MAX_UNTAGGED_LINES {
            match self.read_line().await {
                Ok(line) if codec::parse_tagged(&line).is_some_and(|d| d.tag == tag) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        self.conn.shutdown().await;
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

    /// Reads untagged lines until the tagged answer to `tag`, at most [`MAX_UNTAGGED_LINES`]
    /// of them and [`MAX_UNTAGGED_BYTES`] kept.
    async fn finish(&mut self, tag: &str, what: &str) -> Result<(Vec<Vec<u8>>, Tagged), ImapError> {
        let mut untagged = Vec::new();
        let (mut lines, mut kept) = (0, 0);
        loop {
            let line = self.read_line().await?;
            if line.starts_with(b"* BYE") {
                let detail = String::from_utf8_lossy(&line).trim().to_string();
                return Err(self.closed(&detail));
            }
            if let Some(done) = codec::parse_tagged(&line) {
                if done.tag == tag {
                    tracing::debug!(server = %self.server, command = what, status = ?done.status, "IMAP response");
                    return Ok((untagged, done));
                }
                return Err(self.protocol(&line));
            }
            self.count_untagged(&mut lines, what)?;
            if line.starts_with(b"* ") {
                kept += line.len();
                if kept > MAX_UNTAGGED_BYTES {
                    return Err(self.too_much(format!(
                        "more than {MAX_UNTAGGED_BYTES} bytes of untagged responses to {what}"
                    )));
                }
                untagged.push(line);
            }
        }
    }

    /// Counts one more line that is not the tagged answer to `what`.
    fn count_untagged(&mut self, lines: &mut usize, what: &str) -> Result<(), ImapError> {
        *lines += 1;
        if *lines > MAX_UNTAGGED_LINES {
            return Err(self.too_much(format!(
                "more than {MAX_UNTAGGED_LINES} untagged response lines to {what}"
            )));
        }
        Ok(())
    }

    /// A server sending more than any sane answer: the session is not used again.
    fn too_much(&mut self, detail: String) -> ImapError {
        self.poison();
        ImapError::Protocol {
            server: self.server.clone(),
            detail,
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
        self.poison();
        ImapError::Protocol {
            server: self.server.clone(),
            detail: format!(
                "unexpected response {:?}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            ),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        self.conn
            .write(bytes, "writing")
            .await
            .map_err(|e| net_error(&self.server, e))
    }

    /// One logical response line; a literal inside it (`{n}`) is read and kept when small,
    /// so lines stay in step, and refused when large: we never ask for bodies.
    async fn read_line(&mut self) -> Result<Vec<u8>, ImapError> {
        let mut line = self.read_raw_line().await?;
        while let Some(n) = codec::literal_len(&line) {
            if n > MAX_RESPONSE_LITERAL {
                return Err(self.too_much(format!("a {n}-byte literal in a response")));
            }
            if line.len() + n > MAX_RESPONSE_BYTES {
                return Err(self.too_much(format!(
                    "a response longer than {MAX_RESPONSE_BYTES} bytes with its literals"
                )));
            }
            while self.conn.buf().len() < n {
                self.fill().await?;
            }
            line.extend_from_slice(&self.conn.buf()[..n]);
            self.conn.buf().advance(n);
            line.extend_from_slice(&self.read_raw_line().await?);
        }
        Ok(line)
    }

    /// One line as the server sent it, at most [`MAX_LINE`] bytes.
    async fn read_raw_line(&mut self) -> Result<Vec<u8>, ImapError> {
        self.conn
            .read_line("waiting for a response")
            .await
            .map(|line| line.to_vec())
            .map_err(|e| net_error(&self.server, e))
    }

    async fn fill(&mut self) -> Result<(), ImapError> {
        self.conn
            .fill("waiting for a response")
            .await
            .map_err(|e| net_error(&self.server, e))
    }

    fn closed(&mut self, detail: &str) -> ImapError {
        self.poison();
        ImapError::Closed {
            server: self.server.clone(),
            detail: detail.to_string(),
        }
    }
}

/// A transport error as the IMAP error users have always seen for it.
fn net_error(server: &str, e: NetError) -> ImapError {
    let server = server.to_owned();
    match e {
        NetError::Connect(source) => ImapError::Connect { server, source },
        NetError::Timeout { during } => ImapError::Timeout { server, during },
        NetError::Closed { .. } => ImapError::Closed {
            server,
            detail: "the server closed the connection".into(),
        },
        NetError::Io { source, .. } => ImapError::Io { server, source },
        NetError::Broken => ImapError::Closed {
            server,
            detail: "the connection was dropped after an earlier error".into(),
        },
        NetError::LineTooLong { max } => ImapError::Protocol {
            server,
            detail: format!("a response line longer than {max} bytes"),
        },
        NetError::TlsHandshake(e) => ImapError::Tls {
            server,
            detail: e.to_string(),
        },
        NetError::Injection => ImapError::Protocol {
            server,
            detail: "data arrived before the TLS handshake".into(),
        },
        NetError::AlreadyTls => ImapError::Protocol {
            server,
            detail: "TLS requested twice".into(),
        },
    }
}

/// Folder names are sent quoted, in modified UTF-7 (RFC 3501 5.1.3) so any Unicode name works.
fn quote_folder(folder: &str) -> Result<String, ImapError> {
    codec::quoted(&super::utf7::encode(folder)).ok_or_else(|| ImapError::Protocol {
        server: String::new(),
        detail: format!("folder {folder:?} must not hold line breaks or NUL"),
    })
}
