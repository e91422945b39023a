//! Gmail API quota, per target account: a token bucket of quota units that paces requests so
//! a burst never exceeds the per-user limit, a block after a rate-limit answer, and the pause
//! of an account whose daily quota is used up until Google resets it.
//!
//! The numbers, from Google's "Usage limits" page
//! (<https://developers.google.com/gmail/api/reference/quota>, checked 2026-12-01): the
//! per-user rate limit is 15,000 quota units per user per minute (`userRateLimitExceeded`;
//! earlier versions of the page: "250 quota units per user per second, moving average"), the
//! per-project limit 1,200,000 units per minute (`rateLimitExceeded`); `messages.import`
//! costs 25 units, `messages.list` 5, `messages.get` 5, `labels.list` 1, `labels.create` 5.
//! So one account takes at most 600 imports a minute, 10 a second. `dailyLimitExceeded` is
//! "the courtesy API limit for your project"
//! (<https://developers.google.com/gmail/api/guides/handle-errors>); Google's daily quotas end
//! at midnight Pacific time (UTC-8, UTC-7 in daylight saving time).

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, TimeZone, Utc, Weekday};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Quota units per call (Google's per-method table).
pub mod cost {
    pub const IMPORT: u32 = 25;
    pub const LIST: u32 = 5;
    pub const GET: u32 = 5;
    pub const LABELS_LIST: u32 = 1;
    pub const LABELS_CREATE: u32 = 5;
}

/// Google's per-user limit: units per minute.
pub const USER_UNITS_PER_MINUTE: u32 = 15_000;
/// Units a quiet account may spend at once (one second's worth: 10 imports).
pub const DEFAULT_BURST_UNITS: u32 = 250;

/// One account's bucket. `level` may go below zero: a reservation made while it was empty is
/// a debt that later callers queue behind (first come, first served, no polling).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
    blocked_until: Option<Instant>,
}

