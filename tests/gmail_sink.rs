//! The Gmail sink against an in-process Gmail API (`support::gmail`) that follows Google's
//! published contract: multipart and resumable imports byte for byte, labels, the duplicate
//! search after an unanswered import, rate limits, the daily quota and token refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
#[path = "support/token_endpoint.rs"]
#[allow(dead_code)]
mod token_endpoint;

use async_trait::async_trait;
use popbridge::key::IdempotencyKey;
use popbridge::secret::Secret;
use popbridge::sink::gmail::config::Account;
use popbridge::sink::gmail::{AccessToken, GmailSettings, GmailSink, TokenError};
use popbridge::sink::{DeliveryError, Sink, SpooledMessage};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::gmail::{Fault, GmailServer};

const TOKEN: &str = "ya29.test-token";
const USER: &str = "alice@example.com";

fn spool(dir: &Path, name: &str, body: &[u8], seen_before: bool) -> SpooledMessage {
    SpooledMessage {
        seen_before,
        ..support::spool::spool(dir, name, body)
    }
}

fn mail(id: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: test {id}\r\n\
         Message-ID: <{id}@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    // Bytes of every value, and a line that looks like a multipart boundary.
    m.extend_from_slice(b"--popbridge_not_the_boundary\r\n\xe4\xf6\xfc\r\n");
    let mut i = 0u32;
    while m.len() < body_len {
        m.extend_from_slice(
            format!("line {i} of {id} with some text to fill it up\r\n").as_bytes(),
        );
        i += 1;
    }
    m
}

/// Settings against the server with the token in a file (the `{mailbox}` template).
fn settings(server: &GmailServer, dir: &Path) -> GmailSettings {
    std::fs::write(dir.join("alice.token"), format!("{TOKEN}\n")).unwrap();
    let mut s = GmailSettings::new(
        server.base.parse().unwrap(),
        "{mailbox}@example.com",
        dir.join("{mailbox}.token"),
    );
    s.timeout = Duration::from_secs(5);
    s.resumable_threshold = 512 * 1024;
    s.chunk_size = 256 * 1024;
    s
}

/// The Gmail test server, a directory for the token and the spool files, and a sink with
/// [`settings`] unchanged.
async fn start() -> (GmailServer, tempfile::TempDir, GmailSink) {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = GmailSink::new("gmail", settings(&server, dir.path())).unwrap();
    (server, dir, sink)
}

/// The `Retry-After` of a retryable error; any other error fails the test.
fn retry_after(e: DeliveryError) -> Option<Duration> {
    match e {
        DeliveryError::Retryable { retry_after, .. } => retry_after,
        other => panic!("{other:?}"),
    }
}

fn key(n: &str) -> IdempotencyKey {
    IdempotencyKey::derive("alice", n)
}

#[tokio::test]
async fn small_message_is_imported_multipart_byte_identical_into_inbox_unread() {
    let (server, dir, sink) = start().await;
    let body = mail("small1", 2000);
    let receipt = sink
        .deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap();
    let stored = server.messages(USER);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].raw, body, "stored bytes differ");
    assert_eq!(stored[0].upload, "multipart");
    assert_eq!(stored[0].label_ids, vec!["INBOX", "UNREAD"]);
    assert_eq!(stored[0].query["internalDateSource"], "dateHeader");
    assert_eq!(stored[0].query["neverMarkSpam"], "false");
    assert!(
        receipt.detail.contains(&stored[0].id) && !receipt.duplicate,
        "{receipt:?}"
    );
}

#[tokio::test]
async fn large_message_is_imported_by_resumable_chunks_byte_identical() {
    let (server, dir, sink) = start().await;
    let body = mail("large1", 700 * 1024);
    sink.deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap();
    let stored = server.messages(USER);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].upload, "resumable");
    assert!(stored[0].raw == body, "stored bytes differ");
    let ranges = server.shared.ranges.lock().unwrap().clone();
    let total = body.len();
    assert_eq!(
        ranges,
        vec![
            format!("bytes 0-262143/{total}"),
            format!("bytes 262144-524287/{total}"),
            format!("bytes 524288-{}/{total}", total - 1),
        ]
    );
}

