//! The IMAP sink against a scripted server, for misbehaviour Dovecot does not produce: the
//! connection dropped after APPEND before the tagged OK, a response line that never ends, and
//! a server without LITERAL+.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use popbridge::key::IdempotencyKey;
use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
use popbridge::sink::{Sink, SpooledMessage};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Store the first APPEND, then close the connection without answering it.
    DropAfterFirstAppend,
    /// After the greeting, send bytes without ever ending the line.
    EndlessLine,
    /// No LITERAL+: APPEND must wait for `+` before sending the message.
    NoLiteralPlus,
}

/// A tiny IMAP server keeping appended messages in memory (UID = index + 1).
async fn serve(mode: Mode) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let st = store.clone();
    tokio::spawn(async move {
        let mut appends = 0;
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            if mode == Mode::EndlessLine {
                let junk = vec![b'x'; 64 * 1024];
                tokio::spawn(async move { while w.write_all(&junk).await.is_ok() {} });
                continue;
            }
            let caps = if mode == Mode::NoLiteralPlus {
                "IMAP4rev1 SASL-IR AUTH=PLAIN"
            } else {
                "IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN"
            };
            w.write_all(format!("* OK [CAPABILITY {caps}] fake\r\n").as_bytes())
                .await
                .unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let (tag, cmd) = line.trim_end().split_once(' ').unwrap();
                let upper = cmd.to_ascii_uppercase();
                let reply = if upper.starts_with("AUTHENTICATE") {
                    format!("{tag} OK [CAPABILITY {caps} UIDPLUS] in\r\n")
                } else if upper.starts_with("SELECT") {
                    format!("* OK [UIDVALIDITY 7] ok\r\n{tag} OK selected\r\n")
                } else if upper.starts_with("UID SEARCH") && upper.contains("HEADER MESSAGE-ID") {
                    let id = cmd.rsplit('"').nth(1).unwrap().to_owned();
                    let uids: Vec<String> = st
                        .lock()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| String::from_utf8_lossy(m).contains(&id))
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    format!("* SEARCH {}\r\n{tag} OK done\r\n", uids.join(" "))
                } else if upper.starts_with("UID SEARCH LARGER") {
                    // Size only (a message without Message-ID and Date): LARGER a SMALLER b.
                    let n: Vec<usize> = cmd.split(' ').filter_map(|w| w.parse().ok()).collect();
                    let uids: Vec<String> = st
                        .lock()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.len() > n[0] && m.len() < n[1])
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    format!("* SEARCH {}\r\n{tag} OK done\r\n", uids.join(" "))
                } else if upper.starts_with("UID FETCH") {
                    let uid: usize = cmd.split(' ').nth(2).unwrap().parse().unwrap();
                    let m = st.lock().unwrap()[uid - 1].clone();
                    if upper.contains("RFC822.SIZE") {
                        format!(
                            "* 1 FETCH (UID {uid} RFC822.SIZE {})\r\n{tag} OK\r\n",
                            m.len()
                        )
                    } else {
                        let mut out =
                            format!("* 1 FETCH (UID {uid} BODY[] {{{}}}\r\n", m.len()).into_bytes();
                        out.extend_from_slice(&m);
                        out.extend_from_slice(format!(")\r\n{tag} OK\r\n").as_bytes());
                        w.write_all(&out).await.unwrap();
                        continue;
                    }
                } else if upper.starts_with("APPEND") {
                    let size: usize = cmd
                        .rsplit('{')
                        .next()
                        .unwrap()
                        .trim_end_matches(['}', '+'])
                        .parse()
                        .unwrap();
                    if cmd.ends_with("+}") == (mode == Mode::NoLiteralPlus) {
                        break; // LITERAL+ used when not offered, or not used when offered
                    }
                    if mode == Mode::NoLiteralPlus {
                        w.write_all(b"+ go\r\n").await.unwrap();
                    }
                    let mut body = vec![0; size + 2];
                    r.read_exact(&mut body).await.unwrap();
                    body.truncate(size);
                    let uid = {
                        let mut s = st.lock().unwrap();
                        s.push(body);
                        s.len()
                    };
                    appends += 1;
                    if appends == 1 && mode == Mode::DropAfterFirstAppend {
                        break; // dropped before the tagged OK
                    }
                    format!("{tag} OK [APPENDUID 7 {uid}] done\r\n")
                } else if upper.starts_with("LOGOUT") {
                    format!("* BYE\r\n{tag} OK\r\n")
                } else {
                    format!("{tag} BAD unknown\r\n")
                };
                if w.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    (port, store)
}

