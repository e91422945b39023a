//! What the engine reports to telemetry, as plain data: the engine emits these events and
//! [`crate::metrics`] records them, so neither imports the other.

use std::time::Duration;

/// One poll of one mailbox ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct PollFinished<'a> {
    pub mailbox: &'a str,
    /// Messages the server listed (meaningful when `error` is `None`).
    pub listed: usize,
    pub fetched: usize,
    pub bytes: u64,
    /// Messages delivered under a UIDL the server had used for another message before.
    pub uidl_reused: usize,
    /// The session ended without QUIT (a retrieved message was not in every sink).
    pub ended_without_quit: bool,
    /// The low-cardinality kind of the error that failed the poll.
    pub error: Option<&'a str>,
    pub took: Duration,
}