/// Token buckets by account. In any interval of `T` seconds an account is sent at most
/// `burst + rate × T` units, so with the defaults (`rate` = (15,000 − 250) / 60 units/s) no
/// minute ever exceeds Google's 15,000.
#[derive(Debug)]
pub struct Pacer {
    /// Units per second; `None`: no pacing.
    rate: Option<f64>,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Pacer {
    /// `units_per_minute` = 0 switches pacing off (the benchmark's "unpaced" run).
    pub fn new(units_per_minute: u32, burst_units: u32) -> Self {
        let burst = f64::from(burst_units);
        let rate =
            (units_per_minute > 0).then(|| (f64::from(units_per_minute) - burst).max(1.0) / 60.0);
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves `units` for `account` at `now`; gives how long to wait before sending.
    pub fn reserve_at(&self, account: &str, units: u32, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let Ok(mut buckets) = self.buckets.lock() else {
            return Duration::ZERO;
        };
        let b = buckets.entry(account.to_string()).or_insert(Bucket {
            level: self.burst,
            at: now,
            blocked_until: None,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.level = (b.level + elapsed * rate).min(self.burst);
        b.at = now.max(b.at);
        b.level -= f64::from(units);
        let mut wait = if b.level < 0.0 {
            Duration::from_secs_f64(-b.level / rate)
        } else {
            Duration::ZERO
        };
        if let Some(until) = b.blocked_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        wait
    }

    /// Waits until `units` may be sent to `account`. A wait longer than `max` (a long
    /// `Retry-After`) is not slept through while holding a delivery slot: the units are given
    /// back and `Err` says how long the account needs, for a later try.
    pub async fn acquire(&self, account: &str, units: u32, max: Duration) -> Result<(), Duration> {
        let wait = self.reserve_at(account, units, Instant::now());
        if wait > max {
            self.refund(account, units);
            return Err(wait);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Gives back units reserved but not spent.
    fn refund(&self, account: &str, units: u32) {
        if let Ok(mut buckets) = self.buckets.lock() {
            if let Some(b) = buckets.get_mut(account) {
                b.level = (b.level + f64::from(units)).min(self.burst);
            }
        }
    }

    /// Google said "too fast" for `account`: nothing more goes to it for `wait`, and the
    /// bucket starts empty after that, whatever this process believed it had left.
    pub fn rate_limited(&self, account: &str, wait: Duration, now: Instant) {
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        let b = buckets.entry(account.to_string()).or_insert(Bucket {
            level: 0.0,
            at: now,
            blocked_until: None,
        });
        let until = now + wait;
        b.blocked_until = Some(b.blocked_until.map_or(until, |u| u.max(until)));
        // Refill starts when the block ends.
        b.level = b.level.min(0.0);
        b.at = b.at.max(until);
    }

    /// How long to wait after a rate-limit answer without `Retry-After`: the time the bucket
    /// takes to refill a burst (1 s with the defaults).
    pub fn default_backoff(&self) -> Duration {
        match self.rate {
            Some(rate) => Duration::from_secs_f64((self.burst / rate).clamp(1.0, 60.0)),
            None => Duration::from_secs(1),
        }
    }
}

/// Accounts whose daily quota is used up, with the time Google resets it. Only that account
/// waits: the sink's other accounts carry on.
#[derive(Debug, Default)]
pub struct Pauses {
    until: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Pauses {
    /// `account` is paused until `until` (the later of two pauses wins).
    pub fn pause(&self, account: &str, until: DateTime<Utc>) {
        if let Ok(mut m) = self.until.lock() {
            let e = m.entry(account.to_string()).or_insert(until);
            *e = (*e).max(until);
        }
    }

    /// When `account` may be tried again, if it is paused at `now`.
    pub fn paused_until(&self, account: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut m = self.until.lock().ok()?;
        match m.get(account) {
            Some(t) if *t > now => Some(*t),
            Some(_) => {
                m.remove(account);
                None
            }
            None => None,
        }
    }
}

/// The `n`-th `weekday` of `month` (1-based), as a date.
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u32) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let offset = (7 + weekday.num_days_from_monday() - first.weekday().num_days_from_monday()) % 7;
    first.checked_add_signed(Days::days(i64::from(offset + 7 * (n - 1))))
}

/// Hours Pacific time is behind UTC at `t`: 7 in daylight saving time (US rules since 2007:
/// from 2:00 local on the second Sunday of March to 2:00 local on the first Sunday of
/// November), else 8.
pub fn pacific_offset_hours(t: DateTime<Utc>) -> i64 {
    let year = t.year();
    let (Some(start), Some(end)) = (
        nth_weekday(year, 3, Weekday::Sun, 2),
        nth_weekday(year, 11, Weekday::Sun, 1),
    ) else {
        return 8;
    };
    // 2:00 PST = 10:00 UTC; 2:00 PDT = 9:00 UTC.
    let (Some(start), Some(end)) = (start.and_hms_opt(10, 0, 0), end.and_hms_opt(9, 0, 0)) else {
        return 8;
    };
    let (start, end) = (Utc.from_utc_datetime(&start), Utc.from_utc_datetime(&end));
    if t >= start && t < end {
        7
    } else {
        8
    }
}

/// The next midnight in Pacific time after `now`: when Google's daily quotas start again.
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now - Days::hours(pacific_offset_hours(now));
    let tomorrow = local.date_naive().succ_opt().unwrap_or(local.date_naive());
    let midnight = Utc.from_utc_datetime(&tomorrow.and_time(chrono::NaiveTime::MIN));
    // `midnight` is the local wall time read as UTC; the offset that applies at that instant
    // (a DST change happens at 2:00, never at midnight) turns it into the real instant.
    let guess = midnight + Days::hours(8);
    midnight + Days::hours(pacific_offset_hours(guess))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_burst_is_capped_and_then_paced_at_the_rate() {
        let p = Pacer::new(15_000, 250);
        let t0 = Instant::now();
        // Ten imports (250 units) go at once; the eleventh waits for 25 units at 245.8/s.
        for _ in 0..10 {
            assert_eq!(p.reserve_at("a", cost::IMPORT, t0), Duration::ZERO);
        }
        let w = p.reserve_at("a", cost::IMPORT, t0);
        assert!(
            w > Duration::from_millis(95) && w < Duration::from_millis(110),
            "{w:?}"
        );
        // Another account has its own bucket.
        assert_eq!(p.reserve_at("b", cost::IMPORT, t0), Duration::ZERO);
    }

    #[test]
    fn no_minute_exceeds_the_per_user_limit() {
        // Callers reserve as fast as they can and send at the time they were given: count the
        // units sent in the first 60 s, the worst window (it includes the full burst).
        let p = Pacer::new(15_000, 250);
        let t0 = Instant::now();
        let mut sent = 0u32;
        loop {
            let at = p.reserve_at("a", cost::IMPORT, t0);
            if at >= Duration::from_secs(60) {
                break;
            }
            sent += cost::IMPORT;
        }
        assert!(sent <= USER_UNITS_PER_MINUTE, "{sent}");
        assert!(sent >= USER_UNITS_PER_MINUTE - 2 * cost::IMPORT, "{sent}");
    }

    #[tokio::test]
    async fn a_long_wait_is_handed_back_with_the_units() {
        let p = Pacer::new(15_000, 250);
        p.rate_limited("a", Duration::from_secs(60), Instant::now());
        let max = Duration::from_secs(10);
        let w = p.acquire("a", cost::IMPORT, max).await.unwrap_err();
        assert!(w > Duration::from_secs(59), "{w:?}");
        // Refunded: asking again gives the same answer, not a longer queue.
        let again = p.acquire("a", cost::IMPORT, max).await.unwrap_err();
        assert!(
            again <= w + Duration::from_millis(50),
            "{again:?} after {w:?}"
        );
        assert!(p.acquire("b", cost::IMPORT, max).await.is_ok());
    }

    #[test]
    fn zero_switches_pacing_off() {
        let p = Pacer::new(0, 250);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(p.reserve_at("a", cost::IMPORT, t0), Duration::ZERO);
        }
    }

    #[test]
    fn a_rate_limit_answer_blocks_the_account_then_starts_empty() {
        let p = Pacer::new(15_000, 250);
        let t0 = Instant::now();
        p.rate_limited("a", Duration::from_secs(3), t0);
        let w = p.reserve_at("a", cost::IMPORT, t0);
        assert!(w >= Duration::from_secs(3), "{w:?}");
        // After the block the bucket refills from empty: not a burst at once.
        let later = t0 + Duration::from_secs(3);
        let w = p.reserve_at("a", cost::IMPORT, later);
        assert!(w > Duration::from_millis(100), "{w:?}");
        assert_eq!(p.reserve_at("b", cost::IMPORT, t0), Duration::ZERO);
    }

    #[test]
    fn pacific_midnight_follows_daylight_saving_time() {
        // Winter: PST, midnight = 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc("2026-12-01T17:38:00Z")),
            utc("2026-12-02T08:00:00Z")
        );
        // Just before midnight PST.
        assert_eq!(
            next_pacific_midnight(utc("2026-12-02T07:59:59Z")),
            utc("2026-12-02T08:00:00Z")
        );
        // Summer: PDT, midnight = 07:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc("2026-07-04T12:00:00Z")),
            utc("2026-07-05T07:00:00Z")
        );
        // The day DST starts (Sunday 2026-03-08): the midnight after it is PDT.
        assert_eq!(
            next_pacific_midnight(utc("2026-03-08T12:00:00Z")),
            utc("2026-03-09T07:00:00Z")
        );
        // The day DST ends (Sunday 2026-11-01): the midnight before it is PDT, after it PST.
        assert_eq!(
            next_pacific_midnight(utc("2026-10-31T20:00:00Z")),
            utc("2026-11-01T07:00:00Z")
        );
        assert_eq!(
            next_pacific_midnight(utc("2026-11-01T12:00:00Z")),
            utc("2026-11-02T08:00:00Z")
        );
        assert_eq!(pacific_offset_hours(utc("2026-03-08T09:59:59Z")), 8);
        assert_eq!(pacific_offset_hours(utc("2026-03-08T10:00:00Z")), 7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T08:59:59Z")), 7);
        assert_eq!(pacific_offset_hours(utc("2026-11-01T09:00:00Z")), 8);
    }

    #[test]
    fn a_pause_ends_by_itself_and_the_later_one_wins() {
        let p = Pauses::default();
        let now = utc("2026-12-01T17:00:00Z");
        p.pause("a", utc("2026-12-02T08:00:00Z"));
        p.pause("a", utc("2026-12-01T18:00:00Z"));
        assert_eq!(p.paused_until("a", now), Some(utc("2026-12-02T08:00:00Z")));
        assert_eq!(p.paused_until("b", now), None);
        assert_eq!(p.paused_until("a", utc("2026-12-02T08:00:00Z")), None);
    }
}
