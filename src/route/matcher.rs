//! Evaluating one rule against one message: every condition must hold; named captures of
//! every regex are collected for the rule's templates.

use super::config::{Rule, RuleSet};
use super::headers::{address, Headers};
use std::collections::HashMap;

/// What a rule can look at.
pub struct Facts<'a> {
    pub headers: &'a Headers,
    /// The size LIST gave.
    pub size: u64,
    /// `None` when only the headers were read (no rule needs the body).
    pub has_attachment: Option<bool>,
}

/// The envelope recipient: the configured occurrence of the configured header, never To/Cc.
pub fn envelope<'a>(set: &RuleSet, headers: &'a Headers) -> Option<&'a str> {
    let field = if set.envelope_above_received {
        headers.nth_above(&set.envelope_header, set.envelope_occurrence, "Received")
    } else {
        headers.nth(&set.envelope_header, set.envelope_occurrence)
    };
    field.map(address)
}

/// The captures when `rule` matches, `None` otherwise.
pub fn matches(set: &RuleSet, rule: &Rule, facts: &Facts<'_>) -> Option<HashMap<String, String>> {
    let mut captures = HashMap::new();
    let mut check = |re: &regex::Regex, text: Option<&str>| -> bool {
        let Some(caps) = text.and_then(|t| re.captures(t)) else {
            return false;
        };
        for name in re.capture_names().flatten() {
            if let Some(m) = caps.name(name) {
                captures.insert(name.to_string(), m.as_str().to_string());
            }
        }
        true
    };
    for (name, re) in &rule.headers {
        // The topmost occurrence: the one the receiving side wrote last.
        if !check(re, facts.headers.nth(name, 1)) {
            return None;
        }
    }
    if let Some(re) = &rule.sender {
        if !check(re, facts.headers.nth("From", 1).map(address)) {
            return None;
        }
    }
    if let Some(re) = &rule.envelope {
        if !check(re, envelope(set, facts.headers)) {
            return None;
        }
    }
    if rule.size_over.is_some_and(|n| facts.size <= n) {
        return None;
    }
    if rule.size_under.is_some_and(|n| facts.size >= n) {
        return None;
    }
    if let Some(want) = rule.has_attachment {
        // Without the body the condition cannot hold; the engine reads the body whenever a
        // rule has this condition, so this is only a guard.
        if facts.has_attachment != Some(want) {
            return None;
        }
    }
    Some(captures)
}
