//! `popbridge oauth2 login`: getting the first refresh token of a delegated credential, on a
//! machine without a browser. The device flow (RFC 8628) where the provider offers it; else the
//! browser flow with PKCE (RFC 7636) on a loopback redirect, where a headless user pastes the
//! URL the browser was sent to. The token is stored like a rotated one.

use super::config::{ClientAuth, Grant};
use super::endpoint;
use super::error::OAuth2Error;
use super::source::TokenSource;
use crate::secret::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the user proves who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A code typed in at a URL on any device.
    Device,
    /// A browser sign-in, redirected to a loopback address (or pasted).
    Browser,
}

/// Runs `flow` (default: the device flow where the provider has one), telling the user what to do through `say`; `pasted` yields a line the user
/// pasted (the browser flow accepts the redirect URL that way). Stores the refresh token.
pub async fn login(
    source: &TokenSource,
    flow: Option<Flow>,
    say: &(dyn Fn(&str) + Sync),
    pasted: impl Future<Output = Option<String>>,
) -> Result<(), OAuth2Error> {
    if !matches!(source.settings().grant, Grant::RefreshToken { .. }) {
        return Err(source.local(
            "only `grant: refresh_token` credentials log in; app-only grants need no login",
        ));
    }
    let endpoints = source.endpoints().await?;
    let flow = flow.unwrap_or(if endpoints.device_url.is_some() {
        Flow::Device
    } else {
        Flow::Browser
    });
    let token = match flow {
        Flow::Device => device(source, say).await?,
        Flow::Browser => browser(source, say, pasted).await?,
    };
    source.adopt(&token).await?;
    say(&format!(
        "Logged in; refresh token stored in {}",
        source.settings().store_path.display()
    ));
    Ok(())
}

/// `oauth2 logout`: revokes the stored refresh token where the provider supports it (RFC
/// 7009), then deletes it. Gives what happened, for the user.
pub async fn logout(source: &TokenSource) -> Result<String, OAuth2Error> {
    let s = source.settings();
    let stored = super::store::load(&s.store_path).map_err(|e| source.local(e))?;
    let Some(stored) = stored else {
        return Ok(format!("nothing stored in {}", s.store_path.display()));
    };
    let revoked = match &source.endpoints().await?.revocation_url {
        None => "the provider has no revocation endpoint: revoke the app's sessions there".into(),
        Some(url) => {
            let mut form = client_fields(source).unwrap_or_default();
            form.push(("token", stored.refresh_token.clone()));
            form.push(("token_type_hint", "refresh_token".into()));
            match source.client()?.post(url).form(&form).send().await {
                Ok(r) if r.status().is_success() => "revoked".to_owned(),
                Ok(r) => format!("revocation answered {}", r.status()),
                Err(e) => format!("revocation failed: {e}"),
            }
        }
    };
    std::fs::remove_file(&s.store_path)
        .map_err(|e| source.local(format!("cannot delete {}: {e}", s.store_path.display())))?;
    Ok(format!("{revoked}; deleted {}", s.store_path.display()))
}

/// The client's own fields for a request (`client_id`, and a secret when it has one).
fn client_fields(source: &TokenSource) -> Result<Vec<(&'static str, String)>, OAuth2Error> {
    let s = source.settings();
    let mut form = vec![("client_id", s.client_id.clone())];
    match &s.client_auth {
        ClientAuth::None => {}
        ClientAuth::Secret(secret) => form.push(("client_secret", secret.expose().to_owned())),
        ClientAuth::Certificate { .. } => {
            return Err(source.local(
                "log in with a public client (no certificate); certificates are for app-only",
            ))
        }
    }
    Ok(form)
}

async fn token_request(
    source: &TokenSource,
    form: &[(&str, String)],
) -> Result<Secret, OAuth2Error> {
    let s = source.settings();
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = endpoint::request(
        &source.client()?,
        &s.name,
        &s.store_path.display().to_string(),
        &source.endpoints().await?.token_url,
        &pairs,
        false,
    )
    .await?;
    response.refresh_token.ok_or_else(|| {
        source.local(
            "the login gave no refresh token: add `offline_access` (Microsoft) to `scope`, or \
             for Google the consent must ask for offline access",
        )
    })
}

