//! Parameter templates: text with `{name}` placeholders filled from a rule's named captures
//! (and `{mailbox}`). Captured text comes from the message, which the sender controls, so each
//! value is reduced to `[A-Za-z0-9._+=@-]` (anything else becomes `_`) and may not start with a
//! dot: a capture can never climb out of a folder or a path (`../`).

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Placeholders every template may use besides the rule's captures.
pub const BUILTINS: &[&str] = &["mailbox"];

impl Template {
    /// Parse `text`; every `{name}` must be one of `captures` or a builtin. `{{` and `}}` are
    /// literal braces.
    pub fn parse(text: &str, captures: &[String]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed `{{` in {text:?}")),
                        }
                    }
                    if !captures.contains(&name) && !BUILTINS.contains(&name.as_str()) {
                        return Err(format!(
                            "{{{name}}} is not a named capture of this rule's regexes (captures: {}; also {{mailbox}})",
                            if captures.is_empty() { "none".to_string() } else { captures.join(", ") }
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err(format!("lone `}}` in {text:?} (write `}}}}`)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts })
    }

    /// Fill in the values; a capture that did not take part in the match is empty.
    pub fn render(&self, values: &HashMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&sanitize(values.get(v).map_or("", String::as_str))),
            }
        }
        out
    }
}

/// A captured value made safe for folder names, paths and keys.
pub fn sanitize(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+=@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fills_captures_and_builtins() {
        let t = Template::parse("Lists/{list}-{mailbox} {{x}}", &["list".into()]).unwrap();
        assert_eq!(
            t.render(&values(&[("list", "rust"), ("mailbox", "mb")])),
            "Lists/rust-mb {x}"
        );
    }

    #[test]
    fn refuses_unknown_placeholders() {
        let e = Template::parse("{user}", &["list".into()]).unwrap_err();
        assert!(e.contains("{user} is not a named capture"), "{e}");
        assert!(Template::parse("{open", &[]).is_err());
        assert!(Template::parse("a}b", &[]).is_err());
    }

    #[test]
    fn a_capture_cannot_climb_out_of_a_folder() {
        let t = Template::parse("base/{x}", &["x".into()]).unwrap();
        assert_eq!(t.render(&values(&[("x", "../../etc")])), "base/_._.._etc");
        assert_eq!(t.render(&values(&[("x", "..")])), "base/_.");
        assert_eq!(t.render(&values(&[("x", "a b/c")])), "base/a_b_c");
    }
}
