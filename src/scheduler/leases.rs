//! The daemon loop of a replica on PostgreSQL: claim a fair share of the mailboxes, poll only
//! those, renew every lease in one statement, give up what it loses or no longer needs.
//!
//! A lease is renewed every `ttl / 4`; after a renewal sent at `t` the replica works on the
//! mailbox only until `t + ttl / 2` (its local deadline), well before the database can let a
//! peer take it over at `t + ttl`. Past the deadline the store handle refuses writes and the
//! mailbox's poll is cancelled; a write that races a takeover anyway is refused by the fence.
//!
//! Each mailbox's poll times ride along with the renewals, so a new owner starts at the poll
//! the old one planned instead of at once. A replica that stops releases its leases and says
//! so (`NOTIFY`); peers listen and claim at once instead of at their next tick.

use super::{next_delay, supervise_mailbox, Health, Limiter};
use crate::engine::poll::{MailboxContext, PollReport};
use crate::store::postgres::PollTimes;
use crate::store::{now_millis, LeaseSlot, Millis, PgStore};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Each mailbox's (next planned poll, last poll), in Unix milliseconds, from its reports.
type Times = Arc<Mutex<HashMap<String, (Millis, Millis)>>>;

/// A mailbox this replica may poll once it holds the lease in `slot`.
pub struct Leased {
    pub slot: Arc<LeaseSlot>,
    pub ctx: Arc<MailboxContext>,
}

pub struct Replica {
    pub store: PgStore,
    /// Unique per process: `<hostname>-<pid>-<random>`.
    pub id: String,
    pub ttl: Duration,
    pub mailboxes: Vec<Leased>,
}

struct Running {
    slot: Arc<LeaseSlot>,
    token: CancellationToken,
    task: JoinHandle<()>,
    /// Cancelled to hand the mailbox to a peer: release the lease once the task ended.
    releasing: bool,
}

/// At most this many mailboxes per replica: an even split, with up to 10% slack where that
/// cannot leave a replica with nothing (the others' shares must not cover every mailbox).
pub fn fair_share(mailboxes: usize, live_replicas: u64) -> usize {
    let live = usize::try_from(live_replicas.max(1)).unwrap_or(usize::MAX);
    let even = mailboxes.div_ceil(live);
    let slack = mailboxes * 11 / (live * 10);
    let share = if slack > even && slack * (live - 1) < mailboxes {
        slack
    } else {
        even
    };
    share.max(1)
}

