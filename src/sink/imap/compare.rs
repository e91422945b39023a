//! "Is the message in the target folder ours?" without trusting the target to keep our bytes:
//! real servers do not. Courier stores LF line ends (and serves CRLF), Cyrus rewrites 8-bit
//! header bytes to `X` (`munge8bit`), delivery paths add `Received:`/`Return-Path:`, and an
//! mbox POP3 source (GNU mailutils) rewrites `Status:`/`X-UIDL:` between our fetches, so the
//! copy we appended before a crash can differ from the message we hold now.
//!
//! [`Normaliser`] removes exactly those differences before hashing with
//! [`crate::content::Fingerprint`] (which already ignores line endings and mbox bookkeeping
//! fields): in the header section, fields that servers add are dropped and every 8-bit byte
//! counts as `X` — the content fingerprint's own header filter ([`HeaderFilter`]) with these
//! rules. Everything else counts, so two different messages still differ.

use crate::content::{Fingerprint, HeaderFilter, HeaderRules};

/// Header fields a server adds or rewrites on delivery or in its mbox bookkeeping (lower
/// case). The mbox ones are also ignored by [`Fingerprint`]; they are here so that
/// [`Normalised::len`] does not count them either.
const DROPPED: &[&str] = &[
    "received",
    "return-path",
    "delivered-to",
    "x-delivered-to",
    "x-original-to",
    "x-envelope-to",
    "envelope-to",
    "status",
    "x-status",
    "x-uidl",
    "x-keywords",
    "x-mozilla-status",
    "x-mozilla-status2",
    "x-imap",
    "x-imapbase",
    "content-length",
    "lines",
];

/// What the comparison drops (and munges) before fingerprinting. `x-uid` is not in the list
/// (the fingerprint drops it anyway); adding it would change `len`, which the golden test pins.
static RULES: HeaderRules = HeaderRules {
    drop: DROPPED,
    munge_8bit: true,
};

/// The normalised fingerprint of a message and how long it is once normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalised {
    pub fingerprint: String,
    /// Bytes hashed, CRs not counted: a lower bound of any stored size of the message.
    pub len: u64,
    /// Bytes seen in total, and line feeds among them: with a margin for added headers,
    /// an upper bound of any stored size (a server that stores CRLF adds at most one CR per
    /// line).
    pub raw_len: u64,
    pub lines: u64,
}

/// Streaming: feed chunks of any size with [`Normaliser::update`].
pub struct Normaliser {
    inner: Fingerprint,
    headers: HeaderFilter,
    len: u64,
    raw_len: u64,
    lines: u64,
}

impl Default for Normaliser {
    fn default() -> Self {
        Self::new()
    }
}

