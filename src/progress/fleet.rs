//! The fleet view of `popbridge once` over many accounts, as pure functions from a snapshot of
//! the counters to text: one compact block for a terminal (counts, overall work, rate, ETA, a
//! bounded list of running and failed accounts) and one status line for logs. No clock is
//! read here, so every case is a unit test.
//!
//! **ETA.** An account not yet listed is unknown work: it is estimated at the average of the
//! accounts listed so far, and the totals and the ETA then carry `≈`. The ETA of this run is
//! the larger of two estimates, so neither big mailboxes nor many empty ones fool it: the
//! remaining bytes at the overall byte rate, and the remaining accounts at the overall
//! account rate. Work that cannot finish in this run is not in it: an account whose sink is
//! paused (a used-up daily quota) or whose remaining bytes are over what its daily budget
//! allows today completes *after* a time, shown apart ("complete after …").

use crate::sink::DailyBudget;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::time::Duration;

/// Messages and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub messages: u64,
    pub bytes: u64,
}

/// Where one account's poll is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started (waiting for a connection slot).
    Waiting,
    /// Connecting, listing, fetching or delivering.
    Running,
    /// Ended with every listed message in every sink.
    Done,
    /// Ended with an error, or with deliveries left to retry: the reason, for people.
    Failed(String),
    /// Ended with a sink paused until a known time: its messages wait on the server.
    Paused,
}

/// One account, as its counters stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub state: State,
    /// What this run will fetch; `None` until the account is listed.
    pub planned: Option<Work>,
    pub done: Work,
    /// Since the account was listed (its own rate).
    pub elapsed: Duration,
    /// The latest time a sink of this account refuses deliveries until.
    pub paused_until: Option<DateTime<Utc>>,
    /// Left on the server this run for a paused sink (not fetched).
    pub deferred: Work,
    /// Daily byte budgets of this account's sinks, as they stood when it was listed.
    pub budgets: Vec<DailyBudget>,
}

impl Account {
    /// When the account can be complete if that is later than this run: the end of a sink's
    /// pause, or the start of the last day its daily budget needs for the remaining bytes.
    pub fn complete_after(&self) -> Option<DateTime<Utc>> {
        if matches!(self.state, State::Failed(_) | State::Done) {
            return None;
        }
        let mut after = self.paused_until;
        let wanted = self.planned.map_or(0, |p| p.bytes) + self.deferred.bytes;
        for b in &self.budgets {
            let over = wanted.saturating_sub(b.left_today);
            if over == 0 || b.limit == 0 {
                continue;
            }
            let days = over.div_ceil(b.limit);
            let days = i64::try_from(days - 1).unwrap_or(i64::MAX / 86_400_000);
            let t = b.resets_at + chrono::Duration::days(days);
            after = after.max(Some(t));
        }
        after
    }

    /// Messages and bytes still to go in this run.
    fn remaining(&self) -> Work {
        let p = self.planned.unwrap_or_default();
        Work {
            messages: p.messages.saturating_sub(self.done.messages),
            bytes: p.bytes.saturating_sub(self.done.bytes),
        }
    }

    fn active(&self) -> bool {
        matches!(self.state, State::Waiting | State::Running)
    }
}

/// Every account of the run and how long the run has taken.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub accounts: Vec<Account>,
    pub elapsed: Duration,
}

/// What the view says, computed once for both renderings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub accounts: usize,
    pub done: usize,
    pub running: usize,
    pub waiting: usize,
    pub failed: usize,
    pub paused: usize,
    pub work_done: Work,
    /// Planned work, with the unlisted accounts estimated.
    pub work_planned: Work,
    /// Active accounts not listed yet (their work is an estimate).
    pub unlisted: usize,
    /// Accounts listed (the base of the estimate).
    pub listed: usize,
    /// Bytes per second over the whole run.
    pub byte_rate: Option<f64>,
    /// Time left for this run; `None` when nothing allows an estimate yet.
    pub eta: Option<Duration>,
    /// Accounts that complete only after this run, and the latest such time.
    pub blocked: usize,
    pub blocked_until: Option<DateTime<Utc>>,
}

