//! OAuth2 end to end: a real Dovecot validating JWTs locally (`passdb oauth2`, HS256 key) and a
//! token endpoint of our own in this process. Every grant logs in to POP3 and to the IMAP sink
//! through the binary; a rotated refresh token is persisted and used; tokens that expire during
//! a daemon run are refreshed without a restart; a transient endpoint failure keeps the stored
//! token; `invalid_grant` says re-login. Mechanisms and initial-response forms are checked
//! against Dovecot through the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/token_endpoint.rs"]
#[allow(dead_code)]
mod token_endpoint;

use common::{assert_exactly_once, mail, Dovecot, User};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use token_endpoint::{Client, Fault, TokenEndpoint};

static DOVECOT: OnceLock<Option<Dovecot>> = OnceLock::new();

/// The OAuth2-enabled Dovecot of this binary; fails (never skips) under CI=true.
fn dovecot() -> Option<&'static Dovecot> {
    DOVECOT
        .get_or_init(|| match common::dovecot::unavailable() {
            None => Some(Dovecot::start_oauth2()),
            Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true and {why}")
            }
            Some(why) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
                None
            }
        })
        .as_ref()
}

macro_rules! oauth2_dovecot_or_skip {
    () => {
        match dovecot() {
            Some(d) => d,
            None => return,
        }
    };
}

/// A JWT's first bytes (`{"alg":`): no access token may ever be printed.
const JWT_PREFIX: &str = "eyJhbGci";

struct Out {
    code: Option<i32>,
    text: String,
}

/// A popbridge directory with a config written from a template.
struct Bridge {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Bridge {
    /// `{pop3}`, `{imap}`, `{ca}` and `{dir}` in `yaml` are filled in.
    fn new(dc: &Dovecot, yaml: &str, env: &[(&str, &str)]) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        let yaml = yaml
            .replace("{pop3}", &dc.pop3_port.to_string())
            .replace("{imap}", &dc.imap_port.to_string())
            .replace("{ca}", &dc.ca_file.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(dir.path().join("popbridge.yaml"), yaml).unwrap();
        Bridge {
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(common::popbridge::BIN);
        cmd.args(args)
            .arg("-c")
            .arg(self.dir.path().join("popbridge.yaml"))
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn once(&self) -> Out {
        let out = self.command(&["once"]).output().unwrap();
        let text = format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.assert_no_secret(&text);
        Out {
            code: out.status.code(),
            text,
        }
    }

    fn assert_no_secret(&self, text: &str) {
        assert!(
            !text.contains(JWT_PREFIX),
            "an access token was printed:\n{text}"
        );
        assert!(
            !text.contains("rt-"),
            "a refresh token was printed:\n{text}"
        );
        for (k, v) in &self.env {
            assert!(!text.contains(v.as_str()), "{k} was printed:\n{text}");
        }
    }

    fn store(&self, credential: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("state/oauth2/{credential}.json"))
    }

    fn stored_refresh_token(&self, credential: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.store(credential)).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["refresh_token"].as_str().map(str::to_owned)
    }

