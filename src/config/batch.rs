//! `mailboxes_from:` — many mailboxes from one CSV file and one template, so 500 accounts are
//! one config file and one spreadsheet, not 500 YAML blocks.
//!
//! ```yaml
//! mailboxes_from:
//!   - file: accounts.csv             # a header row names the columns
//!     mailbox:                       # a mailbox entry; {column} takes the row's value
//!       name: "{name}"
//!       pop3: { host: pop.example.com, username: "{user}", password_file: "/run/secrets/{name}" }
//!       sinks: [newhome]
//! ```
//!
//! Each row is one mailbox entry, checked like a written one; an error names the CSV file and
//! line. Values replace `{column}` inside strings only, so a value can never add YAML keys.

use super::raw::{RawBatch, RawMailbox};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BatchError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// The mailbox entries of one `mailboxes_from:` entry.
pub fn expand(batch: &RawBatch, base: &Path) -> Result<Vec<RawMailbox>, BatchError> {
    let file = crate::config_value::resolve(base, &batch.file);
    let err = |line, message: String| BatchError {
        file: file.clone(),
        line,
        message,
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| err(None, format!("cannot read: {e}")))?;
    let rows = parse_csv(&text).map_err(|(line, m)| err(Some(line), m))?;
    let Some(((_, header), rows)) = rows.split_first() else {
        return Err(err(
            None,
            "empty: a header row naming the columns is needed".into(),
        ));
    };
    let mut out = Vec::new();
    for (line, row) in rows {
        if row.len() != header.len() {
            return Err(err(
                Some(*line),
                format!("{} values for {} columns", row.len(), header.len()),
            ));
        }
        let mut value = batch.mailbox.clone();
        fill(&mut value, header, row).map_err(|m| err(Some(*line), m))?;
        let mailbox: RawMailbox =
            yaml_serde::from_value(value).map_err(|e| err(Some(*line), e.to_string()))?;
        out.push(mailbox);
    }
    Ok(out)
}

/// Replace `{column}` in every string of `value` (keys too) by the row's value.
fn fill(value: &mut yaml_serde::Value, header: &[String], row: &[String]) -> Result<(), String> {
    use yaml_serde::Value;
    match value {
        Value::String(s) => *s = substitute(s, header, row)?,
        Value::Sequence(items) => {
            for v in items {
                fill(v, header, row)?;
            }
        }
        Value::Mapping(map) => {
            for (_, v) in map.iter_mut() {
                fill(v, header, row)?;
            }
        }
        Value::Tagged(t) => fill(&mut t.value, header, row)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn substitute(s: &str, header: &[String], row: &[String]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        // `${VAR}` is environment interpolation, left for later.
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start + len + 1]);
            rest = &rest[start + len + 1..];
            continue;
        }
        let Some(i) = header.iter().position(|h| h == name) else {
            return Err(format!(
                "the template uses {{{name}}}, but the CSV has no column {name:?} (columns: {})",
                header.join(", ")
            ));
        };
        out.push_str(&rest[..start]);
        out.push_str(&row[i]);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One CSV row: its 1-based starting line and its fields.
type Row = (usize, Vec<String>);

/// RFC 4180 CSV: rows of fields with their 1-based starting line; blank lines skipped.
fn parse_csv(text: &str) -> Result<Vec<Row>, (usize, String)> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut line, mut row_line) = (1, 1);
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => {
                quoted = true;
                started = true;
            }
            (false, ',') => {
                row.push(std::mem::take(&mut field).trim().to_string());
                started = true;
            }
            (false, '\r') => {}
            (false, '\n') => {
                if started || !field.trim().is_empty() {
                    row.push(std::mem::take(&mut field).trim().to_string());
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                field.clear();
                started = false;
                line += 1;
                row_line = line;
            }
            (false, c) => {
                field.push(c);
                if !c.is_whitespace() {
                    started = true;
                }
            }
        }
    }
    if quoted {
        return Err((row_line, "a quoted value is not closed".into()));
    }
    if started || !field.trim().is_empty() {
        row.push(field.trim().to_string());
        rows.push((row_line, row));
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_commas_and_blank_lines() {
        let rows = parse_csv("name,user\r\n\nalice,\"a,b\"\"c\"\n bob , b\n").unwrap();
        assert_eq!(rows[0], (1, vec!["name".to_string(), "user".into()]));
        assert_eq!(rows[1], (3, vec!["alice".to_string(), "a,b\"c".into()]));
        assert_eq!(rows[2], (4, vec!["bob".to_string(), "b".into()]));
        assert!(parse_csv("a\n\"open\n").is_err());
    }

    #[test]
    fn columns_fill_strings_and_env_references_stay() {
        let header = vec!["name".to_string(), "user".into()];
        let row = vec!["alice".to_string(), "a@x".into()];
        assert_eq!(
            substitute("{user} ${PASS} {name}", &header, &row).unwrap(),
            "a@x ${PASS} alice"
        );
        let e = substitute("{nope}", &header, &row).unwrap_err();
        assert!(
            e.contains("no column \"nope\"") && e.contains("name, user"),
            "{e}"
        );
    }

    #[test]
    fn a_value_cannot_add_yaml_keys() {
        let header = vec!["name".to_string()];
        let row = vec!["x\nsinks: [evil]".to_string()];
        let mut v: yaml_serde::Value =
            yaml_serde::from_str("name: \"{name}\"\nsinks: [a]").unwrap();
        fill(&mut v, &header, &row).unwrap();
        assert_eq!(v["name"].as_str(), Some("x\nsinks: [evil]"));
        assert_eq!(v["sinks"][0].as_str(), Some("a"));
    }
}