/// A replica paused past its lease (here: the lease lost while the import waited) imports
/// nothing, multipart or resumable; once owned again the message goes in once.
#[tokio::test]
async fn a_message_whose_mailbox_changed_owner_is_not_imported() {
    use popbridge::sink::{DeliveryError, Ownership};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let sink = GmailSink::new("gmail", settings(&server, dir.path())).unwrap();
    let owned = Arc::new(AtomicBool::new(false));
    for (i, (n, size)) in [("small", 500), ("large", 700 * 1024)]
        .into_iter()
        .enumerate()
    {
        let mut m = spool(dir.path(), n, &mail(n, size), false);
        let flag = owned.clone();
        m.owner = Ownership::new(move || flag.load(Ordering::SeqCst));
        owned.store(false, Ordering::SeqCst);
        match sink.deliver(&m, &key(n)).await {
            Err(DeliveryError::Retryable { message, .. }) => {
                assert!(message.contains("lease"), "{message}")
            }
            other => panic!("{n}: expected a retryable refusal, got {other:?}"),
        }
        assert_eq!(
            server.messages(USER).len(),
            i,
            "{n}: imported without the lease"
        );
        owned.store(true, Ordering::SeqCst);
        sink.deliver(&m, &key(n)).await.unwrap();
    }
    assert_eq!(server.messages(USER).len(), 2);
}

#[tokio::test]
async fn labels_are_created_once_and_applied_with_skip_inbox_and_mark_read() {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s =
        settings(&server, dir.path()).with_labels(vec!["POP/{mailbox}".into(), "Imported".into()]);
    s.skip_inbox = true;
    s.mark_read = true;
    let sink = GmailSink::new("gmail", s).unwrap();
    for n in ["1", "2", "3"] {
        sink.deliver(&spool(dir.path(), n, &mail(n, 500), false), &key(n))
            .await
            .unwrap();
    }
    assert_eq!(server.shared.label_creates.load(Ordering::SeqCst), 2);
    let stored = server.messages(USER);
    assert_eq!(stored.len(), 3);
    for m in &stored {
        let names: Vec<String> = m
            .label_ids
            .iter()
            .map(|id| server.label_name(USER, id).unwrap_or(id.clone()))
            .collect();
        assert_eq!(names, vec!["POP/alice", "Imported"], "{:?}", m.label_ids);
    }
    let lists = server
        .log()
        .iter()
        .filter(|l| l.starts_with("GET") && l.ends_with("/labels"))
        .count();
    assert_eq!(lists, 1, "labels.list once, then the cache");
}

#[tokio::test]
async fn an_unanswered_import_retried_leaves_exactly_one_copy() {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&server, dir.path());
    s.timeout = Duration::from_millis(1500);
    let sink = GmailSink::new("gmail", s).unwrap();
    let body = mail("dropped", 3000);
    server.fault(Fault::HangAfterStore);
    let first = sink
        .deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap_err();
    assert!(first.is_retryable() && !first.is_sink_wide(), "{first:?}");
    assert_eq!(server.messages(USER).len(), 1, "stored without an answer");
    // A new process: the state knew the message, so the sink must search first.
    let again = GmailSink::new("gmail", settings(&server, dir.path())).unwrap();
    let receipt = again
        .deliver(&spool(dir.path(), "1", &body, true), &key("1"))
        .await
        .unwrap();
    assert!(receipt.duplicate, "{receipt:?}");
    assert_eq!(server.messages(USER).len(), 1, "imported twice");
    // The same process remembers the unanswered import too.
    let receipt = sink
        .deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap();
    assert!(receipt.duplicate, "{receipt:?}");
    assert_eq!(server.messages(USER).len(), 1);
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("q=rfc822msgid%3Adropped%40example.org")));
}

#[tokio::test]
async fn a_message_without_message_id_is_found_by_size_and_content() {
    let (server, dir, sink) = start().await;
    let body = b"From: a@example.org\r\nSubject: no id\r\n\r\nhello\r\n".to_vec();
    let other = b"From: a@example.org\r\nSubject: no id\r\n\r\nhellO\r\n".to_vec();
    sink.deliver(&spool(dir.path(), "o", &other, false), &key("o"))
        .await
        .unwrap();
    sink.deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap();
    let receipt = sink
        .deliver(&spool(dir.path(), "1", &body, true), &key("1"))
        .await
        .unwrap();
    assert!(receipt.duplicate, "{receipt:?}");
    let stored = server.messages(USER);
    assert_eq!(stored.len(), 2);
    assert!(
        receipt.detail.contains(&stored[1].id),
        "the same-size other message was taken: {receipt:?}"
    );
    // A seen-before message that is not there is imported.
    let fresh = b"From: a@example.org\r\nSubject: no id\r\n\r\nHELLO\r\n".to_vec();
    let r = sink
        .deliver(&spool(dir.path(), "2", &fresh, true), &key("2"))
        .await
        .unwrap();
    assert!(!r.duplicate);
    assert_eq!(server.messages(USER).len(), 3);
}

