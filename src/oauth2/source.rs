//! One credential's tokens: cached per subject (the mailbox, for service accounts; one token
//! for everything otherwise), refreshed before expiry, one refresh at a time (the lock is held
//! across the request: single flight), and a rotated refresh token persisted before the access
//! token that came with it is handed out.

use super::config::{ClientAuth, CredentialSettings, Grant};
use super::endpoint::{self, TokenResponse};
use super::error::OAuth2Error;
use super::jwt::{self, Alg, Key};
use super::store::{self, Stored};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Refresh at most this long before expiry, whatever `refresh_at` says.
const MAX_MARGIN: Duration = Duration::from_secs(300);
/// Lifetime of the assertions we sign.
const ASSERTION_LIFETIME: u64 = 300;

struct Cached {
    token: Secret,
    refresh_after: Instant,
    expires: Instant,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, Cached>,
    /// The refresh token last sent or received, to tell a rotation from an echo.
    refresh_token: Option<Secret>,
}

/// Tokens of one credential, shared by every mailbox and IMAP account that names it.
pub struct TokenSource {
    settings: CredentialSettings,
    client: OnceLock<reqwest::Client>,
    state: tokio::sync::Mutex<State>,
    /// The last refresh said the refresh token is dead (for `/readyz` and the metric).
    relogin: std::sync::atomic::AtomicBool,
    endpoints: tokio::sync::OnceCell<Endpoints>,
}

