use super::*;
use crate::sink::Receipt;

const NOW: Millis = 100 * DAY_MS;

fn listed(msgno: u32, uidl: &str) -> Listed {
    Listed {
        msgno,
        size: 10,
        uidl: Some(uidl.into()),
    }
}

fn sinks() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

fn known(uidl: &str, states: &[(&str, DeliveryState)]) -> KnownMessage {
    KnownMessage {
        uidl: uidl.into(),
        idem_key: format!("k-{uidl}"),
        size: Some(10),
        sha256: None,
        first_seen_at: 0,
        on_server: true,
        deleted_at: None,
        replaced_by: None,
        list_size: None,
        fingerprint: None,
        route: None,
        deliveries: states
            .iter()
            .map(|(s, d)| (s.to_string(), d.clone()))
            .collect(),
    }
}

fn delivered(at: Millis) -> DeliveryState {
    DeliveryState::Delivered {
        at,
        receipt: Receipt::new("x"),
    }
}

/// A sink that gave up on the message (a dead letter).
fn dead_letter() -> DeliveryState {
    DeliveryState::Dead {
        attempts: 3,
        error: "404".into(),
    }
}

fn map(ms: Vec<KnownMessage>) -> HashMap<String, KnownMessage> {
    ms.into_iter().map(|m| (m.uidl.clone(), m)).collect()
}

/// The plan at `NOW` for [`sinks`] with only listed rows known (shadows `super::plan`).
fn plan(
    listing: &[Listed],
    listed: &HashMap<String, KnownMessage>,
    policy: DeletePolicy,
) -> Plan<'static> {
    plan_with(listing, listed, &HashMap::new(), &HashMap::new(), policy)
}

/// The plan at `NOW` for [`sinks`] with rows not listed and retrieval failures known too. The
/// listing is leaked so that a test can build it inline and keep the plan, which borrows from
/// it.
fn plan_with(
    listing: &[Listed],
    listed: &HashMap<String, KnownMessage>,
    others: &HashMap<String, KnownMessage>,
    failures: &HashMap<String, RetrievalFailure>,
    policy: DeletePolicy,
) -> Plan<'static> {
    let listing: &'static [Listed] = Box::leak(listing.to_vec().into_boxed_slice());
    super::plan(
        listing,
        &Known {
            settled: &HashMap::new(),
            listed,
            others,
            failures,
        },
        &sinks(),
        policy,
        NOW,
    )
}

fn all_delivered(uidl: &str) -> KnownMessage {
    known(uidl, &[("a", delivered(1)), ("b", delivered(1))])
}

#[test]
fn new_messages_are_fetched_for_every_sink() {
    let p = plan(
        &[listed(1, "u1"), listed(2, "u2")],
        &HashMap::new(),
        DeletePolicy::AfterDelivery,
    );
    assert_eq!(p.fetch.len(), 2);
    assert_eq!(p.fetch[0].sinks, sinks());
    assert!(p.delete.is_empty());
    assert!(p.warnings.is_empty());
}

#[test]
fn only_missing_sinks_are_retried_and_only_when_due() {
    let k = map(vec![
        known("u1", &[("a", delivered(1))]),
        known(
            "u2",
            &[
                ("a", delivered(1)),
                (
                    "b",
                    DeliveryState::Pending {
                        attempts: 1,
                        first_attempt_at: Some(1),
                        next_attempt_at: Some(NOW + 1),
                        last_error: None,
                    },
                ),
            ],
        ),
    ]);
    let p = plan(
        &[listed(1, "u1"), listed(2, "u2")],
        &k,
        DeletePolicy::AfterDelivery,
    );
    assert_eq!(p.fetch.len(), 1);
    assert_eq!(p.fetch[0].identity, Identity::Uidl("u1".into()));
    assert_eq!(p.fetch[0].sinks, vec!["b".to_string()]);
    assert_eq!(p.waiting, 1);
    assert!(
        p.delete.is_empty(),
        "nothing is deleted before every sink has a receipt"
    );
}

