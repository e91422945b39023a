//! What the HTTP sinks (webhook, S3) share: the client, what they say about a request that
//! got no answer, how much of an answer they read, and what of an endpoint they may show.

use crate::sink::DeliveryError;
use futures_util::StreamExt;
use reqwest::Url;
use std::net::IpAddr;

/// The most of an answer body the HTTP sinks read: error bodies only feed messages and XML
/// codes, and a hostile or broken server must not make us buffer without bound.
pub const BODY_CAP: usize = 64 * 1024;

/// An answer's body, at most `cap` bytes of it; the rest is never read (the connection is
/// dropped rather than drained).
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while body.len() < cap {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk?;
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// `scheme://host[:port]` of an endpoint: all that logs and errors show of it, since a path or
/// query may carry a token.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The host is this machine (`localhost`, 127.0.0.0/8, `::1`): plain HTTP never leaves it.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Plain HTTP sends the message and the credentials (signatures, `Authorization`, S3 session
/// tokens) in clear: refused off this machine unless `allow_plaintext: true`. `Ok(Some(_))` is
/// the warning to log when it is accepted.
pub fn check_plaintext(url: &Url, key: &str, allow: bool) -> Result<Option<String>, String> {
    if url.scheme() != "http" {
        return Ok(None);
    }
    if !allow && !is_loopback(url) {
        return Err(format!(
            "`{key}` {} is plain http: messages and credentials would cross the network \
             unencrypted; use https, or set `allow_plaintext: true` if the network is trusted",
            origin(url)
        ));
    }
    Ok(Some(format!(
        "`{key}` {} is plain http: messages and credentials are sent unencrypted",
        origin(url)
    )))
}

/// The cause of a reqwest error, without the URL. reqwest's own text stops at "error sending
/// request for url (...)": the cause (connection refused, certificate verify failed) is in the
/// source chain, and an operator needs it. The URL is left out (the sink's name says which
/// endpoint): a query string may carry a token.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = s.source();
    }
    if text.is_empty() {
        text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(&format!(" for url ({url})"), "");
        }
    }
    text
}

/// The keep-alive client of an HTTP sink: OpenSSL through reqwest's native-tls, no redirects
/// (following one would send signed mail or signed requests elsewhere), a private CA if given.
pub fn client_builder(
    timeout: std::time::Duration,
    max_idle: usize,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder()
        .use_native_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(max_idle)
        .user_agent(concat!("popbridge/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("ca_file {} is not a PEM certificate: {e}", path.display()))?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// A healthcheck that costs the endpoint nothing: a TCP connect to `url`'s host and port
/// within `timeout` (no request is sent, no token spent). `no_host` is the error for a URL
/// without a host.
pub async fn reachable(
    url: &reqwest::Url,
    timeout: std::time::Duration,
    no_host: DeliveryError,
) -> Result<(), DeliveryError> {
    let Some(host) = url.host_str() else {
        return Err(no_host);
    };
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(DeliveryError::retryable(format!(
            "cannot connect to {host}:{port}: {e}"
        ))),
        Err(_) => Err(DeliveryError::retryable(format!(
            "connecting to {host}:{port} timed out"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn origin_leaves_out_path_query_and_user() {
        assert_eq!(
            origin(&url(
                "https://u:pw@hooks.example.com:8443/t/sekrit?token=abc"
            )),
            "https://hooks.example.com:8443"
        );
        assert_eq!(origin(&url("http://127.0.0.1/x")), "http://127.0.0.1");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for u in [
            "http://localhost:1/",
            "http://127.0.0.1/",
            "http://127.9.9.9/",
            "http://[::1]:80/",
        ] {
            assert!(is_loopback(&url(u)), "{u}");
        }
        for u in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://[::2]/",
            "http://localhost.evil.com/",
        ] {
            assert!(!is_loopback(&url(u)), "{u}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_allowed() {
        assert_eq!(check_plaintext(&url("https://h/x"), "url", false), Ok(None));
        let refused = check_plaintext(&url("http://h/x?token=sekrit"), "url", false).unwrap_err();
        assert!(refused.contains("allow_plaintext: true"), "{refused}");
        assert!(!refused.contains("sekrit"), "{refused}");
        let warned = check_plaintext(&url("http://h/x"), "url", true).unwrap();
        assert!(warned.is_some_and(|w| w.contains("unencrypted")));
        assert!(check_plaintext(&url("http://127.0.0.1:9/x"), "url", false)
            .unwrap()
            .is_some());
    }
}
