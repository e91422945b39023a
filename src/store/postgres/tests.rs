use super::*;
use crate::store::contract;
use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

#[path = "../../../tests/common/postgres.rs"]
mod cluster;

/// One private cluster for this test binary (its watchdog removes it when the process ends),
/// and a fresh database per test.
async fn fresh() -> Option<PgStore> {
    static CLUSTER: OnceLock<Option<cluster::PgCluster>> = OnceLock::new();
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let c = CLUSTER
        .get_or_init(|| {
            let c = cluster::start_or_skip()?;
            // Dropped at exit would stop it under other threads; the watchdog does it.
            Some(c)
        })
        .as_ref()?;
    let name = format!("t{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&c.url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = c.url().replace("/popbridge?", &format!("/{name}?"));
    Some(
        PgStore::open(&PgSettings {
            url: crate::secret::Secret::new(url),
            password: None,
            timeout: Duration::from_secs(10),
            application_name: "popbridge-test".into(),
        })
        .await
        .unwrap(),
    )
}

#[tokio::test]
async fn contract_suite() {
    let Some(s) = fresh().await else { return };
    contract::run_all(&s).await;
}

const TTL: Duration = Duration::from_millis(300);

fn fetch<'a>(mailbox: &'a str, uidl: &'a str, sinks: &'a [String]) -> FetchRecord<'a> {
    FetchRecord {
        mailbox,
        uidl,
        idem_key: "pb2_k",
        size: 1,
        sha256: "s",
        fingerprint: "f",
        list_size: 1,
        fetched_at: 1,
        sinks,
        retire: false,
        route: None,
    }
}

/// A handle bound to a fresh claim of `mailbox` by `owner`, believing it holds the lease for
/// a minute whatever the database says (a paused replica that woke up).
async fn claimed(s: &PgStore, owner: &str, mailbox: &str) -> PgStore {
    let got = s.claim(owner, &[mailbox.into()], 1, TTL).await.unwrap();
    assert_eq!(got.len(), 1, "{owner} could not claim {mailbox}");
    let slot = Arc::new(LeaseSlot::new(mailbox));
    slot.set(
        got[0].fence.clone(),
        Instant::now() + Duration::from_secs(60),
    );
    s.bound(slot)
}

/// The stale owner (its lease expired and another replica took it over) commits nothing: every
/// kind of write is refused with `Fenced` and leaves no row; the new owner writes.
#[tokio::test]
async fn a_stale_owner_cannot_commit_after_a_takeover() {
    let Some(s) = fresh().await else { return };
    let sinks = vec!["archive".to_string()];
    let old = claimed(&s, "r1", "bob").await;
    old.record_fetched(&fetch("bob", "u1", &sinks))
        .await
        .unwrap();
    // r2 cannot claim a live lease.
    assert!(s
        .claim("r2", &["bob".into()], 1, TTL)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let new = claimed(&s, "r2", "bob").await;

    let fenced = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::Fenced { .. })), "{r:?}");
    };
    fenced(old.record_fetched(&fetch("bob", "u2", &sinks)).await);
    let delivered = Outcome {
        mailbox: "bob".into(),
        uidl: "u1".into(),
        sink: "archive".into(),
        attempts_made: 1,
        at: 2,
        result: OutcomeResult::Delivered(Receipt::new("stale")),
    };
    fenced(old.record_outcomes(std::slice::from_ref(&delivered)).await);
    fenced(old.record_deleted("bob", &["u1".into()], 3).await);
    fenced(old.record_presence("bob", &[], &["u1".into()], 3).await);
    fenced(old.sync().await);
    assert!(matches!(
        old.record_retrieval_failure("bob", "u1", "x", 3, 3).await,
        Err(StoreError::Fenced { .. })
    ));
    // Nothing of it landed.
    let rows = s.lookup("bob", &["u1".into(), "u2".into()]).await.unwrap();
    assert!(!rows.contains_key("u2"));
    assert!(matches!(
        rows["u1"].deliveries["archive"],
        DeliveryState::Pending { .. }
    ));
    assert!(rows["u1"].on_server && rows["u1"].deleted_at.is_none());
    assert!(s.retrieval_failures("bob").await.unwrap().is_empty());
    // The new owner writes, and the old one cannot renew.
    new.record_outcomes(&[delivered]).await.unwrap();
    new.sync().await.unwrap();
    let old_claim = old.lease.as_ref().unwrap().claim_id().unwrap();
    assert!(s
        .renew("r1", &times(&[old_claim]), TTL)
        .await
        .unwrap()
        .is_empty());
}

/// Mutation check: with the fence check switched off, the same stale write lands, so the test
/// above really depends on the check.
#[tokio::test]
async fn without_the_fence_check_a_stale_write_lands() {
    let Some(s) = fresh().await else { return };
    let sinks = vec!["archive".to_string()];
    let old = claimed(&s, "r1", "carol").await.without_fence_check();
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let _new = claimed(&s, "r2", "carol").await;
    old.record_fetched(&fetch("carol", "u9", &sinks))
        .await
        .unwrap();
    assert!(s
        .lookup("carol", &["u9".into()])
        .await
        .unwrap()
        .contains_key("u9"));
}

