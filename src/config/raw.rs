//! The configuration file as written: serde structs that reject unknown keys. Validation into
//! [`super::model`] happens in [`super::validate`].

use crate::config_value::duration::ConfigDuration;
use crate::config_value::interpolate::{Interpolated, SecretValue};
use crate::sink::maildir::MaildirSinkConfig;
use crate::store::config::RawState;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where popbridge keeps what it has delivered.
    pub state: RawState,
    /// The HTTP listener for health checks.
    #[serde(default)]
    pub http: RawHttp,
    /// Concurrency limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Limits per POP3 host, shared by every mailbox on it (politeness towards providers).
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, super::servers::RawServer>,
    /// The POP3 mailboxes to poll.
    #[serde(default)]
    pub mailboxes: Vec<RawMailbox>,
    /// More mailboxes, one per row of a CSV file filled into a template entry.
    #[serde(default)]
    pub mailboxes_from: Vec<RawBatch>,
    /// Where messages go.
    pub sinks: Vec<RawSink>,
    /// Named OAuth2 credentials, shared by mailboxes (`pop3.oauth2: NAME`) and IMAP sinks.
    #[serde(default)]
    pub oauth2: std::collections::BTreeMap<String, crate::oauth2::config::RawCredential>,
    /// Named routing rule sets, shared by mailboxes (`routes: NAME`).
    #[serde(default)]
    pub routes: std::collections::BTreeMap<String, crate::route::config::RawRuleSet>,
}

/// `http:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `host:port` to listen on (default `127.0.0.1:9898`).
    #[serde(default)]
    pub listen: Option<Interpolated>,
    /// One series per mailbox on `/metrics` (default false: series summed over mailboxes, so
    /// 10,000 mailboxes do not make hundreds of thousands of series).
    #[serde(default)]
    pub per_mailbox_metrics: Option<bool>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Mailbox polls running at once (default 4).
    #[serde(default)]
    pub max_concurrent_polls: Option<usize>,
    /// POP3 connections at once to one `host:port` (default 2).
    #[serde(default)]
    pub max_connections_per_server: Option<usize>,
    /// Messages in delivery at once within one poll (default 32).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// RETRs of one message that may break the connection before it is dead-lettered and
    /// skipped (default 3).
    #[serde(default)]
    pub max_retrieval_failures: Option<u32>,
    /// Longest time one poll of one mailbox may take before it is abandoned like a crash
    /// (default 6h).
    #[serde(default)]
    pub poll_timeout: Option<ConfigDuration>,
}

/// One entry of `mailboxes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailbox {
    /// Unique name, `[A-Za-z0-9._-]+`: a metric label and part of the idempotency key.
    pub name: String,
    /// How to reach the server.
    pub pop3: RawPop3,
    /// When to poll (default: every 60s, no jitter).
    #[serde(default)]
    pub schedule: Option<RawSchedule>,
    /// When to delete messages from the server (default `never`).
    #[serde(default)]
    pub delete: Option<RawDelete>,
    /// Names of the sinks every message goes to (at least one); with `routes`, the sinks of
    /// messages no rule matched.
    pub sinks: Vec<String>,
    /// Routing rules: the name of a shared `routes:` entry, or a rule set written here.
    #[serde(default)]
    pub routes: Option<crate::route::config::RawRouteRef>,
}

/// `pop3:` of a mailbox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPop3 {
    /// Server host name.
    pub host: Interpolated,
    /// Server port (default 995 for `tls: implicit`, 110 otherwise).
    #[serde(default)]
    pub port: Option<u16>,
    /// `implicit`, `starttls` or `none` (default `implicit`).
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Login name.
    pub username: Interpolated,
    /// Password (or OAuth2 token for `auth: xoauth2`); use `${VAR}`. Exclusive with `password_file`.
    #[serde(default)]
    pub password: Option<SecretValue>,
    /// File holding the password; one trailing newline is trimmed. Exclusive with `password`.
    #[serde(default)]
    pub password_file: Option<Interpolated>,
    /// `auto`, `user`, `apop`, `plain`, `xoauth2`, `oauthbearer` or `oauth2` (OAUTHBEARER when
    /// offered, else XOAUTH2). Default `auto`, or `oauth2` when `oauth2` is given.
    #[serde(default)]
    pub auth: Option<RawAuth>,
    /// The OAuth2 credential: the name of an `oauth2:` entry, or one written here.
    #[serde(default)]
    pub oauth2: Option<RawOAuth2Ref>,
    /// Where an OAuth2 initial response goes: `auto` (on the AUTH line when it fits), `always`,
    /// `never` (after `+`; Microsoft's POP3 needs this, the default for `provider: microsoft`).
    #[serde(default)]
    pub initial_response: Option<crate::pop3::InitialResponse>,
    /// Extra CA bundle (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<Interpolated>,
    /// Verify the server certificate (default true; false is allowed but warned about).
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// Allow a password over `tls: none` (default false).
    #[serde(default)]
    pub allow_plaintext_auth: Option<bool>,
    /// Connect and per-read/write timeout (default 60s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Longest status or listing line accepted from the server (default 65536). Lines inside
    /// messages are not limited: they stream to disk.
    #[serde(default)]
    pub max_line_length: Option<usize>,
    /// Largest message fetched, in bytes (default 1073741824, 1 GiB). Larger ones are reported
    /// at every poll and left on the server.
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    /// Most commands in flight with PIPELINING (default 128).
    #[serde(default)]
    pub pipeline_window: Option<usize>,
}