impl Totals {
    /// The estimates include unlisted accounts.
    pub fn approximate(&self) -> bool {
        self.unlisted > 0
    }
}

/// Counts, work and the ETA of `fleet`.
pub fn totals(fleet: &Fleet) -> Totals {
    let mut t = Totals {
        accounts: fleet.accounts.len(),
        ..Default::default()
    };
    let mut listed_work = Work::default();
    let mut remaining = Work::default();
    for a in &fleet.accounts {
        match a.state {
            State::Waiting => t.waiting += 1,
            State::Running => t.running += 1,
            State::Done => t.done += 1,
            State::Failed(_) => t.failed += 1,
            State::Paused => t.paused += 1,
        }
        t.work_done.messages += a.done.messages;
        t.work_done.bytes += a.done.bytes;
        match a.planned {
            Some(p) => {
                t.listed += 1;
                listed_work.messages += p.messages;
                listed_work.bytes += p.bytes;
                if a.active() {
                    let r = a.remaining();
                    remaining.messages += r.messages;
                    remaining.bytes += r.bytes;
                }
            }
            None if a.active() => t.unlisted += 1,
            None => {}
        }
        if let Some(after) = a.complete_after() {
            t.blocked += 1;
            t.blocked_until = t.blocked_until.max(Some(after));
        }
    }
    // Unlisted accounts at the average of the listed ones.
    let unlisted = t.unlisted as u64;
    let listed = t.listed.max(1) as u64;
    let estimate = Work {
        messages: listed_work.messages * unlisted / listed,
        bytes: listed_work.bytes * unlisted / listed,
    };
    t.work_planned = Work {
        messages: listed_work.messages + estimate.messages,
        bytes: listed_work.bytes + estimate.bytes,
    };
    remaining.messages += estimate.messages;
    remaining.bytes += estimate.bytes;

    let secs = fleet.elapsed.as_secs_f64();
    if secs > 0.0 && t.work_done.bytes > 0 {
        t.byte_rate = Some(t.work_done.bytes as f64 / secs);
    }
    let active = t.running + t.waiting;
    if active == 0 {
        t.eta = Some(Duration::ZERO);
    } else if t.listed > 0 || t.unlisted == 0 {
        let by_bytes = t.byte_rate.map(|r| remaining.bytes as f64 / r);
        let finished = t.done + t.failed + t.paused;
        let by_accounts =
            (secs > 0.0 && finished > 0).then(|| active as f64 * secs / finished as f64);
        t.eta = match (by_bytes, by_accounts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .filter(|s| s.is_finite())
        .map(Duration::from_secs_f64);
    }
    t
}

/// The terminal block: at most `3 + max_running + max_failed + 2` lines, each cut to `width`
/// characters.
pub fn block(fleet: &Fleet, width: usize, max_running: usize, max_failed: usize) -> Vec<String> {
    let t = totals(fleet);
    let mut lines = vec![format!(
        "accounts {}/{} done, {} running, {} waiting, {} failed, {} paused",
        t.done, t.accounts, t.running, t.waiting, t.failed, t.paused
    )];
    let mut work = format!(
        "messages {}/{}, {}/{}",
        t.work_done.messages,
        planned(&t, t.work_planned.messages.to_string()),
        bytes(t.work_done.bytes),
        planned(&t, bytes(t.work_planned.bytes))
    );
    if let Some(r) = t.byte_rate {
        let _ = write!(work, ", {}/s", bytes(r as u64));
    }
    match eta_text(&t) {
        e if t.running + t.waiting == 0 => {
            let _ = write!(work, ", {e}");
        }
        e => {
            let _ = write!(work, ", ETA {e}");
        }
    }
    lines.push(work);
    if let Some(until) = t.blocked_until {
        lines.push(format!(
            "{} account(s) wait for a paused sink or a daily budget: complete after {}",
            t.blocked,
            when(until)
        ));
    }
    let name_width = fleet
        .accounts
        .iter()
        .map(|a| a.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(NAME_WIDTH);
    let running: Vec<&Account> = fleet
        .accounts
        .iter()
        .filter(|a| a.state == State::Running)
        .collect();
    if !running.is_empty() {
        lines.push("running:".into());
        for a in running.iter().take(max_running) {
            lines.push(format!("  {}", account_line(a, name_width)));
        }
        if running.len() > max_running {
            lines.push(format!(
                "  … and {} more running",
                running.len() - max_running
            ));
        }
    }
    let failed: Vec<(&Account, &str)> = fleet
        .accounts
        .iter()
        .filter_map(|a| match &a.state {
            State::Failed(why) => Some((a, why.as_str())),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        lines.push("failed:".into());
        for (a, why) in failed.iter().take(max_failed) {
            lines.push(format!("  {}  {why}", name(&a.name, name_width)));
        }
        if failed.len() > max_failed {
            lines.push(format!("  … and {} more failed", failed.len() - max_failed));
        }
    }
    lines.into_iter().map(|l| cut(&l, width)).collect()
}

/// Longest account name shown before it is cut.
const NAME_WIDTH: usize = 24;

/// Failed accounts named in one status line.
const FAILURES_IN_STATUS: usize = 3;

/// A failure reason is cut to this many characters in the status line.
const REASON_WIDTH: usize = 160;

/// One line for a log, as fields: what `once` logs every `--status-every` when stderr is not a
/// terminal.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub accounts: usize,
    pub done: usize,
    pub running: usize,
    pub waiting: usize,
    pub failed: usize,
    pub paused: usize,
    /// `done/planned`, with `≈` when estimated.
    pub messages: String,
    pub bytes: String,
    pub rate: String,
    pub eta: String,
    /// Empty, or "N account(s) complete after …".
    pub blocked: String,
    /// The first failed accounts with their reason, then "… and N more".
    pub failures: String,
}

pub fn status(fleet: &Fleet) -> Status {
    let t = totals(fleet);
    let failed: Vec<String> = fleet
        .accounts
        .iter()
        .filter_map(|a| match &a.state {
            State::Failed(why) => Some(format!("{} ({})", a.name, cut(why, REASON_WIDTH))),
            _ => None,
        })
        .collect();
    let mut failures = failed
        .iter()
        .take(FAILURES_IN_STATUS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if failed.len() > FAILURES_IN_STATUS {
        let _ = write!(
            failures,
            "; … and {} more",
            failed.len() - FAILURES_IN_STATUS
        );
    }
    Status {
        accounts: t.accounts,
        done: t.done,
        running: t.running,
        waiting: t.waiting,
        failed: t.failed,
        paused: t.paused,
        messages: format!(
            "{}/{}",
            t.work_done.messages,
            planned(&t, t.work_planned.messages.to_string())
        ),
        bytes: format!(
            "{}/{}",
            bytes(t.work_done.bytes),
            planned(&t, bytes(t.work_planned.bytes))
        ),
        rate: t
            .byte_rate
            .map_or_else(|| "-".into(), |r| format!("{}/s", bytes(r as u64))),
        eta: eta_text(&t),
        blocked: t.blocked_until.map_or_else(String::new, |u| {
            format!("{} account(s) complete after {}", t.blocked, when(u))
        }),
        failures,
    }
}

/// A planned total: `≈` before it when it includes estimates, `?` when nothing is listed yet.
fn planned(t: &Totals, value: String) -> String {
    match (t.approximate(), t.listed) {
        (true, 0) => "?".into(),
        (true, _) => format!("≈{value}"),
        (false, _) => value,
    }
}

/// `5m40s`, `≈5m40s (3 unlisted account(s) at the average of 7 listed)`, `finished`, or why
/// there is no estimate yet.
fn eta_text(t: &Totals) -> String {
    match t.eta {
        _ if t.running + t.waiting == 0 => "finished".into(),
        Some(d) if t.approximate() => format!(
            "≈{} ({} unlisted account(s) at the average of {} listed)",
            duration(d),
            t.unlisted,
            t.listed
        ),
        Some(d) => duration(d),
        None if t.listed == 0 => "unknown until an account is listed".into(),
        None => "unknown until something is done".into(),
    }
}

/// One running account: `alice  340/1000 msgs  1.6/4.7 MB  ETA 1s`.
fn account_line(a: &Account, name_width: usize) -> String {
    let mut out = name(&a.name, name_width);
    let Some(p) = a.planned else {
        out.push_str("  listing");
        return out;
    };
    let _ = write!(
        out,
        "  {}/{} msgs  {}/{}",
        a.done.messages,
        p.messages,
        bytes(a.done.bytes),
        bytes(p.bytes)
    );
    let secs = a.elapsed.as_secs_f64();
    let left = a.remaining();
    if secs > 0.0 && a.done.bytes > 0 && left.bytes > 0 {
        let eta = Duration::from_secs_f64(left.bytes as f64 * secs / a.done.bytes as f64);
        let _ = write!(out, "  ETA {}", duration(eta));
    }
    if let Some(until) = a.paused_until {
        let _ = write!(out, "  PAUSED until {}", when(until));
    }
    if let Some(after) = a.complete_after().filter(|&t| Some(t) != a.paused_until) {
        let _ = write!(out, "  complete after {} (daily budget)", when(after));
    }
    out
}

/// `name` padded or cut to `width` characters.
fn name(name: &str, width: usize) -> String {
    format!("{:<width$}", cut(name, width))
}

/// At most `width` characters, the last one `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `512 B`, `12.0 kB`, `1.6 MB`, `2.10 GB` (decimal units, as the per-mailbox line).
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if n < 1000 {
        format!("{n} B")
    } else if f < 1e6 {
        format!("{:.1} kB", f / 1e3)
    } else if f < 1e9 {
        format!("{:.1} MB", f / 1e6)
    } else {
        format!("{:.2} GB", f / 1e9)
    }
}

/// `45s`, `5m40s`, `2h05m`, `3d04h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "<1s".into(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn account(name: &str, state: State) -> Account {
        Account {
            name: name.into(),
            state,
            planned: None,
            done: Work::default(),
            elapsed: Duration::ZERO,
            paused_until: None,
            deferred: Work::default(),
            budgets: vec![],
        }
    }

    /// Listed with `planned` bytes (one message per 1000 bytes), `done` of them delivered.
    fn listed(name: &str, state: State, planned: u64, done: u64) -> Account {
        Account {
            planned: Some(Work {
                messages: planned / 1000,
                bytes: planned,
            }),
            done: Work {
                messages: done / 1000,
                bytes: done,
            },
            elapsed: Duration::from_secs(10),
            ..account(name, state)
        }
    }

    fn fleet(accounts: Vec<Account>, secs: u64) -> Fleet {
        Fleet {
            accounts,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn counts_each_state_and_sums_the_work() {
        let f = fleet(
            vec![
                listed("a", State::Done, 4000, 4000),
                listed("b", State::Running, 6000, 2000),
                account("c", State::Waiting),
                account("d", State::Failed("auth: login refused".into())),
                listed("e", State::Paused, 0, 0),
            ],
            10,
        );
        let t = totals(&f);
        assert_eq!(
            (t.done, t.running, t.waiting, t.failed, t.paused),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(
            t.work_done,
            Work {
                messages: 6,
                bytes: 6000
            }
        );
        assert_eq!((t.listed, t.unlisted), (3, 1));
        let lines = block(&f, 200, 8, 5);
        assert_eq!(
            lines[0],
            "accounts 1/5 done, 1 running, 1 waiting, 1 failed, 1 paused"
        );
    }

    #[test]
    fn unlisted_accounts_are_estimated_at_the_average_of_the_listed_ones() {
        // Two listed accounts of 10 kB and 30 kB: the two unlisted count as 20 kB each.
        let f = fleet(
            vec![
                listed("a", State::Done, 10_000, 10_000),
                listed("b", State::Running, 30_000, 10_000),
                account("c", State::Waiting),
                account("d", State::Running),
            ],
            10,
        );
        let t = totals(&f);
        assert!(t.approximate());
        assert_eq!(t.work_planned.bytes, 80_000);
        // 2 kB/s; 20 kB + 40 kB left = 30 s by bytes, 3 accounts at 10 s each = 30 s.
        assert_eq!(t.eta, Some(Duration::from_secs(30)));
        let lines = block(&f, 200, 8, 5);
        assert_eq!(
            lines[1],
            "messages 20/≈80, 20.0 kB/≈80.0 kB, 2.0 kB/s, ETA ≈30s (2 unlisted account(s) at the average of 2 listed)"
        );
        let s = status(&f);
        assert_eq!(s.messages, "20/≈80");
        assert!(s.eta.starts_with("≈30s (2 unlisted"), "{}", s.eta);
    }

    #[test]
    fn the_eta_is_exact_when_every_active_account_is_listed() {
        let f = fleet(
            vec![
                listed("a", State::Done, 10_000, 10_000),
                listed("b", State::Running, 50_000, 10_000),
            ],
            10,
        );
        // 2 kB/s and 40 kB left: 20 s (the account rate says 10 s: the larger wins).
        assert_eq!(totals(&f).eta, Some(Duration::from_secs(20)));
        assert_eq!(status(&f).eta, "20s");
    }

    #[test]
    fn many_empty_accounts_are_timed_by_the_account_rate() {
        // Nothing to fetch anywhere: the bytes say nothing, 10 accounts took 5 s.
        let mut accounts: Vec<Account> = (0..10)
            .map(|i| listed(&format!("done{i}"), State::Done, 0, 0))
            .collect();
        accounts.extend((0..20).map(|i| account(&format!("w{i}"), State::Waiting)));
        let t = totals(&fleet(accounts, 5));
        assert_eq!(t.eta, Some(Duration::from_secs(10)));
    }

    #[test]
    fn no_eta_before_anything_is_listed_or_done() {
        let f = fleet(
            vec![account("a", State::Running), account("b", State::Waiting)],
            3,
        );
        assert_eq!(totals(&f).eta, None);
        assert_eq!(status(&f).eta, "unknown until an account is listed");
        assert_eq!(status(&f).messages, "0/?");
        assert!(block(&f, 200, 8, 5)[1].ends_with(", ETA unknown until an account is listed"));
        let all_done = fleet(vec![listed("a", State::Done, 5000, 5000)], 3);
        assert_eq!(status(&all_done).eta, "finished");
        assert!(block(&all_done, 200, 8, 5)[1].ends_with(" kB/s, finished"));
    }

    #[test]
    fn a_paused_sink_makes_its_accounts_complete_after_the_pause() {
        let until = utc("2026-12-02T08:00:00Z");
        let paused = Account {
            paused_until: Some(until),
            deferred: Work {
                messages: 3,
                bytes: 3000,
            },
            ..listed("gm", State::Paused, 0, 0)
        };
        let mut running = listed("gm2", State::Running, 4000, 1000);
        running.paused_until = Some(until);
        // Done with the same target paused: nothing of it waits.
        let mut idle = listed("idle", State::Done, 0, 0);
        idle.paused_until = Some(until);
        let f = fleet(
            vec![listed("a", State::Done, 1000, 1000), paused, running, idle],
            1,
        );
        let t = totals(&f);
        assert_eq!((t.blocked, t.blocked_until), (2, Some(until)));
        let lines = block(&f, 200, 8, 5);
        assert_eq!(
            lines[2],
            "2 account(s) wait for a paused sink or a daily budget: complete after 2026-12-02 08:00 UTC"
        );
        let gm2 = lines.iter().find(|l| l.contains("gm2")).unwrap();
        assert!(gm2.contains("PAUSED until 2026-12-02 08:00 UTC"), "{gm2}");
        assert_eq!(
            status(&f).blocked,
            "2 account(s) complete after 2026-12-02 08:00 UTC"
        );
    }

    #[test]
    fn a_daily_budget_counts_the_days_the_remaining_bytes_need() {
        let midnight = utc("2026-12-02T00:00:00Z");
        let budget = |left_today| DailyBudget {
            limit: 500,
            left_today,
            resets_at: midnight,
        };
        // 1200 bytes, 200 left today: 1000 more = 2 days of 500, the last from Dec 3.
        let mut a = listed("mig", State::Running, 1200, 0);
        a.budgets = vec![budget(200)];
        assert_eq!(a.complete_after(), Some(utc("2026-12-03T00:00:00Z")));
        // 1001 more bytes need a third day.
        a.budgets = vec![budget(199)];
        assert_eq!(a.complete_after(), Some(utc("2026-12-04T00:00:00Z")));
        // Everything fits today: no later time.
        a.budgets = vec![budget(1200)];
        assert_eq!(a.complete_after(), None);
        // Bytes left on the server for the paused sink count too.
        a.budgets = vec![budget(1200)];
        a.deferred = Work {
            messages: 1,
            bytes: 300,
        };
        assert_eq!(a.complete_after(), Some(midnight));
        let line = block(&fleet(vec![a, account("x", State::Waiting)], 1), 200, 8, 5)
            .into_iter()
            .find(|l| l.contains("mig"))
            .unwrap();
        assert!(
            line.contains("complete after 2026-12-02 00:00 UTC (daily budget)"),
            "{line}"
        );
    }

    #[test]
    fn the_lists_are_bounded_and_say_how_many_more() {
        let mut accounts: Vec<Account> = (0..30)
            .map(|i| listed(&format!("run{i:02}"), State::Running, 2000, 1000))
            .collect();
        accounts.extend((0..12).map(|i| {
            account(
                &format!("bad{i:02}"),
                State::Failed(format!("auth: no {i}")),
            )
        }));
        let f = fleet(accounts, 10);
        let lines = block(&f, 200, 4, 3);
        assert_eq!(lines.iter().filter(|l| l.starts_with("  run")).count(), 4);
        assert!(
            lines.contains(&"  … and 26 more running".to_string()),
            "{lines:#?}"
        );
        assert_eq!(lines.iter().filter(|l| l.starts_with("  bad")).count(), 3);
        assert!(
            lines.contains(&"  … and 9 more failed".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"  bad00  auth: no 0".to_string()),
            "{lines:#?}"
        );
        // Header, work, two headings, 4 + 1 and 3 + 1 lines: never one per account.
        assert_eq!(lines.len(), 2 + 2 + 5 + 4);
        let s = status(&f);
        assert_eq!(
            s.failures,
            "bad00 (auth: no 0); bad01 (auth: no 1); bad02 (auth: no 2); … and 9 more"
        );
    }

    #[test]
    fn lines_fit_the_width_and_long_names_are_cut() {
        let long = "a-very-long-account-name-from-the-spreadsheet@example.com";
        let f = fleet(
            vec![
                listed(long, State::Running, 5_000_000, 1_000_000),
                listed("bob", State::Running, 5_000_000, 1_000_000),
                account("carol", State::Failed("x".repeat(300))),
            ],
            10,
        );
        let lines = block(&f, 60, 8, 5);
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{lines:#?}");
        let running: Vec<&String> = lines.iter().filter(|l| l.contains("msgs")).collect();
        // Names padded to one width (24), so the counts line up.
        assert!(
            running[0].starts_with("  a-very-long-account-nam… "),
            "{}",
            running[0]
        );
        assert!(
            running[1].starts_with(&format!("  {:<24} ", "bob")),
            "{}",
            running[1]
        );
        let column = |l: &str| l[..l.find("1000/5000").unwrap()].chars().count();
        assert_eq!(column(running[0]), column(running[1]), "{running:#?}");
        assert!(lines.iter().any(|l| l.ends_with('…')));
        // The log line cuts a long reason too.
        assert!(status(&f).failures.chars().count() < 200);
    }

    #[test]
    fn an_account_being_listed_says_so() {
        let f = fleet(
            vec![
                account("slow", State::Running),
                account("b", State::Waiting),
            ],
            1,
        );
        let lines = block(&f, 100, 8, 5);
        assert!(lines.contains(&"  slow  listing".to_string()), "{lines:#?}");
    }

    #[test]
    fn units_and_durations_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(12_000), "12.0 kB");
        assert_eq!(bytes(1_600_000), "1.6 MB");
        assert_eq!(bytes(2_100_000_000), "2.10 GB");
        assert_eq!(duration(Duration::from_millis(300)), "<1s");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(340)), "5m40s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
    }
}
