//! What a stub needs from a message of any size, read line by line from a stream: the top
//! header fields and the attachment list (name, type, decoded size), with memory bounded by
//! the caps below whatever the message holds: a line-fed scanner without I/O (`Scan`) and a
//! reader loop ([`scan`]) that cuts lines at [`LINE_KEEP`] and counts the rest.
//!
//! Which parts are attachments follows mail-parser's rules (what the stub listed when it
//! parsed the whole message), decided from each part's headers alone: a part is never held.
//! Sizes: identity bodies exact (the line end before a boundary belongs to the boundary),
//! base64 exact (alphabet characters × 3/4, a `=` closing its group of four as mail-parser
//! decodes it), quoted-printable approximate (each `=XX` counts
//! one byte, soft line breaks none), a base64 body with characters outside the alphabet as
//! its raw bytes (mail-parser keeps such a body undecoded).

use mail_parser::{MessageParser, MimeHeaders};
use std::io::BufRead;

/// Bytes of one line held (the rest is counted): enough for any header line worth copying.
pub const LINE_KEEP: usize = 64 * 1024;
/// Bytes of the top header section copied into the stub; fields beyond are left out whole.
pub const TOP_HEADER_KEEP: usize = 256 * 1024;
/// Bytes of one part's header block held; lines beyond are counted, not parsed.
pub const PART_HEADER_KEEP: usize = 64 * 1024;
/// Nested multiparts followed; a deeper one is listed as one part holding all it contains.
pub const MAX_DEPTH: usize = 32;
/// Longest boundary followed (RFC 2046 allows 70).
pub const MAX_BOUNDARY: usize = 256;
/// Attachments listed; more are counted.
pub const MAX_LISTED: usize = 1000;
/// Characters of an attachment's name (and of its type) kept.
const MAX_NAME: usize = 256;

/// One attachment as the stub lists it.
#[derive(Debug, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// What the stub says about the original.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Top header fields in order, each with its continuation lines, line ends as found.
    pub fields: Vec<Vec<u8>>,
    /// Top header fields left out because the section was over [`TOP_HEADER_KEEP`].
    pub fields_left_out: u64,
    pub attachments: Vec<Attachment>,
    /// Attachments found beyond [`MAX_LISTED`].
    pub attachments_not_listed: u64,
    /// The structure could not be followed to the end (too deep, a part header block or a
    /// boundary over its cap): the list may miss attachments.
    pub incomplete: bool,
    /// Most bytes the scanner held at once (its line, header and boundary buffers; not the
    /// reader's own buffer nor the attachment list): for tests.
    pub peak_buffered: usize,
}

/// Per-line counts over the whole line, also the part beyond [`LINE_KEEP`].
#[derive(Debug, Default, Clone, Copy)]
struct LineStats {
    /// Bytes without the line end.
    content: u64,
    /// Bytes of the line end (0 at the end of the input, 1 or 2).
    eol: u64,
    base64: Base64Line,
    base64_bad: bool,
    equals: u64,
    last: Option<u8>,
}

impl LineStats {
    fn add(&mut self, chunk: &[u8]) {
        self.content += chunk.len() as u64;
        for &b in chunk {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => self.base64.char(),
                b'=' => {
                    self.equals += 1;
                    self.base64.pad();
                }
                b' ' | b'\t' | b'\r' | b'-' => {}
                _ => self.base64_bad = true,
            }
        }
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
    }
}

/// The decoded size of a line of base64 as mail-parser decodes it (a `=` ends a group of
/// four, whatever the text after it), whatever the state the line starts in: the characters
/// before the first `=` depend on it, everything after does not.
#[derive(Debug, Default, Clone, Copy)]
struct Base64Line {
    head: u64,
    padded: bool,
    tail_bytes: u64,
    tail_state: u8,
}

impl Base64Line {
    fn char(&mut self) {
        if !self.padded {
            self.head += 1;
            return;
        }
        self.tail_state += 1;
        if self.tail_state == 4 {
            self.tail_bytes += 3;
            self.tail_state = 0;
        }
    }

    fn pad(&mut self) {
        if !self.padded {
            self.padded = true;
            return;
        }
        self.tail_bytes += padded(self.tail_state);
        self.tail_state = 0;
    }

