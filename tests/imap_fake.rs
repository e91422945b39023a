//! The IMAP sink against a scripted server, for misbehaviour Dovecot does not produce: the
//! connection dropped after APPEND before the tagged OK, a response line that never ends, a
//! server without LITERAL+ (and one chatting before its `+`), PREAUTH, endless AUTHENTICATE
//! challenges, an echoed SASL response, floods of untagged lines or literals, BINARY.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use popbridge::key::IdempotencyKey;
use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
use popbridge::sink::{DeliveryError, Receipt, Sink, SpooledMessage};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A well-behaved server.
    Normal,
    /// Store the first APPEND, then close the connection without answering it.
    DropAfterFirstAppend,
    /// After the greeting, send bytes without ever ending the line.
    EndlessLine,
    /// No LITERAL+: APPEND must wait for `+` before sending the message.
    NoLiteralPlus,
    /// No LITERAL+, and untagged lines (`* 2 EXISTS`, an alert) before the `+`.
    UntaggedBeforeContinuation,
    /// `* PREAUTH` greeting: a LOGIN or AUTHENTICATE is a `BAD`.
    PreAuth,
    /// Every AUTHENTICATE response gets another `+` (up to 1000, then the connection closes).
    EndlessChallenges,
    /// AUTHENTICATE is refused with the initial response echoed in the `NO` text.
    EchoesAuth,
    /// SELECT is answered with 100,000 untagged lines before its OK.
    UntaggedFlood,
    /// SELECT is answered with one untagged line carrying 3,000 literals of 1,000 bytes.
    LiteralFlood,
    /// BINARY offered after login.
    Binary,
    /// APPEND answers are held back until 8 APPENDs arrived on the connection: a client
    /// waiting for each answer before the next APPEND would wait forever.
    HoldAnswers,
    /// On the first connection, the third APPEND is stored and the connection dropped with no
    /// APPEND answered (a window in flight when the link broke).
    DropInWindow,
    /// MULTIAPPEND offered: all messages of one APPEND stored at once, one answer.
    Multi,
    /// MULTIAPPEND offered; on the first connection the messages are stored and the
    /// connection dropped before the answer.
    MultiDrop,
}

type Log = Arc<Mutex<Vec<String>>>;

/// A tiny IMAP server keeping appended messages in memory (UID = index + 1).
async fn serve(mode: Mode) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (port, store, _) = serve_logged(mode).await;
    (port, store)
}

