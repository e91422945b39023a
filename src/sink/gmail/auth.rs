//! Where the Gmail sink gets an OAuth2 access token for a target account. A trait, so the
//! project's OAuth2 token manager (refresh tokens, service accounts) can be plugged in; for
//! now [`FileTokens`] reads a file that another process keeps fresh.

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
}

/// A bearer token per target account. Keyed by the [`Account`] (its `user` is the Gmail
/// address an OAuth2 manager would key on; `token_file` serves [`FileTokens`]).
#[async_trait]
pub trait AccessToken: Send + Sync {
    /// A token for `account` to send now.
    async fn token(&self, account: &Account) -> Result<Secret, TokenError>;
    /// The API refused the last token (HTTP 401): forget any cached one, so the next
    /// [`AccessToken::token`] gets a fresh one.
    fn invalidate(&self, account: &Account);
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
    fn invalidate(&self, _account: &Account) {}
}
