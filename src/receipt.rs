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
    /// The message was over the target's size limit: a stub went in its place, and this is
    /// where the original is (`oversize: stub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stub: Option<StubbedOriginal>,
}

/// Where the original of a stubbed message is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StubbedOriginal {
    /// `s3://bucket/key`.
    pub object: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Receipt {
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            duplicate: false,
            stub: None,
        }
    }

    pub fn duplicate(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            duplicate: true,
            stub: None,
        }
    }
}