/// Where to send requests: as configured, or from the issuer's discovery document.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub token_url: String,
    pub device_url: Option<String>,
    pub authorize_url: Option<String>,
    pub revocation_url: Option<String>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.settings.name)
            .field("token_url", &self.settings.token_url)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenSource {
    /// Lazy: nothing is read or requested until the first token is needed.
    pub fn new(settings: CredentialSettings) -> Self {
        Self {
            settings,
            client: OnceLock::new(),
            state: Default::default(),
            relogin: Default::default(),
            endpoints: Default::default(),
        }
    }

    pub fn settings(&self) -> &CredentialSettings {
        &self.settings
    }

    /// The endpoints, discovered at first use for an `issuer` (a failure is transient and
    /// tried again next time).
    pub async fn endpoints(&self) -> Result<&Endpoints, OAuth2Error> {
        self.endpoints
            .get_or_try_init(|| async {
                let s = &self.settings;
                let Some(url) = &s.discovery_url else {
                    return Ok(Endpoints {
                        token_url: s.token_url.clone(),
                        device_url: s.device_url.clone(),
                        authorize_url: s.authorize_url.clone(),
                        revocation_url: s.revocation_url.clone(),
                    });
                };
                let transient = |detail: String| OAuth2Error::Transient {
                    credential: s.name.clone(),
                    detail,
                    retry_after: None,
                };
                let doc: serde_json::Value = self
                    .client()?
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| transient(format!("discovery document {url}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| transient(format!("discovery document {url}: {e}")))?;
                let field = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                let token_url = field("token_endpoint").ok_or_else(|| {
                    self.local(format!(
                        "the discovery document {url} names no token_endpoint"
                    ))
                })?;
                Ok(Endpoints {
                    token_url,
                    device_url: s
                        .device_url
                        .clone()
                        .or_else(|| field("device_authorization_endpoint")),
                    authorize_url: s
                        .authorize_url
                        .clone()
                        .or_else(|| field("authorization_endpoint")),
                    revocation_url: s
                        .revocation_url
                        .clone()
                        .or_else(|| field("revocation_endpoint")),
                })
            })
            .await
    }

    /// Whether a human must run `oauth2 login` before this credential works again.
    pub fn needs_relogin(&self) -> bool {
        self.relogin.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_relogin(&self, needed: bool) {
        self.relogin
            .store(needed, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::oauth2_relogin_needed(&self.settings.name, needed);
    }

    /// A valid access token for `subject` (the login name), from the cache or a refresh.
    pub async fn access_token(&self, subject: &str) -> Result<Secret, OAuth2Error> {
        let key = self.cache_key(subject);
        let mut state = self.state.lock().await;
        if let Some(c) = state.tokens.get(key) {
            if Instant::now() < c.refresh_after {
                return Ok(c.token.clone());
            }
        }
        match self.fetch(&mut state, subject).await {
            Ok(r) => {
                let now = Instant::now();
                let lifetime = r.expires_in;
                let margin = lifetime
                    .mul_f64(1.0 - self.settings.refresh_at)
                    .min(MAX_MARGIN);
                tracing::info!(
                    credential = %self.settings.name,
                    token_len = r.access_token.expose().len(),
                    expires_in_s = lifetime.as_secs(),
                    "Obtained an OAuth2 access token"
                );
                crate::metrics::oauth2_refresh(&self.settings.name, "ok");
                crate::metrics::oauth2_token_expiry(
                    &self.settings.name,
                    unix_now() + lifetime.as_secs(),
                );
                self.set_relogin(false);
                let token = r.access_token.clone();
                state.tokens.insert(
                    key.to_owned(),
                    Cached {
                        token: r.access_token,
                        refresh_after: now + lifetime.saturating_sub(margin),
                        expires: now + lifetime,
                    },
                );
                Ok(token)
            }
            Err(e) => {
                crate::metrics::oauth2_refresh(&self.settings.name, e.result_label());
                if e.needs_relogin() {
                    self.set_relogin(true);
                }
                // A transient failure while the old token is still valid: keep using it.
                if e.is_transient() {
                    if let Some(c) = state.tokens.get(key) {
                        if Instant::now() < c.expires {
                            tracing::warn!(credential = %self.settings.name, error = %e, "OAuth2 refresh failed; using the current token until it expires");
                            return Ok(c.token.clone());
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// The server refused `token`: forget it, so the next [`Self::access_token`] refreshes.
    pub async fn invalidate(&self, subject: &str, token: &Secret) {
        let key = self.cache_key(subject);
        let mut state = self.state.lock().await;
        if state.tokens.get(key).is_some_and(|c| &c.token == token) {
            state.tokens.remove(key);
        }
    }

    fn cache_key<'a>(&self, subject: &'a str) -> &'a str {
        match self.settings.grant {
            Grant::JwtBearer { .. } => subject,
            _ => "",
        }
    }

    pub(crate) fn local(&self, detail: impl Into<String>) -> OAuth2Error {
        OAuth2Error::Local {
            credential: self.settings.name.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn client(&self) -> Result<reqwest::Client, OAuth2Error> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let c = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .connect_timeout(self.settings.timeout)
            .build()
            .map_err(|e| self.local(format!("cannot build the HTTP client: {e}")))?;
        Ok(self.client.get_or_init(|| c).clone())
    }

    async fn fetch(&self, state: &mut State, subject: &str) -> Result<TokenResponse, OAuth2Error> {
        let s = &self.settings;
        let client = self.client()?;
        let token_url = self.endpoints().await?.token_url.clone();
        let store_path = s.store_path.display().to_string();
        let mut form: Vec<(&str, String)> = Vec::new();
        if !s.scope.is_empty() {
            form.push(("scope", s.scope.clone()));
        }
        let refreshing = matches!(s.grant, Grant::RefreshToken { .. });
        match &s.grant {
            Grant::RefreshToken { seed } => {
                // From disk each time: a rotated token is stored before it is used, and an
                // `oauth2 login` run beside a running daemon is picked up without a restart.
                let current = self.load_refresh_token(seed.as_ref())?;
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", current.expose().to_owned()));
                state.refresh_token = Some(current);
            }
            Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
            Grant::JwtBearer {
                issuer,
                key_pem,
                key_id,
            } => {
                let now = unix_now();
                let claims = serde_json::json!({
                    "iss": issuer, "sub": subject, "scope": s.scope, "aud": token_url,
                    "iat": now, "exp": now + ASSERTION_LIFETIME,
                });
                let mut header = serde_json::Map::new();
                if let Some(kid) = key_id {
                    header.insert("kid".into(), kid.clone().into());
                }
                let assertion = self.sign_rsa(key_pem, Alg::Rs256, header, &claims)?;
                form.push((
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ));
                form.push(("assertion", assertion));
                form.retain(|(k, _)| *k != "scope");
            }
        }
        if !matches!(s.grant, Grant::JwtBearer { .. }) {
            form.push(("client_id", s.client_id.clone()));
        }
        match &s.client_auth {
            ClientAuth::None => {}
            ClientAuth::Secret(secret) => form.push(("client_secret", secret.expose().into())),
            ClientAuth::Certificate {
                key_pem,
                cert_der,
                alg,
            } => {
                let cert = openssl::x509::X509::from_der(cert_der)
                    .map_err(|e| self.local(format!("the certificate: {e}")))?;
                let mut header = serde_json::Map::new();
                let thumb = |d| jwt::thumbprint(&cert, d).map_err(|e| self.local(e.to_string()));
                match alg {
                    Alg::Ps256 => header.insert(
                        "x5t#S256".into(),
                        thumb(openssl::hash::MessageDigest::sha256())?.into(),
                    ),
                    _ => header.insert(
                        "x5t".into(),
                        thumb(openssl::hash::MessageDigest::sha1())?.into(),
                    ),
                };
                let now = unix_now();
                let claims = serde_json::json!({
                    "aud": token_url, "iss": s.client_id, "sub": s.client_id,
                    "jti": hex::encode(rand::random::<[u8; 16]>()),
                    "iat": now, "nbf": now, "exp": now + ASSERTION_LIFETIME,
                });
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    self.sign_rsa(key_pem, *alg, header, &claims)?,
                ));
            }
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = endpoint::request(
            &client,
            &s.name,
            &store_path,
            &token_url,
            &pairs,
            refreshing,
        )
        .await?;
        if let (Grant::RefreshToken { seed }, Some(new)) = (&s.grant, &response.refresh_token) {
            if state.refresh_token.as_ref() != Some(new) {
                // Persist first: if this fails, the new access token is not used, and the old
                // refresh token (still stored) may still work or will say re-login.
                store::save(
                    &s.store_path,
                    &Stored {
                        version: 1,
                        token_url: s.token_url.clone(),
                        client_id: s.client_id.clone(),
                        seed_sha256: store::seed_hash(seed.as_ref()),
                        refresh_token: new.expose().to_owned(),
                        received_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
                    },
                )
                .map_err(|e| self.local(e))?;
                tracing::info!(credential = %s.name, token_len = new.expose().len(), "Stored a rotated OAuth2 refresh token");
                state.refresh_token = Some(new.clone());
            }
        }
        Ok(response)
    }

    /// A refresh token from a login: stored (marked as descending from the configured one, so
    /// it wins over it) and used from now on; cached access tokens are dropped.
    pub async fn adopt(&self, refresh_token: &Secret) -> Result<(), OAuth2Error> {
        let s = &self.settings;
        let seed = match &s.grant {
            Grant::RefreshToken { seed } => seed.as_ref(),
            _ => return Err(self.local("only `grant: refresh_token` credentials log in")),
        };
        let mut state = self.state.lock().await;
        store::save(
            &s.store_path,
            &Stored {
                version: 1,
                token_url: s.token_url.clone(),
                client_id: s.client_id.clone(),
                seed_sha256: store::seed_hash(seed),
                refresh_token: refresh_token.expose().to_owned(),
                received_at: i64::try_from(unix_now()).unwrap_or(i64::MAX),
            },
        )
        .map_err(|e| self.local(e))?;
        state.refresh_token = Some(refresh_token.clone());
        state.tokens.clear();
        self.set_relogin(false);
        Ok(())
    }

    /// The stored refresh token when it belongs to this credential and descends from the
    /// configured one; else the configured one.
    fn load_refresh_token(&self, seed: Option<&Secret>) -> Result<Secret, OAuth2Error> {
        let s = &self.settings;
        let stored = store::load(&s.store_path).map_err(|e| self.local(e))?;
        if let Some(stored) = stored {
            let ours = stored.token_url == s.token_url && stored.client_id == s.client_id;
            let current_seed = seed.is_none() || stored.seed_sha256 == store::seed_hash(seed);
            if ours && current_seed {
                return Ok(Secret::new(stored.refresh_token));
            }
            if !ours {
                tracing::warn!(credential = %s.name, path = %s.store_path.display(), "The stored OAuth2 token belongs to another token URL or client id; ignoring it");
            }
        }
        seed.cloned().ok_or_else(|| OAuth2Error::ReloginNeeded {
            credential: s.name.clone(),
            detail: "no refresh token stored or configured".into(),
            store: s.store_path.display().to_string(),
        })
    }

    fn sign_rsa(
        &self,
        key_pem: &Secret,
        alg: Alg,
        header: serde_json::Map<String, serde_json::Value>,
        claims: &serde_json::Value,
    ) -> Result<String, OAuth2Error> {
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem.expose().as_bytes())
            .map_err(|e| self.local(format!("the private key: {e}")))?;
        jwt::sign(alg, Key::Rsa(&key), header, claims)
            .map_err(|e| self.local(format!("signing the assertion: {e}")))
    }
}
