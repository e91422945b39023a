//! Big mail as stubs (`oversize: stub`) for mailbox targets, against real parts: a Dovecot that
//! announces `APPENDLIMIT` (and enforces it with the quota plugin's `quota_max_mail_size`), the
//! Gmail test server with its size limit lowered, and s3s-fs (SigV4 checked) as the bucket.
//!
//! What matters: the original is in S3 byte for byte, the mailbox gets exactly one stub (with
//! the marker field and a link that returns the original), and a retry after the stub was
//! stored by the target but not confirmed (a crash before the receipt) finds that stub
//! instead of delivering a second one, even when the link settings changed in between.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;
mod support;

use common::dovecot::Dovecot;
use common::imap_target::{spool, withholding_proxy, withholding_proxy_then, AtAnswer};
use common::{Bridge, Mailbox};
use popbridge::key::IdempotencyKey;
use popbridge::sink::gmail::{GmailSettings, GmailSink};
use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
use popbridge::sink::offload::OffloadSettings;
use popbridge::sink::{Receipt, Sink};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use support::gmail::{Fault, GmailServer};
use support::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

/// Dovecot's limit: announced as `APPENDLIMIT` (Dovecot 2.3 does not announce it by itself,
/// so `imap_capability` adds it) and enforced by the quota plugin.
const LIMIT: u64 = 100_000;

static DOVECOT: OnceLock<Option<Dovecot>> = OnceLock::new();

/// The Dovecot of this file (with the limit), or `None` outside CI when it cannot run.
fn limited_dovecot() -> Option<&'static Dovecot> {
    DOVECOT
        .get_or_init(|| match common::dovecot::unavailable() {
            None => Some(Dovecot::start_with_config(&format!(
                "mail_plugins = $mail_plugins quota\n\
                 imap_capability = +APPENDLIMIT={LIMIT}\n\
                 plugin {{\n  quota = count:User quota\n  quota_vsizes = yes\n  \
                 quota_max_mail_size = {LIMIT}B\n}}\n"
            ))),
            Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true and {why}")
            }
            Some(why) => {
                eprintln!("SKIPPED: {why}");
                None
            }
        })
        .as_ref()
}

macro_rules! limited_or_skip {
    () => {
        match limited_dovecot() {
            Some(d) => d,
            None => return,
        }
    };
}

