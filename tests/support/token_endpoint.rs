//! An OAuth2 token endpoint of our own (axum on loopback, on its own thread) issuing short-lived
//! HS256 JWTs that the test Dovecot's `passdb oauth2` accepts: refresh tokens with rotation
//! and reuse detection, client credentials with a secret or a certificate assertion
//! (private_key_jwt, RS256 `x5t` / PS256 `x5t#S256`, verified with OpenSSL here), JWT bearer
//! for service accounts, and fault injection (500 with Retry-After, `invalid_grant`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A registered client (app).
#[derive(Clone, Default)]
pub struct Client {
    pub secret: Option<String>,
    /// The certificate's public key and its SHA-1 and SHA-256 thumbprints (base64url).
    pub cert: Option<(PKey<Public>, String, String)>,
    /// The mailbox app-only tokens of this client are for (the token's `email`).
    pub user: String,
    /// Whether a refresh answers with a new refresh token and kills the old one.
    pub rotate: bool,
    /// With `rotate`: the old refresh token stays valid too (as Microsoft keeps it for a
    /// while), so presenting it again is not reuse.
    pub keep_old: bool,
    /// Client-credentials tokens are app-only (Microsoft's `idtyp: app`, `appid`), for every
    /// mailbox the server grants the app, instead of for `user`.
    pub app_only: bool,
}

/// What the next requests get instead of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 500 with `Retry-After: 1`.
    ServerError,
    /// 400 `invalid_grant`.
    InvalidGrant,
}

#[derive(Default)]
pub struct Shared {
    pub clients: Mutex<HashMap<String, Client>>,
    /// Live refresh tokens: token → (client id, user).
    pub refresh_tokens: Mutex<HashMap<String, (String, String)>>,
    /// Refresh tokens that were rotated away; presenting one is reuse.
    pub retired: Mutex<Vec<String>>,
    /// Service accounts: `client_email` → public key.
    pub service_accounts: Mutex<HashMap<String, PKey<Public>>>,
    /// Applied to every request while set.
    pub fault: Mutex<Option<Fault>>,
    /// While set, every answer is held back this long after it was decided (a refresh has
    /// rotated already): a client killed meanwhile never learns its new refresh token.
    pub stall: Mutex<Option<std::time::Duration>>,
    /// Answers held back by `stall` so far.
    pub stalled: std::sync::atomic::AtomicU64,
    /// Access tokens issued, by grant type.
    pub issued: Mutex<BTreeMap<String, u64>>,
    /// Requests refused, with the reason (for assertions).
    pub refused: Mutex<Vec<String>>,
    pub lifetime_secs: AtomicU64,
    /// Bytes of padding claim in each access token (real Microsoft tokens run to 2-3 KB).
    pub pad: AtomicU64,
    /// Who signs in through the device and browser flows.
    pub login_user: Mutex<String>,
    /// Device codes: code → (client id, polls so far).
    devices: Mutex<HashMap<String, (String, u32)>>,
    /// Authorization codes: code → (client id, redirect_uri, PKCE challenge).
    codes: Mutex<HashMap<String, (String, String, String)>>,
    key: Vec<u8>,
    url: Mutex<String>,
}

