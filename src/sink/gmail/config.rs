//! Gmail sink configuration: one block serves many mailboxes, each imported into its own
//! Gmail account, through a `user` template (`{mailbox}`) and an access-token file template,
//! or explicit per-mailbox `accounts`.

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::Interpolated;
use crate::config_value::resolve;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Gmail takes a message's internal date (the date it sorts by) from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InternalDateSource {
    /// The `Date:` header (Gmail falls back to the receive time when it is unusable).
    #[default]
    DateHeader,
    /// When Gmail received the import.
    ReceivedTime,
}

impl InternalDateSource {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DateHeader => "dateHeader",
            Self::ReceivedTime => "receivedTime",
        }
    }
}

/// `type: gmail` keys (besides the common `name`, `type`, `retry`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmailSinkConfig {
    /// Target account (the API's `userId`); `{mailbox}` is replaced by the mailbox name.
    #[serde(default)]
    pub user: Option<Interpolated>,
    /// File holding an OAuth2 access token, re-read at every request (another process
    /// refreshes it); `{mailbox}` allowed. Not needed with `oauth2`.
    #[serde(default)]
    pub access_token_file: Option<String>,
    /// The name of an `oauth2:` credential whose tokens open every account (a user's refresh
    /// token, or a Workspace service account with `sub` = the account's address).
    #[serde(default)]
    pub oauth2: Option<String>,
    /// Per-mailbox accounts, by mailbox name; they win over the templates.
    #[serde(default)]
    pub accounts: BTreeMap<String, RawAccount>,
    /// Label names applied to every import, created when missing; `{mailbox}` allowed.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Leave the `INBOX` label off (archived on arrival); default false.
    #[serde(default)]
    pub skip_inbox: Option<bool>,
    /// Leave the `UNREAD` label off; default false.
    #[serde(default)]
    pub mark_read: Option<bool>,
    /// Never send imports to spam (default false: Gmail classifies them as it does mail).
    #[serde(default)]
    pub never_mark_spam: Option<bool>,
    /// Let Gmail process calendar invitations in imported mail (default false).
    #[serde(default)]
    pub process_for_calendar: Option<bool>,
    /// `dateHeader` (default) or `receivedTime`.
    #[serde(default)]
    pub internal_date_source: Option<InternalDateSource>,
    /// Messages larger than this use the resumable upload (default 5242880, 5 MiB).
    #[serde(default)]
    pub resumable_threshold: Option<u64>,
    /// Bytes per resumable PUT, a multiple of 256 KiB (default 8388608, 8 MiB).
    #[serde(default)]
    pub chunk_size: Option<u64>,
    /// API root (default `https://gmail.googleapis.com`); tests point it at a local server.
    #[serde(default)]
    pub api_base: Option<Interpolated>,
    /// Time for one request (default 120s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Imports in flight at once, over all accounts (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Extra CA bundle (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Accept a plain `http://` api_base off this machine (default false).
    #[serde(default)]
    pub allow_plaintext: Option<bool>,
    /// Quota units per minute this process spends on one account (default 15000, Google's
    /// per-user limit; an import costs 25, so 600 imports a minute); 0 switches pacing off.
    #[serde(default)]
    pub quota_units_per_minute: Option<u32>,
    /// Units one quiet account may spend at once (default 250: ten imports).
    #[serde(default)]
    pub quota_burst_units: Option<u32>,
    /// The largest message imported (default and most: 157286400, Gmail's 150 MB).
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// A message over the limit: `refuse` (default, dead-lettered with the reason) or `stub`
    /// (the original to the `offload` bucket, a stub with a link imported instead).
    #[serde(default)]
    pub oversize: Option<crate::sink::offload::Oversize>,
    /// The bucket for originals with `oversize: stub` (as the webhook's `offload`).
    #[serde(default)]
    pub offload: Option<crate::sink::offload::OffloadConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    #[serde(default)]
    pub user: Option<Interpolated>,
    #[serde(default)]
    pub access_token_file: Option<String>,
    /// Replaces the sink's `labels` for this mailbox.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// One target account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The API's `userId` (an address, or `me`).
    pub user: String,
    /// Where its access token is read from.
    pub token_file: PathBuf,
    /// Label names to apply (besides `INBOX`/`UNREAD`).
    pub labels: Vec<String>,
}

