//! The copy search after an unanswered APPEND, against a scripted IMAP server that does to the
//! stored message what real servers do: Courier keeps LF line ends and evaluates LARGER/SMALLER
//! against them, Cyrus rewrites 8-bit header bytes to `X` (munge8bit), a delivery path adds
//! `Received:`/`Return-Path:`. Each must still leave exactly one copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::key::IdempotencyKey;
use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
use popbridge::sink::{Sink, SpooledMessage};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server does to a message it stores.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stores {
    /// CRLF → LF, as Courier's Maildir files; sizes in SEARCH are those of the LF file.
    Lf,
    /// 8-bit header bytes → `X`, as Cyrus with `munge8bit: yes` (its default).
    Munge8bit,
    /// `Return-Path:` and `Received:` put in front.
    AddsHeaders,
}

#[derive(Default)]
struct Server {
    /// `(uid, stored bytes)`.
    messages: Vec<(u32, Vec<u8>)>,
    next_uid: u32,
    appends: usize,
    /// Every command line received.
    log: Vec<String>,
}

fn transform(stores: Stores, body: &[u8]) -> Vec<u8> {
    match stores {
        Stores::Lf => String::from_utf8_lossy(body)
            .replace("\r\n", "\n")
            .into_bytes(),
        Stores::Munge8bit => {
            let end = body
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(body.len());
            let mut out: Vec<u8> = body[..end]
                .iter()
                .map(|&b| if b >= 0x80 { b'X' } else { b })
                .collect();
            out.extend_from_slice(&body[end..]);
            out
        }
        Stores::AddsHeaders => {
            let mut out = b"Return-Path: <sender@example.org>\r\nReceived: from popbridge by imap.example.org;\r\n\tMon, 2 Mar 2026 10:11:12 +0100\r\n".to_vec();
            out.extend_from_slice(body);
            out
        }
    }
}

/// The message as the server serves it (CRLF even when stored with LF).
fn served(stored: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stored).replace("\r\n", "\n");
    text.replace('\n', "\r\n").into_bytes()
}

/// One search key: does the message `(uid, stored bytes)` match?
type Test = Box<dyn Fn(u32, &[u8]) -> bool>;

/// Evaluates the UID SEARCH keys the sink uses (`UID a:*`, `HEADER f "v"`, `LARGER n`,
/// `SMALLER n`, `ALL`); anything else is a BAD.
fn search(messages: &[(u32, Vec<u8>)], criteria: &str) -> Option<Vec<u32>> {
    let mut words = criteria.split(' ').peekable();
    let mut tests: Vec<Test> = Vec::new();
    while let Some(w) = words.next() {
        match w.to_ascii_uppercase().as_str() {
            "ALL" => {}
            "UID" => {
                let (a, b) = words.next()?.split_once(':')?;
                let a: u32 = a.parse().ok()?;
                let last = messages.last().map_or(0, |m| m.0);
                let b: u32 = if b == "*" { last } else { b.parse().ok()? };
                let (lo, hi) = (a.min(b), a.max(b));
                tests.push(Box::new(move |uid, _| uid >= lo && uid <= hi));
            }
            "LARGER" => {
                let n: usize = words.next()?.parse().ok()?;
                tests.push(Box::new(move |_, m| m.len() > n));
            }
            "SMALLER" => {
                let n: usize = words.next()?.parse().ok()?;
                tests.push(Box::new(move |_, m| m.len() < n));
            }
            "HEADER" => {
                let field = words.next()?.to_ascii_lowercase();
                let mut value = words.next()?.to_string();
                while !value.ends_with('"') || value.len() < 2 {
                    value.push(' ');
                    value.push_str(words.next()?);
                }
                let value = value.trim_matches('"').to_ascii_lowercase();
                tests.push(Box::new(move |_, m| {
                    String::from_utf8_lossy(m).lines().any(|l| {
                        l.to_ascii_lowercase()
                            .split_once(':')
                            .is_some_and(|(f, v)| f.trim() == field && v.contains(&value))
                    })
                }));
            }
            _ => return None,
        }
    }
    Some(
        messages
            .iter()
            .filter(|(uid, m)| tests.iter().all(|t| t(*uid, m)))
            .map(|(uid, _)| *uid)
            .collect(),
    )
}