/// [`serve`], also keeping every command line received (per connection: `#n` first).
async fn serve_logged(mode: Mode) -> (u16, Arc<Mutex<Vec<Vec<u8>>>>, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let st = store.clone();
    let log: Log = Arc::default();
    let lg = log.clone();
    tokio::spawn(async move {
        let mut connections = 0;
        let mut appends = 0;
        let mut held = String::new();
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            if mode == Mode::EndlessLine {
                let junk = vec![b'x'; 64 * 1024];
                tokio::spawn(async move { while w.write_all(&junk).await.is_ok() {} });
                continue;
            }
            connections += 1;
            lg.lock().unwrap().push(format!("#{connections}"));
            let synchronising =
                matches!(mode, Mode::NoLiteralPlus | Mode::UntaggedBeforeContinuation);
            let caps = if synchronising {
                "IMAP4rev1 SASL-IR AUTH=PLAIN"
            } else {
                "IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN"
            };
            let after_login = if mode == Mode::Binary {
                format!("{caps} UIDPLUS BINARY")
            } else if matches!(mode, Mode::Multi | Mode::MultiDrop) {
                format!("{caps} UIDPLUS MULTIAPPEND")
            } else {
                format!("{caps} UIDPLUS")
            };
            let greeting = if mode == Mode::PreAuth {
                format!("* PREAUTH [CAPABILITY {after_login}] fake, logged in as user\r\n")
            } else {
                format!("* OK [CAPABILITY {caps}] fake\r\n")
            };
            w.write_all(greeting.as_bytes()).await.unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                lg.lock().unwrap().push(line.trim_end().to_owned());
                let Some((tag, cmd)) = line.trim_end().split_once(' ') else {
                    break;
                };
                let upper = cmd.to_ascii_uppercase();
                let reply = if mode == Mode::PreAuth
                    && (upper.starts_with("AUTHENTICATE") || upper.starts_with("LOGIN"))
                {
                    format!("{tag} BAD already authenticated\r\n")
                } else if mode == Mode::EndlessChallenges && upper.starts_with("AUTHENTICATE") {
                    let mut rounds = 0;
                    let mut answer = String::new();
                    while rounds < 1000 && w.write_all(b"+ \r\n").await.is_ok() {
                        answer.clear();
                        if r.read_line(&mut answer).await.unwrap_or(0) == 0 {
                            break;
                        }
                        rounds += 1;
                    }
                    lg.lock()
                        .unwrap()
                        .push(format!("challenged {rounds} times"));
                    break;
                } else if mode == Mode::EchoesAuth && upper.starts_with("AUTHENTICATE") {
                    let ir = cmd.rsplit(' ').next().unwrap();
                    format!("{tag} NO [AUTHENTICATIONFAILED] cannot decode {ir}\r\n")
                } else if upper.starts_with("AUTHENTICATE") {
                    format!("{tag} OK [CAPABILITY {after_login}] in\r\n")
                } else if upper.starts_with("SELECT") && mode == Mode::UntaggedFlood {
                    let mut out = "* 1 EXISTS\r\n".repeat(100_000);
                    out.push_str(&format!("{tag} OK selected\r\n"));
                    out
                } else if upper.starts_with("SELECT") && mode == Mode::LiteralFlood {
                    let mut out = b"* 1 FETCH (X".to_vec();
                    for _ in 0..3000 {
                        out.extend_from_slice(b" {1000}\r\n");
                        out.extend_from_slice(&[b'y'; 1000]);
                    }
                    out.extend_from_slice(format!(")\r\n{tag} OK selected\r\n").as_bytes());
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                    continue;
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
                } else if upper.starts_with("APPEND")
                    && matches!(mode, Mode::Multi | Mode::MultiDrop)
                {
                    lg.lock().unwrap().push("MULTIAPPEND".into());
                    let mut head = cmd.to_string();
                    let mut bodies = Vec::new();
                    loop {
                        let size: usize = head
                            .rsplit('{')
                            .next()
                            .unwrap()
                            .trim_end_matches(['}', '+'])
                            .parse()
                            .unwrap();
                        let mut body = vec![0; size];
                        r.read_exact(&mut body).await.unwrap();
                        bodies.push(body);
                        head.clear();
                        r.read_line(&mut head).await.unwrap();
                        head = head.trim_end().to_string();
                        if head.is_empty() {
                            break;
                        }
                    }
                    let first = {
                        let mut s = st.lock().unwrap();
                        let first = s.len() + 1;
                        s.extend(bodies.iter().cloned());
                        first
                    };
                    if mode == Mode::MultiDrop && connections == 1 {
                        break;
                    }
                    format!(
                        "{tag} OK [APPENDUID 7 {first}:{}] done\r\n",
                        first + bodies.len() - 1
                    )
                } else if upper.starts_with("APPEND") {
                    let size: usize = cmd
                        .rsplit('{')
                        .next()
                        .unwrap()
                        .trim_end_matches(['}', '+'])
                        .parse()
                        .unwrap();
                    if cmd.ends_with("+}") == synchronising {
                        break; // LITERAL+ used when not offered, or not used when offered
                    }
                    if mode == Mode::UntaggedBeforeContinuation {
                        w.write_all(b"* 2 EXISTS\r\n* OK [ALERT] quota at 90%\r\n")
                            .await
                            .unwrap();
                    }
                    if synchronising {
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
                    if mode == Mode::DropInWindow && connections == 1 {
                        if appends == 3 {
                            break; // nothing of the window answered
                        }
                        continue;
                    }
                    if mode == Mode::HoldAnswers {
                        held.push_str(&format!("{tag} OK [APPENDUID 7 {uid}] done\r\n"));
                        if appends % 8 != 0 {
                            continue;
                        }
                        std::mem::take(&mut held)
                    } else {
                        format!("{tag} OK [APPENDUID 7 {uid}] done\r\n")
                    }
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
    (port, store, log)
}

/// The sink on the fake server at `port`, plain TCP, logging in as the mailbox.
fn sink(port: u16) -> ImapSink {
    sink_with(port, "")
}

/// [`sink`] with `extra` YAML lines.
fn sink_with(port: u16, extra: &str) -> ImapSink {
    build(&format!(
        "host: 127.0.0.1\nport: {port}\ntls: none\nallow_plaintext_auth: true\nusername: \"{{mailbox}}\"\npassword: pw-that-is-long\ntimeout: 2s\n{extra}"
    ))
}

fn build(yaml: &str) -> ImapSink {
    let raw: ImapSinkConfig = yaml_serde::from_str(yaml).unwrap();
    ImapSink::new("fake", raw.validate(Path::new("/")).unwrap()).unwrap()
}

/// `body` spooled in `dir` as UIDL `u1` of mailbox `user`.
fn spool(dir: &Path, body: &[u8]) -> SpooledMessage {
    SpooledMessage {
        mailbox: "user".into(),
        uidl: "u1".into(),
        ..support::spool::spool(dir, "m.eml", body)
    }
}

/// `body` delivered once, as UIDL `u1`, by a new [`sink`] on `port`.
async fn deliver_once(port: u16, body: &[u8]) -> Result<Receipt, DeliveryError> {
    let dir = tempfile::tempdir().unwrap();
    let key = IdempotencyKey::derive("user", "u1");
    sink(port).deliver(&spool(dir.path(), body), &key).await
}

/// `body` delivered once to a server in `mode` is stored as sent, with the APPENDUID receipt.
async fn appended_as_sent(mode: Mode, body: &[u8]) {
    let (port, store) = serve(mode).await;
    let r = deliver_once(port, body).await.unwrap();
    assert_eq!(r.detail, "APPENDUID 7 1 in INBOX of user");
    assert_eq!(store.lock().unwrap().as_slice(), &[body.to_vec()]);
}

/// Every message delivered at once through `sink` (the engine keeps many in flight).
async fn deliver_all(
    sink: &ImapSink,
    msgs: &[(SpooledMessage, IdempotencyKey)],
) -> Vec<Result<Receipt, DeliveryError>> {
    futures_util::future::join_all(msgs.iter().map(|(m, k)| sink.deliver(m, k))).await
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
    let err = deliver_once(port, b"Subject: x\r\n\r\nbody\r\n")
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("longer than 65536"), "{err}");
}

#[tokio::test]
async fn without_literal_plus_append_waits_for_the_continuation() {
    let body = b"Message-ID: <sync@test>\r\nSubject: x\r\n\r\nbody\r\n";
    appended_as_sent(Mode::NoLiteralPlus, body).await;
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

/// A session straight from the library, for what the sink never lets happen (a spool file
/// that vanishes or cannot be read between its checks).
async fn session(port: u16) -> popbridge::imap::Session {
    use popbridge::imap::{ImapAuth, ImapConfig, ImapTls, Session};
    let cfg = ImapConfig {
        host: "127.0.0.1".into(),
        port,
        tls: ImapTls::None,
        auth: ImapAuth::Auto,
        timeout: std::time::Duration::from_secs(2),
        allow_plaintext_auth: true,
    };
    let pw = popbridge::secret::Secret::new("pw");
    let mut s = Session::connect(&cfg, None, "user", &pw).await.unwrap();
    s.select("INBOX").await.unwrap();
    s
}

const DATE: &str = "02-Mar-2026 10:11:12 +0100";

#[tokio::test]
async fn untagged_lines_before_the_continuation_are_skipped() {
    let body = b"Message-ID: <chatty@test>\r\nSubject: x\r\n\r\nbody\r\n";
    appended_as_sent(Mode::UntaggedBeforeContinuation, body).await;
}

#[tokio::test]
async fn a_missing_spool_file_is_found_before_the_literal_is_announced() {
    let (port, store, log) = serve_logged(Mode::Normal).await;
    let dir = tempfile::tempdir().unwrap();
    let body = b"Subject: x\r\n\r\nbody\r\n";
    let path = dir.path().join("m.eml");
    std::fs::write(&path, body).unwrap();
    let mut s = session(port).await;
    let gone = dir.path().join("gone.eml");
    let err = s
        .append("INBOX", &[], DATE, &gone, body.len() as u64)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spooled message"), "{err}");
    assert!(!s.is_broken(), "nothing was announced: the session is fine");
    let uid = s
        .append("INBOX", &[], DATE, &path, body.len() as u64)
        .await
        .unwrap();
    assert_eq!(uid, Some((7, 1)));
    assert_eq!(store.lock().unwrap().as_slice(), &[body.to_vec()]);
    let appends = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("APPEND"))
        .count();
    assert_eq!(appends, 1, "{:?}", log.lock().unwrap());
}

#[tokio::test]
async fn a_spool_read_error_after_the_announcement_breaks_the_session() {
    let (port, store) = serve(Mode::Normal).await;
    let dir = tempfile::tempdir().unwrap();
    // A directory opens like a file and fails on read (EISDIR): after the literal is announced.
    let unreadable = dir.path().join("dir");
    std::fs::create_dir(&unreadable).unwrap();
    let size = std::fs::metadata(&unreadable).unwrap().len();
    let mut s = session(port).await;
    let err = s
        .append("INBOX", &[], DATE, &unreadable, size)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spooled message"), "{err}");
    assert!(
        s.is_broken(),
        "the server is inside the literal: the session must not be used again"
    );
    let path = dir.path().join("m.eml");
    let body = b"Subject: x\r\n\r\nbody\r\n";
    std::fs::write(&path, body).unwrap();
    let next = s
        .append("INBOX", &[], DATE, &path, body.len() as u64)
        .await
        .unwrap_err();
    assert!(next.to_string().contains("dropped"), "{next}");
    assert!(
        store.lock().unwrap().is_empty(),
        "no command became message data"
    );
}

#[tokio::test]
async fn preauth_skips_the_login() {
    let (port, store, log) = serve_logged(Mode::PreAuth).await;
    let body = b"Message-ID: <pre@test>\r\n\r\nbody\r\n";
    let r = deliver_once(port, body).await.unwrap();
    assert_eq!(r.detail, "APPENDUID 7 1 in INBOX of user");
    assert_eq!(store.lock().unwrap().len(), 1);
    let log = log.lock().unwrap();
    assert!(
        !log.iter()
            .any(|l| l.contains("AUTHENTICATE") || l.contains("LOGIN")),
        "{log:?}"
    );
}

#[tokio::test]
async fn preauth_where_starttls_was_required_is_refused() {
    let (port, store, log) = serve_logged(Mode::PreAuth).await;
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\ntls: starttls\nusername: u\npassword: pw\ntimeout: 2s\n"
    );
    let s = build(&yaml);
    let dir = tempfile::tempdir().unwrap();
    let err = s
        .deliver(
            &spool(dir.path(), b"Subject: x\r\n\r\nbody\r\n"),
            &IdempotencyKey::derive("user", "u1"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PREAUTH"), "{err}");
    assert!(store.lock().unwrap().is_empty());
    assert_eq!(
        log.lock().unwrap().as_slice(),
        ["#1"],
        "nothing sent in the clear"
    );
}

#[tokio::test]
async fn endless_authenticate_challenges_end_in_a_clear_error() {
    let (port, _, log) = serve_logged(Mode::EndlessChallenges).await;
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        deliver_once(port, b"Subject: x\r\n\r\nbody\r\n"),
    )
    .await
    .expect("bounded")
    .unwrap_err();
    assert!(err.to_string().contains("still challenged"), "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rounds = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.starts_with("challenged"))
        .cloned();
    assert!(
        matches!(rounds.as_deref(), Some("challenged 8 times") | None),
        "{rounds:?}"
    );
}

#[tokio::test]
async fn an_echoed_sasl_response_never_reaches_the_error() {
    use base64::Engine;
    let (port, _) = serve(Mode::EchoesAuth).await;
    let err = deliver_once(port, b"Subject: x\r\n\r\nbody\r\n")
        .await
        .unwrap_err();
    let sent = base64::engine::general_purpose::STANDARD.encode("\0user\0pw-that-is-long");
    let text = format!("{err} {err:?}");
    assert!(text.contains("rejected the login of user"), "{text}");
    assert!(!text.contains(&sent[..12]), "{text}");
    assert!(!text.contains("pw-that-is-long"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn an_endless_stream_of_untagged_lines_is_an_error() {
    let (port, store) = serve(Mode::UntaggedFlood).await;
    let err = deliver_once(port, b"Subject: x\r\n\r\nbody\r\n")
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("untagged response lines to SELECT"),
        "{err}"
    );
    assert!(store.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_response_line_of_endless_literals_is_an_error() {
    let (port, store) = serve(Mode::LiteralFlood).await;
    let err = deliver_once(port, b"Subject: x\r\n\r\nbody\r\n")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("with its literals"), "{err}");
    assert!(store.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_message_with_nul_goes_as_a_binary_literal_where_the_server_has_binary() {
    let (port, store, log) = serve_logged(Mode::Binary).await;
    let dir = tempfile::tempdir().unwrap();
    let s = sink(port);
    let with_nul = b"Subject: x\r\n\r\nnul \0 here\r\n";
    s.deliver(
        &spool(dir.path(), with_nul),
        &IdempotencyKey::derive("user", "u1"),
    )
    .await
    .unwrap();
    let plain = b"Subject: y\r\n\r\nno nul\r\n";
    s.deliver(
        &spool(dir.path(), plain),
        &IdempotencyKey::derive("user", "u2"),
    )
    .await
    .unwrap();
    assert_eq!(
        store.lock().unwrap().as_slice(),
        &[with_nul.to_vec(), plain.to_vec()]
    );
    let appends: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("APPEND"))
        .cloned()
        .collect();
    assert!(
        appends[0].ends_with(&format!(" ~{{{}+}}", with_nul.len())),
        "{appends:?}"
    );
    assert!(
        appends[1].ends_with(&format!(" {{{}+}}", plain.len())),
        "{appends:?}"
    );
}

#[tokio::test]
async fn without_binary_a_message_with_nul_goes_as_a_normal_literal() {
    let (port, store, log) = serve_logged(Mode::Normal).await;
    let with_nul = b"Subject: x\r\n\r\nnul \0 here\r\n";
    deliver_once(port, with_nul).await.unwrap();
    assert_eq!(store.lock().unwrap().as_slice(), &[with_nul.to_vec()]);
    let log = log.lock().unwrap();
    let append = log.iter().find(|l| l.contains("APPEND")).unwrap();
    assert!(
        append.ends_with(&format!(" {{{}+}}", with_nul.len())),
        "{append}"
    );
}

#[tokio::test]
async fn an_idle_session_closed_for_another_account_is_logged_out() {
    let (port, store, log) = serve_logged(Mode::Normal).await;
    let s = sink_with(port, "max_connections: 1\n");
    let dir = tempfile::tempdir().unwrap();
    for (mailbox, uidl) in [("a", "u1"), ("b", "u2")] {
        let mut m = spool(
            dir.path(),
            format!("Subject: {mailbox}\r\n\r\nbody\r\n").as_bytes(),
        );
        m.mailbox = mailbox.into();
        s.deliver(&m, &IdempotencyKey::derive(mailbox, uidl))
            .await
            .unwrap();
    }
    assert_eq!(store.lock().unwrap().len(), 2);
    let log = log.lock().unwrap().clone();
    let first: Vec<&String> = log.iter().take_while(|l| *l != "#2").collect();
    assert!(
        first.last().is_some_and(|l| l.ends_with(" LOGOUT")),
        "the first account's connection ends with LOGOUT: {log:?}"
    );
}

/// A server that says `+`, then partway through a 4 MB literal answers `NO [TOOBIG]` and
/// closes the connection with our bytes unread (a reset), as Cyrus does over its
/// `maxmessagesize`. Our write fails; the answer already sent must still be read and decide:
/// permanent, not a "connection reset" retried every poll for a day.
#[tokio::test]
async fn a_refusal_sent_before_a_reset_mid_literal_is_read_and_permanent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let appends = Arc::new(Mutex::new(0));
    let seen = appends.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN UIDPLUS] fake\r\n")
                    .await
                    .unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let (tag, cmd) = line.trim_end().split_once(' ').unwrap();
                    let upper = cmd.to_ascii_uppercase();
                    let reply = if upper.starts_with("AUTHENTICATE") {
                        format!("{tag} OK in\r\n")
                    } else if upper.starts_with("SELECT") {
                        format!("* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n{tag} OK selected\r\n")
                    } else if upper.starts_with("APPEND") {
                        *seen.lock().unwrap() += 1;
                        w.write_all(b"+ go\r\n").await.unwrap();
                        let mut part = vec![0; 64 * 1024];
                        r.read_exact(&mut part).await.unwrap();
                        w.write_all(format!("{tag} NO [TOOBIG] Message too big\r\n").as_bytes())
                            .await
                            .unwrap();
                        // Dropped with the rest of the literal unread: the kernel sends RST.
                        return;
                    } else {
                        format!("{tag} BAD unknown\r\n")
                    };
                    w.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut body = b"Subject: big\r\nMessage-ID: <big@test>\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 4 << 20));
    let sink = sink_with(port, "");
    let key = IdempotencyKey::derive("user", "u1");
    let err = sink
        .deliver(&spool(dir.path(), &body), &key)
        .await
        .unwrap_err();
    assert!(
        !err.is_retryable(),
        "a refusal is permanent, not a reset: {err}"
    );
    assert!(err.to_string().contains("TOOBIG"), "{err}");
    assert_eq!(*appends.lock().unwrap(), 1, "sent once");
}

/// `n` distinct small messages for `mailbox`, spooled in `dir`.
fn spool_many(dir: &Path, n: usize) -> Vec<(SpooledMessage, IdempotencyKey)> {
    (0..n)
        .map(|i| {
            let body =
                format!("Subject: m{i}\r\nMessage-ID: <m{i}@pipelined.test>\r\n\r\nbody {i}\r\n");
            let sub = dir.join(format!("{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let mut m = spool(&sub, body.as_bytes());
            m.uidl = format!("u{i}");
            (m, IdempotencyKey::derive("user", &format!("u{i}")))
        })
        .collect()
}

/// Deliveries to one account arriving together (the engine keeps many messages in flight)
/// share one connection with their APPENDs in flight at once: the server answers only after
/// 8 have arrived, which a client waiting for each answer would never see.
#[tokio::test]
async fn appends_to_one_account_are_in_flight_together() {
    let (port, store, log) = serve_logged(Mode::HoldAnswers).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(port);
    let msgs = spool_many(dir.path(), 16);
    let results = deliver_all(&sink, &msgs).await;
    for r in &results {
        let receipt = r.as_ref().unwrap();
        assert!(receipt.detail.starts_with("APPENDUID 7 "), "{receipt:?}");
    }
    assert_eq!(store.lock().unwrap().len(), 16, "each message once");
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().filter(|l| l.starts_with('#')).count(),
        1,
        "one connection"
    );
    assert!(log
        .iter()
        .filter(|l| l.contains(" APPEND "))
        .all(|l| l.ends_with("+}")));
}

/// The connection drops with a window of APPENDs in flight, none answered (the server stored
/// some): delivering them again finds the stored ones and appends only the others, so each
/// message is there exactly once.
#[tokio::test]
async fn a_window_dropped_unanswered_leaves_each_message_once() {
    let (port, store) = serve(Mode::DropInWindow).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(port);
    let msgs = spool_many(dir.path(), 8);
    // Queue all eight behind one delivery, so they go as one window.
    let results = deliver_all(&sink, &msgs).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert!(failed >= 3, "the unanswered ones failed: {results:?}");
    assert!(results.iter().flatten().all(|r| !r.duplicate));
    assert_eq!(
        store.lock().unwrap().len(),
        3,
        "three stored before the drop"
    );
    for ((m, k), r) in msgs.iter().zip(&results) {
        if r.is_err() {
            sink.deliver(m, k).await.unwrap();
        }
    }
    let stored = store.lock().unwrap();
    for (m, _) in &msgs {
        let body = std::fs::read(&m.path).unwrap();
        assert_eq!(
            stored.iter().filter(|s| **s == body).count(),
            1,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// Where the server offers MULTIAPPEND (RFC 3502) a window goes as one APPEND of many
/// messages (Dovecot stores them in one transaction), each getting its own UID from the
/// answer's uid-set.
#[tokio::test]
async fn a_window_goes_as_one_multiappend_where_offered() {
    let (port, store, log) = serve_logged(Mode::Multi).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(port);
    let msgs = spool_many(dir.path(), 10);
    let results = deliver_all(&sink, &msgs).await;
    let mut uids: Vec<String> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .detail
                .split(' ')
                .nth(2)
                .unwrap()
                .to_string()
        })
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 10, "one UID each: {results:?}");
    assert_eq!(store.lock().unwrap().len(), 10);
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().filter(|l| *l == "MULTIAPPEND").count(),
        1,
        "{log:?}"
    );
}

/// The answer to a MULTIAPPEND is lost after the server stored every message: delivering
/// them again finds each one, so nothing is there twice.
#[tokio::test]
async fn a_multiappend_without_an_answer_leaves_each_message_once() {
    let (port, store) = serve(Mode::MultiDrop).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(port);
    let msgs = spool_many(dir.path(), 6);
    let results = deliver_all(&sink, &msgs).await;
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert_eq!(store.lock().unwrap().len(), 6, "stored before the drop");
    for (m, k) in &msgs {
        let again = sink.deliver(m, k).await.unwrap();
        assert!(again.duplicate, "{again:?}");
    }
    assert_eq!(store.lock().unwrap().len(), 6, "nothing appended twice");
}
