//! A daily upload budget per target account: Google Workspace accepts about 500 MB of IMAP
//! uploads per account per day and then refuses until the next day. Past the budget the sink
//! refuses with a retryable error whose `retry_after` is the next UTC midnight, so the messages
//! stay pending on the POP3 server (never deleted) and the next day's polls carry on.
//!
//! The count is what this process uploaded today plus what the state says was delivered to
//! the sink today before the process started ([`UploadBudget::seed`]), so a second `once` on
//! the same day does not get a fresh budget.

use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The clock, a seam for tests (a day cannot be waited for).
pub type Clock = Box<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct UploadBudget {
    limit: u64,
    clock: Clock,
    /// Per account: the UTC day counted, and bytes uploaded (or reserved) on it.
    used: Mutex<HashMap<String, Day>>,
}

/// One account's count for one UTC day.
#[derive(Clone, Copy)]
struct Day {
    date: NaiveDate,
    bytes: u64,
    /// A message was refused today: the account is paused until the next UTC midnight.
    refused: bool,
}

impl Day {
    fn new(date: NaiveDate) -> Self {
        Self {
            date,
            bytes: 0,
            refused: false,
        }
    }
}

/// Why an upload may not go now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Today's budget is spent: try again after this long (the next UTC midnight).
    Tomorrow(Duration),
    /// The message alone is over the daily budget: it can never be uploaded.
    TooLarge,
}

impl UploadBudget {
    pub fn new(limit: u64) -> Self {
        Self::with_clock(limit, Box::new(Utc::now))
    }

    pub fn with_clock(limit: u64, clock: Clock) -> Self {
        Self {
            limit,
            clock,
            used: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The start of today (UTC), for counting what earlier processes uploaded.
    pub fn today_start(&self) -> DateTime<Utc> {
        let now = (self.clock)();
        now.date_naive()
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| t.and_utc())
    }

    /// Count `bytes` already uploaded today to `account` (from the state, at start).
    pub fn seed(&self, account: &str, bytes: u64) {
        let today = (self.clock)().date_naive();
        if let Ok(mut used) = self.used.lock() {
            let entry = used
                .entry(account.to_string())
                .or_insert_with(|| Day::new(today));
            if entry.date != today {
                *entry = Day::new(today);
            }
            entry.bytes = entry.bytes.saturating_add(bytes);
        }
    }

    /// Reserve `size` bytes of today's budget of `account`.
    pub fn reserve(&self, account: &str, size: u64) -> Result<(), Refusal> {
        if size > self.limit {
            return Err(Refusal::TooLarge);
        }
        let now = (self.clock)();
        let today = now.date_naive();
        let Ok(mut used) = self.used.lock() else {
            return Ok(());
        };
        let entry = used
            .entry(account.to_string())
            .or_insert_with(|| Day::new(today));
        if entry.date != today {
            // A new day: a new budget.
            *entry = Day::new(today);
        }
        if entry.bytes.saturating_add(size) > self.limit {
            entry.refused = true;
            let wait = (self.next_reset() - now).to_std().unwrap_or(Duration::ZERO);
            return Err(Refusal::Tomorrow(wait));
        }
        entry.bytes += size;
        Ok(())
    }

    /// The next UTC midnight, when every account's budget starts again.
    pub fn next_reset(&self) -> DateTime<Utc> {
        let now = (self.clock)();
        now.date_naive()
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(now, |t| t.and_utc())
    }

    /// Bytes `account` may still upload today.
    pub fn left_today(&self, account: &str) -> u64 {
        let today = (self.clock)().date_naive();
        let used = self
            .used
            .lock()
            .ok()
            .and_then(|u| u.get(account).copied())
            .filter(|d| d.date == today)
            .map_or(0, |d| d.bytes);
        self.limit.saturating_sub(used)
    }

    /// Until when `account` is paused: the next UTC midnight once a message was refused
    /// today, so later polls of the day do not download what cannot be uploaded.
    pub fn spent_until(&self, account: &str) -> Option<DateTime<Utc>> {
        let today = (self.clock)().date_naive();
        let day = self.used.lock().ok()?.get(account).copied()?;
        (day.date == today && day.refused).then(|| self.next_reset())
    }

    /// Give back a reservation that uploaded nothing (failed, or the message was there).
    pub fn release(&self, account: &str, size: u64) {
        if let Ok(mut used) = self.used.lock() {
            if let Some(entry) = used.get_mut(account) {
                entry.bytes = entry.bytes.saturating_sub(size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn at(clock: &Arc<AtomicI64>) -> Clock {
        let c = clock.clone();
        Box::new(move || DateTime::from_timestamp(c.load(Ordering::SeqCst), 0).unwrap())
    }

    #[test]
    fn stops_at_the_budget_and_resets_at_utc_midnight() {
        // 2026-12-01 23:00:00 UTC
        let clock = Arc::new(AtomicI64::new(1_796_166_000));
        let b = UploadBudget::with_clock(1000, at(&clock));
        b.seed("ann", 300);
        assert_eq!(b.reserve("ann", 600), Ok(()));
        assert_eq!(
            b.reserve("ann", 200),
            Err(Refusal::Tomorrow(Duration::from_secs(3600)))
        );
        // Another account has its own budget.
        assert_eq!(b.reserve("bob", 1000), Ok(()));
        // A failed upload gives its bytes back.
        b.release("ann", 600);
        assert_eq!(b.reserve("ann", 700), Ok(()));
        // Next day.
        clock.store(1_796_166_000 + 3600, Ordering::SeqCst);
        assert_eq!(b.reserve("ann", 1000), Ok(()));
        assert_eq!(b.today_start().timestamp(), 1_796_166_000 + 3600);
    }

    #[test]
    fn a_refusal_pauses_the_account_until_midnight_and_says_what_is_left() {
        // 2026-12-01 23:00:00 UTC
        let clock = Arc::new(AtomicI64::new(1_796_166_000));
        let b = UploadBudget::with_clock(1000, at(&clock));
        b.seed("ann", 300);
        assert_eq!(b.left_today("ann"), 700);
        assert_eq!(b.left_today("bob"), 1000);
        assert_eq!(b.spent_until("ann"), None, "nothing refused yet");
        assert!(b.reserve("ann", 800).is_err());
        let midnight = DateTime::from_timestamp(1_796_166_000 + 3600, 0).unwrap();
        assert_eq!(b.spent_until("ann"), Some(midnight));
        assert_eq!(b.next_reset(), midnight);
        assert_eq!(b.spent_until("bob"), None);
        // The next day the pause is over and the budget whole again.
        clock.store(1_796_166_000 + 3600, Ordering::SeqCst);
        assert_eq!(b.spent_until("ann"), None);
        assert_eq!(b.left_today("ann"), 1000);
    }

    #[test]
    fn a_message_over_the_whole_budget_is_refused_for_good() {
        let b = UploadBudget::new(10);
        assert_eq!(b.reserve("ann", 11), Err(Refusal::TooLarge));
    }
}