/// Serves until the test ends; the first APPEND is stored and its answer withheld (the
/// connection closes), as after a crash or a lost answer.
async fn serve(stores: Stores) -> (u16, Arc<Mutex<Server>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(Server {
        next_uid: 1,
        ..Default::default()
    }));
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"* PREAUTH [CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS] scripted\r\n")
                    .await
                    .unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    st.lock().unwrap().log.push(line.trim_end().to_string());
                    let Some((tag, cmd)) = line.trim_end().split_once(' ') else {
                        return;
                    };
                    let upper = cmd.to_ascii_uppercase();
                    let reply: Vec<u8> = if upper.starts_with("SELECT") {
                        let next = st.lock().unwrap().next_uid;
                        format!("* OK [UIDVALIDITY 9] ok\r\n* OK [UIDNEXT {next}] ok\r\n{tag} OK [READ-WRITE] selected\r\n").into_bytes()
                    } else if let Some(criteria) = upper.strip_prefix("UID SEARCH ") {
                        let criteria = &cmd[cmd.len() - criteria.len()..];
                        let s = st.lock().unwrap();
                        match search(&s.messages, criteria) {
                            Some(uids) => {
                                let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
                                format!("* SEARCH {}\r\n{tag} OK done\r\n", uids.join(" "))
                                    .into_bytes()
                            }
                            None => format!("{tag} BAD unknown search key\r\n").into_bytes(),
                        }
                    } else if upper.starts_with("UID FETCH") {
                        let uid: u32 = cmd.split(' ').nth(2).unwrap().parse().unwrap();
                        let found = st
                            .lock()
                            .unwrap()
                            .messages
                            .iter()
                            .find(|m| m.0 == uid)
                            .map(|m| served(&m.1));
                        let mut out = Vec::new();
                        if let Some(m) = found {
                            out.extend_from_slice(
                                format!("* 1 FETCH (UID {uid} BODY[] {{{}}}\r\n", m.len())
                                    .as_bytes(),
                            );
                            out.extend_from_slice(&m);
                            out.extend_from_slice(b")\r\n");
                        }
                        out.extend_from_slice(format!("{tag} OK fetched\r\n").as_bytes());
                        out
                    } else if upper.starts_with("APPEND") {
                        let size: usize = cmd
                            .rsplit('{')
                            .next()
                            .unwrap()
                            .trim_end_matches(['}', '+'])
                            .parse()
                            .unwrap();
                        let mut body = vec![0; size + 2];
                        r.read_exact(&mut body).await.unwrap();
                        body.truncate(size);
                        let (uid, first) = {
                            let mut s = st.lock().unwrap();
                            let uid = s.next_uid;
                            s.next_uid += 1;
                            s.messages.push((uid, transform(stores, &body)));
                            s.appends += 1;
                            (uid, s.appends == 1)
                        };
                        if first {
                            return; // stored, answer never sent
                        }
                        format!("{tag} OK [APPENDUID 9 {uid}] done\r\n").into_bytes()
                    } else if upper.starts_with("LOGOUT") {
                        format!("* BYE\r\n{tag} OK\r\n").into_bytes()
                    } else {
                        format!("{tag} BAD unknown\r\n").into_bytes()
                    };
                    if w.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, state)
}

fn sink(port: u16) -> ImapSink {
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\ntls: none\nallow_plaintext_auth: true\nusername: \"{{mailbox}}\"\npassword: pw\ntimeout: 2s\n"
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    ImapSink::new("scripted", raw.validate(Path::new("/")).unwrap()).unwrap()
}

/// `body` spooled in `dir` as UIDL `name` of mailbox `user`.
fn spool(dir: &Path, name: &str, body: &[u8], seen_before: bool) -> SpooledMessage {
    SpooledMessage {
        mailbox: "user".into(),
        seen_before,
        ..support::spool::spool(dir, name, body)
    }
}

const WITH_ID: &[u8] = "Message-ID: <stored-bytes@example.org>\r\nDate: Mon, 2 Mar 2026 10:11:12 +0100\r\nSubject: Gr\u{fc}\u{df}e aus K\u{f6}ln\r\n\r\nline one\r\nline two\r\n"
    .as_bytes();
