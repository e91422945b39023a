//! A named OAuth2 credential as written (`oauth2:` at the top of the file, or inline in a
//! mailbox) and validated: the provider preset fills in the token URL and scopes, key files
//! are read and checked, and the token store path is fixed.

use super::jwt::Alg;
use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use crate::config_value::resolve;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Token endpoint timeout when none is given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Fraction of a token's lifetime after which it is refreshed.
const DEFAULT_REFRESH_AT: f64 = 0.75;

/// `provider:` presets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Microsoft identity platform (Exchange Online): `tenant` picks the token URL.
    Microsoft,
    /// Google (Gmail, Workspace).
    Google,
    /// Any OAuth2 server: `token_url` is required.
    #[default]
    Generic,
}

/// `grant:` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawGrant {
    /// Delegated: a refresh token from a one-time login, rotated by Microsoft on each use.
    RefreshToken,
    /// App-only: the client's own secret or certificate.
    ClientCredentials,
    /// Google service account with domain-wide delegation (`sub` = the mailbox).
    JwtBearer,
}

/// One credential as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// `microsoft`, `google` or `generic` (default).
    #[serde(default)]
    pub provider: Option<Provider>,
    /// `refresh_token`, `client_credentials` or `jwt_bearer`.
    pub grant: RawGrant,
    /// Microsoft tenant (id or domain); default `common` for delegated logins.
    #[serde(default)]
    pub tenant: Option<Interpolated>,
    /// Overrides the provider's token URL; `generic` needs it or `issuer`.
    #[serde(default)]
    pub token_url: Option<Interpolated>,
    /// For `generic`: the issuer whose discovery document
    /// (`<issuer>/.well-known/openid-configuration`) names the endpoints, read at first use.
    #[serde(default)]
    pub issuer: Option<Interpolated>,
    /// The application (client) id; not needed for `jwt_bearer`.
    #[serde(default)]
    pub client_id: Option<Interpolated>,
    /// Client secret (`${VAR}`), for confidential clients.
    #[serde(default)]
    pub client_secret: Option<SecretValue>,
    /// PEM certificate registered with the app, for a signed client assertion
    /// (private_key_jwt) instead of a secret; needs `private_key_file`.
    #[serde(default)]
    pub certificate_file: Option<String>,
    /// PEM private key of `certificate_file`.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// `rs256` (default, with `x5t`) or `ps256` (with `x5t#S256`).
    #[serde(default)]
    pub assertion_alg: Option<Alg>,
    /// Google service-account JSON key file, for `jwt_bearer`.
    #[serde(default)]
    pub service_account_file: Option<String>,
    /// The first refresh token (`${VAR}`); later ones are kept in the token store.
    #[serde(default)]
    pub refresh_token: Option<SecretValue>,
    /// Space-separated scopes; default from the provider and grant.
    #[serde(default)]
    pub scope: Option<String>,
    /// Refresh after this fraction of a token's lifetime (default 0.75; at most 5 minutes
    /// before expiry in any case).
    #[serde(default)]
    pub refresh_at: Option<f64>,
    /// Token endpoint timeout (default 30s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Device authorization endpoint for `oauth2 login` (RFC 8628); preset for Microsoft.
    #[serde(default)]
    pub device_authorization_url: Option<Interpolated>,
    /// Authorization endpoint for the browser login with PKCE; preset for Microsoft, Google.
    #[serde(default)]
    pub authorization_url: Option<Interpolated>,
    /// Token revocation endpoint (RFC 7009) for `oauth2 logout`; preset for Google
    /// (Microsoft has none: sessions are revoked in Entra ID).
    #[serde(default)]
    pub revocation_url: Option<Interpolated>,
}

/// How the client proves who it is to the token endpoint.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// A public client (device or browser login): only `client_id`.
    None,
    Secret(Secret),
    /// private_key_jwt (RFC 7523): a signed assertion naming the certificate.
    Certificate {
        /// The PEM private key.
        key_pem: Secret,
        /// The certificate, DER.
        cert_der: Vec<u8>,
        alg: Alg,
    },
}

