//! The engine against POP3 servers that misbehave in ways a real server will not: each test
//! runs whole polls through `App` into a real Maildir and checks what arrived, what the server
//! still holds, and that nothing is skipped in silence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::app::App;
use popbridge::config::*;
use popbridge::pop3::{AuthMethod, ClientConfig, TlsMode};
use popbridge::secret::Secret;
use popbridge::sink::maildir::MaildirSettings;
use std::path::Path;
use std::time::Duration;
use support::fake_pop3::{FakePop3, Msg, Quirks};
use tokio_util::sync::CancellationToken;

fn msg(uidl: &str, subject: &str) -> Msg {
    Msg {
        uidl: uidl.into(),
        body: format!("Subject: {subject}\r\n\r\n.dot-stuffed line\r\nbody of {subject}\r\n")
            .into_bytes(),
    }
}

fn config(root: &Path, port: u16, delete: DeletePolicy) -> Config {
    Config {
        source: root.join("config.yaml"),
        state: StateConfig {
            path: root.join("state/db.sqlite"),
            backend: popbridge::config::StateBackend::Sqlite,
            spool_dir: root.join("state/spool"),
            retention: Duration::from_secs(30 * 24 * 3600),
        },
        http: HttpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            per_mailbox_metrics: false,
        },
        limits: Limits {
            max_concurrent_polls: 2,
            max_connections_per_server: 1,
            max_in_flight: 8,
            max_retrieval_failures: 3,
            poll_timeout: Duration::from_secs(600),
        },
        servers: Vec::new(),
        mailboxes: vec![MailboxConfig {
            name: "alice".into(),
            pop3: ClientConfig {
                host: "127.0.0.1".into(),
                port,
                tls: TlsMode::None,
                username: "alice".into(),
                secret: Secret::new("pw"),
                password_file: None,
                auth: AuthMethod::User,
                ca_file: None,
                danger_accept_invalid_certs: false,
                allow_plaintext_auth: true,
                timeout: Duration::from_secs(2),
                max_line_length: 8192,
                max_message_bytes: 1 << 20,
                pipeline_window: 4,
            },
            schedule: Schedule::Every {
                interval: Duration::from_secs(60),
                jitter: Duration::ZERO,
            },
            delete,
            sinks: vec!["archive".into()],
            routes: None,
        }],
        sinks: vec![SinkConfig {
            name: "archive".into(),
            retry: RetryPolicy::default(),
            kind: SinkKind::Maildir(MaildirSettings {
                path: root.join("mail/{mailbox}").to_string_lossy().into_owned(),
                fsync: true,
            }),
        }],
    }
}