const WITHOUT_ID: &[u8] =
    "Subject: ohne Kennung \u{e4}\r\nFrom: a@example.org\r\n\r\nno id\r\nat all\r\n".as_bytes();

/// The first APPEND is stored but never answered; the next attempt after a restart (a new
/// sink, the message `seen_before`) must find it and append nothing.
async fn one_copy_after_a_lost_answer(stores: Stores, body: &[u8]) {
    let (port, server) = serve(stores).await;
    let dir = tempfile::tempdir().unwrap();
    let key = IdempotencyKey::derive("user", "u1");
    let first = sink(port)
        .deliver(&spool(dir.path(), "m1", body, false), &key)
        .await;
    assert!(first.unwrap_err().is_retryable());
    assert_eq!(server.lock().unwrap().messages.len(), 1, "stored once");
    // After a restart the sink is new (nothing in memory) and the state knew the message.
    let again = sink(port)
        .deliver(&spool(dir.path(), "m1", body, true), &key)
        .await;
    let s = server.lock().unwrap();
    let receipt = again.unwrap_or_else(|e| panic!("{e}; commands: {:?}", s.log));
    assert_eq!(
        s.messages.len(),
        1,
        "{stores:?}: appended twice; receipt {receipt:?}; commands: {:?}",
        s.log
    );
    assert!(receipt.duplicate, "{receipt:?}");
}

#[tokio::test]
async fn a_copy_stored_with_lf_line_ends_is_found_after_a_crash() {
    one_copy_after_a_lost_answer(Stores::Lf, WITH_ID).await;
}

#[tokio::test]
async fn a_copy_with_munged_8bit_headers_is_found_after_a_crash() {
    one_copy_after_a_lost_answer(Stores::Munge8bit, WITH_ID).await;
}

#[tokio::test]
async fn a_copy_with_added_headers_is_found_after_a_crash() {
    one_copy_after_a_lost_answer(Stores::AddsHeaders, WITH_ID).await;
}

#[tokio::test]
async fn without_message_id_an_lf_copy_is_found_by_content_after_a_crash() {
    one_copy_after_a_lost_answer(Stores::Lf, WITHOUT_ID).await;
}

#[tokio::test]
async fn without_message_id_a_munged_copy_is_found_by_content_after_a_crash() {
    one_copy_after_a_lost_answer(Stores::Munge8bit, WITHOUT_ID).await;
}

#[tokio::test]
async fn after_an_unanswered_append_only_uids_from_uidnext_on_are_searched() {
    let (port, server) = serve(Stores::Lf).await;
    let dir = tempfile::tempdir().unwrap();
    let s = sink(port);
    let key = IdempotencyKey::derive("user", "u1");
    let first = s
        .deliver(&spool(dir.path(), "m1", WITHOUT_ID, false), &key)
        .await;
    assert!(first.is_err());
    let again = s
        .deliver(&spool(dir.path(), "m1", WITHOUT_ID, false), &key)
        .await
        .unwrap();
    assert!(again.duplicate, "{again:?}");
    let s = server.lock().unwrap();
    assert_eq!(s.messages.len(), 1);
    assert!(
        s.log.iter().any(|l| l.ends_with("UID SEARCH UID 1:*")),
        "searched from the UIDNEXT before the APPEND: {:?}",
        s.log
    );
}

#[tokio::test]
async fn a_different_message_with_the_same_message_id_is_not_taken_for_ours() {
    let (port, server) = serve(Stores::Munge8bit).await;
    let dir = tempfile::tempdir().unwrap();
    let s = sink(port);
    let other = String::from_utf8_lossy(WITH_ID).replace("line two", "line 2");
    assert!(s
        .deliver(
            &spool(dir.path(), "m0", other.as_bytes(), false),
            &IdempotencyKey::derive("user", "u0")
        )
        .await
        .is_err());
    let r = s
        .deliver(
            &spool(dir.path(), "m1", WITH_ID, true),
            &IdempotencyKey::derive("user", "u1"),
        )
        .await
        .unwrap();
    assert!(!r.duplicate, "{r:?}");
    assert_eq!(server.lock().unwrap().messages.len(), 2);
}