    fn maildir(&self, mailbox: &str) -> Vec<Vec<u8>> {
        common::read_maildir(&self.dir.path().join("mail").join(mailbox))
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }
}

/// What the IMAP sink appended into `user`'s `Archive` folder. Dovecot stores lines with LF:
/// they are given back with CRLF, as appended.
fn imap_archive(user: &User) -> Vec<Vec<u8>> {
    common::read_maildir(&user.maildir.join(".Archive"))
        .into_iter()
        .map(|(_, b)| common::crlf(b))
        .collect()
}

fn endpoint(dc: &Dovecot, lifetime: u64) -> TokenEndpoint {
    TokenEndpoint::start(dc.oauth2_key.as_deref().expect("oauth2 Dovecot"), lifetime)
}

/// A mailbox entry: POP3 without TLS on loopback, `oauth2: <cred>`, into the Maildir and `imap`.
fn mailbox(name: &str, user: &User, cred: &str, imap_sink: &str) -> String {
    format!(
        "  - name: {name}\n    pop3:\n      host: 127.0.0.1\n      port: {{pop3}}\n      tls: none\n      allow_plaintext_auth: true\n      username: {user}\n      oauth2: {cred}\n      timeout: 20s\n    schedule: {{ every: 1s }}\n    sinks: [archive, {imap_sink}]\n",
        user = user.name
    )
}

/// An IMAP sink into `Archive` over STARTTLS, logging in with `cred`; `accounts` maps
/// mailbox names to target users.
fn imap_sink(name: &str, cred: &str, accounts: &[(&str, &User)]) -> String {
    let mut s = format!(
        "  - name: {name}\n    type: imap\n    host: localhost\n    port: {{imap}}\n    tls: starttls\n    ca_file: {{ca}}\n    oauth2: {cred}\n    folder: Archive\n    accounts:\n"
    );
    for (mailbox, user) in accounts {
        s.push_str(&format!(
            "      {mailbox}:\n        username: {}\n",
            user.name
        ));
    }
    s
}

/// A token endpoint (tokens live `lifetime` seconds) with the rotating client `delegated-app`,
/// and a new user holding one of its refresh tokens.
fn delegated(
    dc: &Dovecot,
    lifetime: u64,
    prefix: &str,
    client: Client,
) -> (TokenEndpoint, User, String) {
    let ep = endpoint(dc, lifetime);
    ep.add_client(
        "delegated-app",
        Client {
            rotate: true,
            ..client
        },
    );
    let user = dc.add_user(prefix);
    let seed = ep.grant_refresh_token("delegated-app", &user.name);
    (ep, user, seed)
}

/// The config of mailbox `box` logging in as `user` with the refresh token in `${PB_TEST_RT}`
/// (credential `me`, with `oauth_extra` lines), into the Maildir and, with `imap`, the user's
/// own IMAP account; `head` goes between `state:` and `oauth2:` (an `http:` block).
fn refresh_token_yaml(
    ep: &TokenEndpoint,
    user: &User,
    head: &str,
    oauth_extra: &str,
    imap: bool,
) -> String {
    let (mb, sink) = if imap {
        (
            mailbox("box", user, "me", "imap"),
            imap_sink("imap", "me", &[("box", user)]),
        )
    } else {
        (
            mailbox("box", user, "me", "archive").replace("[archive, archive]", "[archive]"),
            String::new(),
        )
    };
    format!(
        "state:\n  path: ./state/popbridge.db\n{head}oauth2:\n  me:\n    grant: refresh_token\n    token_url: {url}\n    client_id: delegated-app\n    refresh_token: ${{PB_TEST_RT}}\n{oauth_extra}mailboxes:\n{mb}sinks:\n{MAILDIR}{sink}",
        url = ep.url,
    )
}

/// Plain text messages (the corpus's byte-exactness is covered elsewhere; here what matters
/// is that each arrives once).
fn msgs(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| mail::simple(&format!("{tag}-{i}"), "OAuth2"))
        .collect()
}

const MAILDIR: &str = "  - name: archive\n    type: maildir\n    path: ./mail/{mailbox}\n";

