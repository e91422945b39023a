//! Through the binary, against a real Dovecot: each transport security mode works, and
//! authentication and certificate failures are clear, bounded and leak no secret.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Dovecot, Mailbox, Tls};

fn delivers_over(dc: &Dovecot, tls: Tls, name: &str) {
    let user = dc.add_user(name);
    let messages = mail::corpus(name, 12);
    dc.seed(&user, &messages);
    let bridge = Bridge::new(
        dc,
        &[Mailbox {
            tls,
            ..Mailbox::new(name, &user)
        }],
    );
    let run = bridge.once();
    assert!(run.ok(), "{tls:?} run failed:\n{}", run.output());
    assert_exactly_once(&messages, &bridge.delivered(name));
}

#[test]
fn plain_pop3_delivers() {
    let dc = dovecot_or_skip!();
    delivers_over(dc, Tls::None, "plain");
}

#[test]
fn implicit_tls_with_a_private_ca_delivers() {
    let dc = dovecot_or_skip!();
    delivers_over(dc, Tls::Implicit, "pop3s");
}

#[test]
fn stls_with_a_private_ca_delivers() {
    let dc = dovecot_or_skip!();
    delivers_over(dc, Tls::Stls, "stls");
}

/// Lines of Dovecot's log about a failed password for `user`.
fn failed_logins(dc: &Dovecot, user: &str) -> usize {
    dc.log()
        .lines()
        .filter(|l| l.contains(&format!("({user},")) && l.contains("Password mismatch"))
        .count()
}

#[test]
fn a_wrong_password_fails_clearly_after_a_single_login_attempt() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("badpw");
    dc.seed(&user, &mail::corpus("badpw", 3));
    let wrong = format!("wrong-{:032x}", rand::random::<u128>());
    let mailbox = Mailbox {
        password: Some(&wrong),
        ..Mailbox::new("badpw", &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);

    let run = bridge.once();
    assert!(
        !run.ok(),
        "a wrong password must not exit 0:\n{}",
        run.output()
    );
    let all = format!("{}{}", run.stdout, run.stderr).to_lowercase();
    assert!(
        all.contains("auth"),
        "the error does not mention authentication:\n{}",
        run.output()
    );
    assert!(bridge.delivered("badpw").is_empty());
    assert_eq!(dc.list_server_messages(&user).len(), 3);

    // Dovecot logs each failed attempt; the log is written asynchronously, so wait for it.
    let start = std::time::Instant::now();
    while failed_logins(dc, &user.name) == 0 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        failed_logins(dc, &user.name),
        1,
        "expected exactly one login attempt"
    );

    let check = bridge.run(&["check", "--connect"]);
    assert!(
        !check.ok(),
        "check --connect with a wrong password must fail:\n{}",
        check.output()
    );
}

fn rejects_untrusted_certificate(dc: &Dovecot, tls: Tls, name: &str) {
    let user = dc.add_user(name);
    dc.seed(&user, &mail::corpus(name, 2));
    let mailbox = Mailbox {
        tls,
        ca_file: Some(&dc.other_ca_file),
        ..Mailbox::new(name, &user)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    let run = bridge.once();
    assert!(
        !run.ok(),
        "an untrusted server certificate must fail:\n{}",
        run.output()
    );
    let all = format!("{}{}", run.stdout, run.stderr).to_lowercase();
    assert!(
        all.contains("certificate"),
        "the error does not mention the certificate:\n{}",
        run.output()
    );
    assert!(bridge.delivered(name).is_empty());
    // The password was never sent, so Dovecot saw no login.
    assert!(
        !dc.log().contains(&format!("user=<{}>", user.name)),
        "a login happened over untrusted TLS"
    );
}

#[test]
fn implicit_tls_with_the_wrong_ca_fails_with_a_certificate_error() {
    let dc = dovecot_or_skip!();
    rejects_untrusted_certificate(dc, Tls::Implicit, "wrongca");
}

#[test]
fn stls_with_the_wrong_ca_fails_with_a_certificate_error() {
    let dc = dovecot_or_skip!();
    rejects_untrusted_certificate(dc, Tls::Stls, "wrongcastls");
}

#[test]
fn no_password_in_debug_and_json_logs() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("secret");
    let messages = mail::corpus("secret", 4);
    dc.seed(&user, &messages);
    let bridge = Bridge::new(dc, &[Mailbox::new("secret", &user)]);
    // Bridge::run_with_env asserts the password is absent from stdout and stderr.
    for format in ["text", "json"] {
        let run = bridge.run_with_env(&["--log-format", format, "once"], &[("RUST_LOG", "trace")]);
        assert!(run.ok(), "{}", run.output());
        assert!(!run.stderr.is_empty(), "expected debug logs on stderr");
    }
    let check = bridge.run_with_env(&["check", "--connect"], &[("RUST_LOG", "trace")]);
    assert!(check.ok(), "{}", check.output());
    assert_exactly_once(&messages, &bridge.delivered("secret"));
}
