//! Maildir sink: one file per message, named from the idempotency key.

mod config;
mod dirsync;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{MaildirSettings, MaildirSinkConfig};
pub use sink::MaildirSink;
