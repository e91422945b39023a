//! Shared harness for the end-to-end tests: a real Dovecot started once per test binary, a
//! message corpus, and a runner for the `popbridge` binary.
//!
//! Each test creates its own Dovecot users and its own popbridge directory, so tests in one
//! binary run in parallel. Without Dovecot (or root) the tests print why and pass, except with
//! `CI=true`, where they fail: CI must never go green by skipping.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod certs;
pub mod courier;
pub mod cyrus;
pub mod dovecot;
pub mod imap_target;
pub mod mail;
pub mod mailutils;
pub mod popbridge;

pub use dovecot::{Dovecot, User};
#[allow(unused_imports)] // not every test binary uses every type
pub use popbridge::{Bridge, Mailbox, Run, Tls};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

static DOVECOT: OnceLock<Option<Dovecot>> = OnceLock::new();

/// The shared Dovecot, or `None` (after printing why) when it cannot run outside CI.
pub fn dovecot() -> Option<&'static Dovecot> {
    DOVECOT
        .get_or_init(|| match dovecot::unavailable() {
            None => Some(Dovecot::start()),
            Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true and {why}")
            }
            Some(why) => {
                // Straight to the stream: eprintln! in a passing test is captured and never shown.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {why}; run scripts/test.sh (as root) to run these tests"
                );
                None
            }
        })
        .as_ref()
}

/// `let dc = dovecot_or_skip!();` at the top of a test.
#[macro_export]
macro_rules! dovecot_or_skip {
    () => {
        match common::dovecot() {
            Some(d) => d,
            None => return,
        }
    };
}

/// Files in `dir/new` and `dir/cur`, by file name (without a `:2,` flag suffix). A server
/// may move a file from `new/` to `cur/` (or rename its flags) while we list: then the whole
/// listing is read again.
pub fn read_maildir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    for _ in 0..20 {
        if let Some(out) = try_read_maildir(dir) {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{}: files kept moving while being read", dir.display());
}

/// `None` when a file moved during the read (missing, or read in `new/` and gone from there,
/// so possibly read again in `cur/`).
fn try_read_maildir(dir: &Path) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut read = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let name = name.split(':').next().unwrap_or_default().to_string();
            let body = match std::fs::read(entry.path()) {
                Ok(body) => body,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("read Maildir file {}: {e}", entry.path().display()),
            };
            out.push((name, body));
            read.push(entry.path());
        }
    }
    if read.iter().any(|p| !p.exists()) {
        return None;
    }
    out.sort();
    Some(out)
}

/// The message bodies of a Maildir, without their file names.
pub fn maildir_bodies(dir: &Path) -> Vec<Vec<u8>> {
    read_maildir(dir).into_iter().map(|(_, b)| b).collect()
}

/// A Dovecot IMAP account's messages as IMAP gives them back: Dovecot stores them with LF line
/// endings (`mail_save_crlf = no`) and serves CRLF.
pub fn imap_bodies(user: &User) -> Vec<Vec<u8>> {
    maildir_bodies(&user.maildir)
        .into_iter()
        .map(crlf)
        .collect()
}

/// `b` with every bare LF made CRLF: a message as IMAP serves what Dovecot stored with LF.
pub fn crlf(b: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 40);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// Asserts `delivered` holds each of `expected` exactly once, byte for byte, and nothing else.
/// Reports by `X-Pb-Id` so a failure names the messages.
pub fn assert_exactly_once(expected: &[Vec<u8>], delivered: &[Vec<u8>]) {
    let mut counts: BTreeMap<&[u8], i64> = BTreeMap::new();
    for m in expected {
        *counts.entry(m).or_default() += 1;
    }
    for m in delivered {
        *counts.entry(m).or_default() -= 1;
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    for (m, n) in counts {
        match n {
            0 => {}
            n if n > 0 => missing.push(format!("{} x{n}", mail::id_of(m))),
            n => extra.push(format!("{} x{}", mail::id_of(m), -n)),
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "expected {} messages, got {}\nmissing or altered ({}): {:?}\nduplicated or unexpected ({}): {:?}",
        expected.len(),
        delivered.len(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(10).collect::<Vec<_>>(),
    );
}

/// A free loopback port (free until someone else binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Kills `pid` (with `group`, its whole process group, by SIGKILL) once this test process is
/// gone, however it ends: a detached shell watches for us, so no server outlives its tests.
pub fn kill_when_gone(pid: u32, group: bool) {
    use std::os::unix::process::CommandExt;
    let kill = if group {
        r#"kill -KILL -- "-$2""#
    } else {
        r#"kill "$2""#
    };
    let script =
        format!(r#"(while kill -0 "$1" 2>/dev/null; do sleep 1; done; {kill} 2>/dev/null) &"#);
    let _ = std::process::Command::new("sh")
        .args(["-c", &script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .status();
}
