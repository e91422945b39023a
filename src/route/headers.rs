//! A message's header section as an ordered list of fields, read without I/O. Order matters:
//! the receiving server prepends its fields, so the topmost occurrence of `Delivered-To` is the
//! server's and anything below may have been written by the sender.

/// Header fields in the order they appear, names as written, values unfolded and trimmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, String)>,
}

impl Headers {
    /// Parse the header section at the start of `raw` (stops at the first empty line; bytes
    /// that are not UTF-8 are replaced, RFC 2047 words are left encoded).
    pub fn parse(raw: &[u8]) -> Self {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in raw.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(line);
            if line[0] == b' ' || line[0] == b'\t' {
                // A continuation line (folding) belongs to the field above.
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(text.trim());
                }
                continue;
            }
            if let Some((name, value)) = text.split_once(':') {
                fields.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        Self { fields }
    }

    /// Values of every occurrence of `name` (case-insensitive), topmost first.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `n`th occurrence of `name` (1 = topmost) above the first `stop` field: trace fields
    /// (`Received:`) are prepended by every relay, so a field below the first of them was
    /// written before the message reached the receiving server — by the sender.
    pub fn nth_above<'a>(&'a self, name: &str, n: usize, stop: &str) -> Option<&'a str> {
        let skip = n.checked_sub(1)?;
        self.fields
            .iter()
            .take_while(|(f, _)| !f.eq_ignore_ascii_case(stop))
            .filter(|(f, _)| f.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .nth(skip)
    }

    /// The `n`th occurrence of `name` (1 = topmost).
    pub fn nth<'a>(&'a self, name: &str, n: usize) -> Option<&'a str> {
        let skip = n.checked_sub(1)?;
        self.fields
            .iter()
            .filter(|(f, _)| f.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .nth(skip)
    }
}

/// The address inside a header value: `Name <a@b>` gives `a@b`, a bare address itself.
pub fn address(value: &str) -> &str {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        _ => value.trim(),
    }
}

/// True when the MIME structure in `raw` (a whole message) declares an attachment.
pub fn has_attachment(raw: &[u8]) -> bool {
    let mut scan = AttachmentScan::default();
    raw.split(|b| *b == b'\n').any(|line| scan.line(line))
}

/// A line-by-line search for a MIME part with `Content-Disposition: attachment` or a file
/// name, so a message is scanned as it streams from disk, never held in memory.
#[derive(Default)]
pub struct AttachmentScan {
    in_part_headers: bool,
}

impl AttachmentScan {
    /// Feed one line (with or without its line ending); true once an attachment is seen.
    pub fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"--") {
            self.in_part_headers = true;
            return false;
        }
        if line.is_empty() {
            self.in_part_headers = false;
            return false;
        }
        if !self.in_part_headers {
            return false;
        }
        let lower = line.to_ascii_lowercase();
        let disposition = lower.starts_with(b"content-disposition:");
        if disposition && contains(&lower, b"attachment") {
            return true;
        }
        let field_or_fold = disposition
            || lower.starts_with(b"content-type:")
            || lower.starts_with(b" ")
            || lower.starts_with(b"\t");
        field_or_fold && (contains(&lower, b"filename=") || contains(&lower, b"filename*="))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_unfolds() {
        let h = Headers::parse(
            b"Delivered-To: real@example.com\r\nReceived: from x\r\n\tby y\r\nDelivered-To: forged@example.com\r\n\r\nDelivered-To: body@x\r\n",
        );
        assert_eq!(h.nth("delivered-to", 1), Some("real@example.com"));
        assert_eq!(h.nth("Delivered-To", 2), Some("forged@example.com"));
        assert_eq!(h.nth("Delivered-To", 3), None);
        assert_eq!(h.nth("Received", 1), Some("from x by y"));
        assert_eq!(h.nth("Received", 0), None);
        assert_eq!(
            h.nth_above("Delivered-To", 1, "Received"),
            Some("real@example.com")
        );
        assert_eq!(h.nth_above("Delivered-To", 2, "Received"), None);
    }

    #[test]
    fn reads_the_address_of_a_mailbox() {
        assert_eq!(address("Ann <ann@example.com>"), "ann@example.com");
        assert_eq!(address(" bob@example.com "), "bob@example.com");
    }

    #[test]
    fn finds_attachments_in_parts_only() {
        let with = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Disposition: attachment;\r\n filename=x.pdf\r\n\r\nAAAA\r\n--b--\r\n";
        assert!(has_attachment(with));
        let without =
            b"Content-Type: text/plain\r\n\r\nContent-Disposition: attachment; filename=x\r\n";
        assert!(!has_attachment(without));
    }
}
