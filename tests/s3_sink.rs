//! The S3 sink against a real S3 server (`s3s-fs` in-process on loopback, SigV4 checked):
//! small and multipart objects byte-identical with their metadata, repeats after a crash,
//! a different object under the same key, bad keys, a missing bucket, a server that is down,
//! aborted multipart uploads, and web identity keys from a local STS stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::key::IdempotencyKey;
use popbridge::sink::s3::credentials::{Source, WebIdentity};
use popbridge::sink::s3::key::KeyTemplate;
use popbridge::sink::s3::{S3Settings, S3Sink};
use popbridge::sink::{DeliveryError, Sink};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::s3::{creds, free_port, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use support::spool::spool;

const DATE_HEADER: &str = "Date: Tue, 10 Nov 2026 08:00:00 +0000\r\n";

fn small(n: u32) -> Vec<u8> {
    format!("From: a@example.com\r\n{DATE_HEADER}Message-ID: <m{n}@example.com>\r\nSubject: {n}\r\n\r\nHello {n}\r\n.leading dot\r\n")
        .into_bytes()
}

/// A message of `size` bytes with a header block and varied body bytes.
fn large(size: usize, seed: u8) -> Vec<u8> {
    let mut m =
        format!("From: a@example.com\r\n{DATE_HEADER}Message-ID: <big{seed}@example.com>\r\n\r\n")
            .into_bytes();
    let mut x = seed as u32;
    while m.len() < size {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        m.push(b'a' + (x >> 16) as u8 % 26);
        if m.len() % 76 == 0 {
            m.extend_from_slice(b"\r\n");
        }
    }
    m.truncate(size);
    m
}

/// The server's settings with 5 MiB parts from 5 MiB on (the smallest part S3 allows), so a
/// message of a few MiB goes up in parts.
fn multipart_settings(s3: &S3Server) -> S3Settings {
    let mut settings = s3.settings();
    settings.multipart_threshold = 5 << 20;
    settings.part_size = 5 << 20;
    settings
}

fn expected_key(id: &IdempotencyKey) -> String {
    format!("alice/2026/11/10/{id}.eml")
}

fn permanent(e: &DeliveryError) -> String {
    assert!(!e.is_retryable(), "expected a permanent error, got {e:?}");
    e.to_string()
}

/// The sink is misconfigured: not this message's fault, so it must not be dead-lettered.
fn sink_down(e: &DeliveryError) -> String {
    assert!(e.is_sink_wide(), "expected a sink-wide error, got {e:?}");
    e.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn small_messages_arrive_byte_identical_with_metadata() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = S3Sink::new("archive", s3.settings()).unwrap();
    sink.healthcheck().await.unwrap();
    for n in 0..5 {
        let body = small(n);
        let m = spool(dir.path(), &format!("0000000{n}"), &body);
        let id = IdempotencyKey::derive("alice", &m.uidl);
        let receipt = sink.deliver(&m, &id).await.unwrap();
        assert!(!receipt.duplicate);
        let key = expected_key(&id);
        assert!(
            receipt
                .detail
                .starts_with(&format!("s3://{BUCKET}/{key} ETag \"")),
            "{receipt:?}"
        );
        let (status, h, got) = s3.fetch("GET", &key).await;
        assert_eq!(status, 200);
        assert_eq!(got, body);
        assert_eq!(h["content-type"], "message/rfc822");
        assert_eq!(h["x-amz-meta-mailbox"], "alice");
        assert_eq!(h["x-amz-meta-uidl"], m.uidl.as_str());
        assert_eq!(h["x-amz-meta-sha256"], m.sha256.as_str());
        assert_eq!(h["x-amz-meta-id"], id.as_str());
        assert_eq!(
            h["x-amz-meta-message-id"],
            format!("m{n}@example.com").as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_messages_go_up_in_parts_byte_identical() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = multipart_settings(&s3);
    let sink = S3Sink::new("archive", settings).unwrap();
    let body = large((12 << 20) + 12345, 1);
    let m = spool(dir.path(), "big", &body);
    let id = IdempotencyKey::derive("alice", "big");
    let receipt = sink.deliver(&m, &id).await.unwrap();
    // Three parts: 5 MiB, 5 MiB and the rest; a multipart ETag says how many.
    assert!(receipt.detail.ends_with("-3\""), "{receipt:?}");
    let (status, h, got) = s3.fetch("GET", &expected_key(&id)).await;
    assert_eq!(status, 200);
    assert!(
        got == body,
        "multipart object differs ({} vs {} bytes)",
        got.len(),
        body.len()
    );
    assert_eq!(h["x-amz-meta-sha256"], m.sha256.as_str());
    assert_eq!(h["x-amz-meta-message-id"], "big1@example.com");
    assert_eq!(h["content-type"], "message/rfc822");
    assert!(
        s3.leftover_uploads().is_empty(),
        "{:?}",
        s3.leftover_uploads()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delivering_the_same_key_again_is_a_duplicate_receipt() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = multipart_settings(&s3);
    let sink = S3Sink::new("archive", settings).unwrap();
    for (uidl, body) in [("s", small(1)), ("l", large(6 << 20, 2))] {
        let m = spool(dir.path(), uidl, &body);
        let id = IdempotencyKey::derive("alice", uidl);
        let first = sink.deliver(&m, &id).await.unwrap();
        // A crash after the upload, before the state commit: popbridge fetches and delivers
        // again, with a new fetch time, and must find the object already there.
        let mut again = m.clone();
        again.fetched_at += chrono::Duration::hours(3);
        let second = sink.deliver(&again, &id).await.unwrap();
        assert!(
            !first.duplicate && second.duplicate,
            "{uidl}: {first:?} {second:?}"
        );
        assert_eq!(first.detail, second.detail, "{uidl}");
    }
    assert_eq!(
        s3.object_keys()
            .iter()
            .filter(|k| k.ends_with(".eml"))
            .count(),
        2
    );
    assert!(s3.leftover_uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_different_object_under_the_key_is_a_permanent_error_and_left_untouched() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = multipart_settings(&s3);
    settings.key = KeyTemplate::parse("{mailbox}/{id}.eml").unwrap();
    let sink = S3Sink::new("archive", settings).unwrap();
    for (uidl, first, other) in [
        ("s", small(1), small(2)),
        ("l", large(6 << 20, 3), large(6 << 20, 4)),
    ] {
        let id = IdempotencyKey::derive("alice", uidl);
        let a = spool(dir.path(), &format!("{uidl}-a"), &first);
        sink.deliver(&a, &id).await.unwrap();
        let b = spool(dir.path(), &format!("{uidl}-b"), &other);
        let err = permanent(&sink.deliver(&b, &id).await.unwrap_err());
        assert!(err.contains("already holds a different object"), "{err}");
        assert!(err.contains(&a.sha256) && err.contains(&b.sha256), "{err}");
        let (_, _, got) = s3.fetch("GET", &format!("alice/{id}.eml")).await;
        assert!(got == first, "{uidl}: the stored object was changed");
    }
    assert!(s3.leftover_uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_and_a_missing_bucket_are_sink_wide_clear_errors() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let m = spool(dir.path(), "1", &small(1));
    let id = IdempotencyKey::derive("alice", "1");

    let mut bad_secret = s3.settings();
    bad_secret.credentials = Some(creds(ACCESS_KEY, "not-the-secret"));
    let sink = S3Sink::new("archive", bad_secret).unwrap();
    let err = sink_down(&sink.deliver(&m, &id).await.unwrap_err());
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
    sink_down(&sink.healthcheck().await.unwrap_err());

    let mut bad_id = s3.settings();
    bad_id.credentials = Some(creds("AKIAUNKNOWN000000000", SECRET_KEY));
    let sink = S3Sink::new("archive", bad_id).unwrap();
    let err = sink_down(&sink.deliver(&m, &id).await.unwrap_err());
    assert!(err.contains("HTTP 403"), "{err}");

    // A missing bucket: refused by the healthcheck (`/readyz`, `check --connect`) before any
    // mail moves. (s3s-fs, unlike AWS, creates a missing bucket on PUT, so the PUT's own
    // NoSuchBucket answer is covered by the classification unit tests.)
    let mut no_bucket = s3.settings();
    no_bucket.bucket = "no-such-bucket".into();
    let sink = S3Sink::new("archive", no_bucket).unwrap();
    let err = sink_down(&sink.healthcheck().await.unwrap_err());
    assert!(
        err.contains("no-such-bucket") && err.contains("create the bucket"),
        "{err}"
    );
    assert!(s3.object_keys().iter().all(|k| !k.ends_with(".eml")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_is_retryable_and_delivery_resumes_when_it_is_back() {
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let settings = popbridge::sink::s3::S3Settings::new(
        url.parse().unwrap(),
        BUCKET,
        Some(creds(ACCESS_KEY, SECRET_KEY)),
    );
    let sink = S3Sink::new("archive", settings).unwrap();
    let m = spool(dir.path(), "1", &small(1));
    let id = IdempotencyKey::derive("alice", "1");
    let err = sink.deliver(&m, &id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(sink.healthcheck().await.unwrap_err().is_retryable());
    let s3 = S3Server::start_on(port, root.path()).await;
    let receipt = sink.deliver(&m, &id).await.unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(s3.fetch("GET", &expected_key(&id)).await.2, small(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing_behind() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = multipart_settings(&s3);
    let sink = S3Sink::new("archive", settings).unwrap();
    let id = IdempotencyKey::derive("alice", "big");

    // The spool file changed after it was hashed: every part goes up, the whole-message hash
    // then disagrees, and the upload is aborted instead of completed.
    let m = spool(dir.path(), "big", &large(11 << 20, 5));
    std::fs::write(&m.path, large(11 << 20, 7)).unwrap();
    let err = sink.deliver(&m, &id).await.unwrap_err();
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    assert!(
        s3.leftover_uploads().is_empty(),
        "left behind: {:?}",
        s3.leftover_uploads()
    );

    // A spool file shorter than recorded fails after two parts were sent: aborted as well.
    let mut short = spool(dir.path(), "short", &large(11 << 20, 6));
    short.size += 1000;
    let err = sink.deliver(&short, &id).await.unwrap_err();
    assert!(err.to_string().contains("ended at byte"), "{err}");
    assert!(
        s3.leftover_uploads().is_empty(),
        "left behind: {:?}",
        s3.leftover_uploads()
    );
    assert!(
        s3.object_keys().iter().all(|k| !k.ends_with(".eml")),
        "{:?}",
        s3.object_keys()
    );
}

/// A local STS stand-in answering AssumeRoleWithWebIdentity with keys valid for `valid`;
/// returns its URL and a call counter.
async fn sts_stand_in(valid: chrono::Duration) -> (String, Arc<AtomicUsize>) {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let sts = axum::Router::new().route(
        "/",
        post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                assert!(body.contains("Action=AssumeRoleWithWebIdentity"), "{body}");
                assert!(body.contains("WebIdentityToken=oidc-token-123"), "{body}");
                assert!(body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fpb"), "{body}");
                let exp = (chrono::Utc::now() + valid).to_rfc3339();
                format!("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{ACCESS_KEY}</AccessKeyId><SecretAccessKey>{SECRET_KEY}</SecretAccessKey><SessionToken>session-tok</SessionToken><Expiration>{exp}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sts).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn web_identity_keys_come_from_sts_are_cached_and_renewed_before_expiry() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "oidc-token-123\n").unwrap();
    // Keys valid for an hour are fetched once; keys expiring within the 5-minute renewal
    // margin are fetched again for every upload.
    for (valid, expected_calls) in [
        (chrono::Duration::hours(1), 1),
        (chrono::Duration::minutes(2), 3),
    ] {
        let (sts_url, calls) = sts_stand_in(valid).await;
        let mut settings = s3.settings();
        settings.credentials = None;
        let source = Source::WebIdentity(WebIdentity {
            token_file: token.clone(),
            role_arn: "arn:aws:iam::1:role/pb".into(),
            session_name: "popbridge".into(),
            sts_endpoint: sts_url,
        });
        let sink = S3Sink::with_source("archive", settings, source).unwrap();
        for n in 0..3 {
            let m = spool(dir.path(), &format!("{expected_calls}-{n}"), &small(n));
            sink.deliver(&m, &IdempotencyKey::derive("alice", &m.uidl))
                .await
                .unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            expected_calls,
            "keys valid for {valid}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_without_our_metadata_is_compared_by_content() {
    // What s3s-fs leaves when the client dies mid-PUT (the bytes stored, the metadata not),
    // or what another tool uploads: no x-amz-meta-sha256. Placed straight into its directory.
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = S3Sink::new("archive", s3.settings()).unwrap();
    let (same, other) = (small(1), small(2));
    for (uidl, stored, ok) in [("same", &same, true), ("other", &other, false)] {
        let id = IdempotencyKey::derive("alice", uidl);
        let path = s3.root.join(BUCKET).join(expected_key(&id));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, stored).unwrap();
        let m = spool(dir.path(), uidl, &same);
        match sink.deliver(&m, &id).await {
            Ok(r) => assert!(ok && r.duplicate, "{uidl}: {r:?}"),
            Err(e) => {
                assert!(!ok, "{uidl}: {e}");
                assert!(
                    permanent(&e).contains("already holds a different object"),
                    "{e}"
                );
            }
        }
        assert_eq!(
            &std::fs::read(&path).unwrap(),
            stored,
            "{uidl}: object changed"
        );
    }
}

/// A raw STS stand-in: every request gets `head` and then, if `drip`, an endless chunked body.
async fn raw_sts(head: &'static str, body: &'static str, drip: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let answer = format!("{head}\r\n{body}");
                if conn.write_all(answer.as_bytes()).await.is_err() || !drip {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while conn.write_all(chunk.as_bytes()).await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            });
        }
    });
    url
}

fn web_identity_sink(s3: &S3Server, dir: &Path, sts_endpoint: String) -> S3Sink {
    let token = dir.join("token");
    std::fs::write(&token, "oidc-token-123\n").unwrap();
    let mut settings = s3.settings();
    settings.credentials = None;
    let source = Source::WebIdentity(WebIdentity {
        token_file: token,
        role_arn: "arn:aws:iam::1:role/pb".into(),
        session_name: "popbridge".into(),
        sts_endpoint,
    });
    S3Sink::with_source("archive", settings, source).unwrap()
}

/// STS could not reach the identity provider (the OIDC issuer): that passes, so the message
/// is retried rather than dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn sts_failing_to_reach_the_identity_provider_is_retryable() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = "<ErrorResponse><Error><Code>IDPCommunicationError</Code><Message>timed out</Message></Error></ErrorResponse>";
    let head = Box::leak(
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        )
        .into_boxed_str(),
    );
    let sink = web_identity_sink(&s3, dir.path(), raw_sts(head, body, false).await);
    let m = spool(dir.path(), "1", &small(1));
    let err = sink
        .deliver(&m, &IdempotencyKey::derive("alice", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeliveryError::Retryable { .. }),
        "expected a passing failure, got {err:?}"
    );
    assert!(err.to_string().contains("IDPCommunicationError"), "{err}");
}

/// An STS endpoint that never stops sending its error body: only a bounded piece is read.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_sts_answer_is_not_read_to_its_end() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let head = "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n";
    let mut sink_settings_dir = dir.path().to_path_buf();
    sink_settings_dir.push("sts");
    std::fs::create_dir_all(&sink_settings_dir).unwrap();
    let sink = web_identity_sink(&s3, &sink_settings_dir, raw_sts(head, "", true).await);
    let m = spool(dir.path(), "1", &small(1));
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sink.deliver(&m, &IdempotencyKey::derive("alice", "1")),
    )
    .await
    .expect("the STS answer was read on and on")
    .unwrap_err();
    assert!(err.to_string().contains("STS"), "{err}");
}
