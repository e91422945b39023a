//! The HTTP side: one keep-alive client per sink (OpenSSL through reqwest's native-tls), and
//! the classification of each answer as delivered, worth retrying, or permanent.

use super::config::WebhookSettings;
use crate::sink::DeliveryError;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use std::time::Duration;

pub fn build_client(s: &WebhookSettings) -> Result<reqwest::Client, String> {
    let mut b = crate::sink::http::client_builder(s.timeout, s.concurrency, s.ca_file.as_deref())?;
    if let Some((cert, key)) = &s.client_identity {
        let c = std::fs::read(cert)
            .map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
        let k = std::fs::read(key)
            .map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?;
        let id = reqwest::Identity::from_pkcs8_pem(&c, &k).map_err(|e| {
            format!("client_cert/client_key are not a PEM certificate and PKCS#8 key: {e}")
        })?;
        b = b.identity(id);
    }
    if !s.tls_verify {
        // The origin only: the url's path or query may carry a token.
        tracing::warn!(
            endpoint = %crate::sink::http::origin(&s.url),
            "TLS certificate verification is OFF for this webhook (tls_verify: false)"
        );
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Answers that say the endpoint itself is wrong, whatever the message: credentials (401,
/// 403, 407), no such endpoint (404, 410), no POST there (405), a body type it never takes
/// (415: ours depends on `format` alone). Retrying or dead-lettering each message cannot fix
/// them; an operator must.
const SINK_WIDE: &[u16] = &[401, 403, 404, 405, 407, 410, 415];

/// What one HTTP answer means for the delivery.
pub fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    body_snippet: &str,
) -> Result<u16, DeliveryError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(code);
    }
    let detail = if body_snippet.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {body_snippet}")
    };
    let retryable = matches!(code, 408 | 425 | 429) || status.is_server_error();
    if retryable {
        Err(DeliveryError::Retryable {
            message: detail,
            retry_after: retry_after.and_then(|v| parse_retry_after(v, Utc::now())),
        })
    } else if status.is_redirection() {
        // Every message would be sent to the same redirect: the `url` is what is wrong.
        Err(DeliveryError::sink_down(format!(
            "{detail} (redirects are not followed: set `url` to the final address)"
        )))
    } else if SINK_WIDE.contains(&code) {
        Err(DeliveryError::sink_down(format!(
            "{detail} (the endpoint refuses every message: check `url` and `headers`)"
        )))
    } else {
        Err(DeliveryError::permanent(detail))
    }
}

/// A request that got no answer: timeouts and connection failures are worth retrying; a
/// request that could not even be built is not.
pub fn classify_error(e: &reqwest::Error) -> DeliveryError {
    let text = crate::sink::http::describe(e);
    if e.is_builder() {
        DeliveryError::permanent(format!("cannot build the request: {text}"))
    } else if e.is_timeout() {
        DeliveryError::retryable(format!("timed out: {text}"))
    } else {
        DeliveryError::retryable(format!("no answer: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_codes_deliver() {
        assert_eq!(classify(StatusCode::OK, None, "").unwrap(), 200);
        assert_eq!(classify(StatusCode::NO_CONTENT, None, "").unwrap(), 204);
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_retryable() {
        for code in [408u16, 425, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(classify(s, None, "").unwrap_err().is_retryable(), "{code}");
        }
    }

    #[test]
    fn message_specific_client_errors_are_permanent() {
        for code in [400u16, 409, 413, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            let e = classify(s, None, "nope").unwrap_err();
            assert!(!e.is_retryable() && !e.is_sink_wide(), "{code}");
            assert!(e.to_string().contains(&format!("HTTP {code}: nope")), "{e}");
        }
    }

    #[test]
    fn auth_missing_endpoint_and_redirects_are_sink_wide() {
        for code in [401u16, 403, 404, 405, 407, 410, 415, 301, 302, 307, 308] {
            let s = StatusCode::from_u16(code).unwrap();
            let e = classify(s, None, "nope").unwrap_err();
            assert!(e.is_sink_wide() && e.is_retryable(), "{code}");
            assert!(e.to_string().contains(&format!("HTTP {code}: nope")), "{e}");
        }
        let moved = classify(StatusCode::MOVED_PERMANENTLY, None, "").unwrap_err();
        assert!(moved.to_string().contains("redirects"), "{moved}");
    }

    #[test]
    fn passing_trouble_is_retryable_but_not_sink_wide() {
        let e = classify(StatusCode::SERVICE_UNAVAILABLE, None, "").unwrap_err();
        assert!(e.is_retryable() && !e.is_sink_wide());
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        match classify(StatusCode::SERVICE_UNAVAILABLE, Some("7"), "").unwrap_err() {
            DeliveryError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }
}