/// A handle past its local deadline refuses writes without asking the database; a handle bound
/// to one mailbox refuses another's.
#[tokio::test]
async fn a_lease_past_its_local_deadline_or_for_another_mailbox_is_refused() {
    let Some(s) = fresh().await else { return };
    let sinks = vec!["archive".to_string()];
    let h = claimed(&s, "r1", "dave").await;
    let r = h.record_fetched(&fetch("erin", "u1", &sinks)).await;
    assert!(matches!(r, Err(StoreError::Fenced { .. })), "{r:?}");
    h.lease.as_ref().unwrap().extend(Instant::now());
    let r = h.record_fetched(&fetch("dave", "u1", &sinks)).await;
    assert!(matches!(r, Err(StoreError::Fenced { .. })), "{r:?}");
}

/// Concurrent claimers never get the same mailbox; renewals keep them; a release frees them
/// for a peer at once, at a higher epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_are_disjoint_and_released_leases_are_claimed_again() {
    let Some(s) = fresh().await else { return };
    let all: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    let tasks: Vec<_> = (0..4)
        .map(|r| {
            let (s, all) = (s.clone(), all.clone());
            tokio::spawn(async move {
                let owner = format!("r{r}");
                let got = s.claim(&owner, &all, 15, Duration::from_secs(30)).await;
                (owner, got.unwrap())
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut held = Vec::new();
    for t in tasks {
        let (owner, got) = t.await.unwrap();
        for c in got {
            assert!(
                seen.insert(c.mailbox.clone()),
                "{} claimed twice",
                c.mailbox
            );
            assert_eq!(c.fence.epoch, 1);
            held.push((owner.clone(), c.mailbox, c.fence));
        }
    }
    assert_eq!(seen.len(), 40);
    let (owner, mailbox, fence) = &held[0];
    let mine: Vec<String> = held
        .iter()
        .filter(|(o, _, _)| o == owner)
        .map(|(_, _, f)| f.claim_id.clone())
        .collect();
    let renewed = s
        .renew(owner, &times(&mine), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(renewed.len(), mine.len());
    assert!(s.claim("rx", &all, 40, TTL).await.unwrap().is_empty());
    assert_eq!(
        s.release(owner, &times(std::slice::from_ref(&fence.claim_id)))
            .await
            .unwrap(),
        1
    );
    let again = s.claim("rx", &all, 40, TTL).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((&again[0].mailbox, again[0].fence.epoch), (mailbox, 2));
    let rows = s.leases().await.unwrap();
    assert_eq!(rows.len(), 40);
    assert_eq!(s.heartbeat("r0", TTL).await.unwrap(), 1);
    s.heartbeat("r1", TTL).await.unwrap();
    assert_eq!(s.heartbeat("r2", TTL).await.unwrap(), 3);
    s.unregister("r2").await.unwrap();
    assert_eq!(s.heartbeat("r0", TTL).await.unwrap(), 2);
}

fn times(claims: &[String]) -> Vec<PollTimes> {
    claims
        .iter()
        .map(|c| PollTimes {
            claim_id: c.clone(),
            ..Default::default()
        })
        .collect()
}

/// The schedule travels with the lease: poll times saved by renewals and by the release come
/// back to the next owner's claim, and a release is announced to listening peers.
#[tokio::test]
async fn a_new_owner_gets_the_planned_poll_and_hears_the_release() {
    let Some(s) = fresh().await else { return };
    let mut listener = s.listener().await.unwrap();
    let got = s.claim("r1", &["frank".into()], 1, TTL).await.unwrap();
    assert_eq!(got[0].next_poll_at, None);
    let mut held = PollTimes {
        claim_id: got[0].fence.claim_id.clone(),
        next_poll_at: Some(5_000),
        last_poll_at: Some(4_000),
    };
    assert_eq!(s.renew("r1", &[held.clone()], TTL).await.unwrap().len(), 1);
    let row = &s.leases().await.unwrap()[0];
    assert_eq!(
        (row.next_poll_at, row.last_poll_at),
        (Some(5_000), Some(4_000))
    );
    // A renewal without news keeps what is saved; the release saves the latest.
    held.next_poll_at = None;
    s.renew("r1", &[held.clone()], TTL).await.unwrap();
    held.next_poll_at = Some(9_000);
    assert_eq!(s.release("r1", &[held]).await.unwrap(), 1);
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((heard.channel(), heard.payload()), (LEASES_CHANNEL, "r1"));
    let next = s.claim("r2", &["frank".into()], 1, TTL).await.unwrap();
    assert_eq!(next[0].next_poll_at, Some(9_000));
    assert_eq!(next[0].fence.epoch, 2);
}

#[test]
fn urls_in_messages_hide_the_password() {
    assert_eq!(
        redacted("postgres://pb:s3cret@db:5432/pb"),
        "postgres://pb@db:5432/pb"
    );
    assert_eq!(redacted("postgres://db/pb"), "postgres://db/pb");
}
