//! The IMAP APPEND sink through the binary, POP3 → IMAP on one real Dovecot: several
//! mailboxes into several accounts from one sink block, the folder created on first use,
//! INTERNALDATE and flags, byte-identical copies, kill -9 during a migration, the IMAP server
//! down for a while, a wrong target password; through the library, a NUL byte (BINARY APPEND)
//! and LOGOUT of an idle session. What arrived is read back with Python's imaplib, an
//! independent client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_exactly_once, mail, Bridge, Dovecot, Mailbox, User};
use std::process::Command;
use std::time::Duration;

const ORACLE: &str = r#"
import base64, imaplib, json, re, ssl, sys
host, port, user, password, cafile, folder = sys.argv[1:7]
imap = imaplib.IMAP4(host, int(port))
imap.starttls(ssl.create_default_context(cafile=cafile))
imap.login(user, password)
typ, count = imap.select('"%s"' % folder, readonly=True)
out = []
if typ == "OK" and int(count[0]) > 0:
    typ, data = imap.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple):
            meta = item[0].decode()
            flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
            date = re.search(r'INTERNALDATE "([^"]+)"', meta).group(1)
            out.append({"flags": flags, "date": date, "body": base64.b64encode(item[1]).decode()})
print(json.dumps({"selected": typ == "OK", "messages": out}))
"#;

struct Stored {
    flags: Vec<String>,
    date: String,
    body: Vec<u8>,
}

/// The messages in `folder` of `user`, through imaplib over STARTTLS; `None` if no folder.
fn imap_folder(dc: &Dovecot, user: &User, folder: &str) -> Option<Vec<Stored>> {
    use base64::Engine;
    let out = Command::new("python3")
        .arg("-c")
        .arg(ORACLE)
        .args([
            "localhost",
            &dc.imap_port.to_string(),
            &user.name,
            &user.password,
        ])
        .arg(&dc.ca_file)
        .arg(folder)
        .output()
        .expect("python3 runs the imaplib oracle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if !v["selected"].as_bool().unwrap() {
        return None;
    }
    Some(
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Stored {
                flags: m["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
                date: m["date"].as_str().unwrap().to_string(),
                body: base64::engine::general_purpose::STANDARD
                    .decode(m["body"].as_str().unwrap())
                    .unwrap(),
            })
            .collect(),
    )
}

/// An IMAP sink block into `folder`; `accounts` is YAML for the `accounts:` map (or empty).
fn imap_sink(dc: &Dovecot, port: u16, folder: &str, extra: &str) -> String {
    format!(
        "sinks:\n  - name: archive\n    type: imap\n    host: localhost\n    port: {port}\n    tls: starttls\n\
         \x20   ca_file: {ca}\n    folder: {folder}\n    timeout: 10s\n\
         \x20   retry: {{ attempts_per_poll: 2, initial_backoff: 5ms, max_backoff: 20ms, window: 1h }}\n{extra}",
        ca = dc.ca_file.display()
    )
}

fn with_received(messages: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    messages
        .into_iter()
        .map(|m| {
            let mut out =
                b"Received: from mx.example.org by pop.example.org with ESMTP;\r\n\tMon, 2 Mar 2026 10:11:12 +0100\r\n"
                    .to_vec();
            out.extend_from_slice(&m);
            out
        })
        .collect()
}