/// Bodies in the Maildir's new/, sorted.
fn delivered(root: &Path) -> Vec<Vec<u8>> {
    let dir = root.join("mail/alice/new");
    let mut out: Vec<Vec<u8>> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

async fn once(root: &Path, port: u16, delete: DeletePolicy) -> popbridge::engine::poll::PollReport {
    let app = App::build(config(root, port, delete)).await.unwrap();
    let mut reports = app
        .run_once(&app.mailboxes, &CancellationToken::new())
        .await;
    reports.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_uidls_deliver_each_message_once_and_warn() {
    let server = FakePop3::start(
        vec![msg("same", "one"), msg("same", "two"), msg("u3", "three")],
        Quirks::default(),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(
        delivered(root.path()).len(),
        3,
        "both messages sharing a UIDL arrive"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("\"same\"")),
        "{:?}",
        r.warnings
    );
    // Polls after that (messages named by content are marked gone before each fetch, then
    // recognised again) deliver nothing more.
    for _ in 0..3 {
        let again = once(root.path(), server.port, DeletePolicy::Never).await;
        assert!(again.complete(), "{again:?}");
        assert_eq!(
            (
                again.delivered,
                again.matched_by_content,
                delivered(root.path()).len()
            ),
            (0, 0, 3),
            "{again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_without_uidl_is_tracked_by_content() {
    let server = FakePop3::start(
        vec![msg("a", "one"), msg("b", "two")],
        Quirks {
            no_uidl: true,
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.deleted, 2);
    assert_eq!(delivered(root.path()).len(), 2);
    assert!(server.uidls_on_server().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_dele_keeps_the_message_and_says_so() {
    let server = FakePop3::start(
        vec![msg("u1", "one"), msg("u2", "two")],
        Quirks {
            refuse_dele: vec!["u2".into()],
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("u2")),
        "{:?}",
        r.warnings
    );
    assert_eq!(server.uidls_on_server(), vec!["u2".to_string()]);
    // The next poll tries the DELE again and delivers nothing twice.
    let again = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert_eq!(again.delivered, 0, "{again:?}");
    assert_eq!(delivered(root.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_mid_retr_keeps_what_was_delivered_and_the_next_poll_finishes() {
    let messages: Vec<Msg> = (0..6)
        .map(|i| msg(&format!("u{i}"), &format!("m{i}")))
        .collect();
    let server = FakePop3::start(
        messages,
        Quirks {
            disconnect_in_retr: Some("u3".into()),
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(!r.complete());
    assert!(r.ended_without_quit, "{r:?}");
    assert!(
        r.failures.iter().any(|f| f.contains("connection broke")),
        "{r:?}"
    );
    // What arrived before the break is deleted, in a second session that retrieves nothing.
    assert_eq!(r.deleted, 3, "{r:?}");
    assert_eq!(server.uidls_on_server(), ["u3", "u4", "u5"]);
    let again = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(again.complete(), "{again:?}");
    assert_eq!(delivered(root.path()).len(), 6);
    assert!(server.uidls_on_server().is_empty());
}

/// Gmail hides every message RETR'd in a session that ends with QUIT; a server advertising
/// `EXPIRE 0` deletes them. A message a sink does not hold yet must survive that.
#[tokio::test(flavor = "multi_thread")]
async fn mail_a_sink_lacks_survives_a_server_that_removes_retrieved_mail_at_quit() {
    let server = FakePop3::start(
        vec![msg("u1", "one"), msg("u2", "two")],
        Quirks {
            remove_retrieved_at_quit: true,
            capa: vec!["EXPIRE 0".into()],
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    // The Maildir cannot be created: every delivery fails.
    std::fs::write(root.path().join("mail"), b"not a directory").unwrap();
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(r.delivered, 0, "{r:?}");
    assert!(r.ended_without_quit, "{r:?}");
    assert!(r.warnings.iter().any(|w| w.contains("EXPIRE 0")), "{r:?}");
    assert_eq!(
        server.uidls_on_server(),
        ["u1", "u2"],
        "no QUIT while a retrieved message is not in every sink"
    );
    assert_eq!(server.state.lock().unwrap().quits, 0);

    // The operator fixes the sink and retries the dead letters: nothing was lost.
    std::fs::remove_file(root.path().join("mail")).unwrap();
    let app = App::build(config(root.path(), server.port, DeletePolicy::Never))
        .await
        .unwrap();
    assert_eq!(app.store.retry_dead("alice", None, None).await.unwrap(), 2);
    drop(app);
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.delivered, 2);
    assert_eq!(delivered(root.path()).len(), 2);
    assert!(!r.ended_without_quit);
    // Now every sink holds them, the session ended with QUIT, and the server took them away.
    assert!(server.uidls_on_server().is_empty());
}

/// One message whose RETR always breaks the connection is counted, retried last, then
/// dead-lettered and skipped: newer mail and the deletions go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_always_breaks_retr_does_not_wedge_the_mailbox() {
    let server = FakePop3::start(
        vec![msg("poison", "bad"), msg("u1", "one")],
        Quirks {
            always_disconnect_in_retr: Some("poison".into()),
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let policy = DeletePolicy::AfterDelivery;
    let first = once(root.path(), server.port, policy).await;
    assert!(!first.complete(), "{first:?}");
    // Retried last from now on: u1 arrives and is deleted in a second session.
    let second = once(root.path(), server.port, policy).await;
    assert_eq!((second.delivered, second.deleted), (1, 1), "{second:?}");
    assert_eq!(server.uidls_on_server(), ["poison"]);
    let _third = once(root.path(), server.port, policy).await;
    // The third break made it a dead letter: skipped, visible, and new mail still flows.
    server.state.lock().unwrap().messages.push(msg("u2", "two"));
    let retrieved_before = server.state.lock().unwrap().retrieved.len();
    let fourth = once(root.path(), server.port, policy).await;
    assert_eq!((fourth.delivered, fourth.deleted), (1, 1), "{fourth:?}");
    assert_eq!(fourth.dead_earlier, 1, "{fourth:?}");
    assert!(
        fourth.failures.iter().any(|f| f.contains("(retrieval)")),
        "{fourth:?}"
    );
    assert!(!fourth.ended_without_quit, "{fourth:?}");
    assert_eq!(
        server.state.lock().unwrap().retrieved[retrieved_before..],
        ["u2".to_string()],
        "the dead letter is not fetched again"
    );
    assert_eq!(server.uidls_on_server(), ["poison"]);
    let app = App::build(config(root.path(), server.port, policy))
        .await
        .unwrap();
    let dead = app.store.dead_letters(Some("alice")).await.unwrap();
    assert!(
        dead.iter()
            .any(|d| d.uidl == "poison" && d.sink == "(retrieval)"),
        "{dead:?}"
    );
    assert_eq!(delivered(root.path()).len(), 2);
}

/// RFC 1939 forbids reusing a UIDL only while its message exists. A new message under the UIDL
/// of one we deleted must be fetched and delivered, not deleted unread or skipped.
#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_reused_after_our_deletion_is_a_new_message() {
    let server = FakePop3::start(vec![msg("1", "one")], Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert_eq!((r.delivered, r.deleted), (1, 1), "{r:?}");
    assert!(server.uidls_on_server().is_empty());
    // A numeric-UIDL server hands "1" to the next message.
    server.state.lock().unwrap().messages.push(msg("1", "two"));
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.fetched, r.delivered, r.deleted), (1, 1, 1), "{r:?}");
    assert_eq!(r.uidl_reused, 1);
    assert!(
        r.warnings.iter().any(|w| w.contains("reuses UIDLs")),
        "{r:?}"
    );
    let mut expected = vec![msg("x", "one").body, msg("x", "two").body];
    expected.sort();
    assert_eq!(delivered(root.path()), expected, "both messages, once each");
    // And a third time, to be sure history does not pile up into identity.
    server
        .state
        .lock()
        .unwrap()
        .messages
        .push(msg("1", "three"));
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert_eq!((r.delivered, r.deleted), (1, 1), "{r:?}");
    assert_eq!(delivered(root.path()).len(), 3);
}

/// With `delete: never` a UIDL can come back to name another message after another client
/// deleted the first: compared by content, delivered, never skipped as "already delivered".
#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_back_with_other_content_or_size_is_delivered_not_skipped() {
    let server = FakePop3::start(vec![msg("1", "one"), msg("2", "two")], Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    assert_eq!(
        once(root.path(), server.port, DeletePolicy::Never)
            .await
            .delivered,
        2
    );
    // Another client deletes "1"; a poll sees it gone.
    server
        .state
        .lock()
        .unwrap()
        .messages
        .retain(|m| m.uidl != "1");
    assert_eq!(
        once(root.path(), server.port, DeletePolicy::Never)
            .await
            .delivered,
        0
    );
    {
        let mut s = server.state.lock().unwrap();
        // "1" comes back naming a new message of the same size; "2" is replaced in place by a
        // message of another size (between two polls).
        s.messages.push(msg("1", "uno"));
        s.messages.retain(|m| m.uidl != "2");
        s.messages.push(msg("2", "second"));
    }
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.fetched, r.delivered, r.uidl_reused), (2, 2, 2), "{r:?}");
    assert_eq!(delivered(root.path()).len(), 4);
    // Idle afterwards: the new messages are known under their UIDLs.
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!((r.fetched, r.delivered), (0, 0), "{r:?}");
}

/// A message that went away and came back unchanged is recognised, not delivered again.
#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_back_with_the_same_content_is_not_delivered_again() {
    let server = FakePop3::start(vec![msg("1", "one")], Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    once(root.path(), server.port, DeletePolicy::Never).await;
    let saved = server.state.lock().unwrap().messages.clone();
    server.state.lock().unwrap().messages.clear();
    once(root.path(), server.port, DeletePolicy::Never).await;
    server.state.lock().unwrap().messages = saved;
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.fetched, r.delivered, r.uidl_reused), (1, 0, 0), "{r:?}");
    assert_eq!(delivered(root.path()).len(), 1);
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(r.fetched, 0, "trusted again once confirmed: {r:?}");
}

/// A UIDL line outside RFC 1939's limits names its message under a stable hashed name instead
/// of failing every poll.
#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_uidl_does_not_stop_the_mailbox() {
    let long = "L".repeat(71);
    let server = FakePop3::start(
        vec![msg(&long, "long"), msg("u2", "two")],
        Quirks::default(),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.delivered, 2);
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(
        (r.fetched, r.delivered),
        (0, 0),
        "the name is stable: {r:?}"
    );
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert_eq!(r.deleted, 2, "{r:?}");
    assert!(server.uidls_on_server().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn uidl_reset_is_warned_and_nothing_is_sent_twice() {
    let server = FakePop3::start(
        vec![msg("old1", "one"), msg("old2", "two")],
        Quirks::default(),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    assert!(once(root.path(), server.port, DeletePolicy::Never)
        .await
        .complete());
    // The server loses its UIDL state: same messages, new UIDLs, plus one genuinely new message.
    {
        let mut s = server.state.lock().unwrap();
        for (m, u) in s.messages.iter_mut().zip(["new1", "new2"]) {
            m.uidl = u.into();
        }
        s.messages.push(msg("new3", "three"));
    }
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("lost its UIDL state")),
        "{:?}",
        r.warnings
    );
    assert_eq!(r.matched_by_content, 2, "{r:?}");
    assert_eq!(r.delivered, 1, "only the new message is delivered");
    assert_eq!(delivered(root.path()).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_message_is_reported_not_fetched_and_does_not_block_others() {
    let big = Msg {
        uidl: "big".into(),
        body: vec![b'x'; 2 << 20],
    };
    let server = FakePop3::start(
        vec![msg("u1", "one"), big, msg("u3", "three")],
        Quirks::default(),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(!r.complete());
    assert!(
        r.failures.iter().any(|f| f.contains("max_message_bytes")),
        "{r:?}"
    );
    assert_eq!(delivered(root.path()).len(), 2);
    assert_eq!(server.uidls_on_server(), vec!["big".to_string()]);
    assert!(!server
        .state
        .lock()
        .unwrap()
        .retrieved
        .contains(&"big".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_up_instead_of_quit_ok_rolls_back_deletes_and_the_next_poll_deletes() {
    let server = FakePop3::start(
        vec![msg("u1", "one"), msg("u2", "two")],
        Quirks {
            hang_up_on_quit: true,
            ..Default::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    // Delivered, but the server never confirmed the deletions: RFC 1939 rolls them back.
    assert_eq!(r.delivered, 2, "{r:?}");
    assert_eq!(r.deleted, 0, "{r:?}");
    assert!(r.error.is_some(), "the failed QUIT is reported: {r:?}");
    assert_eq!(server.uidls_on_server(), ["u1", "u2"]);

    server.state.lock().unwrap().quirks.hang_up_on_quit = false;
    let again = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
    assert!(again.complete(), "{again:?}");
    assert_eq!((again.delivered, again.deleted), (0, 2), "{again:?}");
    assert!(server.uidls_on_server().is_empty());
    assert_eq!(delivered(root.path()).len(), 2, "each message once");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_appearing_and_vanishing_between_sessions() {
    let server = FakePop3::start(
        vec![msg("u1", "one"), msg("u2", "two"), msg("u3", "three")],
        Quirks::default(),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(r.delivered, 3, "{r:?}");
    {
        // Another client deletes u2; new mail arrives, one of it with u2's old bytes.
        let mut s = server.state.lock().unwrap();
        s.messages.retain(|m| m.uidl != "u2");
        s.messages.push(msg("u4", "four"));
        s.messages.push(msg("u5", "five"));
    }
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.listed, r.fetched, r.delivered), (4, 2, 2), "{r:?}");
    {
        // u2 comes back under a new UIDL with the same bytes: recognised, not sent again.
        let mut s = server.state.lock().unwrap();
        s.messages.push(msg("u2-renamed", "two"));
        s.messages.retain(|m| m.uidl != "u4");
    }
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.delivered, r.matched_by_content), (0, 1), "{r:?}");
    let mut expected: Vec<Vec<u8>> = ["one", "two", "three", "four", "five"]
        .iter()
        .map(|s| msg("x", s).body)
        .collect();
    expected.sort();
    assert_eq!(
        delivered(root.path()),
        expected,
        "each message exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailbox_of_50000_messages_is_delivered_once_then_idle() {
    const N: usize = 50_000;
    let messages: Vec<Msg> = (0..N)
        .map(|i| Msg {
            uidl: format!("uid-{i:06}"),
            body: format!("Subject: {i}\r\n\r\nmessage {i}\r\n").into_bytes(),
        })
        .collect();
    let server = FakePop3::start(messages, Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), server.port, DeletePolicy::Never);
    cfg.mailboxes[0].pop3.timeout = Duration::from_secs(30);
    if let SinkKind::Maildir(m) = &mut cfg.sinks[0].kind {
        // 50,000 fsyncs would measure the disk, not the engine.
        m.fsync = false;
    }
    let app = App::build(cfg).await.unwrap();
    let run = || async {
        app.run_once(&app.mailboxes, &CancellationToken::new())
            .await
            .remove(0)
    };
    let r = run().await;
    assert!(r.complete(), "{:?}", r.failures.first());
    assert_eq!((r.listed, r.delivered), (N, N));
    let files = std::fs::read_dir(root.path().join("mail/alice/new"))
        .unwrap()
        .count();
    assert_eq!(files, N);
    let before = server.state.lock().unwrap().retrieved.len();
    let idle = run().await;
    assert!(idle.complete(), "{idle:?}");
    assert_eq!((idle.listed, idle.fetched, idle.delivered), (N, 0, 0));
    assert_eq!(
        server.state.lock().unwrap().retrieved.len(),
        before,
        "nothing fetched again"
    );
}

/// A message delivered to one sink and still pending for another; between two polls the server
/// gives its UIDL to a new message of the same size. The fetch for the second sink sees other
/// content: the new message goes to every sink under a new key, and the first is not left
/// without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_reused_while_a_sink_still_waits_is_caught_at_the_refetch() {
    let server = FakePop3::start(vec![msg("1", "aaa")], Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), server.port, DeletePolicy::Never);
    let mut second = cfg.sinks[0].clone();
    second.name = "second".into();
    second.retry.initial_backoff = Duration::from_millis(1);
    second.retry.max_backoff = Duration::from_millis(5);
    if let SinkKind::Maildir(m) = &mut second.kind {
        m.path = root
            .path()
            .join("second/{mailbox}")
            .to_string_lossy()
            .into_owned();
    }
    cfg.sinks.push(second);
    cfg.mailboxes[0].sinks.push("second".into());
    // The second Maildir cannot take anything yet (its tmp/ is a file): retried later.
    std::fs::create_dir_all(root.path().join("second/alice")).unwrap();
    std::fs::write(root.path().join("second/alice/tmp"), b"in the way").unwrap();
    let run = |cfg: Config| async move {
        let app = App::build(cfg).await.unwrap();
        app.run_once(&app.mailboxes, &CancellationToken::new())
            .await
            .remove(0)
    };
    let r = run(cfg.clone()).await;
    assert_eq!((r.delivered, r.retry_later), (1, 1), "{r:?}");
    // Same size, other content, same UIDL.
    server.state.lock().unwrap().messages = vec![msg("1", "bbb")];
    std::fs::remove_file(root.path().join("second/alice/tmp")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = run(cfg).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.uidl_reused, r.delivered), (1, 2), "{r:?}");
    let bodies = |dir: &str| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(root.path().join(dir).join("alice/new"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        v.sort();
        v
    };
    let (aaa, bbb) = (msg("x", "aaa").body, msg("x", "bbb").body);
    assert_eq!(bodies("mail"), vec![aaa, bbb.clone()]);
    assert_eq!(bodies("second"), vec![bbb]);
}

/// An mbox server adds `Status:` to a message it served: its LIST size changes, its content
/// does not. The idle poll holds that message only as a compact row; it must load the whole
/// row to compare by content, and then neither deliver it again nor count it as new.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivered_message_resized_by_a_status_header_is_not_delivered_again() {
    let server = FakePop3::start(vec![msg("1", "one")], Quirks::default()).await;
    let root = tempfile::tempdir().unwrap();
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(r.delivered, 1, "{r:?}");
    {
        let mut s = server.state.lock().unwrap();
        let mut body = b"Status: RO\r\n".to_vec();
        body.extend_from_slice(&s.messages[0].body);
        s.messages[0].body = body;
    }
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!((r.fetched, r.delivered, r.uidl_reused), (1, 0, 0), "{r:?}");
    assert_eq!(delivered(root.path()).len(), 1);
    let r = once(root.path(), server.port, DeletePolicy::Never).await;
    assert_eq!(r.fetched, 0, "confirmed at its new size: {r:?}");
}

/// A server without `UTF8` mode serving a message with raw UTF-8 headers as a down-converted
/// substitute (Courier): the substitute is not archived as the message, the original is never
/// deleted, the poll says so, and later polls do not fetch it again. With `UTF8` on, the same
/// message arrives as it is and is deleted like any other.
#[tokio::test(flavor = "multi_thread")]
async fn a_down_converted_substitute_is_kept_on_the_server_not_archived() {
    let utf8_msg = Msg {
        uidl: "u2".into(),
        body: "Subject: Gr\u{fc}\u{df}e\r\n\r\nbody\r\n"
            .as_bytes()
            .to_vec(),
    };
    for utf8 in [false, true] {
        let server = FakePop3::start(
            vec![msg("u1", "ascii"), utf8_msg.clone()],
            Quirks {
                downconvert_without_utf8: true,
                capa: if utf8 { vec!["UTF8".into()] } else { vec![] },
                ..Default::default()
            },
        )
        .await;
        let root = tempfile::tempdir().unwrap();
        let r = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
        let on_server = || {
            server
                .state
                .lock()
                .unwrap()
                .messages
                .iter()
                .map(|m| m.uidl.clone())
                .collect::<Vec<_>>()
        };
        if utf8 {
            assert!(r.complete(), "{r:?}");
            assert_eq!(delivered(root.path()).len(), 2);
            assert!(
                delivered(root.path()).contains(&utf8_msg.body),
                "the original"
            );
            assert!(on_server().is_empty());
            continue;
        }
        assert_eq!(delivered(root.path()), vec![msg("u1", "ascii").body]);
        assert_eq!(on_server(), ["u2"], "the original stays on the server");
        assert!(
            r.failures
                .iter()
                .any(|f| f.contains("down-converted substitute")),
            "{r:?}"
        );
        assert!(
            popbridge::metrics::render()
                .contains("popbridge_pop3_downconverted_total{mailbox=\"_all\"} 1"),
            "{}",
            popbridge::metrics::render()
        );
        for _ in 0..2 {
            let again = once(root.path(), server.port, DeletePolicy::AfterDelivery).await;
            assert_eq!(again.fetched, 0, "{again:?}");
        }
        let fetches = server.state.lock().unwrap().retrieved.clone();
        assert_eq!(
            fetches.iter().filter(|u| *u == "u2").count(),
            1,
            "{fetches:?}"
        );
        assert_eq!(on_server(), ["u2"]);
        assert_eq!(delivered(root.path()).len(), 1);
    }
}
