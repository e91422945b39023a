//! What the HTTP sinks (webhook, S3) say about a request that got no answer.

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
