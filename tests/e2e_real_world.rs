//! The promise on a real Dovecot in the situations its defaults never produce: a server that
//! reuses UIDLs after rebuilding its index, and two popbridge processes on one state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};

/// Dovecot's UIDLs are UID and UIDVALIDITY. When its index is rebuilt from an old
/// `dovecot-uidlist` (a restore from backup: same UIDVALIDITY, an older next UID), UIDs are
/// handed out again, so the UIDLs of messages we delivered and deleted name new messages
/// (servers with `pop3_uidl_format = %u`, or numeric UIDLs, do the same after any rebuild).
/// They must be fetched and delivered, never deleted unread.
#[test]
fn uidls_reused_after_an_index_rebuild_are_new_messages() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("reuse");
    // The same sizes in both rounds, so only the UIDL history tells them apart.
    let round = |tag: &str| -> Vec<Vec<u8>> {
        (0..3)
            .map(|i| {
                format!(
                    "Message-ID: <{tag}-{i}@example.org>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n"
                )
                .into_bytes()
            })
            .collect()
    };
    let first = round("first");
    dc.seed(&user, &first);
    let first_uidls = uidls(dc, &user);
    assert_eq!(first_uidls.len(), 3);
    let bridge = Bridge::new(
        dc,
        &[Mailbox {
            delete: "after_delivery",
            ..Mailbox::new("reuse", &user)
        }],
    );
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert!(dc.list_server_messages(&user).is_empty());

    // Dovecot writes its index as the session ends, after QUIT's answer: wait for that, or the
    // index we remove below may be written back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dc
        .log()
        .lines()
        .any(|l| l.contains(&format!("pop3({})", user.name)) && l.contains("Disconnected"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the POP3 session did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The index is lost and rebuilt from an old copy of `dovecot-uidlist` (same UIDVALIDITY,
    // next UID 1): new mail gets UIDs 1, 2, 3 again, so the UIDLs of the messages we deleted
    // name new ones. (Checked by listing the UIDLs ourselves, which also makes Dovecot rebuild
    // its index now; again if a late write of the old index got in the way.)
    let uidlist = user.maildir.join("dovecot-uidlist");
    let header = std::fs::read_to_string(&uidlist).unwrap();
    let word = |p: char| {
        header
            .split_whitespace()
            .find(|w| w.starts_with(p))
            .unwrap()
            .to_string()
    };
    let restored = format!("3 {} N1 {}\n", word('V'), word('G'));
    let second = round("secnd");
    dc.seed(&user, &second);
    let mut reused = false;
    for _ in 0..20 {
        for entry in std::fs::read_dir(&user.maildir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("dovecot.index") {
                let _ = std::fs::remove_file(&path);
            }
        }
        std::fs::write(&uidlist, &restored).unwrap();
        std::os::unix::fs::chown(&uidlist, Some(8), Some(8)).unwrap();
        if uidls(dc, &user) == first_uidls {
            reused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(reused, "Dovecot did not give the UIDLs out again");
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.stderr.contains("reuses UIDLs"),
        "the reuse is reported:\n{}",
        run.output()
    );
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(&all, &bridge.delivered("reuse"));
    assert!(
        dc.list_server_messages(&user).is_empty(),
        "deleted after delivery, not before"
    );
}

/// A `once` started while another popbridge polls with the same state (cron next to the
/// daemon, or two overlapping cron runs) refuses clearly instead of emptying the other's
/// spool and delivering the same messages a second time.
#[test]
fn a_second_process_on_the_same_state_is_refused_clearly() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("twice");
    let messages = mail::corpus("twice", 4);
    dc.seed(&user, &messages);
    let bridge = Bridge::new(dc, &[Mailbox::new("twice", &user)]);
    let mut daemon = bridge.spawn(&["run"]);
    // The daemon holds the lock once it has started; wait for its first poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bridge.delivered("twice").len() < messages.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not deliver"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = bridge.once();
    assert_eq!(run.code, Some(3), "{}", run.output());
    assert!(
        run.stderr.contains("another popbridge process")
            && run.stderr.contains(&format!("pid {}", daemon.id())),
        "{}",
        run.output()
    );
    // With --wait-lock it waits for the daemon to stop, then runs.
    let waiter = {
        let config = bridge.config.clone();
        let dir = bridge.dir.path().to_path_buf();
        let env: Vec<(String, String)> = vec![("PB_TEST_PASS_TWICE".into(), user.password.clone())];
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_popbridge"))
                .args(["once", "--wait-lock", "30s", "-c"])
                .arg(config)
                .current_dir(dir)
                .envs(env)
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !waiter.is_finished(),
        "--wait-lock must wait while the daemon runs"
    );
    sigterm(daemon.id());
    daemon.wait().unwrap();
    let out = waiter.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&messages, &bridge.delivered("twice"));
}

/// The UIDLs Dovecot lists for `user` now (plain POP3, a session that changes nothing).
fn uidls(dc: &common::Dovecot, user: &common::User) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", dc.pop3_port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let read = |r: &mut BufReader<std::net::TcpStream>, line: &mut String| {
        line.clear();
        r.read_line(line).unwrap();
        line.trim_end().to_string()
    };
    assert!(read(&mut r, &mut line).starts_with("+OK"));
    for cmd in [
        format!("USER {}", user.name),
        format!("PASS {}", user.password),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let answer = read(&mut r, &mut line);
        assert!(answer.starts_with("+OK"), "{answer}");
    }
    w.write_all(b"UIDL\r\n").unwrap();
    assert!(read(&mut r, &mut line).starts_with("+OK"));
    let mut out = Vec::new();
    loop {
        let l = read(&mut r, &mut line);
        if l == "." {
            break;
        }
        out.push(l.split_whitespace().nth(1).unwrap_or_default().to_string());
    }
    // Not QUIT: nothing of this session must reach the mailbox.
    drop(w);
    out
}

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