#[test]
fn refresh_token_rotation_is_persisted_and_used_for_pop3_and_imap() {
    let dc = oauth2_dovecot_or_skip!();
    let (ep, user, seed) = delegated(dc, 300, "oart", Client::default());
    let yaml = refresh_token_yaml(&ep, &user, "", "", true);
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_RT", &seed)]);
    let first = msgs("oart-1", 3);
    dc.seed(&user, &first);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    assert_exactly_once(&first, &bridge.maildir("box"));
    assert_exactly_once(&first, &imap_archive(&user));

    // The seed was rotated away; the new token is on disk, private, and live.
    assert!(!ep.is_live(&seed));
    let stored = bridge.stored_refresh_token("me").expect("a stored token");
    assert_ne!(stored, seed);
    assert!(ep.is_live(&stored), "the stored token is the latest one");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bridge.store("me"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // One refresh served POP3 and IMAP: a single token cache per credential.
    assert_eq!(ep.issued("refresh_token"), 1, "{}", out.text);

    // A second process starts from the stored token (the configured seed is dead now).
    let second = msgs("oart-2", 2);
    dc.seed(&user, &second);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(&all, &bridge.maildir("box"));
    assert_exactly_once(&all, &imap_archive(&user));
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
}

#[test]
fn client_credentials_with_a_secret_and_with_rs256_and_ps256_certificates() {
    let dc = oauth2_dovecot_or_skip!();
    let ep = endpoint(dc, 300);
    let keys = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dc.add_user("oacs"),
        dc.add_user("oacr"),
        dc.add_user("oacp"),
    );
    ep.add_client(
        "secret-app",
        Client {
            secret: Some("cs-0123456789abcdef".into()),
            user: a.name.clone(),
            ..Default::default()
        },
    );
    let rs = keys.path().join("rs");
    let ps = keys.path().join("ps");
    std::fs::create_dir_all(&rs).unwrap();
    std::fs::create_dir_all(&ps).unwrap();
    let (rs_cert, rs_key, rs_client) = token_endpoint::certificate_client(&rs, &b.name);
    let (ps_cert, ps_key, ps_client) = token_endpoint::certificate_client(&ps, &c.name);
    ep.add_client("rs-app", rs_client);
    ep.add_client("ps-app", ps_client);
    let yaml = format!(
        "state:\n  path: ./state/popbridge.db\noauth2:\n  sec:\n    grant: client_credentials\n    token_url: {url}\n    client_id: secret-app\n    client_secret: ${{PB_TEST_CS}}\n    scope: https://outlook.office365.com/.default\n  rs:\n    grant: client_credentials\n    token_url: {url}\n    client_id: rs-app\n    certificate_file: {rc}\n    private_key_file: {rk}\n  ps:\n    grant: client_credentials\n    token_url: {url}\n    client_id: ps-app\n    certificate_file: {pc}\n    private_key_file: {pk}\n    assertion_alg: ps256\nmailboxes:\n{m1}{m2}{m3}sinks:\n{MAILDIR}{i1}{i2}{i3}",
        url = ep.url,
        rc = rs_cert.display(),
        rk = rs_key.display(),
        pc = ps_cert.display(),
        pk = ps_key.display(),
        m1 = mailbox("a", &a, "sec", "imap_a"),
        m2 = mailbox("b", &b, "rs", "imap_b"),
        m3 = mailbox("c", &c, "ps", "imap_c"),
        i1 = imap_sink("imap_a", "sec", &[("a", &a)]),
        i2 = imap_sink("imap_b", "rs", &[("b", &b)]),
        i3 = imap_sink("imap_c", "ps", &[("c", &c)]),
    );
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_CS", "cs-0123456789abcdef")]);
    let mut expected = Vec::new();
    for (name, user) in [("a", &a), ("b", &b), ("c", &c)] {
        let msgs = msgs(&format!("oacc-{name}"), 2);
        dc.seed(user, &msgs);
        expected.push((name, user, msgs));
    }
    let check = bridge.command(&["check", "--connect"]).output().unwrap();
    let check_text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    bridge.assert_no_secret(&check_text);
    assert!(check.status.success(), "check --connect: {check_text}");
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}\n{:?}", out.text, ep.refused());
    for (name, user, msgs) in &expected {
        assert_exactly_once(msgs, &bridge.maildir(name));
        assert_exactly_once(msgs, &imap_archive(user));
    }
    // check --connect and once are two processes: one token per credential in each.
    assert_eq!(
        ep.issued("client_credentials"),
        6,
        "one token per credential and process"
    );
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
    assert!(
        !bridge.store("sec").exists(),
        "app-only grants store nothing"
    );
}

