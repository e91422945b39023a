//! Big mail as links, webhook side: attachments over the inline limit (and with `raw: true` the
//! message) go to a real S3 server (s3s-fs, which checks signatures, pre-signed ones included)
//! under their SHA-256, and the payload carries a pre-signed GET that a plain HTTP client can
//! follow. A retry reuses the objects and signs fresh links; an expired link is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::key::IdempotencyKey;
use popbridge::secret::Secret;
use popbridge::sink::offload::{OffloadSettings, OffloadStore};
use popbridge::sink::webhook::config::decode_secret;
use popbridge::sink::webhook::{Format, WebhookSettings, WebhookSink};
use popbridge::sink::Sink;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::receiver::{python_oracle, Receiver};
use support::s3::S3Server;
use support::spool::spool;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn offload(s3: &S3Server, raw: bool) -> OffloadSettings {
    OffloadSettings {
        s3: s3.settings(),
        prefix: "offload/".into(),
        link_expiry: Duration::from_secs(3600),
        link_base: None,
        raw,
    }
}

fn settings(url: &str, offload: OffloadSettings) -> WebhookSettings {
    WebhookSettings {
        url: url.parse().unwrap(),
        format: Format::Json,
        keys: vec![decode_secret(&Secret::new(SECRET)).unwrap()],
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
        concurrency: 4,
        max_inline_attachment_bytes: 64 * 1024,
        include_raw: false,
        ca_file: None,
        client_identity: None,
        tls_verify: true,
        offload: Some(offload),
    }
}

/// Bytes no compressor or coincidence makes equal to anything else in the test.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn b64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

/// A message with a small attachment, a big one, and the big one again under another name.
fn message(big: &[u8], small: &[u8]) -> Vec<u8> {
    let mut m = String::from(
        "From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: plans\r\n\
         Message-ID: <plans-1@example.com>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n",
    );
    for (name, ctype, bytes) in [
        ("small.bin", "application/octet-stream", small),
        ("plan.pdf", "application/pdf", big),
        ("plan-copy.pdf", "application/pdf", big),
    ] {
        m.push_str(&format!(
            "--b1\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}",
            b64_lines(bytes)
        ));
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

/// A plain GET, no credentials: what a receiver does with a link.
async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

fn link(v: &Value) -> String {
    v["link"]["url"].as_str().expect("a link").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn big_attachments_and_the_message_travel_as_presigned_links() {
    let s3 = S3Server::start().await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (big, small) = (noise(300 * 1024, 1), noise(2000, 2));
    let raw = message(&big, &small);
    let m = spool(dir.path(), "m1", &raw);
    let sink = WebhookSink::new("hook", settings(&rx.url, offload(&s3, true))).unwrap();
    sink.healthcheck().await.unwrap();
    let key = IdempotencyKey::derive("alice", "m1");
    sink.deliver(&m, &key).await.unwrap();

    let reqs = rx.requests();
    let v: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    let atts = v["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 3);
    // The small one stays inline, with no link.
    assert!(atts[0]["content"].is_string() && atts[0].get("link").is_none());
    let big_sha = hex::encode(Sha256::digest(&big));
    for a in &atts[1..] {
        assert_eq!(a["truncated"], true);
        assert!(a["content"].is_null());
        assert_eq!(a["sha256"], big_sha.as_str());
        assert_eq!(a["size"], big.len());
        assert_eq!(a["content_type"], "application/pdf");
        let url = link(a);
        assert!(url.contains("X-Amz-Expires=3600"), "{url}");
        assert!(a["link"]["expires_at"].is_string());
        // A plain HTTP client gets exactly the attachment's bytes.
        let (status, body) = get(&url).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(body == big, "the linked object differs from the attachment");
    }
    // The message itself: a link instead of `raw`, to the exact bytes fetched.
    assert!(v.get("raw").is_none());
    let (status, body) = get(v["raw_link"]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(body == raw, "the linked message differs");
    // Signed, and valid against the schema.
    python_oracle(SECRET, &reqs);
    // One object per distinct content: the attachment sent twice is stored once.
    assert_eq!(
        s3.object_keys()
            .iter()
            .filter(|k| k.starts_with("offload/"))
            .filter(|k| !k.contains(".metadata"))
            .count(),
        2,
        "{:?}",
        s3.object_keys()
    );
    // Nothing extracted is left in the spool directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_reuses_the_objects_and_signs_fresh_links() {
    let s3 = S3Server::start().await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = noise(200 * 1024, 3);
    let m = spool(dir.path(), "m2", &message(&big, b"x"));
    let sink = WebhookSink::new("hook", settings(&rx.url, offload(&s3, false))).unwrap();
    let key = IdempotencyKey::derive("alice", "m2");
    sink.deliver(&m, &key).await.unwrap();
    let objects = s3.object_keys();
    let stored = std::fs::metadata(
        s3.root
            .join("mail/offload")
            .join(hex::encode(Sha256::digest(&big))),
    )
    .unwrap()
    .modified()
    .unwrap();
    // The signing time has a one-second resolution: let it move on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sink.deliver(&m, &key).await.unwrap();
    assert_eq!(s3.object_keys(), objects, "a retry added objects");
    let again = std::fs::metadata(
        s3.root
            .join("mail/offload")
            .join(hex::encode(Sha256::digest(&big))),
    )
    .unwrap()
    .modified()
    .unwrap();
    assert_eq!(stored, again, "a retry uploaded the object again");
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let urls: Vec<String> = reqs
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["id"], key.as_str());
            link(&v["attachments"][1])
        })
        .collect();
    assert_ne!(
        urls[0], urls[1],
        "the retry must carry a freshly signed link"
    );
    for url in &urls {
        assert_eq!(get(url).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_link_is_refused_and_a_stable_link_base_is_used_as_is() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = OffloadStore::new(offload(&s3, false)).unwrap();
    let path = dir.path().join("blob");
    let bytes = noise(1000, 4);
    std::fs::write(&path, &bytes).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let key = store
        .put(&path, &sha, bytes.len() as u64, "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(key, format!("offload/{sha}"));
    let now = chrono::Utc::now();
    let fresh = store.link_at(&key, now).await.unwrap();
    assert_eq!(get(&fresh.url).await, (200, bytes.clone()));
    // Signed two hours ago with a one-hour expiry: the server refuses it.
    let old = store
        .link_at(&key, now - chrono::Duration::hours(2))
        .await
        .unwrap();
    let (status, body) = get(&old.url).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    // A tampered link (another object) is refused: the signature covers the path.
    let tampered = fresh.url.replace(&sha, &"0".repeat(64));
    assert_eq!(get(&tampered).await.0, 403);
    // The stable form: base + key, no expiry.
    let mut o = offload(&s3, false);
    o.link_base = Some("https://files.example.com/mail/".parse().unwrap());
    let stable = OffloadStore::new(o).unwrap().link(&key).await.unwrap();
    assert_eq!(
        stable.url,
        format!("https://files.example.com/mail/offload/{sha}")
    );
    assert_eq!(stable.expires_at, None);
}
