//! Courier-IMAP 5.0.13 (Debian 12's, run privately: `tests/common/courier.rs`) as the IMAP
//! target: it stores LF line ends and compares SEARCH LARGER/SMALLER against them, has no
//! LITERAL+, and keeps personal folders under `INBOX.`. A proxy that withholds the answer to
//! the first APPEND makes "stored, but the OK never arrived" (a crash, a lost connection)
//! deterministic; the retry after a restart must leave exactly one copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::imap_target::{
    create_folder, inside_the_namespace_is_stored, one_copy, outside_the_namespace_is_refused,
    plain_sink,
};

use common::courier::{courier_or_skip, Courier};
use popbridge::sink::imap::ImapSink;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn sink(port: u16, folder: &str) -> ImapSink {
    plain_sink("courier", port, "courieruser", "unused", folder)
}

const FOLDER: &str = "INBOX.Migrated";

/// [`one_copy`] on Courier, which keeps the message with LF line ends.
async fn one_copy_lf(courier: &Courier, name: &str, body: &[u8]) {
    one_copy(courier, sink, FOLDER, name, body).await;
    let lf = String::from_utf8_lossy(body).replace("\r\n", "\n");
    assert!(
        courier.stored(FOLDER).iter().any(|m| m == lf.as_bytes()),
        "Courier keeps the message with LF line ends"
    );
}

#[tokio::test]
async fn courier_crash_after_append_leaves_exactly_one_copy() {
    let Some(courier) = courier_or_skip() else {
        return;
    };
    // Create the folder first (not through the proxy).
    create_folder(&courier, sink, FOLDER).await;
    let with_id = "Message-ID: <courier-1@example.org>\r\nDate: Mon, 2 Mar 2026 10:11:12 +0100\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nline one\r\nline two\r\n";
    one_copy_lf(&courier, "with-id", with_id.as_bytes()).await;
    let without_id = "From: a@example.org\r\nSubject: no id\r\n\r\nonly content\r\ndecides\r\n";
    one_copy_lf(&courier, "without-id", without_id.as_bytes()).await;
}

#[tokio::test]
async fn courier_folder_outside_the_personal_namespace_names_the_one_to_use() {
    let Some(courier) = courier_or_skip() else {
        return;
    };
    outside_the_namespace_is_refused(&courier, sink).await;
    inside_the_namespace_is_stored(&courier, sink).await;
}

/// A raw look at what the tests above rely on, so a Courier upgrade that changes it shows here.
#[tokio::test]
async fn courier_stores_lf_and_has_no_literal_plus() {
    let Some(courier) = courier_or_skip() else {
        return;
    };
    let mut s = TcpStream::connect(("127.0.0.1", courier.port))
        .await
        .unwrap();
    let mut greeting = vec![0; 512];
    let n = s.read(&mut greeting).await.unwrap();
    assert!(greeting[..n].starts_with(b"* PREAUTH"));
    s.write_all(b"a CAPABILITY\r\nb LOGOUT\r\n").await.unwrap();
    let mut out = String::new();
    BufReader::new(s).read_to_string(&mut out).await.unwrap();
    assert!(
        out.contains("UIDPLUS") && out.contains("NAMESPACE"),
        "{out}"
    );
    assert!(!out.contains("LITERAL+"), "{out}");
}
