//! Rule sets as written (serde, unknown keys rejected, regexes compiled while parsing so an
//! error keeps its line and column) and as validated (every sink and capture checked).

use super::template::Template;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// A regular expression, compiled while the config is parsed.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regex {text:?}: {e}")))
    }
}

/// `routes:` of a mailbox: the name of a shared rule set, or a rule set written in place.
#[derive(Clone, Debug)]
pub enum RawRouteRef {
    Named(String),
    Inline(Box<RawRuleSet>),
}

impl<'de> Deserialize<'de> for RawRouteRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRouteRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the name of a `routes:` rule set, or a rule set mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawRouteRef::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|c| RawRouteRef::Inline(Box::new(c)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One rule set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleSet {
    /// Rules in order; every matching rule adds its targets (fan-out) until one says `stop`.
    pub rules: Vec<RawRule>,
    /// What happens to a message no rule matched: `default` (the mailbox's `sinks`, the
    /// default) or `keep` (left on the server, with the reason shown by `once` and `plan`).
    #[serde(default)]
    pub unmatched: Option<Unmatched>,
    /// The header the receiving server writes the envelope recipient into (default
    /// `Delivered-To`).
    #[serde(default)]
    pub envelope_header: Option<String>,
    /// Which occurrence of it is the server's, counted from the top (default 1: servers
    /// prepend theirs; anything below may be the sender's forgery).
    #[serde(default)]
    pub envelope_occurrence: Option<usize>,
    /// Count only occurrences above the first `Received:` field (default true): the receiving
    /// server's is there, while one the sender wrote sits below every relay's trace field,
    /// which also rejects a forged copy when the server added none.
    #[serde(default)]
    pub envelope_above_received: Option<bool>,
}

/// One rule: conditions (all must hold) and the sinks it selects.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Shown in logs, `plan` and the recorded decision.
    pub name: String,
    /// Conditions; an empty or missing `match` matches every message.
    #[serde(default, rename = "match")]
    pub conditions: RawMatch,
    /// Targets: a sink and its parameters for this message.
    pub to: Vec<RawTarget>,
    /// No later rule is evaluated when this one matches (default false).
    #[serde(default)]
    pub stop: bool,
}

/// `match:` of a rule. Regexes may have named groups (`(?P<user>…)`), usable as `{user}` in
/// the rule's targets.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Header name → regex on its topmost occurrence (e.g. `X-Spam-Flag: '^YES'`).
    #[serde(default)]
    pub headers: BTreeMap<String, Pattern>,
    /// Regex on the sender address (topmost `From:`).
    #[serde(default)]
    pub sender: Option<Pattern>,
    /// Regex on the envelope recipient (see `envelope_header`); never To/Cc.
    #[serde(default)]
    pub envelope: Option<Pattern>,
    /// The size LIST gives is more than this many bytes.
    #[serde(default)]
    pub size_over: Option<u64>,
    /// The size LIST gives is less than this many bytes.
    #[serde(default)]
    pub size_under: Option<u64>,
    /// The message has (true) or has no (false) attachment. Needs the body: messages are
    /// retrieved before the decision.
    #[serde(default)]
    pub has_attachment: Option<bool>,
}

/// One entry of `to:`: a sink and the per-delivery parameters it supports (templates).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// The sink's name.
    pub sink: String,
    /// IMAP sink: the folder to append to.
    #[serde(default)]
    pub folder: Option<String>,
    /// Maildir sink: a Maildir++ subfolder (`.name` inside the Maildir).
    #[serde(default)]
    pub subfolder: Option<String>,
    /// S3 sink: a prefix put before the object key.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Webhook sink: appended to the URL's path.
    #[serde(default)]
    pub path: Option<String>,
    /// Webhook sink: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What happens to a message no rule matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// The mailbox's own `sinks`.
    #[default]
    Default,
    /// Left on the server, with the reason shown.
    Keep,
}

/// A validated rule set.
#[derive(Clone, Debug)]
pub struct RuleSet {
    /// The shared name, or `mailbox.<name>` for one written in place.
    pub name: String,
    pub rules: Vec<Rule>,
    pub unmatched: Unmatched,
    pub envelope_header: String,
    pub envelope_occurrence: usize,
    pub envelope_above_received: bool,
    /// The mailbox's own sinks, for unmatched messages.
    pub default_sinks: Vec<String>,
}

impl RuleSet {
    /// Some rule needs the body: messages are retrieved before the decision, not `TOP n 0`.
    pub fn needs_body(&self) -> bool {
        self.rules.iter().any(|r| r.has_attachment.is_some())
    }