/// `tls:` values.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawTls {
    /// TLS from the first byte.
    Implicit,
    /// `STLS` upgrade.
    Starttls,
    /// No TLS.
    None,
}

/// `auth:` values.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAuth {
    /// SASL PLAIN if advertised, else USER/PASS.
    Auto,
    /// USER/PASS.
    User,
    /// APOP.
    Apop,
    /// AUTH PLAIN.
    Plain,
    /// AUTH XOAUTH2.
    Xoauth2,
    /// AUTH OAUTHBEARER (RFC 7628).
    Oauthbearer,
    /// OAUTHBEARER when offered, else XOAUTH2.
    Oauth2,
}

/// `oauth2:` of a mailbox: a credential's name, or a credential written in place.
#[derive(Debug)]
pub enum RawOAuth2Ref {
    Named(String),
    Inline(Box<crate::oauth2::config::RawCredential>),
}

impl<'de> Deserialize<'de> for RawOAuth2Ref {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOAuth2Ref;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the name of an `oauth2:` credential, or a credential mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawOAuth2Ref::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|c| RawOAuth2Ref::Inline(Box::new(c)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `schedule:`: exactly one of `every` and `cron`, plus optional `jitter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Poll at this interval.
    #[serde(default)]
    pub every: Option<ConfigDuration>,
    /// Poll on this 5-field cron expression (UTC).
    #[serde(default)]
    pub cron: Option<CronExpr>,
    /// Random delay added to each poll, up to this much (default 0s).
    #[serde(default)]
    pub jitter: Option<ConfigDuration>,
}

/// A 5-field cron expression, checked with croner while deserialising (so errors keep their
/// line and column).
#[derive(Clone, Debug)]
pub struct CronExpr {
    /// As written.
    pub expression: String,
    /// Parsed.
    pub cron: croner::Cron,
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CronExpr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 5-field cron expression such as \"*/5 * * * *\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_cron(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Parse a 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(text: &str) -> Result<CronExpr, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "invalid cron expression \"{text}\": expected 5 fields \
             (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    let cron = croner::Cron::new(text)
        .parse()
        .map_err(|e| format!("invalid cron expression \"{text}\": {e}"))?;
    Ok(CronExpr {
        expression: text.to_owned(),
        cron,
    })
}

/// `delete:`: `never`, `after_delivery` or `{ after_days: N }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawDelete {
    /// Leave messages on the server.
    Never,
    /// Delete once every sink has the message.
    AfterDelivery,
    /// Delete N days after delivery.
    AfterDays(u32),
}

impl<'de> Deserialize<'de> for RawDelete {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const FORMS: &[&str] = &["never", "after_delivery"];
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDelete;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`never`, `after_delivery` or `{ after_days: N }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "never" => Ok(RawDelete::Never),
                    "after_delivery" => Ok(RawDelete::AfterDelivery),
                    _ => Err(E::unknown_variant(v, FORMS)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut days = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "after_days" {
                        return Err(de::Error::unknown_field(&key, &["after_days"]));
                    }
                    if days.is_some() {
                        return Err(de::Error::duplicate_field("after_days"));
                    }
                    days = Some(map.next_value::<u32>()?);
                }
                match days {
                    None => Err(de::Error::missing_field("after_days")),
                    Some(0) => Err(de::Error::custom(
                        "`after_days` must be at least 1 (use `after_delivery` to delete at once)",
                    )),
                    Some(n) => Ok(RawDelete::AfterDays(n)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `retry:` of a sink; every key optional, defaults from `RetryPolicy::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Tries within one poll (default 3).
    #[serde(default)]
    pub attempts_per_poll: Option<u32>,
    /// First backoff (default 500ms), doubled per try.
    #[serde(default)]
    pub initial_backoff: Option<ConfigDuration>,
    /// Longest backoff (default 5m).
    #[serde(default)]
    pub max_backoff: Option<ConfigDuration>,
    /// How long after the first failure a message is retried in later polls before it is
    /// dead-lettered (default 24h).
    #[serde(default)]
    pub window: Option<ConfigDuration>,
}

/// One entry of `sinks:`: the common keys `name`, `type`, `retry`, plus the keys of its type.
#[derive(Debug)]
pub struct RawSink {
    /// Unique name, referenced by mailboxes.
    pub name: String,
    /// Retry policy overrides.
    pub retry: Option<RawRetry>,
    /// The type-specific part, chosen by `type:`.
    pub kind: RawSinkKind,
}

/// The type-specific part of a sink entry, tagged by `type:`. Each variant's raw config lives
/// in its sink's module and rejects unknown keys itself.
///
/// To add a sink type: add a variant here (e.g. `Webhook(crate::sink::webhook::WebhookSinkConfig)`)
/// and its arm in [`RawSinkKind::validate`] — the one place that turns raw into `SinkKind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawSinkKind {
    /// `type: maildir`.
    Maildir(MaildirSinkConfig),
    /// `type: webhook`.
    Webhook(crate::sink::webhook::WebhookSinkConfig),
    /// `type: s3`.
    S3(crate::sink::s3::S3SinkConfig),
    /// `type: imap`.
    Imap(crate::sink::imap::ImapSinkConfig),
    /// `type: gmail`.
    Gmail(crate::sink::gmail::GmailSinkConfig),
}

impl RawSinkKind {
    /// Validate the type-specific keys; `base` is the config file's directory. Gives the
    /// settings and the warnings to log (e.g. a plain `http://` endpoint).
    pub fn validate(
        self,
        base: &std::path::Path,
    ) -> Result<(crate::config::SinkKind, Vec<String>), String> {
        use crate::config::SinkKind;
        match self {
            RawSinkKind::Maildir(c) => c.validate(base).map(|s| (SinkKind::Maildir(s), vec![])),
            RawSinkKind::Webhook(c) => c
                .validate(base)
                .map(|(s, w)| (SinkKind::Webhook(Box::new(s)), w)),
            RawSinkKind::S3(c) => c
                .validate(base)
                .map(|(s, w)| (SinkKind::S3(Box::new(s)), w)),
            RawSinkKind::Imap(c) => c
                .validate_with_warnings(base)
                .map(|(s, w)| (SinkKind::Imap(Box::new(s)), w)),
            RawSinkKind::Gmail(c) => c
                .validate(base)
                .map(|(s, w)| (SinkKind::Gmail(Box::new(s)), w)),
        }
    }
}

impl<'de> Deserialize<'de> for RawSink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SinkVisitor)
    }
}

