//! A daily download budget per POP3 host: message bytes fetched per UTC day over every
//! mailbox on it. A message is reserved by its LIST size before its RETR; one that does not
//! fit waits on the server (never deleted, nothing dead-lettered) until the next UTC midnight.
//!
//! The count starts from what the state says was fetched from the host today
//! ([`DownloadBudget::seed`]), so a second `once` on the same day does not get a fresh budget.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The clock, a seam for tests (a day cannot be waited for).
pub type Clock = Box<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct DownloadBudget {
    limit: u64,
    /// Live replicas sharing the host (PostgreSQL): each may use `limit / replicas`.
    replicas: AtomicUsize,
    clock: Clock,
    /// The UTC day counted and the bytes fetched (or reserved) on it.
    used: Mutex<(NaiveDate, u64)>,
}

/// Why a message may not be fetched now.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Today's budget is spent: the next UTC midnight.
    Until(DateTime<Utc>),
    /// The message alone is over the daily budget: it will never fit.
    TooLarge,
}

impl DownloadBudget {
    pub fn new(limit: u64) -> Self {
        Self::with_clock(limit, Box::new(Utc::now))
    }

    pub fn with_clock(limit: u64, clock: Clock) -> Self {
        let today = clock().date_naive();
        Self {
            limit,
            replicas: AtomicUsize::new(1),
            clock,
            used: Mutex::new((today, 0)),
        }
    }

    /// This process's share of the budget.
    pub fn limit(&self) -> u64 {
        let n = u64::try_from(self.replicas.load(Ordering::Relaxed).max(1)).unwrap_or(1);
        self.limit / n
    }

    pub fn share(&self, replicas: usize) {
        self.replicas.store(replicas.max(1), Ordering::Relaxed);
    }

    /// The start of today (UTC), for counting what earlier processes fetched.
    pub fn today_start(&self) -> DateTime<Utc> {
        let now = (self.clock)();
        now.date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| t.and_utc())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (NaiveDate, u64)> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let today = (self.clock)().date_naive();
        if used.0 != today {
            // A new day: a new budget.
            *used = (today, 0);
        }
        used
    }

    /// Count `bytes` fetched today before this process started (from the state).
    pub fn seed(&self, bytes: u64) {
        let mut used = self.lock();
        used.1 = used.1.saturating_add(bytes);
    }

    /// Bytes counted today.
    pub fn used(&self) -> u64 {
        self.lock().1
    }

    /// Reserve `size` bytes of today's budget.
    pub fn reserve(&self, size: u64) -> Result<(), Held> {
        self.check(size, true)
    }

    /// Whether `size` more bytes would fit after `planned` bytes, without reserving anything
    /// (for `popbridge plan`).
    pub fn would_fit(&self, planned: u64, size: u64) -> Result<(), Held> {
        let used = self.used().saturating_add(planned);
        self.check_against(used, size)
    }

    fn check(&self, size: u64, reserve: bool) -> Result<(), Held> {
        let mut used = self.lock();
        self.check_against(used.1, size)?;
        if reserve {
            used.1 += size;
        }
        Ok(())
    }

    fn check_against(&self, used: u64, size: u64) -> Result<(), Held> {
        let limit = self.limit();
        if size > limit {
            return Err(Held::TooLarge);
        }
        if used.saturating_add(size) > limit {
            let now = (self.clock)();
            let midnight = now
                .date_naive()
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(now, |t| t.and_utc());
            return Err(Held::Until(midnight));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;

    fn at(clock: &Arc<AtomicI64>) -> Clock {
        let c = clock.clone();
        Box::new(move || DateTime::from_timestamp(c.load(Ordering::SeqCst), 0).unwrap())
    }

    #[test]
    fn stops_at_the_budget_and_starts_again_at_utc_midnight() {
        // 2026-12-01 23:00:00 UTC
        let clock = Arc::new(AtomicI64::new(1_796_166_000));
        let b = DownloadBudget::with_clock(1000, at(&clock));
        b.seed(300);
        assert_eq!(b.reserve(600), Ok(()));
        let midnight = DateTime::from_timestamp(1_796_166_000 + 3600, 0).unwrap();
        assert_eq!(b.reserve(200), Err(Held::Until(midnight)));
        assert_eq!(b.used(), 900);
        // `plan` asks without reserving.
        assert_eq!(b.would_fit(0, 100), Ok(()));
        assert_eq!(b.would_fit(50, 100), Err(Held::Until(midnight)));
        assert_eq!(b.used(), 900);
        // Next day.
        clock.store(1_796_166_000 + 3600, Ordering::SeqCst);
        assert_eq!(b.reserve(1000), Ok(()));
        assert_eq!(b.today_start(), midnight);
    }

    #[test]
    fn a_message_over_the_whole_budget_never_fits() {
        let b = DownloadBudget::new(10);
        assert_eq!(b.reserve(11), Err(Held::TooLarge));
    }

    #[test]
    fn replicas_share_the_budget() {
        let b = DownloadBudget::new(1000);
        b.share(2);
        assert_eq!(b.limit(), 500);
        assert_eq!(b.reserve(400), Ok(()));
        assert!(b.reserve(200).is_err());
        b.share(1);
        assert_eq!(b.reserve(200), Ok(()));
    }
}
