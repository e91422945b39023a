//! Unit tests: error classification, multipart framing, the duplicate search query.
#![allow(clippy::unwrap_used)]

use super::payload;
use super::service::classify as classify_at;
use crate::sink::DeliveryError;
use reqwest::StatusCode;

/// 2026-12-01 17:38 UTC: Pacific standard time, midnight there is 08:00 UTC.
fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-12-01T17:38:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &[u8],
    user: &str,
) -> DeliveryError {
    classify_at(status, retry_after, body, user, now())
}

fn google_error(code: u16, reason: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"code": code, "message": message,
        "errors": [{"domain": "usageLimits", "reason": reason, "message": message}]}})
    .to_string()
    .into_bytes()
}

#[test]
fn rate_limits_are_retryable_and_keep_retry_after() {
    for (code, reason) in [
        (429, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
        (403, "rateLimitExceeded"),
    ] {
        let e = classify(
            StatusCode::from_u16(code).unwrap(),
            Some("7"),
            &google_error(code, reason, "slow down"),
            "u",
        );
        match e {
            crate::sink::DeliveryError::Retryable {
                retry_after,
                message,
            } => {
                assert_eq!(
                    retry_after,
                    Some(std::time::Duration::from_secs(7)),
                    "{reason}"
                );
                assert!(message.contains("slow down"), "{message}");
            }
            other => panic!("{code} {reason}: {other:?}"),
        }
    }
}

#[test]
fn daily_limit_pauses_the_account_until_pacific_midnight_and_says_why() {
    let e = classify(
        StatusCode::FORBIDDEN,
        None,
        &google_error(403, "dailyLimitExceeded", "Daily Limit Exceeded"),
        "alice@example.com",
    );
    assert!(!e.is_sink_wide() && e.is_retryable(), "{e:?}");
    match &e {
        DeliveryError::Paused { until, message } => {
            assert_eq!(until.to_rfc3339(), "2026-12-02T08:00:00+00:00");
            assert!(
                message.contains("daily Gmail API quota")
                    && message.contains("alice@example.com is paused until 2026-12-02 08:00 UTC"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A Retry-After, if the server gives one, says better when.
    let e = classify(
        StatusCode::FORBIDDEN,
        Some("3600"),
        &google_error(403, "dailyLimitExceeded", "Daily Limit Exceeded"),
        "u",
    );
    match e {
        DeliveryError::Paused { until, .. } => {
            assert_eq!(until, now() + chrono::Duration::hours(1))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_large_and_invalid_are_permanent_scope_is_sink_wide() {
    let big = classify(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        &google_error(413, "uploadTooLarge", "Message too large"),
        "u",
    );
    assert!(
        !big.is_retryable() && big.to_string().contains("150 MB"),
        "{big}"
    );
    let bad = classify(
        StatusCode::BAD_REQUEST,
        None,
        &google_error(400, "invalidArgument", "Invalid label"),
        "u",
    );
    assert!(
        !bad.is_retryable() && bad.to_string().contains("Invalid label"),
        "{bad}"
    );
    let scope = classify(
        StatusCode::FORBIDDEN,
        None,
        &google_error(403, "insufficientPermissions", "Insufficient Permission"),
        "u",
    );
    assert!(
        scope.is_sink_wide() && scope.to_string().contains("gmail.modify"),
        "{scope}"
    );
    let down = classify(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        b"<html>oops</html>",
        "u",
    );
    assert!(down.is_retryable() && !down.is_sink_wide(), "{down:?}");
}

#[test]
fn multipart_framing_wraps_the_message() {
    let m = payload::multipart(br#"{"labelIds":["INBOX"]}"#, "B");
    assert_eq!(m.content_type, "multipart/related; boundary=B");
    let mut whole = m.head.clone();
    whole.extend_from_slice(b"Subject: x\r\n\r\nhi\r\n");
    whole.extend_from_slice(&m.tail);
    assert_eq!(
        String::from_utf8(whole).unwrap(),
        "--B\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"labelIds\":[\"INBOX\"]}\r\n\
         --B\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n\r\n--B--\r\n"
    );
}

#[test]
fn message_id_is_found_unfolded_and_only_in_the_header() {
    assert_eq!(
        payload::message_id_in(
            b"Subject: a\r\nMessage-ID:\r\n <x@y>\r\n\r\nMessage-ID: <no@no>\r\n"
        ),
        Some("x@y".into())
    );
    assert_eq!(
        payload::message_id_in(b"Subject: a\r\n\r\nMessage-ID: <no@no>\r\n"),
        None
    );
}

#[test]
fn search_uses_the_message_id_else_a_size_window() {
    assert_eq!(
        payload::search_query(Some("a@b"), 10),
        ("rfc822msgid:a@b".into(), true)
    );
    assert_eq!(
        payload::search_query(Some("a b@c"), 10),
        (
            format!("larger:9 smaller:{}", 10 + payload::SIZE_MARGIN + 1),
            false
        )
    );
    assert!(!payload::search_query(None, 10).1);
}

fn parse(yaml: &str) -> Result<super::GmailSettings, String> {
    let raw: super::GmailSinkConfig = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
    raw.validate(std::path::Path::new("/etc/popbridge"))
        .map(|(s, _)| s)
}

#[test]
fn accounts_come_from_templates_or_explicit_entries() {
    let s = parse(
        "user: \"{mailbox}@example.com\"\naccess_token_file: \"tokens/{mailbox}\"\nlabels: [\"POP/{mailbox}\"]\n\
         accounts:\n  bob:\n    user: robert@example.org\n    labels: [Old]\n",
    )
    .unwrap();
    let alice = s.account_for("alice").unwrap();
    assert_eq!(alice.user, "alice@example.com");
    assert_eq!(
        alice.token_file,
        std::path::Path::new("/etc/popbridge/tokens/alice")
    );
    assert_eq!(alice.labels, vec!["POP/alice".to_string()]);
    let bob = s.account_for("bob").unwrap();
    assert_eq!(bob.user, "robert@example.org");
    assert_eq!(
        bob.token_file,
        std::path::Path::new("/etc/popbridge/tokens/bob")
    );
    assert_eq!(bob.labels, vec!["Old".to_string()]);
    assert_eq!(s.api_base.as_str(), "https://gmail.googleapis.com/");
    assert_eq!(
        s.internal_date_source,
        super::InternalDateSource::DateHeader
    );
}

#[test]
fn bad_settings_are_refused() {
    let base = "user: me\naccess_token_file: t\n";
    assert!(parse(&format!("{base}nope: 1\n"))
        .unwrap_err()
        .contains("unknown field"));
    assert!(parse(&format!("{base}chunk_size: 1000\n"))
        .unwrap_err()
        .contains("256 KiB"));
    assert!(parse(&format!("{base}labels: [INBOX]\n"))
        .unwrap_err()
        .contains("skip_inbox"));
    assert!(
        parse(&format!("{base}api_base: http://gmail.example.com\n"))
            .unwrap_err()
            .contains("allow_plaintext")
    );
    let s = parse(&format!("{base}internal_date_source: receivedTime\n")).unwrap();
    assert_eq!(s.internal_date_source.as_str(), "receivedTime");
}

#[test]
fn the_example_config_has_a_gmail_sink_with_templates_and_accounts() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("carol-password");
    std::fs::write(&secret, "carol-secret\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "/run/secrets/carol-pop3-password",
        &secret.to_string_lossy(),
    );
    let loaded = crate::config::load_str_with_env(&text, &path, |name| {
        (name != "APP_WEBHOOK_SECRET")
            .then(|| format!("pw-{name}"))
            .or_else(|| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let gmail = loaded
        .config
        .sinks
        .iter()
        .find_map(|s| match &s.kind {
            crate::config::SinkKind::Gmail(g) => Some(g),
            _ => None,
        })
        .expect("the example has a gmail sink");
    let alice = gmail.account_for("alice").unwrap();
    assert_eq!(alice.user, "alice@gmail.example.com");
    assert_eq!(
        alice.token_file,
        std::path::Path::new("/run/secrets/gmail/alice.token")
    );
    assert_eq!(alice.labels, vec!["POP/alice".to_string()]);
    let carol = gmail.account_for("carol").unwrap();
    assert_eq!(carol.user, "carol.smith@gmail.example.com");
    assert_eq!(
        carol.token_file,
        std::path::Path::new("/run/secrets/gmail/carol.token")
    );
    assert_eq!(carol.labels, vec!["Old mail/Carol".to_string()]);
}

#[test]
fn a_gmail_sink_needs_an_account_for_every_mailbox_it_serves() {
    let text = "state: { path: /tmp/x.db }\nmailboxes:\n  - name: alice\n    pop3: { host: pop.example.com, username: a, password: p }\n    sinks: [gmail]\nsinks:\n  - name: gmail\n    type: gmail\n    accounts:\n      bob: { user: bob@example.com, access_token_file: /t }\n";
    let shown = crate::config::load_str(text, std::path::Path::new("/etc/popbridge/c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("no target account for mailbox alice"),
        "{shown}"
    );
}