    /// Decoded bytes and the state after the line, from `state` (characters of the group
    /// begun before it).
    fn apply(&self, state: u8) -> (u64, u8) {
        let t = u64::from(state) + self.head;
        let bytes = 3 * (t / 4);
        let rest = (t % 4) as u8;
        if !self.padded {
            return (bytes, rest);
        }
        (bytes + padded(rest) + self.tail_bytes, self.tail_state)
    }
}

/// Bytes a `=` completes from a group holding `state` characters.
fn padded(state: u8) -> u64 {
    match state {
        1 | 2 => 1,
        3 => 2,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Multipart,
    TextPlain,
    TextHtml,
    TextOther,
    Message,
    Inline,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Base64,
    QuotedPrintable,
}

/// One open multipart.
#[derive(Debug)]
struct Frame {
    boundary: Vec<u8>,
    subtype: Subtype,
    /// Parts begun so far (1 = the first).
    parts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subtype {
    Mixed,
    Alternative,
    Related,
    Digest,
    Other,
}

/// The leaf part whose body is streaming past.
#[derive(Debug)]
struct Leaf {
    /// Listed as an attachment (when `base64_bad` is false; a bad base64 body always is).
    attachment: bool,
    name: String,
    content_type: String,
    encoding: Encoding,
    raw: u64,
    base64: u64,
    base64_state: u8,
    base64_bad: bool,
    qp: u64,
    /// The line end of the last line, counted only if another body line follows.
    pending_eol: u64,
}

#[derive(Debug)]
enum Phase {
    TopHeader,
    /// Between a multipart's header and its first boundary, or after its closing one.
    Skip,
    PartHeader,
    Body(Leaf),
}

/// The line-fed scanner.
#[derive(Debug)]
struct Scan {
    phase: Phase,
    stack: Vec<Frame>,
    /// Top fields kept so far and their total size.
    top_size: usize,
    /// The top field being read, `None` once it is over the cap (then only counted).
    field: Option<Vec<u8>>,
    field_open: bool,
    block: Vec<u8>,
    block_full: bool,
    out: Scanned,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            phase: Phase::TopHeader,
            stack: Vec::new(),
            top_size: 0,
            field: None,
            field_open: false,
            block: Vec::new(),
            block_full: false,
            out: Scanned::default(),
        }
    }
}

/// Reads `reader` to its end and scans it: memory is [`LINE_KEEP`] plus the scanner's caps,
/// whatever the length of the input or of its lines.
pub fn scan(mut reader: impl BufRead) -> std::io::Result<Scanned> {
    let mut scan = Scan::default();
    let mut kept: Vec<u8> = Vec::with_capacity(1024);
    let mut stats = LineStats::default();
    let mut started = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        started = true;
        let (part, ended) = match chunk.iter().position(|&b| b == b'\n') {
            Some(p) => (&chunk[..p], true),
            None => (chunk, false),
        };
        let room = LINE_KEEP.saturating_sub(kept.len());
        kept.extend_from_slice(&part[..part.len().min(room)]);
        stats.add(part);
        let used = part.len() + usize::from(ended);
        reader.consume(used);
        if ended {
            finish_line(&mut scan, &mut kept, &mut stats, 1);
            started = false;
        }
    }
    if started {
        finish_line(&mut scan, &mut kept, &mut stats, 0);
    }
    Ok(scan.finish())
}

/// Hands one line to the scanner: a CR before the LF is part of the line end.
fn finish_line(scan: &mut Scan, kept: &mut Vec<u8>, stats: &mut LineStats, lf: u64) {
    let mut s = *stats;
    s.eol = lf;
    if lf == 1 && s.last == Some(b'\r') {
        s.content -= 1;
        s.eol = 2;
        // The CR was counted as whitespace, nothing else to undo.
        if kept.len() as u64 > s.content {
            kept.pop();
        }
        s.last = kept.last().copied();
    }
    scan.peak(kept.capacity());
    scan.line(kept, s);
    kept.clear();
    *stats = LineStats::default();
}

impl Scan {
    /// Notes what is held now: the scanner's buffers plus `extra` (a line, a block in hand).
    fn peak(&mut self, extra: usize) {
        let held = extra
            + self.top_size
            + self.field.as_ref().map_or(0, Vec::capacity)
            + self.block.capacity()
            + self
                .stack
                .iter()
                .map(|f| f.boundary.capacity())
                .sum::<usize>();
        self.out.peak_buffered = self.out.peak_buffered.max(held);
    }

