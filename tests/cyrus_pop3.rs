//! Cyrus 3.6 POP3 with Debian's `popminpoll: 1`: CAPA says `LOGIN-DELAY 60` and a second
//! login within a minute is refused with `-ERR [LOGIN-DELAY]` ("Logins must be at least 1 minute
//! apart"), as after `popbridge check --connect`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::cyrus::{cyrus_or_skip, Cyrus, PASSWORD, USER};
use common::{mail, Bridge, Mailbox, User};

/// Appends `messages` to the user's INBOX over IMAP (LITERAL+).
fn seed(cyrus: &Cyrus, messages: &[Vec<u8>]) {
    for m in messages {
        let text = String::from_utf8(m.clone()).expect("ASCII message");
        let out = cyrus.imap(
            USER,
            PASSWORD,
            &[&format!("APPEND INBOX {{{}+}}\r\n{text}", m.len())],
        );
        assert!(out.contains("c1 OK"), "{out}");
    }
}

fn bridge(cyrus: &Cyrus) -> (Bridge, User) {
    let user = User {
        name: USER.into(),
        password: PASSWORD.into(),
        maildir: cyrus.dir.path().into(),
    };
    let bridge = Bridge::plain(cyrus.pop3_port, &[Mailbox::new("cyrus", &user)]);
    (bridge, user)
}

/// `check --connect` logs in; the `once` right after it is refused `[LOGIN-DELAY]` at first,
/// waits the delay out (saying so) and delivers everything; the POP3 bytes from Cyrus are the
/// seeded ones.
#[test]
fn check_connect_then_once_waits_out_the_login_delay() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    let messages: Vec<Vec<u8>> = (0..3)
        .map(|i| mail::simple(&format!("cyrus-{i}"), "hello"))
        .collect();
    seed(&cyrus, &messages);
    let (bridge, _user) = bridge(&cyrus);
    let check = bridge.run(&["check", "--connect"]);
    assert!(check.ok(), "{}", check.output());
    assert!(
        check.stdout.contains("LOGIN-DELAY 60s"),
        "{}",
        check.output()
    );
    let started = std::time::Instant::now();
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.stdout.contains("LOGIN-DELAY") && started.elapsed().as_secs() >= 60,
        "the first login was not refused: the test proves nothing\n{}",
        run.output()
    );
    common::assert_exactly_once(&messages, &bridge.delivered("cyrus"));
}
