//! Through the binary, against a real Dovecot: SIGKILL at random moments during a run, then a
//! run to completion, delivers every message exactly once and deletes them all from the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use rand::Rng;
use std::time::Duration;

#[test]
fn kill_9_during_runs_then_a_full_run_delivers_every_message_exactly_once() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("crash");
    // About 8 KB each, so a run lasts long enough to be killed in the middle of it.
    let padding = "All work and no play makes a test run long enough to kill.\r\n".repeat(130);
    let messages: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            let mut m = mail::simple(&format!("crash-{i}"), &format!("message {i}"));
            m.extend_from_slice(padding.as_bytes());
            m
        })
        .collect();
    dc.seed(&user, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("crash", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);

    let mut rng = rand::thread_rng();
    let mut kills = 0;
    // Until a run finishes by itself: early kills land in RETR and delivery, later ones (with
    // less left to fetch) in the DELE/QUIT phase.
    for _ in 0..12 {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
        if child.try_wait().expect("poll popbridge").is_some() {
            break;
        }
        child.kill().expect("SIGKILL popbridge"); // Child::kill is SIGKILL on Unix
        child.wait().expect("reap popbridge");
        kills += 1;
    }
    assert!(
        kills > 0,
        "popbridge always finished before the kill: the test proved nothing"
    );
    eprintln!(
        "after {kills} kills: {} delivered, {} still on the server",
        bridge.delivered("crash").len(),
        dc.list_server_messages(&user).len()
    );

    let run = bridge.once();
    assert!(
        run.ok(),
        "the run after the kills failed:\n{}",
        run.output()
    );
    assert_exactly_once(&messages, &bridge.delivered("crash"));
    assert_eq!(
        dc.list_server_messages(&user).len(),
        0,
        "server mailbox not emptied"
    );

    let again = bridge.once();
    assert!(again.ok(), "{}", again.output());
    assert_eq!(bridge.delivered("crash").len(), messages.len());
}