/// A message of about `len` bytes: text and a PDF attachment of noise, base64.
fn big_message(id: &str, len: usize, seed: u64) -> Vec<u8> {
    use base64::Engine;
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    let noise: Vec<u8> = (0..len * 3 / 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&noise);
    let mut m = format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nCc: carol@example.org\r\n\
         Subject: Quarterly report {seed}\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: {id}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b-{seed}\"\r\n\r\n--b-{seed}\r\n\
         Content-Type: text/plain\r\n\r\nThe report is attached.\r\n--b-{seed}\r\n\
         Content-Type: application/pdf; name=\"report.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(format!("--b-{seed}--\r\n").as_bytes());
    m
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn offload(s3: &S3Server, link_expiry: Duration) -> OffloadSettings {
    OffloadSettings {
        s3: s3.settings(),
        prefix: "offload/".into(),
        link_expiry,
        link_base: None,
        raw: false,
    }
}

/// An IMAP sink into `user`'s INBOX at `port` (no TLS), stubbing into `s3`.
fn imap_sink(
    port: u16,
    user: &common::dovecot::User,
    stubs: Option<OffloadSettings>,
    max_message_bytes: Option<u64>,
) -> ImapSink {
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\ntls: none\nallow_plaintext_auth: true\nusername: {}\npassword: {}\ntimeout: 10s\n",
        user.name, user.password
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    let mut settings = raw.validate(Path::new("/")).unwrap();
    settings.stub_offload = stubs;
    settings.max_message_bytes = max_message_bytes;
    ImapSink::new("archive", settings).unwrap()
}

/// Checks a delivered stub of `original`: the marker, the original's fields, the attachment
/// listed, and a link that a plain HTTP client follows to the original's exact bytes.
async fn check_stub(stub: &[u8], original: &[u8], s3: &S3Server) {
    let text = String::from_utf8(stub.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let digest = sha(original);
    assert!(
        head.contains(&format!(
            "X-Popbridge-Stub: sha256={digest}; size={}",
            original.len()
        )),
        "{head}"
    );
    for field in [
        "From: Alice <alice@example.org>",
        "To: bob@example.org",
        "Cc: carol@example.org",
        "Subject: Quarterly report",
        "Date: Tue, 1 Dec 2026 10:00:00 +0000",
        "Message-ID: <",
    ] {
        assert!(head.contains(field), "{field:?} in {head}");
    }
    assert!(body.contains("- report.pdf (application/pdf, "), "{body}");
    assert!(
        (stub.len() as u64) < LIMIT / 10,
        "a stub is small: {} bytes",
        stub.len()
    );
    let link = body
        .lines()
        .find(|l| l.starts_with(&s3.url))
        .unwrap_or_else(|| panic!("no link to {} in {body}", s3.url));
    assert!(
        link.contains(&format!("/{BUCKET}/offload/{digest}?")),
        "{link}"
    );
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let resp = reqwest::get(link).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.bytes().await.unwrap() == original,
        "the link returns the original"
    );
}

/// The original and `sink`'s stub of it in the bucket, nothing else.
async fn check_bucket(s3: &S3Server, original: &[u8], sink: &str) -> Vec<u8> {
    let digest = sha(original);
    let (status, _, stored) = s3.fetch("GET", &format!("offload/{digest}")).await;
    assert_eq!(status, 200);
    assert!(stored == original, "the original is in S3 byte for byte");
    let (status, _, stub) = s3
        .fetch("GET", &format!("offload/stubs/{sink}/{digest}.eml"))
        .await;
    assert_eq!(status, 200);
    let keys: Vec<String> = s3
        .object_keys()
        .into_iter()
        .filter(|k| k.starts_with("offload/"))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    stub
}

/// What Dovecot holds for `user`, with CRLF line ends (its Maildir files have LF).
fn held(dc: &Dovecot, user: &common::dovecot::User) -> Vec<Vec<u8>> {
    dc.list_server_messages(user)
        .into_iter()
        .map(|m| {
            String::from_utf8(m)
                .unwrap()
                .replace("\r\n", "\n")
                .replace('\n', "\r\n")
                .into_bytes()
        })
        .collect()
}

fn is_stub(m: &[u8]) -> bool {
    String::from_utf8_lossy(m).contains("X-Popbridge-Stub: ")
}

#[tokio::test]
async fn a_message_over_appendlimit_goes_to_s3_and_the_mailbox_gets_one_stub() {
    let dc = limited_or_skip!();
    let user = dc.add_user("stubbed");
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<big-1@example.org>", 200_000, 1);
    let small = b"Message-ID: <small-1@example.org>\r\nSubject: small\r\n\r\nfits\r\n";
    let sink = imap_sink(
        dc.imap_port,
        &user,
        Some(offload(&s3, Duration::from_secs(3600))),
        None,
    );
    let receipt = sink
        .deliver(
            &spool(dir.path(), "big", &big, false),
            &IdempotencyKey::derive("m", "big"),
        )
        .await
        .unwrap();
    let stubbed = receipt
        .stub
        .clone()
        .expect("the receipt says it was a stub");
    assert_eq!(
        stubbed.object,
        format!("s3://{BUCKET}/offload/{}", sha(&big))
    );
    assert_eq!(stubbed.size, big.len() as u64);
    assert!(
        !receipt.duplicate && receipt.detail.contains("stub"),
        "{receipt:?}"
    );
    // A message under the limit is appended as it is.
    let plain = sink
        .deliver(
            &spool(dir.path(), "small", small, false),
            &IdempotencyKey::derive("m", "small"),
        )
        .await
        .unwrap();
    assert!(plain.stub.is_none(), "{plain:?}");
    let stored_stub = check_bucket(&s3, &big, "archive").await;
    let mut held = held(dc, &user);
    held.sort_by_key(|m| m.len());
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], small);
    assert!(
        held[1] == stored_stub,
        "the mailbox holds the stored stub's bytes"
    );
    check_stub(&held[1], &big, &s3).await;
    // The receipt as the state keeps it says where the original is.
    let json = serde_json::to_string(&receipt).unwrap();
    let back: Receipt = serde_json::from_str(&json).unwrap();
    assert_eq!(back, receipt);
    assert!(json.contains(&format!("offload/{}", sha(&big))), "{json}");
}