#[test]
fn jwt_bearer_service_account_gets_a_token_per_mailbox() {
    let dc = oauth2_dovecot_or_skip!();
    let ep = endpoint(dc, 300);
    let keys = tempfile::tempdir().unwrap();
    let (sa_file, public) =
        token_endpoint::service_account(keys.path(), "bridge@project.iam.example", &ep.url);
    ep.add_service_account("bridge@project.iam.example", public);
    let (a, b) = (dc.add_user("oaja"), dc.add_user("oajb"));
    let yaml = format!(
        "state:\n  path: ./state/popbridge.db\noauth2:\n  workspace:\n    provider: google\n    grant: jwt_bearer\n    service_account_file: {sa}\nmailboxes:\n{m1}{m2}sinks:\n{MAILDIR}{imap}",
        sa = sa_file.display(),
        m1 = mailbox("a", &a, "workspace", "imap"),
        m2 = mailbox("b", &b, "workspace", "imap"),
        imap = imap_sink("imap", "workspace", &[("a", &a), ("b", &b)]),
    );
    let bridge = Bridge::new(dc, &yaml, &[]);
    let (ma, mb) = (msgs("oaj-a", 2), msgs("oaj-b", 3));
    dc.seed(&a, &ma);
    dc.seed(&b, &mb);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}\n{:?}", out.text, ep.refused());
    assert_exactly_once(&ma, &bridge.maildir("a"));
    assert_exactly_once(&mb, &bridge.maildir("b"));
    assert_exactly_once(&ma, &imap_archive(&a));
    assert_exactly_once(&mb, &imap_archive(&b));
    // `sub` = the mailbox: one token per user, each used for POP3 and IMAP.
    assert_eq!(ep.issued("urn:ietf:params:oauth:grant-type:jwt-bearer"), 2);
}

/// Polls `cond` until it holds or `limit` passes.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

#[test]
fn tokens_expiring_during_a_daemon_run_are_refreshed_without_restart() {
    let dc = oauth2_dovecot_or_skip!();
    // Four-second tokens refreshed at half their life (2 s of margin, for a loaded machine):
    // a run of 15 s or more outlives several of them.
    let (ep, user, seed) = delegated(dc, 4, "oadm", Client::default());
    let port = common::free_port();
    let http = format!("http:\n  listen: 127.0.0.1:{port}\n");
    let yaml = refresh_token_yaml(&ep, &user, &http, "    refresh_at: 0.5\n", true);
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_RT", &seed)]);
    let child = bridge.command(&["run"]).spawn().unwrap();
    let started = Instant::now();
    let mut expected = Vec::new();
    for round in 0..4 {
        let msgs = msgs(&format!("oadm-{round}"), 2);
        dc.seed(&user, &msgs);
        expected.extend(msgs);
        let delivered = wait_for(Duration::from_secs(20), || {
            bridge.maildir("box").len() == expected.len()
                && imap_archive(&user).len() == expected.len()
        });
        assert!(delivered, "round {round}: not delivered");
        std::thread::sleep(Duration::from_secs(3));
    }
    let ran = started.elapsed();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    bridge.assert_no_secret(&text);
    assert_exactly_once(&expected, &bridge.maildir("box"));
    assert_exactly_once(&expected, &imap_archive(&user));
    let refreshes = ep.issued("refresh_token");
    // Each token lives 4 s and is refreshed after 2 s, at the next poll (every second).
    assert!(
        refreshes >= ran.as_secs() / 4,
        "{refreshes} refreshes in {ran:?}:\n{text}"
    );
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
    // Refreshed ahead of expiry: the server never saw an expired token.
    assert!(!text.contains("refused the OAuth2 token"), "{text}");
    let stored = bridge.stored_refresh_token("me").unwrap();
    assert!(ep.is_live(&stored), "the last rotated token was persisted");
    eprintln!("daemon ran {ran:?} with 4 s tokens: {refreshes} refreshes");
}

