//! The stub delivered in place of a message too big for its target: the original's own header
//! fields (so it sorts, threads and reads like the message), a marker field, and a short
//! text part that lists the attachments and links to the original in the offload bucket.
//!
//! The text names no target and no limit: one stored stub serves every sink that stubs the
//! message (see `stub.rs`).

use super::{stub_scan, Link};
use std::fmt::Write;

/// The marker field, present only in stubs.
pub const MARKER: &str = "X-Popbridge-Stub";

/// Original fields left out of the stub: the MIME structure it no longer has, signatures its
/// new body would break, and a marker an incoming message might carry (only ours may).
const DROPPED: &[&str] = &[
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-description",
    "content-length",
    "mime-version",
    "lines",
    "dkim-signature",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "x-popbridge-stub",
];

/// The header section of `raw` (up to the first empty line, or all of it), each field with its
/// continuation lines, line ends as found: for a stored stub, which is small.
fn fields(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut field_start: Option<usize> = None;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| start + p + 1);
        let line = &raw[start..end];
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            break;
        }
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        if !folded {
            if let Some(s) = field_start {
                out.push(&raw[s..start]);
            }
            field_start = Some(start);
        }
        start = end;
    }
    if let Some(s) = field_start {
        out.push(&raw[s..start]);
    }
    out
}

/// The field's name, lower case (`None` for a line without a colon).
fn name_of(field: &[u8]) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    Some(
        String::from_utf8_lossy(&field[..colon])
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Appends `field` with CRLF line ends.
fn push_crlf(out: &mut Vec<u8>, field: &[u8]) {
    for line in field.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        out.extend_from_slice(bare);
        out.extend_from_slice(b"\r\n");
    }
}