/// The grant and what it needs.
#[derive(Clone, Debug)]
pub enum Grant {
    RefreshToken {
        /// The configured first refresh token, if any.
        seed: Option<Secret>,
    },
    ClientCredentials,
    JwtBearer {
        /// The service account (`client_email`): the assertion's issuer.
        issuer: String,
        key_pem: Secret,
        key_id: Option<String>,
    },
}

/// A validated credential.
#[derive(Clone, Debug)]
pub struct CredentialSettings {
    pub name: String,
    pub provider: Provider,
    /// The token endpoint; with discovery, the issuer (which names the credential's tokens
    /// in the store; the endpoint itself comes from the discovery document).
    pub token_url: String,
    /// `<issuer>/.well-known/openid-configuration`, when the endpoints are discovered.
    pub discovery_url: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub client_auth: ClientAuth,
    pub grant: Grant,
    pub refresh_at: f64,
    pub timeout: Duration,
    /// Where the refresh token lives (`<state dir>/oauth2/<name>.json`).
    pub store_path: PathBuf,
    /// For `oauth2 login`: the device flow, if the provider offers it for mail.
    pub device_url: Option<String>,
    /// For `oauth2 login`: the browser flow.
    pub authorize_url: Option<String>,
    /// For `oauth2 logout`.
    pub revocation_url: Option<String>,
}

fn read(base: &Path, file: &str, what: &str) -> Result<(PathBuf, String), String> {
    let path = resolve(base, file);
    std::fs::read_to_string(&path)
        .map(|text| (path.clone(), text))
        .map_err(|e| format!("`{what}`: cannot read {}: {e}", path.display()))
}

