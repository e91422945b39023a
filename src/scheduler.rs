//! When each mailbox is polled: one tokio task per mailbox (so never two polls of the same
//! mailbox at once), an interval or a 5-field cron (croner) plus random jitter, a global cap on
//! polls at once, a cap on connections per POP3 server (per host with a `servers:` entry,
//! which may set its own) and the host's minimum poll interval.
//!
//! A panic in a poll is caught where the poll runs, so it ends that poll only; the mailbox is
//! retried with backoff and [`Health`] tells `/readyz`. Auth and TLS failures back off exponentially (a wrong
//! password polled every minute locks accounts and trips fail2ban), and the server's
//! LOGIN-DELAY is honoured whatever the schedule says.

pub mod leases;

use crate::config::Schedule;
use crate::engine::poll::{poll, MailboxContext, PollReport};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Caps shared by every poll.
pub struct Limiter {
    global: Arc<Semaphore>,
    global_cap: usize,
    /// Per server (cap key): its semaphore and its configured cap.
    per_server: HashMap<String, (Arc<Semaphore>, usize)>,
    /// The cap of a server not listed at start.
    per_server_cap: usize,
    /// The hosts' rates and budgets, shared across replicas like the caps.
    hosts: Option<Arc<crate::politeness::Hosts>>,
    /// Tasks holding back permits while replicas share the caps (see [`Limiter::share`]).
    held_back: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    replicas: std::sync::atomic::AtomicUsize,
}

impl Limiter {
    pub fn new<'a>(
        max_polls: usize,
        per_server: usize,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let caps = servers.into_iter().map(|s| (s.to_string(), per_server));
        Self::with_caps(max_polls, per_server, caps, None)
    }

    /// Each server (cap key) with its own cap; `default_cap` for any other.
    pub fn with_caps(
        max_polls: usize,
        default_cap: usize,
        caps: impl IntoIterator<Item = (String, usize)>,
        hosts: Option<Arc<crate::politeness::Hosts>>,
    ) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_polls.max(1))),
            global_cap: max_polls.max(1),
            per_server: caps
                .into_iter()
                .map(|(s, cap)| {
                    let cap = cap.max(1);
                    (s, (Arc::new(Semaphore::new(cap)), cap))
                })
                .collect(),
            per_server_cap: default_cap.max(1),
            hosts,
            held_back: Default::default(),
            replicas: std::sync::atomic::AtomicUsize::new(1),
        }
    }

    /// `replicas` processes poll the same servers (PostgreSQL): keep `cap / replicas` (at least
    /// one) of each cap for this one, so a server sees about the configured connections in all.
    /// The rest are held back by a task as they come free, and given back when peers leave.
    pub fn share(&self, replicas: usize) {
        use std::sync::atomic::Ordering;
        let n = replicas.max(1);
        if self.replicas.swap(n, Ordering::SeqCst) == n {
            return;
        }
        let mut held = self
            .held_back
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.drain(..).for_each(|task| task.abort());
        let mut hold_back = |sem: &Arc<Semaphore>, cap: usize| {
            let back = cap - (cap / n).max(1);
            if back == 0 {
                return;
            }
            let sem = sem.clone();
            held.push(tokio::spawn(async move {
                let n = u32::try_from(back).unwrap_or(u32::MAX);
                if let Ok(_permits) = sem.acquire_many_owned(n).await {
                    std::future::pending::<()>().await;
                }
            }));
        };
        hold_back(&self.global, self.global_cap);
        for (sem, cap) in self.per_server.values() {
            hold_back(sem, *cap);
        }
        if let Some(hosts) = &self.hosts {
            hosts.share(n);
        }
    }

    /// Free slots now: (global, on `server`).
    #[cfg(test)]
    fn available(&self, server: &str) -> (usize, usize) {
        (
            self.global.available_permits(),
            self.per_server
                .get(server)
                .map_or(0, |(s, _)| s.available_permits()),
        )
    }

    /// Wait for a slot on `server`, then for a global slot. In that order: a poll waiting for
    /// its busy server must not sit on a global slot that a poll of another server could use.
    pub async fn acquire(&self, server: &str) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::with_capacity(2);
        let sem = self
            .per_server
            .get(server)
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| Arc::new(Semaphore::new(self.per_server_cap)));
        if let Ok(p) = sem.acquire_owned().await {
            permits.push(p);
        }
        if let Ok(p) = self.global.clone().acquire_owned().await {
            permits.push(p);
        }
        permits
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        max.mul_f64(rand::random::<f64>())
    }
}