impl Replica {
    pub async fn run(
        self,
        limiter: Arc<Limiter>,
        shutdown: CancellationToken,
        on_report: Arc<dyn Fn(&PollReport) + Send + Sync>,
        health: Arc<Health>,
    ) {
        let tick = self.ttl / 4;
        let names: Vec<String> = self
            .mailboxes
            .iter()
            .map(|m| m.ctx.mailbox.name.clone())
            .collect();
        let mut running: HashMap<String, Running> = HashMap::new();
        let times: Times = Arc::default();
        let on_report = self.recording(times.clone(), on_report);
        let woken = Arc::new(Notify::new());
        let listening = tokio::spawn(listen(
            self.store.clone(),
            self.id.clone(),
            woken.clone(),
            shutdown.clone(),
            tick,
        ));
        tracing::info!(replica = %self.id, mailboxes = names.len(), lease_ttl_secs = self.ttl.as_secs_f64(),
            "Claiming mailbox leases on PostgreSQL");
        loop {
            let sent = Instant::now();
            let live = match self.store.heartbeat(&self.id, self.ttl).await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot reach the state database; polls stop at their lease deadline");
                    None
                }
            };
            self.renew(&mut running, sent, &times).await;
            // Past the local deadline (renewals failing): stop before a peer may take over.
            let mut lost = 0;
            for (name, r) in &running {
                if !r.slot.is_held() && !r.token.is_cancelled() {
                    tracing::warn!(mailbox = %name, "Lease lost or not renewed in time; stopping this mailbox's poll");
                    r.token.cancel();
                    lost += 1;
                }
            }
            self.reap(&mut running, &times).await;
            if let Some(live) = live {
                limiter.share(usize::try_from(live).unwrap_or(1));
                let share = fair_share(names.len(), live);
                let active = running.values().filter(|r| !r.releasing).count();
                if active < share {
                    self.claim(
                        &names,
                        share - active,
                        &mut running,
                        &limiter,
                        &shutdown,
                        &on_report,
                        &health,
                    )
                    .await;
                } else if active > share {
                    // A peer joined: hand over the excess once their polls end.
                    for r in running
                        .values_mut()
                        .filter(|r| !r.releasing)
                        .take(active - share)
                    {
                        r.releasing = true;
                        r.token.cancel();
                    }
                }
            }
            crate::metrics::leases(running.len(), "lost", lost);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = woken.notified() => {
                    tracing::debug!("A peer released leases or left; claiming now");
                }
                _ = shutdown.cancelled() => break,
            }
        }
        listening.abort();
        for r in running.values_mut() {
            r.releasing = true;
            r.token.cancel();
        }
        for r in running.values_mut() {
            let _ = (&mut r.task).await;
        }
        self.reap(&mut running, &times).await;
        if let Err(e) = self.store.unregister(&self.id).await {
            tracing::warn!(error = %e, "Cannot unregister this replica");
        }
    }

    /// `on_report` that also notes each mailbox's poll times for the lease row.
    fn recording(
        &self,
        times: Times,
        on_report: Arc<dyn Fn(&PollReport) + Send + Sync>,
    ) -> Arc<dyn Fn(&PollReport) + Send + Sync> {
        let schedules: HashMap<String, crate::config::Schedule> = self
            .mailboxes
            .iter()
            .map(|m| (m.ctx.mailbox.name.clone(), m.ctx.mailbox.schedule.clone()))
            .collect();
        Arc::new(move |report: &PollReport| {
            if let Some(schedule) = schedules.get(&report.mailbox) {
                let now = chrono::Utc::now();
                let next = now
                    + chrono::Duration::from_std(next_delay(schedule, Some(now), now))
                        .unwrap_or_default();
                times.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    report.mailbox.clone(),
                    (next.timestamp_millis(), now.timestamp_millis()),
                );
            }
            on_report(report);
        })
    }

    async fn renew(&self, running: &mut HashMap<String, Running>, sent: Instant, times: &Times) {
        let held = poll_times(running.iter(), times);
        match self.store.renew(&self.id, &held, self.ttl).await {
            Ok(kept) => {
                for r in running.values() {
                    match r.slot.claim_id() {
                        Some(c) if kept.contains(&c) => r.slot.extend(sent + self.ttl / 2),
                        Some(_) => {
                            tracing::warn!(mailbox = %r.slot.mailbox, "Lease taken over by another replica");
                            r.slot.clear();
                        }
                        None => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot renew mailbox leases"),
        }
    }

    /// Forget mailboxes whose task ended; release the leases of those handed over.
    async fn reap(&self, running: &mut HashMap<String, Running>, times: &Times) {
        let ended: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        let mut gone = HashMap::new();
        for name in ended {
            if let Some(r) = running.remove(&name) {
                gone.insert(name, r);
            }
        }
        let release = poll_times(gone.iter(), times);
        for (name, r) in gone {
            r.slot.clear();
            if let Some(m) = self.mailboxes.iter().find(|m| m.ctx.mailbox.name == name) {
                let sinks: Vec<String> = m.ctx.sinks.iter().map(|s| s.name.clone()).collect();
                crate::metrics::forget_mailbox(&name, &sinks);
            }
        }
        if release.is_empty() {
            return;
        }
        match self.store.release(&self.id, &release).await {
            Ok(n) => {
                crate::metrics::leases(running.len(), "released", usize::try_from(n).unwrap_or(0))
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot release leases; they expire by themselves")
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        names: &[String],
        want: usize,
        running: &mut HashMap<String, Running>,
        limiter: &Arc<Limiter>,
        shutdown: &CancellationToken,
        on_report: &Arc<dyn Fn(&PollReport) + Send + Sync>,
        health: &Arc<Health>,
    ) {
        let free: Vec<String> = names
            .iter()
            .filter(|n| !running.contains_key(*n))
            .cloned()
            .collect();
        let sent = Instant::now();
        let got = match self.store.claim(&self.id, &free, want, self.ttl).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot claim mailbox leases");
                return;
            }
        };
        for c in got {
            let name = c.mailbox;
            let Some(m) = self.mailboxes.iter().find(|m| m.ctx.mailbox.name == name) else {
                continue;
            };
            // The poll the previous owner planned (none yet: poll now).
            let wait = c
                .next_poll_at
                .and_then(|at| u64::try_from(at - now_millis()).ok())
                .map(Duration::from_millis)
                .unwrap_or_default();
            tracing::info!(mailbox = %name, epoch = c.fence.epoch, first_poll_in_secs = wait.as_secs_f64(),
                "Claimed the mailbox's lease");
            m.slot.set(c.fence, sent + self.ttl / 2);
            let token = shutdown.child_token();
            health.started(&name);
            let (ctx, limiter, stop, on_report, health) = (
                m.ctx.clone(),
                limiter.clone(),
                token.clone(),
                on_report.clone(),
                health.clone(),
            );
            let task = tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                supervise_mailbox(ctx, limiter, stop, on_report, health).await;
            });
            running.insert(
                name,
                Running {
                    slot: m.slot.clone(),
                    token,
                    task,
                    releasing: false,
                },
            );
            crate::metrics::leases(running.len(), "claimed", 1);
        }
    }
}

/// The claim ids and poll times of these leases (those still held).
fn poll_times<'a>(
    leases: impl Iterator<Item = (&'a String, &'a Running)>,
    times: &Times,
) -> Vec<PollTimes> {
    let times = times.lock().unwrap_or_else(|p| p.into_inner());
    leases
        .filter_map(|(name, r)| {
            let claim_id = r.slot.claim_id()?;
            let t = times.get(name);
            Some(PollTimes {
                claim_id,
                next_poll_at: t.map(|t| t.0),
                last_poll_at: t.map(|t| t.1),
            })
        })
        .collect()
}

/// Wakes the lease loop when a peer releases leases or leaves (their `NOTIFY`), on its own
/// connection; reconnects after `retry` when the database goes away.
async fn listen(
    store: PgStore,
    me: String,
    woken: Arc<Notify>,
    shutdown: CancellationToken,
    retry: Duration,
) {
    loop {
        match store.listener().await {
            Ok(mut listener) => loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(n) if n.payload() != me => woken.notify_one(),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "Lease notifications interrupted; listening again");
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                }
            },
            Err(e) => tracing::debug!(error = %e, "Cannot listen for lease notifications"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn the_fair_share_is_an_even_split_plus_ten_percent() {
        assert_eq!(fair_share(10, 1), 11);
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(100, 3), 36);
        assert_eq!(fair_share(1, 3), 1);
        assert_eq!(fair_share(0, 0), 1);
    }
}
