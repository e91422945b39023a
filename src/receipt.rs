//! A sink's proof that it holds a message. Sinks make receipts and the state stores them
//! (sinks → receipts → store), so this is a leaf both import.

use serde::{Deserialize, Serialize};

/// Proof that a sink holds the message durably. Stored in the state as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Short, human-readable: a file path, `HTTP 200`, an S3 ETag, `APPENDUID 17 42`.
    pub detail: String,
    /// True when the sink found the message already there (a repeat after a crash).
    #[serde(default)]
    pub duplicate: bool,
}

impl Receipt {
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            duplicate: false,
        }
    }

    pub fn duplicate(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            duplicate: true,
        }
    }
}
