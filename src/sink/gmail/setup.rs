//! `popbridge gmail-setup`: authorising one Gmail account for the Gmail sink in one command.
//! It signs the user in with the OAuth2 login code every credential uses (browser with PKCE
//! on a loopback redirect, pasteable on a headless machine; or the device flow, RFC 8628,
//! where the authorisation server offers it for the scopes asked), stores the refresh token
//! where the config's credential will look for it, proves the token opens the account with
//! one cheap API call, and gives the config block to paste.
//!
//! Google's device endpoint serves only a short list of scopes, none of Gmail's
//! (<https://developers.google.com/identity/protocols/oauth2/limited-input-device#allowedscopes>),
//! so against Google the browser flow is the default; `--flow device` is for authorisation
//! servers that allow it.

use super::service::MINIMAL_SCOPES;
use crate::oauth2::config::ClientAuth;
use crate::oauth2::login::{self, Flow};
use crate::oauth2::{CredentialSettings, Grant, OAuth2Error, Provider, TokenSource};
use crate::secret::Secret;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Google's endpoints (the `provider: google` preset's).
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";
const GMAIL_API: &str = "https://gmail.googleapis.com";

/// What the user gave on the command line.
#[derive(Debug, Clone)]
pub struct SetupArgs {
    /// The OAuth client (Google Cloud console → Credentials → OAuth client ID).
    pub client_id: String,
    /// Its secret (Google's desktop clients have one), and the variable the config reads it from.
    pub client_secret: Option<(Secret, String)>,
    /// The Gmail address to import into.
    pub user: String,
    /// The `oauth2:` credential's name; its token lands in `<state_dir>/oauth2/<name>.json`.
    pub credential: String,
    /// The Gmail sink's name in the printed block.
    pub sink: String,
    /// The directory of `state.path`.
    pub state_dir: PathBuf,
    pub scope: String,
    pub flow: Option<Flow>,
    /// Another authorisation server (tests, or a proxy): token, device and authorisation URLs.
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub authorize_url: Option<String>,
    /// Another API root (tests).
    pub api_base: Option<String>,
    /// Skip the API call that proves the token.
    pub check: bool,
}

