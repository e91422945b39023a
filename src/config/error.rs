//! Configuration errors: every one says where (file, then line:column or the item's path) and
//! never includes a secret.

use std::fmt;
use std::path::PathBuf;

/// Loading the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the expected shape (unknown key, wrong type, bad
    /// duration, missing environment variable, ...).
    #[error("{}{}: {message}", file.display(), Position(*location))]
    Parse {
        file: PathBuf,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        message: String,
    },
    /// The file parses but is not a valid configuration. All problems found are listed.
    #[error("{}", Problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One validation problem: the item's path (e.g. `mailboxes[alice].sinks`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

impl ConfigError {
    /// Convert a YAML error, moving "unknown field" errors reported at an enclosing entry to the
    /// key's own line (see [`locate_unknown_field`]).
    pub(crate) fn from_yaml(file: PathBuf, text: &str, err: &yaml_serde::Error) -> Self {
        let mut message = err.to_string();
        let location = err.location().map(|l| (l.line(), l.column()));
        if let Some((line, column)) = location {
            let suffix = format!(" at line {line} column {column}");
            if let Some(pos) = message.find(&suffix) {
                message.replace_range(pos..pos + suffix.len(), "");
            }
        }
        let location = match (location, unknown_field_name(&message)) {
            (Some(at), Some(field)) => Some(locate_unknown_field(text, at, field).unwrap_or(at)),
            (at, _) => at,
        };
        ConfigError::Parse {
            file,
            location,
            message,
        }
    }
}

struct Position(Option<(usize, usize)>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

struct Problems<'a>(&'a PathBuf, &'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}: {}", self.0.display(), p.at, p.message)?;
        }
        Ok(())
    }
}

/// The `x` of a serde "unknown field `x`" message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Find the line holding key `field:` inside the block that starts at `at` (1-based line and
/// column, as yaml_serde reports an error in an internally tagged entry): the rest of that
/// line from the column, then the following lines indented at least as deep as the block's
/// first key. Returns the key's 1-based line and column.
pub(crate) fn locate_unknown_field(
    text: &str,
    at: (usize, usize),
    field: &str,
) -> Option<(usize, usize)> {
    let (line_no, column) = at;
    let mut lines = text.lines().enumerate().skip(line_no.checked_sub(1)?);
    let (first_idx, first) = lines.next()?;
    let first: Vec<char> = first.chars().collect();
    let start = column.checked_sub(1)?.min(first.len());
    // The block's key indentation: the first character after any `- ` markers.
    let indent = (start..first.len())
        .find(|&i| first[i] != ' ' && first[i] != '-')
        .unwrap_or(first.len());
    if let Some(col) = find_key(&first, start, field) {
        return Some((first_idx + 1, col + 1));
    }
    for (idx, line) in lines {
        let chars: Vec<char> = line.chars().collect();
        let own_indent = chars.iter().take_while(|c| **c == ' ').count();
        let rest_is_blank = own_indent == chars.len() || chars[own_indent] == '#';
        if rest_is_blank {
            continue;
        }
        if own_indent < indent || line.starts_with("---") || line.starts_with("...") {
            break;
        }
        if let Some(col) = find_key(&chars, 0, field) {
            return Some((idx + 1, col + 1));
        }
    }
    None
}

/// Position of `field` used as a mapping key (`field:`, `"field":`, `'field':`) in `line` at or
/// after `from`, in block or flow style.
fn find_key(line: &[char], from: usize, field: &str) -> Option<usize> {
    let field: Vec<char> = field.chars().collect();
    let mut i = from;
    while i < line.len() {
        let c = line[i];
        if c == '#' && (i == 0 || line[i - 1] == ' ') {
            return None;
        }
        let boundary = i == 0 || matches!(line[i - 1], ' ' | '{' | ',' | '-' | '\t');
        if boundary {
            let (quote, body) = match c {
                '"' | '\'' => (Some(c), i + 1),
                _ => (None, i),
            };
            let end = body + field.len();
            if line.get(body..end) == Some(&field[..]) {
                let after = match quote {
                    Some(q) if line.get(end) == Some(&q) => end + 1,
                    Some(_) => usize::MAX,
                    None => end,
                };
                if line.get(after) == Some(&':')
                    && matches!(line.get(after + 1), None | Some(' ' | '\t' | ',' | '}'))
                {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_below_the_entry_start() {
        let text = "sinks:\n  - name: a\n    type: maildir\n    fsnyc: true\n  - name: b\n";
        assert_eq!(locate_unknown_field(text, (2, 3), "fsnyc"), Some((4, 5)));
        assert_eq!(locate_unknown_field(text, (2, 5), "fsnyc"), Some((4, 5)));
    }

    #[test]
    fn stays_inside_the_entry() {
        let text = "sinks:\n  - name: a\n    type: maildir\n  - name: b\n    extra: 1\n";
        assert_eq!(locate_unknown_field(text, (2, 3), "extra"), None);
        assert_eq!(locate_unknown_field(text, (4, 3), "extra"), Some((5, 5)));
    }

    #[test]
    fn finds_keys_in_flow_style_and_quotes() {
        let text = "sinks:\n  - {name: a, type: maildir, \"bogus\": 1}\n";
        assert_eq!(locate_unknown_field(text, (2, 3), "bogus"), Some((2, 30)));
        let text = "x:\n  - name: a\n    retry: { attempts: 3 }\n";
        assert_eq!(
            locate_unknown_field(text, (2, 3), "attempts"),
            Some((3, 14))
        );
    }

    #[test]
    fn ignores_values_and_comments() {
        let text = "- name: bogus\n  # bogus: no\n  path: x # bogus: y\n  bogus: 1\n";
        assert_eq!(locate_unknown_field(text, (1, 1), "bogus"), Some((4, 3)));
    }
}