/// One POP3 mailbox (`n` corpus messages, `delete: after_delivery`) and one IMAP account; the
/// `extra` sink keys log in to it with the password from `DST_IMAP`.
fn one_mailbox(dc: &Dovecot, tag: &str, n: usize) -> (User, User, Bridge, Vec<Vec<u8>>, String) {
    let src = dc.add_user(&format!("{tag}src"));
    let dst = dc.add_user(&format!("{tag}dst"));
    let messages = mail::corpus(tag, n);
    dc.seed(&src, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new(tag, &src)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    let extra = format!(
        "    username: {}\n    password: \"${{DST_IMAP}}\"\n",
        dst.name
    );
    (src, dst, bridge, messages, extra)
}

#[test]
fn mailboxes_migrate_into_their_own_accounts_from_one_sink_block() {
    let dc = dovecot_or_skip!();
    let (src_a, src_b) = (dc.add_user("imsrca"), dc.add_user("imsrcb"));
    let (dst_a, dst_b) = (dc.add_user("imdsta"), dc.add_user("imdstb"));
    let (msgs_a, msgs_b) = (
        with_received(mail::corpus("ima", 12)),
        mail::corpus("imb", 9),
    );
    dc.seed(&src_a, &msgs_a);
    dc.seed(&src_b, &msgs_b);
    // Mailbox A is named after its target account and uses the templates; B has an entry.
    let mb_a = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new(&dst_a.name, &src_a)
    };
    let mb_b = Mailbox::new("bob", &src_b);
    let bridge = Bridge::new(dc, &[mb_a, mb_b]);
    let pw_dir = bridge.dir.path().join("pw");
    std::fs::create_dir_all(&pw_dir).unwrap();
    std::fs::write(pw_dir.join(&dst_a.name), format!("{}\n", dst_a.password)).unwrap();
    bridge.replace_sinks(
        &imap_sink(
            dc,
            dc.imap_port,
            "Migrated",
            &format!(
                "    username: \"{{mailbox}}\"\n    password_file: ./pw/{{mailbox}}\n    flags: [\"\\\\Seen\"]\n\
                 \x20   accounts:\n      bob: {{ username: {}, password: \"${{BOB_IMAP}}\" }}\n",
                dst_b.name
            ),
        ),
    );
    let run = bridge.run_with_env(&["once"], &[("BOB_IMAP", &dst_b.password)]);
    assert!(run.ok(), "{}", run.output());
    assert!(
        !run.output().contains(&dst_b.password),
        "no IMAP password in the output"
    );

    let a = imap_folder(dc, &dst_a, "Migrated").expect("folder created on first use");
    let b = imap_folder(dc, &dst_b, "Migrated").expect("folder created on first use");
    let bodies = |s: &[Stored]| s.iter().map(|m| m.body.clone()).collect::<Vec<_>>();
    assert_exactly_once(&msgs_a, &bodies(&a));
    assert_exactly_once(&msgs_b, &bodies(&b));
    for m in a.iter().chain(&b) {
        assert_eq!(m.flags, ["\\Seen"], "flags as configured");
    }
    // INTERNALDATE: the first Received: header (the same instant; Dovecot shows it in its own
    // zone); without one, the fetch time.
    let instant = |d: &str| chrono::DateTime::parse_from_str(d, "%d-%b-%Y %H:%M:%S %z").unwrap();
    let received = instant("02-Mar-2026 10:11:12 +0100");
    assert!(
        a.iter().all(|m| instant(&m.date) == received),
        "{:?}",
        a[0].date
    );
    let now = chrono::Utc::now();
    assert!(b
        .iter()
        .all(|m| (now - instant(&m.date).to_utc()).num_minutes().abs() < 10));
    assert!(
        dc.list_server_messages(&src_a).is_empty(),
        "after_delivery emptied A"
    );
    assert_eq!(
        dc.list_server_messages(&src_b).len(),
        msgs_b.len(),
        "B keeps its mail"
    );

    // A second pass appends nothing.
    let again = bridge.run_with_env(&["once"], &[("BOB_IMAP", &dst_b.password)]);
    assert!(again.ok(), "{}", again.output());
    assert_eq!(
        imap_folder(dc, &dst_b, "Migrated").unwrap().len(),
        msgs_b.len()
    );
}