impl SetupArgs {
    /// Defaults for `user`: credential `gmail-<local part>`, sink `gmail`, `./state`, the
    /// least-privilege scopes, Google's endpoints.
    pub fn new(client_id: &str, user: &str) -> Self {
        let local: String = user
            .split('@')
            .next()
            .unwrap_or(user)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        Self {
            client_id: client_id.to_owned(),
            client_secret: None,
            user: user.to_owned(),
            credential: format!("gmail-{local}"),
            sink: "gmail".to_owned(),
            state_dir: PathBuf::from("./state"),
            scope: MINIMAL_SCOPES.to_owned(),
            flow: None,
            token_url: None,
            device_url: None,
            authorize_url: None,
            api_base: None,
            check: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    OAuth2(#[from] OAuth2Error),
    #[error("the token was stored, but the Gmail API refused it for {user}: {detail}")]
    Check { user: String, detail: String },
}

fn credential_settings(a: &SetupArgs) -> Result<CredentialSettings, SetupError> {
    if a.client_id.trim().is_empty() || a.user.trim().is_empty() {
        return Err(SetupError::Args(
            "give --client-id and --user (the Gmail address)".into(),
        ));
    }
    let client_auth = match &a.client_secret {
        Some((secret, _)) => ClientAuth::Secret(secret.clone()),
        None => ClientAuth::None,
    };
    Ok(CredentialSettings {
        name: a.credential.clone(),
        provider: Provider::Google,
        token_url: a
            .token_url
            .clone()
            .unwrap_or_else(|| GOOGLE_TOKEN_URL.into()),
        discovery_url: None,
        client_id: a.client_id.clone(),
        scope: a.scope.clone(),
        client_auth,
        grant: Grant::RefreshToken { seed: None },
        refresh_at: 0.75,
        timeout: Duration::from_secs(30),
        store_path: a
            .state_dir
            .join("oauth2")
            .join(format!("{}.json", a.credential)),
        device_url: a.device_url.clone(),
        authorize_url: Some(
            a.authorize_url
                .clone()
                .unwrap_or_else(|| GOOGLE_AUTHORIZE_URL.into()),
        ),
        revocation_url: a.token_url.is_none().then(|| GOOGLE_REVOKE_URL.into()),
    })
}

/// Signs in, stores the refresh token, checks it against the API and gives the config block
/// to paste. `say` talks to the user (stderr); `pasted` is a line they paste (the browser
/// flow's redirect address on a machine without a browser).
pub async fn setup(
    args: &SetupArgs,
    say: &(dyn Fn(&str) + Sync),
    pasted: impl Future<Output = Option<String>>,
) -> Result<String, SetupError> {
    let settings = credential_settings(args)?;
    let store_path = settings.store_path.clone();
    let source = TokenSource::new(settings);
    say(&format!(
        "Authorising {} for the Gmail sink (scopes: {}).",
        args.user, args.scope
    ));
    login::login(&source, args.flow, say, pasted).await?;
    if args.check {
        let labels = check(&source, args).await?;
        say(&format!(
            "Gmail API: {} answered with {labels} label(s): the token opens the account.",
            args.user
        ));
    }
    say(&format!(
        "The refresh token is in {}. Paste this into the config (state.path must be in {}):",
        store_path.display(),
        args.state_dir.display()
    ));
    Ok(config_block(args))
}

/// One `users.labels.list` (1 quota unit; `gmail.labels` covers it) with a fresh token.
async fn check(source: &TokenSource, a: &SetupArgs) -> Result<usize, SetupError> {
    let failed = |detail: String| SetupError::Check {
        user: a.user.clone(),
        detail,
    };
    let token = source.access_token(&a.user).await?;
    let base = a.api_base.as_deref().unwrap_or(GMAIL_API);
    let base = reqwest::Url::parse(base).map_err(|e| failed(format!("api base: {e}")))?;
    let url = super::service::url(&base, &["gmail", "v1", "users", &a.user, "labels"], &[])
        .map_err(|e| failed(e.to_string()))?;
    let client = crate::sink::http::client_builder(Duration::from_secs(30), 1, None)
        .and_then(|b| b.build().map_err(|e| e.to_string()))
        .map_err(failed)?;
    let resp = client
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| failed(crate::sink::http::describe(&e)))?;
    let status = resp.status();
    let body = crate::sink::http::read_capped(resp, 4 << 20)
        .await
        .map_err(|e| failed(crate::sink::http::describe(&e)))?;
    if !status.is_success() {
        let (_, message) = super::service::parse_error(&body);
        return Err(failed(format!("HTTP {}: {message}", status.as_u16())));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| failed(format!("not JSON: {e}")))?;
    Ok(doc["labels"].as_array().map_or(0, Vec::len))
}

/// The YAML to paste: the credential and the sink, with the secret as `${VAR}`.
pub fn config_block(a: &SetupArgs) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = format!(
        "oauth2:\n  {cred}:\n    provider: google\n    grant: refresh_token\n    client_id: {id}\n",
        cred = a.credential,
        id = q(&a.client_id),
    );
    if let Some((_, var)) = &a.client_secret {
        out.push_str(&format!("    client_secret: ${{{var}}}\n"));
    }
    out.push_str(&format!("    scope: {}\n", q(&a.scope)));
    for (key, value) in [
        ("token_url", &a.token_url),
        ("device_authorization_url", &a.device_url),
        ("authorization_url", &a.authorize_url),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("    {key}: {}\n", q(v)));
        }
    }
    out.push_str(&format!(
        "sinks:\n  - name: {sink}\n    type: gmail\n    user: {user}\n    oauth2: {cred}\n",
        sink = a.sink,
        user = q(&a.user),
        cred = a.credential,
    ));
    if let Some(base) = &a.api_base {
        out.push_str(&format!("    api_base: {}\n", q(base)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_names_the_credential_the_secret_variable_and_the_least_scopes() {
        let mut a = SetupArgs::new("123.apps.googleusercontent.com", "Alice.Smith@example.com");
        a.client_secret = Some((Secret::new("s3cr3t"), "GMAIL_CLIENT_SECRET".into()));
        let y = config_block(&a);
        assert!(
            y.contains("  gmail-alice-smith:\n    provider: google\n"),
            "{y}"
        );
        assert!(y.contains("client_secret: ${GMAIL_CLIENT_SECRET}"), "{y}");
        assert!(!y.contains("s3cr3t"), "{y}");
        assert!(
            y.contains("gmail.insert") && y.contains("gmail.labels"),
            "{y}"
        );
        assert!(
            y.contains("    user: \"Alice.Smith@example.com\"\n    oauth2: gmail-alice-smith"),
            "{y}"
        );
        let s = credential_settings(&a).unwrap();
        assert_eq!(
            s.store_path,
            PathBuf::from("./state/oauth2/gmail-alice-smith.json")
        );
        assert_eq!(s.token_url, GOOGLE_TOKEN_URL);
        assert!(
            s.device_url.is_none(),
            "Google has no device flow for Gmail"
        );
    }
}
