//! GNU mailutils `pop3d` as a POP3 source, through the binary into a Maildir sink.
//!
//! pop3d changes what it serves: it inserts `X-UIDL` at a message's first RETR (and LIST
//! counts it from then on), and with an mbox rewrites `Status`, `X-UID`, `X-IMAPbase` at the
//! end of every session, even a killed one. So a message's LIST size and bytes differ from
//! one session to the next, and popbridge must still deliver each message once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::mailutils::{mailutils_or_skip, normalise, slow_proxy, Mailutils};
use common::{mail, Bridge, Mailbox, User};
use std::time::Duration;

/// The seeded messages with CRLF line ends and X-UIDL inserted by pop3d removed.
fn normalised(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = messages.iter().map(|m| normalise(m)).collect();
    out.sort();
    out
}

/// The seeded corpus; binary parts, dots and 8-bit text, no body line starting with `From `.
fn corpus(tag: &str, n: usize) -> Vec<Vec<u8>> {
    mail::corpus(tag, n)
}

/// Seeds `n` messages for a new user and returns the user, the messages and a bridge.
fn setup(mu: &Mailutils, tag: &str, n: usize, delete: &str) -> (User, Vec<Vec<u8>>, Bridge) {
    let user = mu.add_user(tag);
    let messages = corpus(tag, n);
    mu.seed(&user, &messages);
    let bridge = Bridge::plain(
        mu.port,
        &[Mailbox {
            delete,
            ..Mailbox::new(tag, &user)
        }],
    );
    (user, messages, bridge)
}

/// The first run's copies are the served bytes: each seeded message with CRLF line ends plus
/// the `X-UIDL` header line pop3d inserts at the first RETR, nothing else.
fn assert_first_copies(mu: &Mailutils, messages: &[Vec<u8>], delivered: &[Vec<u8>]) {
    assert_eq!(delivered.len(), messages.len(), "{}", mu.log());
    assert_eq!(normalised(delivered), normalised(messages));
    for copy in delivered {
        let text = String::from_utf8_lossy(copy);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let extra: Vec<&str> = head
            .split("\r\n")
            .filter(|l| {
                let name = l.split(':').next().unwrap_or_default();
                ["X-UIDL", "Status", "X-UID", "X-IMAPbase"].contains(&name)
            })
            .collect();
        assert!(
            extra.len() <= 1 && extra.iter().all(|l| l.starts_with("X-UIDL: ")),
            "a first copy carries only pop3d's X-UIDL: {extra:?}"
        );
    }
}

fn once_ok(bridge: &Bridge) -> String {
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    run.output()
}

#[test]
fn mbox_is_delivered_once_over_several_runs_despite_rewritten_headers() {
    let Some(mu) = mailutils_or_skip() else {
        return;
    };
    let (user, messages, bridge) = setup(&mu, "mbox", 12, "never");
    once_ok(&bridge);
    let first = bridge.delivered("mbox");
    assert_first_copies(&mu, &messages, &first);
    // pop3d rewrote the mbox at the end of that session: sizes and bytes change.
    let stored = mu.stored(&user);
    assert!(
        stored
            .iter()
            .all(|m| String::from_utf8_lossy(m).contains("\nStatus: ")),
        "pop3d did not rewrite Status: the test proves nothing"
    );
    for run in 2..=3 {
        let out = once_ok(&bridge);
        let now = bridge.delivered("mbox");
        assert_eq!(
            now.len(),
            messages.len(),
            "run {run} delivered again:\n{out}"
        );
    }
}

#[test]
fn delete_after_delivery_empties_the_mbox() {
    let Some(mu) = mailutils_or_skip() else {
        return;
    };
    let (user, messages, bridge) = setup(&mu, "dele", 10, "after_delivery");
    once_ok(&bridge);
    assert_first_copies(&mu, &messages, &bridge.delivered("dele"));
    assert_eq!(mu.stored(&user).len(), 0, "{}", mu.log());
    once_ok(&bridge);
    assert_eq!(bridge.delivered("dele").len(), messages.len());
}

#[test]
fn kill_9_mid_run_then_a_full_run_delivers_each_message_once() {
    let Some(mu) = mailutils_or_skip() else {
        return;
    };
    let user = mu.add_user("kill");
    let padding = "All work and no play makes a test run long enough to kill.\n".repeat(130);
    let messages: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            let mut m = mail::simple(&format!("kill-{i}"), &format!("message {i}"));
            m.extend_from_slice(padding.replace('\n', "\r\n").as_bytes());
            m
        })
        .collect();
    mu.seed(&user, &messages);
    // A whole run takes a few hundred milliseconds on loopback: slowed down, kills land in it.
    let bridge = Bridge::plain(
        slow_proxy(mu.port),
        &[Mailbox {
            delete: "after_delivery",
            ..Mailbox::new("kill", &user)
        }],
    );
    let (mut kills, mut mid_run) = (0, 0);
    for delay in [700, 1100, 1500, 1900] {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("poll popbridge").is_some() {
            break;
        }
        child.kill().expect("SIGKILL popbridge");
        child.wait().expect("reap popbridge");
        kills += 1;
        let delivered = bridge.delivered("kill").len();
        eprintln!("kill {kills}: {delivered} delivered");
        mid_run += usize::from(delivered > 0 && delivered < messages.len());
    }
    assert!(mid_run > 0, "no kill landed mid-delivery: nothing proved");
    once_ok(&bridge);
    let left = mu.stored(&user);
    assert!(left.is_empty(), "{} left on the server", left.len());
    // Copies delivered after a killed session carry pop3d's rewritten headers.
    common::assert_exactly_once(
        &normalised(&messages),
        &normalised(&bridge.delivered("kill")),
    );
}
