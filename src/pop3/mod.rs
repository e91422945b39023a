//! POP3 client: `codec` (bytes to responses, no I/O) apart from `session` (the connection's
//! states), with one module per operation under `op`. RFC 1939, 2449 (CAPA, PIPELINING,
//! RESP-CODES), 2595 (STLS), 5034 (SASL).

pub mod codec;
pub mod config;
mod conn;
pub mod error;
pub mod op;
pub mod response;
pub mod session;
pub mod substitute;

pub use config::{AuthMethod, ClientConfig, InitialResponse, OAuth2Login, OAuthMechanism, TlsMode};
pub use error::{ErrorKind, Pop3Error};
pub use op::retr::Retrieved;
pub use response::{Capabilities, RespCode, Status, StatusLine};
pub use session::{connect, Authorization, Transaction};
