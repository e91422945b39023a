use super::*;
use crate::store::contract;

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state/db.sqlite"))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn contract_receipts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        contract::record_one_delivery(&s).await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    contract::assert_one_delivery(&s).await;
}

#[tokio::test]
async fn contract_suite() {
    let (_d, s) = open().await;
    contract::run_all(&s).await;
}

#[tokio::test]
async fn database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _s) = open().await;
    let mode = std::fs::metadata(dir.path().join("state/db.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn delivered(uidl: &str, at: Millis) -> Outcome {
    Outcome {
        mailbox: "alice".into(),
        uidl: uidl.into(),
        sink: "archive".into(),
        attempts_made: 1,
        at,
        result: OutcomeResult::Delivered(crate::receipt::Receipt::new(format!("/m/{uidl}"))),
    }
}

/// Many concurrent writers: every one returns only once its rows are committed, whichever
/// writer led the group that wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_writes_from_concurrent_writers_all_land() {
    let (_d, s) = open().await;
    let s = std::sync::Arc::new(s);
    let sinks = vec!["archive".to_string()];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (s, sinks) = (s.clone(), sinks.clone());
            tokio::spawn(async move {
                let uidl = format!("u{i}");
                s.record_fetched(&FetchRecord {
                    mailbox: "alice",
                    uidl: &uidl,
                    idem_key: &format!("k{i}"),
                    size: 10 + i,
                    sha256: "00",
                    fingerprint: "f0",
                    list_size: 10 + i,
                    fetched_at: 1000,
                    sinks: &sinks,
                    retire: false,
                    route: None,
                })
                .await
                .unwrap();
                // Read back through the store right away: the write must already be visible.
                let known = s.load_mailbox("alice").await.unwrap();
                assert!(
                    known.contains_key(&uidl),
                    "{uidl} recorded before returning"
                );
                s.record_outcomes(&[delivered(&uidl, 2000)]).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let known = s.load_mailbox("alice").await.unwrap();
    assert_eq!(known.len(), 200);
    for (uidl, m) in &known {
        assert_eq!(m.idem_key, format!("k{}", &uidl[1..]));
        match m.deliveries.get("archive") {
            Some(DeliveryState::Delivered { at, receipt }) => {
                assert_eq!(*at, 2000);
                assert_eq!(receipt.detail, format!("/m/{uidl}"));
            }
            other => panic!("{uidl}: {other:?}"),
        }
    }
}

/// A failing group reports the failure to its writers, and later groups still work.
#[tokio::test]
async fn a_failed_group_is_reported_and_the_next_one_succeeds() {
    let (_d, s) = open().await;
    // No message row: the deliveries foreign key refuses the outcome.
    let err = s
        .record_outcomes(&[delivered("never-fetched", 1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    let sinks = vec!["archive".to_string()];
    s.record_fetched(&FetchRecord {
        mailbox: "alice",
        uidl: "u1",
        idem_key: "k1",
        size: 1,
        sha256: "00",
        fingerprint: "f0",
        list_size: 1,
        fetched_at: 1,
        sinks: &sinks,
        retire: false,
        route: None,
    })
    .await
    .unwrap();
    s.record_outcomes(&[delivered("u1", 2)]).await.unwrap();
    let known = s.load_mailbox("alice").await.unwrap();
    assert!(matches!(
        known["u1"].deliveries.get("archive"),
        Some(DeliveryState::Delivered { .. })
    ));
}

/// One bad row in a group must not fail the other writers of that group.
#[tokio::test]
async fn a_bad_row_fails_only_its_own_writer_not_the_group() {
    let (_d, s) = open().await;
    let s = std::sync::Arc::new(s);
    let sinks = vec!["archive".to_string()];
    for i in 0..5 {
        s.record_fetched(&FetchRecord {
            mailbox: "alice",
            uidl: &format!("g{i}"),
            idem_key: "k",
            size: 1,
            sha256: "00",
            fingerprint: "f0",
            list_size: 1,
            fetched_at: 1,
            sinks: &sinks,
            retire: false,
            route: None,
        })
        .await
        .unwrap();
    }
    // Hold the leader lock so that every writer below queues into one group.
    let leader = s.group.leader.lock().await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.record_outcomes(&[delivered(&format!("g{i}"), 2)]).await
        }));
    }
    let bad = {
        let s = s.clone();
        tokio::spawn(async move { s.record_outcomes(&[delivered("never-fetched", 2)]).await })
    };
    while s.group.queue.lock().unwrap().len() < 6 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(leader);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(bad.await.unwrap().is_err());
    let known = s.load_mailbox("alice").await.unwrap();
    assert_eq!(
        known
            .values()
            .filter(|m| matches!(
                m.deliveries.get("archive"),
                Some(DeliveryState::Delivered { .. })
            ))
            .count(),
        5
    );
}
