//! Where the S3 keys come from: static keys in the config, the environment, web identity (EKS
//! IAM roles for service accounts via STS `AssumeRoleWithWebIdentity`), or the shared
//! credentials file — the order of the standard AWS chain. Secrets stay in [`Secret`].

use super::xml;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Mutex;

/// One set of keys. `Debug` shows the key id only.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// When temporary keys stop working; `None` for long-lived keys.
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no S3 credentials: set access_key_id/secret_access_key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or a profile in the shared credentials file")]
    NotFound,
    #[error("cannot read the web identity token {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("STS AssumeRoleWithWebIdentity failed: {0}")]
    Sts(String),
    /// STS refused (bad token, role not assumable): retrying will not help.
    #[error("STS AssumeRoleWithWebIdentity refused: {0}")]
    StsRefused(String),
}

impl CredentialsError {
    /// Worth retrying: STS unreachable or failing on its side.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Sts(_) | Self::TokenFile { .. })
    }
}

/// Web identity settings, from `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`,
/// `AWS_ROLE_SESSION_NAME` and the STS endpoint (`AWS_ENDPOINT_URL_STS` or the regional one).
#[derive(Clone, Debug)]
pub struct WebIdentity {
    pub token_file: PathBuf,
    pub role_arn: String,
    pub session_name: String,
    pub sts_endpoint: String,
}

/// How keys are found; chosen once at build time, in the chain's order.
#[derive(Clone, Debug)]
pub enum Source {
    Static(Credentials),
    WebIdentity(WebIdentity),
}

/// Temporary keys are renewed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Hands out current keys, fetching and caching temporary ones.
#[derive(Debug)]
pub struct Provider {
    source: Source,
    http: reqwest::Client,
    cached: Mutex<Option<Credentials>>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The chain after static keys: environment, web identity, shared credentials file.
pub fn from_environment(region: &str) -> Result<Source, CredentialsError> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Source::Static(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
            expires: None,
        }));
    }
    if let (Some(token_file), Some(role_arn)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        return Ok(Source::WebIdentity(WebIdentity {
            token_file: token_file.into(),
            role_arn,
            session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "popbridge".into()),
            sts_endpoint: env("AWS_ENDPOINT_URL_STS")
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
        }));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
        if let Some(c) = parse_profile(&text, &profile) {
            return Ok(Source::Static(c));
        }
    }
    Err(CredentialsError::NotFound)
}

/// Keys of `[profile]` in a shared credentials file (INI).
pub fn parse_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_section = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            let name = line[1..line.len() - 1].trim();
            in_section = name == profile || name == format!("profile {profile}");
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Secret::new(v)),
                "aws_session_token" => token = Some(Secret::new(v)),
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
        expires: None,
    })
}

impl Provider {
    pub fn new(source: Source, http: reqwest::Client) -> Self {
        Self {
            source,
            http,
            cached: Mutex::new(None),
        }
    }

    /// Drops cached temporary keys, so the next request fetches new ones.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Current keys; temporary ones are fetched once and renewed before they expire.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let web = match &self.source {
            Source::Static(c) => return Ok(c.clone()),
            Source::WebIdentity(w) => w,
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expires.is_none_or(|at| {
                at - chrono::Duration::from_std(REFRESH_BEFORE).unwrap_or_default() > Utc::now()
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = assume_role_with_web_identity(&self.http, web).await?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// One STS call. The request is unsigned: the OIDC token is the proof.
async fn assume_role_with_web_identity(
    http: &reqwest::Client,
    w: &WebIdentity,
) -> Result<Credentials, CredentialsError> {
    // Re-read each time: the kubelet rotates the projected token file.
    let token = tokio::fs::read_to_string(&w.token_file)
        .await
        .map_err(|source| CredentialsError::TokenFile {
            path: w.token_file.clone(),
            source,
        })?;
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", w.role_arn.as_str()),
        ("RoleSessionName", w.session_name.as_str()),
        ("WebIdentityToken", token.trim()),
    ];
    let body = super::sigv4::canonical_query(&form);
    let resp = http
        .post(&w.sts_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| CredentialsError::Sts(sts_transport(w, &e)))?;
    let status = resp.status();
    // STS answers are a few KB of XML; a server sending more is not STS.
    let text = crate::sink::http::read_capped(resp, crate::sink::http::BODY_CAP)
        .await
        .map_err(|e| CredentialsError::Sts(sts_transport(w, &e)))?;
    let text = String::from_utf8_lossy(&text);
    if !status.is_success() {
        return Err(sts_refusal(status, &text));
    }
    let field = |name: &str| {
        xml::tag(&text, name)
            .ok_or_else(|| CredentialsError::Sts(format!("the STS answer has no <{name}>")))
    };
    let expires = DateTime::parse_from_rfc3339(&field("Expiration")?)
        .map_err(|e| CredentialsError::Sts(format!("bad <Expiration>: {e}")))?
        .with_timezone(&Utc);
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Some(Secret::new(field("SessionToken")?)),
        expires: Some(expires),
    })
}

