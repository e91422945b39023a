//! One module per POP3 operation; each adds its commands to the state that allows them.

pub(crate) mod auth;
pub(crate) mod capa;
pub(crate) mod dele;
pub(crate) mod list;
pub mod retr;
pub(crate) mod stls;
pub(crate) mod top;
