//! Live progress of `popbridge once` on a terminal: per mailbox, messages and bytes done out of
//! those planned, the rate, and an ETA. Off when stderr is not a terminal, so logs stay
//! machine-readable.

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
    done: AtomicU64,
    bytes: AtomicU64,
    finished: AtomicBool,
    started: Mutex<Option<Instant>>,
    /// Sinks paused for this mailbox (a used-up daily quota) and until when: no ETA holds.
    paused: Mutex<Vec<(String, chrono::DateTime<chrono::Utc>)>>,
}

impl Progress {
    /// The poll knows what it will fetch.
    pub fn plan(&self, messages: u64, bytes: u64) {
        self.planned.store(messages, Ordering::Relaxed);
        self.planned_bytes.store(bytes, Ordering::Relaxed);
        if let Ok(mut s) = self.started.lock() {
            *s = Some(Instant::now());
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

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// One line: `alice  340/1000 msgs  1.6/4.7 MB  812 msg/s  ETA 1s`.
    pub fn line(&self, mailbox: &str) -> String {
        let planned = self.planned.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let planned_bytes = self.planned_bytes.load(Ordering::Relaxed);
        let elapsed = self
            .started
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed()))
            .unwrap_or_default();
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

/// Redraws the lines of every mailbox on stderr until `stop` is dropped or set.
pub fn spawn_renderer(mailboxes: Vec<(String, Arc<Progress>)>) -> Option<RendererGuard> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut drawn = 0usize;
        loop {
            let last = flag.load(Ordering::Relaxed);
            let mut frame = String::new();
            if drawn > 0 {
                // Move up over the previous frame and clear it.
                let _ = write!(frame, "\x1b[{drawn}A");
            }
            for (name, p) in &mailboxes {
                let _ = writeln!(frame, "\x1b[2K{}", p.line(name));
            }
            drawn = mailboxes.len();
            {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(frame.as_bytes());
                let _ = err.flush();
            }
            if last {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Some(RendererGuard { stop, handle })
}

pub struct RendererGuard {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl RendererGuard {
    /// Draw the final frame and stop.
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
        p.finish();
        let l = p.line("alice");
        assert!(l.ends_with("done") && !l.contains("ETA"), "{l}");
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