#[tokio::test]
async fn rate_limit_is_retryable_with_retry_after_then_succeeds() {
    let (server, dir, sink) = start().await;
    server.fault(Fault::Error(429, "rateLimitExceeded", Some("3")));
    let msg = spool(dir.path(), "1", &mail("rl", 800), false);
    let e = sink.deliver(&msg, &key("1")).await.unwrap_err();
    assert_eq!(retry_after(e), Some(Duration::from_secs(3)));
    assert!(server.messages(USER).is_empty());
    sink.deliver(&msg, &key("1")).await.unwrap();
    assert_eq!(server.messages(USER).len(), 1);
}

/// A message for `mailbox` (its account is `{mailbox}@example.com`).
fn spool_for(dir: &Path, mailbox: &str, name: &str, body: &[u8]) -> SpooledMessage {
    SpooledMessage {
        mailbox: mailbox.into(),
        ..spool(dir, name, body, false)
    }
}

#[tokio::test]
async fn daily_limit_pauses_that_account_until_pacific_midnight_and_not_the_others() {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&server, dir.path());
    std::fs::write(dir.path().join("bob.token"), TOKEN).unwrap();
    let sink = GmailSink::new("gmail", s).unwrap();
    server.exhaust(USER, true);
    let before = popbridge::sink::gmail::quota::next_pacific_midnight(chrono::Utc::now());
    let e = sink
        .deliver(&spool(dir.path(), "1", &mail("dl", 800), false), &key("1"))
        .await
        .unwrap_err();
    let after = popbridge::sink::gmail::quota::next_pacific_midnight(chrono::Utc::now());
    let DeliveryError::Paused { until, message } = &e else {
        panic!("{e:?}")
    };
    assert!(!e.is_sink_wide() && e.is_retryable(), "{e:?}");
    assert!(message.contains("daily Gmail API quota"), "{message}");
    // The next Pacific midnight (a run across midnight itself: the one after).
    assert!(
        *until == before || *until == after,
        "{until} not {before} or {after}"
    );
    assert_eq!(sink.paused_until("alice").unwrap().until, *until);
    assert!(sink.paused_until("bob").is_none());

    // The paused account's next message is not even tried: no request reaches the API.
    let requests = server.log().len();
    let e = sink
        .deliver(&spool(dir.path(), "2", &mail("dl2", 800), false), &key("2"))
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Paused { .. }), "{e:?}");
    assert_eq!(server.log().len(), requests, "a paused account was called");

    // Another account of the same sink carries on.
    sink.deliver(
        &spool_for(dir.path(), "bob", "3", &mail("bob", 800)),
        &key("3"),
    )
    .await
    .unwrap();
    assert_eq!(server.messages("bob@example.com").len(), 1);
    assert!(server.messages(USER).is_empty());
}

#[tokio::test]
async fn imports_to_one_account_are_paced_to_its_quota_units() {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&server, dir.path());
    // 100 units/s (4 imports a second) after a burst of 50 units (2 imports).
    s.quota_units_per_minute = 6050;
    s.quota_burst_units = 50;
    s.concurrency = 8;
    std::fs::write(dir.path().join("bob.token"), TOKEN).unwrap();
    let sink = Arc::new(GmailSink::new("gmail", s).unwrap());
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (sink, body) = (sink.clone(), mail(&format!("paced{i}"), 800));
        let msg = spool(dir.path(), &format!("p{i}"), &body, false);
        tasks.push(tokio::spawn(async move {
            sink.deliver(&msg, &key(&format!("p{i}"))).await.unwrap()
        }));
    }
    // Bob's account has its own bucket (the unit tests in `quota.rs` show it is not queued
    // behind Alice's); here it only has to go through meanwhile.
    sink.deliver(
        &spool_for(dir.path(), "bob", "b", &mail("bob-paced", 800)),
        &key("b"),
    )
    .await
    .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = server.import_times(USER);
    assert_eq!(times.len(), 10);
    times.sort();
    // Between any two imports i < j the server saw (j - i + 1) × 25 units; the bucket allows
    // 50 + 100 units/s × the time between them (plus one import for transit jitter). Without
    // pacing the ten arrive within milliseconds and this fails.
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let units = (j - i + 1) as f64 * 25.0;
            let allowed = 50.0 + 100.0 * (times[j] - times[i]).as_secs_f64() + 25.0;
            assert!(
                units <= allowed,
                "imports {i}..={j}: {units} units in {:?}",
                times[j] - times[i]
            );
        }
    }
}

