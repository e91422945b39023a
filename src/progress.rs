//! Live progress of `popbridge once`. One mailbox on a terminal: one line with messages and
//! bytes done out of those planned, the rate and an ETA. Several on a terminal: the fleet
//! view ([`fleet`]), redrawn. Stderr not a terminal (a Kubernetes Job, CI logs): a one-line
//! fleet status logged every `--status-every`, so logs show progress too.

pub mod fleet;

use crate::sink::DailyBudget;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters one poll updates as it goes.
#[derive(Debug, Default)]
pub struct Progress {
    planned: AtomicU64,
    planned_bytes: AtomicU64,
    /// Set once the poll knows what it will fetch.
    listed: AtomicBool,
    done: AtomicU64,
    bytes: AtomicU64,
    /// The poll has begun (it holds a connection slot).
    begun: AtomicBool,
    finished: AtomicBool,
    /// How the poll ended, once it has.
    ended: Mutex<Option<Ended>>,
    started: Mutex<Option<Instant>>,
    /// Sinks paused for this mailbox (a used-up daily quota) and until when: no ETA holds.
    paused: Mutex<Vec<(String, chrono::DateTime<chrono::Utc>)>>,
    /// Left on the server this poll for a paused sink.
    deferred: AtomicU64,
    deferred_bytes: AtomicU64,
    /// Daily budgets of the mailbox's sinks when it was listed.
    budgets: Mutex<Vec<DailyBudget>>,
}

/// How a poll ended, for the fleet view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every listed message is in every sink.
    Complete,
    /// The poll failed: `kind: message`.
    Failed(String),
    /// The poll ran but deliveries are left (retries, dead letters, a paused sink): why.
    Incomplete(String),
}

impl Progress {
    /// The poll knows what it will fetch.
    pub fn plan(&self, messages: u64, bytes: u64) {
        self.planned.store(messages, Ordering::Relaxed);
        self.planned_bytes.store(bytes, Ordering::Relaxed);
        self.listed.store(true, Ordering::Relaxed);
        if let Ok(mut s) = self.started.lock() {
            *s = Some(Instant::now());
        }
    }

    /// The poll has its connection slot and begins.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Relaxed);
    }

    /// Messages left on the server this poll because a sink is paused (not fetched).
    pub fn deferred(&self, messages: u64, bytes: u64) {
        self.deferred.store(messages, Ordering::Relaxed);
        self.deferred_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The daily budgets of the mailbox's sinks as they stand at listing.
    pub fn budgets(&self, budgets: Vec<DailyBudget>) {
        if let Ok(mut b) = self.budgets.lock() {
            *b = budgets;
        }
    }

    /// One message went through every sink it needed (or failed).
    pub fn message_done(&self, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `sink` refuses this mailbox's messages until `until`: the line says so instead of an ETA.
    pub fn paused(&self, sink: &str, until: chrono::DateTime<chrono::Utc>) {
        if let Ok(mut p) = self.paused.lock() {
            match p.iter_mut().find(|(s, _)| s == sink) {
                Some(e) => e.1 = until,
                None => p.push((sink.to_string(), until)),
            }
        }
    }

    pub fn finish(&self, ended: Ended) {
        if let Ok(mut e) = self.ended.lock() {
            *e = Some(ended);
        }
        self.begun.store(true, Ordering::Relaxed);
        self.finished.store(true, Ordering::Relaxed);
    }

    /// The counters as the fleet view reads them.
    pub fn snapshot(&self, mailbox: &str) -> fleet::Account {
        use fleet::{State, Work};
        let paused_until = self
            .paused
            .lock()
            .ok()
            .and_then(|p| p.iter().map(|(_, t)| *t).max());
        let ended = self.ended.lock().ok().and_then(|e| e.clone());
        let state = match ended {
            _ if !self.begun.load(Ordering::Relaxed) => State::Waiting,
            None => State::Running,
            Some(Ended::Failed(why)) => State::Failed(why),
            // A paused sink with nothing left for it is no pause of this account.
            Some(Ended::Complete) => State::Done,
            Some(Ended::Incomplete(_)) if paused_until.is_some() => State::Paused,
            Some(Ended::Incomplete(why)) => State::Failed(format!("incomplete: {why}")),
        };
        fleet::Account {
            name: mailbox.to_string(),
            state,
            planned: self.listed.load(Ordering::Relaxed).then(|| Work {
                messages: self.planned.load(Ordering::Relaxed),
                bytes: self.planned_bytes.load(Ordering::Relaxed),
            }),
            done: Work {
                messages: self.done.load(Ordering::Relaxed),
                bytes: self.bytes.load(Ordering::Relaxed),
            },
            elapsed: self.elapsed(),
            paused_until,
            deferred: Work {
                messages: self.deferred.load(Ordering::Relaxed),
                bytes: self.deferred_bytes.load(Ordering::Relaxed),
            },
            budgets: self.budgets.lock().map(|b| b.clone()).unwrap_or_default(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.started
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed()))
            .unwrap_or_default()
    }

    /// One line: `alice  340/1000 msgs  1.6/4.7 MB  812 msg/s  ETA 1s`.
    pub fn line(&self, mailbox: &str) -> String {
        let planned = self.planned.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let planned_bytes = self.planned_bytes.load(Ordering::Relaxed);
        let elapsed = self.elapsed();
        let mut out = format!(
            "{mailbox:<20} {done:>7}/{planned:<7} msgs  {:>8.1}/{:<8.1} MB",
            bytes as f64 / 1e6,
            planned_bytes as f64 / 1e6
        );
        let paused = self.paused.lock().map(|p| p.clone()).unwrap_or_default();
        let secs = elapsed.as_secs_f64();
        if !paused.is_empty() {
            for (sink, until) in paused {
                let _ = write!(
                    out,
                    "  {sink} PAUSED until {} (daily quota): messages wait on the server",
                    until.format("%Y-%m-%d %H:%M UTC")
                );
            }
        } else if secs > 0.0 && done > 0 {
            let rate = done as f64 / secs;
            let _ = write!(out, "  {rate:>7.0} msg/s");
            if !self.finished.load(Ordering::Relaxed) && planned > done {
                let eta = Duration::from_secs_f64((planned - done) as f64 / rate);
                let _ = write!(out, "  ETA {}s", eta.as_secs());
            }
        }
        if self.finished.load(Ordering::Relaxed) {
            out.push_str("  done");
        }
        out
    }
}

/// How `once` shows progress.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Log a fleet status line this often when stderr is not a terminal (`None`: never).
    pub status_every: Option<Duration>,
}