    /// One line, `text` its first [`LINE_KEEP`] bytes without the line end.
    fn line(&mut self, text: &[u8], stats: LineStats) {
        let phase = std::mem::replace(&mut self.phase, Phase::Skip);
        self.phase = match phase {
            Phase::TopHeader => self.top_header_line(text, stats),
            Phase::PartHeader if self.boundary(text).is_none() => {
                if text.is_empty() {
                    self.part_headers()
                } else {
                    self.block_line(text, stats);
                    Phase::PartHeader
                }
            }
            Phase::Body(mut leaf) if self.boundary(text).is_none() => {
                leaf.raw += leaf.pending_eol + stats.content;
                leaf.pending_eol = stats.eol;
                let (bytes, state) = stats.base64.apply(leaf.base64_state);
                leaf.base64 += bytes;
                leaf.base64_state = state;
                leaf.base64_bad |= stats.base64_bad;
                let soft = stats.last == Some(b'=') && stats.content as usize == text.len();
                let escapes = stats.equals.saturating_sub(u64::from(soft));
                leaf.qp += stats.content.saturating_sub(2 * escapes + u64::from(soft))
                    + if soft { 0 } else { stats.eol };
                Phase::Body(leaf)
            }
            Phase::Skip if self.boundary(text).is_none() => Phase::Skip,
            other => {
                // A boundary line of an open multipart.
                match other {
                    Phase::Body(leaf) => self.close(leaf),
                    // A part whose header block a boundary ends: a part without a body.
                    Phase::PartHeader => {
                        if let Phase::Body(leaf) = self.part_headers() {
                            self.close(leaf);
                        }
                    }
                    _ => {}
                }
                self.at_boundary(text)
            }
        };
    }

    fn top_header_line(&mut self, text: &[u8], stats: LineStats) -> Phase {
        if text.is_empty() && stats.content == 0 {
            self.end_field();
            let block = self.top_block();
            self.field_open = false;
            return self.headers_parsed(block);
        }
        let folded = matches!(text.first(), Some(b' ' | b'\t'));
        if !folded {
            self.end_field();
            self.field_open = true;
            self.field = Some(Vec::new());
        }
        if !self.field_open {
            // A continuation line with no field above it: left out, as before.
            return Phase::TopHeader;
        }
        let whole = stats.content as usize == text.len();
        let fits = self
            .field
            .as_ref()
            .is_some_and(|f| whole && self.top_size + f.len() + text.len() + 2 <= TOP_HEADER_KEEP);
        if fits {
            if let Some(f) = self.field.as_mut() {
                f.extend_from_slice(text);
                f.extend_from_slice(if stats.eol == 2 { b"\r\n" } else { b"\n" });
            }
        } else {
            self.field = None;
        }
        Phase::TopHeader
    }

    fn end_field(&mut self) {
        if !self.field_open {
            return;
        }
        match self.field.take() {
            Some(mut f) => {
                f.shrink_to_fit();
                self.top_size += f.len();
                self.out.fields.push(f);
            }
            None => self.out.fields_left_out += 1,
        }
        self.field_open = false;
    }

