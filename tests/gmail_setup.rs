//! `popbridge gmail-setup` end to end, with the binary talking to a fake terminal (piped
//! stdin, stdout and stderr read as they come), our token endpoint
//! (`support/token_endpoint.rs`: device flow, authorisation code + PKCE) and the Gmail test
//! server, which takes only the endpoint's JWTs for the account they name. The printed block,
//! pasted into a config, builds a Gmail sink that imports with the stored refresh token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;
#[path = "support/token_endpoint.rs"]
#[allow(dead_code)]
mod token_endpoint;

use popbridge::key::IdempotencyKey;
use popbridge::sink::SpooledMessage;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use support::gmail::GmailServer;
use token_endpoint::{Client, TokenEndpoint};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const KEY: &[u8] = b"gmail-setup-signing-key";
const SECRET: &str = "desktop-client-s3cr3t";
const USER: &str = "alice@example.com";

struct Setup {
    ep: TokenEndpoint,
    gmail: GmailServer,
    dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "popbridge-desktop",
        Client {
            secret: Some(SECRET.into()),
            ..Default::default()
        },
    );
    *ep.shared.login_user.lock().unwrap() = USER.into();
    Setup {
        ep,
        gmail: GmailServer::start_jwt(KEY).await,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The binary with the fake terminal attached; `flow` args last.
fn command(s: &Setup, extra: &[&str]) -> tokio::process::Command {
    let base = s.ep.url.trim_end_matches("/token").to_owned();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_popbridge"));
    cmd.args([
        "gmail-setup",
        "--client-id",
        "popbridge-desktop",
        "--user",
        USER,
        "--state-dir",
    ])
    .arg(s.dir.path().join("state"))
    .args(["--token-url", &s.ep.url])
    .args(["--authorization-url", &format!("{base}/authorize")])
    .args(["--api-base", &s.gmail.base])
    .args(extra)
    .env("GMAIL_CLIENT_SECRET", SECRET)
    .env_remove("RUST_LOG")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

/// What a finished setup left: the token store is private and holds a live refresh token,
/// nothing secret was printed, and the printed block builds a sink that imports.
async fn check_result(s: &Setup, code: Option<i32>, stdout: &str, stderr: &str) {
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("Gmail API: alice@example.com answered with"),
        "{stderr}"
    );
    let store = s.dir.path().join("state/oauth2/gmail-alice.json");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token store mode {mode:o}");
    let dir_mode = std::fs::metadata(store.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "token dir mode {dir_mode:o}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    let refresh = stored["refresh_token"].as_str().unwrap();
    assert!(s.ep.is_live(refresh));
    for text in [stdout, stderr] {
        assert!(
            !text.contains(SECRET) && !text.contains(refresh),
            "a secret was printed:\n{text}"
        );
    }
    assert!(
        stdout.contains("client_secret: ${GMAIL_CLIENT_SECRET}"),
        "{stdout}"
    );

    // Paste the block into a config and import with it.
    let yaml = format!(
        "state: {{ path: {state}/popbridge.db }}\n{stdout}    allow_plaintext: true\n\
         mailboxes:\n  - name: alice\n    pop3: {{ host: pop.example.com, username: a, password: p }}\n    \
         sinks: [gmail]\n",
        state = s.dir.path().join("state").display(),
    );
    let loaded = popbridge::config::load_str_with_env(&yaml, &s.dir.path().join("c.yaml"), |v| {
        (v == "GMAIL_CLIENT_SECRET").then(|| SECRET.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let sink = popbridge::app::build_sink(&loaded.config.sinks[0]).unwrap();
    let body =
        b"From: bob@example.org\r\nMessage-ID: <setup@example.org>\r\nSubject: hi\r\n\r\nhello\r\n";
    let msg = SpooledMessage {
        uidl: "1".into(),
        ..support::spool::spool(s.dir.path(), "m.eml", body)
    };
    sink.deliver(&msg, &IdempotencyKey::derive("alice", "1"))
        .await
        .unwrap();
    let stored = s.gmail.messages(USER);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].raw, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn device_flow_stores_the_token_checks_the_api_and_prints_a_working_block() {
    let s = start().await;
    let base = s.ep.url.trim_end_matches("/token").to_owned();
    let out = command(
        &s,
        &[
            "--flow",
            "device",
            "--device-authorization-url",
            &format!("{base}/device"),
        ],
    )
    .output()
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        stderr.contains(&format!(
            "To sign in, open {base}/verify and enter the code WDJB-MJHT"
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("device_authorization_url: \"{base}/device\"")),
        "{stdout}"
    );
    check_result(&s, out.status.code(), &stdout, &stderr).await;
}

/// Google's own path (its device endpoint refuses Gmail scopes): the browser flow on a
/// machine without a browser. The user opens the printed address elsewhere, signs in, and
/// pastes the address the browser was sent to.
#[tokio::test(flavor = "multi_thread")]
async fn browser_flow_on_a_headless_machine_takes_the_pasted_redirect() {
    let s = start().await;
    let mut child = command(&s, &[]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let authorize = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("no sign-in address printed")
            .unwrap()
            .unwrap_or_else(|| panic!("stderr ended:\n{stderr}"));
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("/authorize?") {
            break line.trim().to_owned();
        }
    };
    assert!(
        authorize.contains("code_challenge_method=S256") && authorize.contains("gmail.insert"),
        "{authorize}"
    );
    // "Another device": sign in; the server redirects to the loopback address with a code.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(&authorize).send().await.unwrap();
    let redirect = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    stdin
        .write_all(format!("{redirect}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains("device_authorization_url"), "{stdout}");
    check_result(&s, out.status.code(), &stdout, &stderr).await;
}