/// How long from `now` until the next poll, given when the previous one started (`None` for the
/// first). An interval schedule polls at once on start; a cron schedule waits for its next match.
pub fn next_delay(
    schedule: &Schedule,
    previous_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Duration {
    match schedule {
        Schedule::Every {
            interval,
            jitter: j,
        } => {
            let base = match previous_start {
                None => Duration::ZERO,
                Some(prev) => {
                    let elapsed = (now - prev).to_std().unwrap_or(Duration::ZERO);
                    interval.saturating_sub(elapsed)
                }
            };
            base + jitter(*j)
        }
        Schedule::Cron {
            cron, jitter: j, ..
        } => {
            let base = cron
                .find_next_occurrence(&now, false)
                .ok()
                .and_then(|next| (next - now).to_std().ok())
                // An expression with no next match (validated against) falls back to an hour.
                .unwrap_or(Duration::from_secs(3600));
            base + jitter(*j)
        }
    }
}

/// Poll one mailbox once, within the caps. `None` when shut down while waiting for a slot.
pub async fn poll_limited(
    ctx: &MailboxContext,
    limiter: &Limiter,
    shutdown: &CancellationToken,
) -> Option<PollReport> {
    let server = ctx.host.key.clone();
    let _permits = tokio::select! {
        p = limiter.acquire(&server) => p,
        _ = shutdown.cancelled() => return None,
    };
    // A running poll sees the token itself and stops at a clean point. Boxed, and only once
    // the permits are held: a poll's state is kilobytes, and at start every mailbox waits
    // here at once (10,000 mailboxes held 45 MB of waiting polls).
    Some(Box::pin(poll(ctx, shutdown)).await)
}

/// Exponential backoff: `base × 2^(failures-1)`, at most `cap`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row (0 for none).
    pub fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// How the loop of a mailbox reacts to failures.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// After a rejected login or a TLS failure (needs a human; retrying often locks accounts).
    pub auth: Backoff,
    /// After a poll panicked (a bug; retried in case it was a one-off).
    pub panic: Backoff,
    /// After the server said "not now" (`[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`, too many
    /// connections): polite to providers that throttle, and the mailbox may be locked by
    /// another client.
    pub busy: Backoff,
    /// No poll starts sooner than this after the previous one began (the host's
    /// `min_poll_interval`; a cron schedule may fire more often than it).
    pub min_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            auth: Backoff {
                base: Duration::from_secs(60),
                cap: Duration::from_secs(3600),
            },
            panic: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(600),
            },
            busy: Backoff {
                base: Duration::from_secs(30),
                cap: Duration::from_secs(900),
            },
            min_interval: Duration::ZERO,
        }
    }
}

/// Whether each mailbox's loop is alive, for `/readyz`.
#[derive(Default)]
pub struct Health {
    mailboxes: std::sync::Mutex<BTreeMap<String, MailboxHealth>>,
}

/// One mailbox's loop, as `/readyz` shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct MailboxHealth {
    /// Its last poll panicked (it is retried with backoff).
    pub panicking: bool,
    pub consecutive_panics: u32,
    /// Its task ended while the service runs: it is not polled any more.
    pub task_ended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MailboxHealth {
    pub fn ok(&self) -> bool {
        !self.panicking && !self.task_ended
    }
}

impl Health {
    fn update(&self, mailbox: &str, f: impl FnOnce(&mut MailboxHealth)) {
        // A panic elsewhere while holding the lock leaves the map usable.
        let mut map = self
            .mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(map.entry(mailbox.to_string()).or_default());
    }

