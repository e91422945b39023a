//! The `offload:` block of a sink: where offloaded content goes and what links look like.

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::Interpolated;
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
    pub s3: Box<S3SinkConfig>,
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
        let (s3, warnings) = (*self.s3)
            .validate(base)
            .map_err(|e| format!("`offload.s3`: {e}"))?;
        let link_expiry = self
            .link_expiry
            .map_or(Duration::from_secs(24 * 3600), |d| d.0);
        if link_expiry.is_zero() || link_expiry > MAX_EXPIRY {
            return Err(
                "`offload.link_expiry` must be between 1s and 7d (AWS's limit for pre-signed URLs)"
                    .into(),
            );
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

/// What a mailbox sink (IMAP, Gmail) does with a message over its target's size limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Refuse it: a permanent failure, dead-lettered with the reason (the default).
    #[default]
    Refuse,
    /// Store it whole in the `offload` bucket and deliver a stub with a link instead.
    Stub,
}

/// A mailbox sink's `oversize` and `offload` keys together: the offload settings when stubs
/// are on.
pub fn stub_settings(
    oversize: Option<Oversize>,
    offload: Option<OffloadConfig>,
    base: &Path,
) -> Result<(Option<OffloadSettings>, Vec<String>), String> {
    match (oversize.unwrap_or_default(), offload) {
        (Oversize::Refuse, None) => Ok((None, Vec::new())),
        (Oversize::Refuse, Some(_)) => {
            Err("`offload` is used only with `oversize: stub`: add it, or remove `offload`".into())
        }
        (Oversize::Stub, None) => {
            Err("`oversize: stub` needs an `offload` bucket for the originals".into())
        }
        (Oversize::Stub, Some(o)) => {
            if o.raw.is_some() {
                return Err(
                    "`offload.raw` is a webhook key: a stub always links the whole message".into(),
                );
            }
            let (settings, warnings) = o.validate(base)?;
            Ok((Some(settings), warnings))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str_with_env, SinkKind};
    use std::path::Path;

    const BASE: &str = "state:\n  path: /tmp/pb.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      password: p\n    schedule: { every: 60s }\n    sinks: [hook]\nsinks:\n  - name: hook\n    type: webhook\n    url: https://app.example.com/in\n";

    fn load(extra: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
        load_str_with_env(
            &format!("{BASE}{extra}"),
            Path::new("/etc/popbridge/config.yaml"),
            |name| (name == "S3_SECRET").then(|| "sekrit-s3-key".into()),
        )
    }

    const S3: &str = "    offload:\n      s3:\n        bucket: mail-files\n        access_key_id: AKIDEXAMPLE\n        secret_access_key: ${S3_SECRET}\n";

    #[test]
    fn offload_is_off_by_default_and_loads_with_defaults() {
        let loaded = load("").unwrap();
        let SinkKind::Webhook(w) = &loaded.config.sinks[0].kind else {
            panic!("expected a webhook")
        };
        assert!(w.offload.is_none());
        let loaded = load(S3).unwrap();
        let SinkKind::Webhook(w) = &loaded.config.sinks[0].kind else {
            panic!("expected a webhook")
        };
        let o = w.offload.as_ref().unwrap();
        assert_eq!(o.prefix, "offload/");
        assert_eq!(o.link_expiry, std::time::Duration::from_secs(86400));
        assert!(!o.raw && o.link_base.is_none());
        assert_eq!(o.s3.bucket, "mail-files");
        assert!(!format!("{:?}", loaded.config).contains("sekrit"));
    }

    #[test]
    fn bad_offload_settings_are_refused_with_the_reason() {
        for (extra, why) in [
            ("      link_expiry: 8d\n", "7d"),
            (
                "      link_base: https://files.example.com/x\n",
                "ending in `/`",
            ),
            ("      prefix: /abs/\n", "must not start"),
            ("      nope: 1\n", "nope"),
        ] {
            let err = load(&format!("{S3}{extra}")).unwrap_err().to_string();
            assert!(err.contains(why), "{extra}: {err}");
        }
        let err = load(&format!("{S3}        key: \"{{id}}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not apply"), "{err}");
        let err = load(&format!("    format: raw\n{S3}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("format: json"), "{err}");
    }

    const IMAP: &str = "state:\n  path: /tmp/pb.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      password: p\n    schedule: { every: 60s }\n    sinks: [box]\nsinks:\n  - name: box\n    type: imap\n    host: imap.example.com\n    username: u\n    password: p\n";

    fn load_imap(extra: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
        load_str_with_env(
            &format!("{IMAP}{extra}"),
            Path::new("/etc/popbridge/config.yaml"),
            |name| (name == "S3_SECRET").then(|| "sekrit-s3-key".into()),
        )
    }

    #[test]
    fn oversize_stub_needs_an_offload_bucket_and_is_off_by_default() {
        let SinkKind::Imap(i) = &load_imap("").unwrap().config.sinks[0].kind else {
            panic!("expected imap")
        };
        assert!(i.stub_offload.is_none() && i.max_message_bytes.is_none());
        let loaded = load_imap(&format!(
            "    oversize: stub\n    max_message_bytes: 1000\n{S3}"
        ))
        .unwrap();
        let SinkKind::Imap(i) = &loaded.config.sinks[0].kind else {
            panic!("expected imap")
        };
        assert_eq!(i.stub_offload.as_ref().unwrap().s3.bucket, "mail-files");
        assert_eq!(i.max_message_bytes, Some(1000));
        for (extra, why) in [
            ("    oversize: stub\n".to_string(), "needs an `offload`"),
            (S3.to_string(), "only with `oversize: stub`"),
            (
                format!("    oversize: stub\n{S3}      raw: true\n"),
                "webhook key",
            ),
            ("    oversize: shrink\n".to_string(), "shrink"),
            ("    max_message_bytes: 0\n".to_string(), "at least 1"),
        ] {
            let err = load_imap(&extra).unwrap_err().to_string();
            assert!(err.contains(why), "{extra}: {err}");
        }
    }
}
