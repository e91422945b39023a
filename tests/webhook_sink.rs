//! The webhook sink against a real HTTP server on loopback: signatures checked by the reference
//! implementation, payloads by the JSON Schema, retry classification, raw streaming of a large
//! message, the concurrency limit, and, through the engine, a receiver that is down for a while.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::key::IdempotencyKey;
use popbridge::secret::Secret;
use popbridge::sink::webhook::config::decode_secret;
use popbridge::sink::webhook::{Format, WebhookSettings, WebhookSink};
use popbridge::sink::{DeliveryError, Sink};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::receiver::{python_oracle, Receiver, Reply};
use support::spool::spool;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz";

fn settings(url: &str, format: Format) -> WebhookSettings {
    WebhookSettings {
        url: url.parse().unwrap(),
        format,
        keys: vec![decode_secret(&Secret::new(SECRET)).unwrap()],
        headers: vec![(
            "authorization".parse().unwrap(),
            Secret::new("Bearer t0ken-never-logged"),
        )],
        timeout: Duration::from_secs(5),
        concurrency: 4,
        max_inline_attachment_bytes: 1 << 20,
        include_raw: false,
        ca_file: None,
        client_identity: None,
        tls_verify: true,
        offload: None,
    }
}

fn fixture(n: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/eml/{n}.eml")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_requests_are_signed_valid_and_keyed_by_the_idempotency_key() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = WebhookSink::new("hook", settings(&rx.url, Format::Json)).unwrap();
    let mut keys = Vec::new();
    for n in ["001", "002", "003", "004", "005", "006", "007", "008"] {
        let m = spool(dir.path(), n, &fixture(n));
        let key = IdempotencyKey::derive("alice", n);
        let receipt = sink.deliver(&m, &key).await.unwrap();
        assert!(receipt.detail.starts_with("HTTP 200"), "{receipt:?}");
        keys.push(key);
    }
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 8);
    for (r, key) in reqs.iter().zip(&keys) {
        assert_eq!(r.header("webhook-id"), key.as_str());
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("authorization"), "Bearer t0ken-never-logged");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], key.as_str());
        assert_eq!(v["mailbox"], "alice");
    }
    // Our own signatures, checked by the reference implementation; payloads by the schema.
    python_oracle(SECRET, &reqs);
    // The spool directory holds no JSON body files afterwards.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 8, "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_signs_with_every_secret() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&rx.url, Format::Json);
    s.keys
        .push(decode_secret(&Secret::new(OLD_SECRET)).unwrap());
    let sink = WebhookSink::new("hook", s).unwrap();
    sink.deliver(
        &spool(dir.path(), "m", &fixture("001")),
        &IdempotencyKey::derive("a", "m"),
    )
    .await
    .unwrap();
    let reqs = rx.requests();
    assert_eq!(reqs[0].header("webhook-signature").split(' ').count(), 2);
    // A receiver holding either secret accepts it.
    python_oracle(SECRET, &reqs);
    python_oracle(OLD_SECRET, &reqs);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_mode_streams_a_large_message_byte_identical() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    body.extend((0..20 * 1024 * 1024).map(|i| (i % 251) as u8));
    let m = spool(dir.path(), "big", &body);
    let sink = WebhookSink::new("hook", settings(&rx.url, Format::Raw)).unwrap();
    sink.deliver(&m, &IdempotencyKey::derive("alice", "big"))
        .await
        .unwrap();
    let reqs = rx.requests();
    assert_eq!(reqs[0].header("content-type"), "message/rfc822");
    assert_eq!(reqs[0].header("popbridge-sha256"), m.sha256);
    assert_eq!(reqs[0].header("popbridge-uidl"), "big");
    assert!(reqs[0].body == body, "raw body differs");
    python_oracle(SECRET, &reqs);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_classified_retryable_or_permanent() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&rx.url, Format::Json);
    s.timeout = Duration::from_millis(500);
    let sink = WebhookSink::new("hook", s).unwrap();
    let m = spool(dir.path(), "m", &fixture("001"));
    let key = IdempotencyKey::derive("alice", "m");
    rx.script([
        Reply::Status(503, Some("7")),
        Reply::Status(429, None),
        Reply::SleepThen(Duration::from_secs(2), 200),
        Reply::Status(404, None),
        Reply::Status(301, None),
    ]);
    match sink.deliver(&m, &key).await.unwrap_err() {
        DeliveryError::Retryable {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sink.deliver(&m, &key).await.unwrap_err().is_retryable());
    let timeout = sink.deliver(&m, &key).await.unwrap_err();
    assert!(
        timeout.is_retryable() && timeout.to_string().contains("timed out"),
        "{timeout}"
    );
    // No such endpoint, or a redirect: the `url` is wrong for every message, not this one.
    let gone = sink.deliver(&m, &key).await.unwrap_err();
    assert!(gone.is_sink_wide(), "{gone:?}");
    assert!(gone.to_string().contains("HTTP 404: answer 404"), "{gone}");
    let moved = sink.deliver(&m, &key).await.unwrap_err();
    assert!(
        moved.is_sink_wide() && moved.to_string().contains("redirects"),
        "{moved}"
    );
    // Every retry carried the same webhook-id.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let ids: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert!(
        ids.len() >= 4 && ids.iter().all(|i| i == key.as_str()),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_retryable_and_healthcheck_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let sink = WebhookSink::new("hook", settings(&url, Format::Json)).unwrap();
    let e = sink
        .deliver(
            &spool(dir.path(), "m", &fixture("001")),
            &IdempotencyKey::derive("a", "m"),
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(sink.healthcheck().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_is_respected() {
    let rx = Receiver::start().await;
    *rx.shared.delay.lock().unwrap() = Some(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&rx.url, Format::Raw);
    s.concurrency = 3;
    let sink = Arc::new(WebhookSink::new("hook", s).unwrap());
    let mut tasks = Vec::new();
    for i in 0..12 {
        let m = spool(
            dir.path(),
            &format!("m{i}"),
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            sink.deliver(&m, &IdempotencyKey::derive("a", &m.uidl))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let max = rx
        .shared
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=3).contains(&max), "max concurrent requests {max}");
    assert_eq!(rx.requests().len(), 12);
}

/// A receiver that answers 500 and then drips an endless body: only a short piece of it is
/// read, so the delivery fails at once with bounded memory instead of reading until the
/// request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_error_body_is_not_read_to_its_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let head =
                    "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while conn.write_all(chunk.as_bytes()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&url, Format::Raw);
    s.timeout = Duration::from_secs(60);
    let sink = WebhookSink::new("hook", s).unwrap();
    let m = spool(dir.path(), "m", b"Subject: x\r\n\r\nbody\r\n");
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        sink.deliver(&m, &IdempotencyKey::derive("alice", "m")),
    )
    .await
    .expect("the error body was read on and on")
    .unwrap_err();
    assert!(e.is_retryable() && !e.is_sink_wide(), "{e:?}");
    assert!(e.to_string().starts_with("HTTP 500: xxx"), "{e}");
    assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
}

/// Through the engine's retry loop: a receiver that refuses every message (401) leaves the
/// message pending for a later poll instead of dead-lettering it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_endpoint_leaves_the_message_pending_not_dead() {
    use popbridge::engine::deliver::{deliver_to_sink, SinkHandle};
    use popbridge::store::OutcomeResult;
    let rx = Receiver::start().await;
    rx.script([
        Reply::Status(401, None),
        Reply::Status(401, None),
        Reply::Status(401, None),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let handle = SinkHandle::new(
        "hook",
        Arc::new(WebhookSink::new("hook", settings(&rx.url, Format::Raw)).unwrap()),
        popbridge::config::RetryPolicy {
            attempts_per_poll: 2,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            window: Duration::from_secs(3600),
        },
    );
    let m = spool(dir.path(), "m", b"Subject: x\r\n\r\nbody\r\n");
    let outcome = deliver_to_sink(
        &handle,
        &m,
        &IdempotencyKey::derive("alice", "m"),
        None,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await;
    match outcome.result {
        OutcomeResult::Retry { error, .. } => assert!(error.contains("HTTP 401"), "{error}"),
        other => panic!("expected a retry later, got {other:?}"),
    }
    // A sink-wide refusal is not retried within the poll: the circuit opens instead.
    assert_eq!(outcome.attempts_made, 1);
    assert!(handle
        .circuit
        .open_until(popbridge::store::now_millis())
        .is_some());
}