#[tokio::test]
async fn without_oversize_stub_the_message_is_refused_and_nothing_is_stored() {
    let dc = limited_or_skip!();
    let user = dc.add_user("refused");
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<big-2@example.org>", 200_000, 2);
    let err = imap_sink(dc.imap_port, &user, None, None)
        .deliver(
            &spool(dir.path(), "big", &big, false),
            &IdempotencyKey::derive("m", "big"),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("APPENDLIMIT of 100000"), "{err}");
    assert!(dc.list_server_messages(&user).is_empty());
}

/// The target stored the stub, its OK never arrived (a crash before the receipt); a new
/// process with other link settings retries: the stored stub goes again, so the duplicate
/// search finds the one in the folder. One stub, and the receipt says both.
#[tokio::test]
async fn a_retry_after_the_stub_was_appended_unconfirmed_leaves_exactly_one_stub() {
    let dc = limited_or_skip!();
    let user = dc.add_user("stubcrash");
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<big-3@example.org>", 200_000, 3);
    let key = IdempotencyKey::derive("m", "big");
    let proxy = withholding_proxy(dc.imap_port).await;
    // `max_message_bytes` on this first sink: its first APPEND is the stub's, on a fresh
    // session (after an APPENDLIMIT refusal on a kept session the sink would reconnect and
    // find the stub itself, within the process).
    let first = imap_sink(
        proxy,
        &user,
        Some(offload(&s3, Duration::from_secs(3600))),
        Some(LIMIT),
    )
    .deliver(&spool(dir.path(), "big", &big, false), &key)
    .await
    .unwrap_err();
    assert!(first.is_retryable(), "{first:?}");
    assert_eq!(
        dc.list_server_messages(&user).len(),
        1,
        "Dovecot stored the stub"
    );
    let again = imap_sink(
        dc.imap_port,
        &user,
        Some(offload(&s3, Duration::from_secs(7200))),
        None,
    )
    .deliver(&spool(dir.path(), "big", &big, true), &key)
    .await
    .unwrap();
    assert!(again.duplicate && again.stub.is_some(), "{again:?}");
    let held = held(dc, &user);
    assert_eq!(
        held.iter().filter(|m| is_stub(m)).count(),
        1,
        "stubbed twice"
    );
    assert_eq!(held.len(), 1);
    check_bucket(&s3, &big, "archive").await;
    check_stub(&held[0], &big, &s3).await;
}

/// Through the binary: POP3 (Dovecot) → IMAP (the same Dovecot, with its limit) with
/// `oversize: stub`; `once` says a stub was delivered, the mail leaves the POP3 server.
#[tokio::test(flavor = "multi_thread")]
async fn once_delivers_the_stub_and_says_so() {
    let dc = limited_or_skip!();
    let (src, dst) = (dc.add_user("stubsrc"), dc.add_user("stubdst"));
    let big = big_message("<big-4@example.org>", 200_000, 4);
    let small = b"Message-ID: <small-4@example.org>\r\nSubject: small\r\n\r\nfits\r\n".to_vec();
    dc.seed(&src, &[big.clone(), small.clone()]);
    let s3 = S3Server::start().await;
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("alice", &src)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: 127.0.0.1\n    port: {}\n    tls: none\n    \
         allow_plaintext_auth: true\n    username: {}\n    password: \"{}\"\n    oversize: stub\n    \
         offload:\n      s3:\n        bucket: {BUCKET}\n        endpoint: {}\n        access_key_id: {ACCESS_KEY}\n        \
         secret_access_key: \"{SECRET_KEY}\"\n      link_expiry: 7d\n    \
         retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n",
        dc.imap_port, dst.name, dst.password, s3.url
    ));
    let run = bridge.run(&["once"]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    assert!(
        run.stdout
            .contains("alice: 1 message(s) over a target's size limit delivered as a stub"),
        "{}",
        run.output()
    );
    let mut held = held(dc, &dst);
    held.sort_by_key(|m| m.len());
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], small);
    check_stub(&held[1], &big, &s3).await;
    assert!(
        dc.list_server_messages(&src).is_empty(),
        "delivered, so deleted"
    );
    // A second run delivers nothing more.
    let run = bridge.run(&["once"]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    assert_eq!(dc.list_server_messages(&dst).len(), 2);
}

