//! Building the running service from a validated config: the store, the sinks, one context per
//! mailbox, the shared caps.

use crate::config::StateBackend;
use crate::config::{Config, SinkConfig, SinkKind};
use crate::engine::deliver::SinkHandle;
use crate::engine::poll::{MailboxContext, PollReport};
use crate::scheduler::leases::{Leased, Replica};
use crate::scheduler::Health;
use crate::scheduler::{poll_limited, Limiter};
use crate::sink::maildir::MaildirSink;
use crate::sink::webhook::WebhookSink;
use crate::sink::Sink;
use crate::store::{LeaseSlot, PgStore, SqliteStore, Store, StoreError};
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
    /// The config the service was built from, without its mailboxes: each mailbox's settings
    /// live in its context (`mailboxes`), once.
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sinks: Vec<SinkHandle>,
    pub mailboxes: Vec<Arc<MailboxContext>>,
    pub limiter: Arc<Limiter>,
    /// One polling process per SQLite state (see `store::lock`); PostgreSQL uses leases.
    _lock: Option<crate::store::PollLock>,
    /// On PostgreSQL: the shared store and each mailbox's lease.
    leases: Option<(PgStore, Vec<Arc<LeaseSlot>>)>,
    /// This process's name as a lease owner and as its database connections' application name.
    replica_id: String,
}

