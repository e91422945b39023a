//! Through the binary, against a real Dovecot: what dead letters do to `popbridge once`'s exit
//! status before and after `dlq drop`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{mail, Bridge, Mailbox};

#[test]
fn dropped_dead_letters_no_longer_make_once_exit_1_but_dead_ones_do() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("dlqdrop");
    dc.seed(&user, &mail::corpus("dlqdrop", 2));
    let bridge = Bridge::new(dc, &[Mailbox::new("dlqdrop", &user)]);
    // A Maildir under a regular file: NotADirectory, a permanent failure, dead-lettered at once.
    std::fs::write(bridge.dir.path().join("blocker"), "not a directory").unwrap();
    bridge.replace_sinks(
        "sinks:\n  - name: archive\n    type: maildir\n    path: ./blocker/{mailbox}\n",
    );
    let first = bridge.once();
    assert_eq!(first.code, Some(1), "{}", first.output());
    // Still dead, still on the server: still incomplete.
    let again = bridge.once();
    assert_eq!(again.code, Some(1), "{}", again.output());
    let drop = bridge.run(&["dlq", "drop", "--mailbox", "dlqdrop"]);
    assert!(drop.ok(), "{}", drop.output());
    assert!(
        drop.stdout.contains("2 dead letter(s) dropped"),
        "{}",
        drop.output()
    );
    // Given up on purpose: the run is complete, and says why the messages stay.
    let after = bridge.once();
    assert_eq!(after.code, Some(0), "{}", after.output());
    assert!(
        after.stdout.contains("2 dropped dead letter(s)"),
        "{}",
        after.output()
    );
}
