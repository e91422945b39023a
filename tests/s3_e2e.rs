//! The S3 sink through the binary, against a real Dovecot and a real S3 server (s3s-fs
//! in-process): with `delete: after_delivery`, nothing leaves the POP3 mailbox before its
//! object is confirmed — while S3 is down, and across SIGKILLs — and each message ends up in
//! the bucket exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod support;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use std::time::Duration;
use support::s3::{free_port, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

/// Points the harness's sink `archive` at S3 on `port`.
fn use_s3(bridge: &Bridge, port: u16) {
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: s3\n    bucket: {BUCKET}\n    endpoint: http://127.0.0.1:{port}\n    access_key_id: {ACCESS_KEY}\n    secret_access_key: \"{SECRET_KEY}\"\n    timeout: 5s\n    retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn while_s3_is_down_nothing_is_deleted_and_everything_arrives_once_it_is_back() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("s3down");
    let messages = mail::corpus("s3down", 20);
    dc.seed(&user, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("s3down", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    let port = free_port();
    use_s3(&bridge, port);
    let root = tempfile::tempdir().unwrap();

    // S3 port closed: the run fails its deliveries and must leave every message on the server.
    let down = bridge.once();
    assert!(!down.stdout.contains(SECRET_KEY) && !down.stderr.contains(SECRET_KEY));
    assert_exactly_once(&messages, &dc.list_server_messages(&user));

    let s3 = S3Server::start_on(port, root.path()).await;
    let up = bridge.once();
    assert!(up.ok(), "{}", up.output());
    assert_exactly_once(&messages, &support::s3::objects(&s3.root));
    assert!(
        dc.list_server_messages(&user).is_empty(),
        "delivered mail left on the server"
    );
    assert!(s3.leftover_uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_runs_then_a_full_run_puts_each_message_in_the_bucket_once() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("s3kill");
    let padding = "All work and no play makes a test run long enough to kill.\r\n".repeat(80);
    let messages: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            let mut m = mail::simple(&format!("s3kill-{i}"), &format!("message {i}"));
            m.extend_from_slice(padding.as_bytes());
            m
        })
        .collect();
    dc.seed(&user, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("s3kill", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    let s3 = S3Server::start().await;
    use_s3(&bridge, s3.port);

    let mut kills = 0;
    for i in 0..10u64 {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(150 + (i * 173) % 900));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Anything gone from the server must be in the bucket.
        let stored = support::s3::objects(&s3.root);
        for m in &messages {
            if !dc.list_server_messages(&user).contains(m) {
                assert!(
                    stored.contains(m),
                    "{} was deleted before it was stored",
                    mail::id_of(m)
                );
            }
        }
    }
    assert!(
        kills > 0,
        "popbridge always finished before the kill: the test proved nothing"
    );
    let run = bridge.once();
    assert!(
        run.ok(),
        "{}\n{}",
        run.output(),
        bridge.run(&["dlq", "list"]).output()
    );
    assert_exactly_once(&messages, &support::s3::objects(&s3.root));
    assert!(dc.list_server_messages(&user).is_empty());
}
