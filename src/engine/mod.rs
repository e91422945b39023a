//! The delivery engine: one poll of one mailbox, from LIST to QUIT.

pub mod deliver;
pub mod plan;
pub mod poll;
pub mod preview;
pub mod routing;
