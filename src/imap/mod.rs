//! Our own thin IMAP client, only what the APPEND sink needs. `codec` knows response lines
//! (no I/O), `client` is the session. async-imap drops APPENDUID and cannot send
//! non-synchronising literals, hence our own.

pub mod client;
pub mod codec;
pub mod utf7;

pub use client::{AppendItem, Appended, Session};

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain TCP, then STARTTLS before login (port 143).
    #[serde(rename = "starttls")]
    StartTls,
    /// No TLS: needs `allow_plaintext_auth: true`.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImapAuth {
    /// AUTHENTICATE PLAIN when offered, else LOGIN.
    #[default]
    Auto,
    Login,
    Plain,
    /// AUTHENTICATE XOAUTH2 with an OAuth2 access token.
    Xoauth2,
    /// AUTHENTICATE OAUTHBEARER (RFC 7628).
    Oauthbearer,
    /// OAUTHBEARER when offered, else XOAUTH2.
    Oauth2,
}

impl ImapAuth {
    /// Whether the secret is an OAuth2 access token.
    pub fn is_oauth2(self) -> bool {
        matches!(self, Self::Xoauth2 | Self::Oauthbearer | Self::Oauth2)
    }
}

/// How to reach one IMAP server (the account comes per connection).
#[derive(Clone, Debug)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: ImapTls,
    pub auth: ImapAuth,
    pub timeout: Duration,
    pub allow_plaintext_auth: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to IMAP server {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IMAP server {server}: timed out {during}")]
    Timeout {
        server: String,
        during: &'static str,
    },
    #[error("IMAP server {server}: TLS failed: {detail}; check the certificate, `ca_file` and the host name (and that the port speaks TLS: `tls: starttls` on 143, `tls: implicit` on 993)")]
    Tls { server: String, detail: String },
    #[error("IMAP server {server}: refusing to send a password without TLS (set allow_plaintext_auth: true to allow it)")]
    Plaintext { server: String },
    #[error("IMAP server {server} rejected the login of {username}: {text} (check the target user name and password)")]
    Auth {
        server: String,
        username: String,
        text: String,
    },
    #[error("IMAP server {server} refused {command}: {}{text}", code.as_ref().map(|c| format!("[{c}] ")).unwrap_or_default())]
    Refused {
        server: String,
        command: String,
        /// The response code (`TOOBIG`, `OVERQUOTA`), which decides whether to retry.
        code: Option<String>,
        text: String,
    },
    #[error("IMAP server {server}: {detail}")]
    Protocol { server: String, detail: String },
    #[error("IMAP server {server}: connection closed: {detail}")]
    Closed { server: String, detail: String },
    #[error("IMAP server {server}: {source}")]
    Io {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read password_file {path}: {source}")]
    PasswordFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot log in to IMAP server {server}: {source}")]
    OAuth2 {
        server: String,
        #[source]
        source: crate::oauth2::OAuth2Error,
    },
    #[error("cannot read the spooled message: {source}")]
    Spool {
        #[source]
        source: std::io::Error,
    },
}

impl ImapError {
    /// The same error for another message that shared its cause (one failed login or SELECT
    /// for a window of messages): same variant, so it is classified the same way.
    pub fn duplicate(&self) -> Self {
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            Self::Connect { server, source } => Self::Connect {
                server: server.clone(),
                source: io(source),
            },
            Self::Timeout { server, during } => Self::Timeout {
                server: server.clone(),
                during,
            },
            Self::Tls { server, detail } => Self::Tls {
                server: server.clone(),
                detail: detail.clone(),
            },
            Self::Plaintext { server } => Self::Plaintext {
                server: server.clone(),
            },
            Self::Auth {
                server,
                username,
                text,
            } => Self::Auth {
                server: server.clone(),
                username: username.clone(),
                text: text.clone(),
            },
            Self::Refused {
                server,
                command,
                code,
                text,
            } => Self::Refused {
                server: server.clone(),
                command: command.clone(),
                code: code.clone(),
                text: text.clone(),
            },
            Self::Protocol { server, detail } => Self::Protocol {
                server: server.clone(),
                detail: detail.clone(),
            },
            Self::Closed { server, detail } => Self::Closed {
                server: server.clone(),
                detail: detail.clone(),
            },
            Self::Io { server, source } => Self::Io {
                server: server.clone(),
                source: io(source),
            },
            Self::PasswordFile { path, source } => Self::PasswordFile {
                path: path.clone(),
                source: io(source),
            },
            Self::OAuth2 { server, .. } => Self::Protocol {
                server: server.clone(),
                detail: self.to_string(),
            },
            Self::Spool { source } => Self::Spool { source: io(source) },
        }
    }

    /// The error with server text scrubbed of what we sent during a login (see [`Redactor`]).
    ///
    /// [`Redactor`]: crate::net::sasl::Redactor
    pub(crate) fn scrubbed(self, redactor: &crate::net::sasl::Redactor) -> Self {
        match self {
            Self::Auth {
                server,
                username,
                text,
            } => Self::Auth {
                server,
                username,
                text: redactor.clean(&text),
            },
            Self::Refused {
                server,
                command,
                code,
                text,
            } => Self::Refused {
                server,
                command,
                code: code.map(|c| redactor.clean(&c)),
                text: redactor.clean(&text),
            },
            Self::Protocol { server, detail } => Self::Protocol {
                server,
                detail: redactor.clean(&detail),
            },
            Self::Closed { server, detail } => Self::Closed {
                server,
                detail: redactor.clean(&detail),
            },
            other => other,
        }
    }
}
