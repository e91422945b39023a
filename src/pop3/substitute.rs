//! Recognising a down-converted substitute: without `UTF8` (RFC 6856) Courier serves a message
//! with raw UTF-8 headers as a new MIME message that says "Cannot display Unicode content"
//! (with a fresh boundary at every RETR) instead of the message. Archiving it and deleting the
//! original would lose the mail, so the engine keeps such a message on the server.

use std::io::Read;
use std::path::Path;

/// What Courier's substitute says in its text part.
const MARKER: &[u8] = b"Cannot display Unicode content";
/// The marker sits in the substitute's first part: a few kilobytes in.
const LOOK_AT: u64 = 16 * 1024;

/// Whether the spooled message at `path` is a server's down-converted substitute. Read errors
/// count as "no": the message then goes on as any other.
pub fn is_substitute(path: &Path) -> bool {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(LOOK_AT).read_to_end(&mut head));
    read.is_ok() && head.windows(MARKER.len()).any(|w| w == MARKER)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_the_marker_near_the_start_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let sub = write(
            "sub",
            b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nCannot display Unicode content\r\n--b1--\r\n",
        );
        assert!(is_substitute(&sub));
        assert!(!is_substitute(&write(
            "plain",
            b"Subject: hi\r\n\r\nbody\r\n"
        )));
        let mut far = vec![b'x'; 20 * 1024];
        far.extend_from_slice(MARKER);
        assert!(!is_substitute(&write("far", &far)), "quoted deep in a body");
        assert!(!is_substitute(&dir.path().join("missing")));
    }
}
