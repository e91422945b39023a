//! The idempotency key: one stable name per message, the same on every retry and restart.
//!
//! `pb2` (current) is derived from the mailbox, the UIDL and the message's content
//! fingerprint, so a new message under a UIDL the server used before (servers reuse them
//! after a deletion) gets a new key and no sink swallows it as a duplicate, while the same
//! message fetched again after a crash gets the same key. `pb1` (mailbox and UIDL only) is
//! what releases before schema 2 stored; such keys are read back, never derived again.

use sha2::{Digest, Sha256};
use std::fmt;

/// `pb1_` + 32 hex digits of SHA-256 over the mailbox name and the UIDL.
///
/// Derived, never stored-then-read, so a lost state database still yields the same keys and
/// sinks keep deduplicating. The `pb1` prefix versions the derivation. Renaming a mailbox in the
/// config changes its keys (documented in the README).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn derive(mailbox: &str, uidl: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"popbridge/v1\0");
        h.update(mailbox.as_bytes());
        h.update(b"\0");
        h.update(uidl.as_bytes());
        let digest = h.finalize();
        Self(format!("pb1_{}", hex::encode(&digest[..16])))
    }

    /// `pb2_` + 32 hex digits of SHA-256 over the mailbox, the UIDL and the content
    /// fingerprint ([`crate::content::Fingerprint`], which ignores line endings and the
    /// bookkeeping headers mbox servers rewrite, so a re-fetch yields the same key).
    pub fn derive_content(mailbox: &str, uidl: &str, fingerprint: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"popbridge/v2\0");
        h.update(mailbox.as_bytes());
        h.update(b"\0");
        h.update(uidl.as_bytes());
        h.update(b"\0");
        h.update(fingerprint.as_bytes());
        let digest = h.finalize();
        Self(format!("pb2_{}", hex::encode(&digest[..16])))
    }

    /// A key read back from the state (a message adopted under a new UIDL keeps its first key).
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_separates_mailbox_from_uidl() {
        let a = IdempotencyKey::derive("alice", "00000001");
        assert_eq!(a, IdempotencyKey::derive("alice", "00000001"));
        assert_eq!(a.as_str().len(), 4 + 32);
        assert!(a.as_str().starts_with("pb1_"));
        // "ab" + "c" must not collide with "a" + "bc".
        assert_ne!(
            IdempotencyKey::derive("ab", "c"),
            IdempotencyKey::derive("a", "bc")
        );
    }

    #[test]
    fn key_is_pinned_so_a_refactor_cannot_change_it() {
        // Changing this value re-delivers every mailbox: bump the `pb1` prefix instead.
        let k = IdempotencyKey::derive("alice", "00000001");
        assert_eq!(k.as_str(), KNOWN);
    }
    const KNOWN: &str = "pb1_b6dc996e563c182e3bec9c7a448f88ae";

    #[test]
    fn content_key_differs_for_a_new_message_under_the_same_uidl() {
        let a = IdempotencyKey::derive_content("alice", "1", "f1");
        assert_eq!(a, IdempotencyKey::derive_content("alice", "1", "f1"));
        assert_ne!(a, IdempotencyKey::derive_content("alice", "1", "f2"));
        assert_ne!(a, IdempotencyKey::derive_content("alice", "2", "f1"));
        assert!(a.as_str().starts_with("pb2_") && a.as_str().len() == 36);
        // Pinned: changing it re-delivers every message fetched again after a crash.
        assert_eq!(
            IdempotencyKey::derive_content("alice", "00000001", "f").as_str(),
            KNOWN2
        );
    }
    const KNOWN2: &str = "pb2_d7107f2843d98d852bd309c3aec1cd41";
}
