//! Courier 1.0.16's POP3 server (Debian 12's `courier-pop`, run privately with a real login:
//! `tests/common/courier.rs`) as the source. Courier stores LF line ends (as its delivery agents
//! write them) and serves each LF as CRLF, so a CRLF message stored with LF arrives as the CRLF
//! original: byte for byte. It offers `UTF8` (RFC 6856); without it a message with raw UTF-8
//! headers is served as a "Cannot display Unicode content" wrapper, which the tests capture from
//! the real server and hand to popbridge's detector.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::courier::{courier_pop3_or_skip, CourierPop3, POP3_PASSWORD, POP3_USER};
use common::{mail, Bridge, Mailbox, User};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn user(courier: &CourierPop3) -> User {
    User {
        name: POP3_USER.into(),
        password: POP3_PASSWORD.into(),
        maildir: courier.maildir(),
    }
}

/// A message whose headers carry raw UTF-8 (RFC 6532), as Courier would store it.
fn utf8_headers(id: &str) -> Vec<u8> {
    format!(
        "From: J\u{fc}rgen M\u{fc}ller <j\u{fc}rgen@b\u{fc}ro.example>\r\nTo: rcpt@example.net\r\n\
         Subject: Gr\u{fc}\u{df}e aus K\u{f6}ln \u{1f4ec}\r\nX-Pb-Id: {id}\r\n\
         Message-ID: <{id}@popbridge.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Sch\u{f6}ne Gr\u{fc}\u{df}e.\r\n"
    )
    .into_bytes()
}

/// The corpus (dot-stuffed lines, 8-bit text, base64 and raw 8-bit attachments) arrives byte
/// for byte; a second run adds nothing; `after_delivery` deletes exactly what was delivered and
/// mail that arrives afterwards stays until the next run delivers it.
#[test]
fn courier_pop3_into_maildir_byte_identical_once_then_deleted_after_delivery() {
    let Some(courier) = courier_pop3_or_skip() else {
        return;
    };
    let messages = mail::corpus("courier-pop3", 24);
    for (n, m) in messages.iter().enumerate() {
        courier.seed(n, m);
    }
    let user = user(&courier);

    // delete: never — the server keeps everything, the re-run finds it all and adds nothing.
    let keep = Bridge::plain(courier.port, &[Mailbox::new("courier", &user)]);
    let first = keep.once();
    assert!(first.ok(), "{}\n{}", first.output(), courier.log());
    common::assert_exactly_once(&messages, &keep.delivered("courier"));
    let again = keep.once();
    assert!(again.ok(), "{}", again.output());
    common::assert_exactly_once(&messages, &keep.delivered("courier"));
    assert_eq!(courier.held(), messages.len(), "delete: never deleted");

    // delete: after_delivery (a second installation): everything delivered, then deleted.
    let mut mb = Mailbox::new("courier", &user);
    mb.delete = "after_delivery";
    let del = Bridge::plain(courier.port, &[mb]);
    let run = del.once();
    assert!(run.ok(), "{}\n{}", run.output(), courier.log());
    common::assert_exactly_once(&messages, &del.delivered("courier"));
    assert_eq!(courier.held(), 0, "delivered mail left on the server");

    // Mail that arrives after that run is not touched by it; the next run delivers it once.
    let late = mail::simple("courier-late", "arrived later");
    courier.seed(1000, &late);
    assert_eq!(courier.held(), 1);
    let run = del.once();
    assert!(run.ok(), "{}", run.output());
    let mut all = messages.clone();
    all.push(late);
    common::assert_exactly_once(&all, &del.delivered("courier"));
    assert_eq!(courier.held(), 0);
}

