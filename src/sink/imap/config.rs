//! IMAP sink configuration: one sink block serves many mailboxes, each into its own account,
//! through a user name template (`{mailbox}`), a password file template, or explicit
//! per-mailbox `accounts`.

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use crate::config_value::resolve;
use crate::imap::{ImapAuth, ImapConfig, ImapTls};
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where INTERNALDATE comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InternalDate {
    /// The first `Received:` header's date, else `Date:`, else the fetch time.
    #[default]
    Received,
    /// `Date:`, else the fetch time.
    Date,
    /// When popbridge fetched the message.
    FetchTime,
}

/// `type: imap` keys (besides the common `name`, `type`, `retry`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSinkConfig {
    pub host: Interpolated,
    /// Default 993 for `implicit`, 143 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit` (default), `starttls` or `none`.
    #[serde(default)]
    pub tls: Option<ImapTls>,
    /// `auto` (default: AUTHENTICATE PLAIN when offered, else LOGIN), `login`, `plain`;
    /// `oauth2` (OAUTHBEARER when offered, else XOAUTH2), `xoauth2`, `oauthbearer` (the
    /// default with `oauth2`).
    #[serde(default)]
    pub auth: Option<ImapAuth>,
    /// The name of an `oauth2:` credential whose tokens log in every account without its own
    /// `password`/`password_file`.
    #[serde(default)]
    pub oauth2: Option<String>,
    /// Target user name; `{mailbox}` is replaced by the popbridge mailbox name.
    #[serde(default)]
    pub username: Option<Interpolated>,
    /// One password for every account (`${VAR}` allowed).
    #[serde(default)]
    pub password: Option<SecretValue>,
    /// A file holding the password; `{mailbox}` allowed (Kubernetes Secrets mounted as files).
    #[serde(default)]
    pub password_file: Option<String>,
    /// Per-mailbox accounts, by mailbox name; they win over the templates.
    #[serde(default)]
    pub accounts: BTreeMap<String, RawAccount>,
    /// Target folder, created if missing (default `INBOX`); any Unicode name (sent in modified
    /// UTF-7).
    #[serde(default)]
    pub folder: Option<String>,
    /// Flags set on each appended message (default none), e.g. `["\\Seen"]`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// `received` (default), `date` or `fetch_time`.
    #[serde(default)]
    pub internaldate: Option<InternalDate>,
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Verify the server certificate (default true). `false` is logged as a warning.
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// Allow a password over an unencrypted connection (`tls: none`); default false.
    #[serde(default)]
    pub allow_plaintext_auth: Option<bool>,
    /// For every read and write (default 60s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Connections to this server at once, over all accounts (default 4).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Bytes uploaded per target account per UTC day, after which the sink stops until the
    /// next day (messages wait on the POP3 server). Google Workspace: about 500 MB. Default:
    /// no budget.
    #[serde(default)]
    pub daily_upload_limit: Option<u64>,
    /// The largest message the target takes, when it does not say so itself (`APPENDLIMIT`,
    /// RFC 7889, is honoured when the server announces it). Default: no limit of our own.
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// A message over the target's limit: `refuse` (default, dead-lettered with the reason)
    /// or `stub` (the original to the `offload` bucket, a stub with a link to the mailbox).
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
    pub username: Option<Interpolated>,
    #[serde(default)]
    pub password: Option<SecretValue>,
    #[serde(default)]
    pub password_file: Option<String>,
}

/// Where an account's password comes from.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    Value(Secret),
    /// Read when connecting, so a rotated Secret file is picked up.
    File(PathBuf),
    /// An access token from the sink's OAuth2 credential.
    OAuth2,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub username: String,
    pub password: PasswordSource,
}

/// Validated IMAP sink settings.
#[derive(Clone, Debug)]
pub struct ImapSettings {
    pub server: ImapConfig,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    username: Option<String>,
    password: Option<PasswordSource>,
    accounts: BTreeMap<String, Account>,
    pub folder: String,
    pub flags: Vec<String>,
    pub internaldate: InternalDate,
    pub max_connections: usize,
    /// Bytes per account per UTC day (`None`: no budget).
    pub daily_upload_limit: Option<u64>,
    /// Our own size limit (`max_message_bytes`), besides the server's `APPENDLIMIT`.
    pub max_message_bytes: Option<u64>,
    /// `oversize: stub`: where originals go. `None`: a message over the limit is refused.
    pub stub_offload: Option<crate::sink::offload::OffloadSettings>,
    /// The `oauth2:` credential named, resolved into [`Self::oauth2`] by the config validator.
    pub oauth2_credential: Option<String>,
    pub oauth2: Option<std::sync::Arc<crate::oauth2::TokenSource>>,
}

impl ImapSettings {
    /// The target account of `mailbox`: an explicit entry, else the templates.
    pub fn account_for(&self, mailbox: &str) -> Result<Account, String> {
        if let Some(a) = self.accounts.get(mailbox) {
            return Ok(a.clone());
        }
        let username = self
            .username
            .as_ref()
            .ok_or_else(|| format!("no `username` and no `accounts.{mailbox}`"))?
            .replace("{mailbox}", mailbox);
        let password = match self.password.as_ref() {
            Some(PasswordSource::File(p)) => PasswordSource::File(PathBuf::from(
                p.to_string_lossy().replace("{mailbox}", mailbox),
            )),
            Some(v) => v.clone(),
            None => return Err(format!("no `password`/`password_file` for {mailbox}")),
        };
        Ok(Account { username, password })
    }
}

