//! The webhook sink through the whole pipeline: a POP3 mailbox (scripted server) into a flaky
//! receiver, with `delete: after_delivery`, while popbridge is killed with SIGKILL again and
//! again. After every kill, no message is gone from the server without a 2xx for its
//! `webhook-id`; at the end a receiver deduplicating on `webhook-id` has each message once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::fake_pop3::{FakePop3, Msg, Quirks};
use support::receiver::Receiver;

fn config(dir: &Path, pop_port: u16, url: &str) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "state:\n  path: ./state/db.sqlite\nmailboxes:\n  - name: inbox\n    pop3:\n      host: 127.0.0.1\n      port: {pop_port}\n      tls: none\n      allow_plaintext_auth: true\n      username: u\n      password: ${{E2E_PASSWORD}}\n    schedule: {{ every: 60s }}\n    delete: after_delivery\n    sinks: [hook]\nsinks:\n  - name: hook\n    type: webhook\n    url: {url}\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    concurrency: 4\n    retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n"
        ),
    )
    .unwrap();
    path
}

fn popbridge(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popbridge"));
    c.args(["once", "-c"])
        .arg(config)
        .env("E2E_PASSWORD", "pw")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Every message no longer on the server must have had a 2xx for its key.
fn assert_no_delete_before_2xx(server: &FakePop3, rx: &Receiver, keys: &HashMap<String, String>) {
    let on_server: HashSet<String> = server.uidls_on_server().into_iter().collect();
    let acked: HashSet<String> = rx
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("webhook-id"))
        .collect();
    for (uidl, key) in keys {
        if !on_server.contains(uidl) {
            assert!(
                acked.contains(key),
                "{uidl} was deleted from the server without a 2xx"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_a_flaky_receiver_loses_nothing_and_deletes_only_after_2xx() {
    let n = 300;
    let messages: Vec<Msg> = (0..n)
        .map(|i| Msg {
            uidl: format!("m{i:04}"),
            body: format!("Subject: {i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody {i}\r\n").into_bytes(),
        })
        .collect();
    let keys: HashMap<String, String> = messages
        .iter()
        .map(|m| {
            (
                m.uidl.clone(),
                popbridge::key::IdempotencyKey::derive_content(
                    "inbox",
                    &m.uidl,
                    &popbridge::content::fingerprint(&m.body),
                )
                .as_str()
                .to_string(),
            )
        })
        .collect();
    let server = FakePop3::start(messages, Quirks::default()).await;
    let rx = Receiver::start().await;
    rx.shared
        .fail_percent
        .store(40, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, &rx.url);

    let mut kills = 0;
    for i in 0..8 {
        let mut child = popbridge(&cfg).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(40 + (i * 37) % 120)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        assert_no_delete_before_2xx(&server, &rx, &keys);
    }
    assert!(kills >= 3, "too few runs were killed mid-way ({kills})");

    // The receiver recovers; runs until the mailbox is empty.
    rx.shared
        .fail_percent
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    while !server.uidls_on_server().is_empty() {
        runs += 1;
        assert!(
            runs <= 5,
            "mailbox not emptied: {} left",
            server.uidls_on_server().len()
        );
        popbridge(&cfg).status().unwrap();
        assert_no_delete_before_2xx(&server, &rx, &keys);
    }
    // A receiver deduplicating on webhook-id saw every message, once.
    let delivered: HashSet<String> = rx
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("webhook-id"))
        .collect();
    let expected: HashSet<String> = keys.values().cloned().collect();
    assert_eq!(delivered, expected);
    // And every 2xx body for one id is the same message.
    let mut bodies: HashMap<String, serde_json::Value> = HashMap::new();
    for r in rx.requests().iter().filter(|r| r.status == 200) {
        let mut v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v.as_object_mut().unwrap().remove("fetched_at");
        let id = r.header("webhook-id");
        if let Some(prev) = bodies.get(&id) {
            assert_eq!(prev, &v, "{id} was sent twice with different content");
        }
        bodies.insert(id, v);
    }
}