fn imap_stub_sinks(port: u16, dst: &common::dovecot::User, s3: &S3Server, expiry: &str) -> String {
    format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    \
         allow_plaintext_auth: true\n    username: {}\n    password: \"{}\"\n    timeout: 60s\n    oversize: stub\n    \
         offload:\n      s3:\n        bucket: {BUCKET}\n        endpoint: {}\n        access_key_id: {ACCESS_KEY}\n        \
         secret_access_key: \"{SECRET_KEY}\"\n      link_expiry: {expiry}\n    \
         retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n",
        dst.name, dst.password, s3.url
    )
}

/// kill -9 while Dovecot holds the stub and its OK is withheld (the receipt never written),
/// then `once` again with other link settings: exactly one stub, and the message leaves the
/// POP3 server only after that.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_the_stub_was_appended_leaves_exactly_one_stub() {
    let dc = limited_or_skip!();
    let (src, dst) = (dc.add_user("killsrc"), dc.add_user("killdst"));
    let big = big_message("<big-5@example.org>", 200_000, 5);
    dc.seed(&src, std::slice::from_ref(&big));
    let s3 = S3Server::start().await;
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("alice", &src)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    let proxy = withholding_proxy_then(dc.imap_port, AtAnswer::Hang).await;
    bridge.replace_sinks(&imap_stub_sinks(proxy, &dst, &s3, "1h"));
    let mut child = bridge.spawn(&["once"]);
    // Until Dovecot holds the stub (the process then waits for the withheld answer).
    for _ in 0..600 {
        if !dc.list_server_messages(&dst).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dc.list_server_messages(&dst).len(),
        1,
        "the stub was appended"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for the answer"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        dc.list_server_messages(&src).len(),
        1,
        "not deleted without a receipt"
    );
    // The restarted process goes straight to Dovecot, with other link settings.
    let yaml = std::fs::read_to_string(&bridge.config).unwrap().replace(
        &imap_stub_sinks(proxy, &dst, &s3, "1h"),
        &imap_stub_sinks(dc.imap_port, &dst, &s3, "2h"),
    );
    std::fs::write(&bridge.config, yaml).unwrap();
    let run = bridge.run(&["once"]);
    assert_eq!(run.code, Some(0), "{}", run.output());
    let held = held(dc, &dst);
    assert_eq!(
        held.iter().filter(|m| is_stub(m)).count(),
        1,
        "stubbed twice"
    );
    assert_eq!(held.len(), 1);
    check_stub(&held[0], &big, &s3).await;
    assert!(
        dc.list_server_messages(&src).is_empty(),
        "deleted once delivered"
    );
}

const TOKEN: &str = "ya29.stub-token";
const GMAIL_USER: &str = "alice@example.com";

fn gmail_sink(
    server: &GmailServer,
    dir: &Path,
    s3: &S3Server,
    max: u64,
    expiry: Duration,
) -> GmailSink {
    std::fs::write(dir.join("alice.token"), format!("{TOKEN}\n")).unwrap();
    let mut s = GmailSettings::new(
        server.base.parse().unwrap(),
        "{mailbox}@example.com",
        dir.join("{mailbox}.token"),
    )
    .with_stubs(max, offload(s3, expiry));
    s.timeout = Duration::from_millis(1500);
    GmailSink::new("gmail", s).unwrap()
}

