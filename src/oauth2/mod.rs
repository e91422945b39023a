//! OAuth2 access tokens for the POP3 source and the IMAP sink: named credentials (`config`),
//! JWT signing for client assertions and service accounts (`jwt`), the token endpoint and its
//! error classes (`endpoint`), the persisted refresh token (`store`), and the per-credential
//! cache with single-flight refresh (`source`).

pub mod config;
mod endpoint;
pub mod error;
pub mod jwt;
pub mod login;
pub mod source;
pub mod store;

pub use config::{CredentialSettings, Grant, Provider};
pub use error::OAuth2Error;
pub use source::TokenSource;
