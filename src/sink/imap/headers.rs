//! The few header fields the IMAP sink needs (INTERNALDATE, finding an earlier copy), read
//! from the start of the spool file: never the whole message.

use chrono::{DateTime, FixedOffset};
use std::io::Read;
use std::path::Path;

/// Header sections longer than this are cut (the fields we want come first in practice).
const MAX_HEADER: u64 = 256 * 1024;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub message_id: Option<String>,
    pub date: Option<String>,
    /// The first (most recent) `Received:` header.
    pub received: Option<String>,
}

/// Reads from the start of the file until the blank line that ends the header section (or
/// `MAX_HEADER`): a delivery reads kilobytes, not the body.
pub fn read(path: &Path) -> std::io::Result<Fields> {
    let mut file = std::fs::File::open(path)?.take(MAX_HEADER);
    let mut head = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        // Look for the end from just before the new bytes, so a split "\n\r\n" is seen.
        let from = head.len().saturating_sub(2);
        head.extend_from_slice(&chunk[..n]);
        let tail = &head[from..];
        if tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n") {
            break;
        }
    }
    Ok(parse(&head))
}

/// Unfolds the header section of `raw` and keeps the first of each wanted field.
pub fn parse(raw: &[u8]) -> Fields {
    let mut out = Fields::default();
    let mut current: Option<(String, String)> = None;
    let finish = |field: Option<(String, String)>, out: &mut Fields| {
        if let Some((name, value)) = field {
            let value = value.trim().to_string();
            let slot = match name.to_ascii_lowercase().as_str() {
                "message-id" => &mut out.message_id,
                "date" => &mut out.date,
                "received" => &mut out.received,
                _ => return,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
    };
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(text.trim());
            }
            continue;
        }
        finish(current.take(), &mut out);
        current = text
            .split_once(':')
            .map(|(n, v)| (n.trim().to_string(), v.to_string()));
    }
    finish(current, &mut out);
    out
}

/// An RFC 5322 date, leniently: comments such as `(CET)` and extra spaces removed.
pub fn parse_date(text: &str) -> Option<DateTime<FixedOffset>> {
    let mut clean = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    DateTime::parse_from_rfc2822(&clean).ok()
}

/// The date of a `Received:` header: what follows its last `;`.
pub fn received_date(received: &str) -> Option<DateTime<FixedOffset>> {
    parse_date(received.rsplit_once(';')?.1)
}

/// INTERNALDATE syntax: `22-Nov-2026 10:00:00 +0100`.
pub fn internaldate(d: &DateTime<FixedOffset>) -> String {
    d.format("%d-%b-%Y %H:%M:%S %z").to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MSG: &[u8] = b"Received: from a.example by b.example with ESMTP;\r\n\tMon, 23 Nov 2026 08:01:02 +0100 (CET)\r\nReceived: from older; Sun, 22 Nov 2026 01:00:00 +0000\r\nDate: Sun, 22 Nov 2026 23:59:00 -0500\r\nmessage-id:  <m1@example.com>\r\nSubject: x\r\n\r\nReceived: in the body; Tue, 1 Dec 2026 00:00:00 +0000\r\n";

    #[test]
    fn first_fields_unfolded_and_body_ignored() {
        let f = parse(MSG);
        assert_eq!(f.message_id.as_deref(), Some("<m1@example.com>"));
        assert_eq!(f.date.as_deref(), Some("Sun, 22 Nov 2026 23:59:00 -0500"));
        let r = f.received.unwrap();
        assert_eq!(
            internaldate(&received_date(&r).unwrap()),
            "23-Nov-2026 08:01:02 +0100"
        );
        assert_eq!(
            internaldate(&parse_date(&f.date.unwrap()).unwrap()),
            "22-Nov-2026 23:59:00 -0500"
        );
    }

    #[test]
    fn fields_are_read_from_the_head_of_a_large_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut body = MSG.to_vec();
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        std::fs::write(&path, &body).unwrap();
        let f = read(&path).unwrap();
        assert_eq!(f.message_id.as_deref(), Some("<m1@example.com>"));
    }

    #[test]
    fn missing_and_broken_fields() {
        assert_eq!(parse(b"Subject: none\n\nbody"), Fields::default());
        assert_eq!(parse(b""), Fields::default());
        assert!(received_date("from x by y").is_none());
        assert!(parse_date("yesterday").is_none());
        // LF-only messages parse the same way.
        assert_eq!(
            parse(b"Message-ID: <lf@x>\nDate: Mon, 23 Nov 2026 08:01:02 +0000\n\n").message_id,
            Some("<lf@x>".into())
        );
    }
}