    /// The kept top `Content-*` fields as one header block: all the structure needs, so the
    /// rest of the section is not copied again.
    fn top_block(&self) -> Vec<u8> {
        let mime = |f: &&Vec<u8>| {
            f.get(..8)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"content-"))
        };
        let mut block = Vec::new();
        for f in self.out.fields.iter().filter(mime) {
            block.extend_from_slice(f);
        }
        block
    }

    fn block_line(&mut self, text: &[u8], stats: LineStats) {
        let whole = stats.content as usize == text.len();
        if self.block_full || !whole || self.block.len() + text.len() + 2 > PART_HEADER_KEEP {
            self.block_full = true;
            return;
        }
        self.block.extend_from_slice(text);
        self.block.extend_from_slice(b"\r\n");
    }

    fn part_headers(&mut self) -> Phase {
        if self.block_full {
            self.out.incomplete = true;
        }
        let block = std::mem::take(&mut self.block);
        self.block_full = false;
        self.headers_parsed(block)
    }

    /// The index in the stack of the multipart whose boundary `text` is, innermost first.
    fn boundary(&self, text: &[u8]) -> Option<(usize, bool)> {
        let rest = text.strip_prefix(b"--")?;
        self.stack.iter().enumerate().rev().find_map(|(i, f)| {
            let after = rest.strip_prefix(f.boundary.as_slice())?;
            let (closing, after) = match after.strip_prefix(b"--") {
                Some(a) => (true, a),
                None => (false, after),
            };
            after
                .iter()
                .all(|b| b.is_ascii_whitespace())
                .then_some((i, closing))
        })
    }

    fn at_boundary(&mut self, text: &[u8]) -> Phase {
        let Some((i, closing)) = self.boundary(text) else {
            return Phase::Skip;
        };
        // Inner multiparts left open end here too.
        self.stack.truncate(i + 1);
        if closing {
            self.stack.pop();
            return Phase::Skip;
        }
        if let Some(f) = self.stack.last_mut() {
            f.parts += 1;
        }
        self.block.clear();
        self.block_full = false;
        Phase::PartHeader
    }

    /// Decides what the part with headers `block` is, as mail-parser would.
    fn headers_parsed(&mut self, mut block: Vec<u8>) -> Phase {
        block.extend_from_slice(b"\r\n");
        self.peak(block.capacity());
        let parent = self.stack.last().map(|f| (f.subtype, f.parts));
        let info = PartInfo::parse(&block, parent.map(|p| p.0));
        if info.kind == Kind::Multipart {
            match info.boundary {
                Some(b) if b.len() <= MAX_BOUNDARY && self.stack.len() < MAX_DEPTH => {
                    self.stack.push(Frame {
                        boundary: b,
                        subtype: info.subtype,
                        parts: 0,
                    });
                    return Phase::Skip;
                }
                Some(_) => self.out.incomplete = true,
                None => {}
            }
        }
        let first = parent.is_none_or(|(_, parts)| parts == 1);
        let in_related = parent.is_some_and(|(s, _)| s == Subtype::Related);
        let in_alternative = parent.is_some_and(|(s, _)| s == Subtype::Alternative);
        let kind = match info.kind {
            Kind::Multipart => Kind::TextOther,
            k => k,
        };
        let inline = matches!(kind, Kind::TextPlain | Kind::TextHtml | Kind::Inline)
            && !info.disposition_attachment
            && (first || !in_related && (kind == Kind::Inline || !info.has_name));
        let attachment = match kind {
            Kind::TextPlain | Kind::TextHtml if in_alternative => false,
            Kind::TextOther if in_alternative => true,
            Kind::TextPlain | Kind::TextHtml | Kind::TextOther => !inline,
            Kind::Multipart | Kind::Message | Kind::Inline | Kind::Other => true,
        };
        Phase::Body(Leaf {
            attachment,
            name: info.name,
            content_type: info.content_type,
            encoding: info.encoding,
            raw: 0,
            base64: 0,
            base64_state: 0,
            base64_bad: false,
            qp: 0,
            pending_eol: 0,
        })
    }

    fn close(&mut self, leaf: Leaf) {
        let bad = leaf.encoding == Encoding::Base64 && leaf.base64_bad;
        if !leaf.attachment && !bad {
            return;
        }
        let size = match leaf.encoding {
            Encoding::Base64 if !bad => leaf.base64,
            Encoding::QuotedPrintable => leaf.qp,
            _ => leaf.raw,
        };
        if self.out.attachments.len() >= MAX_LISTED {
            self.out.attachments_not_listed += 1;
            return;
        }
        self.out.attachments.push(Attachment {
            name: leaf.name,
            content_type: leaf.content_type,
            size,
        });
    }

    /// The end of the input: a part still open (no closing boundary) ends here.
    fn finish(mut self) -> Scanned {
        self.peak(0);
        match std::mem::replace(&mut self.phase, Phase::Skip) {
            Phase::TopHeader => self.end_field(),
            Phase::Body(mut leaf) => {
                // Without a boundary after it, the last line end is the part's (as mail-parser).
                leaf.raw += leaf.pending_eol;
                self.close(leaf);
            }
            Phase::PartHeader => {
                if let Phase::Body(leaf) = self.part_headers() {
                    self.close(leaf);
                }
            }
            Phase::Skip => {}
        }
        self.out
    }
}

