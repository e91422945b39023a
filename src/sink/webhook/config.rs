//! Webhook sink configuration: raw keys as written, then validated settings.

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use crate::config_value::resolve;
use crate::secret::Secret;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the request body is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A JSON document (schema `schemas/webhook-payload.v1.json`).
    #[default]
    Json,
    /// The message itself as `message/rfc822`, streamed, metadata in headers.
    Raw,
}

/// `type: webhook` keys (besides the common `name`, `type`, `retry`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The endpoint that receives a POST per message. `${VAR}` allowed.
    pub url: Interpolated,
    /// `json` (default) or `raw`.
    #[serde(default)]
    pub format: Option<Format>,
    /// Standard Webhooks signing secret(s), `whsec_` + base64. Several during a rotation: every
    /// request then carries one signature per secret. Without a secret requests are unsigned.
    #[serde(default)]
    pub secret: Option<Secrets>,
    /// Extra request headers; values are secrets (never logged) and may use `${VAR}`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretValue>,
    /// Time for one request, connect to last response byte (default 30s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Most requests in flight to this endpoint at once (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Attachments up to this size are sent base64-encoded in the JSON; larger ones as metadata
    /// only (default 10485760, 10 MiB).
    #[serde(default)]
    pub max_inline_attachment_bytes: Option<u64>,
    /// Also send the whole message base64-encoded in the JSON's `raw` field (default false).
    #[serde(default)]
    pub include_raw: Option<bool>,
    /// Extra CA bundle (PEM) to trust, for private CAs.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// Private key (PEM, PKCS#8) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
    /// Verify the server certificate (default true). `false` is logged as a warning.
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// Accept a plain `http://` url to a host other than this machine (default false): the
    /// message, its signature and `headers` would cross the network unencrypted.
    #[serde(default)]
    pub allow_plaintext: Option<bool>,
    /// `json` only: attachments over `max_inline_attachment_bytes` (and with `raw: true` the
    /// whole message) go to this S3 bucket, and the payload carries a link instead. Off
    /// without it.
    #[serde(default)]
    pub offload: Option<crate::sink::offload::OffloadConfig>,
}

/// One secret or a list of them.
#[derive(Debug)]
pub struct Secrets(pub Vec<Secret>);

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secrets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a `whsec_` secret or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secrets, E> {
                let one = SecretValue::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(Secrets(vec![one.into_secret()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Secrets, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<SecretValue>()? {
                    out.push(s.into_secret());
                }
                Ok(Secrets(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Validated webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub format: Format,
    /// Decoded HMAC keys (the base64 after `whsec_`).
    pub keys: Vec<Secret>,
    pub headers: Vec<(reqwest::header::HeaderName, Secret)>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_inline_attachment_bytes: u64,
    pub include_raw: bool,
    pub ca_file: Option<PathBuf>,
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub tls_verify: bool,
    pub offload: Option<crate::sink::offload::OffloadSettings>,
}

/// Validated settings and what the operator should be warned about.
pub type Validated = (WebhookSettings, Vec<String>);

/// The HMAC key inside a `whsec_` secret.
pub fn decode_secret(secret: &Secret) -> Result<Secret, String> {
    use base64::Engine;
    let text = secret.expose();
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "`secret` must be `whsec_` followed by base64".to_string())?;
    if bytes.len() < 16 {
        return Err("`secret` is too short: use at least 16 random bytes (24 recommended)".into());
    }
    // Kept as base64 text inside a Secret; decoded again where the HMAC is keyed.
    Ok(Secret::new(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

impl WebhookSinkConfig {
    /// Validate; `base` is the config file's directory, for relative paths.
    pub fn validate(self, base: &Path) -> Result<Validated, String> {
        let url = reqwest::Url::parse(self.url.as_str())
            .map_err(|e| format!("`url` is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`url` must be http or https, not {}", url.scheme()));
        }
        let plaintext_warning =
            crate::sink::http::check_plaintext(&url, "url", self.allow_plaintext.unwrap_or(false))?;
        let keys = self
            .secret
            .map(|s| s.0)
            .unwrap_or_default()
            .iter()
            .map(decode_secret)
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            let h = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`headers`: {name:?} is not a valid header name"))?;
            if reqwest::header::HeaderValue::from_str(value.0.expose()).is_err() {
                return Err(format!(
                    "`headers.{name}`: the value is not a valid header value"
                ));
            }
            headers.push((h, value.into_secret()));
        }
        let concurrency = self.concurrency.unwrap_or(8);
        if concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        let timeout = self.timeout.map_or(Duration::from_secs(30), |d| d.0);
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0".into());
        }
        let client_identity = match (self.client_cert, self.client_key) {
            (Some(c), Some(k)) => Some((resolve(base, &c), resolve(base, &k))),
            (None, None) => None,
            _ => return Err("`client_cert` and `client_key` go together".into()),
        };
        let mut warnings: Vec<String> = plaintext_warning.into_iter().collect();
        let format = self.format.unwrap_or_default();
        let offload = match self.offload {
            None => None,
            Some(_) if format == Format::Raw => {
                return Err(
                    "`offload` needs `format: json` (a raw body is the message itself)".into(),
                )
            }
            Some(o) => {
                let (o, w) = o.validate(base)?;
                warnings.extend(w);
                Some(o)
            }
        };
        let settings = WebhookSettings {
            url,
            format,
            keys,
            headers,
            timeout,
            concurrency,
            max_inline_attachment_bytes: self.max_inline_attachment_bytes.unwrap_or(10 << 20),
            include_raw: self.include_raw.unwrap_or(false),
            ca_file: self.ca_file.map(|p| resolve(base, &p)),
            client_identity,
            tls_verify: self.tls_verify.unwrap_or(true),
            offload,
        };
        Ok((settings, warnings))
    }
}