    /// Every sink a message of this mailbox may go to (defaults first).
    pub fn all_sinks(&self) -> Vec<String> {
        let mut out = self.default_sinks.clone();
        for t in self.rules.iter().flat_map(|r| &r.targets) {
            if !out.contains(&t.sink) {
                out.push(t.sink.clone());
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub headers: Vec<(String, regex::Regex)>,
    pub sender: Option<regex::Regex>,
    pub envelope: Option<regex::Regex>,
    pub size_over: Option<u64>,
    pub size_under: Option<u64>,
    pub has_attachment: Option<bool>,
    pub targets: Vec<TargetTemplate>,
    pub stop: bool,
}

/// A target before its templates are filled.
#[derive(Clone, Debug)]
pub struct TargetTemplate {
    pub sink: String,
    /// Parameter name (`folder`, `subfolder`, `prefix`, `path`, `header.<Name>`) → template.
    pub params: BTreeMap<String, Template>,
}

/// Parameters each sink type reads; `header.` stands for any `header.<Name>`.
pub fn supported_params(sink_type: &str) -> &'static [&'static str] {
    match sink_type {
        "imap" => &["folder"],
        "maildir" => &["subfolder"],
        "s3" => &["prefix"],
        "webhook" => &["path", "header."],
        _ => &[],
    }
}

impl RawRuleSet {
    /// Validate against the defined sinks (`name`, type) and the mailbox's default sinks;
    /// problems are `(where, what)` pairs.
    pub fn validate(
        self,
        name: &str,
        sinks: &[(&str, &str)],
        default_sinks: &[String],
    ) -> Result<RuleSet, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if self.rules.is_empty() {
            problems.push((
                "rules".to_string(),
                "at least one rule is required".to_string(),
            ));
        }
        let envelope_header = self
            .envelope_header
            .unwrap_or_else(|| "Delivered-To".to_string());
        if envelope_header.trim().is_empty() || envelope_header.contains(':') {
            problems.push(("envelope_header".into(), "must be a header name".into()));
        }
        let envelope_occurrence = self.envelope_occurrence.unwrap_or(1);
        if envelope_occurrence == 0 {
            problems.push((
                "envelope_occurrence".into(),
                "counts from 1 (the topmost occurrence)".into(),
            ));
        }
        let mut rules = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, raw) in self.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            if !names.insert(raw.name.clone()) {
                problems.push((at.clone(), format!("rule name {:?} used twice", raw.name)));
            }
            let m = raw.conditions;
            let mut captures: Vec<String> = Vec::new();
            let regexes = m
                .headers
                .values()
                .map(|p| &p.0)
                .chain(m.sender.iter().map(|p| &p.0))
                .chain(m.envelope.iter().map(|p| &p.0));
            for re in regexes {
                captures.extend(re.capture_names().flatten().map(str::to_string));
            }
            if raw.to.is_empty() {
                problems.push((format!("{at}.to"), "at least one target is required".into()));
            }
            let mut targets = Vec::new();
            for (j, t) in raw.to.into_iter().enumerate() {
                let tat = format!("{at}.to[{j}]");
                let Some((_, kind)) = sinks.iter().find(|(n, _)| *n == t.sink) else {
                    let defined: Vec<&str> = sinks.iter().map(|(n, _)| *n).collect();
                    problems.push((
                        tat,
                        format!(
                            "unknown sink {:?} (defined: {})",
                            t.sink,
                            defined.join(", ")
                        ),
                    ));
                    continue;
                };
                if targets.iter().any(|x: &TargetTemplate| x.sink == t.sink) {
                    problems.push((tat, format!("sink {:?} named twice in one rule", t.sink)));
                    continue;
                }
                let mut written: Vec<(String, String)> = Vec::new();
                for (k, v) in [
                    ("folder", t.folder),
                    ("subfolder", t.subfolder),
                    ("prefix", t.prefix),
                    ("path", t.path),
                ] {
                    if let Some(v) = v {
                        written.push((k.to_string(), v));
                    }
                }
                for (h, v) in t.headers {
                    written.push((format!("header.{h}"), v));
                }
                let allowed = supported_params(kind);
                let mut params = BTreeMap::new();
                for (k, v) in written {
                    let base = if k.starts_with("header.") {
                        "header."
                    } else {
                        k.as_str()
                    };
                    if !allowed.contains(&base) {
                        let shown = if base == "header." { "headers" } else { base };
                        problems.push((
                            tat.clone(),
                            format!(
                                "a {kind} sink takes no `{shown}` (it takes: {})",
                                if allowed.is_empty() {
                                    "nothing".to_string()
                                } else {
                                    allowed.join(", ").replace("header.", "headers")
                                }
                            ),
                        ));
                        continue;
                    }
                    match Template::parse(&v, &captures) {
                        Ok(tpl) => {
                            params.insert(k, tpl);
                        }
                        Err(e) => problems.push((format!("{tat}.{k}"), e)),
                    }
                }
                targets.push(TargetTemplate {
                    sink: t.sink,
                    params,
                });
            }
            rules.push(Rule {
                name: raw.name,
                headers: m.headers.into_iter().map(|(k, v)| (k, v.0)).collect(),
                sender: m.sender.map(|p| p.0),
                envelope: m.envelope.map(|p| p.0),
                size_over: m.size_over,
                size_under: m.size_under,
                has_attachment: m.has_attachment,
                targets,
                stop: raw.stop,
            });
        }
        if problems.is_empty() {
            Ok(RuleSet {
                name: name.to_string(),
                rules,
                unmatched: self.unmatched.unwrap_or_default(),
                envelope_header,
                envelope_occurrence,
                envelope_above_received: self.envelope_above_received.unwrap_or(true),
                default_sinks: default_sinks.to_vec(),
            })
        } else {
            Err(problems)
        }
    }
}
