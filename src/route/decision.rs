//! From a message's facts to a decision: the targets of every matching rule (fan-out, one
//! receipt per sink; the first rule naming a sink sets its parameters), the mailbox's default
//! sinks, or kept on the server with a reason. A [`Route`] is recorded with the message.

use super::config::{RuleSet, Unmatched};
use super::matcher::{matches, Facts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One sink and the parameters for this message (already filled in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub sink: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// Where a message goes, as recorded in the state (JSON in `messages.route`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The rules that matched, or `(default)`.
    pub rules: Vec<String>,
    pub targets: Vec<Target>,
}

impl Route {
    pub fn sinks(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.sink.clone()).collect()
    }

    /// The parameters for `sink` (empty when it has none or is not a target).
    pub fn params(&self, sink: &str) -> BTreeMap<String, String> {
        self.targets
            .iter()
            .find(|t| t.sink == sink)
            .map(|t| t.params.clone())
            .unwrap_or_default()
    }

    /// Short text for logs and `plan`: `rule1+rule2 -> sink(folder=X), sink2`.
    pub fn describe(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                if t.params.is_empty() {
                    t.sink.clone()
                } else {
                    let p: Vec<String> = t.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}({})", t.sink, p.join(", "))
                }
            })
            .collect();
        format!("{} -> {}", self.rules.join("+"), targets.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Route(Route),
    /// Left on the server: no rule matched and `unmatched: keep`.
    Keep {
        reason: String,
    },
}

/// Decide where the message described by `facts` goes.
pub fn decide(set: &RuleSet, mailbox: &str, facts: &Facts<'_>) -> Decision {
    let mut rules = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for rule in &set.rules {
        let Some(mut values) = matches(set, rule, facts) else {
            continue;
        };
        values.insert("mailbox".into(), mailbox.to_string());
        rules.push(rule.name.clone());
        for t in &rule.targets {
            if targets.iter().any(|x| x.sink == t.sink) {
                continue;
            }
            targets.push(Target {
                sink: t.sink.clone(),
                params: t
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(&values)))
                    .collect(),
            });
        }
        if rule.stop {
            break;
        }
    }
    if !targets.is_empty() {
        return Decision::Route(Route { rules, targets });
    }
    match set.unmatched {
        Unmatched::Default => Decision::Route(Route {
            rules: vec!["(default)".into()],
            targets: set
                .default_sinks
                .iter()
                .map(|s| Target {
                    sink: s.clone(),
                    params: BTreeMap::new(),
                })
                .collect(),
        }),
        Unmatched::Keep => {
            let envelope = super::matcher::envelope(set, facts.headers);
            Decision::Keep {
                reason: format!(
                    "no routing rule of {} matched ({} {}; unmatched: keep)",
                    set.name,
                    set.envelope_header,
                    envelope.map_or("absent".to_string(), |e| format!("{e:?}")),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