/// A raw POP3 client: greeting, optional `UTF8`, login, then `RETR 1` (dot-unstuffed, CRLF).
fn retr_first(port: u16, utf8: bool) -> Vec<u8> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    let mut status = |r: &mut BufReader<TcpStream>, cmd: Option<&str>| {
        if let Some(cmd) = cmd {
            w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        }
        line.clear();
        r.read_until(b'\n', &mut line).unwrap();
        assert!(
            line.starts_with(b"+OK"),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&line)
        );
    };
    status(&mut r, None);
    if utf8 {
        status(&mut r, Some("UTF8"));
    }
    status(&mut r, Some(&format!("USER {POP3_USER}")));
    status(&mut r, Some(&format!("PASS {POP3_PASSWORD}")));
    status(&mut r, Some("RETR 1"));
    let mut body = Vec::new();
    loop {
        let mut l = Vec::new();
        r.read_until(b'\n', &mut l).unwrap();
        assert!(!l.is_empty(), "connection closed mid-RETR");
        if l == b".\r\n" {
            break;
        }
        body.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
    }
    let mut w = r.into_inner();
    let _ = w.write_all(b"QUIT\r\n");
    body
}

/// `UTF8` on Courier: popbridge sends it (Courier advertises `UTF8 USER`) and the message with
/// raw UTF-8 headers arrives as stored, then leaves the server. Without `UTF8` (a raw client),
/// real Courier serves a different message each time (the "Cannot display Unicode content"
/// wrapper with a new boundary), and `popbridge::pop3::substitute::is_substitute` recognises
/// exactly those bytes, and not the original.
#[test]
fn courier_pop3_utf8_headers_arrive_as_stored_and_the_real_substitute_is_detected() {
    let Some(courier) = courier_pop3_or_skip() else {
        return;
    };
    let original = utf8_headers("courier-utf8");
    courier.seed(0, &original);

    // What real Courier serves without UTF8, and with it.
    let plain1 = retr_first(courier.port, false);
    let plain2 = retr_first(courier.port, false);
    let with_utf8 = retr_first(courier.port, true);
    assert_eq!(
        with_utf8, original,
        "with UTF8 Courier serves the message as stored"
    );
    assert_ne!(
        plain1, original,
        "Courier no longer down-converts: the detector check proves nothing"
    );
    assert_ne!(plain1, plain2, "a new MIME boundary at every RETR");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    for (name, bytes) in [("plain1", &plain1), ("plain2", &plain2)] {
        assert!(
            popbridge::pop3::substitute::is_substitute(&path(name, bytes)),
            "Courier's real substitute is not recognised:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(!popbridge::pop3::substitute::is_substitute(&path(
        "original", &original
    )));
    println!(
        "COURIER SUBSTITUTE without UTF8 ({} bytes for a {}-byte message):\n{}",
        plain1.len(),
        original.len(),
        String::from_utf8_lossy(&plain1)
    );

    // popbridge sends UTF8: the message arrives as stored and, delivered, leaves the server.
    let user = user(&courier);
    let mut mb = Mailbox::new("courier", &user);
    mb.delete = "after_delivery";
    let bridge = Bridge::plain(courier.port, &[mb]);
    let run = bridge.once();
    assert!(run.ok(), "{}\n{}", run.output(), courier.log());
    assert!(
        !run.output().contains("substitute"),
        "UTF8 was not used: {}",
        run.output()
    );
    common::assert_exactly_once(&[original], &bridge.delivered("courier"));
    assert_eq!(courier.held(), 0);
}

/// Every message in `user`'s INBOX on the shared Dovecot, read back with Python's `imaplib`
/// (STARTTLS against the test CA), one base64 line each.
fn dovecot_inbox(dc: &common::Dovecot, user: &User) -> Vec<Vec<u8>> {
    use base64::Engine;
    const READ: &str = r#"
import base64, imaplib, ssl, sys
port, user, password, cafile = sys.argv[1:5]
imap = imaplib.IMAP4("localhost", int(port))
imap.starttls(ssl.create_default_context(cafile=cafile))
imap.login(user, password)
typ, count = imap.select("INBOX", readonly=True)
if int(count[0]) > 0:
    for item in imap.fetch("1:*", "(BODY.PEEK[])")[1]:
        if isinstance(item, tuple):
            print(base64.b64encode(item[1]).decode())
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            READ,
            &dc.imap_port.to_string(),
            &user.name,
            &user.password,
        ])
        .arg(&dc.ca_file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| base64::engine::general_purpose::STANDARD.decode(l).unwrap())
        .collect()
}

