#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::sync::Mutex;

fn every_second() -> Schedule {
    Schedule::Every {
        interval: Duration::from_secs(1),
        jitter: Duration::ZERO,
    }
}

fn policy() -> Policy {
    Policy {
        auth: Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(25),
        },
        panic: Backoff {
            base: Duration::from_secs(7),
            cap: Duration::from_secs(60),
        },
        busy: Backoff {
            base: Duration::from_secs(3),
            cap: Duration::from_secs(5),
        },
        min_interval: Duration::ZERO,
    }
}

/// Runs the loop over scripted polls (one per entry; `None` panics) and returns the
/// seconds between consecutive poll starts, on tokio's paused clock.
async fn gaps(script: Vec<Option<PollReport>>, health: &Health) -> Vec<u64> {
    gaps_with(policy(), script, health).await
}

/// [`gaps`] under another policy.
async fn gaps_with(policy: Policy, script: Vec<Option<PollReport>>, health: &Health) -> Vec<u64> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script.into_iter()));
    let shutdown = CancellationToken::new();
    let (s2, t2) = (starts.clone(), shutdown.clone());
    let poll_once = move || {
        let (starts, script, token) = (s2.clone(), script.clone(), t2.clone());
        async move {
            starts.lock().unwrap().push(Instant::now());
            let next = script.lock().unwrap().next();
            match next {
                None => {
                    token.cancel();
                    None
                }
                Some(None) => panic!("injected test panic"),
                Some(Some(report)) => Some(report),
            }
        }
    };
    drive(
        "alice",
        &every_second(),
        policy,
        &shutdown,
        poll_once,
        &|_| {},
        health,
    )
    .await;
    let starts = starts.lock().unwrap();
    starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64().round() as u64)
        .collect()
}

fn report(error: Option<&str>, login_delay: Option<u64>) -> Option<PollReport> {
    Some(PollReport {
        mailbox: "alice".into(),
        error: error.map(|k| (k.to_string(), "refused".to_string())),
        login_delay: login_delay.map(Duration::from_secs),
        ..Default::default()
    })
}

/// A host's `min_poll_interval` spaces polls whatever the schedule says; a longer
/// LOGIN-DELAY still wins.
#[tokio::test(start_paused = true)]
async fn the_hosts_min_poll_interval_spaces_polls_and_a_longer_login_delay_wins() {
    let health = Health::default();
    let p = Policy {
        min_interval: Duration::from_secs(3),
        ..policy()
    };
    let g = gaps_with(
        p,
        vec![
            report(None, None),
            report(None, Some(5)),
            report(None, None),
            report(None, None),
        ],
        &health,
    )
    .await;
    assert_eq!(g, [3, 5, 3, 3]);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = policy().auth;
    let waits: Vec<u64> = (0..5).map(|n| b.after(n).as_secs()).collect();
    assert_eq!(waits, [0, 10, 20, 25, 25]);
    assert_eq!(b.after(u32::MAX), Duration::from_secs(25));
}

#[tokio::test(start_paused = true)]
async fn auth_and_tls_failures_back_off_exponentially_and_success_resets() {
    let health = Health::default();
    let g = gaps(
        vec![
            report(Some("auth"), None),
            report(Some("tls"), None),
            report(Some("auth"), None),
            report(None, None),
            report(Some("network"), None),
            report(Some("auth"), None),
            report(None, None),
        ],
        &health,
    )
    .await;
    // 10, 20, 25 (capped); success: the schedule again (1 s); a network error does not
    // back off; a new auth failure starts from the base again.
    assert_eq!(g, [10, 20, 25, 1, 1, 10, 1]);
}

