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

/// One test per transport mode: `$check(dc, tls, user prefix)` on the shared Dovecot.
macro_rules! per_mode {
    ($check:ident: $($test:ident($tls:expr, $name:literal);)*) => {$(
        #[test]
        fn $test() {
            let dc = dovecot_or_skip!();
            $check(dc, $tls, $name);
        }
    )*};
}

per_mode! { delivers_over:
    plain_pop3_delivers(Tls::None, "plain");
    implicit_tls_with_a_private_ca_delivers(Tls::Implicit, "pop3s");
    stls_with_a_private_ca_delivers(Tls::Stls, "stls");
}

/// Runs `once` and asserts that it fails (`why` it must) with an error that mentions `word`.
fn fails_mentioning(bridge: &Bridge, why: &str, word: &str) {
    let run = bridge.once();
    assert!(!run.ok(), "{why}:\n{}", run.output());
    let all = format!("{}{}", run.stdout, run.stderr).to_lowercase();
    assert!(
        all.contains(word),
        "the error does not mention {word:?}:\n{}",
        run.output()
    );
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

    fails_mentioning(&bridge, "a wrong password must not exit 0", "auth");
    assert!(bridge.delivered("badpw").is_empty());
    assert_eq!(dc.list_server_messages(&user).len(), 3);

    // Dovecot logs each failed attempt; the log is written asynchronously, so wait for it.
    let start = std::time::Instant::now();
    while dc.failed_logins(&user.name) == 0 && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        dc.failed_logins(&user.name),
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
    fails_mentioning(
        &bridge,
        "an untrusted server certificate must fail",
        "certificate",
    );
    assert!(bridge.delivered(name).is_empty());
    // The password was never sent, so Dovecot saw no login.
    assert!(
        !dc.log().contains(&format!("user=<{}>", user.name)),
        "a login happened over untrusted TLS"
    );
}

per_mode! { rejects_untrusted_certificate:
    implicit_tls_with_the_wrong_ca_fails_with_a_certificate_error(Tls::Implicit, "wrongca");
    stls_with_the_wrong_ca_fails_with_a_certificate_error(Tls::Stls, "wrongcastls");
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

fn client(
    dc: &Dovecot,
    user: &common::User,
    tls: popbridge::pop3::TlsMode,
    port: u16,
) -> popbridge::pop3::ClientConfig {
    popbridge::pop3::ClientConfig {
        host: "localhost".into(),
        port,
        tls,
        username: user.name.clone(),
        secret: popbridge::secret::Secret::new(user.password.clone()),
        password_file: None,
        auth: popbridge::pop3::AuthMethod::Auto,
        ca_file: Some(dc.ca_file.clone()),
        danger_accept_invalid_certs: false,
        allow_plaintext_auth: true,
        timeout: std::time::Duration::from_secs(10),
        max_line_length: 8192,
        max_message_bytes: 1 << 20,
        pipeline_window: 4,
    }
}

#[tokio::test]
async fn password_file_is_read_again_at_each_login() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("pwfile");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", user.password)).unwrap();
    let cfg = popbridge::pop3::ClientConfig {
        // What the config loaded at startup; the file is what counts at each login.
        secret: popbridge::secret::Secret::new(user.password.clone()),
        password_file: Some(file.clone()),
        ..client(dc, &user, popbridge::pop3::TlsMode::StartTls, dc.pop3_port)
    };
    popbridge::pop3::connect(&cfg)
        .await
        .unwrap()
        .quit()
        .await
        .unwrap();
    // Rotated to a value the server does not know: the next login uses it.
    std::fs::write(&file, "rotated-but-wrong\n").unwrap();
    let err = popbridge::pop3::connect(&cfg).await.err().unwrap();
    assert_eq!(err.kind(), popbridge::pop3::ErrorKind::Auth, "{err}");
    // Gone: a clear error naming the file, not a login with the stale password.
    std::fs::remove_file(&file).unwrap();
    let err = popbridge::pop3::connect(&cfg).await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("password_file") && text.contains(&file.display().to_string()),
        "{text}"
    );
    assert!(!text.contains(&user.password));
}

#[tokio::test]
async fn implicit_tls_on_a_plain_port_suggests_starttls_or_the_pop3s_port() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("wrongport");
    let cfg = client(dc, &user, popbridge::pop3::TlsMode::Implicit, dc.pop3_port);
    let err = popbridge::pop3::connect(&cfg).await.err().unwrap();
    let text = err.to_string();
    assert_eq!(err.kind(), popbridge::pop3::ErrorKind::Tls);
    assert!(
        text.contains("tls: starttls") && text.contains("995"),
        "{text}"
    );
}

#[tokio::test]
async fn the_tls_connector_is_built_once_not_at_every_poll() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("tlsonce");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::copy(&dc.ca_file, &ca).unwrap();
    let cfg = popbridge::pop3::ClientConfig {
        ca_file: Some(ca.clone()),
        ..client(dc, &user, popbridge::pop3::TlsMode::Implicit, dc.pop3s_port)
    };
    popbridge::pop3::connect(&cfg)
        .await
        .unwrap()
        .quit()
        .await
        .unwrap();
    // A rebuilt connector would read the CA file again and fail now.
    std::fs::remove_file(&ca).unwrap();
    popbridge::pop3::connect(&cfg)
        .await
        .unwrap()
        .quit()
        .await
        .unwrap();
}
