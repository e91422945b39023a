//! The validated configuration: every default applied, every reference checked.
//! Nothing here is `Option` that the engine would have to check again.

use crate::pop3::ClientConfig;
use crate::sink::maildir::MaildirSettings;
use crate::sink::webhook::WebhookSettings;
pub use crate::store::config::{PostgresState, StateBackend, StateConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub limits: Limits,
    /// Limits per POP3 host (`servers:`), shared by every mailbox on it.
    pub servers: Vec<ServerLimits>,
    pub mailboxes: Vec<MailboxConfig>,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `/healthz`, `/readyz` and `/metrics` in `run` mode.
    pub listen: SocketAddr,
    /// One metrics series per mailbox, instead of series summed over mailboxes.
    pub per_mailbox_metrics: bool,
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Mailbox polls running at once.
    pub max_concurrent_polls: usize,
    /// POP3 connections at once to one `host:port`.
    pub max_connections_per_server: usize,
    /// Messages in delivery at once within one poll.
    pub max_in_flight: usize,
    /// RETRs of one message that may break the connection before it is dead-lettered.
    pub max_retrieval_failures: u32,
    /// Longest time one poll may take before it is abandoned (as if killed: nothing lost).
    pub poll_timeout: Duration,
}

/// One host's entry of `servers:`, its provider profile applied. `None` is "no limit".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// The host name, lowercase, as the mailboxes write it.
    pub host: String,
    /// The provider profile its defaults came from.
    pub profile: Option<&'static str>,
    /// No mailbox on the host is polled more often than this.
    pub min_poll_interval: Option<Duration>,
    /// POP3 connections at once to the host, over every mailbox on it.
    pub max_connections: Option<usize>,
    /// Message bytes read per second from the host, over every session.
    pub bytes_per_second: Option<u64>,
    /// Message bytes fetched from the host per UTC day.
    pub bytes_per_day: Option<u64>,
}

impl Config {
    /// The `servers:` entry of a POP3 host, if it has one.
    pub fn server_limits(&self, host: &str) -> Option<&ServerLimits> {
        let host = host.to_ascii_lowercase();
        self.servers.iter().find(|s| s.host == host)
    }
}

#[derive(Clone, Debug)]
pub struct MailboxConfig {
    pub name: String,
    pub pop3: ClientConfig,
    pub schedule: Schedule,
    pub delete: DeletePolicy,
    /// Names of sinks, each checked to exist in `Config::sinks` (with `routes`, the sinks of
    /// unmatched messages).
    pub sinks: Vec<String>,
    /// Routing rules, when the mailbox has any.
    pub routes: Option<std::sync::Arc<crate::route::RuleSet>>,
}

impl MailboxConfig {
    /// Every sink a message of this mailbox may go to: its own, plus those its rules name.
    pub fn all_sinks(&self) -> Vec<String> {
        match &self.routes {
            Some(r) => r.all_sinks(),
            None => self.sinks.clone(),
        }
    }
}

/// When a mailbox is polled.
// Built once per mailbox at startup; boxing the cron pattern would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Schedule {
    Every {
        interval: Duration,
        jitter: Duration,
    },
    Cron {
        /// The expression as written (5 fields), for messages.
        expression: String,
        cron: Box<croner::Cron>,
        jitter: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePolicy {
    Never,
    AfterDelivery,
    AfterDays(u32),
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub name: String,
    pub retry: RetryPolicy,
    pub kind: SinkKind,
}

#[derive(Clone, Debug)]
pub enum SinkKind {
    Maildir(MaildirSettings),
    Webhook(Box<WebhookSettings>),
    S3(Box<crate::sink::s3::S3Settings>),
    Imap(Box<crate::sink::imap::ImapSettings>),
    Gmail(Box<crate::sink::gmail::GmailSettings>),
}

/// How failed deliveries are retried. Within a poll, a retryable failure is retried up to
/// `attempts_per_poll` times with exponential backoff and jitter; after that the message stays
/// on the server and is tried again in later polls until `window` has passed since the first
/// failure, when it is dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts_per_poll: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_per_poll: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            window: Duration::from_secs(24 * 3600),
        }
    }
}
