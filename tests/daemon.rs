//! `popbridge run`: the HTTP endpoints, the metrics passing `promtool check metrics`, and a
//! clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::fake_pop3::{FakePop3, Msg, Quirks};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, pop_port: u16, http_port: u16, maildir: &str) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "state:\n  path: ./state/db.sqlite\nhttp:\n  listen: 127.0.0.1:{http_port}\n  per_mailbox_metrics: true\nmailboxes:\n  - name: alice\n    pop3:\n      host: 127.0.0.1\n      port: {pop_port}\n      tls: none\n      allow_plaintext_auth: true\n      username: alice\n      password: ${{DAEMON_TEST_PASSWORD}}\n    schedule: {{ every: 1s }}\n    delete: after_delivery\n    sinks: [archive]\nsinks:\n  - name: archive\n    type: maildir\n    path: {maildir}\n"
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["run", "-c"])
        .arg(config)
        .args(["--log-format", "json"])
        .env("DAEMON_TEST_PASSWORD", "s3cret-daemon-pw")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn wait_for(url: &str, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((s, body)) = get(url).await {
            if pred(s, &body) {
                return (s, body);
            }
            if Instant::now() > deadline {
                panic!("{url} never satisfied the condition; last: {s} {body}");
            }
        } else if Instant::now() > deadline {
            panic!("{url} never answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_health_ready_metrics_and_stops_on_sigterm() {
    let server = FakePop3::start(
        (0..5)
            .map(|i| Msg {
                uidl: format!("u{i}"),
                body: format!("Subject: {i}\r\n\r\nhi\r\n").into_bytes(),
            })
            .collect(),
        Quirks::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = write_config(dir.path(), server.port, http, "./mail/{mailbox}");
    let mut child = start(&cfg);
    let base = format!("http://127.0.0.1:{http}");

    let (s, body) = wait_for(&format!("{base}/healthz"), |s, _| s == 200).await;
    assert_eq!((s, body.trim()), (200, "ok"));
    let (_, ready) = wait_for(&format!("{base}/readyz"), |s, _| s == 200).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    // The poll ran: five messages delivered and deleted from the server. Deliveries are
    // counted as they happen, the poll's own figures when it ends: wait for both.
    let (_, metrics) = wait_for(&format!("{base}/metrics"), |_, b| {
        b.contains(
            r#"popbridge_deliveries_total{mailbox="alice",outcome="delivered",sink="archive"} 5"#,
        ) && b.contains("popbridge_messages_fetched_total")
    })
    .await;
    assert!(
        metrics.contains(r#"popbridge_messages_fetched_total{mailbox="alice"} 5"#),
        "{metrics}"
    );
    assert!(!metrics.contains("s3cret-daemon-pw"));
    promtool_check(&metrics);

    sigterm(&child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "popbridge did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("Stopped"), "{logs}");
    assert!(
        !logs.contains("s3cret-daemon-pw"),
        "the password leaked into the logs"
    );
    assert!(server.uidls_on_server().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("mail/alice/new"))
            .unwrap()
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_while_a_sink_is_unhealthy() {
    let server = FakePop3::start(vec![], Quirks::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the Maildir's parent directory should be.
    std::fs::write(dir.path().join("blocked"), b"").unwrap();
    let http = free_port();
    let cfg = write_config(dir.path(), server.port, http, "./blocked/sub/{mailbox}");
    let mut child = start(&cfg);
    let (s, body) = wait_for(&format!("http://127.0.0.1:{http}/readyz"), |_, _| true).await;
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(s, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sink = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sink:archive")
        .unwrap();
    assert_eq!(sink["ok"], false, "{body}");
    assert!(
        sink["error"].as_str().unwrap().contains("blocked"),
        "{body}"
    );
}

/// `promtool check metrics` (Debian package `prometheus`) lints names, types and help texts.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIP promtool check: promtool not available ({e}); install the prometheus package"
            );
            return;
        }
        Err(e) => panic!("promtool is required under CI=true: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the poll fails and logs an error line.
    let cfg = write_config(dir.path(), free_port(), free_port(), "./mail/{mailbox}");
    let out = Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["once", "-c"])
        .arg(&cfg)
        .args(["--log-format", "text"])
        .env("DAEMON_TEST_PASSWORD", "s3cret-daemon-pw")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("Poll failed"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "ANSI escape codes in piped logs:\n{logs:?}"
    );
}

#[test]
fn check_help_explains_connect() {
    let out = Command::new(env!("CARGO_BIN_EXE_popbridge"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--connect"))
        .unwrap_or_else(|| panic!("no --connect in\n{help}"));
    assert!(
        line.contains("log in"),
        "--connect has no help text:\n{help}"
    );
}