fn sink(port: u16) -> ImapSink {
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\ntls: none\nallow_plaintext_auth: true\nusername: \"{{mailbox}}\"\npassword: pw\ntimeout: 2s\n"
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    ImapSink::new("fake", raw.validate(Path::new("/")).unwrap()).unwrap()
}

fn spool(dir: &Path, body: &[u8]) -> SpooledMessage {
    use sha2::Digest;
    let path = dir.join("m.eml");
    std::fs::write(&path, body).unwrap();
    SpooledMessage {
        mailbox: "user".into(),
        uidl: "u1".into(),
        path,
        size: body.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(body)),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
    }
}

#[tokio::test]
async fn connection_dropped_after_append_then_redelivery_finds_the_message() {
    let (port, store) = serve(Mode::DropAfterFirstAppend).await;
    let dir = tempfile::tempdir().unwrap();
    let msg = spool(
        dir.path(),
        b"Message-ID: <once@test>\r\nSubject: x\r\n\r\nbody\r\n",
    );
    let key = IdempotencyKey::derive("user", "u1");
    let s = sink(port);
    let first = s.deliver(&msg, &key).await;
    assert!(first.unwrap_err().is_retryable());
    let second = s.deliver(&msg, &key).await.unwrap();
    assert!(second.duplicate, "{second:?}");
    assert_eq!(store.lock().unwrap().len(), 1, "appended twice");
}

#[tokio::test]
async fn an_endless_response_line_is_a_retryable_error() {
    let (port, _) = serve(Mode::EndlessLine).await;
    let dir = tempfile::tempdir().unwrap();
    let msg = spool(dir.path(), b"Subject: x\r\n\r\nbody\r\n");
    let err = sink(port)
        .deliver(&msg, &IdempotencyKey::derive("user", "u1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("longer than 65536"), "{err}");
}

#[tokio::test]
async fn without_literal_plus_append_waits_for_the_continuation() {
    let (port, store) = serve(Mode::NoLiteralPlus).await;
    let dir = tempfile::tempdir().unwrap();
    let body = b"Message-ID: <sync@test>\r\nSubject: x\r\n\r\nbody\r\n";
    let msg = spool(dir.path(), body);
    let r = sink(port)
        .deliver(&msg, &IdempotencyKey::derive("user", "u1"))
        .await
        .unwrap();
    assert_eq!(r.detail, "APPENDUID 7 1 in INBOX of user");
    assert_eq!(store.lock().unwrap().as_slice(), &[body.to_vec()]);
}

#[tokio::test]
async fn without_message_id_or_date_the_copy_is_found_by_size_and_content() {
    let (port, store) = serve(Mode::DropAfterFirstAppend).await;
    let dir = tempfile::tempdir().unwrap();
    let s = sink(port);
    let key = IdempotencyKey::derive("user", "u1");
    // Another message of the same size is already there: content must decide.
    let other_dir = tempfile::tempdir().unwrap();
    let other = spool(other_dir.path(), b"Subject: y\r\n\r\nBODY\r\n");
    let msg = spool(dir.path(), b"Subject: x\r\n\r\nbody\r\n");
    // The first APPEND (of `other`) is stored, then the connection drops.
    assert!(s
        .deliver(&other, &IdempotencyKey::derive("user", "u0"))
        .await
        .is_err());
    let mut first = msg.clone();
    first.seen_before = true;
    let r = s.deliver(&first, &key).await.unwrap();
    assert!(
        !r.duplicate,
        "a same-size message with other content is not ours: {r:?}"
    );
    let again = s.deliver(&first, &key).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(store.lock().unwrap().len(), 2);
}