async fn device(source: &TokenSource, say: &(dyn Fn(&str) + Sync)) -> Result<Secret, OAuth2Error> {
    let s = source.settings();
    let Some(url) = &source.endpoints().await?.device_url else {
        return Err(source.local(
            "this provider has no device login (Google refuses it for Gmail): use --flow browser",
        ));
    };
    let mut form = client_fields(source)?;
    form.retain(|(k, _)| *k == "client_id");
    form.push(("scope", s.scope.clone()));
    let answer: serde_json::Value = source
        .client()?
        .post(url)
        .form(&form)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| source.local(format!("device authorization at {url}: {e}")))?
        .json()
        .await
        .map_err(|e| source.local(format!("device authorization at {url}: {e}")))?;
    let field = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let device_code = field("device_code").to_owned();
    let verification = match field("verification_uri") {
        "" => field("verification_url"),
        v => v,
    };
    say(&format!(
        "To sign in, open {verification} and enter the code {}",
        field("user_code")
    ));
    let mut interval = Duration::from_secs(answer["interval"].as_u64().unwrap_or(5).max(1));
    let deadline =
        Instant::now() + Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(900));
    let mut poll = client_fields(source)?;
    poll.push((
        "grant_type",
        "urn:ietf:params:oauth:grant-type:device_code".into(),
    ));
    poll.push(("device_code", device_code));
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() > deadline {
            return Err(source.local("the device code expired before the sign-in: run again"));
        }
        match token_request(source, &poll).await {
            Err(OAuth2Error::Config { code, .. }) if code == "authorization_pending" => {}
            Err(OAuth2Error::Config { code, .. }) if code == "slow_down" => {
                interval += Duration::from_secs(5)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "Token endpoint failed while waiting for the sign-in; retrying")
            }
            other => return other,
        }
    }
}

/// A PKCE verifier (43 characters of base64url) and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = B64URL.encode(rand::random::<[u8; 32]>());
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&v[i + 1..i + 3], 16) {
                Ok(x) => {
                    out.push(x);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameter `name` of a URL or a request target.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

async fn browser(
    source: &TokenSource,
    say: &(dyn Fn(&str) + Sync),
    pasted: impl Future<Output = Option<String>>,
) -> Result<Secret, OAuth2Error> {
    let s = source.settings();
    let Some(authorize) = &source.endpoints().await?.authorize_url else {
        return Err(source.local("set `authorization_url` for the browser login"));
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| source.local(format!("cannot listen for the redirect: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| source.local(e.to_string()))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let (verifier, challenge) = pkce();
    let state = hex::encode(rand::random::<[u8; 16]>());
    let url = format!(
        "{authorize}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}\
         &code_challenge={challenge}&code_challenge_method=S256&prompt=consent&access_type=offline",
        encode(&s.client_id),
        encode(&redirect),
        encode(&s.scope)
    );
    say(&format!(
        "Open this URL in a browser and sign in:\n{url}\nWithout a browser here: sign in \
         elsewhere, then paste the address the browser was sent to (it starts with {redirect}) \
         and press Enter."
    ));
    let redirected = async {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = request
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_default()
                .to_owned();
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npopbridge: signed in, you can close this window.\r\n")
                .await;
            if query_param(&target, "code").is_some() || query_param(&target, "error").is_some() {
                return target;
            }
        }
    };
    let answer = tokio::select! {
        target = redirected => target,
        line = pasted => line.unwrap_or_default(),
    };
    if let Some(error) = query_param(&answer, "error") {
        return Err(source.local(format!(
            "the sign-in was refused: {error}: {}",
            query_param(&answer, "error_description").unwrap_or_default()
        )));
    }
    if query_param(&answer, "state").as_deref() != Some(state.as_str()) {
        return Err(source.local(
            "the pasted address is not the answer to this login (state differs): run again",
        ));
    }
    let Some(code) = query_param(&answer, "code") else {
        return Err(source.local("no `code` in the pasted address"));
    };
    let mut form = client_fields(source)?;
    form.extend([
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ]);
    token_request(source, &form).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        let (v, c) = pkce();
        assert_eq!(v.len(), 43);
        assert_eq!(c, B64URL.encode(Sha256::digest(v.as_bytes())));
    }

    #[test]
    fn query_params_are_decoded_from_pasted_urls() {
        let url = "http://127.0.0.1:5/?code=a%2Fb+c&state=s1#frag";
        assert_eq!(query_param(url, "code").as_deref(), Some("a/b c"));
        assert_eq!(query_param(url, "state").as_deref(), Some("s1"));
        assert_eq!(query_param(url, "nope"), None);
        assert_eq!(decode(&encode("a b/ü")), "a b/ü");
    }
}