#[tokio::test]
async fn a_rate_limit_holds_the_account_back_for_retry_after() {
    let (server, dir, sink) = start().await;
    server.fault(Fault::Error(403, "userRateLimitExceeded", Some("1")));
    let msg = spool(dir.path(), "1", &mail("rl403", 800), false);
    let e = sink.deliver(&msg, &key("1")).await.unwrap_err();
    assert_eq!(retry_after(e), Some(Duration::from_secs(1)));
    // Tried again at once (as another message would be): the sink holds it back itself.
    sink.deliver(&msg, &key("1")).await.unwrap();
    let times = server.import_times(USER);
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_secs(1),
        "the retry came {:?} after the rate limit",
        times[1] - times[0]
    );
    assert_eq!(server.messages(USER).len(), 1);
}

/// Tokens that change when invalidated, like an OAuth2 refresh.
struct Rotating {
    generation: AtomicUsize,
    invalidated: AtomicUsize,
}

#[async_trait]
impl AccessToken for Rotating {
    async fn token(&self, _account: &Account) -> Result<Secret, TokenError> {
        Ok(Secret::new(format!(
            "token-{}",
            self.generation.load(Ordering::SeqCst)
        )))
    }
    async fn invalidate(&self, _account: &Account, _token: &Secret) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_401_invalidates_the_token_and_the_refreshed_one_is_used() {
    let server = GmailServer::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = Arc::new(Rotating {
        generation: AtomicUsize::new(0),
        invalidated: AtomicUsize::new(0),
    });
    let sink =
        GmailSink::with_tokens("gmail", settings(&server, dir.path()), tokens.clone()).unwrap();
    sink.deliver(
        &spool(dir.path(), "1", &mail("auth", 800), false),
        &key("1"),
    )
    .await
    .unwrap();
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
    assert_eq!(server.messages(USER).len(), 1);
    // Refused again after the refresh: the sink is down, nothing dead-lettered.
    server.fault(Fault::Unauthorized);
    server.fault(Fault::Unauthorized);
    let e = sink
        .deliver(
            &spool(dir.path(), "2", &mail("auth2", 800), false),
            &key("2"),
        )
        .await
        .unwrap_err();
    assert!(e.is_sink_wide(), "{e:?}");
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_token_file_is_read_again_at_each_request() {
    let (server, dir, sink) = start().await;
    sink.deliver(&spool(dir.path(), "1", &mail("f1", 800), false), &key("1"))
        .await
        .unwrap();
    *server.shared.token.lock().unwrap() = "ya29.rotated".into();
    std::fs::write(dir.path().join("alice.token"), "ya29.rotated\n").unwrap();
    sink.deliver(&spool(dir.path(), "2", &mail("f2", 800), false), &key("2"))
        .await
        .unwrap();
    assert_eq!(server.messages(USER).len(), 2);
}

#[tokio::test]
async fn a_resumable_chunk_without_answer_is_resumed_where_the_session_stands() {
    let server = GmailServer::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&server, dir.path());
    s.timeout = Duration::from_millis(1500);
    let sink = GmailSink::new("gmail", s).unwrap();
    let body = mail("resumed", 600 * 1024);
    server.shared.hang_chunks.store(1, Ordering::SeqCst);
    sink.deliver(&spool(dir.path(), "1", &body, false), &key("1"))
        .await
        .unwrap();
    let stored = server.messages(USER);
    assert_eq!(stored.len(), 1);
    assert!(stored[0].raw == body, "stored bytes differ");
    let ranges = server.shared.ranges.lock().unwrap().clone();
    let total = body.len();
    assert_eq!(
        ranges,
        vec![
            format!("bytes 0-262143/{total}"),
            format!("bytes */{total}"),
            format!("bytes 262144-524287/{total}"),
            format!("bytes 524288-{}/{total}", total - 1),
        ]
    );
}

#[tokio::test]
async fn too_large_is_permanent_with_the_reason() {
    let (server, dir, sink) = start().await;
    server.fault(Fault::Error(413, "uploadTooLarge", None));
    let e = sink
        .deliver(&spool(dir.path(), "1", &mail("big", 800), false), &key("1"))
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("too large"), "{e}");
}

