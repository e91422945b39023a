//! The state files of the tools people switch from, read without I/O: which UIDLs of one
//! account they have already retrieved.
//!
//! - fetchmail `.fetchids`: `user@host uid` per line (all accounts in one file).
//! - getmail6 `oldmail-<server>-<port>-<user>`: `uid\0unix-seconds` per line (one account).
//! - mpop `uidls_file`: `#` comments, then per account a line ` <count> <host> <user>` (with a
//!   leading space) followed by its UIDs, one per line.

use crate::store::Millis;

/// The tool whose state is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    Fetchmail,
    Getmail,
    Mpop,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fetchmail => "fetchmail",
            Self::Getmail => "getmail",
            Self::Mpop => "mpop",
        }
    }
}

/// One UIDL the tool has retrieved, and when it first saw it where the tool says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub uidl: String,
    pub first_seen: Option<Millis>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error(
        "no entry for {user}@{host} in the file; it holds: {found} \
         (the mailbox's pop3 username and host must match the tool's)"
    )]
    NoAccount {
        user: String,
        host: String,
        found: String,
    },
}

/// The UIDLs `tool` retrieved for `user` on `host`.
pub fn parse(tool: Tool, text: &[u8], user: &str, host: &str) -> Result<Vec<Seen>, FormatError> {
    let text = String::from_utf8_lossy(text);
    match tool {
        Tool::Fetchmail => fetchmail(&text, user, host),
        Tool::Getmail => getmail(&text),
        Tool::Mpop => mpop(&text, user, host),
    }
}

fn same_account(user: &str, host: &str, u: &str, h: &str) -> bool {
    u == user && h.eq_ignore_ascii_case(host)
}

fn no_account(user: &str, host: &str, mut found: Vec<String>) -> FormatError {
    found.sort();
    found.dedup();
    FormatError::NoAccount {
        user: user.into(),
        host: host.into(),
        found: if found.is_empty() {
            "nothing".into()
        } else {
            found.join(", ")
        },
    }
}

fn fetchmail(text: &str, user: &str, host: &str) -> Result<Vec<Seen>, FormatError> {
    let (mut out, mut found) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let (Some(account), Some(uid)) = (words.next(), words.next()) else {
            return Err(FormatError::Line {
                line: i + 1,
                what: "expected `user@host uid`".into(),
            });
        };
        // The user part may itself hold an `@` (alice@example.org@pop.example.org).
        let Some((u, h)) = account.rsplit_once('@') else {
            return Err(FormatError::Line {
                line: i + 1,
                what: format!("expected `user@host`, got {account:?}"),
            });
        };
        if same_account(user, host, u, h) {
            out.push(Seen {
                uidl: uid.to_string(),
                first_seen: None,
            });
        } else {
            found.push(account.to_string());
        }
    }
    if out.is_empty() && !found.is_empty() {
        return Err(no_account(user, host, found));
    }
    Ok(out)
}

fn getmail(text: &str) -> Result<Vec<Seen>, FormatError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (uid, when) = line.split_once('\0').ok_or_else(|| FormatError::Line {
            line: i + 1,
            what: "expected `uid<NUL>timestamp`".into(),
        })?;
        let secs: i64 = when.trim().parse().map_err(|_| FormatError::Line {
            line: i + 1,
            what: format!("timestamp {when:?} is not a number"),
        })?;
        out.push(Seen {
            uidl: uid.to_string(),
            first_seen: Some(secs.saturating_mul(1000)),
        });
    }
    Ok(out)
}

fn mpop(text: &str, user: &str, host: &str) -> Result<Vec<Seen>, FormatError> {
    let (mut out, mut found) = (Vec::new(), Vec::new());
    let mut ours = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix(' ') {
            let words: Vec<&str> = header.split_ascii_whitespace().collect();
            let [count, h, u] = words[..] else {
                return Err(FormatError::Line {
                    line: i + 1,
                    what: "expected ` <count> <host> <user>`".into(),
                });
            };
            if count.parse::<u64>().is_err() {
                return Err(FormatError::Line {
                    line: i + 1,
                    what: format!("count {count:?} is not a number"),
                });
            }
            ours = same_account(user, host, u, h);
            if !ours {
                found.push(format!("{u}@{h}"));
            }
            continue;
        }
        if ours {
            out.push(Seen {
                uidl: line.trim().to_string(),
                first_seen: None,
            });
        }
    }
    if out.is_empty() && !found.is_empty() {
        return Err(no_account(user, host, found));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn uidls(v: &[Seen]) -> Vec<&str> {
        v.iter().map(|s| s.uidl.as_str()).collect()
    }

    #[test]
    fn fetchmail_ids_of_one_account_among_several() {
        let text = b"alice@127.0.0.1 0001\nbob@127.0.0.1 0009\nalice@127.0.0.1 0002\n";
        let v = parse(Tool::Fetchmail, text, "alice", "127.0.0.1").unwrap();
        assert_eq!(uidls(&v), ["0001", "0002"]);
        let err = parse(Tool::Fetchmail, text, "carol", "127.0.0.1").unwrap_err();
        assert!(
            err.to_string().contains("alice@127.0.0.1, bob@127.0.0.1"),
            "{err}"
        );
        let at = b"a@example.org@POP.example.org u1\n";
        let v = parse(Tool::Fetchmail, at, "a@example.org", "pop.example.org").unwrap();
        assert_eq!(uidls(&v), ["u1"]);
        assert!(parse(Tool::Fetchmail, b"garbage\n", "a", "b").is_err());
    }

    #[test]
    fn getmail_ids_keep_their_first_sight() {
        let v = parse(
            Tool::Getmail,
            b"0002\x001796140243\n0001\x001700000000\n",
            "x",
            "y",
        )
        .unwrap();
        assert_eq!(uidls(&v), ["0002", "0001"]);
        assert_eq!(v[1].first_seen, Some(1_700_000_000_000));
        assert!(parse(Tool::Getmail, b"0001 no-nul\n", "x", "y").is_err());
    }

    #[test]
    fn mpop_blocks_by_host_and_user() {
        let text = b"# This file was generated by mpop version 1.4.18.\n#\n 2 127.0.0.1 alice\n0001\n0002\n 1 other.example bob\nzz\n";
        let v = parse(Tool::Mpop, text, "alice", "127.0.0.1").unwrap();
        assert_eq!(uidls(&v), ["0001", "0002"]);
        let v = parse(Tool::Mpop, text, "bob", "other.example").unwrap();
        assert_eq!(uidls(&v), ["zz"]);
        assert!(parse(Tool::Mpop, text, "carol", "127.0.0.1").is_err());
    }
}