struct SinkVisitor;

impl<'de> Visitor<'de> for SinkVisitor {
    type Value = RawSink;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sink: a mapping with `name`, `type` and the keys of that type")
    }

    // Everything happens inside `visit_map`, so yaml_serde locates errors at this entry (not
    // at the start of the `sinks` list); `super::error` then moves "unknown field" errors to
    // the key's own line.
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<RawSink, A::Error> {
        use yaml_serde::{Mapping, Value};
        let mut map = Mapping::new();
        while let Some(key) = access.next_key::<Value>()? {
            if map.contains_key(&key) {
                let shown = key.as_str().unwrap_or("?").to_owned();
                return Err(de::Error::custom(format!("duplicate key `{shown}`")));
            }
            let value = access.next_value::<Value>()?;
            map.insert(key, value);
        }
        // Take the common keys out, then let the tagged enum (and the variant's own
        // `deny_unknown_fields`) read the rest.
        let name = map
            .remove("name")
            .ok_or_else(|| de::Error::missing_field("name"))?;
        let name =
            String::deserialize(name).map_err(|e| de::Error::custom(format!("name: {e}")))?;
        let retry = match map.remove("retry") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                RawRetry::deserialize(v).map_err(|e| de::Error::custom(format!("retry: {e}")))?,
            ),
        };
        let kind = RawSinkKind::deserialize(Value::Mapping(map)).map_err(|e| {
            let msg = e.to_string();
            if msg.starts_with("unknown field") {
                de::Error::custom(format!("{msg}, or a common key `name`, `type`, `retry`"))
            } else {
                de::Error::custom(msg)
            }
        })?;
        Ok(RawSink { name, retry, kind })
    }
}

/// One `mailboxes_from:` entry as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// CSV file (RFC 4180: a header row, commas, `"…"` quoting); relative to the config file.
    pub file: String,
    /// The mailbox entry each row fills in.
    pub mailbox: yaml_serde::Value,
}