/// Validated Gmail sink settings.
#[derive(Clone, Debug)]
pub struct GmailSettings {
    pub api_base: reqwest::Url,
    user: Option<String>,
    token_file: Option<PathBuf>,
    labels: Vec<String>,
    accounts: BTreeMap<String, Account>,
    pub skip_inbox: bool,
    pub mark_read: bool,
    pub never_mark_spam: bool,
    pub process_for_calendar: bool,
    pub internal_date_source: InternalDateSource,
    pub resumable_threshold: u64,
    pub chunk_size: u64,
    pub timeout: Duration,
    pub concurrency: usize,
    pub ca_file: Option<PathBuf>,
    /// The `oauth2:` credential named, resolved into [`Self::oauth2`] by the config validator.
    pub oauth2_credential: Option<String>,
    pub oauth2: Option<std::sync::Arc<crate::oauth2::TokenSource>>,
    /// Pacing per account (see `quota.rs`); 0 units per minute: no pacing.
    pub quota_units_per_minute: u32,
    pub quota_burst_units: u32,
    /// The largest message imported (at most [`MAX_IMPORT_BYTES`]).
    pub max_message_bytes: u64,
    /// `oversize: stub`: where originals go. `None`: a message over the limit is refused.
    pub stub_offload: Option<crate::sink::offload::OffloadSettings>,
}

/// Resumable chunks must be multiples of this (Google's upload protocol).
pub const CHUNK_GRANULE: u64 = 256 * 1024;

/// The largest message `messages.import` takes (the discovery document's `maxSize`).
pub const MAX_IMPORT_BYTES: u64 = 157_286_400;

impl GmailSettings {
    /// Settings for tests and embedders: one account template, defaults elsewhere.
    pub fn new(api_base: reqwest::Url, user: &str, token_file: PathBuf) -> Self {
        Self {
            api_base,
            user: Some(user.to_string()),
            token_file: Some(token_file),
            labels: Vec::new(),
            accounts: BTreeMap::new(),
            skip_inbox: false,
            mark_read: false,
            never_mark_spam: false,
            process_for_calendar: false,
            internal_date_source: InternalDateSource::DateHeader,
            resumable_threshold: 5 << 20,
            chunk_size: 8 << 20,
            timeout: Duration::from_secs(120),
            concurrency: 4,
            ca_file: None,
            oauth2_credential: None,
            oauth2: None,
            quota_units_per_minute: super::quota::USER_UNITS_PER_MINUTE,
            quota_burst_units: super::quota::DEFAULT_BURST_UNITS,
            max_message_bytes: MAX_IMPORT_BYTES,
            stub_offload: None,
        }
    }

    /// Stubs for messages over `max_message_bytes` (tests, embedders).
    pub fn with_stubs(
        mut self,
        max_message_bytes: u64,
        offload: crate::sink::offload::OffloadSettings,
    ) -> Self {
        self.max_message_bytes = max_message_bytes;
        self.stub_offload = Some(offload);
        self
    }

    /// Replaces the label names of the template (tests, embedders).
    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = labels;
        self
    }

    /// The target account of `mailbox`: an explicit entry, else the templates.
    pub fn account_for(&self, mailbox: &str) -> Result<Account, String> {
        if let Some(a) = self.accounts.get(mailbox) {
            return Ok(a.clone());
        }
        let user = self
            .user
            .as_ref()
            .ok_or_else(|| format!("no `user` and no `accounts.{mailbox}`"))?
            .replace("{mailbox}", mailbox);
        // With `oauth2` the file is not used: an empty path.
        let token_file = match (&self.token_file, &self.oauth2_credential) {
            (Some(f), _) => fill(f, mailbox),
            (None, Some(_)) => PathBuf::new(),
            (None, None) => return Err(format!("no `access_token_file` for {mailbox}")),
        };
        Ok(Account {
            user,
            token_file,
            labels: self
                .labels
                .iter()
                .map(|l| l.replace("{mailbox}", mailbox))
                .collect(),
        })
    }
}

fn fill(path: &Path, mailbox: &str) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace("{mailbox}", mailbox))
}

/// Label names Gmail reserves: given as `labels`, they would be created as user labels and
/// clash; `skip_inbox`/`mark_read` control the two that matter.
const SYSTEM_LABELS: &[&str] = &[
    "INBOX",
    "UNREAD",
    "SPAM",
    "TRASH",
    "SENT",
    "DRAFT",
    "STARRED",
    "IMPORTANT",
    "CHAT",
];

fn check_labels(labels: &[String], at: &str) -> Result<(), String> {
    for l in labels {
        if l.trim().is_empty() || l.chars().any(char::is_control) {
            return Err(format!("{at}`labels`: {l:?} is not a label name"));
        }
        if SYSTEM_LABELS.iter().any(|s| s.eq_ignore_ascii_case(l)) {
            return Err(format!(
                "{at}`labels`: {l} is a system label; use `skip_inbox`/`mark_read` instead"
            ));
        }
    }
    Ok(())
}