/// What the stub needs from one part's header block.
struct PartInfo {
    kind: Kind,
    subtype: Subtype,
    boundary: Option<Vec<u8>>,
    name: String,
    content_type: String,
    encoding: Encoding,
    disposition_attachment: bool,
    has_name: bool,
}

impl PartInfo {
    /// mail-parser on the header block only (RFC 2047 and 2231 decoding as before); a block
    /// it cannot read is a part without headers.
    fn parse(block: &[u8], parent: Option<Subtype>) -> Self {
        // mail-parser must not take the delivery down with it (see the webhook payload).
        let parsed = std::panic::catch_unwind(|| {
            MessageParser::default()
                .parse_headers(block)
                .map(|m| Self::from_message(&m, parent))
        });
        parsed
            .ok()
            .flatten()
            .unwrap_or_else(|| Self::without_headers(parent))
    }

    fn without_headers(parent: Option<Subtype>) -> Self {
        Self {
            kind: if parent == Some(Subtype::Digest) {
                Kind::Message
            } else {
                Kind::TextPlain
            },
            subtype: Subtype::Other,
            boundary: None,
            name: "(no name)".to_string(),
            content_type: "application/octet-stream".to_string(),
            encoding: Encoding::Identity,
            disposition_attachment: false,
            has_name: false,
        }
    }

    fn from_message(m: &mail_parser::Message<'_>, parent: Option<Subtype>) -> Self {
        let mut info = Self::without_headers(parent);
        if let Some(name) = m.attachment_name() {
            info.name = one_line(name);
        }
        info.disposition_attachment = m.content_disposition().is_some_and(|d| d.is_attachment());
        info.encoding = match m.content_transfer_encoding() {
            Some(e) if e.eq_ignore_ascii_case("base64") => Encoding::Base64,
            Some(e) if e.eq_ignore_ascii_case("quoted-printable") => Encoding::QuotedPrintable,
            _ => Encoding::Identity,
        };
        let Some(ct) = m.content_type() else {
            return info;
        };
        info.has_name = ct.has_attribute("name");
        // Cut like a name: a thousand listed parts stay a few hundred kilobytes at most.
        info.content_type = one_line(&match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        });
        let sub = ct.subtype();
        info.kind = match ct.ctype() {
            "multipart" => Kind::Multipart,
            "text" => match sub {
                Some("plain") => Kind::TextPlain,
                Some("html") => Kind::TextHtml,
                _ => Kind::TextOther,
            },
            "image" | "audio" | "video" => Kind::Inline,
            "message" if matches!(sub, Some("rfc822" | "global")) => Kind::Message,
            _ => Kind::Other,
        };
        info.subtype = match sub {
            Some("mixed") => Subtype::Mixed,
            Some("alternative") => Subtype::Alternative,
            Some("related") => Subtype::Related,
            Some("digest") => Subtype::Digest,
            _ => Subtype::Other,
        };
        info.boundary = ct.attribute("boundary").map(|b| b.as_bytes().to_vec());
        info
    }
}

