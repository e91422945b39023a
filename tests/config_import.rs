//! `popbridge config import` on sample rc files: the proposed entries, no password in the
//! output, and the output loads as popbridge config once a sink is added.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;

fn import(tool: &str, file: &str) -> (i32, String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rc")
        .join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["config", "import", "--from", tool])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn proposes_mailboxes_from_a_fetchmailrc_and_a_getmailrc_without_their_passwords() {
    let (code, fm, err) = import("fetchmail", "fetchmailrc");
    assert_eq!(code, 0, "{err}");
    assert!(fm.contains("  - name: \"alice-pop.example.com\""), "{fm}");
    assert!(fm.contains("      port: 995\n      tls: implicit\n      username: \"alice@example.com\"\n      password: ${POP3_PASSWORD_ALICE_POP_EXAMPLE_COM}"), "{fm}");
    // `keep` from the defaults, `nokeep` for bob.
    assert!(
        fm.contains("delete: never   # `keep` in the fetchmailrc"),
        "{fm}"
    );
    assert!(
        fm.contains("delete: after_delivery   # fetchmail deletes"),
        "{fm}"
    );
    assert!(
        fm.contains("# note: imap.example.org: protocol imap is not POP3"),
        "{fm}"
    );
    let (code, gm, err) = import("getmail", "getmailrc");
    assert_eq!(code, 0, "{err}");
    assert!(
        gm.contains("host: \"mail.example.net\"\n      tls: starttls\n      username: \"erin\""),
        "{gm}"
    );
    assert!(gm.contains("delete: never"), "{gm}");
    for out in [&fm, &gm, &err] {
        assert!(
            !out.contains("fixture-secret"),
            "a password was echoed:\n{out}"
        );
    }
    // The proposal is a working config once the sink it names exists.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("state:\n  path: s.db\n{fm}sinks:\n  - name: archive\n    type: maildir\n    path: mail/{{mailbox}}\n"),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["check", "-c"])
        .arg(&config)
        .env("POP3_PASSWORD_ALICE_POP_EXAMPLE_COM", "x")
        .env("POP3_PASSWORD_BOB_POP_EXAMPLE_COM", "x")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
