//! A message's content fingerprint: SHA-256 over its bytes with the parts removed that servers
//! rewrite between sessions, so "is this the message we knew under this UIDL?" has an answer
//! that does not change when a server touches bookkeeping headers.
//!
//! What is ignored: line endings (CRLF and LF hash the same) and, in the header section only,
//! whole fields (with their folded continuation lines) that mbox servers such as GNU mailutils
//! add or rewrite after a message was read (`Status`, `X-UIDL`, …). Everything else counts:
//! two messages that differ in any other header or any body byte differ here.
//!
//! The fingerprint is computed while RETR streams to the spool, in chunks of any size; the
//! result does not depend on how the bytes were split. The header state machine
//! ([`HeaderFilter`]) takes its drop list as a parameter, so the IMAP sink's copy comparison
//! (`sink/imap/compare.rs`) uses the same one with its longer list and 8-bit munging.

use sha2::{Digest, Sha256};

/// Header fields servers add or rewrite on their own (lower case).
const VOLATILE: &[&str] = &[
    "status",
    "x-status",
    "x-uidl",
    // mailutils (and other c-client style mbox servers) number messages for IMAP here.
    "x-uid",
    "x-keywords",
    "x-mozilla-status",
    "x-mozilla-status2",
    "x-imap",
    "x-imapbase",
    "content-length",
    "lines",
];

/// What a [`HeaderFilter`] takes out of a header section. One state machine serves the
/// content fingerprint ([`BOOKKEEPING`]) and the IMAP sink's copy comparison (its own list of
/// delivery headers, with Cyrus' 8-bit munging), so the two cannot drift apart in how they
/// find fields, folded lines and the end of the header section.
pub struct HeaderRules {
    /// Field names dropped with their continuation lines (lower case).
    pub drop: &'static [&'static str],
    /// Every 8-bit byte in the header section becomes `X` (Cyrus' `munge8bit`).
    pub munge_8bit: bool,
}

/// The fingerprint's rules: the mbox bookkeeping fields, bytes as they are.
pub const BOOKKEEPING: HeaderRules = HeaderRules {
    drop: VOLATILE,
    munge_8bit: false,
};

/// A header line is classified by its field name; a longer prefix than this without a colon
/// is none of the dropped names, so nothing more is buffered per line.
const NAME_MAX: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a header line.
    LineStart,
    /// Reading a header field name into `head`.
    Name,
    /// In a header line that counts.
    Keep,
    /// In a dropped header field (or its continuation): passed on to nobody.
    Drop,
    /// After the empty line: everything counts.
    Body,
}

/// Streaming header filter: bytes in, in chunks of any size, and the bytes that count out,
/// the same at any chunking. Line endings are left alone (an empty line is `\n` or `\r\n`).
#[derive(Clone)]
pub struct HeaderFilter {
    rules: &'static HeaderRules,
    state: State,
    /// The start of the current header line, until its name is known.
    head: Vec<u8>,
    /// The current header field is dropped (continuation lines follow it).
    dropping: bool,
    out: Vec<u8>,
}

impl HeaderFilter {
    pub fn new(rules: &'static HeaderRules) -> Self {
        Self {
            rules,
            state: State::LineStart,
            head: Vec::with_capacity(NAME_MAX),
            dropping: false,
            out: Vec::new(),
        }
    }

    fn munge(&self, b: u8) -> u8 {
        if self.rules.munge_8bit && b >= 0x80 {
            b'X'
        } else {
            b
        }
    }

    fn is_dropped(&self, name: &[u8]) -> bool {
        let name = name.trim_ascii_end();
        self.rules
            .drop
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
    }

    /// Passes what counts of `bytes` to `emit`.
    pub fn update(&mut self, bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
        if self.state == State::Body {
            emit(bytes);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for (i, &b) in bytes.iter().enumerate() {
            match self.state {
                State::Body => {
                    // Switched in this chunk: the rest goes straight through.
                    emit(&out);
                    out.clear();
                    emit(&bytes[i..]);
                    break;
                }
                State::LineStart => match b {
                    b'\n' => {
                        out.push(b);
                        self.state = State::Body;
                    }
                    b' ' | b'\t' => {
                        self.state = if self.dropping {
                            State::Drop
                        } else {
                            out.push(b);
                            State::Keep
                        };
                    }
                    _ => {
                        self.head.clear();
                        self.head.push(self.munge(b));
                        self.state = State::Name;
                    }
                },
                State::Name => {
                    // A CR alone on a line ("\r\n") is the empty line.
                    if b == b'\n' && self.head == b"\r" {
                        out.extend_from_slice(b"\r\n");
                        self.head.clear();
                        self.state = State::Body;
                    } else if b == b':' || b == b'\n' || self.head.len() >= NAME_MAX {
                        self.dropping = b == b':' && self.is_dropped(&self.head);
                        if !self.dropping {
                            out.extend_from_slice(&self.head);
                            out.push(self.munge(b));
                        }
                        self.head.clear();
                        self.state = match (b, self.dropping) {
                            (b'\n', _) => State::LineStart,
                            (_, true) => State::Drop,
                            (_, false) => State::Keep,
                        };
                    } else {
                        let m = self.munge(b);
                        self.head.push(m);
                    }
                }
                State::Keep => {
                    out.push(self.munge(b));
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
                State::Drop => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
            }
        }
        emit(&out);
        out.clear();
        self.out = out;
    }

    /// The end of the message: a header line still waiting for its name's end counts.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.state == State::Name {
            emit(&std::mem::take(&mut self.head));
        }
    }
}

