//! The behaviour every [`Store`] backend must have, run by each backend's tests.

use super::*;
use crate::receipt::Receipt;

fn fetch<'a>(uidl: &'a str, sinks: &'a [String]) -> FetchRecord<'a> {
    FetchRecord {
        mailbox: "alice",
        uidl,
        idem_key: "pb1_key",
        size: 42,
        sha256: "abc",
        fingerprint: "fp-abc",
        list_size: 42,
        fetched_at: 1_000,
        sinks,
        retire: false,
        route: None,
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

/// Records one outcome for `uidl` of `alice` at `sink`.
async fn record(s: &dyn Store, uidl: &str, sink: &str, result: OutcomeResult) {
    s.record_outcomes(&[outcome(uidl, sink, result)])
        .await
        .unwrap();
}

fn delivered(detail: &str) -> OutcomeResult {
    OutcomeResult::Delivered(Receipt::new(detail))
}

fn dead(error: &str) -> OutcomeResult {
    OutcomeResult::Dead {
        error: error.into(),
    }
}

pub async fn record_one_delivery(s: &dyn Store) {
    let sinks = vec!["archive".to_string()];
    s.record_fetched(&fetch("u1", &sinks)).await.unwrap();
    record(s, "u1", "archive", delivered("/m/new/x")).await;
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
    a_receipt_is_never_undone(s).await;
    a_reused_uidl_starts_a_new_message(s).await;
    broken_retrievals_become_a_dead_letter(s).await;
    the_first_recorded_route_stays_with_the_message(s).await;
    delivered_bytes_count_since_a_time_without_duplicates(s).await;
    fetched_bytes_count_per_mailbox_since_a_time(s).await;
    listed_state_is_compact_only_for_messages_every_sink_holds(s).await;
    s.sync().await.unwrap();
    s.ping().await.unwrap();
}

async fn fetched_message_is_pending_for_each_sink(s: &dyn Store) {
    let sinks = vec!["a".to_string(), "b".to_string()];
    s.record_fetched(&fetch("u2", &sinks)).await.unwrap();
    // Recording the fetch again (a re-run) must not reset anything.
    record(s, "u2", "a", delivered("ok")).await;
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
    record(s, "u2", "b", dead("HTTP 404")).await;
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
    record(s, "u2", "b", dead("HTTP 404")).await;
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
    // A poll loads what is on the server; the rest is looked up by UIDL.
    assert!(!m.contains_key("u1"));
    assert!(m["u2"].on_server);
    let looked = s.lookup("alice", &["u1".to_string()]).await.unwrap();
    assert!(!looked["u1"].on_server && !looked["u1"].is_history());
    assert!(s.has_vanished("alice").await.unwrap());
    s.record_presence("alice", &["u1".to_string()], &[], 3_100)
        .await
        .unwrap();
    assert!(s.load_mailbox("alice").await.unwrap()["u1"].on_server);
    s.record_presence("alice", &[], &["u1".to_string()], 3_200)
        .await
        .unwrap();
    let found = s
        .find_vanished_by_content("alice", "abc", 42, "fp-abc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.uidl, "u1");
    s.adopt("alice", "u1", "u1-new", 4_000).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    let old = s.lookup("alice", &["u1".to_string()]).await.unwrap();
    assert_eq!(m["u1-new"].idem_key, old["u1"].idem_key);
    assert_eq!(m["u1-new"].fingerprint.as_deref(), Some("fp-abc"));
    assert!(matches!(
        m["u1-new"].deliveries["archive"],
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(old["u1"].replaced_by.as_deref(), Some("u1-new"));
    assert!(old["u1"].is_history());
    // Once adopted it is no longer a candidate.
    assert!(s
        .find_vanished_by_content("alice", "abc", 42, "fp-abc")
        .await
        .unwrap()
        .is_none_or(|m| m.uidl != "u1"));
}

async fn the_first_recorded_route_stays_with_the_message(s: &dyn Store) {
    use crate::route::{Route, Target};
    let route = |rule: &str, folder: &str| Route {
        rules: vec![rule.into()],
        targets: vec![Target {
            sink: "imap".into(),
            params: [("folder".to_string(), folder.to_string())].into(),
        }],
    };
    let first = route("v1", "Sales");
    let sinks = vec!["imap".to_string()];
    s.record_fetched(&FetchRecord {
        route: Some(&first),
        ..fetch("r1", &sinks)
    })
    .await
    .unwrap();
    // A retry after the rules changed records another decision: the first one stays.
    let later = route("v2", "Elsewhere");
    s.record_fetched(&FetchRecord {
        route: Some(&later),
        ..fetch("r1", &sinks)
    })
    .await
    .unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["r1"].route.as_ref(), Some(&first));
    assert_eq!(m["r1"].sinks_or(&["archive".to_string()]).to_vec(), sinks);
    // Renamed by the server (same content under a new UIDL): the route goes along.
    s.record_presence("alice", &[], &["r1".to_string()], 5_000)
        .await
        .unwrap();
    s.adopt("alice", "r1", "r1-new", 5_100).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["r1-new"].route.as_ref(), Some(&first));
    // A message recorded without rules has no route: the mailbox's sinks apply.
    s.record_fetched(&fetch("r2", &sinks)).await.unwrap();
    assert!(s.load_mailbox("alice").await.unwrap()["r2"].route.is_none());
}

async fn delivered_bytes_count_since_a_time_without_duplicates(s: &dyn Store) {
    let sinks = vec!["budgeted".to_string()];
    for (uidl, at, receipt) in [
        ("q1", 10_000, Receipt::new("APPENDUID 1 1")),
        ("q2", 20_000, Receipt::new("APPENDUID 1 2")),
        ("q3", 20_000, Receipt::duplicate("UID 3 (already there)")),
    ] {
        s.record_fetched(&fetch(uidl, &sinks)).await.unwrap();
        s.record_outcomes(&[Outcome {
            at,
            ..outcome(uidl, "budgeted", OutcomeResult::Delivered(receipt))
        }])
        .await
        .unwrap();
    }
    let since = s.delivered_bytes_since("budgeted", 15_000).await.unwrap();
    assert_eq!(since.get("alice"), Some(&42), "{since:?}");
    let all = s.delivered_bytes_since("budgeted", 0).await.unwrap();
    assert_eq!(all.get("alice"), Some(&84), "{all:?}");
    assert!(s
        .delivered_bytes_since("other", 0)
        .await
        .unwrap()
        .is_empty());
}

async fn fetched_bytes_count_per_mailbox_since_a_time(s: &dyn Store) {
    let sinks = vec!["a".to_string()];
    for (uidl, at) in [("f1", 10_000), ("f2", 20_000), ("f3", 30_000)] {
        s.record_fetched(&FetchRecord {
            mailbox: "fetcher",
            fetched_at: at,
            ..fetch(uidl, &sinks)
        })
        .await
        .unwrap();
    }
    let of = |rows: Vec<(String, u64)>| {
        rows.into_iter()
            .find(|(m, _)| m == "fetcher")
            .map(|(_, b)| b)
    };
    assert_eq!(of(s.fetched_bytes_since(15_000).await.unwrap()), Some(84));
    assert_eq!(of(s.fetched_bytes_since(0).await.unwrap()), Some(126));
    assert_eq!(of(s.fetched_bytes_since(40_000).await.unwrap()), None);
}

async fn backlog_counts_pending_and_dead_by_sink(s: &dyn Store) {
    let sinks = vec!["hook".to_string()];
    s.record_fetched(&fetch("b1", &sinks)).await.unwrap();
    s.record_fetched(&fetch("b2", &sinks)).await.unwrap();
    record(s, "b2", "hook", dead("410")).await;
    let b = s.backlog("alice").await.unwrap();
    let hook = b.iter().find(|b| b.sink == "hook").unwrap();
    assert_eq!((hook.pending, hook.dead), (1, 1));
}

async fn deleted_messages_are_marked(s: &dyn Store) {
    s.record_deleted("alice", &["u2".to_string()], 6_000)
        .await
        .unwrap();
    let m = s.lookup("alice", &["u2".to_string()]).await.unwrap();
    assert_eq!(m["u2"].deleted_at, Some(6_000));
    assert!(!m["u2"].on_server);
    assert!(!s.load_mailbox("alice").await.unwrap().contains_key("u2"));
    let counts = s.counts().await.unwrap();
    assert_eq!(counts[0].mailbox, "alice");
    assert_eq!(counts[0].deleted, 1);
}

async fn forget_removes_message_and_deliveries(s: &dyn Store) {
    assert_eq!(s.forget("alice", Some("u2")).await.unwrap(), 1);
    let m = s.lookup("alice", &["u2".to_string()]).await.unwrap();
    assert!(!m.contains_key("u2"));
}

/// A delivered row never goes back to pending or dead: a late outcome of a concurrent attempt
/// (another process, a retry that lost the race) must not undo a receipt.
async fn a_receipt_is_never_undone(s: &dyn Store) {
    let sinks = vec!["m".to_string()];
    s.record_fetched(&fetch("mono", &sinks)).await.unwrap();
    record(s, "mono", "m", delivered("r")).await;
    s.record_outcomes(&[
        outcome(
            "mono",
            "m",
            OutcomeResult::Retry {
                error: "late".into(),
                next_attempt_at: 9_000,
            },
        ),
        outcome("mono", "m", dead("late")),
    ])
    .await
    .unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert!(
        matches!(&m["mono"].deliveries["m"], DeliveryState::Delivered { receipt, .. } if receipt.detail == "r"),
        "{:?}",
        m["mono"].deliveries["m"]
    );
}

/// A UIDL whose message we deleted, listed again, is a new message: recording it moves the old
/// row to history and starts with no receipts.
async fn a_reused_uidl_starts_a_new_message(s: &dyn Store) {
    let sinks = vec!["m".to_string()];
    s.record_fetched(&fetch("re", &sinks)).await.unwrap();
    record(s, "re", "m", delivered("first")).await;
    s.record_deleted("alice", &["re".to_string()], 7_000)
        .await
        .unwrap();
    assert!(s.lookup("alice", &["re".to_string()]).await.unwrap()["re"].is_history());
    let second = FetchRecord {
        idem_key: "pb2_second",
        sha256: "def",
        fingerprint: "fp-def",
        fetched_at: 8_000,
        ..fetch("re", &sinks)
    };
    s.record_fetched(&second).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["re"].idem_key, "pb2_second");
    assert!(matches!(
        m["re"].deliveries["m"],
        DeliveryState::Pending { .. }
    ));
    // The same with an explicit request (a listed row whose content turned out different).
    let third = FetchRecord {
        idem_key: "pb2_third",
        retire: true,
        fetched_at: 9_000,
        ..second
    };
    s.record_fetched(&third).await.unwrap();
    let m = s.load_mailbox("alice").await.unwrap();
    assert_eq!(m["re"].idem_key, "pb2_third");
    assert!(matches!(
        m["re"].deliveries["m"],
        DeliveryState::Pending { .. }
    ));
    // History is pruned after the retention; what is on the server is not.
    assert!(s.prune("alice", 7_500).await.unwrap() >= 1);
    assert!(s.load_mailbox("alice").await.unwrap().contains_key("re"));
}

/// A message whose RETR keeps breaking the connection becomes a dead letter after `max`.
async fn broken_retrievals_become_a_dead_letter(s: &dyn Store) {
    let f = s
        .record_retrieval_failure("alice", "bad", "reset", 2, 1)
        .await
        .unwrap();
    assert_eq!((f.failures, f.dead), (1, false));
    let f = s
        .record_retrieval_failure("alice", "bad", "reset again", 2, 2)
        .await
        .unwrap();
    assert_eq!((f.failures, f.dead), (2, true));
    assert!(s.retrieval_failures("alice").await.unwrap()["bad"].dead);
    let dl = s.dead_letters(Some("alice")).await.unwrap();
    assert!(dl
        .iter()
        .any(|d| d.uidl == "bad" && d.sink == RETRIEVAL && d.error == "reset again"));
    assert_eq!(s.retry_dead("alice", Some("bad"), None).await.unwrap(), 1);
    assert!(s.retrieval_failures("alice").await.unwrap().is_empty());
    s.record_retrieval_failure("alice", "ok", "reset", 3, 3)
        .await
        .unwrap();
    s.clear_retrieval_failure("alice", "ok").await.unwrap();
    assert!(s.retrieval_failures("alice").await.unwrap().is_empty());
}

/// `load_listed` must agree with `load_mailbox`: a message is settled only when every sink of
/// the poll holds it, and then its LIST size and last delivery time are what the plan needs.
async fn listed_state_is_compact_only_for_messages_every_sink_holds(s: &dyn Store) {
    let sinks = vec!["a".to_string(), "b".to_string()];
    let at = |uidl: &str, sink: &str, at: Millis, result: OutcomeResult| Outcome {
        mailbox: "carol".into(),
        at,
        ..outcome(uidl, sink, result)
    };
    for u in ["c1", "c2", "c3", "c4"] {
        s.record_fetched(&FetchRecord {
            mailbox: "carol",
            list_size: 40,
            ..fetch(u, &sinks)
        })
        .await
        .unwrap();
    }
    let ok = || delivered("r");
    s.record_outcomes(&[
        at("c1", "a", 2_000, ok()),
        at("c1", "b", 3_000, ok()),
        at("c2", "a", 2_000, ok()),
        at("c3", "a", 2_000, ok()),
        at("c3", "b", 2_500, dead("no")),
        at("c4", "a", 2_000, ok()),
        at("c4", "b", 2_000, ok()),
    ])
    .await
    .unwrap();
    s.record_deleted("carol", &["c4".to_string()], 5_000)
        .await
        .unwrap();

    let l = s.load_listed("carol", &sinks).await.unwrap();
    assert_eq!(
        l.settled.get("c1"),
        Some(&Settled {
            list_size: Some(40),
            last_delivery: 3_000
        })
    );
    assert_eq!(l.settled.len(), 1, "{:?}", l.settled);
    let mut open: Vec<&str> = l.open.keys().map(String::as_str).collect();
    open.sort();
    assert_eq!(open, ["c2", "c3"], "history (c4) is not loaded");
    assert!(matches!(
        l.open["c3"].deliveries["b"],
        DeliveryState::Dead { .. }
    ));
    assert_eq!(
        l.open["c2"].deliveries.len(),
        2,
        "an open message comes whole, with its pending delivery"
    );

    // With one sink, everything that sink holds is settled.
    let one = s.load_listed("carol", &sinks[..1]).await.unwrap();
    let mut settled: Vec<&str> = one.settled.keys().map(String::as_str).collect();
    settled.sort();
    assert_eq!(settled, ["c1", "c2", "c3"]);
    assert_eq!(one.settled["c1"].last_delivery, 2_000);
    assert!(one.open.is_empty());

    // A routed message is held when its route's sinks hold it, which may not be the mailbox's:
    // here sink "a" has it, but its route also names "z", which does not. Compact, it would
    // look complete and be deleted before "z" had it.
    let route = crate::route::Route {
        rules: vec!["split".into()],
        targets: ["a", "z"]
            .iter()
            .map(|t| crate::route::Target {
                sink: (*t).into(),
                params: Default::default(),
            })
            .collect(),
    };
    let routed = vec!["a".to_string(), "z".to_string()];
    s.record_fetched(&FetchRecord {
        mailbox: "carol",
        route: Some(&route),
        ..fetch("c5", &routed)
    })
    .await
    .unwrap();
    s.record_outcomes(&[at("c5", "a", 2_000, ok())])
        .await
        .unwrap();
    let one = s.load_listed("carol", &sinks[..1]).await.unwrap();
    assert!(
        !one.settled.contains_key("c5"),
        "a routed message is never compact"
    );
    assert_eq!(one.open["c5"].route.as_ref(), Some(&route));
    s.forget("carol", None).await.unwrap();
}