fn password_source(
    password: Option<SecretValue>,
    file: Option<String>,
    base: &Path,
    at: &str,
) -> Result<Option<PasswordSource>, String> {
    match (password, file) {
        (Some(_), Some(_)) => Err(format!(
            "{at}`password` and `password_file` exclude each other"
        )),
        (Some(p), None) => Ok(Some(PasswordSource::Value(p.into_secret()))),
        (None, Some(f)) => Ok(Some(PasswordSource::File(resolve(base, &f)))),
        (None, None) => Ok(None),
    }
}

impl ImapSinkConfig {
    /// Validate; `base` is the config file's directory, for relative paths.
    pub fn validate(self, base: &Path) -> Result<ImapSettings, String> {
        self.validate_with_warnings(base).map(|(s, _)| s)
    }

    /// [`Self::validate`], with what the operator should be warned about.
    pub fn validate_with_warnings(
        self,
        base: &Path,
    ) -> Result<(ImapSettings, Vec<String>), String> {
        if self.max_message_bytes == Some(0) {
            return Err(
                "`max_message_bytes` must be at least 1 byte (leave it out for no limit)".into(),
            );
        }
        let (stub_offload, warnings) =
            crate::sink::offload::config::stub_settings(self.oversize, self.offload, base)?;
        let tls = self.tls.unwrap_or(ImapTls::Implicit);
        let allow_plaintext_auth = self.allow_plaintext_auth.unwrap_or(false);
        if tls == ImapTls::None && !allow_plaintext_auth {
            return Err(
                "`tls: none` sends the password in clear: set `allow_plaintext_auth: true` to allow it"
                    .into(),
            );
        }
        let timeout = self.timeout.map_or(Duration::from_secs(60), |d| d.0);
        if timeout.is_zero() {
            return Err("`timeout` must be greater than 0".into());
        }
        if self.daily_upload_limit == Some(0) {
            return Err(
                "`daily_upload_limit` must be at least 1 byte (leave it out for no budget)".into(),
            );
        }
        let max_connections = self.max_connections.unwrap_or(4);
        if max_connections == 0 {
            return Err("`max_connections` must be at least 1".into());
        }
        let folder = self.folder.unwrap_or_else(|| "INBOX".into());
        if crate::imap::codec::quoted(&crate::imap::utf7::encode(&folder)).is_none()
            || folder.is_empty()
        {
            return Err(format!(
                "`folder` {folder:?} must not be empty or hold line breaks or NUL"
            ));
        }
        for f in &self.flags {
            if !f.starts_with('\\')
                && !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "$_-".contains(c))
                || f.contains(|c: char| c.is_whitespace() || "(){}\"".contains(c))
            {
                return Err(format!("`flags`: {f:?} is not an IMAP flag"));
            }
        }
        let auth = match (self.auth, &self.oauth2) {
            (None, Some(_)) => ImapAuth::Oauth2,
            (Some(a), Some(_)) if !a.is_oauth2() => {
                return Err(
                    "`oauth2` needs `auth: oauth2`, `xoauth2` or `oauthbearer` (or no `auth`)"
                        .into(),
                )
            }
            (a, _) => a.unwrap_or_default(),
        };
        let password = password_source(self.password, self.password_file, base, "")?
            .or(self.oauth2.as_ref().map(|_| PasswordSource::OAuth2));
        let mut accounts = BTreeMap::new();
        for (mailbox, a) in self.accounts {
            let at = format!("`accounts.{mailbox}`: ");
            let username = a
                .username
                .map(|u| u.0)
                .or_else(|| {
                    self.username
                        .as_ref()
                        .map(|u| u.0.replace("{mailbox}", &mailbox))
                })
                .ok_or_else(|| format!("{at}needs a `username` (no template given)"))?;
            let pw = password_source(a.password, a.password_file, base, &at)?
                .or_else(|| password.clone())
                .ok_or_else(|| format!("{at}needs a `password` or `password_file`"))?;
            accounts.insert(
                mailbox,
                Account {
                    username,
                    password: pw,
                },
            );
        }
        let port = self
            .port
            .unwrap_or(if tls == ImapTls::Implicit { 993 } else { 143 });
        let settings = ImapSettings {
            server: ImapConfig {
                host: self.host.0,
                port,
                tls,
                auth,
                timeout,
                allow_plaintext_auth,
            },
            ca_file: self.ca_file.map(|p| resolve(base, &p)),
            tls_verify: self.tls_verify.unwrap_or(true),
            username: self.username.map(|u| u.0),
            password,
            accounts,
            folder,
            flags: self.flags,
            internaldate: self.internaldate.unwrap_or_default(),
            max_connections,
            daily_upload_limit: self.daily_upload_limit,
            max_message_bytes: self.max_message_bytes,
            stub_offload,
            oauth2_credential: self.oauth2,
            oauth2: None,
        };
        Ok((settings, warnings))
    }
}