impl Normaliser {
    pub fn new() -> Self {
        Self {
            inner: Fingerprint::new(),
            headers: HeaderFilter::new(&RULES),
            len: 0,
            raw_len: 0,
            lines: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.raw_len += bytes.len() as u64;
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let (len, inner) = (&mut self.len, &mut self.inner);
        self.headers.update(bytes, &mut |b| emit(len, inner, b));
    }

    pub fn finish(mut self) -> Normalised {
        let (len, inner) = (&mut self.len, &mut self.inner);
        self.headers.finish(&mut |b| emit(len, inner, b));
        Normalised {
            fingerprint: self.inner.finish(),
            len: self.len,
            raw_len: self.raw_len,
            lines: self.lines,
        }
    }
}

/// Counts what is hashed (CRs left out) and hashes it.
fn emit(len: &mut u64, inner: &mut Fingerprint, bytes: &[u8]) {
    *len += bytes.iter().filter(|&&b| b != b'\r').count() as u64;
    inner.update(bytes);
}

/// The normalised form of a whole message in memory.
#[cfg(test)]
pub fn normalise(message: &[u8]) -> Normalised {
    let mut n = Normaliser::new();
    n.update(message);
    n.finish()
}

/// The normalised form of a spool file, read in chunks: never the whole message in memory.
pub fn normalise_file(path: &std::path::Path) -> std::io::Result<Normalised> {
    let mut n = Normaliser::new();
    crate::spool::for_each_chunk(std::fs::File::open(path)?, |c| n.update(c))?;
    Ok(n.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MSG: &[u8] = "Message-ID: <n1@example.org>\r\nSubject: Gr\u{fc}\u{df}e\r\n\tfolded \u{e9}\r\nFrom: a@example.org\r\n\r\nbody \u{fc}ber\r\n.dot\r\n"
        .as_bytes();

    fn lf(m: &[u8]) -> Vec<u8> {
        String::from_utf8_lossy(m)
            .replace("\r\n", "\n")
            .into_bytes()
    }

    /// What Cyrus' munge8bit makes of a message: 8-bit header bytes become `X`.
    fn munged(m: &[u8]) -> Vec<u8> {
        let end = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let mut out: Vec<u8> = m[..end]
            .iter()
            .map(|&b| if b >= 0x80 { b'X' } else { b })
            .collect();
        out.extend_from_slice(&m[end..]);
        out
    }

    #[test]
    fn same_result_at_every_chunk_size() {
        let whole = normalise(MSG);
        for size in [1, 2, 3, 5, 8, 64] {
            let mut n = Normaliser::new();
            for chunk in MSG.chunks(size) {
                n.update(chunk);
            }
            assert_eq!(n.finish(), whole, "chunk size {size}");
        }
    }

    #[test]
    fn a_copy_stored_with_lf_line_ends_matches() {
        assert_eq!(normalise(MSG).fingerprint, normalise(&lf(MSG)).fingerprint);
    }

    #[test]
    fn a_copy_with_munged_8bit_header_bytes_matches() {
        let m = munged(MSG);
        assert_ne!(m, MSG);
        assert_eq!(normalise(MSG).fingerprint, normalise(&m).fingerprint);
        assert_eq!(normalise(MSG).fingerprint, normalise(&lf(&m)).fingerprint);
    }

    #[test]
    fn headers_a_server_adds_or_rewrites_do_not_count() {
        let mut added =
            b"Return-Path: <a@example.org>\r\nReceived: from x\r\n\tby y; Mon, 2 Mar 2026 10:11:12 +0100\r\nX-Delivered-To: b@example.org\r\n"
                .to_vec();
        added.extend_from_slice(MSG);
        assert_eq!(normalise(MSG).fingerprint, normalise(&added).fingerprint);
        // mailutils: X-UIDL added at the first RETR, Status rewritten later.
        let text = String::from_utf8_lossy(MSG);
        let first = text.replace("From:", "X-UIDL: 4f2a\r\nStatus: O\r\nFrom:");
        let later = text.replace("From:", "Status: RO\r\nX-UIDL: 4f2a\r\nFrom:");
        assert_eq!(
            normalise(first.as_bytes()).fingerprint,
            normalise(later.as_bytes()).fingerprint
        );
        assert_eq!(
            normalise(MSG).fingerprint,
            normalise(first.as_bytes()).fingerprint
        );
    }

    #[test]
    fn other_changes_still_count() {
        let base = normalise(MSG).fingerprint;
        let text = String::from_utf8_lossy(MSG);
        for changed in [
            text.replace("<n1@", "<n2@"),
            text.replace("body", "Body"),
            // 8-bit bytes in the body are content: only header bytes are munged.
            text.replace("\u{fc}ber", "XXber"),
            text.replace("\tfolded", "\tFolded"),
            // A dropped field's name in the body is body text.
            text.replace(".dot", "Received: x"),
        ] {
            assert_ne!(base, normalise(changed.as_bytes()).fingerprint, "{changed}");
        }
    }

    #[test]
    fn lengths_bound_the_stored_size() {
        let n = normalise(MSG);
        let l = normalise(&lf(MSG));
        assert_eq!(n.len, l.len, "CRs are not counted");
        assert_eq!(n.raw_len, MSG.len() as u64);
        assert_eq!(n.lines, 7);
        assert!(n.len <= lf(MSG).len() as u64);
        let mut added = b"Received: by y; Mon, 2 Mar 2026 10:11:12 +0100\r\n".to_vec();
        added.extend_from_slice(MSG);
        assert_eq!(
            normalise(&added).len,
            n.len,
            "added headers are not counted"
        );
    }

    /// Pins what the copy comparison computes for every fixture form, and for the forms
    /// Courier (LF), Cyrus (8-bit header bytes as `X`) and delivery paths (added `Received:`,
    /// `Return-Path:`) store: the normalised fingerprint and the lengths the size window uses.
    #[test]
    fn normalised_forms_of_the_fixtures_are_pinned() {
        let mut out = String::new();
        for (name, message) in crate::content::golden::inputs() {
            let mut added = b"Return-Path: <a@example.org>\r\nReceived: from x\r\n\tby y; Mon, 2 Mar 2026 10:11:12 +0100\r\n".to_vec();
            added.extend_from_slice(&message);
            for (form, bytes) in [
                ("", message.clone()),
                ("+munged", munged_any(&message)),
                ("+added", added),
            ] {
                let n = normalise(&bytes);
                out.push_str(&format!(
                    "{name}{form} {} {} {} {}\n",
                    n.fingerprint, n.len, n.raw_len, n.lines
                ));
            }
        }
        crate::content::golden::check("normalised.golden", &out);
    }

    /// [`munged`] for messages that may have no header/body separator or LF line ends.
    fn munged_any(m: &[u8]) -> Vec<u8> {
        let end = m
            .windows(2)
            .position(|w| w == b"\n\n")
            .into_iter()
            .chain(m.windows(4).position(|w| w == b"\r\n\r\n"))
            .min()
            .unwrap_or(m.len());
        m.iter()
            .enumerate()
            .map(|(i, &b)| if i < end && b >= 0x80 { b'X' } else { b })
            .collect()
    }

    #[test]
    fn header_only_messages_and_empty_input() {
        assert_ne!(
            normalise(b"Subject: a").fingerprint,
            normalise(b"Subject: b").fingerprint
        );
        assert_eq!(normalise(b"").len, 0);
        assert_eq!(
            normalise(b"Received: x\r\n").fingerprint,
            normalise(b"").fingerprint
        );
    }
}
