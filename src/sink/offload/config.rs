//! The `offload:` block of a sink: where offloaded content goes and what links look like.

use crate::config::duration::ConfigDuration;
use crate::config::interpolate::Interpolated;
use crate::sink::s3::presign::MAX_EXPIRY;
use crate::sink::s3::{S3Settings, S3SinkConfig};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// `offload:` keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffloadConfig {
    /// The bucket, as the keys of an S3 sink (`bucket`, `endpoint`, `region`, credentials,
    /// encryption, `timeout`, `ca_file`…). `key` and the multipart keys do not apply: objects
    /// are named by their SHA-256.
    pub s3: S3SinkConfig,
    /// Object key prefix (default `offload/`): an object is `<prefix><sha256>`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// How long a pre-signed link works (default 24h, at most 7d, AWS's limit).
    #[serde(default)]
    pub link_expiry: Option<ConfigDuration>,
    /// Links `<link_base><key>` that never expire (a public bucket, or a CDN or proxy in front
    /// of it) instead of pre-signed ones.
    #[serde(default)]
    pub link_base: Option<Interpolated>,
    /// Webhook: also store the whole message and send `raw_link` instead of `raw` (default
    /// false).
    #[serde(default)]
    pub raw: Option<bool>,
}

/// Validated `offload:` settings.
#[derive(Clone, Debug)]
pub struct OffloadSettings {
    pub s3: S3Settings,
    pub prefix: String,
    pub link_expiry: Duration,
    pub link_base: Option<reqwest::Url>,
    pub raw: bool,
}

impl OffloadConfig {
    /// Validate; `base` is the config file's directory. Gives the settings and warnings.
    pub fn validate(self, base: &Path) -> Result<(OffloadSettings, Vec<String>), String> {
        if self.s3.key.is_some()
            || self.s3.multipart_threshold.is_some()
            || self.s3.part_size.is_some()
        {
            return Err(
                "`offload.s3`: `key`, `multipart_threshold` and `part_size` do not apply (objects are named by their sha256)"
                    .into(),
            );
        }
        let (s3, warnings) = self
            .s3
            .validate(base)
            .map_err(|e| format!("`offload.s3`: {e}"))?;
        let link_expiry = self
            .link_expiry
            .map_or(Duration::from_secs(24 * 3600), |d| d.0);
        if link_expiry.is_zero() || link_expiry > MAX_EXPIRY {
            return Err("`offload.link_expiry` must be between 1s and 7d (AWS's limit for pre-signed URLs)".into());
        }
        let link_base = match self.link_base {
            None => None,
            Some(b) => {
                let url = reqwest::Url::parse(b.as_str())
                    .map_err(|e| format!("`offload.link_base` is not a valid URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") || !url.as_str().ends_with('/') {
                    return Err("`offload.link_base` must be an http(s) URL ending in `/`".into());
                }
                Some(url)
            }
        };
        let prefix = self.prefix.unwrap_or_else(|| "offload/".into());
        if prefix.starts_with('/') || prefix.contains("//") {
            return Err("`offload.prefix` must not start with `/` or contain `//`".into());
        }
        Ok((
            OffloadSettings {
                s3,
                prefix,
                link_expiry,
                link_base,
                raw: self.raw.unwrap_or(false),
            },
            warnings,
        ))
    }
}