impl GmailSinkConfig {
    /// Validate; `base` is the config file's directory, for relative paths.
    pub fn validate(self, base: &Path) -> Result<(GmailSettings, Vec<String>), String> {
        let api_base = self
            .api_base
            .as_ref()
            .map_or("https://gmail.googleapis.com", |a| a.as_str());
        let api_base = reqwest::Url::parse(api_base)
            .map_err(|e| format!("`api_base` is not a valid URL: {e}"))?;
        if !matches!(api_base.scheme(), "http" | "https") {
            return Err(format!(
                "`api_base` must be http or https, not {}",
                api_base.scheme()
            ));
        }
        let warning = crate::sink::http::check_plaintext(
            &api_base,
            "api_base",
            self.allow_plaintext.unwrap_or(false),
        )?;
        check_labels(&self.labels, "")?;
        let resumable_threshold = self.resumable_threshold.unwrap_or(5 << 20);
        let chunk_size = self.chunk_size.unwrap_or(8 << 20);
        if chunk_size == 0 || !chunk_size.is_multiple_of(CHUNK_GRANULE) {
            return Err(format!(
                "`chunk_size` must be a positive multiple of {CHUNK_GRANULE} (256 KiB)"
            ));
        }
        let timeout = self.timeout.map_or(Duration::from_secs(120), |d| d.0);
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0".into());
        }
        let concurrency = self.concurrency.unwrap_or(4);
        if concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        let quota_units_per_minute = self
            .quota_units_per_minute
            .unwrap_or(super::quota::USER_UNITS_PER_MINUTE);
        let quota_burst_units = self
            .quota_burst_units
            .unwrap_or(super::quota::DEFAULT_BURST_UNITS);
        let import = super::quota::cost::IMPORT;
        if quota_units_per_minute > 0
            && (quota_burst_units < import || quota_burst_units >= quota_units_per_minute)
        {
            return Err(format!(
                "`quota_burst_units` must be at least {import} (one import) and below \
                 `quota_units_per_minute`"
            ));
        }
        let max_message_bytes = self.max_message_bytes.unwrap_or(MAX_IMPORT_BYTES);
        if max_message_bytes == 0 || max_message_bytes > MAX_IMPORT_BYTES {
            return Err(format!(
                "`max_message_bytes` must be between 1 and {MAX_IMPORT_BYTES} (Gmail's 150 MB)"
            ));
        }
        let (stub_offload, mut warnings) =
            crate::sink::offload::config::stub_settings(self.oversize, self.offload, base)?;
        let user = self.user.map(Interpolated::into_string);
        let token_file = self.access_token_file.map(|f| resolve(base, &f));
        let mut accounts = BTreeMap::new();
        for (mailbox, a) in self.accounts {
            let at = format!("`accounts.{mailbox}`: ");
            let account_user = a
                .user
                .map(Interpolated::into_string)
                .or_else(|| user.as_ref().map(|u| u.replace("{mailbox}", &mailbox)))
                .ok_or_else(|| format!("{at}needs a `user` (no template given)"))?;
            let file = a
                .access_token_file
                .map(|f| resolve(base, &f))
                .or_else(|| token_file.as_ref().map(|f| fill(f, &mailbox)))
                .or_else(|| self.oauth2.as_ref().map(|_| PathBuf::new()))
                .ok_or_else(|| {
                    format!("{at}needs an `access_token_file` (or the sink `oauth2`)")
                })?;
            let labels = match a.labels {
                Some(l) => {
                    check_labels(&l, &at)?;
                    l
                }
                None => self.labels.clone(),
            };
            accounts.insert(
                mailbox.clone(),
                Account {
                    user: account_user,
                    token_file: file,
                    labels: labels
                        .iter()
                        .map(|l| l.replace("{mailbox}", &mailbox))
                        .collect(),
                },
            );
        }
        let settings = GmailSettings {
            api_base,
            user,
            token_file,
            labels: self.labels,
            accounts,
            skip_inbox: self.skip_inbox.unwrap_or(false),
            mark_read: self.mark_read.unwrap_or(false),
            never_mark_spam: self.never_mark_spam.unwrap_or(false),
            process_for_calendar: self.process_for_calendar.unwrap_or(false),
            internal_date_source: self.internal_date_source.unwrap_or_default(),
            resumable_threshold,
            chunk_size,
            timeout,
            concurrency,
            ca_file: self.ca_file.map(|p| resolve(base, &p)),
            oauth2_credential: self.oauth2,
            oauth2: None,
            quota_units_per_minute,
            quota_burst_units,
            max_message_bytes,
            stub_offload,
        };
        warnings.extend(warning);
        Ok((settings, warnings))
    }
}