/// Two Gmail sinks share the offload bucket: `small` (a low limit) stubs a message, `large`
/// (Gmail's own 150 MB) must import the original even on a retry of a message it may have
/// imported before (`seen_before`), never the other sink's stub.
#[tokio::test]
async fn gmail_a_sink_sharing_the_bucket_with_a_higher_limit_imports_the_original() {
    let (small_server, large_server) = (
        GmailServer::start(TOKEN).await,
        GmailServer::start(TOKEN).await,
    );
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<gbig-3@example.org>", 200_000, 13);
    let key = IdempotencyKey::derive("alice", "big");
    let sink = |server: &GmailServer, name: &str, max: u64| {
        std::fs::write(dir.path().join("alice.token"), format!("{TOKEN}\n")).unwrap();
        let s = GmailSettings::new(
            server.base.parse().unwrap(),
            "{mailbox}@example.com",
            dir.path().join("{mailbox}.token"),
        )
        .with_stubs(max, offload(&s3, Duration::from_secs(3600)));
        GmailSink::new(name, s).unwrap()
    };
    let stubbed = sink(&small_server, "small", LIMIT)
        .deliver(&gmail_spool(dir.path(), &big, false), &key)
        .await
        .unwrap();
    assert!(stubbed.stub.is_some(), "{stubbed:?}");
    let imported = sink(&large_server, "large", 157_286_400)
        .deliver(&gmail_spool(dir.path(), &big, true), &key)
        .await
        .unwrap();
    assert!(imported.stub.is_none(), "{imported:?}");
    let held = large_server.messages(GMAIL_USER);
    assert_eq!(held.len(), 1);
    assert!(held[0].raw == big, "the original, byte for byte");
}

fn gmail_spool(dir: &Path, body: &[u8], seen_before: bool) -> popbridge::sink::SpooledMessage {
    let mut m = spool(dir, "big", body, seen_before);
    m.mailbox = "alice".into();
    m
}

/// Gmail answers 413 to a message over its limit (lowered here from 150 MB): the stub is
/// imported instead, and the account holds only it.
#[tokio::test]
async fn gmail_refusing_a_message_as_too_large_gets_the_stub() {
    let server = GmailServer::start(TOKEN).await;
    server
        .shared
        .max_import
        .store(LIMIT, std::sync::atomic::Ordering::SeqCst);
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<gbig-1@example.org>", 200_000, 11);
    // The sink's own limit is Gmail's 150 MB: the server's 413 is what sends it to the stub.
    let sink = gmail_sink(
        &server,
        dir.path(),
        &s3,
        157_286_400,
        Duration::from_secs(3600),
    );
    let receipt = sink
        .deliver(
            &gmail_spool(dir.path(), &big, false),
            &IdempotencyKey::derive("alice", "big"),
        )
        .await
        .unwrap();
    assert!(receipt.stub.is_some() && !receipt.duplicate, "{receipt:?}");
    let held = server.messages(GMAIL_USER);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].raw, check_bucket(&s3, &big, "gmail").await);
    check_stub(&held[0].raw, &big, &s3).await;
    assert!(held[0].label_ids.contains(&"INBOX".to_string()));
}

/// The import of the stub is stored but never answered; a new process with other link
/// settings finds it by `rfc822msgid:` and content: one stub.
#[tokio::test]
async fn gmail_a_retry_after_an_unanswered_stub_import_leaves_exactly_one_stub() {
    let server = GmailServer::start(TOKEN).await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = big_message("<gbig-2@example.org>", 200_000, 12);
    let key = IdempotencyKey::derive("alice", "big");
    // The sink's own limit: the original is never sent, the only import is the stub's.
    server.fault(Fault::HangAfterStore);
    let first = gmail_sink(&server, dir.path(), &s3, LIMIT, Duration::from_secs(3600))
        .deliver(&gmail_spool(dir.path(), &big, false), &key)
        .await
        .unwrap_err();
    assert!(first.is_retryable(), "{first:?}");
    assert_eq!(
        server.messages(GMAIL_USER).len(),
        1,
        "stored without an answer"
    );
    let again = gmail_sink(&server, dir.path(), &s3, LIMIT, Duration::from_secs(7200))
        .deliver(&gmail_spool(dir.path(), &big, true), &key)
        .await
        .unwrap();
    assert!(again.duplicate && again.stub.is_some(), "{again:?}");
    let held = server.messages(GMAIL_USER);
    assert_eq!(held.len(), 1, "stubbed twice");
    check_bucket(&s3, &big, "gmail").await;
    check_stub(&held[0].raw, &big, &s3).await;
}
