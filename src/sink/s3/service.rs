//! The HTTP side: one keep-alive client per sink (OpenSSL through reqwest's native-tls), every
//! request signed with SigV4, and each S3 answer classified as retryable or permanent by its
//! XML error code.

use super::config::S3Settings;
use super::credentials::Provider;
use super::sigv4::{self, SigningKeys};
use super::xml;
use crate::sink::DeliveryError;
use reqwest::{Method, StatusCode};

pub fn build_client(s: &S3Settings) -> Result<reqwest::Client, String> {
    crate::sink::http::client_builder(s.timeout, s.concurrency, s.ca_file.as_deref())?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Addresses and signs requests to one bucket.
pub struct Service {
    pub settings: S3Settings,
    pub client: reqwest::Client,
    pub credentials: Provider,
}

/// One S3 call before signing.
pub struct Call<'a> {
    pub method: Method,
    /// Object key; `None` addresses the bucket.
    pub key: Option<&'a str>,
    pub query: &'a [(&'a str, &'a str)],
    /// Extra headers, all signed.
    pub headers: Vec<(&'static str, String)>,
    pub body: reqwest::Body,
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// What S3 said, with the error body read (bounded) when it is not a success.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Service {
    /// `(host header, path)` for a key, path-style or virtual-hosted.
    pub(crate) fn address(&self, key: Option<&str>) -> (String, String) {
        let s = &self.settings;
        let host = s.endpoint.host_str().unwrap_or_default();
        let host = match s.endpoint.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let key_path = key.map(|k| format!("/{}", sigv4::encode_path(k)));
        if s.path_style {
            (
                host,
                format!("/{}{}", s.bucket, key_path.unwrap_or_default()),
            )
        } else {
            (
                format!("{}.{host}", s.bucket),
                key_path.unwrap_or_else(|| "/".into()),
            )
        }
    }

    /// HEAD on an object (`Some(key)`) or on the bucket (`None`).
    pub async fn head(&self, key: Option<&str>) -> Result<Answer, DeliveryError> {
        self.send(Call {
            method: reqwest::Method::HEAD,
            key,
            query: &[],
            headers: Vec::new(),
            body: reqwest::Body::from(""),
            payload_sha256: super::sigv4::EMPTY_SHA256,
        })
        .await
    }

    pub async fn send(&self, call: Call<'_>) -> Result<Answer, DeliveryError> {
        let resp = self.send_streamed(call).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Answers we read whole are small XML (multipart, errors) or empty; cap them anyway. An
        // answer cut short is no answer: a retry finds out what happened (a completed upload is
        // then found by its HEAD).
        let body = crate::sink::http::read_capped(resp, crate::sink::http::BODY_CAP)
            .await
            .map_err(|e| transport_error(&e))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if xml::tag(&body, "Code").as_deref() == Some("ExpiredToken") {
            // Temporary keys died early (revoked, clock skew): fetch new ones on the retry.
            self.credentials.invalidate().await;
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends a signed request and hands back the response with its body unread.
    pub async fn send_streamed(&self, call: Call<'_>) -> Result<reqwest::Response, DeliveryError> {
        let creds = self.credentials.get().await.map_err(|e| {
            if e.is_retryable() {
                DeliveryError::retryable(format!("s3: {e}"))
            } else {
                // No keys, or STS refused ours: no message can go until that is fixed.
                DeliveryError::sink_down(format!("s3: {e}"))
            }
        })?;
        let (host, path) = self.address(call.key);
        let query = sigv4::canonical_query(call.query);
        let url = format!(
            "{}://{host}{path}{}{query}",
            self.settings.endpoint.scheme(),
            if query.is_empty() { "" } else { "?" }
        );
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut headers: Vec<(&str, String)> = vec![
            ("host", host.clone()),
            ("x-amz-date", amz_date.clone()),
            ("x-amz-content-sha256", call.payload_sha256.to_string()),
        ];
        if let Some(t) = &creds.session_token {
            headers.push(("x-amz-security-token", t.expose().to_string()));
        }
        headers.extend(call.headers.iter().map(|(k, v)| (*k, v.clone())));
        let signed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let auth = sigv4::authorization(
            &SigningKeys {
                access_key_id: &creds.access_key_id,
                secret_access_key: creds.secret_access_key.expose(),
            },
            &self.settings.region,
            "s3",
            &amz_date,
            &sigv4::Request {
                method: call.method.as_str(),
                path: &path,
                query: call.query,
                headers: &signed,
                payload_sha256: call.payload_sha256,
            },
        );
        let mut req = self.client.request(call.method.clone(), &url);
        for (k, v) in &headers {
            if *k != "host" {
                req = req.header(*k, v);
            }
        }
        req.header("authorization", auth)
            .body(call.body)
            .send()
            .await
            .map_err(|e| transport_error(&e))
    }
}

/// No answer at all: timeouts and connection failures are worth retrying.
pub fn transport_error(e: &reqwest::Error) -> DeliveryError {
    // reqwest errors never include header values, so no signature or token leaks here.
    let text = crate::sink::http::describe(e);
    if e.is_builder() {
        DeliveryError::permanent(format!("s3: cannot build the request: {text}"))
    } else if e.is_timeout() {
        DeliveryError::retryable(format!("s3: timed out: {text}"))
    } else {
        DeliveryError::retryable(format!("s3: no answer: {text}"))
    }
}

/// S3 error codes that pass with time: throttling, server trouble, expiring keys.
const RETRYABLE_CODES: &[&str] = &[
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "OperationAborted",
    "ConditionalRequestConflict",
    "ExpiredToken",
    "TokenRefreshRequired",
];

/// S3 error codes that say the sink itself is wrong (keys, permissions, bucket, region,
/// encryption key), whatever the message: every message would get the same answer.
const SINK_WIDE_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidToken",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "NoSuchBucket",
    "NotSignedUp",
    "PermanentRedirect",
    "SignatureDoesNotMatch",
];

/// Hints for the codes an operator is most likely to meet.
fn hint(code: &str) -> &'static str {
    match code {
        "AccessDenied" => {
            " (check the IAM policy allows s3:PutObject and s3:GetObject on the bucket)"
        }
        "InvalidAccessKeyId" => " (the access key id is unknown to this endpoint)",
        "SignatureDoesNotMatch" => " (check secret_access_key and region)",
        "NoSuchBucket" => " (create the bucket or fix `bucket`)",
        "PermanentRedirect" | "AuthorizationHeaderMalformed" => {
            " (the bucket is in another region: fix `region`)"
        }
        _ => "",
    }
}

/// A non-success answer as a delivery error, by its XML `<Code>` first, then its status.
pub fn classify(what: &str, status: StatusCode, body: &str) -> DeliveryError {
    let code = xml::tag(body, "Code").unwrap_or_default();
    let message = xml::tag(body, "Message").unwrap_or_default();
    let detail = if code.is_empty() && status == StatusCode::FORBIDDEN {
        // HEAD answers have no body: say what a bare 403 usually means.
        format!(
            "s3: {what}: HTTP 403 (check the keys, and that the IAM policy allows s3:GetObject and s3:ListBucket, without which AWS answers 403 for a missing object)"
        )
    } else if code.is_empty() {
        format!("s3: {what}: HTTP {}", status.as_u16())
    } else {
        format!(
            "s3: {what}: HTTP {} {code}: {message}{}",
            status.as_u16(),
            hint(&code)
        )
    };
    let (retryable, sink_wide) = if code.is_empty() {
        (
            status.is_server_error() || matches!(status.as_u16(), 408 | 429),
            // Body-less answers (HEAD): refused keys, or a bucket in another region.
            matches!(status.as_u16(), 301 | 401 | 403),
        )
    } else {
        (
            RETRYABLE_CODES.contains(&code.as_str()) || status.is_server_error(),
            // 401/403 are about the keys or the policy, whatever the code says.
            SINK_WIDE_CODES.contains(&code.as_str()) || matches!(status.as_u16(), 401 | 403),
        )
    };
    if retryable {
        DeliveryError::retryable(detail)
    } else if sink_wide {
        DeliveryError::sink_down(detail)
    } else {
        DeliveryError::permanent(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, status: u16) -> DeliveryError {
        classify(
            "PUT k",
            StatusCode::from_u16(status).unwrap(),
            &format!("<Error><Code>{code}</Code><Message>m</Message></Error>"),
        )
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for (code, status) in [
            ("SlowDown", 503),
            ("InternalError", 500),
            ("RequestTimeout", 400),
            ("ExpiredToken", 400),
            ("ConditionalRequestConflict", 409),
            ("Whatever", 502),
        ] {
            assert!(err(code, status).is_retryable(), "{code}");
        }
        assert!(classify("HEAD k", StatusCode::SERVICE_UNAVAILABLE, "").is_retryable());
        assert!(classify("HEAD k", StatusCode::TOO_MANY_REQUESTS, "").is_retryable());
    }

    #[test]
    fn credential_and_bucket_errors_are_sink_wide_and_say_what_to_do() {
        for (code, status) in [
            ("AccessDenied", 403),
            ("InvalidAccessKeyId", 403),
            ("SignatureDoesNotMatch", 403),
            ("NoSuchBucket", 404),
            ("PermanentRedirect", 301),
            ("KMS.DisabledException", 400),
            ("NotSignedUp", 403),
            ("SomeNewRefusal", 403),
        ] {
            let e = err(code, status);
            assert!(e.is_sink_wide(), "{code}");
            assert!(e.to_string().contains(code), "{e}");
        }
        assert!(err("NoSuchBucket", 404)
            .to_string()
            .contains("create the bucket"));
        assert!(classify("HEAD k", StatusCode::FORBIDDEN, "").is_sink_wide());
        assert!(classify("HEAD k", StatusCode::UNAUTHORIZED, "").is_sink_wide());
    }

    #[test]
    fn message_specific_errors_stay_permanent() {
        for (code, status) in [
            ("EntityTooSmall", 400),
            ("EntityTooLarge", 400),
            ("BadDigest", 400),
            ("InvalidDigest", 400),
        ] {
            let e = err(code, status);
            assert!(!e.is_retryable() && !e.is_sink_wide(), "{code}");
        }
        assert!(!classify("PUT k", StatusCode::BAD_REQUEST, "").is_retryable());
    }

    #[test]
    fn passing_trouble_is_not_sink_wide() {
        assert!(!err("SlowDown", 503).is_sink_wide());
        assert!(!classify("HEAD k", StatusCode::SERVICE_UNAVAILABLE, "").is_sink_wide());
    }
}
