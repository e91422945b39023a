//! What the POP3 source and the IMAP sink share below their protocols: the TCP or TLS byte
//! stream (`stream`), the bounded line reader with timeouts and a broken flag (`line`), and
//! the SASL mechanisms (`sasl`), and the per-host byte rate (`throttle`). No protocol grammar lives here: POP3's and IMAP's codecs stay
//! with their protocols, and each maps [`line::NetError`] into its own error type.

pub(crate) mod line;
pub mod sasl;
pub(crate) mod stream;
pub mod throttle;
