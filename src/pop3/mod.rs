//! POP3 client: `codec` (bytes to responses, no I/O) apart from `session` (the connection's
//! states). RFC 1939, 2449 (CAPA, PIPELINING, RESP-CODES), 2595 (STLS), 5034 (SASL).

pub mod codec;
pub mod config;
pub mod response;

pub use config::{AuthMethod, ClientConfig, TlsMode};
pub use response::{Capabilities, RespCode, Status, StatusLine};