/// With `oauth2:` the sink gets its tokens from the credential's token source (here a client
/// credentials grant at a local token endpoint): no token file, and a refused token is
/// replaced by a fresh one from the endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn an_oauth2_credential_supplies_and_refreshes_the_tokens() {
    use std::sync::atomic::AtomicU64;
    // A token endpoint that hands out token-1, token-2, … for client credentials.
    let issued = Arc::new(AtomicU64::new(0));
    let counter = issued.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(serde_json::json!({
                    "access_token": format!("token-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The API accepts only the second token: the first is refused with 401.
    let server = GmailServer::start("token-2").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state: {{ path: ./s.db }}\noauth2:\n  workspace:\n    grant: client_credentials\n    \
         token_url: {token_url}\n    client_id: app\n    client_secret: s3cr3t\n\
         mailboxes:\n  - name: alice\n    pop3: {{ host: pop.example.com, username: a, password: p }}\n    \
         sinks: [gmail]\nsinks:\n  - name: gmail\n    type: gmail\n    api_base: {}\n    \
         allow_plaintext: true\n    user: \"{{mailbox}}@example.com\"\n    oauth2: workspace\n",
        server.base
    );
    let loaded =
        popbridge::config::load_str_with_env(&yaml, &dir.path().join("c.yaml"), |_| None).unwrap();
    let sink = popbridge::app::build_sink(&loaded.config.sinks[0]).unwrap();
    let receipt = sink
        .deliver(
            &spool(dir.path(), "1", &mail("oauth2", 800), false),
            &key("1"),
        )
        .await
        .unwrap();
    assert!(!receipt.duplicate, "{receipt:?}");
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "refused token-1 was replaced"
    );
}

/// A Workspace service account with domain-wide delegation (`grant: jwt_bearer`): the sink
/// asks the token endpoint for a token per target account (`sub` = the account's address,
/// in an RS256 assertion the endpoint verifies), and the API, which accepts a token only for
/// the account it names, takes each account's import. A refused token is replaced once.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_gets_a_token_per_account_with_sub_and_imports_into_each() {
    const KEY: &[u8] = b"gmail-test-signing-key";
    let ep = token_endpoint::TokenEndpoint::start(KEY, 300);
    let dir = tempfile::tempdir().unwrap();
    let (sa_file, public) =
        token_endpoint::service_account(dir.path(), "bridge@project.iam.example", &ep.url);
    ep.add_service_account("bridge@project.iam.example", public);
    let server = GmailServer::start_jwt(KEY).await;
    let yaml = format!(
        "state: {{ path: ./s.db }}\noauth2:\n  workspace:\n    provider: google\n    \
         grant: jwt_bearer\n    service_account_file: {sa}\n    scope: \"{scope}\"\n\
         mailboxes:\n  - name: alice\n    pop3: {{ host: pop.example.com, username: a, password: p }}\n    \
         sinks: [gmail]\n  - name: bob\n    pop3: {{ host: pop.example.com, username: b, password: p }}\n    \
         sinks: [gmail]\nsinks:\n  - name: gmail\n    type: gmail\n    api_base: {api}\n    \
         allow_plaintext: true\n    user: \"{{mailbox}}@example.com\"\n    oauth2: workspace\n",
        sa = sa_file.display(),
        scope = popbridge::sink::gmail::service::MINIMAL_SCOPES,
        api = server.base,
    );
    let loaded =
        popbridge::config::load_str_with_env(&yaml, &dir.path().join("c.yaml"), |_| None).unwrap();
    let sink = popbridge::app::build_sink(&loaded.config.sinks[0]).unwrap();
    sink.deliver(
        &spool(dir.path(), "1", &mail("sa-alice", 800), false),
        &key("1"),
    )
    .await
    .unwrap();
    sink.deliver(
        &spool_for(dir.path(), "bob", "2", &mail("sa-bob", 800)),
        &key("2"),
    )
    .await
    .unwrap();
    assert_eq!(server.messages(USER).len(), 1);
    assert_eq!(server.messages("bob@example.com").len(), 1);
    let jwt = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    assert_eq!(
        ep.issued(jwt),
        2,
        "one token per account: {:?}",
        ep.refused()
    );
    // Refused once (as after a revocation): a fresh token for that account, then it goes.
    server.fault(Fault::Unauthorized);
    sink.deliver(
        &spool(dir.path(), "3", &mail("sa-alice-2", 800), false),
        &key("3"),
    )
    .await
    .unwrap();
    assert_eq!(ep.issued(jwt), 3);
    assert_eq!(server.messages(USER).len(), 2);
}