/// A name as one line of text (line breaks and other controls become spaces), cut at
/// [`MAX_NAME`] characters.
fn one_line(s: &str) -> String {
    s.chars()
        .take(MAX_NAME)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mail_parser::MessagePart;
    use std::io::Read;

    /// The list as the stub made it before: mail-parser over the whole message in memory.
    fn parsed(raw: &[u8]) -> Vec<Attachment> {
        let Some(m) = MessageParser::default().parse(raw) else {
            return Vec::new();
        };
        m.attachments()
            .map(|a: &MessagePart<'_>| Attachment {
                name: a
                    .attachment_name()
                    .map_or_else(|| "(no name)".to_string(), one_line),
                content_type: a.content_type().map_or_else(
                    || "application/octet-stream".to_string(),
                    |ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_string(),
                    },
                ),
                size: a.contents().len() as u64,
            })
            .collect()
    }

    fn streamed(raw: &[u8]) -> Scanned {
        scan(raw).unwrap()
    }

    #[test]
    fn lists_what_mail_parser_lists_for_every_fixture() {
        let mut with_attachments = 0;
        for entry in std::fs::read_dir("tests/fixtures/eml").unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let crlf = std::fs::read(&path).unwrap();
            let lf = String::from_utf8_lossy(&crlf).replace("\r\n", "\n");
            for raw in [crlf.as_slice(), lf.as_bytes()] {
                let expected = parsed(raw);
                with_attachments += usize::from(!expected.is_empty());
                let got = streamed(raw);
                assert_eq!(got.attachments, expected, "{}", path.display());
                assert!(!got.incomplete);
            }
        }
        assert!(with_attachments >= 4, "fixtures with attachments found");
    }

    /// Parts of every kind, nested: what mail-parser lists, the streamed scan lists.
    const NESTED: &[u8] = b"From: a@example.org\r\nSubject: nested\r\nContent-Type: multipart/mixed; boundary=\"out\"\r\n\r\npreamble\r\n--out\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhell=C3=B6 =\r\nworld\r\n--alt\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n--rel\r\nContent-Type: text/html\r\n\r\n<img src=cid:x>\r\n--rel\r\nContent-Type: image/gif; name=\"x.gif\"\r\nContent-ID: <x>\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--rel--\r\n--alt\r\nContent-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\n--alt--\r\n--out\r\nContent-Type: text/csv; name=\"=?UTF-8?B?w6l0w6kuY3N2?=\"\r\nContent-Disposition: attachment\r\n\r\na,b\r\n1,2\r\n--out\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0*=UTF-8''long%20;\r\n filename*1=name.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBE\r\nRi0x\r\nLjQ=\r\n--out\r\nContent-Type: text/plain\r\n\r\ninline text after\r\n--out\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: application/zip\r\n\r\nPK\r\n--inner--\r\n--out--\r\nepilogue\r\n";

    #[test]
    fn follows_nested_multiparts_as_mail_parser_does() {
        let got = streamed(NESTED);
        let expected = parsed(NESTED);
        assert_eq!(got.attachments, expected);
        let names: Vec<&str> = got.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x.gif",
                "(no name)",
                "\u{e9}t\u{e9}.csv",
                "long name.pdf",
                "(no name)"
            ]
        );
        assert_eq!(got.attachments[3].size, 8, "base64 decoded exactly");
        assert!(!got.incomplete);
        // The same with LF line ends.
        let lf = String::from_utf8_lossy(NESTED).replace("\r\n", "\n");
        assert_eq!(streamed(lf.as_bytes()).attachments, parsed(lf.as_bytes()));
    }

    #[test]
    fn the_same_list_whatever_the_read_size() {
        let expected = streamed(NESTED).attachments;
        for cap in [1, 2, 3, 4, 7, 16, 64, 512] {
            let reader = std::io::BufReader::with_capacity(cap, NESTED);
            assert_eq!(
                scan(reader).unwrap().attachments,
                expected,
                "capacity {cap}"
            );
        }
    }

    #[test]
    fn an_inner_multipart_left_open_ends_at_the_outer_boundary() {
        let raw = b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\n12345\r\n--out\r\nContent-Type: image/png; name=b.png\r\n\r\n123\r\n--out--\r\n";
        let got = streamed(raw);
        let names: Vec<(&str, u64)> = got
            .attachments
            .iter()
            .map(|a| (a.name.as_str(), a.size))
            .collect();
        assert_eq!(names, [("a.pdf", 5), ("b.png", 3)]);
        // Without any closing boundary, the last part runs to the end of the input.
        let open = b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\nAAAA\r\n";
        // mail-parser gives up decoding there and lists the 12 encoded bytes.
        assert_eq!(parsed(open)[0].size, 12);
        assert_eq!(streamed(open).attachments[0].size, 6);
    }

    #[test]
    fn a_boundary_inside_a_body_is_not_a_boundary_line() {
        // "LS1iMQ==" is the base64 of "--b1"; " --b1" and "--b1x" are no boundary lines.
        let raw = b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nLS1iMQ==\r\nLS1iMQ==\r\n--b1\r\nContent-Type: text/plain; name=b.txt\r\nContent-Disposition: attachment\r\n\r\n --b1\r\n--b1x\r\n--b1\r\nContent-Type: image/png; name=c.png\r\n\r\nx\r\n--b1--\r\n";
        let got = streamed(raw);
        let sizes: Vec<u64> = got.attachments.iter().map(|a| a.size).collect();
        // mail-parser takes any "--b1" for a boundary and lists b.txt as 1 byte.
        assert_eq!(sizes, [8, 12, 1]);
        assert_eq!(
            parsed(raw)[0],
            got.attachments[0],
            "padding mid-body as mail-parser"
        );
    }

    /// A reader of `head`, then `fill` repeated up to `len` bytes, then `tail`: a big message
    /// without holding it.
    struct Endless {
        head: Vec<u8>,
        fill: Vec<u8>,
        len: u64,
        tail: Vec<u8>,
        at: u64,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let head = self.head.len() as u64;
            let (src, off): (&[u8], u64) = if self.at < head {
                (&self.head, self.at)
            } else if self.at < head + self.len {
                let off = (self.at - head) % self.fill.len() as u64;
                let left = head + self.len - self.at;
                let n = (self.fill.len() as u64 - off)
                    .min(left)
                    .min(buf.len() as u64) as usize;
                buf[..n].copy_from_slice(&self.fill[off as usize..off as usize + n]);
                self.at += n as u64;
                return Ok(n);
            } else {
                (&self.tail, self.at - head - self.len)
            };
            let rest = &src[off as usize..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.at += n as u64;
            Ok(n)
        }
    }

    fn endless(head: &[u8], fill: &[u8], len: u64, tail: &[u8]) -> std::io::BufReader<Endless> {
        std::io::BufReader::new(Endless {
            head: head.to_vec(),
            fill: fill.to_vec(),
            len,
            tail: tail.to_vec(),
            at: 0,
        })
    }

    /// What README promises: the caps together stay under 512 KiB.
    const BOUND: usize = 512 * 1024;

    #[test]
    fn an_endless_header_line_is_counted_and_left_out() {
        let reader = endless(
            b"From: a@example.org\r\nSubject: ",
            b"x",
            20 << 20,
            b"\r\nTo: b@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png; name=p.png\r\n\r\nPNG\r\n--b--\r\n",
        );
        let got = scan(reader).unwrap();
        let fields: Vec<String> = got
            .fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert_eq!(
            fields,
            [
                "From: a@example.org\r\n",
                "To: b@example.org\r\n",
                "Content-Type: multipart/mixed; boundary=b\r\n"
            ]
        );
        assert_eq!(got.fields_left_out, 1);
        assert_eq!(
            got.attachments.len(),
            1,
            "the structure after it is followed"
        );
        assert!(got.peak_buffered <= BOUND, "{}", got.peak_buffered);
    }

    #[test]
    fn a_top_header_section_over_its_cap_keeps_the_fields_that_fit() {
        let reader = endless(
            b"From: a@example.org\r\n",
            b"Received: from somewhere by somewhere else\r\n",
            44 * 24_000,
            b"Subject: late\r\n\r\nbody\r\n",
        );
        let got = scan(reader).unwrap();
        let kept: usize = got.fields.iter().map(Vec::len).sum();
        assert!(kept <= TOP_HEADER_KEEP, "{kept}");
        assert!(got.fields_left_out > 10_000, "{}", got.fields_left_out);
        assert_eq!(got.fields[0], b"From: a@example.org\r\n");
        assert_eq!(got.fields.len() as u64 + got.fields_left_out, 24_002);
        // A short field after the cap still fits when room is left (here exactly).
        assert_eq!(got.fields.last().unwrap(), b"Subject: late\r\n");
        assert!(got.peak_buffered <= BOUND, "{}", got.peak_buffered);
    }

    #[test]
    fn an_endless_part_header_block_is_counted_and_says_the_list_may_be_incomplete() {
        let reader = endless(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\n",
            b"X-Filler: 0123456789abcdef0123456789abcdef\r\n",
            44 * 700_000,
            b"\r\nPDF\r\n--b\r\nContent-Type: image/png; name=b.png\r\n\r\nPNG\r\n--b--\r\n",
        );
        let got = scan(reader).unwrap();
        assert!(got.incomplete);
        let names: Vec<&str> = got.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a.pdf", "b.png"]);
        assert!(got.peak_buffered <= BOUND, "{}", got.peak_buffered);
    }
}