    /// A mailbox's loop started (listed as healthy from then on).
    pub fn started(&self, mailbox: &str) {
        self.update(mailbox, |h| *h = MailboxHealth::default());
    }

    fn poll_returned(&self, mailbox: &str) {
        self.update(mailbox, |h| {
            h.panicking = false;
            h.consecutive_panics = 0;
            h.error = None;
        });
    }

    fn poll_panicked(&self, mailbox: &str, message: &str) {
        self.update(mailbox, |h| {
            h.panicking = true;
            h.consecutive_panics += 1;
            h.error = Some(format!("poll panicked: {message}"));
        });
    }

    /// The mailbox's task ended before shutdown: it will not be polled again.
    pub fn task_ended(&self, mailbox: &str, why: &str) {
        self.update(mailbox, |h| {
            h.task_ended = true;
            h.error = Some(format!("task ended: {why}"));
        });
    }

    /// Every mailbox with its state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, MailboxHealth> {
        self.mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The text of a panic payload, for the log and `/readyz`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}

/// The daemon loop of one mailbox, until `shutdown`. `on_report` sees every poll's report.
pub async fn run_mailbox(
    ctx: Arc<MailboxContext>,
    limiter: Arc<Limiter>,
    shutdown: CancellationToken,
    on_report: Arc<dyn Fn(&PollReport) + Send + Sync>,
    health: Arc<Health>,
) {
    let name = ctx.mailbox.name.clone();
    let schedule = ctx.mailbox.schedule.clone();
    let policy = Policy {
        min_interval: ctx.host.min_poll_interval,
        ..Policy::default()
    };
    let token = shutdown.clone();
    let poll_once = move || {
        let (ctx, limiter, token) = (ctx.clone(), limiter.clone(), token.clone());
        async move { poll_limited(&ctx, &limiter, &token).await }
    };
    drive(
        &name,
        &schedule,
        policy,
        &shutdown,
        poll_once,
        on_report.as_ref(),
        &health,
    )
    .await;
}

