//! What can go wrong getting a token, sorted by what the operator must do: log in again, fix
//! the configuration, or nothing (a transient failure, retried with backoff).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OAuth2Error {
    /// The refresh token is dead (revoked, expired, password changed): a human must log in.
    #[error("OAuth2 credential {credential}: re-login needed, the token endpoint refused the refresh token ({detail}); run `popbridge oauth2 login --credential {credential}` (it replaces the token stored in {store})")]
    ReloginNeeded {
        credential: String,
        detail: String,
        store: String,
    },
    /// The endpoint refused the client or the request itself: fix the configuration.
    #[error("OAuth2 credential {credential}: the token endpoint refused the configuration: {detail}; {fix}")]
    Config {
        credential: String,
        /// The OAuth2 `error` code (`invalid_client`, `authorization_pending`, …).
        code: String,
        detail: String,
        fix: &'static str,
    },
    /// 5xx, 429, timeouts, network: retried later; nothing stored is touched.
    #[error("OAuth2 credential {credential}: the token endpoint failed temporarily: {detail}; will retry")]
    Transient {
        credential: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A local problem: a key file, the token store.
    #[error("OAuth2 credential {credential}: {detail}")]
    Local { credential: String, detail: String },
}

impl OAuth2Error {
    /// Whether waiting may fix it (the scheduler backs off; nothing needs a human yet).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether a human must log in again (readiness and metrics say so).
    pub fn needs_relogin(&self) -> bool {
        matches!(self, Self::ReloginNeeded { .. })
    }

    /// The `result` label of the refresh metric.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::ReloginNeeded { .. } => "relogin_needed",
            Self::Config { .. } => "config",
            Self::Transient { .. } => "transient",
            Self::Local { .. } => "local",
        }
    }
}
