//! The spooled message between the source and the sinks: the digests computed while it is
//! written (size, SHA-256, content fingerprint: [`Digests`]), and reading it back in bounded
//! chunks ([`for_each_chunk`]) for whatever a sink hashes, signs or compares. One loop for
//! all of them, so memory stays at one chunk whatever the message size.

use crate::content::Fingerprint;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::Path;

/// Bytes read from a spool file at a time.
pub const CHUNK: usize = 64 * 1024;

/// Reads `reader` to its end in pieces of at most [`CHUNK`] bytes, handing each to `each`.
/// Returns how many bytes there were.
pub fn for_each_chunk(mut reader: impl Read, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut chunk = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        each(&chunk[..n]);
    }
}

/// The content fingerprint of a spool file ([`crate::content::Fingerprint`]).
pub fn fingerprint_file(path: &Path) -> io::Result<String> {
    let mut fp = Fingerprint::new();
    for_each_chunk(std::fs::File::open(path)?, |c| fp.update(c))?;
    Ok(fp.finish())
}

/// What is computed on the way into the spool, from the same bytes in one pass.
#[derive(Clone, Default)]
pub struct Digests {
    sha256: Sha256,
    fingerprint: Fingerprint,
    size: u64,
}

/// The finished [`Digests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes as they are.
    pub sha256: String,
    /// [`crate::content::Fingerprint`] of the bytes.
    pub fingerprint: String,
}

impl Digests {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.fingerprint.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digested {
        Digested {
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
            fingerprint: self.fingerprint.finish(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_whole_input_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let mut seen = Vec::new();
        let mut biggest = 0;
        let n = for_each_chunk(&data[..], |c| {
            biggest = biggest.max(c.len());
            seen.extend_from_slice(c);
        })
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(seen, data);
        assert!(biggest <= CHUNK);
    }

    #[test]
    fn digests_match_their_parts_at_any_split() {
        let msg = b"Subject: a\r\nStatus: RO\r\n\r\nbody\r\n";
        let whole = {
            let mut d = Digests::new();
            d.update(msg);
            d.finish()
        };
        assert_eq!(whole.size, msg.len() as u64);
        assert_eq!(whole.sha256, hex::encode(Sha256::digest(msg)));
        assert_eq!(whole.fingerprint, crate::content::fingerprint(msg));
        let mut d = Digests::new();
        for c in msg.chunks(3) {
            d.update(c);
        }
        assert_eq!(d.finish(), whole);
    }
}