/// A failed STS exchange, naming the endpoint by its origin only and the cause without
/// reqwest's full URL.
fn sts_transport(w: &WebIdentity, e: &reqwest::Error) -> String {
    let at = reqwest::Url::parse(&w.sts_endpoint)
        .map(|u| crate::sink::http::origin(&u))
        .unwrap_or_else(|_| "the STS endpoint".into());
    format!("{at}: {}", crate::sink::http::describe(e))
}

/// STS error codes that pass with time: throttling, STS's own trouble, and the identity
/// provider (the OIDC issuer) not answering STS in time.
const STS_RETRYABLE: &[&str] = &["Throttling", "IDPCommunicationError", "ServiceUnavailable"];

/// A non-success STS answer: worth retrying, or a refusal of our token or role.
fn sts_refusal(status: reqwest::StatusCode, body: &str) -> CredentialsError {
    let code = xml::tag(body, "Code").unwrap_or_default();
    let msg = xml::tag(body, "Message").unwrap_or_default();
    let detail = format!("HTTP {} {code}: {msg}", status.as_u16());
    if status.is_server_error() || STS_RETRYABLE.contains(&code.as_str()) {
        CredentialsError::Sts(detail)
    } else {
        CredentialsError::StsRefused(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credentials_file_profile() {
        let text = "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = s1\n\n[work]\naws_access_key_id=AKWORK\naws_secret_access_key=s2\naws_session_token=t2\n";
        let c = parse_profile(text, "work").unwrap();
        assert_eq!(c.access_key_id, "AKWORK");
        assert_eq!(c.secret_access_key.expose(), "s2");
        assert_eq!(c.session_token.unwrap().expose(), "t2");
        assert_eq!(
            parse_profile(text, "default").unwrap().access_key_id,
            "AKDEF"
        );
        assert!(parse_profile(text, "nope").is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("very-secret"),
            session_token: Some(Secret::new("tok-secret")),
            expires: None,
        };
        let d = format!("{c:?}");
        assert!(d.contains("AKID") && !d.contains("secret\"") && !d.contains("very-secret"));
        assert!(!d.contains("tok-secret"));
    }

    fn sts_error(status: u16, code: &str) -> CredentialsError {
        sts_refusal(
            reqwest::StatusCode::from_u16(status).unwrap(),
            &format!("<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"),
        )
    }

    #[test]
    fn identity_provider_trouble_and_throttling_are_retryable() {
        assert!(sts_error(400, "IDPCommunicationError").is_retryable());
        assert!(sts_error(400, "Throttling").is_retryable());
        assert!(sts_error(503, "ServiceUnavailable").is_retryable());
        assert!(sts_error(500, "InternalFailure").is_retryable());
    }

    #[test]
    fn a_refused_token_or_role_is_not_retryable() {
        for code in ["InvalidIdentityToken", "AccessDenied"] {
            let e = sts_error(400, code);
            assert!(!e.is_retryable(), "{code}");
            assert!(e.to_string().contains(code), "{e}");
        }
    }
}