impl RawCredential {
    /// Validate; `base` is the config file's directory, `store_dir` where tokens are kept.
    pub fn validate(
        self,
        name: &str,
        base: &Path,
        store_dir: &Path,
    ) -> Result<CredentialSettings, String> {
        let provider = self.provider.unwrap_or_default();
        let client_id = self.client_id.map(Interpolated::into_string);
        let (client_auth, grant, issuer_url) = match self.grant {
            RawGrant::JwtBearer => {
                let file = self
                    .service_account_file
                    .ok_or("`grant: jwt_bearer` needs `service_account_file` (the JSON key)")?;
                let (path, text) = read(base, &file, "service_account_file")?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
                let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                let (Some(issuer), Some(key)) = (field("client_email"), field("private_key"))
                else {
                    return Err(format!(
                        "{}: a service-account key needs `client_email` and `private_key`",
                        path.display()
                    ));
                };
                openssl::pkey::PKey::private_key_from_pem(key.as_bytes()).map_err(|e| {
                    format!("{}: `private_key` is not a PEM key: {e}", path.display())
                })?;
                let grant = Grant::JwtBearer {
                    issuer,
                    key_pem: Secret::new(key),
                    key_id: field("private_key_id"),
                };
                (ClientAuth::None, grant, field("token_uri"))
            }
            g => {
                let auth = match (
                    self.client_secret,
                    self.certificate_file,
                    self.private_key_file,
                ) {
                    (Some(_), Some(_), _) => {
                        return Err("give `client_secret` or `certificate_file`, not both".into())
                    }
                    (Some(s), None, None) => ClientAuth::Secret(s.into_secret()),
                    (None, Some(cert), Some(key)) => {
                        let (cpath, cert) = read(base, &cert, "certificate_file")?;
                        let (kpath, key) = read(base, &key, "private_key_file")?;
                        let cert_der = openssl::x509::X509::from_pem(cert.as_bytes())
                            .and_then(|c| c.to_der())
                            .map_err(|e| {
                                format!("{}: not a PEM certificate: {e}", cpath.display())
                            })?;
                        openssl::pkey::PKey::private_key_from_pem(key.as_bytes()).map_err(|e| {
                            format!("{}: not a PEM private key: {e}", kpath.display())
                        })?;
                        ClientAuth::Certificate {
                            key_pem: Secret::new(key),
                            cert_der,
                            alg: self.assertion_alg.unwrap_or(Alg::Rs256),
                        }
                    }
                    (None, Some(_), None) | (_, None, Some(_)) => {
                        return Err("`certificate_file` and `private_key_file` go together".into())
                    }
                    (None, None, _) => ClientAuth::None,
                };
                if client_id.as_deref().is_none_or(str::is_empty) {
                    return Err("`client_id` is required".into());
                }
                let grant = match g {
                    RawGrant::ClientCredentials => {
                        if matches!(auth, ClientAuth::None) {
                            return Err("`grant: client_credentials` needs `client_secret` or \
                                        `certificate_file` + `private_key_file`"
                                .into());
                        }
                        Grant::ClientCredentials
                    }
                    _ => Grant::RefreshToken {
                        seed: self.refresh_token.map(SecretValue::into_secret),
                    },
                };
                (auth, grant, None)
            }
        };
        if let Some(alg) = self.assertion_alg {
            if alg == Alg::Hs256 {
                return Err("`assertion_alg` must be `rs256` or `ps256`".into());
            }
        }
        let tenant = self.tenant.map(Interpolated::into_string);
        let token_url = match (self.token_url.map(Interpolated::into_string), provider) {
            (Some(url), _) => url,
            (None, _) if issuer_url.is_some() => issuer_url.unwrap_or_default(),
            (None, Provider::Microsoft) => {
                let tenant = match (&tenant, &grant) {
                    (Some(t), _) => t.clone(),
                    (None, Grant::ClientCredentials) => {
                        return Err("app-only Microsoft logins need `tenant` (the tenant id or \
                                    domain; `common` is not allowed)"
                            .into())
                    }
                    (None, _) => "common".into(),
                };
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
            (None, Provider::Google) => "https://oauth2.googleapis.com/token".into(),
            (None, Provider::Generic) => match &self.issuer {
                Some(issuer) => issuer.as_str().trim_end_matches('/').to_owned(),
                None => return Err("`provider: generic` needs `token_url` or `issuer`".into()),
            },
        };
        // Discovery when the issuer stands in for the token URL.
        let discovery_url = self
            .issuer
            .filter(|i| i.as_str().trim_end_matches('/') == token_url)
            .map(|i| {
                format!(
                    "{}/.well-known/openid-configuration",
                    i.as_str().trim_end_matches('/')
                )
            });
        if !(token_url.starts_with("https://")
            || token_url.starts_with("http://127.0.0.1")
            || token_url.starts_with("http://localhost"))
        {
            return Err(format!(
                "`token_url` {token_url:?} must be https (plain http only on loopback)"
            ));
        }
        let scope = self.scope.unwrap_or_else(|| {
            match (provider, &grant) {
                (Provider::Microsoft, Grant::ClientCredentials) => {
                    "https://outlook.office365.com/.default"
                }
                (Provider::Microsoft, _) => {
                    "offline_access https://outlook.office.com/POP.AccessAsUser.All \
                     https://outlook.office.com/IMAP.AccessAsUser.All"
                }
                (Provider::Google, _) => "https://mail.google.com/",
                (Provider::Generic, _) => "",
            }
            .to_owned()
        });
        let refresh_at = self.refresh_at.unwrap_or(DEFAULT_REFRESH_AT);
        if !(0.1..=0.95).contains(&refresh_at) {
            return Err("`refresh_at` must be between 0.1 and 0.95".into());
        }
        let ms = |path: &str| {
            let tenant = tenant.as_deref().unwrap_or("common");
            format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/{path}")
        };
        // Google turns the device flow down for Gmail scopes: browser only.
        let device_url = match (self.device_authorization_url, provider) {
            (Some(u), _) => Some(u.into_string()),
            (None, Provider::Microsoft) => Some(ms("devicecode")),
            (None, _) => None,
        };
        let authorize_url = match (self.authorization_url, provider) {
            (Some(u), _) => Some(u.into_string()),
            (None, Provider::Microsoft) => Some(ms("authorize")),
            (None, Provider::Google) => Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            (None, Provider::Generic) => None,
        };
        let revocation_url = match (self.revocation_url, provider) {
            (Some(u), _) => Some(u.into_string()),
            (None, Provider::Google) => Some("https://oauth2.googleapis.com/revoke".into()),
            (None, _) => None,
        };
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, Duration::from);
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0".into());
        }
        Ok(CredentialSettings {
            name: name.to_owned(),
            provider,
            token_url,
            discovery_url,
            client_id: client_id.unwrap_or_default(),
            scope,
            client_auth,
            grant,
            refresh_at,
            timeout,
            store_path: store_dir.join(format!("{name}.json")),
            device_url,
            authorize_url,
            revocation_url,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::config::{load_str_with_env, ConfigError, SinkKind};
    use crate::pop3::{AuthMethod, InitialResponse, OAuthMechanism};
    use std::path::Path;

    fn load(text: &str) -> Result<crate::config::Loaded, ConfigError> {
        load_str_with_env(text, Path::new("/etc/pb/config.yaml"), |v| {
            (v == "RT").then(|| "seed-refresh".to_owned())
        })
    }

    const TAIL: &str = "
sinks:
  - name: out
    type: maildir
    path: /tmp/pb-out
  - name: imap
    type: imap
    host: imap.example.com
    oauth2: m365
    username: '{mailbox}@example.com'
";

    #[test]
    fn named_credentials_are_shared_and_microsoft_defaults_to_two_step() {
        let text = format!(
            "state:\n  path: /var/lib/pb/state.db\noauth2:\n  m365:\n    provider: microsoft\n    grant: refresh_token\n    client_id: app\n    refresh_token: ${{RT}}\nmailboxes:\n  - name: a\n    pop3:\n      host: outlook.office365.com\n      username: a@example.com\n      oauth2: m365\n    sinks: [out, imap]\n  - name: b\n    pop3:\n      host: outlook.office365.com\n      username: b@example.com\n      oauth2: m365\n      auth: xoauth2\n    sinks: [out]\n{TAIL}"
        );
        let loaded = load(&text).unwrap();
        let c = &loaded.config;
        let (AuthMethod::OAuth2(a), AuthMethod::OAuth2(b)) =
            (&c.mailboxes[0].pop3.auth, &c.mailboxes[1].pop3.auth)
        else {
            panic!("oauth2 logins expected");
        };
        assert_eq!(a.mechanism, OAuthMechanism::Auto);
        assert_eq!(b.mechanism, OAuthMechanism::XOAuth2);
        assert_eq!(a.initial_response, InitialResponse::Never);
        let (sa, sb) = (a.token.as_ref().unwrap(), b.token.as_ref().unwrap());
        assert!(
            std::sync::Arc::ptr_eq(sa, sb),
            "one token cache per credential"
        );
        let s = sa.settings();
        assert_eq!(
            s.token_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert!(s.scope.contains("POP.AccessAsUser.All"));
        assert_eq!(s.store_path, Path::new("/var/lib/pb/oauth2/m365.json"));
        let SinkKind::Imap(imap) = &c.sinks[1].kind else {
            panic!("imap sink");
        };
        assert!(std::sync::Arc::ptr_eq(imap.oauth2.as_ref().unwrap(), sa));
        assert!(!format!("{c:?}").contains("seed-refresh"));
    }

    #[test]
    fn inline_credentials_reject_unknown_keys_and_unknown_names_are_listed() {
        let inline = format!(
            "state:\n  path: /s/state.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      oauth2:\n        grant: client_credentials\n        token_url: https://idp.example.com/token\n        client_id: c\n        clinet_secret: x\n    sinks: [out]\n{TAIL}"
        );
        let e = load(&inline).err().unwrap().to_string();
        assert!(e.contains("clinet_secret") && e.contains(":12:"), "{e}");
        let unknown = format!(
            "state:\n  path: /s/state.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      oauth2: nope\n    sinks: [out]\n{TAIL}"
        );
        let e = load(&unknown).err().unwrap().to_string();
        assert!(e.contains("unknown OAuth2 credential \"nope\""), "{e}");
        assert!(e.contains("unknown OAuth2 credential \"m365\""), "{e}");
    }
}
