//! popbridge: pull mail from POP3 mailboxes and forward every message, effectively once, to
//! sinks. See ARCHITECTURE.md for the modules and the life of one message.

pub mod config;
pub mod key;
pub mod pop3;
pub mod secret;
pub mod sink;
pub mod tls;
