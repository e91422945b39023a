//! Everything that can go wrong talking to a POP3 server, each saying what failed, on which
//! server, and what to do; plus the classification the engine's retry loop needs.

use super::codec::CodecError;
use super::response::RespCode;
use crate::tls::TlsError;

/// Broad class of a [`Pop3Error`], for metrics and retry decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Credentials rejected or auth impossible as configured: stop retrying, fix the config.
    Auth,
    /// TLS setup, handshake or policy (plaintext refused, STLS missing).
    Tls,
    /// Connect failed, connection reset or closed early.
    Network,
    /// The server said something we cannot accept, or refused a command.
    Protocol,
    /// Connect, read or write took longer than `timeout`.
    Timeout,
    /// The server asked us to come back later (`[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`).
    Temporary,
    /// Writing the spool file failed on our side.
    Spool,
}

/// A failed POP3 operation. Never holds the password or token.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("cannot connect to POP3 server {server}: {source}; check host, port and firewall")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "POP3 server {server} did not answer within {secs:.1}s while {during}; will retry later"
    )]
    Timeout {
        server: String,
        during: &'static str,
        secs: f64,
    },
    #[error("POP3 connection to {server} failed while {during}: {source}")]
    Io {
        server: String,
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("POP3 server {server} closed the connection while {during}")]
    Closed {
        server: String,
        during: &'static str,
    },
    #[error("POP3 connection to {server} is unusable after an earlier error; reconnect")]
    Broken { server: String },
    #[error("TLS setup for POP3 server {server} failed: {source}")]
    TlsSetup {
        server: String,
        #[source]
        source: TlsError,
    },
    #[error("TLS handshake with POP3 server {server} failed: {source}; check the certificate, `ca_file` and the host name")]
    TlsHandshake {
        server: String,
        #[source]
        source: native_tls::Error,
    },
    #[error("TLS handshake with POP3 server {server} failed: {source}; the port answered without TLS: use `tls: starttls` on a plain POP3 port (110), or the POP3S port (995) for `tls: implicit`")]
    TlsOnPlainPort {
        server: String,
        #[source]
        source: native_tls::Error,
    },
    #[error("refusing to send credentials to POP3 server {server} without TLS; use `tls: starttls` or `tls: implicit`, or set `allow_plaintext_auth` on a trusted network")]
    PlaintextRefused { server: String },
    #[error("POP3 server {server} does not advertise STLS; refusing to continue without TLS (use `tls: implicit` on port 995, or fix the server)")]
    StlsNotAdvertised { server: String },
    #[error("POP3 server {server} refused STLS: {message}; refusing to continue without TLS")]
    StlsRefused { server: String, message: String },
    #[error("POP3 server {server} sent data before the TLS handshake (possible injection); connection dropped")]
    StlsInjection { server: String },
    #[error("POP3 server {server} rejected the login{code}: {message}; check username and password (not retried)")]
    AuthFailed {
        server: String,
        code: CodeText,
        message: String,
    },
    #[error("cannot read the password for POP3 server {server} from {path} (`password_file`): {source}; the file is read at each login, check that it is still there (rotated Secret, unmounted volume)")]
    PasswordFile {
        server: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("POP3 server {server} cannot authenticate with {mechanism}: {reason}; choose another `auth` method")]
    AuthUnavailable {
        server: String,
        mechanism: &'static str,
        reason: String,
    },
    #[error("cannot log in to POP3 server {server}: {source}")]
    OAuth2 {
        server: String,
        #[source]
        source: crate::oauth2::OAuth2Error,
    },
    #[error("POP3 server {server} asked to retry later ({code}) after {command}: {message}")]
    Temporary {
        server: String,
        command: String,
        code: RespCode,
        message: String,
    },
    #[error("POP3 server {server} refused {command}{code}: {message}")]
    Refused {
        server: String,
        command: String,
        code: CodeText,
        message: String,
    },
    #[error("POP3 server {server} broke the protocol after {command}: {detail}; report this to the server's operator")]
    Protocol {
        server: String,
        command: String,
        detail: String,
    },
    #[error("cannot write spool file in {dir}: {source}; check free space and permissions")]
    Spool {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// An optional response code, shown as ` [CODE]` in messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodeText(pub Option<RespCode>);

impl std::fmt::Display for CodeText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(code) => write!(f, " [{code}]"),
            None => Ok(()),
        }
    }
}

impl Pop3Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::Io { .. } | Self::Closed { .. } | Self::Broken { .. } => {
                ErrorKind::Network
            }
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::TlsSetup { .. }
            | Self::TlsHandshake { .. }
            | Self::TlsOnPlainPort { .. }
            | Self::PlaintextRefused { .. }
            | Self::StlsNotAdvertised { .. }
            | Self::StlsRefused { .. }
            | Self::StlsInjection { .. } => ErrorKind::Tls,
            Self::AuthFailed { .. } | Self::AuthUnavailable { .. } | Self::PasswordFile { .. } => {
                ErrorKind::Auth
            }
            Self::Temporary { .. } => ErrorKind::Temporary,
            Self::OAuth2 { source, .. } if source.is_transient() => ErrorKind::Temporary,
            Self::OAuth2 { .. } => ErrorKind::Auth,
            Self::Refused { .. } | Self::Protocol { .. } => ErrorKind::Protocol,
            Self::Spool { .. } => ErrorKind::Spool,
        }
    }

    /// Whether the same request later may succeed. Wrong credentials, TLS policy and protocol
    /// violations need a human, so they are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Network | ErrorKind::Timeout | ErrorKind::Temporary | ErrorKind::Spool
        )
    }

    /// The server's response code, if the error came from a `-ERR`.
    pub fn resp_code(&self) -> Option<&RespCode> {
        match self {
            Self::Temporary { code, .. } => Some(code),
            Self::AuthFailed { code, .. } | Self::Refused { code, .. } => code.0.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn codec(server: &str, command: &str, err: CodecError) -> Self {
        Self::Protocol {
            server: server.to_owned(),
            command: command.to_owned(),
            detail: err.to_string(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wrong_password_is_not_retried_but_in_use_is() {
        let auth = Pop3Error::AuthFailed {
            server: "h:110".into(),
            code: CodeText(Some(RespCode::Auth)),
            message: "Authentication failed.".into(),
        };
        assert_eq!(auth.kind(), ErrorKind::Auth);
        assert!(!auth.is_retryable());
        assert!(auth.to_string().contains("h:110") && auth.to_string().contains("[AUTH]"));
        let busy = Pop3Error::Temporary {
            server: "h:110".into(),
            command: "PASS".into(),
            code: RespCode::InUse,
            message: "locked".into(),
        };
        assert!(busy.is_retryable());
        assert_eq!(busy.kind(), ErrorKind::Temporary);
    }
}
