//! Building the running service from a validated config: the store, the sinks, one context per
//! mailbox, the shared caps.

use crate::config::{Config, SinkConfig, SinkKind};
use crate::engine::deliver::SinkHandle;
use crate::engine::poll::{MailboxContext, PollReport};
use crate::scheduler::{poll_limited, Limiter};
use crate::sink::maildir::MaildirSink;
use crate::sink::webhook::WebhookSink;
use crate::sink::Sink;
use crate::store::{SqliteStore, Store, StoreError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sink {name}: {message}")]
    Sink { name: String, message: String },
    #[error("mailbox {mailbox} names sink {sink}, which is not defined")]
    UnknownSink { mailbox: String, sink: String },
    #[error("no mailbox named {0:?} in the config")]
    UnknownMailbox(String),
    #[error(transparent)]
    Lock(#[from] crate::store::lock::LockError),
}

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sinks: Vec<SinkHandle>,
    pub mailboxes: Vec<Arc<MailboxContext>>,
    pub limiter: Arc<Limiter>,
    /// One polling process per state store (see `store::lock`); `None` only for read-only use.
    _lock: Option<crate::store::PollLock>,
}

/// One ready sink from its config.
pub fn build_sink(cfg: &SinkConfig) -> Result<Arc<dyn Sink>, BuildError> {
    Ok(match &cfg.kind {
        SinkKind::Maildir(settings) => {
            Arc::new(MaildirSink::new(cfg.name.clone(), settings.clone()))
        }
        SinkKind::Imap(settings) => Arc::new(
            crate::sink::imap::ImapSink::new(cfg.name.clone(), (**settings).clone()).map_err(
                |message| BuildError::Sink {
                    name: cfg.name.clone(),
                    message,
                },
            )?,
        ),
        SinkKind::S3(settings) => Arc::new(
            crate::sink::s3::S3Sink::new(cfg.name.clone(), (**settings).clone()).map_err(
                |message| BuildError::Sink {
                    name: cfg.name.clone(),
                    message,
                },
            )?,
        ),
        SinkKind::Webhook(settings) => Arc::new(
            WebhookSink::new(cfg.name.clone(), (**settings).clone()).map_err(|message| {
                BuildError::Sink {
                    name: cfg.name.clone(),
                    message,
                }
            })?,
        ),
    })
}

impl App {
    /// The service for `run`: refused at once while another process polls with this state.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        Self::build_waiting(config, std::time::Duration::ZERO).await
    }

    /// The service, waiting up to `wait` for another process polling with the same state to
    /// finish (`once --wait-lock`).
    pub async fn build_waiting(
        config: Config,
        wait: std::time::Duration,
    ) -> Result<Self, BuildError> {
        let path = config.state.path.clone();
        let lock =
            tokio::task::spawn_blocking(move || crate::store::PollLock::acquire(&path, wait))
                .await
                .map_err(|e| BuildError::Sink {
                    name: "state lock".into(),
                    message: e.to_string(),
                })??;
        Self::build_with(config, Some(lock)).await
    }

    /// The service for read-only uses (`plan`), next to a running daemon: it must never poll.
    pub async fn build_unlocked(config: Config) -> Result<Self, BuildError> {
        Self::build_with(config, None).await
    }

    async fn build_with(
        config: Config,
        lock: Option<crate::store::PollLock>,
    ) -> Result<Self, BuildError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.state.path).await?);
        let sinks = config
            .sinks
            .iter()
            .map(|s| {
                Ok(SinkHandle::new(
                    s.name.clone(),
                    build_sink(s)?,
                    s.retry.clone(),
                ))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let mut mailboxes = Vec::new();
        for m in &config.mailboxes {
            let handles = m
                .sinks
                .iter()
                .map(|name| {
                    sinks
                        .iter()
                        .find(|h| &h.name == name)
                        .cloned()
                        .ok_or_else(|| BuildError::UnknownSink {
                            mailbox: m.name.clone(),
                            sink: name.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            mailboxes.push(Arc::new(MailboxContext {
                mailbox: m.clone(),
                sinks: handles,
                store: store.clone(),
                spool_dir: config.state.spool_dir.join(&m.name),
                max_in_flight: config.limits.max_in_flight,
                progress: Default::default(),
                retention: config.state.retention,
                max_retrieval_failures: config.limits.max_retrieval_failures,
                poll_timeout: config.limits.poll_timeout,
                last_prune: Default::default(),
            }));
        }
        let servers: Vec<String> = config.mailboxes.iter().map(|m| m.pop3.server()).collect();
        let limiter = Arc::new(Limiter::new(
            config.limits.max_concurrent_polls,
            config.limits.max_connections_per_server,
            servers.iter().map(String::as_str),
        ));
        Ok(Self {
            config,
            store,
            sinks,
            mailboxes,
            limiter,
            _lock: lock,
        })
    }

    /// Mailboxes selected by `--mailbox` (all when `None`).
    pub fn select(&self, only: Option<&str>) -> Result<Vec<Arc<MailboxContext>>, BuildError> {
        match only {
            None => Ok(self.mailboxes.clone()),
            Some(name) => self
                .mailboxes
                .iter()
                .find(|m| m.mailbox.name == name)
                .map(|m| vec![m.clone()])
                .ok_or_else(|| BuildError::UnknownMailbox(name.to_string())),
        }
    }

    /// One pass over the given mailboxes, concurrently within the caps. Each poll runs in its
    /// own task, so a panic fails that mailbox's report, not the whole run.
    pub async fn run_once(
        &self,
        mailboxes: &[Arc<MailboxContext>],
        shutdown: &CancellationToken,
    ) -> Vec<PollReport> {
        let polls = mailboxes.iter().map(|ctx| {
            let (ctx, limiter, shutdown) = (ctx.clone(), self.limiter.clone(), shutdown.clone());
            async move {
                let name = ctx.mailbox.name.clone();
                let task = tokio::spawn(async move { poll_limited(&ctx, &limiter, &shutdown).await });
                let failed = |kind: &str, message: String| PollReport {
                    mailbox: name.clone(),
                    error: Some((kind.into(), message)),
                    ..Default::default()
                };
                match task.await {
                    Ok(Some(report)) => report,
                    Ok(None) => failed("shutdown", "stopped before the poll began".into()),
                    Err(e) if e.is_panic() => {
                        let message = crate::scheduler::panic_message(e.into_panic().as_ref());
                        tracing::error!(mailbox = %name, error = %message, "Poll panicked (a bug: please report it)");
                        crate::metrics::poll_panicked(&name);
                        failed("panic", format!("poll panicked: {message}"))
                    }
                    Err(e) => failed("panic", e.to_string()),
                }
            }
        });
        futures_util::future::join_all(polls).await
    }

    /// End of a run: every sink closes its connections politely (IMAP LOGOUT).
    pub async fn close_sinks(&self) {
        futures_util::future::join_all(self.sinks.iter().map(|h| h.sink.close())).await;
    }
}
