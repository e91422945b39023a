//! The HTTP side: the client (OpenSSL through reqwest's native-tls), the API's URLs, and the
//! classification of Gmail's error answers, apart from the retry loop that acts on it.

use super::config::GmailSettings;
use crate::sink::DeliveryError;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

pub fn build_client(s: &GmailSettings) -> Result<reqwest::Client, String> {
    crate::sink::http::client_builder(s.timeout, s.concurrency, s.ca_file.as_deref())?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `base` + path segments (each percent-encoded) + query pairs.
pub fn url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, DeliveryError> {
    let mut u = base.clone();
    u.path_segments_mut()
        .map_err(|()| DeliveryError::sink_down("`api_base` cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    Ok(u)
}

/// Google's error document: `{"error": {"code", "message", "errors": [{"reason"}], "status"}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorDoc {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// The reason codes and message of an error body (empty when it is not Google's JSON).
pub fn parse_error(body: &[u8]) -> (Vec<String>, String) {
    let doc: ErrorDoc = serde_json::from_slice(body).unwrap_or_default();
    let mut reasons: Vec<String> = doc.error.errors.into_iter().map(|e| e.reason).collect();
    if !doc.error.status.is_empty() {
        reasons.push(doc.error.status);
    }
    let message = if doc.error.message.is_empty() {
        String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string()
    } else {
        doc.error.message
    };
    (reasons, message)
}

/// The one scope that covers everything the sink does (import, labels, the duplicate search).
pub const SCOPE: &str = "https://www.googleapis.com/auth/gmail.modify";

/// The least-privilege scopes that cover it, from the gmail v1 discovery document's
/// per-method `scopes`: `messages.import` takes `gmail.insert` (or `gmail.modify`,
/// `mail.google.com`); `labels.list`/`labels.create` take `gmail.labels`; the duplicate
/// search (`messages.list` with `q`, `messages.get` with `format=raw`) needs
/// `gmail.readonly` (`gmail.metadata` allows neither a query nor raw content). None of the
/// three sends, deletes or changes existing mail.
pub const MINIMAL_SCOPES: &str = "https://www.googleapis.com/auth/gmail.insert \
     https://www.googleapis.com/auth/gmail.labels https://www.googleapis.com/auth/gmail.readonly";

/// A "too fast" answer: Google's per-user or per-project rate limit (429, or 403 with
/// `rateLimitExceeded`/`userRateLimitExceeded`).
pub fn is_rate_limit(status: StatusCode, body: &[u8]) -> bool {
    let (reasons, _) = parse_error(body);
    status.as_u16() == 429
        || reasons.iter().any(|r| {
            r.eq_ignore_ascii_case("rateLimitExceeded")
                || r.eq_ignore_ascii_case("userRateLimitExceeded")
        })
}

/// What one Gmail error answer means at `now`. `user` only feeds the message.
pub fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &[u8],
    user: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> DeliveryError {
    let code = status.as_u16();
    let (reasons, message) = parse_error(body);
    let has = |r: &str| reasons.iter().any(|x| x.eq_ignore_ascii_case(r));
    let detail = format!("Gmail HTTP {code} for {user}: {message}");
    let later = retry_after.and_then(|v| super::super::webhook::service::parse_retry_after(v, now));
    if has("dailyLimitExceeded") {
        // This account waits (not the sink's other accounts) until Google's day ends, or
        // until the server's Retry-After if it names a time.
        let until = later
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map_or_else(|| super::quota::next_pacific_midnight(now), |d| now + d);
        return DeliveryError::Paused {
            message: format!(
                "{detail} (the daily Gmail API quota is used up: {user} is paused until {}, \
                 when it resets; its messages wait on the POP3 server)",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            until,
        };
    }
    if code == 429 || has("rateLimitExceeded") || has("userRateLimitExceeded") {
        return DeliveryError::Retryable {
            message: format!("{detail} (rate limited: backing off)"),
            retry_after: later,
        };
    }
    if code == 413 || has("uploadTooLarge") || message.to_ascii_lowercase().contains("too large") {
        return DeliveryError::permanent(format!(
            "{detail} (the message is too large for Gmail: import takes at most 150 MB)"
        ));
    }
    match code {
        401 => DeliveryError::sink_down(format!(
            "{detail} (the access token is refused even after a refresh: authorise the \
             account again)"
        )),
        403 => DeliveryError::sink_down(format!(
            "{detail} (no permission: the token needs the scope {SCOPE}; for Workspace \
             service accounts, grant it in domain-wide delegation)"
        )),
        404 => {
            DeliveryError::sink_down(format!("{detail} (no such user: check `user`/`accounts`)"))
        }
        408 | 500..=599 => DeliveryError::Retryable {
            message: detail,
            retry_after: later,
        },
        _ => DeliveryError::permanent(detail),
    }
}

/// A request that got no answer: worth retrying (after a search for what it may have done).
pub fn classify_error(e: &reqwest::Error) -> DeliveryError {
    let text = crate::sink::http::describe(e);
    if e.is_builder() {
        DeliveryError::permanent(format!("Gmail: cannot build the request: {text}"))
    } else if e.is_timeout() {
        DeliveryError::retryable(format!("Gmail: timed out: {text}"))
    } else {
        DeliveryError::retryable(format!("Gmail: no answer: {text}"))
    }
}

/// The answer's error, its body read capped.
pub async fn error_from(resp: reqwest::Response, user: &str) -> DeliveryError {
    error_and_body(resp, user).await.0
}

/// The answer's error and the error body it was read from (capped).
pub async fn error_and_body(resp: reqwest::Response, user: &str) -> (DeliveryError, Vec<u8>) {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = crate::sink::http::read_capped(resp, crate::sink::http::BODY_CAP)
        .await
        .unwrap_or_default();
    let e = classify(
        status,
        retry_after.as_deref(),
        &body,
        user,
        chrono::Utc::now(),
    );
    (e, body.to_vec())
}