pub struct TokenEndpoint {
    /// The token URL.
    pub url: String,
    pub shared: Arc<Shared>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn error(status: u16, code: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}

/// Verifies a compact RS256/PS256 JWS with `key`; gives (header, claims).
fn verify(jwt: &str, key: &PKey<Public>) -> Result<(serde_json::Value, serde_json::Value), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWS".into());
    }
    let json = |p: &str| -> Result<serde_json::Value, String> {
        serde_json::from_slice(&B64URL.decode(p).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    let (header, claims) = (json(parts[0])?, json(parts[1])?);
    let sig = B64URL.decode(parts[2]).map_err(|e| e.to_string())?;
    let mut v = Verifier::new(MessageDigest::sha256(), key).map_err(|e| e.to_string())?;
    match header["alg"].as_str() {
        Some("RS256") => v.set_rsa_padding(Padding::PKCS1).unwrap(),
        Some("PS256") => {
            v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            v.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        }
        other => return Err(format!("alg {other:?}")),
    }
    v.update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .unwrap();
    if !v.verify(&sig).unwrap_or(false) {
        return Err("bad signature".into());
    }
    if claims["exp"].as_u64().unwrap_or(0) <= now() {
        return Err("expired assertion".into());
    }
    Ok((header, claims))
}

impl Shared {
    fn refuse(&self, why: String) {
        self.refused.lock().unwrap().push(why);
    }

    /// An access token for `user` that Dovecot accepts (`typ: JWT`, `sub`, `exp`, `email`).
    fn access_token(&self, grant: &str, user: &str) -> serde_json::Value {
        self.token_with(
            grant,
            serde_json::json!({"sub": user, "email": user, "idtyp": "user"}),
        )
    }

    /// An app-only token of `client`.
    fn app_token(&self, client: &str) -> serde_json::Value {
        self.token_with(
            "client_credentials",
            serde_json::json!({"sub": client, "email": client, "idtyp": "app", "appid": client}),
        )
    }

    fn token_with(&self, grant: &str, mut claims: serde_json::Value) -> serde_json::Value {
        let lifetime = self.lifetime_secs.load(Ordering::SeqCst);
        let t = now();
        let pad = "p".repeat(self.pad.load(Ordering::SeqCst) as usize);
        claims["iat"] = (t - 1).into();
        claims["exp"] = (t + lifetime).into();
        claims["jti"] = hex::encode(rand::random::<[u8; 8]>()).into();
        claims["pad"] = pad.into();
        let token = popbridge::oauth2::jwt::sign(
            popbridge::oauth2::jwt::Alg::Hs256,
            popbridge::oauth2::jwt::Key::Hmac(&self.key),
            Default::default(),
            &claims,
        )
        .unwrap();
        *self.issued.lock().unwrap().entry(grant.into()).or_default() += 1;
        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})
    }

    /// Checks the client's secret or assertion; gives the client.
    #[allow(clippy::result_large_err)] // test code: the error is the response to send
    fn authenticate_client(&self, f: &HashMap<String, String>) -> Result<Client, Response> {
        let id = f.get("client_id").cloned().unwrap_or_default();
        let Some(client) = self.clients.lock().unwrap().get(&id).cloned() else {
            return Err(error(401, "invalid_client", "unknown client"));
        };
        if let Some(secret) = &client.secret {
            if f.get("client_secret") != Some(secret) {
                return Err(error(
                    401,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret",
                ));
            }
        } else if let Some((key, x5t, x5t256)) = &client.cert {
            let assertion = f.get("client_assertion").cloned().unwrap_or_default();
            if f.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return Err(error(400, "invalid_request", "client_assertion_type"));
            }
            let (header, claims) = verify(&assertion, key)
                .map_err(|e| error(401, "invalid_client", &format!("assertion: {e}")))?;
            let thumb_ok = match header["alg"].as_str() {
                Some("PS256") => header["x5t#S256"].as_str() == Some(x5t256),
                _ => header["x5t"].as_str() == Some(x5t),
            };
            let url = self.url.lock().unwrap().clone();
            if !thumb_ok
                || claims["aud"].as_str() != Some(&url)
                || claims["iss"].as_str() != Some(&id)
                || claims["sub"].as_str() != Some(&id)
                || claims["jti"].as_str().is_none()
            {
                return Err(error(
                    401,
                    "invalid_client",
                    "assertion claims or thumbprint",
                ));
            }
        }
        Ok(client)
    }

    fn token(&self, body: &[u8]) -> Response {
        if let Some(fault) = *self.fault.lock().unwrap() {
            self.refuse(format!("fault {fault:?}"));
            return match fault {
                Fault::ServerError => {
                    let mut r = error(500, "server_error", "injected");
                    r.headers_mut().insert("retry-after", "1".parse().unwrap());
                    r
                }
                Fault::InvalidGrant => error(400, "invalid_grant", "AADSTS70008: injected"),
            };
        }
        let f = form(body);
        let grant = f.get("grant_type").cloned().unwrap_or_default();
        match grant.as_str() {
            "client_credentials" => match self.authenticate_client(&f) {
                Ok(client) if client.app_only => {
                    let id = f.get("client_id").cloned().unwrap_or_default();
                    axum::Json(self.app_token(&id)).into_response()
                }
                Ok(client) => axum::Json(self.access_token(&grant, &client.user)).into_response(),
                Err(r) => {
                    self.refuse("client_credentials: client".into());
                    r
                }
            },
            "refresh_token" => {
                let client = match self.authenticate_client(&f) {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                let presented = f.get("refresh_token").cloned().unwrap_or_default();
                let mut live = self.refresh_tokens.lock().unwrap();
                let Some((owner, user)) = live.get(&presented).cloned() else {
                    let reuse = self.retired.lock().unwrap().contains(&presented);
                    drop(live);
                    self.refuse(format!("refresh: unknown token (reuse: {reuse})"));
                    return error(
                        400,
                        "invalid_grant",
                        "AADSTS70008: The refresh token has expired or was revoked",
                    );
                };
                if owner != f.get("client_id").cloned().unwrap_or_default() {
                    return error(400, "invalid_grant", "token of another client");
                }
                let mut answer = self.access_token(&grant, &user);
                if client.rotate && !client.keep_old {
                    live.remove(&presented);
                    self.retired.lock().unwrap().push(presented);
                }
                if client.rotate {
                    let next = format!("rt-{}", hex::encode(rand::random::<[u8; 24]>()));
                    live.insert(next.clone(), (owner, user));
                    answer["refresh_token"] = next.into();
                }
                axum::Json(answer).into_response()
            }
            "urn:ietf:params:oauth:grant-type:device_code" => {
                let code = f.get("device_code").cloned().unwrap_or_default();
                let mut devices = self.devices.lock().unwrap();
                let Some((client, polls)) = devices.get_mut(&code) else {
                    return error(400, "expired_token", "unknown device code");
                };
                *polls += 1;
                // The user signs in while the client polls: pending once, then done.
                if *polls < 2 {
                    return error(400, "authorization_pending", "waiting for the user");
                }
                let client = client.clone();
                devices.remove(&code);
                drop(devices);
                self.login_tokens(&grant, &client)
            }
            "authorization_code" => {
                let code = f.get("code").cloned().unwrap_or_default();
                let Some((client, redirect, challenge)) = self.codes.lock().unwrap().remove(&code)
                else {
                    return error(400, "invalid_grant", "unknown or used code");
                };
                let verifier = f.get("code_verifier").cloned().unwrap_or_default();
                let computed = B64URL.encode(openssl::sha::sha256(verifier.as_bytes()));
                if f.get("redirect_uri") != Some(&redirect)
                    || f.get("client_id") != Some(&client)
                    || computed != challenge
                {
                    self.refuse("authorization_code: PKCE or redirect".into());
                    return error(400, "invalid_grant", "PKCE verifier or redirect_uri");
                }
                self.login_tokens(&grant, &client)
            }
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                let assertion = f.get("assertion").cloned().unwrap_or_default();
                let iss = assertion
                    .split('.')
                    .nth(1)
                    .and_then(|p| B64URL.decode(p).ok())
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|c| c["iss"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let Some(key) = self.service_accounts.lock().unwrap().get(&iss).cloned() else {
                    return error(400, "invalid_grant", "unknown service account");
                };
                let url = self.url.lock().unwrap().clone();
                match verify(&assertion, &key) {
                    Ok((_, claims)) if claims["aud"].as_str() == Some(&url) => {
                        let sub = claims["sub"].as_str().unwrap_or_default().to_owned();
                        if sub.is_empty() {
                            return error(400, "invalid_grant", "no sub");
                        }
                        axum::Json(self.access_token(&grant, &sub)).into_response()
                    }
                    Ok(_) => error(400, "invalid_grant", "aud"),
                    Err(e) => error(400, "invalid_grant", &e),
                }
            }
            other => error(400, "unsupported_grant_type", other),
        }
    }
}

