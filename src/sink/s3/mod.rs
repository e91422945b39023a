//! S3 sink: one object per message under a deterministic key, created only if absent.

pub mod config;
pub mod credentials;
pub mod key;
mod multipart;
mod object;
pub mod presign;
pub mod service;
pub mod sigv4;
mod sink;
#[cfg(test)]
mod tests;
mod xml;

pub use config::{S3Settings, S3SinkConfig, Sse};
pub use credentials::{Credentials, Source, WebIdentity};
pub use sink::S3Sink;