/// Runs [`run_mailbox`] and starts it again, with backoff, if it ends before shutdown (polls
/// are isolated inside it, so that is a bug in the loop itself); meanwhile `/readyz` names the
/// mailbox. A panic is caught here rather than by running the loop as a task of its own: at
/// 10,000 mailboxes a second task each cost 5 MB.
pub async fn supervise_mailbox(
    ctx: Arc<MailboxContext>,
    limiter: Arc<Limiter>,
    shutdown: CancellationToken,
    on_report: Arc<dyn Fn(&PollReport) + Send + Sync>,
    health: Arc<Health>,
) {
    let name = ctx.mailbox.name.clone();
    let mut ends = 0u32;
    loop {
        let ended = std::panic::AssertUnwindSafe(run_mailbox(
            ctx.clone(),
            limiter.clone(),
            shutdown.clone(),
            on_report.clone(),
            health.clone(),
        ))
        .catch_unwind()
        .await;
        let why = match ended {
            _ if shutdown.is_cancelled() => return,
            Ok(()) => "returned".to_string(),
            Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        };
        ends += 1;
        let wait = Policy::default().panic.after(ends);
        tracing::error!(mailbox = %name, error = %why, restart_in_secs = wait.as_secs(),
            "Mailbox task ended (a bug: please report it); restarting it");
        crate::metrics::poll_panicked(&name);
        health.task_ended(&name, &why);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The loop itself, apart from how a poll is made (so tests can inject polls that fail,
/// panic or ask for a LOGIN-DELAY).
pub async fn drive<F, Fut>(
    name: &str,
    schedule: &Schedule,
    policy: Policy,
    shutdown: &CancellationToken,
    mut poll_once: F,
    on_report: &(dyn Fn(&PollReport) + Send + Sync),
    health: &Health,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<PollReport>> + Send + 'static,
{
    health.started(name);
    let mut previous: Option<DateTime<Utc>> = None;
    // The earliest start of the next poll (backoff, LOGIN-DELAY), whatever the schedule says.
    let mut not_before: Option<(Instant, &'static str)> = None;
    let (mut auth_failures, mut panics, mut busy) = (0u32, 0u32, 0u32);
    let mut last_start: Option<Instant> = None;
    loop {
        let mut delay = next_delay(schedule, previous, Utc::now());
        if let Some(last) = last_start {
            let floor = (last + policy.min_interval).saturating_duration_since(Instant::now());
            if floor > delay {
                tracing::debug!(
                    mailbox = name,
                    wait_secs = floor.as_secs_f64(),
                    "Waiting for the server's min_poll_interval"
                );
                delay = floor;
            }
        }
        if let Some((at, why)) = not_before {
            let wait = at.saturating_duration_since(Instant::now());
            if wait > delay {
                tracing::debug!(
                    mailbox = name,
                    wait_secs = wait.as_secs_f64(),
                    reason = why,
                    "Waiting longer than the schedule says"
                );
                delay = wait;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        previous = Some(Utc::now());
        let started = Instant::now();
        last_start = Some(started);
        not_before = None;
        // A panic ends this poll, not the mailbox's loop. Caught here rather than by running
        // the poll as a task of its own: at start every mailbox's first poll waits for a slot
        // at once, and 10,000 waiting tasks left megabytes behind in the workers' heaps.
        match std::panic::AssertUnwindSafe(poll_once())
            .catch_unwind()
            .await
        {
            Ok(None) => return,
            Ok(Some(report)) => {
                panics = 0;
                health.poll_returned(name);
                on_report(&report);
                let auth_kind = report
                    .error
                    .as_ref()
                    .map(|(kind, _)| kind.as_str())
                    .filter(|k| matches!(*k, "auth" | "tls"));
                match auth_kind {
                    Some(kind) => {
                        auth_failures += 1;
                        let wait = policy.auth.after(auth_failures);
                        not_before = Some((started + wait, "backoff after auth/TLS failures"));
                        let next_try = previous.map(|p| p + wait).unwrap_or_else(Utc::now);
                        crate::metrics::poll_backoff(name, wait);
                        if auth_failures == 1 {
                            tracing::error!(mailbox = name, kind, next_try = %next_try.to_rfc3339(),
                                "Login or TLS failed; fix the credentials or TLS settings (popbridge check --connect). Backing off while it fails, up to {}s between tries",
                                policy.auth.cap.as_secs());
                        } else {
                            tracing::warn!(mailbox = name, kind, failures = auth_failures, next_try = %next_try.to_rfc3339(),
                                "Login or TLS still failing; backing off");
                        }
                    }
                    None => {
                        if auth_failures > 0 {
                            tracing::info!(
                                mailbox = name,
                                failures = auth_failures,
                                "Login works again; back to the schedule"
                            );
                            crate::metrics::poll_backoff(name, Duration::ZERO);
                        }
                        auth_failures = 0;
                    }
                }
                if report.error.as_ref().is_some_and(|(k, _)| k == "temporary") {
                    busy += 1;
                    let wait = policy.busy.after(busy);
                    tracing::warn!(
                        mailbox = name,
                        refusals = busy,
                        retry_in_secs = wait.as_secs(),
                        "Server asked to try later; backing off"
                    );
                    let at = started + wait;
                    if not_before.is_none_or(|(t, _)| at > t) {
                        not_before = Some((at, "backoff after \"try later\" answers"));
                    }
                } else {
                    busy = 0;
                }
                if let Some(d) = report.login_delay {
                    let at = started + d;
                    if not_before.is_none_or(|(t, _)| at > t) {
                        not_before = Some((at, "server LOGIN-DELAY"));
                    }
                }
            }
            Err(panic) => {
                panics += 1;
                let message = panic_message(panic.as_ref());
                let wait = policy.panic.after(panics);
                tracing::error!(mailbox = name, panics, retry_in_secs = wait.as_secs(), error = %message,
                    "Poll panicked (a bug: please report it); retrying the mailbox with backoff");
                crate::metrics::poll_panicked(name);
                health.poll_panicked(name, &message);
                not_before = Some((started + wait, "backoff after a panic"));
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