impl Shared {
    /// An access token and a new live refresh token for the signed-in user.
    fn login_tokens(&self, grant: &str, client: &str) -> Response {
        let user = self.login_user.lock().unwrap().clone();
        let mut answer = self.access_token(grant, &user);
        let rt = format!("rt-{}", hex::encode(rand::random::<[u8; 24]>()));
        self.refresh_tokens
            .lock()
            .unwrap()
            .insert(rt.clone(), (client.into(), user));
        answer["refresh_token"] = rt.into();
        axum::Json(answer).into_response()
    }
}

async fn device(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let f = form(&body);
    let client = f.get("client_id").cloned().unwrap_or_default();
    let code = hex::encode(rand::random::<[u8; 16]>());
    s.devices.lock().unwrap().insert(code.clone(), (client, 0));
    let base = s.url.lock().unwrap().replace("/token", "");
    axum::Json(serde_json::json!({
        "device_code": code, "user_code": "WDJB-MJHT", "verification_uri": format!("{base}/verify"),
        "expires_in": 60, "interval": 1,
    }))
    .into_response()
}

/// The user's sign-in: straight to the redirect with a code (consent is implied).
async fn authorize(State(s): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let q = form(uri.query().unwrap_or_default().as_bytes());
    let (Some(client), Some(redirect), Some(challenge), Some(state)) = (
        q.get("client_id"),
        q.get("redirect_uri"),
        q.get("code_challenge"),
        q.get("state"),
    ) else {
        return error(400, "invalid_request", "missing parameters");
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return error(400, "invalid_request", "PKCE S256 required");
    }
    let code = hex::encode(rand::random::<[u8; 16]>());
    s.codes.lock().unwrap().insert(
        code.clone(),
        (client.clone(), redirect.clone(), challenge.clone()),
    );
    let location = format!("{redirect}?code={code}&state={state}");
    (StatusCode::FOUND, [("location", location)]).into_response()
}

