//! Pre-signed GET URLs (SigV4 query signing): a link that lets whoever holds it read one object
//! until it expires, with no keys of their own. Used for big mail offloaded to S3, so a webhook
//! receiver or a mailbox reader can fetch what did not travel inline.

use super::service::Service;
use super::sigv4::{self, SigningKeys};
use crate::sink::DeliveryError;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// AWS accepts at most seven days for `X-Amz-Expires`.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything a query signature covers. Pure: the caller passes the time.
pub struct Presign<'a> {
    pub keys: SigningKeys<'a>,
    /// Temporary keys travel in the URL as `X-Amz-Security-Token`.
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub host: &'a str,
    /// The path as sent, already URI-encoded.
    pub path: &'a str,
    /// `YYYYMMDDTHHMMSSZ`: the signing time, from which the expiry counts.
    pub amz_date: &'a str,
    pub expires: Duration,
}

/// The full URL of a pre-signed GET (only `host` is signed; the body is `UNSIGNED-PAYLOAD`).
pub fn presigned_get(p: &Presign) -> String {
    let credential = format!(
        "{}/{}",
        p.keys.access_key_id,
        sigv4::scope(p.region, "s3", p.amz_date)
    );
    let expires = p.expires.as_secs().to_string();
    let mut query: Vec<(&str, &str)> = vec![
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", &credential),
        ("X-Amz-Date", p.amz_date),
        ("X-Amz-Expires", &expires),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(t) = p.session_token {
        query.push(("X-Amz-Security-Token", t));
    }
    let (creq, _) = sigv4::canonical_request(&sigv4::Request {
        method: "GET",
        path: p.path,
        query: &query,
        headers: &[("host", p.host)],
        payload_sha256: "UNSIGNED-PAYLOAD",
    });
    let signature = sigv4::signature(&p.keys, p.region, "s3", p.amz_date, &creq);
    format!(
        "{}://{}{}?{}&X-Amz-Signature={signature}",
        p.scheme,
        p.host,
        p.path,
        sigv4::canonical_query(&query)
    )
}

/// A pre-signed GET for `key` in the service's bucket, signed `now`, valid for `expires`.
pub async fn link(
    svc: &Service,
    key: &str,
    expires: Duration,
    now: DateTime<Utc>,
) -> Result<String, DeliveryError> {
    let creds = svc.credentials.get().await.map_err(|e| {
        if e.is_retryable() {
            DeliveryError::retryable(format!("s3: {e}"))
        } else {
            DeliveryError::sink_down(format!("s3: {e}"))
        }
    })?;
    let (host, path) = svc.address(Some(key));
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    Ok(presigned_get(&Presign {
        keys: SigningKeys {
            access_key_id: &creds.access_key_id,
            secret_access_key: creds.secret_access_key.expose(),
        },
        session_token: creds.session_token.as_ref().map(|t| t.expose()),
        region: &svc.settings.region,
        scheme: svc.settings.endpoint.scheme(),
        host: &host,
        path: &path,
        amz_date: &amz_date,
        expires: expires.min(MAX_EXPIRY),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)" example.
    #[test]
    fn aws_presigned_url_example() {
        let url = presigned_get(&Presign {
            keys: SigningKeys {
                access_key_id: "AKIAIOSFODNN7EXAMPLE",
                secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            },
            session_token: None,
            region: "us-east-1",
            scheme: "https",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            amz_date: "20130524T000000Z",
            expires: Duration::from_secs(86400),
        });
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn a_session_token_is_signed_into_the_query() {
        let p = |token| Presign {
            keys: SigningKeys {
                access_key_id: "AKID",
                secret_access_key: "secret",
            },
            session_token: token,
            region: "eu-west-1",
            scheme: "http",
            host: "127.0.0.1:9000",
            path: "/b/k",
            amz_date: "20260101T000000Z",
            expires: Duration::from_secs(60),
        };
        let with = presigned_get(&p(Some("tok/en")));
        assert!(with.contains("X-Amz-Security-Token=tok%2Fen&"), "{with}");
        let sig = |u: &str| u.rsplit("X-Amz-Signature=").next().unwrap().to_string();
        assert_ne!(sig(&with), sig(&presigned_get(&p(None))));
    }
}
