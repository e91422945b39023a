//! IMAP APPEND sink: POP3 → IMAP migration, byte for byte, with no duplicate in the target.

pub mod budget;
mod compare;
pub mod config;
mod headers;
mod login_backoff;
mod sink;

pub use config::{ImapSettings, ImapSinkConfig};
pub use sink::ImapSink;
