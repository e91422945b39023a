//! POP3 `UTF8` (RFC 6856): sent before authentication when the server advertises it (Courier
//! otherwise serves a message with raw UTF-8 headers as a down-converted substitute), never
//! when it does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::pop3::{AuthMethod, ClientConfig, TlsMode};
use popbridge::secret::Secret;
use std::time::Duration;
use support::fake_pop3::{FakePop3, Msg, Quirks};

fn config(port: u16) -> ClientConfig {
    ClientConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        username: "alice".into(),
        secret: Secret::new("pw"),
        password_file: None,
        auth: AuthMethod::Auto,
        ca_file: None,
        danger_accept_invalid_certs: false,
        allow_plaintext_auth: true,
        timeout: Duration::from_secs(2),
        max_line_length: 1000,
        max_message_bytes: 1 << 20,
        pipeline_window: 4,
    }
}

fn message() -> Vec<Msg> {
    vec![Msg {
        uidl: "u1".into(),
        body: "Subject: Gr\u{fc}\u{df}e\r\n\r\nbody\r\n"
            .as_bytes()
            .to_vec(),
    }]
}

#[tokio::test]
async fn utf8_is_sent_before_login_when_advertised() {
    let server = FakePop3::start(
        message(),
        Quirks {
            capa: vec!["UTF8".into()],
            ..Default::default()
        },
    )
    .await;
    let t = popbridge::pop3::connect(&config(server.port))
        .await
        .unwrap();
    drop(t);
    let commands = server.state.lock().unwrap().commands.clone();
    let utf8 = commands.iter().position(|c| c == "UTF8");
    let user = commands.iter().position(|c| c == "USER");
    assert!(
        matches!((utf8, user), (Some(u), Some(l)) if u < l),
        "{commands:?}"
    );
}

#[tokio::test]
async fn utf8_is_not_sent_when_not_advertised() {
    let server = FakePop3::start(message(), Quirks::default()).await;
    let t = popbridge::pop3::connect(&config(server.port))
        .await
        .unwrap();
    drop(t);
    let commands = server.state.lock().unwrap().commands.clone();
    assert!(commands.iter().any(|c| c == "PASS"), "{commands:?}");
    assert!(!commands.iter().any(|c| c == "UTF8"), "{commands:?}");
}
