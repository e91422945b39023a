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