/// The OpenID discovery document naming our endpoints.
async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    let token = s.url.lock().unwrap().clone();
    let base = token.trim_end_matches("/token").to_owned();
    axum::Json(serde_json::json!({
        "issuer": base, "token_endpoint": token,
        "device_authorization_endpoint": format!("{base}/device"),
        "authorization_endpoint": format!("{base}/authorize"),
        "revocation_endpoint": format!("{base}/revoke"),
    }))
    .into_response()
}

/// RFC 7009: the token is dead from now on (200 whether or not it was known).
async fn revoke(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let f = form(&body);
    if let Some(t) = f.get("token") {
        s.refresh_tokens.lock().unwrap().remove(t);
    }
    StatusCode::OK.into_response()
}

async fn token(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let answer = s.token(&body);
    let stall = *s.stall.lock().unwrap();
    if let Some(d) = stall {
        s.stalled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(d).await;
    }
    answer
}

impl TokenEndpoint {
    /// Starts on a free loopback port; tokens are signed with `key` and live `lifetime_secs`.
    pub fn start(key: &[u8], lifetime_secs: u64) -> Self {
        let shared = Arc::new(Shared {
            key: key.to_vec(),
            lifetime_secs: AtomicU64::new(lifetime_secs),
            ..Default::default()
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let state = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}/token", listener.local_addr().unwrap());
                *state.url.lock().unwrap() = url.clone();
                tx.send(url).unwrap();
                let app = axum::Router::new()
                    .route("/token", axum::routing::post(token))
                    .route("/device", axum::routing::post(device))
                    .route("/authorize", axum::routing::get(authorize))
                    .route("/revoke", axum::routing::post(revoke))
                    .route(
                        "/.well-known/openid-configuration",
                        axum::routing::get(discovery),
                    )
                    .with_state(state);
                let _ = axum::serve(listener, app).await;
            });
        });
        let url = rx.recv().unwrap();
        Self { url, shared }
    }

    pub fn add_client(&self, id: &str, client: Client) {
        self.shared
            .clients
            .lock()
            .unwrap()
            .insert(id.into(), client);
    }

    /// A refresh token for `user` from `client` (as a login would give).
    pub fn grant_refresh_token(&self, client: &str, user: &str) -> String {
        let token = format!("rt-{}", hex::encode(rand::random::<[u8; 24]>()));
        self.shared
            .refresh_tokens
            .lock()
            .unwrap()
            .insert(token.clone(), (client.into(), user.into()));
        token
    }

    pub fn is_live(&self, refresh_token: &str) -> bool {
        self.shared
            .refresh_tokens
            .lock()
            .unwrap()
            .contains_key(refresh_token)
    }

    /// Revokes every refresh token (a password change, an admin's revocation).
    pub fn revoke_all(&self) {
        self.shared.refresh_tokens.lock().unwrap().clear();
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Holds every answer back for `d` (see [`Shared::stall`]); `None` ends it.
    pub fn set_stall(&self, d: Option<std::time::Duration>) {
        *self.shared.stall.lock().unwrap() = d;
    }

    pub fn stalled(&self) -> u64 {
        self.shared
            .stalled
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn issued(&self, grant: &str) -> u64 {
        self.shared
            .issued
            .lock()
            .unwrap()
            .get(grant)
            .copied()
            .unwrap_or(0)
    }

    pub fn refused(&self) -> Vec<String> {
        self.shared.refused.lock().unwrap().clone()
    }

    pub fn add_service_account(&self, email: &str, key: PKey<Public>) {
        self.shared
            .service_accounts
            .lock()
            .unwrap()
            .insert(email.into(), key);
    }
}

/// A certificate client: a self-signed certificate and its key as PEM files in `dir`, and the
/// [`Client`] that trusts it.
pub fn certificate_client(
    dir: &std::path::Path,
    user: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Client) {
    use openssl::x509::{X509NameBuilder, X509};
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = PKey::from_rsa(rsa).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "popbridge-test-app")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let (cert_path, key_path) = (dir.join("app.crt"), dir.join("app.key"));
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
    let x5t = B64URL.encode(cert.digest(MessageDigest::sha1()).unwrap());
    let x5t256 = B64URL.encode(cert.digest(MessageDigest::sha256()).unwrap());
    let client = Client {
        cert: Some((public, x5t, x5t256)),
        user: user.into(),
        ..Default::default()
    };
    (cert_path, key_path, client)
}

/// A Google-style service-account JSON key file in `dir` whose `token_uri` is `url`; gives
/// its path and public key.
pub fn service_account(
    dir: &std::path::Path,
    email: &str,
    url: &str,
) -> (std::path::PathBuf, PKey<Public>) {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let json = serde_json::json!({
        "type": "service_account", "client_email": email, "private_key": pem,
        "private_key_id": "kid-1", "token_uri": url, "client_id": "1234",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let public = PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap();
    (path, public)
}
