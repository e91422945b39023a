//! Per target account: after a refused login the account is not tried again for a while (60 s,
//! doubling to 1 h, like the POP3 source), so a wrong password costs one login per account
//! and back-off step, not one per message: servers lock accounts and add penalties per failure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(60);
const CAP: Duration = Duration::from_secs(3600);

struct Refused {
    failures: u32,
    until: Instant,
    error: String,
}

/// Refused logins by target user name.
#[derive(Default)]
pub(super) struct LoginBackoff {
    accounts: Mutex<HashMap<String, Refused>>,
}

/// The wait after `failures` refused logins in a row.
fn wait_after(failures: u32) -> Duration {
    FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(CAP)
}

impl LoginBackoff {
    /// While `username` is backing off: how long still, and the error that started it.
    pub(super) fn blocked(&self, username: &str) -> Option<(Duration, String)> {
        let accounts = self.accounts.lock().ok()?;
        let r = accounts.get(username)?;
        let left = r.until.checked_duration_since(Instant::now())?;
        Some((left, r.error.clone()))
    }

    /// Records a refused login; returns the refusals in a row and the wait before the next try.
    pub(super) fn refused(&self, username: &str, error: &str) -> (u32, Duration) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return (1, FIRST);
        };
        let r = accounts.entry(username.to_string()).or_insert(Refused {
            failures: 0,
            until: Instant::now(),
            error: String::new(),
        });
        r.failures += 1;
        let wait = wait_after(r.failures);
        r.until = Instant::now() + wait;
        r.error = error.to_string();
        (r.failures, wait)
    }

    /// A login went through: the account starts afresh.
    pub(super) fn succeeded(&self, username: &str) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(username);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_a_minute_to_an_hour() {
        let mins: Vec<u64> = (1..=8).map(|n| wait_after(n).as_secs() / 60).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_refused_account_is_blocked_until_a_login_succeeds() {
        let b = LoginBackoff::default();
        assert!(b.blocked("a").is_none());
        assert_eq!(b.refused("a", "bad password").0, 1);
        let (left, why) = b.blocked("a").unwrap_or_default();
        assert!(left > Duration::from_secs(50) && why == "bad password");
        assert!(b.blocked("b").is_none(), "other accounts are not affected");
        assert_eq!(b.refused("a", "again").1, Duration::from_secs(120));
        b.succeeded("a");
        assert!(b.blocked("a").is_none());
    }
}