#[test]
fn fully_delivered_messages_are_deleted_per_policy() {
    let k = map(vec![known(
        "u1",
        &[
            ("a", delivered(NOW - 2 * DAY_MS)),
            ("b", delivered(NOW - DAY_MS)),
        ],
    )]);
    let l = [listed(7, "u1")];
    let p = plan(&l, &k, DeletePolicy::AfterDelivery);
    assert_eq!(
        p.delete,
        vec![DeleteItem {
            msgno: 7,
            uidl: "u1".into()
        }]
    );
    assert!(plan(&l, &k, DeletePolicy::Never).delete.is_empty());
    // after_days counts from the last sink's receipt (one day ago).
    assert!(plan(&l, &k, DeletePolicy::AfterDays(2)).delete.is_empty());
    assert_eq!(plan(&l, &k, DeletePolicy::AfterDays(1)).delete.len(), 1);
}

#[test]
fn dead_letters_are_never_deleted_nor_refetched() {
    let k = map(vec![known(
        "u1",
        &[("a", delivered(1)), ("b", dead_letter())],
    )]);
    let p = plan(&[listed(1, "u1")], &k, DeletePolicy::AfterDelivery);
    assert!(p.fetch.is_empty());
    assert!(p.delete.is_empty());
    assert_eq!(p.dead, 1);
}

#[test]
fn duplicate_uidls_are_identified_by_content_and_warned_about() {
    let p = plan(
        &[listed(1, "x"), listed(2, "x"), listed(3, "y")],
        &HashMap::new(),
        DeletePolicy::Never,
    );
    assert_eq!(
        p.warnings,
        vec![Warning::DuplicateUidl {
            uidl: "x".into(),
            count: 2
        }]
    );
    let by_content: Vec<u32> = p
        .fetch
        .iter()
        .filter(|f| matches!(f.identity, Identity::ByContent { .. }))
        .map(|f| f.msgno)
        .collect();
    assert_eq!(by_content, vec![1, 2]);
    assert_eq!(p.listed, vec!["y"]);
}

#[test]
fn a_server_without_uidl_is_fetched_by_content() {
    let l = [Listed {
        msgno: 1,
        size: 5,
        uidl: None,
    }];
    let p = plan(&l, &HashMap::new(), DeletePolicy::Never);
    assert_eq!(p.warnings, vec![Warning::NoUidl]);
    assert_eq!(p.fetch[0].identity, Identity::ByContent { uidl: None });
}