/// Courier POP3 -> Dovecot IMAP in one run with `after_delivery`: every message in the target
/// once and byte for byte (Courier's LF storage is CRLF again on the wire, which Dovecot keeps),
/// the Courier mailbox empty.
#[test]
fn courier_pop3_into_dovecot_imap_every_message_once() {
    let Some(courier) = courier_pop3_or_skip() else {
        return;
    };
    let Some(dc) = common::dovecot() else {
        return;
    };
    let messages = mail::corpus("courier-to-imap", 12);
    for (n, m) in messages.iter().enumerate() {
        courier.seed(n, m);
    }
    let dst = dc.add_user("courierdst");
    let user = user(&courier);
    let mut mb = Mailbox::new("courier", &user);
    mb.delete = "after_delivery";
    let bridge = Bridge::plain(courier.port, &[mb]);
    bridge.replace_sinks(&format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: localhost\n    port: {port}\n    tls: starttls\n\
         \x20   ca_file: {ca}\n    folder: INBOX\n    timeout: 10s\n    username: {name}\n\
         \x20   password: \"${{COURIER_DST_IMAP}}\"\n",
        port = dc.imap_port,
        ca = dc.ca_file.display(),
        name = dst.name,
    ));
    let run = bridge.run_with_env(&["once"], &[("COURIER_DST_IMAP", &dst.password)]);
    assert!(run.ok(), "{}\n{}", run.output(), courier.log());
    common::assert_exactly_once(&messages, &dovecot_inbox(dc, &dst));
    assert_eq!(courier.held(), 0, "delivered mail left on Courier");
}

/// A proxy in front of Courier that drops `UTF8` lines from what the server sends (its CAPA
/// answer), as a server or middlebox without RFC 6856 would: popbridge then never sends `UTF8`,
/// and Courier serves its real substitute. One connection at a time, each in two threads.
fn hide_utf8_proxy(port: u16) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut from, mut to) = (BufReader::new(server), client);
                loop {
                    let mut line = Vec::new();
                    if from.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    if !line.starts_with(b"UTF8") && to.write_all(&line).is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// Without `UTF8` (hidden from CAPA by a proxy), the engine meets Courier's real substitute:
/// it is not archived, the original stays on the server (the ASCII message beside it is
/// delivered; its deletion waits for the next poll), and the run says why. Once the server offers `UTF8` again (no proxy),
/// `dlq retry` and a run deliver the original as stored and empty the server.
#[test]
fn courier_pop3_real_substitute_is_kept_on_the_server_not_archived() {
    let Some(courier) = courier_pop3_or_skip() else {
        return;
    };
    let ascii = mail::simple("courier-ascii", "plain");
    let original = utf8_headers("courier-substituted");
    courier.seed(0, &ascii);
    courier.seed(1, &original);
    let user = user(&courier);
    let mut mb = Mailbox::new("courier", &user);
    mb.delete = "after_delivery";
    let proxy = hide_utf8_proxy(courier.port);
    let bridge = Bridge::plain(proxy, &[mb]);
    let run = bridge.once();
    assert!(
        run.output().contains("down-converted substitute"),
        "{}",
        run.output()
    );
    common::assert_exactly_once(std::slice::from_ref(&ascii), &bridge.delivered("courier"));
    // The substitute ends the session without QUIT (a retrieved message is not in every
    // sink), and Courier advertises `LOGIN-DELAY 10`: the ASCII message's DELE waits for the
    // next poll instead of a second login. Nothing at all has left the server yet.
    assert!(
        run.output().contains("deletions wait for the next poll"),
        "{}",
        run.output()
    );
    assert_eq!(courier.held(), 2, "the original stays on Courier");

    let yaml = std::fs::read_to_string(&bridge.config).unwrap();
    let direct = yaml.replace(
        &format!("port: {proxy}\n"),
        &format!("port: {}\n", courier.port),
    );
    assert_ne!(yaml, direct);
    std::fs::write(&bridge.config, direct).unwrap();
    let retry = bridge.run(&["dlq", "retry", "--mailbox", "courier"]);
    assert!(retry.ok(), "{}", retry.output());
    let run = bridge.once();
    assert!(run.ok(), "{}\n{}", run.output(), courier.log());
    common::assert_exactly_once(&[ascii, original], &bridge.delivered("courier"));
    assert_eq!(courier.held(), 0);
}
