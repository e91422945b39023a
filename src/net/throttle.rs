//! A token bucket of bytes per second shared by every session to one host. A reader takes
//! tokens for what one read brought and then sleeps off any debt before it reads again, so the
//! socket is simply read later: TCP's window holds the sender back and nothing is buffered
//! here (memory stays one read buffer per session, whatever the rate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct Throttle {
    /// Bytes per second as configured.
    configured: u64,
    /// This process's share of it (the configured rate divided across replicas).
    rate: AtomicU64,
    /// Tokens (may go negative: debt that the next reader sleeps off) and when last refilled.
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A bucket of `bytes_per_second`, holding at most one second's worth (the burst).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1);
        Self {
            configured: rate,
            rate: AtomicU64::new(rate),
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// The bytes per second this process may read now.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// `replicas` processes read from the host: keep `1/replicas` of the rate.
    pub fn share(&self, replicas: usize) {
        let n = u64::try_from(replicas.max(1)).unwrap_or(1);
        self.rate
            .store((self.configured / n).max(1), Ordering::Relaxed);
    }

    /// Count `bytes` just read and wait until the bucket is out of debt.
    pub async fn take(&self, bytes: usize) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Refill up to one second's worth, take `bytes`, and say how long the debt lasts.
    fn charge(&self, bytes: usize, now: Instant) -> Duration {
        let rate = self.rate() as f64;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(rate);
        *last = now;
        *tokens -= bytes as f64;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debt_is_slept_off_at_the_rate() {
        let t = Throttle::new(1000);
        let start = Instant::now();
        // The first second's worth is the burst.
        assert_eq!(t.charge(1000, start), Duration::ZERO);
        // 500 more bytes at 1000/s: half a second of debt.
        assert_eq!(t.charge(500, start), Duration::from_millis(500));
        // Readers sharing the bucket queue behind the debt.
        assert_eq!(t.charge(500, start), Duration::from_millis(1000));
        // Time refills it.
        let later = start + Duration::from_secs(3);
        assert_eq!(t.charge(1000, later), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_share_the_rate() {
        let t = Throttle::new(3000);
        t.share(3);
        assert_eq!(t.rate(), 1000);
        t.share(1);
        assert_eq!(t.rate(), 3000);
    }

    #[tokio::test(start_paused = true)]
    async fn total_time_is_at_least_bytes_over_rate_minus_the_burst() {
        let t = Throttle::new(10_000);
        let start = Instant::now();
        for _ in 0..50 {
            t.take(1000).await;
        }
        // 50,000 bytes at 10,000/s with a 10,000-byte burst: at least 4 s.
        assert!(
            start.elapsed() >= Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }
}
