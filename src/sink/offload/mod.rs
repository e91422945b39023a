//! Big mail as links: content stored in S3 under its SHA-256 (so a retry never makes a second
//! object) and handed on as a link: for webhook receivers that cannot take the bytes
//! themselves, and for mailboxes (IMAP, Gmail) that refuse a message over their size limit,
//! which get a stub message with the link instead (`oversize: stub`).

pub mod config;
pub mod store;
pub mod stub;
pub mod stub_message;
pub mod stub_scan;

pub use config::{OffloadConfig, OffloadSettings, Oversize};
pub use store::{Link, OffloadStore};
pub use stub::{Failed, Stubbed, Stubs};
