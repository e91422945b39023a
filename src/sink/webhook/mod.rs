//! Webhook sink: one signed POST per message, JSON or the raw message (Standard Webhooks v1).

pub mod config;
mod offload;
pub mod payload;
pub mod service;
pub mod signature;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{Format, WebhookSettings, WebhookSinkConfig};
pub use sink::WebhookSink;
