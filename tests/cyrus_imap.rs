//! Cyrus IMAP 3.6 (Debian 12's, with Debian's settings, run privately: `tests/common/cyrus.rs`)
//! as the IMAP target: it rewrites 8-bit header bytes to `X` (`munge8bit`), keeps personal
//! folders under `INBOX.`, announces `APPENDLIMIT` and answers `NO [TOOBIG]` over it (with a
//! `BYE` in the middle of a `LITERAL+` literal). A proxy that withholds the answer to the first
//! APPEND makes "stored, but the OK never arrived" deterministic; the retry after a restart
//! must leave exactly one copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::imap_target::{
    create_folder, inside_the_namespace_is_stored, one_copy, outside_the_namespace_is_refused,
    plain_sink, spool,
};

use common::cyrus::{cyrus_or_skip, MAX_MESSAGE, PASSWORD, USER};
use popbridge::key::IdempotencyKey;
use popbridge::sink::imap::ImapSink;
use popbridge::sink::Sink;

fn sink(port: u16, folder: &str) -> ImapSink {
    plain_sink("cyrus", port, USER, PASSWORD, folder)
}

const FOLDER: &str = "INBOX.Migrated";

#[tokio::test]
async fn cyrus_crash_after_append_leaves_exactly_one_copy() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    create_folder(&cyrus, sink, FOLDER).await;
    let with_id = "Message-ID: <cyrus-1@example.org>\r\nDate: Mon, 2 Mar 2026 10:11:12 +0100\r\nSubject: plain\r\n\r\nline one\r\nline two\r\n";
    one_copy(&cyrus, sink, FOLDER, "with-id", with_id.as_bytes()).await;
    let without_id = "From: a@example.org\r\nSubject: no id\r\n\r\nonly content\r\ndecides\r\n";
    one_copy(&cyrus, sink, FOLDER, "without-id", without_id.as_bytes()).await;
}

/// `munge8bit`: the stored copy has `X` where our header had 8-bit bytes, and is still
/// recognised as ours after a lost APPEND answer, with and without Message-ID.
#[tokio::test]
async fn cyrus_munged_8bit_headers_are_recognised_as_our_copy() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    create_folder(&cyrus, sink, FOLDER).await;
    for (name, id) in [
        ("8bit-id", "Message-ID: <cyrus-8bit@example.org>\r\n"),
        ("8bit-noid", ""),
    ] {
        let body = format!(
            "{id}From: J\u{fc}rgen <j@example.org>\r\nSubject: Gr\u{fc}\u{df}e {name}\r\n\r\nK\u{f6}rper bleibt 8-bit\r\n"
        );
        let stored = one_copy(&cyrus, sink, FOLDER, name, body.as_bytes()).await;
        let text = String::from_utf8_lossy(&stored);
        assert!(
            text.contains(&format!("Subject: GrXXXXe {name}")) && text.contains("K\u{f6}rper"),
            "Cyrus no longer munges 8-bit headers (only headers): {text}"
        );
    }
}

/// Over `APPENDLIMIT`: refused before a byte is sent, permanently (dead letter), and the
/// session goes on; just under it, a synchronising literal is used and the message stored.
#[tokio::test]
async fn cyrus_too_big_is_permanent_and_refused_before_sending() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    create_folder(&cyrus, sink, FOLDER).await;
    let dir = tempfile::tempdir().unwrap();
    let big = |n: u64, id: &str| {
        let mut m = format!("Message-ID: <{id}@example.org>\r\nSubject: big\r\n\r\n").into_bytes();
        while (m.len() as u64) < n {
            m.extend_from_slice(
                b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXY\r\n",
            );
        }
        m
    };
    let target = sink(cyrus.imap_port, FOLDER);
    let err = target
        .deliver(
            &spool(dir.path(), "huge", &big(5_000_000, "huge"), false),
            &IdempotencyKey::derive("m", "huge"),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("TOOBIG"), "{err}");
    assert!(err.to_string().contains("APPENDLIMIT"), "{err}");
    // The same session still works, and a large message under the limit goes through.
    let large = big(MAX_MESSAGE - 10_000, "large");
    let large_len = large.len();
    let ok = target
        .deliver(
            &spool(dir.path(), "large", &large, false),
            &IdempotencyKey::derive("m", "large"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cyrus.log()));
    assert!(!ok.duplicate);
    assert_eq!(cyrus.stored(FOLDER).len(), 2, "seed and large");
    // Over 64 KiB: a synchronising literal, so the server could have said no first.
    let sent = cyrus.telemetry();
    let appends: Vec<&str> = sent.lines().filter(|l| l.contains(" APPEND ")).collect();
    assert!(
        appends
            .iter()
            .any(|l| l.ends_with(&format!("{{{large_len}}}"))),
        "no synchronising literal for the large message: {appends:?}"
    );
    assert!(
        !appends.iter().any(|l| l.contains("{5000")),
        "the huge message was announced: {appends:?}"
    );
}

/// What the tests above rely on, raw, so a Cyrus upgrade that changes it shows here: the
/// namespace, APPENDLIMIT, and TOOBIG before the bytes of a synchronising literal.
#[test]
fn cyrus_announces_appendlimit_and_refuses_a_sync_literal_before_the_bytes() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    let out = cyrus.imap(
        USER,
        PASSWORD,
        &[
            "NAMESPACE",
            &format!("APPEND INBOX {{{}}}", MAX_MESSAGE * 2),
            "NOOP",
        ],
    );
    assert!(out.contains(&format!("APPENDLIMIT={MAX_MESSAGE}")), "{out}");
    assert!(out.contains("* NAMESPACE ((\"INBOX.\" \".\"))"), "{out}");
    assert!(out.contains("c2 NO [TOOBIG]"), "{out}");
    assert!(out.contains("c3 OK"), "{out}");
}

/// Debian's Cyrus: personal folders live under `INBOX.` with `.` (a top-level CREATE is
/// "Permission denied"); a folder outside it is refused with the name to use instead.
#[tokio::test]
async fn cyrus_folder_outside_the_personal_namespace_names_the_one_to_use_also_at_check() {
    let Some(cyrus) = cyrus_or_skip() else {
        return;
    };
    outside_the_namespace_is_refused(&cyrus, sink).await;
    // `check --connect` says the same before anything is delivered, and is content with the
    // right name.
    let check = sink(cyrus.imap_port, "Migrated/2026")
        .check_login("m")
        .await
        .unwrap_err();
    assert!(
        check.contains("login ok") && check.contains("use folder: \"INBOX.Migrated.2026\""),
        "{check}"
    );
    sink(cyrus.imap_port, "INBOX.Migrated.2026")
        .check_login("m")
        .await
        .unwrap();
    inside_the_namespace_is_stored(&cyrus, sink).await;
}

/// `reject8bit: yes`: Cyrus refuses 8-bit header bytes with a bare `NO` (no response code);
/// the text says it can never succeed, so it is permanent (dead letter), not retried forever.
#[tokio::test]
async fn cyrus_reject8bit_refusal_is_permanent() {
    let Some(cyrus) = common::cyrus::cyrus_with_or_skip("reject8bit: yes\n") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let body = "Message-ID: <r8@example.org>\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nbody\r\n";
    let err = sink(cyrus.imap_port, "INBOX")
        .deliver(
            &spool(dir.path(), "r8", body.as_bytes(), false),
            &IdempotencyKey::derive("m", "r8"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("non-ASCII"), "{err}");
    assert!(!err.is_retryable(), "{err}");
}