#[test]
fn kill_9_during_a_migration_leaves_exactly_one_copy_of_each_message() {
    let dc = dovecot_or_skip!();
    let src = dc.add_user("imkillsrc");
    let dst = dc.add_user("imkilldst");
    let messages = mail::corpus("imkill", 300);
    dc.seed(&src, &messages);
    let mailbox = Mailbox {
        delete: "after_delivery",
        ..Mailbox::new("kill", &src)
    };
    let bridge = Bridge::new(dc, &[mailbox]);
    bridge.replace_sinks(&imap_sink(
        dc,
        dc.imap_port,
        "INBOX",
        &format!(
            "    username: {}\n    password: \"${{KILL_DST_IMAP}}\"\n",
            dst.name
        ),
    ));
    // `spawn` passes no extra environment: the children inherit this (test-unique) variable.
    std::env::set_var("KILL_DST_IMAP", &dst.password);
    let env = [("KILL_DST_IMAP", dst.password.as_str())];
    let mut kills = 0;
    for round in 0..40u64 {
        let mut child = bridge.spawn(&["once"]);
        std::thread::sleep(Duration::from_millis(60 + (round * 37) % 250));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Anything gone from the POP3 server must already be in the target.
        let on_server = dc.list_server_messages(&src).len();
        let in_target = imap_folder(dc, &dst, "INBOX").unwrap().len();
        assert!(
            in_target + on_server >= messages.len(),
            "lost mail after kill {kills}"
        );
    }
    let run = bridge.run_with_env(&["once"], &env);
    assert!(run.ok(), "{}", run.output());
    let stored: Vec<Vec<u8>> = imap_folder(dc, &dst, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert!(kills > 0, "the test must kill at least once");
    assert_exactly_once(&messages, &stored);
    assert!(dc.list_server_messages(&src).is_empty());
}

#[test]
fn with_the_imap_server_down_nothing_leaves_pop3_until_it_is_back() {
    let dc = dovecot_or_skip!();
    let (src, dst, bridge, messages, extra) = one_mailbox(dc, "imdown", 6);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = [("DST_IMAP", dst.password.as_str())];
    bridge.replace_sinks(&imap_sink(dc, closed_port, "INBOX", &extra));
    let run = bridge.run_with_env(&["once"], &env);
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(
        run.output().contains("cannot connect to IMAP server"),
        "{}",
        run.output()
    );
    assert_eq!(
        dc.list_server_messages(&src).len(),
        messages.len(),
        "no DELE before APPEND"
    );

    let yaml = std::fs::read_to_string(&bridge.config).unwrap();
    std::fs::write(
        &bridge.config,
        yaml.replace(
            &format!("port: {closed_port}\n"),
            &format!("port: {}\n", dc.imap_port),
        ),
    )
    .unwrap();
    let run = bridge.run_with_env(&["once"], &env);
    assert!(run.ok(), "{}", run.output());
    let stored: Vec<Vec<u8>> = imap_folder(dc, &dst, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_exactly_once(&messages, &stored);
    assert!(dc.list_server_messages(&src).is_empty());
}

/// A wrong target password costs one login for the whole run, not one per message (servers
/// add a penalty per failure: Courier's 5 s made a run of 150 messages take 13 minutes), is
/// logged at once, keeps every message on the POP3 server, and leaves the other account
/// alone. `check --connect` logs in to each target account and says which one fails.
#[test]
fn a_wrong_target_password_is_one_login_a_clear_error_and_keeps_the_mail() {
    let dc = dovecot_or_skip!();
    let (src, dst) = (dc.add_user("imwrongsrc"), dc.add_user("imwrongdst"));
    let (src_ok, dst_ok) = (dc.add_user("imwrongoksrc"), dc.add_user("imwrongokdst"));
    dc.seed(&src, &mail::corpus("imwrong", 20));
    dc.seed(&src_ok, &mail::corpus("imwrongok", 3));
    let bridge = Bridge::new(
        dc,
        &[
            Mailbox {
                delete: "after_delivery",
                ..Mailbox::new("imwrong", &src)
            },
            Mailbox::new("imwrongok", &src_ok),
        ],
    );
    std::fs::write(
        bridge.dir.path().join("ok.pw"),
        format!("{}\n", dst_ok.password),
    )
    .unwrap();
    let extra = format!(
        "    username: {}\n    password: \"${{DST_IMAP}}\"\n    accounts:\n      imwrongok: {{ username: {}, password_file: ./ok.pw }}\n",
        dst.name, dst_ok.name
    );
    bridge.replace_sinks(&imap_sink(dc, dc.imap_port, "INBOX", &extra));
    let env = [("DST_IMAP", "not-the-password")];

    let run = bridge.run_with_env(&["once"], &env);
    assert_eq!(run.code, Some(1), "{}", run.output());
    let out = run.output();
    assert!(
        !out.contains("not-the-password"),
        "the password never appears"
    );
    let first = out
        .lines()
        .find(|l| l.contains("Target account refused the login"))
        .unwrap_or_else(|| panic!("the refused login is logged: {out}"));
    assert!(first.contains("ERROR"), "at error level: {first}");
    assert!(
        first.contains(&dst.name) && first.contains(&format!("localhost:{}", dc.imap_port)),
        "names the account and the server: {first}"
    );
    assert!(
        out.contains(&format!("rejected the login of {}", dst.name)),
        "says which account failed: {out}"
    );
    // Dovecot writes its log asynchronously.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dc.failed_logins(&dst.name) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        dc.failed_logins(&dst.name),
        1,
        "one login for 20 messages, then the account backs off"
    );
    assert_eq!(dc.list_server_messages(&src).len(), 20, "nothing deleted");
    assert_eq!(
        dc.list_server_messages(&dst_ok).len(),
        3,
        "the other account got its mail"
    );

    let check = bridge.run_with_env(&["check", "--connect"], &env);
    assert_eq!(check.code, Some(1), "{}", check.output());
    let line = |account: &str| {
        check
            .stdout
            .lines()
            .find(|l| l.contains(&format!("account {account} ")))
            .unwrap_or_else(|| panic!("a line for {account}: {}", check.output()))
            .to_string()
    };
    let bad = line(&dst.name);
    assert!(
        bad.contains("FAILED") && bad.contains("rejected the login"),
        "{bad}"
    );
    assert!(
        line(&dst_ok.name).ends_with("login ok"),
        "{}",
        check.output()
    );
    assert!(!check.output().contains("not-the-password"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        dc.failed_logins(&dst.name),
        2,
        "check --connect really logged in (one more refusal at Dovecot)"
    );
}

#[test]
fn a_target_with_an_untrusted_certificate_is_refused_before_login() {
    let dc = dovecot_or_skip!();
    let (src, dst, bridge, _, extra) = one_mailbox(dc, "imcert", 2);
    // The sink trusts a CA that did not sign Dovecot's certificate.
    let sink = imap_sink(dc, dc.imap_port, "INBOX", &extra).replace(
        &format!("ca_file: {}", dc.ca_file.display()),
        &format!("ca_file: {}", dc.other_ca_file.display()),
    );
    bridge.replace_sinks(&sink);
    let run = bridge.run_with_env(&["once"], &[("DST_IMAP", &dst.password)]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(run.output().contains("TLS failed"), "{}", run.output());
    assert!(!run.output().contains(&dst.password));
    assert_eq!(dc.list_server_messages(&src).len(), 2, "nothing deleted");
    let logins = dc.log().matches(&format!("user=<{}>", dst.name)).count();
    assert_eq!(
        logins, 0,
        "no login attempt reached Dovecot for {}",
        dst.name
    );
}

/// An `ImapSink` from the library, logging in to `dst` on the shared Dovecot.
fn library_sink(dc: &Dovecot, dst: &User, extra: &str) -> popbridge::sink::imap::ImapSink {
    use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
    let yaml = format!(
        "host: localhost\nport: {}\ntls: starttls\nca_file: {}\nusername: \"{{mailbox}}\"\npassword: \"{}\"\ntimeout: 10s\n{extra}",
        dc.imap_port,
        dc.ca_file.display(),
        dst.password
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    ImapSink::new("archive", raw.validate(std::path::Path::new("/")).unwrap()).unwrap()
}

fn spooled(dir: &std::path::Path, mailbox: &str, body: &[u8]) -> popbridge::sink::SpooledMessage {
    use sha2::Digest;
    let path = dir.join(format!("{mailbox}.eml"));
    std::fs::write(&path, body).unwrap();
    popbridge::sink::SpooledMessage {
        mailbox: mailbox.into(),
        uidl: "u1".into(),
        path,
        size: body.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(body)),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
        owner: Default::default(),
        params: Default::default(),
    }
}

/// Dovecot offers BINARY after login, so this APPEND goes as `~{n}` (the wire form is checked
/// in `imap_fake.rs`; Dovecot also stores a NUL sent in a normal literal).
#[tokio::test]
async fn a_message_with_nul_is_stored_with_its_nul() {
    use popbridge::sink::Sink;
    let dc = dovecot_or_skip!();
    let dst = dc.add_user("imnul");
    let body = b"Subject: nul\r\nMessage-ID: <nul@test>\r\n\r\nbefore \0 after\r\n".to_vec();
    let dir = tempfile::tempdir().unwrap();
    let sink = library_sink(dc, &dst, "");
    let msg = spooled(dir.path(), &dst.name, &body);
    let key = popbridge::key::IdempotencyKey::derive(&dst.name, "u1");
    sink.deliver(&msg, &key).await.unwrap();
    let stored = dc.list_server_messages(&dst);
    assert_eq!(stored.len(), 1);
    // Dovecot's Maildir keeps LF line ends.
    let lf = String::from_utf8_lossy(&body).replace("\r\n", "\n");
    assert_eq!(
        String::from_utf8_lossy(&stored[0]),
        lf,
        "stored as sent, NUL included"
    );
}

/// A replica takes over a mailbox whose previous owner appended a message and died before
/// recording it: the new owner's IMAP session, kept open with the folder selected since its
/// own earlier deliveries, must look in a fresh view of the folder. Dovecot answers SEARCH
/// from the session's view, which does not show what another session appended since.
#[tokio::test]
async fn a_kept_session_finds_a_copy_another_process_appended_since() {
    use popbridge::sink::Sink;
    let dc = dovecot_or_skip!();
    let dst = dc.add_user("imkept");
    let dir = tempfile::tempdir().unwrap();
    let new_owner = library_sink(dc, &dst, "");
    let old_owner = library_sink(dc, &dst, "");
    let dir2 = tempfile::tempdir().unwrap();
    let first = spooled(
        dir.path(),
        &dst.name,
        b"Subject: first\r\nMessage-ID: <kept-1@test>\r\n\r\none\r\n",
    );
    let key = |n: &str| popbridge::key::IdempotencyKey::derive(&dst.name, n);
    // The new owner's session: INBOX selected, kept.
    new_owner.deliver(&first, &key("1")).await.unwrap();
    // The old owner appends the next message, then its receipt is lost.
    let body = b"Subject: second\r\nMessage-ID: <kept-2@test>\r\n\r\ntwo\r\n";
    let mut second = spooled(dir2.path(), &dst.name, body);
    old_owner.deliver(&second, &key("2")).await.unwrap();
    // The new owner retries it: the state knew it, so it looks for a copy first.
    second.seen_before = true;
    let receipt = new_owner.deliver(&second, &key("2")).await.unwrap();
    assert!(receipt.duplicate, "appended again: {receipt:?}");
    assert_eq!(dc.list_server_messages(&dst).len(), 2);
}

/// A replica paused past its lease wakes up with this delivery queued: it is not appended (the
/// new owner appends it), and goes out once the mailbox is owned again.
#[tokio::test]
async fn a_delivery_whose_mailbox_changed_owner_is_not_appended() {
    use popbridge::sink::{DeliveryError, Ownership, Sink};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dc = dovecot_or_skip!();
    let dst = dc.add_user("imown");
    let dir = tempfile::tempdir().unwrap();
    let sink = library_sink(dc, &dst, "");
    let owned = Arc::new(AtomicBool::new(false));
    let flag = owned.clone();
    let mut msg = spooled(
        dir.path(),
        &dst.name,
        b"Subject: owner\r\nMessage-ID: <owner@test>\r\n\r\nbody\r\n",
    );
    msg.owner = Ownership::new(move || flag.load(Ordering::SeqCst));
    let key = popbridge::key::IdempotencyKey::derive(&dst.name, "u1");
    match sink.deliver(&msg, &key).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("lease"), "{message}")
        }
        other => panic!("expected a retryable refusal, got {other:?}"),
    }
    assert!(
        dc.list_server_messages(&dst).is_empty(),
        "appended without the lease"
    );
    owned.store(true, Ordering::SeqCst);
    sink.deliver(&msg, &key).await.unwrap();
    assert_eq!(dc.list_server_messages(&dst).len(), 1);
}

