//! Gmail sink: `users.messages.import` into many Gmail accounts (standard delivery scanning and
//! spam classification, unlike `messages.insert` or IMAP APPEND), multipart for small messages
//! and resumable for large ones, with a search for an earlier copy before any re-import.

pub mod auth;
pub mod config;
pub mod payload;
pub mod quota;
pub mod service;
pub mod setup;
mod sink;
#[cfg(test)]
mod tests;

pub use auth::{AccessToken, FileTokens, TokenError};
pub use config::{GmailSettings, GmailSinkConfig, InternalDateSource};
pub use sink::GmailSink;
