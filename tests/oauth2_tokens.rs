//! The token manager against our token endpoint, through the library (no mail server): one
//! refresh for many concurrent callers, a refused token replaced, answers classified (client,
//! scope, 5xx with Retry-After, invalid_grant), a rotated token never used unless stored, and
//! a newer configured refresh token winning over the stored one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/token_endpoint.rs"]
#[allow(dead_code)]
mod token_endpoint;

use popbridge::oauth2::{OAuth2Error, TokenSource};
use popbridge::pop3::AuthMethod;
use std::sync::Arc;
use std::time::Duration;
use token_endpoint::{Client, Fault, TokenEndpoint};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The token source of a config whose only credential is `credential` (YAML lines under it).
fn source(dir: &std::path::Path, credential: &str, env: &[(&str, &str)]) -> Arc<TokenSource> {
    let indented: String = credential.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "state:\n  path: {}/state/db\noauth2:\n  c:\n{indented}mailboxes:\n  - name: m\n    pop3:\n      host: h\n      username: user@example.com\n      oauth2: c\n    sinks: [s]\nsinks:\n  - name: s\n    type: maildir\n    path: {}/mail\n",
        dir.display(),
        dir.display()
    );
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = popbridge::config::load_str_with_env(&yaml, &dir.join("c.yaml"), move |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    match &loaded.config.mailboxes[0].pop3.auth {
        AuthMethod::OAuth2(login) => login.token.clone().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn refresh_config(url: &str) -> String {
    format!("grant: refresh_token\ntoken_url: {url}\nclient_id: app\nrefresh_token: ${{RT}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_refresh_and_a_refused_token_is_replaced() {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "app",
        Client {
            rotate: true,
            ..Default::default()
        },
    );
    let seed = ep.grant_refresh_token("app", "user@example.com");
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), &refresh_config(&ep.url), &[("RT", &seed)]);
    let calls = (0..16).map(|_| {
        let src = src.clone();
        tokio::spawn(async move { src.access_token("user@example.com").await.unwrap() })
    });
    let tokens = futures_util::future::join_all(calls).await;
    let first = tokens[0].as_ref().unwrap().clone();
    assert!(tokens.iter().all(|t| t.as_ref().unwrap() == &first));
    assert_eq!(ep.issued("refresh_token"), 1, "single flight");
    // The server refused it: forgotten, and the next call refreshes (with the rotated token).
    src.invalidate("user@example.com", &first).await;
    let second = src.access_token("user@example.com").await.unwrap();
    assert_ne!(second, first);
    assert_eq!(ep.issued("refresh_token"), 2);
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_answers_are_classified() {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "app",
        Client {
            secret: Some("right".into()),
            user: "u".into(),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cc = |secret: &str| {
        format!(
            "grant: client_credentials\ntoken_url: {}\nclient_id: app\nclient_secret: {secret}\n",
            ep.url
        )
    };
    let wrong = source(dir.path(), &cc("wrong"), &[]);
    let e = wrong.access_token("u").await.unwrap_err();
    assert!(matches!(e, OAuth2Error::Config { .. }), "{e}");
    assert!(
        e.to_string().contains("invalid_client") && e.to_string().contains("client_id"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "{e}");

    let right = source(dir.path(), &cc("right"), &[]);
    ep.set_fault(Some(Fault::ServerError));
    match right.access_token("u").await.unwrap_err() {
        OAuth2Error::Transient { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        e => panic!("{e}"),
    }
    ep.set_fault(None);
    let token = right.access_token("u").await.unwrap();

    // invalid_grant: re-login for a refresh token, configuration for an app-only grant.
    ep.set_fault(Some(Fault::InvalidGrant));
    right.invalidate("u", &token).await;
    let e = right.access_token("u").await.unwrap_err();
    assert!(matches!(e, OAuth2Error::Config { .. }), "{e}");
    ep.add_client("app2", Client::default());
    let refresh = source(
        dir.path(),
        &refresh_config(&ep.url).replace("client_id: app", "client_id: app2"),
        &[("RT", "rt-whatever")],
    );
    let e = refresh.access_token("u").await.unwrap_err();
    assert!(e.needs_relogin(), "{e}");
    assert!(e.to_string().contains("re-login needed"), "{e}");

    // Nothing listens: transient.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", closed.local_addr().unwrap());
    drop(closed);
    let gone = source(dir.path(), &cc("right").replace(&ep.url, &url), &[]);
    assert!(gone.access_token("u").await.unwrap_err().is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_that_cannot_be_stored_is_not_used() {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "app",
        Client {
            rotate: true,
            ..Default::default()
        },
    );
    let seed = ep.grant_refresh_token("app", "u");
    let dir = tempfile::tempdir().unwrap();
    // The token directory cannot be created: a file is in its place.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/oauth2"), "not a directory").unwrap();
    let src = source(dir.path(), &refresh_config(&ep.url), &[("RT", &seed)]);
    let e = src.access_token("u").await.unwrap_err();
    assert!(matches!(e, OAuth2Error::Local { .. }), "{e}");
    assert!(e.to_string().contains("token store"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_configured_refresh_token_wins_over_the_stored_one() {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "app",
        Client {
            rotate: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let first = ep.grant_refresh_token("app", "u");
    let src = source(dir.path(), &refresh_config(&ep.url), &[("RT", &first)]);
    src.access_token("u").await.unwrap();
    let stored = std::fs::read_to_string(dir.path().join("state/oauth2/c.json")).unwrap();
    assert!(!stored.contains(&first));
    // Same seed, new process: the stored (rotated) token is used, the dead seed is not.
    let again = source(dir.path(), &refresh_config(&ep.url), &[("RT", &first)]);
    again.access_token("u").await.unwrap();
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
    // After a re-login the operator configures a new token: it wins.
    ep.revoke_all();
    let relogin = ep.grant_refresh_token("app", "u");
    let fresh = source(dir.path(), &refresh_config(&ep.url), &[("RT", &relogin)]);
    fresh.access_token("u").await.unwrap();
    assert!(ep.refused().is_empty(), "{:?}", ep.refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_before_expiry_keeps_the_current_token() {
    // Four-second tokens refreshed at half their life: after 2 s a refresh is due.
    let ep = TokenEndpoint::start(KEY, 4);
    ep.add_client(
        "app",
        Client {
            secret: Some("s".into()),
            user: "u".into(),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let src = source(
        dir.path(),
        &format!("grant: client_credentials\ntoken_url: {}\nclient_id: app\nclient_secret: s\nrefresh_at: 0.5\n", ep.url),
        &[],
    );
    let token = src.access_token("u").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    ep.set_fault(Some(Fault::ServerError));
    assert_eq!(
        src.access_token("u").await.unwrap(),
        token,
        "still valid: kept"
    );
    assert_eq!(ep.refused().len(), 1, "a refresh was tried");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        src.access_token("u").await.unwrap_err().is_transient(),
        "expired: no token"
    );
    ep.set_fault(None);
    assert_ne!(src.access_token("u").await.unwrap(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_by_another_process_is_picked_up_without_a_restart() {
    let ep = TokenEndpoint::start(KEY, 300);
    ep.add_client(
        "app",
        Client {
            rotate: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let seed = ep.grant_refresh_token("app", "u");
    let daemon = source(dir.path(), &refresh_config(&ep.url), &[("RT", &seed)]);
    daemon.access_token("u").await.unwrap();
    ep.revoke_all();
    let token = daemon.access_token("u").await.unwrap();
    daemon.invalidate("u", &token).await;
    assert!(daemon.access_token("u").await.unwrap_err().needs_relogin());
    assert!(daemon.needs_relogin());
    // `oauth2 login` in another process stores a new token for the same credential.
    let cli = source(dir.path(), &refresh_config(&ep.url), &[("RT", &seed)]);
    cli.adopt(&popbridge::secret::Secret::new(
        ep.grant_refresh_token("app", "u"),
    ))
    .await
    .unwrap();
    daemon.access_token("u").await.unwrap();
    assert!(!daemon.needs_relogin());
}
