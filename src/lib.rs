//! popbridge: pull mail from POP3 mailboxes and forward every message, effectively once, to
//! sinks. See ARCHITECTURE.md for the modules and the life of one message.

pub mod app;
pub mod config;
pub mod config_value;
pub mod content;
pub mod cutover;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod imap;
pub mod key;
pub mod metrics;
pub mod net;
pub mod oauth2;
pub mod politeness;
pub mod pop3;
pub mod progress;
pub mod receipt;
pub mod route;
pub mod scheduler;
pub mod secret;
pub mod server;
pub mod sink;
pub mod spool;
pub mod store;
pub mod summary;
pub mod telemetry;
pub mod tls;