#[tokio::test]
async fn an_idle_session_closed_for_another_account_logs_out_at_dovecot() {
    use popbridge::sink::Sink;
    let dc = dovecot_or_skip!();
    let (a, b) = (dc.add_user("imlogouta"), dc.add_user("imlogoutb"));
    let accounts = format!(
        "max_connections: 1\naccounts:\n  {b}: {{ username: {b}, password: \"{pw}\" }}\n",
        b = b.name,
        pw = b.password
    );
    let sink = library_sink(dc, &a, &accounts);
    let dir = tempfile::tempdir().unwrap();
    for user in [&a, &b] {
        let msg = spooled(dir.path(), &user.name, b"Subject: hi\r\n\r\nbody\r\n");
        let key = popbridge::key::IdempotencyKey::derive(&user.name, "u1");
        sink.deliver(&msg, &key).await.unwrap();
    }
    // The evicted session logs out in the background.
    let ended = |log: &str| {
        log.lines()
            .find(|l| l.contains(&format!("imap({})", a.name)) && !l.contains("Login"))
            .map(str::to_owned)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ended(&dc.log()).is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = ended(&dc.log()).expect("Dovecot logged the end of the first session");
    assert!(line.contains("Logged out"), "{line}");
}

/// `once` ends its IMAP sessions with LOGOUT, not by dropping the connection.
#[test]
fn a_run_logs_out_of_the_target_at_its_end() {
    let dc = dovecot_or_skip!();
    let (_src, dst, bridge, _messages, extra) = one_mailbox(dc, "imbye", 2);
    let env = [("DST_IMAP", dst.password.as_str())];
    bridge.replace_sinks(&imap_sink(dc, dc.imap_port, "INBOX", &extra));
    let run = bridge.run_with_env(&["once"], &env);
    assert!(run.ok(), "{}", run.output());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let ended = || {
        dc.log()
            .lines()
            .filter(|l| l.contains(&format!("imap({})", dst.name)) && !l.contains("Login"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    while ended().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = ended();
    assert!(!lines.is_empty(), "Dovecot logged the end of the session");
    assert!(lines.iter().all(|l| l.contains("Logged out")), "{lines:#?}");
}

const NAMESPACE_AND_LIST: &str = r#"
import imaplib, json, re, ssl, sys
host, port, user, password, cafile = sys.argv[1:6]
imap = imaplib.IMAP4(host, int(port))
imap.starttls(ssl.create_default_context(cafile=cafile))
imap.login(user, password)
typ, ns = imap.namespace()
m = re.match(r'\(\("([^"]*)" "(.)"\)', ns[0].decode())
typ, listed = imap.list()
print(json.dumps({"prefix": m.group(1), "sep": m.group(2), "list": [l.decode() for l in listed]}))
"#;

/// The personal namespace prefix and separator of `user`, and its LIST lines (raw, as sent).
fn namespace_and_list(dc: &Dovecot, user: &User) -> (String, String, Vec<String>) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(NAMESPACE_AND_LIST)
        .args([
            "localhost",
            &dc.imap_port.to_string(),
            &user.name,
            &user.password,
        ])
        .arg(&dc.ca_file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    let list = v["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (s("prefix"), s("sep"), list)
}

/// A non-ASCII folder (`Archiv/Entwürfe` in the server's hierarchy) is created and filled in
/// modified UTF-7 (RFC 3501 5.1.3): an independent client (imaplib, which does no encoding of
/// its own) finds it by its encoded name in LIST and SELECTs it to read the messages.
#[test]
fn a_non_ascii_folder_is_created_in_modified_utf7() {
    let dc = dovecot_or_skip!();
    let (_src, dst, bridge, messages, extra) = one_mailbox(dc, "imutf", 4);
    let (prefix, sep, _) = namespace_and_list(dc, &dst);
    let folder = format!("{prefix}Archiv{sep}Entwürfe");
    bridge.replace_sinks(&imap_sink(
        dc,
        dc.imap_port,
        &format!("\"{folder}\""),
        &extra,
    ));
    let run = bridge.run_with_env(&["once"], &[("DST_IMAP", &dst.password)]);
    assert!(run.ok(), "{}", run.output());
    let wire = format!("{prefix}Archiv{sep}Entw&APw-rfe");
    let (_, _, list) = namespace_and_list(dc, &dst);
    assert!(
        list.iter()
            .any(|l| l.ends_with(&format!("\"{wire}\"")) || l.ends_with(&wire)),
        "LIST shows {wire}: {list:#?}"
    );
    assert!(
        !list.iter().any(|l| l.contains("ü") || l.contains("Entw\\")),
        "no raw UTF-8 name: {list:#?}"
    );
    let stored = imap_folder(dc, &dst, &wire).expect("the encoded folder can be selected");
    let bodies: Vec<Vec<u8>> = stored.into_iter().map(|m| m.body).collect();
    assert_exactly_once(&messages, &bodies);
}

/// `tls: implicit` against Dovecot's plain IMAP port: OpenSSL only says "wrong version
/// number"; the error also names `ca_file`, the host name and `tls: starttls`.
#[tokio::test]
async fn implicit_tls_against_a_plain_port_suggests_starttls() {
    use popbridge::sink::imap::{ImapSink, ImapSinkConfig};
    use popbridge::sink::Sink;
    let dc = dovecot_or_skip!();
    let dst = dc.add_user("imimplicit");
    let yaml = format!(
        "host: localhost\nport: {}\ntls: implicit\nca_file: {}\nusername: \"{{mailbox}}\"\npassword: \"{}\"\ntimeout: 10s\n",
        dc.imap_port,
        dc.ca_file.display(),
        dst.password
    );
    let raw: ImapSinkConfig = yaml_serde::from_str(&yaml).unwrap();
    let sink = ImapSink::new("archive", raw.validate(std::path::Path::new("/")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let msg = spooled(dir.path(), &dst.name, b"Subject: x\r\n\r\nbody\r\n");
    let err = sink
        .deliver(
            &msg,
            &popbridge::key::IdempotencyKey::derive(&dst.name, "u1"),
        )
        .await
        .unwrap_err()
        .to_string();
    for hint in ["TLS failed", "ca_file", "host name", "tls: starttls"] {
        assert!(err.contains(hint), "{hint:?} in {err}");
    }
    assert!(!err.contains(&dst.password));
}

/// The crash-after-APPEND case on Dovecot as on Courier and Cyrus: a proxy withholds the
/// answer to the first APPEND (Dovecot stored it, the OK never arrived), then a restarted
/// sink delivers the message again (`seen_before`): exactly one copy, the receipt a duplicate.
/// With and without Message-ID.
#[tokio::test]
async fn dovecot_crash_after_append_leaves_exactly_one_copy() {
    use common::imap_target::{plain_sink, spool, withholding_proxy};
    use popbridge::sink::Sink;
    let dc = dovecot_or_skip!();
    let dst = dc.add_user("imcrash");
    let dir = tempfile::tempdir().unwrap();
    let bodies: [&[u8]; 2] = [
        b"Message-ID: <dovecot-1@example.org>\r\nSubject: one\r\n\r\nline one\r\n",
        b"From: a@example.org\r\nSubject: no id\r\n\r\nonly content\r\ndecides\r\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let name = format!("m{i}");
        let key = popbridge::key::IdempotencyKey::derive("m", &name);
        let proxy = withholding_proxy(dc.imap_port).await;
        let first = plain_sink("dovecot", proxy, &dst.name, &dst.password, "INBOX")
            .deliver(&spool(dir.path(), &name, body, false), &key)
            .await;
        assert!(first.unwrap_err().is_retryable());
        assert_eq!(
            dc.list_server_messages(&dst).len(),
            i + 1,
            "Dovecot stored it"
        );
        let again = plain_sink("dovecot", dc.imap_port, &dst.name, &dst.password, "INBOX")
            .deliver(&spool(dir.path(), &name, body, true), &key)
            .await
            .unwrap();
        assert!(again.duplicate, "{again:?}");
        assert_eq!(dc.list_server_messages(&dst).len(), i + 1, "appended twice");
    }
}
