//! Chaos: three Dovecot mailboxes into every sink at once (Maildir, a webhook receiver, IMAP
//! accounts on the same Dovecot, S3), `delete: after_delivery`, while popbridge is killed with
//! SIGKILL at random moments again and again. After every kill: no message is gone from its
//! POP3 mailbox unless every sink holds it. At the end: every message exactly once in the
//! Maildir, the IMAP account and the bucket, byte for byte, and delivered to the receiver under
//! one `webhook-id` (which a deduplicating receiver keeps once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use common::{assert_exactly_once, imap_bodies, mail, maildir_bodies, Bridge, Mailbox, User};
use std::collections::HashSet;
use std::time::Duration;
use support::receiver::{webhook_state, Receiver};
use support::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

const PER_MAILBOX: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_with_every_sink_loses_and_duplicates_nothing() {
    let dc = dovecot_or_skip!();
    let sources: Vec<User> = (0..3).map(|_| dc.add_user("chaossrc")).collect();
    let targets: Vec<User> = (0..3).map(|_| dc.add_user("chaosdst")).collect();
    let mut expected: Vec<Vec<Vec<u8>>> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let msgs = mail::corpus(&format!("chaos{i}"), PER_MAILBOX);
        dc.seed(src, &msgs);
        expected.push(msgs);
    }
    let rx = Receiver::start().await;
    // A flaky receiver: one request in five fails with 503 and is retried.
    rx.shared
        .fail_percent
        .store(20, std::sync::atomic::Ordering::SeqCst);
    let s3 = S3Server::start().await;

    // Each mailbox is named after its IMAP target account (the `{mailbox}` template).
    let mailboxes: Vec<Mailbox> = sources
        .iter()
        .zip(&targets)
        .map(|(src, dst)| Mailbox {
            delete: "after_delivery",
            ..Mailbox::new(&dst.name, src)
        })
        .collect();
    let bridge = Bridge::new(dc, &mailboxes);
    let pw = bridge.dir.path().join("pw");
    std::fs::create_dir_all(&pw).unwrap();
    for dst in &targets {
        std::fs::write(pw.join(&dst.name), &dst.password).unwrap();
    }
    let retry = "    retry: { attempts_per_poll: 3, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }\n";
    let sinks = format!(
        "sinks:\n  - name: archive\n    type: maildir\n    path: ./mail/{{mailbox}}\n\
         \x20 - name: hook\n    type: webhook\n    url: {url}\n    format: raw\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    concurrency: 4\n{retry}\
         \x20 - name: imap\n    type: imap\n    host: localhost\n    port: {imap}\n    tls: starttls\n    ca_file: {ca}\n    username: \"{{mailbox}}\"\n    password_file: ./pw/{{mailbox}}\n    timeout: 10s\n{retry}\
         \x20 - name: lake\n    type: s3\n    bucket: {BUCKET}\n    endpoint: {s3}\n    access_key_id: {ACCESS_KEY}\n    secret_access_key: \"{SECRET_KEY}\"\n    timeout: 10s\n{retry}",
        url = rx.url,
        imap = dc.imap_port,
        ca = dc.ca_file.display(),
        s3 = s3.url,
    );
    bridge.replace_sinks(&sinks);
    // Every mailbox into every sink.
    let yaml = std::fs::read_to_string(&bridge.config).unwrap().replace(
        "    sinks: [archive]\n",
        "    sinks: [archive, hook, imap, lake]\n",
    );
    std::fs::write(&bridge.config, yaml).unwrap();

    // Every message that left a POP3 mailbox is in every sink.
    let check_nothing_lost = |when: &str| {
        let (hooked, _) = webhook_state(&[&rx]);
        let in_s3: HashSet<Vec<u8>> = support::s3::objects(&s3.root).into_iter().collect();
        for (i, src) in sources.iter().enumerate() {
            let on_server: HashSet<Vec<u8>> = dc.list_server_messages(src).into_iter().collect();
            let maildir: HashSet<Vec<u8>> = maildir_bodies(&bridge.maildir(&targets[i].name))
                .into_iter()
                .collect();
            let imap: HashSet<Vec<u8>> = imap_bodies(&targets[i]).into_iter().collect();
            for m in expected[i].iter().filter(|m| !on_server.contains(*m)) {
                let id = mail::id_of(m);
                assert!(
                    maildir.contains(m),
                    "{when}: {id} deleted but not in the Maildir"
                );
                assert!(imap.contains(m), "{when}: {id} deleted but not in IMAP");
                assert!(in_s3.contains(m), "{when}: {id} deleted but not in S3");
                assert!(
                    hooked.contains(m),
                    "{when}: {id} deleted without a webhook 2xx"
                );
            }
        }
    };

    let mut kills = 0;
    let mut completed = false;
    for round in 0..60u64 {
        let mut child = bridge.spawn(&["once"]);
        let wait = Duration::from_millis(150 + (round * 7919) % 900);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if child.try_wait().unwrap().is_some() {
            completed = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        check_nothing_lost(&format!("after kill {kills}"));
    }
    assert!(
        kills >= 3,
        "only {kills} kills: the test must interrupt real work"
    );
    // Whatever is left (a run that completed may still have had retries pending).
    rx.shared
        .fail_percent
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let run = tokio::task::block_in_place(|| bridge.once());
    assert!(
        run.ok(),
        "completed by itself: {completed}\n{}",
        run.output()
    );
    check_nothing_lost("at the end");

    let (hooked, by_id) = webhook_state(&[&rx]);
    let in_s3 = support::s3::objects(&s3.root);
    let all: Vec<Vec<u8>> = expected.iter().flatten().cloned().collect();
    assert_exactly_once(&all, &in_s3);
    for (i, src) in sources.iter().enumerate() {
        assert!(
            dc.list_server_messages(src).is_empty(),
            "mailbox {i} emptied"
        );
        assert_exactly_once(
            &expected[i],
            &maildir_bodies(&bridge.maildir(&targets[i].name)),
        );
        assert_exactly_once(&expected[i], &imap_bodies(&targets[i]));
    }
    for m in &all {
        assert!(hooked.contains(m), "{} never got a 2xx", mail::id_of(m));
    }
    // One webhook-id per message, whatever the number of retries and restarts.
    assert_eq!(by_id.len(), all.len(), "webhook-ids: one per message");
    assert!(
        by_id.values().all(|b| b.len() == 1),
        "a webhook-id carried two different bodies"
    );
}
