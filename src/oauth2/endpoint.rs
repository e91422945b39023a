//! One token request (RFC 6749 section 4/6, RFC 7523) and the classification of its answer:
//! `invalid_grant` on a refresh means re-login, client and scope errors mean configuration,
//! 5xx, 429 and network failures are transient.

use super::error::OAuth2Error;
use crate::secret::Secret;
use std::time::Duration;

/// A successful answer.
pub struct TokenResponse {
    pub access_token: Secret,
    pub expires_in: Duration,
    /// A new refresh token, when the server rotates (Microsoft) or issues one.
    pub refresh_token: Option<Secret>,
}

/// Lifetime assumed when the server does not say (RFC 6749 leaves `expires_in` optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// POSTs `form` to `url` and classifies the answer. `refreshing` says whether an
/// `invalid_grant` means the refresh token is dead (else it is a configuration error).
pub(crate) async fn request(
    client: &reqwest::Client,
    credential: &str,
    store: &str,
    url: &str,
    form: &[(&str, &str)],
    refreshing: bool,
) -> Result<TokenResponse, OAuth2Error> {
    let transient = |detail: String, retry_after| OAuth2Error::Transient {
        credential: credential.to_owned(),
        detail,
        retry_after,
    };
    let response = client
        .post(url)
        .header("Accept", "application/json")
        .form(form)
        .send()
        .await
        // reqwest's error names the URL, never the form body.
        .map_err(|e| transient(format!("{url}: {e}"), None))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .bytes()
        .await
        .map_err(|e| transient(format!("{url}: reading the answer: {e}"), None))?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        return Err(transient(
            format!("{url} answered {status} {}", text("error")),
            retry_after,
        ));
    }
    if status.is_success() {
        let Some(token) = json.get("access_token").and_then(|v| v.as_str()) else {
            return Err(transient(
                format!("{url} answered {status} without an access_token"),
                None,
            ));
        };
        let expires_in = json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        return Ok(TokenResponse {
            access_token: Secret::new(token),
            expires_in,
            refresh_token: json
                .get("refresh_token")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        });
    }
    let code = text("error");
    // Descriptions name the problem (AADSTS codes) and never carry the secret we sent.
    let description: String = text("error_description")
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let detail = format!("{status} {code}: {description}");
    Err(match code {
        "invalid_grant" if refreshing => OAuth2Error::ReloginNeeded {
            credential: credential.to_owned(),
            detail,
            store: store.to_owned(),
        },
        "invalid_client" => config(credential, code, detail, "check `client_id` and the client secret or certificate (expired? uploaded to the app registration?)"),
        "unauthorized_client" => config(credential, code, detail, "the app may not use this grant: enable it in the app registration (public client flows, application permissions) or domain-wide delegation for a service account"),
        "invalid_scope" => config(credential, code, detail, "check `scope` (app-only Microsoft tokens need `https://outlook.office365.com/.default`)"),
        "consent_required" | "interaction_required" => config(credential, code, detail, "an administrator must grant consent to the app for these permissions"),
        "invalid_grant" => config(credential, code, detail, "the assertion was refused: check the key, the service account's domain-wide delegation and that the mailbox exists"),
        _ => config(credential, code, detail, "check the credential's settings against the provider's documentation"),
    })
}

fn config(credential: &str, code: &str, detail: String, fix: &'static str) -> OAuth2Error {
    OAuth2Error::Config {
        credential: credential.to_owned(),
        code: code.to_owned(),
        detail,
        fix,
    }
}
