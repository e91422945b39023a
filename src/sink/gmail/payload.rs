//! What goes over the wire besides the message bytes: the import metadata (`labelIds`), the
//! `multipart/related` framing around the streamed message, and the search that finds an
//! earlier import of a message.

use std::io::Read;
use std::path::Path;

/// The import's JSON metadata: a Message resource with only `labelIds`.
pub fn metadata(label_ids: &[String]) -> Vec<u8> {
    serde_json::json!({ "labelIds": label_ids })
        .to_string()
        .into_bytes()
}

/// The `multipart/related` body of an upload (Google's multipart upload protocol): the JSON
/// metadata part, then the `message/rfc822` part, which is streamed from the spool between
/// `head` and `tail` so the message never sits in memory.
pub struct Multipart {
    pub content_type: String,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

/// `boundary` is random (128 bits): a message containing the line `--boundary` by chance is
/// not a practical concern, and scanning would mean reading the message twice.
pub fn multipart(meta: &[u8], boundary: &str) -> Multipart {
    let mut head = Vec::with_capacity(meta.len() + 160);
    head.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
    );
    head.extend_from_slice(meta);
    head.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
    );
    Multipart {
        content_type: format!("multipart/related; boundary={boundary}"),
        head,
        tail: format!("\r\n--{boundary}--\r\n").into_bytes(),
    }
}

/// A fresh boundary.
pub fn boundary() -> String {
    format!("popbridge_{:032x}", rand::random::<u128>())
}

/// Header sections longer than this are cut: Message-ID comes early in practice.
const MAX_HEADER: usize = 256 * 1024;

/// The message's `Message-ID` (without angle brackets), read from the header section only.
pub fn message_id(path: &Path) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_HEADER as u64)
        .read_to_end(&mut head)?;
    Ok(message_id_in(&head))
}

/// The first `Message-ID` of a header section (unfolded), without angle brackets.
pub fn message_id_in(raw: &[u8]) -> Option<String> {
    let mut lines = raw.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"message-id")
        {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                break;
            }
            value.push_str(String::from_utf8_lossy(next).trim_end_matches('\r'));
            lines.next();
        }
        let id = value.trim().trim_start_matches('<').trim_end_matches('>');
        return Some(id.trim().to_string()).filter(|i| !i.is_empty());
    }
    None
}

/// Bytes Gmail's size of a stored message may exceed ours by (headers it may add).
pub const SIZE_MARGIN: u64 = 4096;

/// The `q` that finds earlier imports: `rfc822msgid:` when the message has a usable
/// Message-ID; otherwise a size window (`larger:`/`smaller:`) whose candidates are then
/// compared by content. A Message-ID with spaces or quotes cannot be put in a query and is
/// treated as absent.
pub fn search_query(message_id: Option<&str>, size: u64) -> (String, bool) {
    match message_id.filter(|id| {
        id.chars()
            .all(|c| c.is_ascii_graphic() && !"\"()".contains(c))
    }) {
        Some(id) => (format!("rfc822msgid:{id}"), true),
        None => (
            format!(
                "larger:{} smaller:{}",
                size.saturating_sub(1),
                size + SIZE_MARGIN + 1
            ),
            false,
        ),
    }
}
