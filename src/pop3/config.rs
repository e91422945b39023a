//! Validated settings for one POP3 connection (built by `config`, consumed by `session`).

use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (POP3S, port 995).
    Implicit,
    /// Plain connection upgraded with `STLS` (RFC 2595) before any credential is sent.
    StartTls,
    /// No TLS at all. Credentials are only sent if `allow_plaintext_auth` is set.
    None,
}

/// Which authentication to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// SASL PLAIN if advertised, else USER/PASS (APOP is never picked silently: it relies on MD5).
    Auto,
    /// RFC 1939 USER/PASS.
    User,
    /// RFC 1939 APOP (MD5 of the greeting timestamp and the password).
    Apop,
    /// RFC 5034 AUTH PLAIN.
    Plain,
    /// RFC 5034 AUTH XOAUTH2, the two-step form Microsoft 365 needs; the secret is the token.
    XOAuth2,
    /// An OAuth2 bearer login (XOAUTH2 or OAUTHBEARER) with a token from a credential.
    OAuth2(OAuth2Login),
}

/// Which OAuth2 SASL mechanism to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// OAUTHBEARER when the server offers it, else XOAUTH2.
    Auto,
    XOAuth2,
    OAuthBearer,
}

/// Where the SASL initial response goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialResponse {
    /// On the AUTH line when it fits the 255-octet limit, else after the server's `+`.
    #[default]
    Auto,
    /// Always on the AUTH line (servers without a line limit).
    Always,
    /// Always after `+` (the two-step form Microsoft's POP3 requires).
    Never,
}

/// An OAuth2 login: the mechanism, the initial response placement, and the token source
/// (without one, `secret` or `password_file` holds the access token itself).
#[derive(Clone, Debug)]
pub struct OAuth2Login {
    pub mechanism: OAuthMechanism,
    pub initial_response: InitialResponse,
    pub token: Option<std::sync::Arc<crate::oauth2::TokenSource>>,
}

impl PartialEq for OAuth2Login {
    fn eq(&self, other: &Self) -> bool {
        self.mechanism == other.mechanism
            && self.initial_response == other.initial_response
            && match (&self.token, &other.token) {
                (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for OAuth2Login {}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: String,
    /// Password, or the OAuth2 access token for `AuthMethod::XOAuth2`.
    pub secret: Secret,
    /// Where `secret` came from, read again at each login so a rotated password or a refreshed
    /// token (a Kubernetes Secret mounted as a file) is used without a restart.
    pub password_file: Option<PathBuf>,
    pub auth: AuthMethod,
    /// Extra CA bundle (PEM) to trust, for private CAs.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification. Explicit in config, logged as a warning.
    pub danger_accept_invalid_certs: bool,
    /// Allow a password over a connection without TLS (`tls: none`).
    pub allow_plaintext_auth: bool,
    /// Connect timeout and the timeout of every single read or write.
    pub timeout: Duration,
    /// Longest status or listing line accepted from the server before the connection is dropped.
    /// Lines inside a message are not limited: they stream to the spool file.
    pub max_line_length: usize,
    /// Largest message accepted. Larger ones (by LIST size) are not fetched but reported; a
    /// message that keeps coming past this size ends the connection with an error.
    pub max_message_bytes: u64,
    /// Most RETR/DELE commands in flight when the server advertises PIPELINING.
    pub pipeline_window: usize,
}

impl ClientConfig {
    /// `host:port`, the key for the per-server connection cap.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
