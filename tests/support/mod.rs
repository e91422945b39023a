//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fake_pop3;
pub mod gmail;
pub mod receiver;
pub mod s3;
pub mod spool;
