//! Where the Gmail sink gets an OAuth2 access token for a target account: from an `oauth2:`
//! credential ([`OAuth2Tokens`]: refresh tokens, service accounts with `sub` = the account),
//! or from a file another process keeps fresh ([`FileTokens`]).

use super::config::Account;
use crate::secret::Secret;
use async_trait::async_trait;

/// Why no token could be had: the sink is down for that account until an operator acts.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the access token file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the access token file {path} is empty")]
    Empty { path: String },
    #[error("{0}")]
    OAuth2(String),
}

/// A bearer token per target account. Keyed by the [`Account`] (its `user` is the Gmail
/// address an OAuth2 manager would key on; `token_file` serves [`FileTokens`]).
#[async_trait]
pub trait AccessToken: Send + Sync {
    /// A token for `account` to send now.
    async fn token(&self, account: &Account) -> Result<Secret, TokenError>;
    /// The API refused `token` (HTTP 401): forget it, so the next [`AccessToken::token`]
    /// gets a fresh one.
    async fn invalidate(&self, account: &Account, token: &Secret);
}

/// Tokens read from `access_token_file` at every request: nothing is cached, so a file that
/// another process rewrites (an OAuth2 sidecar, a Kubernetes Secret) is picked up at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileTokens;

#[async_trait]
impl AccessToken for FileTokens {
    async fn token(&self, account: &Account) -> Result<Secret, TokenError> {
        let path = &account.token_file;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| TokenError::File {
                path: path.display().to_string(),
                source,
            })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(Secret::new(token))
    }

    /// Nothing is cached: the next request reads the file again.
    async fn invalidate(&self, _account: &Account, _token: &Secret) {}
}

/// Tokens from an `oauth2:` credential, cached and refreshed by its token source; the
/// account's address is the subject (a Workspace service account's `sub`).
pub struct OAuth2Tokens(pub std::sync::Arc<crate::oauth2::TokenSource>);

#[async_trait]
impl AccessToken for OAuth2Tokens {
    async fn token(&self, account: &Account) -> Result<Secret, TokenError> {
        self.0
            .access_token(&account.user)
            .await
            .map_err(|e| TokenError::OAuth2(e.to_string()))
    }

    async fn invalidate(&self, account: &Account, token: &Secret) {
        self.0.invalidate(&account.user, token).await;
    }
}