#[test]
fn all_known_gone_and_all_listed_new_is_a_uidl_reset() {
    let k = map(vec![
        known("old1", &[("a", delivered(1)), ("b", delivered(1))]),
        known("old2", &[]),
    ]);
    let p = plan(
        &[listed(1, "new1"), listed(2, "new2")],
        &k,
        DeletePolicy::Never,
    );
    assert!(p
        .warnings
        .contains(&Warning::UidlReset { known: 2, new: 2 }));
    // An ordinary poll with one known message still listed is not a reset.
    let p = plan(
        &[listed(1, "old1"), listed(2, "new2")],
        &k,
        DeletePolicy::Never,
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn content_uidl_is_stable() {
    assert_eq!(
        Identity::content_uidl(Some("x"), "0123456789abcdef0123"),
        "x#0123456789abcdef"
    );
    assert_eq!(
        Identity::content_uidl(None, "0123456789abcdef0123"),
        "sha256:0123456789abcdef"
    );
}

#[test]
fn a_uidl_of_a_deleted_message_is_a_new_message_not_a_deletion() {
    // Message "1" was delivered and deleted; the server gave UIDL "1" to a new message.
    let mut old = all_delivered("1");
    old.on_server = false;
    old.deleted_at = Some(5);
    let others = map(vec![old]);
    let p = plan_with(
        &[listed(1, "1")],
        &HashMap::new(),
        &others,
        &HashMap::new(),
        DeletePolicy::AfterDelivery,
    );
    assert!(
        p.delete.is_empty(),
        "never DELE a message not fetched: {p:?}"
    );
    assert_eq!(p.fetch.len(), 1);
    assert_eq!(p.fetch[0].prior, Prior::Reused);
    assert_eq!(p.fetch[0].sinks, sinks());
    assert!(p.warnings.contains(&Warning::UidlReused { count: 1 }));
}

#[test]
fn a_known_uidl_with_another_list_size_is_fetched_not_deleted_or_skipped() {
    let mut k = all_delivered("u1");
    k.list_size = Some(10);
    let k = map(vec![k]);
    let mut l = listed(1, "u1");
    l.size = 11;
    for policy in [DeletePolicy::AfterDelivery, DeletePolicy::Never] {
        let p = plan(&[l.clone()], &k, policy);
        assert!(p.delete.is_empty());
        assert_eq!(p.fetch.len(), 1, "{policy:?}");
        assert_eq!(p.fetch[0].prior, Prior::Verify);
    }
    // The same size: trusted, deleted without a fetch.
    let p = plan(&[listed(1, "u1")], &k, DeletePolicy::AfterDelivery);
    assert!(p.fetch.is_empty());
    assert_eq!(p.delete.len(), 1);
}

#[test]
fn a_uidl_back_in_the_listing_is_compared_before_it_is_trusted() {
    let mut gone = all_delivered("u1");
    gone.on_server = false;
    let p = plan_with(
        &[listed(1, "u1")],
        &HashMap::new(),
        &map(vec![gone]),
        &HashMap::new(),
        DeletePolicy::AfterDelivery,
    );
    assert!(p.delete.is_empty());
    assert_eq!(p.fetch[0].prior, Prior::Verify);
}

#[test]
fn a_message_that_breaks_retrieval_goes_last_and_is_skipped_once_dead() {
    let failing = RetrievalFailure {
        failures: 1,
        last_error: "reset".into(),
        dead: false,
        dropped: false,
    };
    let failures: HashMap<String, RetrievalFailure> = [("u1".to_string(), failing.clone())].into();
    let l = [listed(1, "u1"), listed(2, "u2"), listed(3, "u3")];
    let p = plan_with(
        &l,
        &HashMap::new(),
        &HashMap::new(),
        &failures,
        DeletePolicy::Never,
    );
    let order: Vec<u32> = p.fetch.iter().map(|f| f.msgno).collect();
    assert_eq!(order, vec![2, 3, 1]);
    let dead: HashMap<String, RetrievalFailure> = [(
        "u1".to_string(),
        RetrievalFailure {
            dead: true,
            ..failing
        },
    )]
    .into();
    let p = plan_with(
        &l,
        &HashMap::new(),
        &HashMap::new(),
        &dead,
        DeletePolicy::Never,
    );
    assert_eq!(p.fetch.len(), 2);
    assert_eq!(p.unretrievable, vec![(1, "u1".to_string())]);
}
#[test]
fn dropped_dead_letters_are_counted_apart_from_dead_ones() {
    let k = map(vec![known(
        "u1",
        &[
            ("a", dead_letter()),
            (
                "b",
                DeliveryState::Dropped {
                    error: "404".into(),
                },
            ),
        ],
    )]);
    let p = plan(&[listed(1, "u1")], &k, DeletePolicy::AfterDelivery);
    assert!(p.fetch.is_empty() && p.delete.is_empty());
    assert_eq!((p.dead, p.dropped), (1, 1));
}

#[test]
fn settled_messages_are_deleted_by_policy_and_rechecked_when_resized() {
    let settled: HashMap<String, Settled> = [
        (
            "u1".to_string(),
            Settled {
                list_size: Some(10),
                last_delivery: 1,
            },
        ),
        (
            "u2".to_string(),
            Settled {
                list_size: Some(10),
                last_delivery: 1,
            },
        ),
    ]
    .into();
    let listing = [
        listed(1, "u1"),
        Listed {
            size: 7,
            ..listed(2, "u2")
        },
    ];
    let run = |policy| {
        super::plan(
            &listing,
            &Known {
                settled: &settled,
                listed: &HashMap::new(),
                others: &HashMap::new(),
                failures: &HashMap::new(),
            },
            &sinks(),
            policy,
            NOW,
        )
    };
    let p = run(DeletePolicy::AfterDelivery);
    assert_eq!(
        p.delete,
        vec![DeleteItem {
            msgno: 1,
            uidl: "u1".into()
        }]
    );
    assert_eq!(p.fetch.len(), 1);
    assert_eq!(
        p.fetch[0].prior,
        Prior::Verify,
        "a resized UIDL is compared by content"
    );
    assert!(p
        .warnings
        .iter()
        .all(|w| !matches!(w, Warning::UidlReset { .. })));
    assert!(run(DeletePolicy::Never).delete.is_empty());
}