/// Streaming fingerprint: feed chunks with [`Fingerprint::update`], then [`Fingerprint::finish`].
#[derive(Clone)]
pub struct Fingerprint {
    hasher: Sha256,
    headers: HeaderFilter,
    /// The last byte was a CR whose partner we have not seen yet.
    pending_cr: bool,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    pub fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            headers: HeaderFilter::new(&BOOKKEEPING),
            pending_cr: false,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        // Line endings: CRLF becomes LF, a lone CR stays.
        while !bytes.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if bytes[0] != b'\n' {
                    self.feed(b"\r");
                }
            }
            match bytes.iter().position(|&b| b == b'\r') {
                Some(i) => {
                    self.feed(&bytes[..i]);
                    self.pending_cr = true;
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.feed(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// Lowercase hex SHA-256 of the normalised message.
    pub fn finish(mut self) -> String {
        if self.pending_cr {
            self.pending_cr = false;
            self.feed(b"\r");
        }
        let hasher = &mut self.hasher;
        self.headers.finish(&mut |b| hasher.update(b));
        hex::encode(self.hasher.finalize())
    }

    /// Bytes with LF line ends.
    fn feed(&mut self, bytes: &[u8]) {
        let hasher = &mut self.hasher;
        self.headers.update(bytes, &mut |b| hasher.update(b));
    }
}

/// The fingerprint of a whole message in memory.
pub fn fingerprint(message: &[u8]) -> String {
    let mut f = Fingerprint::new();
    f.update(message);
    f.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Return-Path: <a@example.org>\r\nSubject: hello\r\n\tfolded\r\nStatus: RO\r\nX-UIDL: 1234\r\n  continued uidl\r\n\r\nbody line\r\nStatus: not a header here\r\n";

    #[test]
    fn same_result_at_every_chunk_size() {
        let whole = fingerprint(MSG);
        for size in [1, 2, 3, 4, 7, 16, 64, 512] {
            let mut f = Fingerprint::new();
            for chunk in MSG.chunks(size) {
                f.update(chunk);
            }
            assert_eq!(f.finish(), whole, "chunk size {size}");
        }
    }

    #[test]
    fn line_endings_do_not_count() {
        let lf: Vec<u8> = String::from_utf8_lossy(MSG)
            .replace("\r\n", "\n")
            .into_bytes();
        assert_eq!(fingerprint(MSG), fingerprint(&lf));
    }

    #[test]
    fn bookkeeping_headers_do_not_count() {
        let without = b"Return-Path: <a@example.org>\r\nSubject: hello\r\n\tfolded\r\n\r\nbody line\r\nStatus: not a header here\r\n";
        assert_eq!(fingerprint(MSG), fingerprint(without));
        let rewritten = b"Return-Path: <a@example.org>\r\nstatus : O\r\nSubject: hello\r\n\tfolded\r\nX-Status: A\r\n\r\nbody line\r\nStatus: not a header here\r\n";
        assert_eq!(fingerprint(MSG), fingerprint(rewritten));
        // What GNU mailutils pop3d writes into an mbox at the end of a session.
        let mailutils = b"Return-Path: <a@example.org>\r\nSubject: hello\r\n\tfolded\r\nX-UIDL: 9f.1.1\r\nX-IMAPbase: 1796141213 3\r\nX-UID: 1\r\nStatus: OR\r\n\r\nbody line\r\nStatus: not a header here\r\n";
        assert_eq!(fingerprint(MSG), fingerprint(mailutils));
    }

    #[test]
    fn any_other_change_counts() {
        let base = fingerprint(MSG);
        let other_subject = String::from_utf8_lossy(MSG).replace("hello", "hellO");
        assert_ne!(base, fingerprint(other_subject.as_bytes()));
        // A bookkeeping header's name inside the body is body text.
        let body = String::from_utf8_lossy(MSG).replace("Status: not", "Status: nOt");
        assert_ne!(base, fingerprint(body.as_bytes()));
        // The folded line belongs to Subject, which counts.
        let fold = String::from_utf8_lossy(MSG).replace("\tfolded", "\tFolded");
        assert_ne!(base, fingerprint(fold.as_bytes()));
        // A lone CR is content.
        assert_ne!(fingerprint(b"a: b\n\nx\ry\n"), fingerprint(b"a: b\n\nxy\n"));
    }

    /// Pins the fingerprint, and the `pb2_` key built on it, of every fixture message in its
    /// CRLF and LF forms and with mbox bookkeeping headers added: a change to either is a
    /// change of idempotency keys, which would deliver every message again.
    #[test]
    fn fingerprints_and_keys_of_the_fixtures_are_pinned() {
        let mut out = String::new();
        for (name, message) in golden::inputs() {
            let fp = fingerprint(&message);
            let key = crate::key::IdempotencyKey::derive_content("inbox", "uidl-1", &fp);
            out.push_str(&format!("{name} {fp} {}\n", key.as_str()));
        }
        golden::check("fingerprints.golden", &out);
    }

    #[test]
    fn header_only_and_long_names_are_handled() {
        assert_ne!(fingerprint(b"Subject: a"), fingerprint(b"Subject: b"));
        let long = [b'x'; 100];
        assert_ne!(fingerprint(&long), fingerprint(&long[..99]));
        assert_eq!(fingerprint(b""), fingerprint(b""));
    }
}

#[cfg(test)]
pub(crate) mod golden;
