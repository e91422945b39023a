use super::*;
use crate::sink::{Receipt, SpooledMessage};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A sink that answers from a script, one answer per call, and counts calls.
struct Scripted {
    answers: Mutex<Vec<Result<Receipt, DeliveryError>>>,
    calls: AtomicU32,
}

impl Scripted {
    fn new(mut answers: Vec<Result<Receipt, DeliveryError>>) -> Arc<Self> {
        answers.reverse();
        Arc::new(Self {
            answers: Mutex::new(answers),
            calls: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl Sink for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn deliver(
        &self,
        _: &SpooledMessage,
        _: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| Err(DeliveryError::retryable("script ran out")))
    }
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts_per_poll: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        window: Duration::from_secs(3600),
    }
}

fn handle(sink: Arc<Scripted>, retry: RetryPolicy) -> SinkHandle {
    SinkHandle::new("s", sink, retry)
}

fn message() -> SpooledMessage {
    SpooledMessage {
        mailbox: "alice".into(),
        uidl: "u1".into(),
        path: "/nonexistent".into(),
        size: 0,
        sha256: String::new(),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
        owner: Default::default(),
        params: Default::default(),
    }
}

async fn run(sink: Arc<Scripted>, retry: RetryPolicy, first: Option<Millis>) -> Outcome {
    let key = IdempotencyKey::derive("alice", "u1");
    deliver_to_sink(
        &handle(sink, retry),
        &message(),
        &key,
        first,
        &CancellationToken::new(),
    )
    .await
}

#[tokio::test]
async fn retries_on_temporary_error_then_delivers() {
    let s = Scripted::new(vec![
        Err(DeliveryError::retryable("503")),
        Ok(Receipt::new("ok")),
    ]);
    let o = run(s.clone(), policy(), None).await;
    assert!(matches!(o.result, OutcomeResult::Delivered(_)), "{o:?}");
    assert_eq!(o.attempts_made, 2);
    assert_eq!(s.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn permanent_error_is_dead_lettered_at_once() {
    let s = Scripted::new(vec![Err(DeliveryError::permanent("HTTP 404"))]);
    let o = run(s.clone(), policy(), None).await;
    assert!(
        matches!(&o.result, OutcomeResult::Dead { error } if error == "HTTP 404"),
        "{o:?}"
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn exhausted_poll_attempts_leave_it_pending_for_later() {
    let s = Scripted::new(vec![]);
    let before = crate::store::now_millis();
    let o = run(s.clone(), policy(), None).await;
    match o.result {
        OutcomeResult::Retry {
            next_attempt_at, ..
        } => assert!(next_attempt_at >= before),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_window_exhausted_is_dead_lettered() {
    let s = Scripted::new(vec![]);
    let long_ago = crate::store::now_millis() - 7_200_000;
    let o = run(s, policy(), Some(long_ago)).await;
    assert!(
        matches!(&o.result, OutcomeResult::Dead { error } if error.contains("retry window")),
        "{o:?}"
    );
}

#[test]
fn backoff_grows_is_capped_and_honours_retry_after() {
    let p = RetryPolicy {
        attempts_per_poll: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        window: Duration::from_secs(60),
    };
    for _ in 0..50 {
        let d1 = backoff(&p, 1, None);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d3 = backoff(&p, 3, None);
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        assert!(backoff(&p, 20, None) <= Duration::from_secs(1));
    }
    assert_eq!(
        backoff(&p, 1, Some(Duration::from_millis(700))),
        Duration::from_millis(700)
    );
    assert_eq!(
        backoff(&p, 1, Some(Duration::from_secs(3600))),
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn a_sink_wide_refusal_opens_the_circuit_and_never_dead_letters() {
    let s = Scripted::new(vec![
        Err(DeliveryError::sink_down("HTTP 401")),
        Ok(Receipt::new("never reached")),
    ]);
    // Even past the retry window: the sink's fault is not the message's.
    let h = handle(s.clone(), policy());
    let key = IdempotencyKey::derive("alice", "u1");
    let long_ago = Some(crate::store::now_millis() - 10 * 3600 * 1000);
    let token = CancellationToken::new();
    let o = deliver_to_sink(&h, &message(), &key, long_ago, &token).await;
    match &o.result {
        OutcomeResult::Retry { error, .. } => assert_eq!(error, "HTTP 401"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        o.attempts_made, 1,
        "no in-poll retries against a sink that refuses all"
    );
    let until = h.circuit.open_until(crate::store::now_millis()).unwrap();
    assert!(until >= crate::store::now_millis() + 20_000, "{until}");
    // The next message does not knock at all while the circuit is open.
    let o = deliver_to_sink(&h, &message(), &key, None, &token).await;
    assert!(matches!(o.result, OutcomeResult::Retry { .. }), "{o:?}");
    assert_eq!(o.attempts_made, 0);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    assert!(h.circuit.open_until(crate::store::now_millis()).is_some());
}

#[tokio::test]
async fn a_run_of_transport_failures_trips_the_circuit_and_success_closes_it() {
    let c = Circuit::default();
    for i in 1..TRIP_AFTER {
        assert_eq!(c.failure(false, "timeout", 1_000), None, "failure {i}");
    }
    let until = c.failure(false, "timeout", 1_000).unwrap();
    assert_eq!(until, 1_000 + COOLDOWN_MS);
    assert_eq!(c.open_until(1_000), Some(until));
    assert_eq!(c.open_until(until), None, "half-open after the cool-down");
    // Failing again when half-open doubles the cool-down.
    assert_eq!(c.failure(true, "401", until), Some(until + 2 * COOLDOWN_MS));
    c.success();
    assert_eq!(c.open_until(until), None);
    assert_eq!(c.failure(false, "timeout", until), None);
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_a_later_poll_not_slept_through() {
    let s = Scripted::new(vec![
        Err(DeliveryError::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(120)),
        }),
        Ok(Receipt::new("too early")),
    ]);
    let mut p = policy();
    p.max_backoff = Duration::from_secs(600);
    let clock = std::time::Instant::now();
    let o = run(s.clone(), p, None).await;
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "slept in the poll"
    );
    match o.result {
        OutcomeResult::Retry {
            next_attempt_at, ..
        } => assert!(next_attempt_at >= crate::store::now_millis() + 100_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_paused_target_waits_until_the_pause_ends_without_dead_letter_or_circuit() {
    let until = chrono::Utc::now() + chrono::Duration::hours(20);
    let s = Scripted::new(vec![Err(DeliveryError::Paused {
        message: "daily quota".into(),
        until,
    })]);
    let h = handle(s.clone(), policy());
    let key = IdempotencyKey::derive("alice", "u1");
    // Its retry window (1 h) is long spent: a pause must still not dead-letter it.
    let first = Some(crate::store::now_millis() - 7_200_000);
    let o = deliver_to_sink(&h, &message(), &key, first, &CancellationToken::new()).await;
    let at = until.timestamp_millis();
    match &o.result {
        OutcomeResult::Retry {
            next_attempt_at, ..
        } => assert_eq!(*next_attempt_at, at),
        other => panic!("{other:?}"),
    }
    // Recorded as of the pause's end: a first failure's window starts then.
    assert_eq!(o.at, at);
    assert_eq!(s.calls.load(Ordering::SeqCst), 1, "no in-poll retry");
    assert!(
        h.circuit.open_until(crate::store::now_millis()).is_none(),
        "a paused target opens no circuit"
    );
}

/// A replica paused past its lease wakes up inside the retry loop: the next attempt is not
/// sent (the new owner sends it), and nothing is counted against the sink.
#[tokio::test]
async fn an_attempt_after_the_lease_was_lost_is_not_sent() {
    let owned = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = owned.clone();
    let mut m = message();
    m.owner = crate::sink::Ownership::new(move || flag.load(Ordering::SeqCst));
    let s = Scripted::new(vec![
        Err(DeliveryError::retryable("503")),
        Ok(Receipt::new("ok")),
    ]);
    // The first attempt fails; the lease is lost before the retry.
    let sink: Arc<dyn Sink> = Arc::new(LoseLeaseAfterCall {
        inner: s.clone(),
        owned: owned.clone(),
    });
    let key = IdempotencyKey::derive("alice", "u1");
    let h = SinkHandle::new("s", sink, policy());
    let o = deliver_to_sink(&h, &m, &key, None, &CancellationToken::new()).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 1, "the retry was sent");
    match o.result {
        OutcomeResult::Retry { error, .. } => assert!(error.contains("lease"), "{error}"),
        other => panic!("expected a retry later, got {other:?}"),
    }
    // Not owned from the start: never sent at all.
    let o = deliver_to_sink(&h, &m, &key, None, &CancellationToken::new()).await;
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    assert_eq!(o.attempts_made, 0);
    // Failures that come back after the lease was lost (a woken replica's queued IMAP window)
    // are not the sink's: however many, they never open its circuit.
    let fails = Scripted::new(
        (0..2 * TRIP_AFTER)
            .map(|_| Err(DeliveryError::retryable("lease lost")))
            .collect(),
    );
    let sink: Arc<dyn Sink> = Arc::new(LoseLeaseAfterCall {
        inner: fails,
        owned: owned.clone(),
    });
    let h = SinkHandle::new("s", sink, policy());
    for _ in 0..2 * TRIP_AFTER {
        owned.store(true, Ordering::SeqCst);
        deliver_to_sink(&h, &m, &key, None, &CancellationToken::new()).await;
    }
    assert_eq!(h.circuit.open_until(crate::store::now_millis()), None);
}

/// Forwards to `inner`, then marks the lease lost.
struct LoseLeaseAfterCall {
    inner: Arc<Scripted>,
    owned: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Sink for LoseLeaseAfterCall {
    fn name(&self) -> &str {
        "lose-lease"
    }
    async fn deliver(
        &self,
        m: &SpooledMessage,
        k: &IdempotencyKey,
    ) -> Result<Receipt, DeliveryError> {
        let r = self.inner.deliver(m, k).await;
        self.owned.store(false, Ordering::SeqCst);
        r
    }
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}