/// Running accounts listed in the terminal block.
const MAX_RUNNING: usize = 8;
/// Failed accounts listed in the terminal block.
const MAX_FAILED: usize = 5;

/// Shows the progress of `mailboxes` on stderr until the guard's `finish`: redrawn on a
/// terminal, a logged status line at an interval otherwise.
pub fn spawn_renderer(
    mailboxes: Vec<(String, Arc<Progress>)>,
    settings: Settings,
) -> Option<RendererGuard> {
    let terminal = std::io::stderr().is_terminal();
    let every = settings.status_every;
    if !terminal && every.is_none() {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        if terminal {
            draw_until(&mailboxes, &flag).await;
        } else if let Some(every) = every {
            log_until(&mailboxes, every, &flag).await;
        }
    });
    Some(RendererGuard { stop, handle })
}

fn snapshot(mailboxes: &[(String, Arc<Progress>)], started: Instant) -> fleet::Fleet {
    fleet::Fleet {
        accounts: mailboxes.iter().map(|(n, p)| p.snapshot(n)).collect(),
        elapsed: started.elapsed(),
    }
}

/// Redraws every 250 ms: one mailbox's line, or the fleet block for several.
async fn draw_until(mailboxes: &[(String, Arc<Progress>)], stop: &AtomicBool) {
    let started = Instant::now();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c >= 40)
        .unwrap_or(120);
    loop {
        let last = stop.load(Ordering::Relaxed);
        let lines = match mailboxes {
            [(name, p)] => vec![p.line(name)],
            _ => fleet::block(
                &snapshot(mailboxes, started),
                width,
                MAX_RUNNING,
                MAX_FAILED,
            ),
        };
        {
            // Shared with the log writer, which clears the frame before a log line.
            let mut drawn = crate::telemetry::LIVE_FRAME
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Autowrap off while drawing: a line wider than the terminal is cut by the
            // terminal instead of taking two rows, so moving up by the line count is exact.
            let mut frame = String::from("\x1b[?7l");
            if *drawn > 0 {
                // Move up over the previous frame and clear it (it may have had more lines).
                let _ = write!(frame, "\x1b[{}A\x1b[J", *drawn);
            }
            for l in &lines {
                let _ = writeln!(frame, "\x1b[2K{l}");
            }
            frame.push_str("\x1b[?7h");
            // The last frame stays on the screen, above the summary.
            *drawn = if last { 0 } else { lines.len() };
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(frame.as_bytes());
            let _ = err.flush();
        }
        if last {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A status line every `every`, and a last one at the end when there are several mailboxes
/// or a line was logged already (a short run of one mailbox adds nothing to its summary).
async fn log_until(mailboxes: &[(String, Arc<Progress>)], every: Duration, stop: &AtomicBool) {
    let started = Instant::now();
    let every = every.max(Duration::from_millis(10));
    let tick = every.min(Duration::from_millis(100));
    // `None`: an interval too long to ever come.
    let mut next = started.checked_add(every);
    let mut logged = false;
    loop {
        let last = stop.load(Ordering::Relaxed);
        let due = next.is_some_and(|n| Instant::now() >= n);
        if (last && (logged || mailboxes.len() > 1)) || (!last && due) {
            log_status(&fleet::status(&snapshot(mailboxes, started)), last);
            logged = true;
            next = Instant::now().checked_add(every);
        }
        if last {
            return;
        }
        tokio::time::sleep(tick).await;
    }
}

fn log_status(s: &fleet::Status, last: bool) {
    tracing::info!(
        accounts = s.accounts,
        done = s.done,
        running = s.running,
        waiting = s.waiting,
        failed = s.failed,
        paused = s.paused,
        messages = %s.messages,
        bytes = %s.bytes,
        rate = %s.rate,
        eta = %s.eta,
        blocked = %s.blocked,
        failures = %s.failures,
        last,
        "Fleet status"
    );
}

pub struct RendererGuard {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl RendererGuard {
    /// Draw the final frame (or log the final status) and stop.
    pub async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_rate_and_eta_then_done() {
        let p = Progress::default();
        p.plan(10, 10_000_000);
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..4 {
            p.message_done(1_000_000);
        }
        let l = p.line("alice");
        assert!(l.contains("4/10"), "{l}");
        assert!(l.contains("4.0/10.0"), "{l}");
        assert!(l.contains("msg/s") && l.contains("ETA"), "{l}");
        p.finish(Ended::Complete);
        let l = p.line("alice");
        assert!(l.ends_with("done") && !l.contains("ETA"), "{l}");
    }

    #[test]
    fn the_snapshot_follows_the_poll_from_waiting_to_how_it_ended() {
        use fleet::State;
        let p = Progress::default();
        assert_eq!(p.snapshot("a").state, State::Waiting);
        p.begin();
        let s = p.snapshot("a");
        assert_eq!((s.state, s.planned), (State::Running, None));
        p.plan(3, 3000);
        p.message_done(1000);
        let s = p.snapshot("a");
        assert_eq!(s.planned.map(|w| w.bytes), Some(3000));
        assert_eq!(s.done.messages, 1);
        p.finish(Ended::Complete);
        assert_eq!(p.snapshot("a").state, State::Done);

        let failed = Progress::default();
        failed.finish(Ended::Failed("auth: login refused".into()));
        assert_eq!(
            failed.snapshot("b").state,
            State::Failed("auth: login refused".into())
        );
        let retry = Progress::default();
        retry.finish(Ended::Incomplete("u1 -> hook: HTTP 503".into()));
        assert_eq!(
            retry.snapshot("c").state,
            State::Failed("incomplete: u1 -> hook: HTTP 503".into())
        );
        // A paused sink: the account is paused, not failed, and says until when.
        let paused = Progress::default();
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        paused.paused("gmail", until);
        paused.deferred(4, 4000);
        paused.finish(Ended::Incomplete("4 delivery(ies) pending".into()));
        let s = paused.snapshot("d");
        assert_eq!(s.state, State::Paused);
        assert_eq!((s.paused_until, s.deferred.bytes), (Some(until), 4000));
        // The same target paused, but nothing was left for it: done.
        let idle = Progress::default();
        idle.paused("gmail", until);
        idle.finish(Ended::Complete);
        assert_eq!(idle.snapshot("e").state, State::Done);
    }

    #[test]
    fn a_paused_sink_replaces_the_eta_with_when_it_resumes() {
        let p = Progress::default();
        p.plan(10, 10_000);
        std::thread::sleep(Duration::from_millis(20));
        p.message_done(1000);
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        p.paused("gmail", until);
        let l = p.line("alice");
        assert!(
            l.contains("gmail PAUSED until 2026-12-02 08:00 UTC") && !l.contains("ETA"),
            "{l}"
        );
    }
}
