//! Routing rules: which sinks a message goes to, and with which per-delivery parameters
//! (IMAP folder, Maildir subfolder, S3 key prefix, webhook path and headers).
//!
//! `config` is the rule set as written and validated, `headers` reads a header section,
//! `matcher` evaluates one rule, `template` fills parameters from captures, and `decision`
//! turns a message into a [`Route`] (recorded with the message, so a retry routes the same
//! way whatever the config says by then) or a [`Decision::Keep`] with its reason.

pub mod config;
pub mod decision;
pub mod headers;
pub mod matcher;
pub mod template;

pub use config::{RuleSet, Unmatched};
pub use decision::{Decision, Route, Target};
