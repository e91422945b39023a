//! Big mail as links: content stored in S3 under its SHA-256 (so a retry never makes a second
//! object) and handed on as a link, for receivers that cannot take the bytes themselves.

pub mod config;
pub mod store;

pub use config::{OffloadConfig, OffloadSettings};
pub use store::{Link, OffloadStore};
