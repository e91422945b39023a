//! S3 sink configuration: raw keys as written, then validated settings.

use super::credentials::{Credentials, Source};
use super::key::KeyTemplate;
use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Server-side encryption asked of S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Sse {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    Kms,
}

impl Sse {
    pub fn header_value(self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::Kms => "aws:kms",
        }
    }
}

/// `type: s3` keys (besides the common `name`, `type`, `retry`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Bucket name.
    pub bucket: Interpolated,
    /// AWS region, also part of every signature (default `us-east-1`).
    #[serde(default)]
    pub region: Option<Interpolated>,
    /// Base URL of an S3-compatible service (MinIO, Ceph, R2…); default AWS's regional one.
    #[serde(default)]
    pub endpoint: Option<Interpolated>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`
    /// (default: true with `endpoint`, false for AWS).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Static keys; without them the standard chain is used (environment, web identity,
    /// shared credentials file).
    #[serde(default)]
    pub access_key_id: Option<Interpolated>,
    #[serde(default)]
    pub secret_access_key: Option<SecretValue>,
    #[serde(default)]
    pub session_token: Option<SecretValue>,
    /// Object key template (default `{mailbox}/{yyyy}/{mm}/{dd}/{id}.eml`, the date from the
    /// message's `Date:` header).
    #[serde(default)]
    pub key: Option<String>,
    /// `AES256` or `aws:kms`.
    #[serde(default)]
    pub server_side_encryption: Option<Sse>,
    /// KMS key id or ARN for `aws:kms` (default: the bucket's AWS-managed key).
    #[serde(default)]
    pub sse_kms_key_id: Option<Interpolated>,
    /// `STANDARD`, `STANDARD_IA`, `GLACIER_IR`… (default: the bucket's).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Messages of this size or larger go up as a multipart upload (default 16 MiB, min 5 MiB).
    #[serde(default)]
    pub multipart_threshold: Option<u64>,
    /// Size of each multipart part, held in memory while it is sent (default 8 MiB, min 5 MiB).
    #[serde(default)]
    pub part_size: Option<u64>,
    /// Time for one request (default 60s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Uploads in flight at once (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Extra CA bundle (PEM) to trust, for a private endpoint.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Accept a plain `http://` endpoint on a host other than this machine (default false):
    /// messages and session tokens would cross the network unencrypted.
    #[serde(default)]
    pub allow_plaintext: Option<bool>,
}

/// Validated S3 settings.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// Scheme, host and port only.
    pub endpoint: reqwest::Url,
    pub path_style: bool,
    /// `None`: resolve the chain from the environment when the sink is built.
    pub credentials: Option<Credentials>,
    pub key: KeyTemplate,
    pub sse: Option<Sse>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub timeout: Duration,
    pub concurrency: usize,
    pub ca_file: Option<PathBuf>,
}

/// AWS's smallest part (every part but the last).
pub const MIN_PART: u64 = 5 << 20;
pub const DEFAULT_KEY: &str = "{mailbox}/{yyyy}/{mm}/{dd}/{id}.eml";

impl S3Settings {
    /// Settings for tests and tools: path-style against `endpoint`, defaults elsewhere.
    pub fn new(endpoint: reqwest::Url, bucket: &str, credentials: Option<Credentials>) -> Self {
        Self {
            bucket: bucket.into(),
            region: "us-east-1".into(),
            endpoint,
            path_style: true,
            credentials,
            key: KeyTemplate::parse(DEFAULT_KEY).unwrap_or_default(),
            sse: None,
            sse_kms_key_id: None,
            storage_class: None,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            timeout: Duration::from_secs(60),
            concurrency: 8,
            ca_file: None,
        }
    }

    /// Where the keys come from: the config's, else the environment's chain.
    pub fn credential_source(&self) -> Result<Source, String> {
        match &self.credentials {
            Some(c) => Ok(Source::Static(c.clone())),
            None => super::credentials::from_environment(&self.region).map_err(|e| e.to_string()),
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
}

impl S3SinkConfig {
    /// Validate; `base` is the config file's directory, for relative paths.
    pub fn validate(self, base: &Path) -> Result<(S3Settings, Vec<String>), String> {
        let bucket = self.bucket.into_string();
        if !valid_bucket(&bucket) {
            return Err(format!(
                "`bucket` {bucket:?} is not a valid bucket name (3-63 of a-z 0-9 . -)"
            ));
        }
        let region = self
            .region
            .map_or_else(|| "us-east-1".to_string(), Interpolated::into_string);
        let endpoint_text = self
            .endpoint
            .as_ref()
            .map(|e| e.as_str().to_string())
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = reqwest::Url::parse(&endpoint_text)
            .map_err(|e| format!("`endpoint` is not a valid URL: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err("`endpoint` must be an http(s) URL with a host".into());
        }
        if endpoint.path() != "/" || endpoint.query().is_some() {
            return Err(
                "`endpoint` must not have a path or query: the bucket goes in `bucket`".into(),
            );
        }
        let plaintext_warning = crate::sink::http::check_plaintext(
            &endpoint,
            "endpoint",
            self.allow_plaintext.unwrap_or(false),
        )?;
        let credentials = match (self.access_key_id, self.secret_access_key) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.into_string(),
                secret_access_key: secret.into_secret(),
                session_token: self.session_token.map(SecretValue::into_secret),
                expires: None,
            }),
            (None, None) => None,
            _ => return Err("`access_key_id` and `secret_access_key` go together".into()),
        };
        let key = KeyTemplate::parse(self.key.as_deref().unwrap_or(DEFAULT_KEY))?;
        let sse_kms_key_id = self.sse_kms_key_id.map(Interpolated::into_string);
        if sse_kms_key_id.is_some() && self.server_side_encryption != Some(Sse::Kms) {
            return Err("`sse_kms_key_id` needs `server_side_encryption: aws:kms`".into());
        }
        let multipart_threshold = self.multipart_threshold.unwrap_or(16 << 20);
        let part_size = self.part_size.unwrap_or(8 << 20);
        if multipart_threshold < MIN_PART {
            return Err("`multipart_threshold` must be at least 5242880 (5 MiB)".into());
        }
        if !(MIN_PART..=(5 << 30)).contains(&part_size) {
            return Err("`part_size` must be between 5 MiB and 5 GiB".into());
        }
        let concurrency = self.concurrency.unwrap_or(8);
        if concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        let timeout = self.timeout.map_or(Duration::from_secs(60), |d| d.0);
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0".into());
        }
        let settings = S3Settings {
            path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
            bucket,
            region,
            endpoint,
            credentials,
            key,
            sse: self.server_side_encryption,
            sse_kms_key_id,
            storage_class: self.storage_class,
            multipart_threshold,
            part_size,
            timeout,
            concurrency,
            ca_file: self.ca_file.map(|p| crate::config_value::resolve(base, &p)),
        };
        Ok((settings, plaintext_warning.into_iter().collect()))
    }
}