/// `12.3 MB`, `512 bytes`: sizes for people (decimal units, as mail clients show them).
pub fn human(size: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if size < 1000 {
        return format!("{size} bytes");
    }
    let mut v = size as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The stub of the message read from `original` (`size` bytes, SHA-256 `sha256`), stored at
/// `link`. CRLF line ends; the text part is UTF-8 (8bit when it needs it). The original is
/// streamed ([`stub_scan::scan`]): memory stays bounded whatever its size.
pub fn build_from(
    original: impl std::io::BufRead,
    sha256: &str,
    size: u64,
    link: &Link,
) -> std::io::Result<Vec<u8>> {
    Ok(build_scanned(
        &stub_scan::scan(original)?,
        sha256,
        size,
        link,
    ))
}

/// The stub of the message `raw`, held in memory (tests, small messages).
#[cfg(test)]
pub fn build(raw: &[u8], sha256: &str, size: u64, link: &Link) -> Vec<u8> {
    let scanned = stub_scan::scan(raw).unwrap_or_default();
    build_scanned(&scanned, sha256, size, link)
}

fn build_scanned(scanned: &stub_scan::Scanned, sha256: &str, size: u64, link: &Link) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for field in &scanned.fields {
        match name_of(field) {
            Some(name) if DROPPED.contains(&name.as_str()) => {}
            Some(_) => push_crlf(&mut out, field),
            None => {}
        }
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "This message ({}) was too large for this mailbox.",
        human(size)
    );
    text.push_str(
        "popbridge stored the original, unchanged, and delivered this summary instead.\n\n",
    );
    text.push_str("The original message (open it with your mail program):\n");
    let _ = writeln!(text, "{}", link.url);
    match &link.expires_at {
        Some(at) => {
            let _ = writeln!(
                text,
                "This link works until {at}; after that, ask your administrator for the original\n\
                 (sha256 {sha256})."
            );
        }
        None => {
            let _ = writeln!(text, "(sha256 {sha256})");
        }
    }
    if scanned.fields_left_out > 0 {
        let _ = writeln!(
            text,
            "\n{} header field(s) of the original were too large to copy here; the original has them.",
            scanned.fields_left_out
        );
    }
    let list = &scanned.attachments;
    if list.is_empty() {
        text.push_str("\nNo attachments.\n");
    } else {
        let _ = writeln!(text, "\nAttachments ({}):", list.len());
        for a in list {
            let _ = writeln!(text, "- {} ({}, {})", a.name, a.content_type, human(a.size));
        }
    }
    if scanned.attachments_not_listed > 0 {
        let _ = writeln!(
            text,
            "- and {} more, not listed here.",
            scanned.attachments_not_listed
        );
    }
    if scanned.incomplete {
        text.push_str(
            "The structure of the original is too deep or too large to follow to its end: \
             it may hold attachments not listed here.\n",
        );
    }
    out.extend_from_slice(format!("{MARKER}: sha256={sha256}; size={size}\r\n").as_bytes());
    out.extend_from_slice(b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    let encoding = if text.is_ascii() { "7bit" } else { "8bit" };
    out.extend_from_slice(format!("Content-Transfer-Encoding: {encoding}\r\n\r\n").as_bytes());
    for line in text.lines() {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The `sha256=` of a stub's marker field, if `raw` is a stub.
pub fn marker(raw: &[u8]) -> Option<(String, u64)> {
    let field = fields(raw)
        .into_iter()
        .find(|f| name_of(f).as_deref() == Some("x-popbridge-stub"))?;
    let text = String::from_utf8_lossy(field);
    let value = text.split_once(':')?.1;
    let mut sha = None;
    let mut size = None;
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("sha256", v)) => sha = Some(v.trim().to_string()),
            Some(("size", v)) => size = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((sha?, size?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MSG: &[u8] = b"Return-Path: <a@example.org>\r\nReceived: from x\r\n\tby y; Mon, 2 Mar 2026 10:11:12 +0100\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nFrom: Alice <a@example.org>\r\nTo: b@example.org\r\nCc: c@example.org\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 2 Mar 2026 10:11:12 +0100\r\nMessage-ID: <big@example.org>\r\nX-Popbridge-Stub: sha256=forged; size=1\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename*=UTF-8''%C3%A9t%C3%A9.png\r\n\r\nPNGDATA\r\n--b1--\r\n";

    fn link() -> Link {
        Link {
            url: "https://files.example.com/offload/abc".into(),
            expires_at: Some("2026-12-08T10:00:00Z".into()),
        }
    }

    #[test]
    fn keeps_the_original_fields_and_drops_mime_and_signatures() {
        let stub = build(MSG, "abc", 123_456_789, &link());
        let text = String::from_utf8(stub.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        for kept in [
            "From: Alice <a@example.org>",
            "To: b@example.org",
            "Cc: c@example.org",
            "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
            "Date: Mon, 2 Mar 2026 10:11:12 +0100",
            "Message-ID: <big@example.org>",
            "Received: from x\r\n\tby y; Mon, 2 Mar 2026 10:11:12 +0100",
            "X-Popbridge-Stub: sha256=abc; size=123456789",
            "Content-Type: text/plain; charset=utf-8",
        ] {
            assert!(head.contains(kept), "{kept:?} in\n{head}");
        }
        for dropped in ["DKIM", "boundary", "forged", "b=abc"] {
            assert!(!head.contains(dropped), "{dropped:?} in\n{head}");
        }
        assert_eq!(head.matches("MIME-Version").count(), 1);
        assert!(
            body.contains("https://files.example.com/offload/abc"),
            "{body}"
        );
        assert!(body.contains("until 2026-12-08T10:00:00Z"), "{body}");
        assert!(body.contains("123.5 MB"), "{body}");
        assert!(
            body.contains("- report.pdf (application/pdf, 10 bytes)"),
            "{body}"
        );
        assert!(body.contains("- été.png (image/png, 7 bytes)"), "{body}");
        assert!(head.contains("Content-Transfer-Encoding: 8bit"));
        assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
        assert_eq!(marker(&stub), Some(("abc".into(), 123_456_789)));
        assert_eq!(marker(MSG), Some(("forged".into(), 1)));
    }

    #[test]
    fn the_same_input_gives_the_same_bytes_and_lf_input_gives_crlf() {
        assert_eq!(build(MSG, "abc", 1, &link()), build(MSG, "abc", 1, &link()));
        let lf = String::from_utf8_lossy(MSG).replace("\r\n", "\n");
        assert_eq!(
            build(lf.as_bytes(), "abc", 1, &link()),
            build(MSG, "abc", 1, &link())
        );
    }

    #[test]
    fn a_stable_link_says_no_expiry_and_a_bare_message_lists_no_attachments() {
        let stable = Link {
            url: "https://files.example.com/offload/abc".into(),
            expires_at: None,
        };
        let text =
            String::from_utf8(build(b"Subject: x\r\n\r\nbody\r\n", "abc", 5, &stable)).unwrap();
        assert!(!text.contains("until"), "{text}");
        assert!(text.contains("No attachments."), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 7bit"), "{text}");
        // A message without a header/body separator is all header fields.
        let text = String::from_utf8(build(b"Subject: only", "abc", 5, &stable)).unwrap();
        assert!(
            text.starts_with("Subject: only\r\nX-Popbridge-Stub:"),
            "{text}"
        );
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(999), "999 bytes");
        assert_eq!(human(1000), "1.0 kB");
        assert_eq!(human(36_700_160), "36.7 MB");
        assert_eq!(human(3_000_000_000), "3.0 GB");
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: std::io::Read> std::io::Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn the_stub_of_a_64_mb_message_holds_a_bounded_buffer() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.eml");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(b"From: a@example.org\r\nSubject: big\r\nMessage-ID: <big@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: video/mp4; name=\"film.mp4\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").unwrap();
        let line = [b'Q'; 76];
        for _ in 0..860_000 {
            file.write_all(&line).unwrap();
            file.write_all(b"\r\n").unwrap();
        }
        file.write_all(b"--b\r\nContent-Type: image/png; name=\"p.png\"\r\n\r\nPNG\r\n--b--\r\n")
            .unwrap();
        file.into_inner().unwrap().sync_all().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > 64_000_000, "{size}");

        let mut reader = std::io::BufReader::new(Counting {
            inner: std::fs::File::open(&path).unwrap(),
            read: 0,
        });
        let scanned = stub_scan::scan(&mut reader).unwrap();
        assert_eq!(reader.get_ref().read, size, "streamed to the end");
        eprintln!(
            "read {size} bytes holding at most {} (scanner buffers)",
            scanned.peak_buffered
        );
        assert!(
            scanned.peak_buffered < 16 * 1024,
            "held {} bytes at most",
            scanned.peak_buffered
        );
        let stub = String::from_utf8(build_scanned(&scanned, "abc", size, &link())).unwrap();
        assert!(stub.contains("- film.mp4 (video/mp4, 49.0 MB)"), "{stub}");
        assert!(stub.contains("- p.png (image/png, 3 bytes)"), "{stub}");
        assert!(stub.contains("Message-ID: <big@example.org>"), "{stub}");
        assert_eq!(scanned.attachments[0].size, 860_000 * 57);

        // The file path the sink takes gives the same bytes.
        let from_file = build_from(
            std::io::BufReader::new(std::fs::File::open(&path).unwrap()),
            "abc",
            size,
            &link(),
        )
        .unwrap();
        assert_eq!(from_file, stub.into_bytes());
    }

    #[test]
    fn the_stub_says_what_a_cap_left_out() {
        let mut raw = b"From: a@example.org\r\nSubject: ".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 300 * 1024));
        raw.extend_from_slice(b"\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n");
        // Deeper than the scanner follows, with an attachment at the bottom.
        for depth in 1..=40 {
            raw.extend_from_slice(
                format!(
                    "--b{}\r\nContent-Type: multipart/mixed; boundary=b{depth}\r\n\r\n",
                    depth - 1
                )
                .as_bytes(),
            );
        }
        raw.extend_from_slice(
            b"--b40\r\nContent-Type: application/pdf; name=deep.pdf\r\n\r\nPDF\r\n",
        );
        let text = String::from_utf8(build(&raw, "abc", 5, &link())).unwrap();
        assert!(
            text.starts_with("From: a@example.org\r\nX-Popbridge-Stub:"),
            "{text}"
        );
        assert!(
            text.contains("1 header field(s) of the original were too large to copy here"),
            "{text}"
        );
        assert!(
            text.contains("it may hold attachments not listed here"),
            "{text}"
        );
        // A short message says neither.
        let text = String::from_utf8(build(MSG, "abc", 5, &link())).unwrap();
        assert!(
            !text.contains("too large to copy") && !text.contains("not listed"),
            "{text}"
        );
    }
}