/// `[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`: the server said "not now"; polls slow down, and
/// one that gets through resets the pace.
#[tokio::test(start_paused = true)]
async fn try_later_answers_back_off_politely_and_success_resets() {
    let health = Health::default();
    let g = gaps(
        vec![
            report(Some("temporary"), None),
            report(Some("temporary"), None),
            report(Some("temporary"), None),
            report(None, None),
            report(None, None),
        ],
        &health,
    )
    .await;
    assert_eq!(g, [3, 5, 5, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn login_delay_holds_the_next_poll_back_whatever_the_schedule() {
    let health = Health::default();
    let g = gaps(
        vec![
            report(None, Some(300)),
            report(None, None),
            report(None, None),
        ],
        &health,
    )
    .await;
    assert_eq!(g, [300, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_poll_is_retried_with_backoff_and_shown_until_a_poll_returns() {
    let health = Arc::new(Health::default());
    let g = gaps(vec![None, None, report(None, None)], &health).await;
    assert_eq!(g, [7, 14, 1]);
    assert!(health.snapshot()["alice"].ok());
}

#[tokio::test(start_paused = true)]
async fn a_panic_marks_the_mailbox_not_ready() {
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let calls = Arc::new(Mutex::new(0));
    let (c2, t2) = (calls.clone(), shutdown.clone());
    let poll_once = move || {
        let (calls, token) = (c2.clone(), t2.clone());
        async move {
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            if n == 1 {
                panic!("injected test panic");
            }
            token.cancel();
            None
        }
    };
    let seen = Arc::new(Mutex::new(None));
    let schedule = every_second();
    let loop_ = drive(
        "alice",
        &schedule,
        policy(),
        &shutdown,
        poll_once,
        &|_| {},
        &health,
    );
    tokio::pin!(loop_);
    // Run until the panic has been handled, then look at the health mid-backoff.
    tokio::select! {
        _ = &mut loop_ => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => {
            *seen.lock().unwrap() = Some(health.snapshot());
        }
    }
    let snap = seen.lock().unwrap().clone().unwrap();
    let alice = &snap["alice"];
    assert!(!alice.ok() && alice.panicking && alice.consecutive_panics == 1);
    assert!(
        alice
            .error
            .as_deref()
            .unwrap()
            .contains("injected test panic"),
        "{alice:?}"
    );
    loop_.await;
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_poll_waiting_for_its_busy_server_leaves_global_slots_to_other_servers() {
    let limiter = Arc::new(Limiter::new(2, 1, ["a:110", "b:110"]));
    let held = limiter.acquire("a:110").await;
    let l2 = limiter.clone();
    let waiter = tokio::spawn(async move { l2.acquire("a:110").await.len() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    // The second poll of a:110 waits without a global slot, so b:110 gets the other one.
    let other = tokio::time::timeout(Duration::from_millis(500), limiter.acquire("b:110")).await;
    assert!(
        other.is_ok(),
        "a poll of b:110 was starved by one waiting for a:110"
    );
    drop(other);
    drop(held);
    assert_eq!(waiter.await.unwrap(), 2);
}

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
    let other = tokio::time::timeout(Duration::from_millis(200), limiter.acquire("b:110")).await;
    assert!(other.is_ok());
    // ...the same server is, until the first poll ends.
    let l2 = limiter.clone();
    let waiter = tokio::spawn(async move { l2.acquire("a:110").await.len() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    drop(held);
    assert_eq!(waiter.await.unwrap(), 2);
}

/// With three live replicas each keeps a third of every cap (at least one slot); when peers
/// leave the held-back slots come back.
#[tokio::test]
async fn caps_are_divided_among_live_replicas() {
    let limiter = Limiter::new(4, 3, ["a:110"]);
    let settled = |want: (usize, usize)| {
        let limiter = &limiter;
        async move {
            for _ in 0..1000 {
                if limiter.available("a:110") == want {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("caps {:?}, want {want:?}", limiter.available("a:110"));
        }
    };
    settled((4, 3)).await;
    limiter.share(3);
    settled((1, 1)).await;
    limiter.share(2);
    settled((2, 1)).await;
    limiter.share(1);
    settled((4, 3)).await;
}

/// A host's own `max_connections` is its cap, divided among replicas like the global one; a
/// host without one keeps `limits.max_connections_per_server`.
#[tokio::test]
async fn a_hosts_own_cap_is_divided_among_replicas_too() {
    let limiter = Limiter::with_caps(
        8,
        2,
        [("pop.big.example".to_string(), 6), ("b:110".to_string(), 2)],
        None,
    );
    let settled = |server: &'static str, want: usize| {
        let limiter = &limiter;
        async move {
            for _ in 0..1000 {
                if limiter.available(server).1 == want {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("{server}: {:?}, want {want}", limiter.available(server));
        }
    };
    settled("pop.big.example", 6).await;
    settled("b:110", 2).await;
    limiter.share(3);
    settled("pop.big.example", 2).await;
    settled("b:110", 1).await;
    limiter.share(1);
    settled("pop.big.example", 6).await;
}
