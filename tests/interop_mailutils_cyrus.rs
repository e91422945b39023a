//! GNU mailutils pop3d (mbox) as the source and Cyrus IMAP 3.6 as the target, through the
//! binary, with kill -9 in the middle of runs: a slow proxy in front of Cyrus makes a run
//! last long enough to be killed between an APPEND and its answer, after an APPEND whose
//! POP3 session was dropped (pop3d then rewrites the mbox headers), and so on. One full run
//! afterwards must leave each message exactly once in the Cyrus folder and none on pop3d.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cyrus::{cyrus_or_skip, PASSWORD, USER};
use common::mailutils::{mailutils_or_skip, normalise, slow_proxy};
use common::{mail, Bridge, Mailbox};
use std::time::Duration;

const FOLDER: &str = "INBOX.Migrated";

#[test]
fn kill_9_mid_run_into_cyrus_leaves_each_message_once() {
    let (Some(mu), Some(cyrus)) = (mailutils_or_skip(), cyrus_or_skip()) else {
        return;
    };
    let user = mu.add_user("tocyrus");
    let padding = "Some text so that the run takes a little while.\r\n".repeat(40);
    let messages: Vec<Vec<u8>> = (0..150)
        .map(|i| {
            let mut m = mail::simple(&format!("tocyrus-{i}"), &format!("message {i}"));
            m.extend_from_slice(padding.as_bytes());
            m
        })
        .collect();
    mu.seed(&user, &messages);
    let bridge = Bridge::plain(
        mu.port,
        &[Mailbox {
            delete: "after_delivery",
            ..Mailbox::new("tocyrus", &user)
        }],
    );
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: 127.0.0.1\n    port: {port}\n\
         \x20   tls: none\n    allow_plaintext_auth: true\n    username: {USER}\n\
         \x20   password: {PASSWORD}\n    folder: {FOLDER}\n    timeout: 10s\n",
        port = slow_proxy(cyrus.imap_port)
    ));
    let (mut kills, mut mid_run) = (0, 0);
    for delay in [500, 900, 1300, 1700] {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("poll popbridge").is_some() {
            break;
        }
        child.kill().expect("SIGKILL popbridge");
        child.wait().expect("reap popbridge");
        kills += 1;
        let stored = cyrus.stored(FOLDER).len();
        eprintln!("kill {kills}: {stored} in Cyrus");
        mid_run += usize::from(stored > 0 && stored < messages.len());
    }
    assert!(mid_run > 0, "no kill landed mid-run: nothing proved");
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    let left = mu.stored(&user);
    assert!(left.is_empty(), "{} left on pop3d", left.len());
    let norm = |v: &[Vec<u8>]| v.iter().map(|m| normalise(m)).collect::<Vec<_>>();
    common::assert_exactly_once(&norm(&messages), &norm(&cyrus.stored(FOLDER)));
}