/// What `on_report` gets: every poll's report.
pub type OnReport = Arc<dyn Fn(&PollReport) + Send + Sync>;

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
        SinkKind::Gmail(settings) => {
            use crate::sink::gmail::{auth, GmailSink};
            let settings = (**settings).clone();
            let made = match settings.oauth2.clone() {
                Some(source) => GmailSink::with_tokens(
                    cfg.name.clone(),
                    settings,
                    Arc::new(auth::OAuth2Tokens(source)),
                ),
                None => GmailSink::new(cfg.name.clone(), settings),
            };
            Arc::new(made.map_err(|message| BuildError::Sink {
                name: cfg.name.clone(),
                message,
            })?)
        }
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
        Self::build_with(config, Some(wait)).await
    }

    /// The service for read-only uses (`plan`), next to a running daemon: it must never poll.
    pub async fn build_unlocked(config: Config) -> Result<Self, BuildError> {
        Self::build_with(config, None).await
    }

    /// `lock_wait`: take the one-poller lock of a SQLite state, waiting up to this long;
    /// `None` only for read-only use.
    async fn build_with(
        mut config: Config,
        lock_wait: Option<std::time::Duration>,
    ) -> Result<Self, BuildError> {
        crate::metrics::configure(config.http.per_mailbox_metrics);
        let replica_id = replica_id();
        let (lock, store, pg): (_, Arc<dyn Store>, _) = match &config.state.backend {
            StateBackend::Sqlite => {
                let lock = match lock_wait {
                    Some(wait) => {
                        let path = config.state.path.clone();
                        Some(
                            tokio::task::spawn_blocking(move || {
                                crate::store::PollLock::acquire(&path, wait)
                            })
                            .await
                            .map_err(|e| BuildError::Sink {
                                name: "state lock".into(),
                                message: e.to_string(),
                            })??,
                        )
                    }
                    None => None,
                };
                let store = Arc::new(SqliteStore::open(&config.state.path).await?);
                (lock, store, None)
            }
            StateBackend::Postgres(settings) => {
                let mut settings = crate::store::postgres::PgSettings::from_config(settings)?;
                settings.application_name = replica_id.clone();
                let pg = PgStore::open(&settings).await?;
                (None, Arc::new(pg.clone()), Some(pg))
            }
        };
        let mut slots = Vec::new();
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
        // Daily upload budgets count what earlier processes delivered today.
        for h in &sinks {
            if let Some(since) = h.sink.daily_usage_since() {
                let used = store
                    .delivered_bytes_since(&h.name, since.timestamp_millis())
                    .await?;
                h.sink.seed_daily_usage(&used);
            }
        }
        let hosts = Arc::new(crate::politeness::Hosts::build(&config));
        seed_download_budgets(&config, &hosts, store.as_ref()).await?;
        // Each mailbox's settings move into its context: kept once, not also in `config`.
        let mut mailboxes = Vec::with_capacity(config.mailboxes.len());
        for m in std::mem::take(&mut config.mailboxes) {
            // Every sink the mailbox may route to: its own, plus those its rules name.
            let mut handles = m
                .all_sinks()
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
            // A collected Vec has room for 4 at least; at 10,000 mailboxes that matters.
            handles.shrink_to_fit();
            // On PostgreSQL each mailbox writes through a handle fenced by its lease.
            let (mailbox_store, owner): (Arc<dyn Store>, _) = match &pg {
                Some(pg) => {
                    let slot = Arc::new(LeaseSlot::new(m.name.clone()));
                    slots.push(slot.clone());
                    let held = slot.clone();
                    let owner = crate::sink::Ownership::new(move || held.is_held());
                    (Arc::new(pg.bound(slot)), owner)
                }
                None => (store.clone(), crate::sink::Ownership::default()),
            };
            let host = hosts.for_mailbox(&m.pop3, &config);
            mailboxes.push(Arc::new(MailboxContext {
                spool_dir: config.state.spool_dir.join(&m.name),
                mailbox: m,
                sinks: handles,
                store: mailbox_store,
                max_in_flight: config.limits.max_in_flight,
                progress: Default::default(),
                retention: config.state.retention,
                max_retrieval_failures: config.limits.max_retrieval_failures,
                poll_timeout: config.limits.poll_timeout,
                last_prune: Default::default(),
                owner,
                host,
            }));
        }
        let limiter = Arc::new(Limiter::with_caps(
            config.limits.max_concurrent_polls,
            config.limits.max_connections_per_server,
            hosts.caps(config.limits.max_connections_per_server),
            Some(hosts.clone()),
        ));
        Ok(Self {
            config,
            store,
            sinks,
            mailboxes,
            limiter,
            _lock: lock,
            leases: pg.map(|pg| (pg, slots)),
            replica_id,
        })
    }

    /// The daemon: every mailbox on SQLite; on PostgreSQL a fair share of them, by lease.
    /// Returns at `shutdown` once every poll has ended (and, on PostgreSQL, leases are released).
    pub async fn run_mailboxes(
        &self,
        shutdown: &CancellationToken,
        on_report: OnReport,
        health: Arc<Health>,
    ) {
        if let Some((pg, slots)) = &self.leases {
            let ttl = match &self.config.state.backend {
                StateBackend::Postgres(p) => p.lease_ttl,
                StateBackend::Sqlite => return,
            };
            let replica = Replica {
                store: pg.clone(),
                id: self.replica_id.clone(),
                ttl,
                mailboxes: slots
                    .iter()
                    .zip(&self.mailboxes)
                    .map(|(slot, ctx)| Leased {
                        slot: slot.clone(),
                        ctx: ctx.clone(),
                    })
                    .collect(),
            };
            replica
                .run(self.limiter.clone(), shutdown.clone(), on_report, health)
                .await;
            return;
        }
        let tasks: Vec<_> = self
            .mailboxes
            .iter()
            .map(|ctx| {
                health.started(&ctx.mailbox.name);
                tokio::spawn(crate::scheduler::supervise_mailbox(
                    ctx.clone(),
                    self.limiter.clone(),
                    shutdown.clone(),
                    on_report.clone(),
                    health.clone(),
                ))
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "Mailbox watcher failed");
            }
        }
    }

    /// `once` on PostgreSQL: lease the selected mailboxes for one poll (a mailbox a replica
    /// holds is skipped). Returns the leases to release and the mailboxes not leased.
    async fn lease_for_once(
        &self,
        mailboxes: &[Arc<MailboxContext>],
    ) -> Result<(Vec<crate::store::postgres::PollTimes>, Vec<String>), StoreError> {
        let Some((pg, slots)) = &self.leases else {
            return Ok((Vec::new(), Vec::new()));
        };
        let names: Vec<String> = mailboxes.iter().map(|m| m.mailbox.name.clone()).collect();
        let ttl = self.config.limits.poll_timeout * 2;
        let sent = std::time::Instant::now();
        let got = pg.claim(ONCE_OWNER, &names, names.len(), ttl).await?;
        let mut claims = Vec::new();
        for c in got {
            if let Some(slot) = slots.iter().find(|s| s.mailbox == c.mailbox) {
                claims.push(crate::store::postgres::PollTimes {
                    claim_id: c.fence.claim_id.clone(),
                    ..Default::default()
                });
                // A poll ends by `poll_timeout`; the lease lasts twice that.
                slot.set(c.fence, sent + self.config.limits.poll_timeout);
            }
        }
        let skipped = slots
            .iter()
            .filter(|s| names.contains(&s.mailbox) && !s.is_held())
            .map(|s| s.mailbox.clone())
            .collect();
        Ok((claims, skipped))
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
        let (claims, skipped) = match self.lease_for_once(mailboxes).await {
            Ok(c) => c,
            Err(e) => {
                return mailboxes
                    .iter()
                    .map(|m| PollReport {
                        mailbox: m.mailbox.name.clone(),
                        error: Some(("state".into(), e.to_string())),
                        ..Default::default()
                    })
                    .collect()
            }
        };
        let mut reports: Vec<PollReport> = skipped
            .iter()
            .map(|name| {
                tracing::info!(mailbox = %name, "Skipped: a replica holds its lease");
                PollReport {
                    mailbox: name.clone(),
                    error: Some(("leased".into(), "a replica holds its lease".into())),
                    ..Default::default()
                }
            })
            .collect();
        for m in mailboxes
            .iter()
            .filter(|m| skipped.contains(&m.mailbox.name))
        {
            m.progress.finish(crate::progress::Ended::Failed(
                "leased: a replica holds its lease".into(),
            ));
        }
        let mailboxes: Vec<_> = mailboxes
            .iter()
            .filter(|m| !skipped.contains(&m.mailbox.name))
            .cloned()
            .collect();
        let polls = mailboxes.iter().map(|ctx| {
            let (ctx, limiter, shutdown) = (ctx.clone(), self.limiter.clone(), shutdown.clone());
            async move {
                let name = ctx.mailbox.name.clone();
                let progress = ctx.progress.clone();
                let task = tokio::spawn(async move { poll_limited(&ctx, &limiter, &shutdown).await });
                let failed = |kind: &str, message: String| {
                    progress.finish(crate::progress::Ended::Failed(format!("{kind}: {message}")));
                    PollReport {
                        mailbox: name.clone(),
                        error: Some((kind.into(), message)),
                        ..Default::default()
                    }
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
        reports.extend(futures_util::future::join_all(polls).await);
        if let Some((pg, slots)) = &self.leases {
            if let Err(e) = pg.release(ONCE_OWNER, &claims).await {
                tracing::warn!(error = %e, "Cannot release leases; they expire by themselves");
            }
            slots.iter().for_each(|s| s.clear());
        }
        reports
    }

    /// End of a run: every sink closes its connections politely (IMAP LOGOUT).
    pub async fn close_sinks(&self) {
        futures_util::future::join_all(self.sinks.iter().map(|h| h.sink.close())).await;
    }
}

/// Daily download budgets count what earlier processes fetched from their host today (the
/// state's fetch times and sizes), so a second run the same day does not start from zero.
async fn seed_download_budgets(
    config: &Config,
    hosts: &crate::politeness::Hosts,
    store: &dyn Store,
) -> Result<(), BuildError> {
    let mut fetched = None;
    for h in hosts.budgeted() {
        let Some(budget) = &h.budget else { continue };
        if fetched.is_none() {
            let since = budget.today_start().timestamp_millis();
            fetched = Some(store.fetched_bytes_since(since).await?);
        }
        let by_mailbox = fetched.as_ref().map_or(&[][..], |f| f.as_slice());
        let used: u64 = config
            .mailboxes
            .iter()
            .filter(|m| m.pop3.host.eq_ignore_ascii_case(h.host()))
            .filter_map(|m| by_mailbox.iter().find(|(name, _)| *name == m.name))
            .map(|(_, bytes)| *bytes)
            .sum();
        budget.seed(used);
        tracing::info!(
            host = h.host(),
            fetched_today = used,
            budget = budget.limit(),
            "Daily download budget: counting what the state says was fetched today"
        );
    }
    Ok(())
}

/// The owner name of `once` runs' leases.
const ONCE_OWNER: &str = "once";

/// Unique per process, readable in `state leases`: host, pid and a random suffix.
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
