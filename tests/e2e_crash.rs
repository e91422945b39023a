//! Through the binary, against a real Dovecot: SIGKILL at random moments during a run, then a
//! run to completion, delivers every message exactly once and deletes them all from the server.

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use rand::Rng;
use std::time::Duration;

#[test]
fn kill_9_during_runs_then_a_full_run_delivers_every_message_exactly_once() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("crash");
    let messages: Vec<Vec<u8>> = (0..2000)
        .map(|i| mail::simple(&format!("crash-{i}"), &format!("message {i}")))
        .collect();
    dc.seed(&user, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("crash", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);

    let mut rng = rand::thread_rng();
    for round in 0..5 {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..1500)));
        if child.try_wait().expect("poll popbridge").is_some() {
            eprintln!("round {round}: popbridge finished before the kill");
            break;
        }
        child.kill().expect("SIGKILL popbridge"); // SIGKILL on Unix
        child.wait().expect("reap popbridge");
    }

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
