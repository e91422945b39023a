//! The few XML bits S3 and STS answers need: the text of one element, and escaping. S3 error
//! and multipart answers are flat enough that a full XML parser would buy nothing.

/// Text of the first `<name>…</name>`, entities decoded.
pub fn tag(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(unescape(&text[start..start + len]))
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_code_and_etag() {
        let e = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce &amp; retry</Message></Error>";
        assert_eq!(tag(e, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(tag(e, "Message").as_deref(), Some("Reduce & retry"));
        assert_eq!(tag(e, "Nope"), None);
        let c = "<CompleteMultipartUploadResult><ETag>&quot;abc-3&quot;</ETag></CompleteMultipartUploadResult>";
        assert_eq!(tag(c, "ETag").as_deref(), Some("\"abc-3\""));
        assert_eq!(escape("\"a&b\""), "&quot;a&amp;b&quot;");
    }
}
