//! Maildir sink configuration.

use serde::Deserialize;

/// `type: maildir` keys (besides the common `name`, `type`, `retry`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirSinkConfig {
    /// Directory of the Maildir; `{mailbox}` is replaced by the mailbox name. Created if missing.
    pub path: String,
    /// fsync the file and the directory before a delivery counts (default true). Turning it off
    /// trades the durability of the receipt for speed.
    #[serde(default)]
    pub fsync: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaildirSettings {
    /// Path template, `{mailbox}` not yet expanded, relative paths already resolved against the
    /// config file's directory.
    pub path: String,
    pub fsync: bool,
}

impl MaildirSinkConfig {
    /// Validate; `base` is the config file's directory, for relative paths.
    pub fn validate(self, base: &std::path::Path) -> Result<MaildirSettings, String> {
        if self.path.trim().is_empty() {
            return Err("`path` must not be empty".into());
        }
        let path = crate::config_value::resolve(base, &self.path)
            .to_string_lossy()
            .into_owned();
        Ok(MaildirSettings {
            path,
            fsync: self.fsync.unwrap_or(true),
        })
    }
}
