//! A message as the engine hands it to a sink: the bytes written to a spool file, with the
//! size and digest a sink checks them against.

use popbridge::sink::SpooledMessage;
use sha2::{Digest, Sha256};
use std::path::Path;

/// `body` written to `dir/name` as a first-time message of mailbox `alice` with UIDL `name`;
/// tests that need another mailbox or `seen_before` override those fields.
pub fn spool(dir: &Path, name: &str, body: &[u8]) -> SpooledMessage {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    SpooledMessage {
        mailbox: "alice".into(),
        uidl: name.into(),
        path,
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(body)),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
        owner: Default::default(),
        params: Default::default(),
    }
}