#[test]
fn a_transient_failure_keeps_the_stored_token_and_invalid_grant_asks_for_relogin() {
    let dc = oauth2_dovecot_or_skip!();
    let (ep, user, seed) = delegated(dc, 300, "oatr", Client::default());
    let yaml = refresh_token_yaml(&ep, &user, "", "", true);
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_RT", &seed)]);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    let stored = bridge.stored_refresh_token("me").unwrap();

    ep.set_fault(Some(Fault::ServerError));
    let batch = msgs("oatr", 2);
    dc.seed(&user, &batch);
    let out = bridge.once();
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(out.text.contains("failed temporarily"), "{}", out.text);
    assert!(!out.text.contains("re-login"), "{}", out.text);
    assert_eq!(
        bridge.stored_refresh_token("me").as_deref(),
        Some(stored.as_str()),
        "a transient failure must not touch the stored token"
    );
    assert!(bridge.maildir("box").is_empty());

    ep.set_fault(None);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    assert_exactly_once(&batch, &bridge.maildir("box"));
    assert_exactly_once(&batch, &imap_archive(&user));

    // Revoked (password change, admin): one clear line, and the stored token stays for
    // inspection until a new one is configured.
    ep.revoke_all();
    dc.seed(&user, &msgs("oatr-2", 1));
    let out = bridge.once();
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(
        out.text.contains("re-login needed") && out.text.contains("invalid_grant"),
        "{}",
        out.text
    );
    assert!(bridge.store("me").exists());
}

