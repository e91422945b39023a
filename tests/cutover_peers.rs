//! Switching from fetchmail, getmail6 and mpop without sending anything again: each real tool
//! (Debian's packages) retrieves the first half of a real Dovecot mailbox, popbridge imports its
//! state, and `popbridge once` delivers exactly the other half.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};
use common::{Dovecot, User};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool's binary, or `None` (a skip, which `CI=true` turns into a failure).
fn tool(name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("{name} not installed: skipping");
    }
    found
}

fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // getmail6 runs as `nobody`, which must reach its files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn maildir(root: &Path) -> PathBuf {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    root.to_path_buf()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mpop(dc: &Dovecot, user: &User, dir: &Path) -> PathBuf {
    let state = dir.join("mpop_uidls");
    let rc = dir.join("mpoprc");
    std::fs::write(
        &rc,
        format!(
            "account default\nhost 127.0.0.1\nport {}\ntls off\nauth user\nuser {}\npassword {}\n\
             keep on\nonly_new on\nuidls_file {}\ndelivery maildir {}\n",
            dc.pop3_port,
            user.name,
            user.password,
            state.display(),
            maildir(&dir.join("md")).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    run_ok(Command::new("mpop").arg("-C").arg(&rc).arg("-q"));
    state
}

fn fetchmail(dc: &Dovecot, user: &User, dir: &Path) -> PathBuf {
    let state = dir.join("fetchids");
    let md = maildir(&dir.join("md"));
    let rc = dir.join("fetchmailrc");
    // `uidl` before `user`; a plain port needs `sslproto ''` and `no sslcertck`.
    std::fs::write(
        &rc,
        format!(
            "set invisible\npoll 127.0.0.1 port {} proto pop3 uidl\n  user {} password {} keep \
             sslproto '' no sslcertck\n  mda \"safecat {} {}\"\n",
            dc.pop3_port,
            user.name,
            user.password,
            md.join("tmp").display(),
            md.join("new").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    run_ok(
        Command::new("fetchmail")
            .arg("-f")
            .arg(&rc)
            .arg("-i")
            .arg(&state)
            .arg("--nosyslog")
            .env("HOME", dir),
    );
    state
}

fn getmail(dc: &Dovecot, user: &User, dir: &Path) -> PathBuf {
    let gm = dir.join("getmail");
    let md = maildir(&gm.join("md"));
    let rc = gm.join("getmailrc");
    std::fs::write(
        &rc,
        format!(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {}\n\
             username = {}\npassword = {}\n[destination]\ntype = Maildir\npath = {}/\n\
             [options]\nread_all = false\ndelete = false\n",
            dc.pop3_port,
            user.name,
            user.password,
            md.display()
        ),
    )
    .unwrap();
    // getmail6 refuses to deliver as root: it runs as nobody.
    run_ok(Command::new("chown").args(["-R", "nobody"]).arg(&gm));
    run_ok(
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "getmail",
            ])
            .arg("--rcfile")
            .arg(&rc)
            .arg("--getmaildir")
            .arg(&gm)
            .arg("--quiet"),
    );
    gm.join(format!("oldmail-127.0.0.1-{}-{}", dc.pop3_port, user.name))
}

fn switch_from(name: &str, retrieve: fn(&Dovecot, &User, &Path) -> PathBuf) {
    let dc = dovecot_or_skip!();
    if tool(name).is_none() {
        return;
    }
    let user = dc.add_user(&format!("from{name}"));
    let first = mail::corpus(&format!("{name}-first"), 4);
    dc.seed(&user, &first);
    let dir = work_dir();
    let state = retrieve(dc, &user, dir.path());
    assert!(
        state.exists(),
        "{name} wrote no state at {}",
        state.display()
    );
    let second = mail::corpus(&format!("{name}-second"), 4);
    dc.seed(&user, &second);

    let bridge = Bridge::new(dc, &[Mailbox::new("box", &user)]);
    let from = if name == "getmail" { "getmail" } else { name };
    let file = state.to_string_lossy().into_owned();
    let import = ["state", "import", "--from", from, &file, "--mailbox", "box"];
    let dry = bridge.run(&[&import[..], &["--dry-run"]].concat());
    assert!(dry.ok(), "{}", dry.output());
    assert!(
        dry.stdout
            .contains("would skip 4 (imported), would fetch 4 (new), 0 listed in the file but not on the server"),
        "{}",
        dry.output()
    );
    let run = bridge.run(&import);
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.stdout.contains("skips 4 (imported)"),
        "{}",
        run.output()
    );
    // Importing twice changes nothing.
    let again = bridge.run(&import);
    assert!(
        again.stdout.contains("4 already in popbridge's state"),
        "{}",
        again.output()
    );

    let once = bridge.once();
    assert!(once.ok(), "{}", once.output());
    assert_exactly_once(&second, &bridge.delivered("box"));
}

#[test]
fn switching_from_mpop_delivers_only_what_mpop_did_not_fetch() {
    switch_from("mpop", mpop);
}

#[test]
fn switching_from_fetchmail_delivers_only_what_fetchmail_did_not_fetch() {
    switch_from("fetchmail", fetchmail);
}

#[test]
fn switching_from_getmail6_delivers_only_what_getmail_did_not_fetch() {
    switch_from("getmail", getmail);
}

/// A switch from a tool whose state is lost: what is on the server now counts as delivered.
#[test]
fn a_baseline_skips_everything_on_the_server_now() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("baseline");
    let old = mail::corpus("baseline-old", 3);
    dc.seed(&user, &old);
    let bridge = Bridge::new(dc, &[Mailbox::new("box", &user)]);
    let run = bridge.run(&["state", "baseline", "--mailbox", "box"]);
    assert!(run.ok(), "{}", run.output());
    assert!(
        run.stdout.contains("skips 3 (imported)"),
        "{}",
        run.output()
    );
    let new = mail::corpus("baseline-new", 2);
    dc.seed(&user, &new);
    let once = bridge.once();
    assert!(once.ok(), "{}", once.output());
    assert_exactly_once(&new, &bridge.delivered("box"));
    // A state file naming another account is a clear error, not a silent "nothing imported".
    let dir = work_dir();
    let wrong = dir.path().join("fetchids");
    std::fs::write(&wrong, "someone@elsewhere.example 0001\n").unwrap();
    let file = wrong.to_string_lossy().into_owned();
    let run = bridge.run(&[
        "state",
        "import",
        "--from",
        "fetchmail",
        &file,
        "--mailbox",
        "box",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.output());
    assert!(
        run.stderr.contains("someone@elsewhere.example"),
        "{}",
        run.output()
    );
}
