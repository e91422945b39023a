//! The behaviour every [`Store`] backend must have, run by each backend's tests.

use super::*;
use crate::sink::Receipt;

fn fetch<'a>(uidl: &'a str, sinks: &'a [String]) -> FetchRecord<'a> {
    FetchRecord {
        mailbox: "alice",
        uidl,
        idem_key: "pb1_key",
        size: 42,
        sha256: "abc",
        fetched_at: 1_000,
        sinks,
    }
}

fn outcome(uidl: &str, sink: &str, result: OutcomeResult) -> Outcome {
    Outcome {
        mailbox: "alice".into(),
        uidl: uidl.into(),
        sink: sink.into(),
        attempts_made: 1,
        at: 2_000,
        result,
    }
}

pub async fn record_one_delivery(s: &dyn Store) {
    let sinks = vec!["archive".to_string()];
    s.record_fetched(&fetch("u1", &sinks)).await.unwrap();
    s.record_outcomes(&[outcome(
        "u1",
        "archive",
        OutcomeResult::Delivered(Receipt::new("/m/new/x")),
    )])
    .await
    .unwrap();
}

pub async fn assert_one_delivery(s: &dyn Store) {
    let m = s.load_mailbox("alice").await.unwrap();
    let d = &m["u1"].deliveries["archive"];
    assert!(
        matches!(d, DeliveryState::Delivered { receipt, .. } if receipt.detail == "/m/new/x"),
        "{d:?}"
    );
}

pub async fn run_all(s: &dyn Store) {
    record_one_delivery(s).await;
    assert_one_delivery(s).await;
    fetched_message_is_pending_for_each_sink(s).await;
    retries_accumulate_attempts_and_keep_first_attempt(s).await;
    dead_letters_can_be_listed_retried_and_dropped(s).await;
    listing_marks_vanished_and_content_match_adopts(s).await;
    backlog_counts_pending_and_dead_by_sink(s).await;
    deleted_messages_are_marked(s).await;
    forget_removes_message_and_deliveries(s).await;
    s.sync().await.unwrap();
    s.ping().await.unwrap();
}

async fn fetched_message_is_pending_for_each_sink(s: &dyn Store) {
    let sinks = vec!["a".to_string(), "b".to_string()];
    s.record_fetched(&fetch("u2", &sinks)).await.unwrap();
    // Recording the fetch again (a re-run) must not reset anything.
    s.record_outcomes(&[outcome(
        "u2",
        "a",
        OutcomeResult::Delivered(Receipt::new("ok")),
    )])
    .await
    .unwrap();
    s.record_fetched(&fetch("u2", &sinks)).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert!(matches!(
        m["u2"].deliveries["a"],
        DeliveryState::Delivered { .. }
    ));
    assert!(matches!(
        m["u2"].deliveries["b"],
        DeliveryState::Pending { attempts: 0, .. }
    ));
}

async fn retries_accumulate_attempts_and_keep_first_attempt(s: &dyn Store) {
    let retry = |at: i64| Outcome {
        at,
        ..outcome(
            "u2",
            "b",
            OutcomeResult::Retry {
                error: "503".into(),
                next_attempt_at: at + 10,
            },
        )
    };
    s.record_outcomes(&[retry(5_000)]).await.unwrap();
    s.record_outcomes(&[retry(9_000)]).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    match &m["u2"].deliveries["b"] {
        DeliveryState::Pending {
            attempts,
            first_attempt_at,
            next_attempt_at,
            last_error,
        } => {
            assert_eq!(*attempts, 2);
            assert_eq!(*first_attempt_at, Some(5_000));
            assert_eq!(*next_attempt_at, Some(9_010));
            assert_eq!(last_error.as_deref(), Some("503"));
        }
        other => panic!("{other:?}"),
    }
}

async fn dead_letters_can_be_listed_retried_and_dropped(s: &dyn Store) {
    s.record_outcomes(&[outcome(
        "u2",
        "b",
        OutcomeResult::Dead {
            error: "HTTP 404".into(),
        },
    )])
    .await
    .unwrap();
    let dl = s.dead_letters(Some("alice")).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(
        (
            dl[0].uidl.as_str(),
            dl[0].sink.as_str(),
            dl[0].error.as_str()
        ),
        ("u2", "b", "HTTP 404")
    );
    assert_eq!(s.retry_dead("alice", Some("u2"), None).await.unwrap(), 1);
    assert!(s.dead_letters(None).await.unwrap().is_empty());
    s.record_outcomes(&[outcome(
        "u2",
        "b",
        OutcomeResult::Dead {
            error: "HTTP 404".into(),
        },
    )])
    .await
    .unwrap();
    assert_eq!(s.drop_dead("alice", None, Some("b")).await.unwrap(), 1);
    assert!(s.dead_letters(None).await.unwrap().is_empty());
    let m = s.load_mailbox("alice").await.unwrap();
    assert!(matches!(
        m["u2"].deliveries["b"],
        DeliveryState::Dropped { .. }
    ));
}

async fn listing_marks_vanished_and_content_match_adopts(s: &dyn Store) {
    s.record_presence("alice", &[], &["u1".to_string()], 3_000)
        .await
        .unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert!(!m["u1"].on_server);
    assert!(m["u2"].on_server);
    s.record_presence("alice", &["u1".to_string()], &[], 3_100)
        .await
        .unwrap();
    assert!(s.load_mailbox("alice").await.unwrap()["u1"].on_server);
    s.record_presence("alice", &[], &["u1".to_string()], 3_200)
        .await
        .unwrap();
    let found = s
        .find_vanished_by_content("alice", "abc", 42)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.uidl, "u1");
    s.adopt("alice", "u1", "u1-new", 4_000).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["u1-new"].idem_key, m["u1"].idem_key);
    assert!(matches!(
        m["u1-new"].deliveries["archive"],
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(m["u1"].replaced_by.as_deref(), Some("u1-new"));
    // Once adopted it is no longer a candidate.
    assert!(s
        .find_vanished_by_content("alice", "abc", 42)
        .await
        .unwrap()
        .is_none_or(|m| m.uidl != "u1"));
}

async fn backlog_counts_pending_and_dead_by_sink(s: &dyn Store) {
    let sinks = vec!["hook".to_string()];
    s.record_fetched(&fetch("b1", &sinks)).await.unwrap();
    s.record_fetched(&fetch("b2", &sinks)).await.unwrap();
    s.record_outcomes(&[outcome(
        "b2",
        "hook",
        OutcomeResult::Dead {
            error: "410".into(),
        },
    )])
    .await
    .unwrap();
    let b = s.backlog("alice").await.unwrap();
    let hook = b.iter().find(|b| b.sink == "hook").unwrap();
    assert_eq!((hook.pending, hook.dead), (1, 1));
}

async fn deleted_messages_are_marked(s: &dyn Store) {
    s.record_deleted("alice", &["u2".to_string()], 6_000)
        .await
        .unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["u2"].deleted_at, Some(6_000));
    assert!(!m["u2"].on_server);
    let counts = s.counts().await.unwrap();
    assert_eq!(counts[0].mailbox, "alice");
    assert_eq!(counts[0].deleted, 1);
}

async fn forget_removes_message_and_deliveries(s: &dyn Store) {
    assert_eq!(s.forget("alice", Some("u2")).await.unwrap(), 1);
    let m = s.load_mailbox("alice").await.unwrap();
    assert!(!m.contains_key("u2"));
}
