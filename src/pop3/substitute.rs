//! Recognising a down-converted substitute: without `UTF8` (RFC 6856) Courier serves a message
//! with raw UTF-8 headers as a new MIME message that says "Cannot display Unicode content"
//! (with a fresh boundary at every RETR) instead of the message. Archiving it and deleting the
//! original would lose the mail, so the engine keeps such a message on the server.

use std::io::Read;
use std::path::Path;

/// The substitute's subject, as Courier 1.0.16 writes it (captured from the real server in
/// `tests/courier_pop3.rs`).
const MARKER: &[u8] = b"Cannot display Unicode content";
/// The header section of the substitute is a few hundred bytes.
const LOOK_AT: u64 = 16 * 1024;

/// Whether the spooled message at `path` is a server's down-converted substitute: its own
/// header section (not a quoted one further down) has `Subject: Cannot display Unicode
/// content`. A message that only mentions the phrase is not one. Read errors count as "no":
/// the message then goes on as any other.
pub fn is_substitute(path: &Path) -> bool {
    let mut head = Vec::new();
    if std::fs::File::open(path)
        .and_then(|f| f.take(LOOK_AT).read_to_end(&mut head))
        .is_err()
    {
        return false;
    }
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .any(|line| {
            line.len() > 8
                && line[..8].eq_ignore_ascii_case(b"subject:")
                && line[8..].trim_ascii() == MARKER
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_the_subject_of_the_substitute_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        // The shape Courier 1.0.16 serves (boundary changes at every RETR).
        let sub = write(
            "sub",
            b"From: Mail Delivery Subsystem <postmaster>\r\nSubject: Cannot display Unicode content\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_1-2\"\r\n\r\n--=_1-2\r\nContent-Type: text/plain\r\n\r\nThis E-mail message was determined to be Unicode-formatted\r\n--=_1-2--\r\n",
        );
        assert!(is_substitute(&sub));
        assert!(!is_substitute(&write(
            "plain",
            b"Subject: hi\r\n\r\nbody\r\n"
        )));
        assert!(
            !is_substitute(&write(
                "mentions",
                b"Subject: Re: why does my phone say it?\r\n\r\nIt said: Cannot display Unicode content\r\nSubject: Cannot display Unicode content\r\n",
            )),
            "the phrase in a body, even as a quoted header line, is not a substitute"
        );
        assert!(!is_substitute(&dir.path().join("missing")));
    }
}
