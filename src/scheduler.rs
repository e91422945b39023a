//! When each mailbox is polled: one tokio task per mailbox (so never two polls of the same
//! mailbox at once), an interval or a 5-field cron (croner) plus random jitter, a global cap on
//! polls at once and a cap on connections per POP3 server.

use crate::config::Schedule;
use crate::engine::poll::{poll, MailboxContext, PollReport};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Caps shared by every poll.
pub struct Limiter {
    global: Arc<Semaphore>,
    per_server: HashMap<String, Arc<Semaphore>>,
    per_server_cap: usize,
}

impl Limiter {
    pub fn new<'a>(
        max_polls: usize,
        per_server: usize,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let per_server_cap = per_server.max(1);
        Self {
            global: Arc::new(Semaphore::new(max_polls.max(1))),
            per_server: servers
                .into_iter()
                .map(|s| (s.to_string(), Arc::new(Semaphore::new(per_server_cap))))
                .collect(),
            per_server_cap,
        }
    }

    /// Wait for a global slot and a slot on `server`.
    pub async fn acquire(&self, server: &str) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::with_capacity(2);
        if let Ok(p) = self.global.clone().acquire_owned().await {
            permits.push(p);
        }
        let sem = self
            .per_server
            .get(server)
            .cloned()
            .unwrap_or_else(|| Arc::new(Semaphore::new(self.per_server_cap)));
        if let Ok(p) = sem.acquire_owned().await {
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
    let server = ctx.mailbox.pop3.server();
    let _permits = tokio::select! {
        p = limiter.acquire(&server) => p,
        _ = shutdown.cancelled() => return None,
    };
    // A running poll sees the token itself and stops at a clean point.
    Some(poll(ctx, shutdown).await)
}

/// The daemon loop of one mailbox, until `shutdown`. `on_report` sees every poll's report.
pub async fn run_mailbox(
    ctx: Arc<MailboxContext>,
    limiter: Arc<Limiter>,
    shutdown: CancellationToken,
    on_report: Arc<dyn Fn(&PollReport) + Send + Sync>,
) {
    let mut previous: Option<DateTime<Utc>> = None;
    loop {
        let delay = next_delay(&ctx.mailbox.schedule, previous, Utc::now());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        previous = Some(Utc::now());
        let Some(report) = poll_limited(&ctx, &limiter, &shutdown).await else {
            return;
        };
        on_report(&report);
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_polls_at_once_then_every_interval() {
        let s = Schedule::Every {
            interval: Duration::from_secs(60),
            jitter: Duration::ZERO,
        };
        let now = Utc::now();
        assert_eq!(next_delay(&s, None, now), Duration::ZERO);
        let d = next_delay(&s, Some(now - chrono::Duration::seconds(15)), now);
        assert_eq!(d, Duration::from_secs(45));
        // A poll that took longer than the interval is followed at once.
        assert_eq!(
            next_delay(&s, Some(now - chrono::Duration::seconds(600)), now),
            Duration::ZERO
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = Schedule::Every {
            interval: Duration::from_secs(60),
            jitter: Duration::from_secs(5),
        };
        for _ in 0..100 {
            let d = next_delay(&s, None, Utc::now());
            assert!(d <= Duration::from_secs(5), "{d:?}");
        }
    }

    #[test]
    fn cron_waits_for_the_next_match() {
        let cron = croner::Cron::new("*/5 * * * *").parse().unwrap();
        let s = Schedule::Cron {
            expression: "*/5 * * * *".into(),
            cron: Box::new(cron),
            jitter: Duration::ZERO,
        };
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:02:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(next_delay(&s, None, now), Duration::from_secs(150));
    }

    #[tokio::test]
    async fn per_server_cap_holds_back_a_second_connection() {
        let limiter = Arc::new(Limiter::new(10, 1, ["a:110", "b:110"]));
        let held = limiter.acquire("a:110").await;
        // Another server is not held back...
        let other =
            tokio::time::timeout(Duration::from_millis(200), limiter.acquire("b:110")).await;
        assert!(other.is_ok());
        // ...the same server is, until the first poll ends.
        let l2 = limiter.clone();
        let waiter = tokio::spawn(async move { l2.acquire("a:110").await.len() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), 2);
    }
}