/// A token for `user` straight from the endpoint (client credentials), for library tests.
async fn token_for(ep: &TokenEndpoint, user: &User) -> String {
    let id = format!("lib-{}", user.name);
    ep.add_client(
        &id,
        Client {
            secret: Some("s".into()),
            user: user.name.clone(),
            ..Default::default()
        },
    );
    let json: serde_json::Value = reqwest::Client::new()
        .post(&ep.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={id}&client_secret=s"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    json["access_token"].as_str().unwrap().to_owned()
}

fn pop3_config(
    dc: &Dovecot,
    user: &User,
    token: &str,
    login: popbridge::pop3::OAuth2Login,
) -> popbridge::pop3::ClientConfig {
    popbridge::pop3::ClientConfig {
        host: "127.0.0.1".into(),
        port: dc.pop3_port,
        tls: popbridge::pop3::TlsMode::None,
        username: user.name.clone(),
        secret: popbridge::secret::Secret::new(token),
        password_file: None,
        auth: popbridge::pop3::AuthMethod::OAuth2(login),
        ca_file: None,
        danger_accept_invalid_certs: false,
        allow_plaintext_auth: true,
        timeout: Duration::from_secs(20),
        max_line_length: 65536,
        max_message_bytes: 1 << 20,
        pipeline_window: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_and_initial_response_form_logs_in_and_a_bad_token_is_explained() {
    use popbridge::pop3::{InitialResponse, OAuth2Login, OAuthMechanism};
    let dc = oauth2_dovecot_or_skip!();
    let ep = endpoint(dc, 300);
    let user = dc.add_user("oamech");
    let token = token_for(&ep, &user).await;
    for mechanism in [
        OAuthMechanism::XOAuth2,
        OAuthMechanism::OAuthBearer,
        OAuthMechanism::Auto,
    ] {
        for initial_response in [
            InitialResponse::Auto,
            InitialResponse::Always,
            InitialResponse::Never,
        ] {
            let login = OAuth2Login {
                mechanism,
                initial_response,
                token: None,
            };
            let cfg = pop3_config(dc, &user, &token, login);
            let t = popbridge::pop3::connect(&cfg).await;
            assert!(
                t.is_ok(),
                "{mechanism:?} {initial_response:?}: {}",
                t.err().unwrap()
            );
        }
    }
    // IMAP: each OAuth2 mode of the sink's client.
    for auth in [
        popbridge::imap::ImapAuth::Xoauth2,
        popbridge::imap::ImapAuth::Oauthbearer,
        popbridge::imap::ImapAuth::Oauth2,
    ] {
        let cfg = popbridge::imap::ImapConfig {
            host: "127.0.0.1".into(),
            port: dc.imap_port,
            tls: popbridge::imap::ImapTls::None,
            auth,
            timeout: Duration::from_secs(20),
            allow_plaintext_auth: true,
        };
        let s = popbridge::imap::Session::connect(
            &cfg,
            None,
            &user.name,
            &popbridge::secret::Secret::new(token.clone()),
        )
        .await;
        assert!(s.is_ok(), "{auth:?}: {}", s.err().unwrap());
    }
    // Larger than the 255-octet AUTH line (as real tokens are): sent after `+` in `auto`.
    ep.shared
        .pad
        .store(2000, std::sync::atomic::Ordering::SeqCst);
    let big = token_for(&ep, &user).await;
    assert!(big.len() > 2000);
    for mechanism in [OAuthMechanism::XOAuth2, OAuthMechanism::OAuthBearer] {
        let login = OAuth2Login {
            mechanism,
            initial_response: InitialResponse::Auto,
            token: None,
        };
        let t = popbridge::pop3::connect(&pop3_config(dc, &user, &big, login)).await;
        assert!(t.is_ok(), "{mechanism:?} big token: {}", t.err().unwrap());
    }
    // A token for another user: the server's JSON reason is in the error, the token is not.
    let other = dc.add_user("oamech-other");
    for mechanism in [OAuthMechanism::XOAuth2, OAuthMechanism::OAuthBearer] {
        let login = OAuth2Login {
            mechanism,
            initial_response: InitialResponse::Never,
            token: None,
        };
        let cfg = pop3_config(dc, &other, &token, login);
        let Err(e) = popbridge::pop3::connect(&cfg).await else {
            panic!("{mechanism:?}: a token for another user must fail");
        };
        let text = format!("{e} {e:?}");
        assert_eq!(e.kind(), popbridge::pop3::ErrorKind::Auth, "{text}");
        assert!(text.contains("status"), "{mechanism:?}: {text}");
        assert!(!text.contains(&token[..40]), "{text}");
    }
}

#[test]
fn one_app_only_token_opens_every_granted_mailbox_and_an_ungranted_one_gets_a_clear_error() {
    let dc = oauth2_dovecot_or_skip!();
    let ep = endpoint(dc, 300);
    let (a, b, c) = (
        dc.add_user("oaga"),
        dc.add_user("oagb"),
        dc.add_user("oagc"),
    );
    // Microsoft's app-only model: one token of the app, the server decides which mailboxes.
    ep.add_client(
        "app",
        Client {
            secret: Some("cs-app-secret-000".into()),
            app_only: true,
            ..Default::default()
        },
    );
    dc.grant_app("app", &[&a, &b]);
    let yaml = format!(
        "state:\n  path: ./state/popbridge.db\noauth2:\n  app:\n    grant: client_credentials\n    token_url: {url}\n    client_id: app\n    client_secret: ${{PB_TEST_CS}}\nmailboxes:\n{ma}{mb}{mc}sinks:\n{MAILDIR}{imap}",
        url = ep.url,
        ma = mailbox("a", &a, "app", "imap"),
        mb = mailbox("b", &b, "app", "imap"),
        mc = mailbox("c", &c, "app", "archive").replace("[archive, archive]", "[archive]"),
        imap = imap_sink("imap", "app", &[("a", &a), ("b", &b)]),
    );
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_CS", "cs-app-secret-000")]);
    let (ma, mb) = (msgs("oag-a", 2), msgs("oag-b", 1));
    dc.seed(&a, &ma);
    dc.seed(&b, &mb);
    dc.seed(&c, &msgs("oag-c", 1));
    let out = bridge.once();
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert_exactly_once(&ma, &bridge.maildir("a"));
    assert_exactly_once(&mb, &bridge.maildir("b"));
    assert_exactly_once(&ma, &imap_archive(&a));
    assert_exactly_once(&mb, &imap_archive(&b));
    assert!(bridge.maildir("c").is_empty());
    assert!(
        out.text.contains("c: POP3 server")
            && out.text.contains("for another user")
            && out.text.contains("may open this mailbox"),
        "{}",
        out.text
    );
    // One token for a and b over POP3 and IMAP; c's refusal fetched one fresh token.
    assert_eq!(ep.issued("client_credentials"), 2, "{}", out.text);
}

#[test]
fn oauth2_login_by_device_code_and_by_a_pasted_browser_redirect_with_discovered_endpoints() {
    use std::io::BufRead;
    let dc = oauth2_dovecot_or_skip!();
    let ep = endpoint(dc, 300);
    ep.add_client("public-app", Client::default());
    let user = dc.add_user("oalg");
    *ep.shared.login_user.lock().unwrap() = user.name.clone();
    let base = ep.url.trim_end_matches("/token").to_owned();
    let yaml = format!(
        "state:\n  path: ./state/popbridge.db\noauth2:\n  me:\n    grant: refresh_token\n    issuer: {base}\n    client_id: public-app\nmailboxes:\n{mb}sinks:\n{MAILDIR}{imap}",
        mb = mailbox("box", &user, "me", "imap"),
        imap = imap_sink("imap", "me", &[("box", &user)]),
    );
    let bridge = Bridge::new(dc, &yaml, &[]);
    let first = msgs("oalg-1", 2);
    dc.seed(&user, &first);
    // Never signed in: the error names the command.
    let out = bridge.once();
    assert_ne!(out.code, Some(0), "{}", out.text);
    assert!(
        out.text.contains("popbridge oauth2 login --credential me"),
        "{}",
        out.text
    );

    // Device code: the code is shown, the sign-in is polled for, a login to POP3 checks it.
    let login = bridge
        .command(&["oauth2", "login", "--mailbox", "box"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&login.stdout).to_string()
        + &String::from_utf8_lossy(&login.stderr);
    bridge.assert_no_secret(&text);
    assert!(login.status.success(), "{text}");
    assert!(
        text.contains("WDJB-MJHT") && text.contains(&format!("{base}/verify")),
        "{text}"
    );
    assert!(text.contains("login with the new token ok"), "{text}");
    let device_token = bridge.stored_refresh_token("me").unwrap();
    assert!(ep.is_live(&device_token));
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    assert_exactly_once(&first, &bridge.maildir("box"));
    assert_exactly_once(&first, &imap_archive(&user));

    // Browser with PKCE, headless: the user signs in elsewhere and pastes the redirect URL.
    let mut child = bridge
        .command(&["oauth2", "login", "--credential", "me", "--flow", "browser"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with(&format!("{base}/authorize?")))
        .expect("the sign-in URL");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let location = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        r.headers()["location"].to_str().unwrap().to_owned()
    });
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{location}").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", rest.join("\n"));
    bridge.assert_no_secret(&rest.join("\n"));
    let browser_token = bridge.stored_refresh_token("me").unwrap();
    assert_ne!(browser_token, device_token);
    let second = msgs("oalg-2", 1);
    dc.seed(&user, &second);
    let out = bridge.once();
    assert_eq!(out.code, Some(0), "{}", out.text);
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());

    let status = bridge.command(&["oauth2", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    bridge.assert_no_secret(&text);
    assert!(
        status.status.success()
            && text.contains("me: refresh_token")
            && text.contains("stored 0h00m ago"),
        "{text}"
    );

    // Logout: revoked at the provider, deleted here; the next run asks for a login.
    let logout = bridge
        .command(&["oauth2", "logout", "--credential", "me"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&logout.stderr).to_string();
    assert!(
        logout.status.success() && text.contains("revoked; deleted"),
        "{text}"
    );
    assert!(!ep.is_live(&browser_token));
    assert!(!bridge.store("me").exists());
    let out = bridge.once();
    assert!(out.text.contains("re-login needed"), "{}", out.text);
}

/// `GET http://127.0.0.1:{port}{path}`: status and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    (status, out)
}

#[test]
fn a_revoked_refresh_token_makes_the_daemon_not_ready_and_is_counted() {
    let dc = oauth2_dovecot_or_skip!();
    let (ep, user, dead) = delegated(dc, 300, "oard", Client::default());
    ep.revoke_all();
    let port = common::free_port();
    let http = format!("http:\n  listen: 127.0.0.1:{port}\n");
    let yaml = refresh_token_yaml(&ep, &user, &http, "", false);
    let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_RT", &dead)]);
    let child = bridge.command(&["run"]).spawn().unwrap();
    let mut ready = (0, String::new());
    let seen = wait_for(Duration::from_secs(20), || {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            return false;
        }
        ready = http_get(port, "/readyz");
        ready.0 == 503 && ready.1.contains("oauth2:me")
    });
    let metrics = if seen {
        http_get(port, "/metrics").1
    } else {
        String::new()
    };
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    bridge.assert_no_secret(&text);
    assert!(seen, "{ready:?}\n{text}");
    assert!(
        ready.1.contains("popbridge oauth2 login --credential me"),
        "{}",
        ready.1
    );
    assert!(
        metrics.contains("popbridge_oauth2_relogin_needed{credential=\"me\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "popbridge_oauth2_refreshes_total{credential=\"me\",result=\"relogin_needed\"} 1"
        ),
        "{metrics}"
    );
}

/// kill -9 between a refresh that rotated the refresh token and the write of the new one:
/// the endpoint has moved on, our store has not. Where the provider keeps the old token valid
/// for a while (Microsoft), the next run refreshes with it and carries on; where it treats a
/// second use as reuse, the next run stops with a clear re-login message, loses no mail, and
/// sends nothing it should not.
#[test]
fn a_kill_between_a_rotation_and_its_write_recovers_where_the_provider_allows_it() {
    let dc = oauth2_dovecot_or_skip!();
    for keep_old in [true, false] {
        let prefix = if keep_old { "oakk" } else { "oakr" };
        let client = Client {
            keep_old,
            ..Default::default()
        };
        let (ep, user, seed) = delegated(dc, 300, prefix, client);
        let yaml = refresh_token_yaml(&ep, &user, "", "", true);
        let bridge = Bridge::new(dc, &yaml, &[("PB_TEST_RT", &seed)]);
        let first = msgs(if keep_old { "oakk-1" } else { "oakr-1" }, 2);
        dc.seed(&user, &first);
        let out = bridge.once();
        assert_eq!(out.code, Some(0), "{}", out.text);
        let stored = bridge.stored_refresh_token("me").expect("a stored token");

        // The next run's refresh rotates `stored` away, and the process dies before it hears
        // the new token.
        let second = msgs(if keep_old { "oakk-2" } else { "oakr-2" }, 2);
        dc.seed(&user, &second);
        ep.set_stall(Some(std::time::Duration::from_secs(30)));
        let mut child = bridge
            .command(&["once"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while ep.stalled() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no refresh was attempted"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        ep.set_stall(None);
        assert_eq!(
            bridge.stored_refresh_token("me").as_deref(),
            Some(stored.as_str()),
            "the kill came before the write"
        );

        let out = bridge.once();
        let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
        if keep_old {
            assert_eq!(out.code, Some(0), "{}", out.text);
            assert_exactly_once(&all, &bridge.maildir("box"));
            let now = bridge.stored_refresh_token("me").expect("a stored token");
            assert!(ep.is_live(&now), "the newest token is stored and live");
        } else {
            assert_ne!(out.code, Some(0), "{}", out.text);
            assert!(out.text.contains("oauth2 login"), "{}", out.text);
            // Nothing lost: the second batch is still on the server, the first delivered once.
            assert_exactly_once(&first, &bridge.maildir("box"));
            assert_eq!(dc.list_server_messages(&user).len(), 4);
        }
    }
}
