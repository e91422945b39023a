//! IMAP response lines → meaning, with no I/O: the greeting, tagged status lines with their
//! response code, `* CAPABILITY`, `* SEARCH`, `[APPENDUID v uid]`, and the `{n}` (or binary
//! `~{n}`) literal announcement at the end of a line. Only what the APPEND sink needs.

/// The outcome word of a tagged response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// A tagged response: `A7 OK [APPENDUID 38505 3955] APPEND completed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    pub status: Status,
    /// The response code without brackets (`APPENDUID 38505 3955`), if any.
    pub code: Option<String>,
    pub text: String,
}

/// What the server's first line says (RFC 3501 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// `* OK`: log in next.
    Ok,
    /// `* PREAUTH`: already logged in, so no LOGIN, and no STARTTLS either.
    PreAuth,
    /// `* BYE` or anything else: the server will not talk to us.
    Refused,
}

/// The greeting's kind and its response code without brackets (`CAPABILITY ...`), if any.
pub fn parse_greeting(line: &[u8]) -> (Greeting, Option<String>) {
    let text = String::from_utf8_lossy(trim_eol(line));
    let Some(rest) = text.strip_prefix("* ") else {
        return (Greeting::Refused, None);
    };
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let kind = match word.to_ascii_uppercase().as_str() {
        "OK" => Greeting::Ok,
        "PREAUTH" => Greeting::PreAuth,
        _ => Greeting::Refused,
    };
    let code = rest
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map(|(code, _)| code.to_string());
    (kind, code)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `TAG OK|NO|BAD [code] text`; `None` for untagged (`*`) and continuation (`+`) lines.
pub fn parse_tagged(line: &[u8]) -> Option<Tagged> {
    let text = String::from_utf8_lossy(trim_eol(line));
    let (tag, rest) = text.split_once(' ')?;
    // A tag is an atom: not empty (a line starting with a space, found by the fuzzer), no
    // `*`/`+` (untagged, continuation), no controls or IMAP specials.
    if tag.is_empty()
        || tag
            .chars()
            .any(|c| c.is_control() || "*+(){%\\\"]".contains(c) || !c.is_ascii())
    {
        return None;
    }
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => return None,
    };
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code.to_string()), text.trim_start().to_string()),
        None => (None, rest.to_string()),
    };
    Some(Tagged {
        tag: tag.to_string(),
        status,
        code,
        text,
    })
}

/// The byte count of a literal announced at the end of a line (`{123}`, `{123+}`, or the
/// RFC 3516 binary `~{123}`).
pub fn literal_len(line: &[u8]) -> Option<usize> {
    let line = trim_eol(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = line.get(open + 1..)?.strip_suffix(b"}")?;
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// Capability atoms, upper-cased, from `* CAPABILITY ...` or an `[CAPABILITY ...]` code.
pub fn capabilities(text: &str) -> Vec<String> {
    let text = text.trim();
    let text = text
        .strip_prefix("* ")
        .unwrap_or(text)
        .trim_start_matches('[');
    let mut words = text.split_whitespace();
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("CAPABILITY") => words
            .map(|w| w.trim_end_matches(']').to_ascii_uppercase())
            .collect(),
        _ => Vec::new(),
    }
}

/// The numbers of a `* SEARCH 3 5 8` line; `None` for other lines.
pub fn search_results(line: &[u8]) -> Option<Vec<u32>> {
    let text = String::from_utf8_lossy(trim_eol(line));
    let mut words = text.split_whitespace();
    if words.next()? != "*" || !words.next()?.eq_ignore_ascii_case("SEARCH") {
        return None;
    }
    Some(words.filter_map(|w| w.parse().ok()).collect())
}

/// The number of an untagged `* OK [NAME n] ...` line (`UIDVALIDITY`, `UIDNEXT` after
/// SELECT); `None` for other lines.
pub fn untagged_ok_number(line: &[u8], name: &str) -> Option<u32> {
    let text = String::from_utf8_lossy(trim_eol(line));
    let rest = text.strip_prefix("* ")?;
    let (word, rest) = rest.split_once(' ')?;
    if !word.eq_ignore_ascii_case("OK") {
        return None;
    }
    let (code, _) = rest.strip_prefix('[')?.split_once(']')?;
    let (key, value) = code.split_once(' ')?;
    if !key.eq_ignore_ascii_case(name) {
        return None;
    }
    value.trim().parse().ok()
}

/// The first personal namespace of a `* NAMESPACE` line (RFC 2342): its prefix (`INBOX.` on
/// Courier and on Cyrus without altnamespace, empty on Dovecot) and hierarchy separator.
/// `None` for other lines and for a server without a personal namespace (`NIL`).
pub fn personal_namespace(line: &[u8]) -> Option<(String, Option<char>)> {
    let text = String::from_utf8_lossy(trim_eol(line));
    let rest = text.strip_prefix("* ")?;
    let (word, rest) = rest.split_once(' ')?;
    if !word.eq_ignore_ascii_case("NAMESPACE") {
        return None;
    }
    let rest = rest.trim_start().strip_prefix("((")?.trim_start();
    let (prefix, rest) = quoted_string(rest)?;
    let rest = rest.trim_start();
    let separator = match quoted_string(rest) {
        Some((sep, _)) => sep.chars().next(),
        None => None,
    };
    Some((prefix, separator))
}

/// A leading IMAP quoted string and what follows it.
fn quoted_string(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 2..])),
            c => out.push(c),
        }
    }
    None
}

/// The mailbox name of a `* LIST (flags) "sep" name` line, decoded from modified UTF-7 (the
/// raw name when it is not valid modified UTF-7); `None` for other lines.
pub fn list_mailbox(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(trim_eol(line));
    let rest = text.strip_prefix("* ")?;
    let (word, rest) = rest.split_once(' ')?;
    if !word.eq_ignore_ascii_case("LIST") {
        return None;
    }
    let (_, rest) = rest.trim_start().strip_prefix('(')?.split_once(')')?;
    let rest = rest.trim_start();
    let rest = match quoted_string(rest) {
        Some((_, after)) => after,
        None => rest
            .get(3..)
            .filter(|_| rest[..3].eq_ignore_ascii_case("NIL"))?,
    };
    let rest = rest.trim_start();
    let wire = if rest.starts_with('"') {
        quoted_string(rest)?.0
    } else if rest.starts_with('{') {
        // A literal, inlined by the reader: `{n}\r\n` then the name.
        rest.split_once('\n')?.1.to_string()
    } else {
        rest.trim_end().to_string()
    };
    Some(super::utf7::decode(&wire).unwrap_or(wire))
}

/// `(uidvalidity, uid)` from an `APPENDUID 38505 3955` response code (RFC 4315).
pub fn appenduid(code: &str) -> Option<(u32, u32)> {
    let mut words = code.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// `(uidvalidity, uids)` from the `APPENDUID 38505 101:103,107` code of a MULTIAPPEND
/// (RFC 4315 uid-set, in the order the messages were sent); `None` unless it holds exactly
/// `expected` UIDs.
pub fn appenduid_set(code: &str, expected: usize) -> Option<(u32, Vec<u32>)> {
    let mut words = code.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("APPENDUID") {
        return None;
    }
    let validity = words.next()?.parse().ok()?;
    let mut uids = Vec::with_capacity(expected);
    for part in words.next()?.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        let (lo, hi) = (a.min(b), a.max(b));
        if (hi - lo) as usize >= expected.saturating_sub(uids.len()) {
            return None;
        }
        uids.extend(lo..=hi);
    }
    (uids.len() == expected).then_some((validity, uids))
}

/// An IMAP quoted string for `s`, or `None` when it cannot be one (CR, LF, NUL, non-ASCII):
/// the caller then leaves that search criterion out rather than send a literal.
pub fn quoted(s: &str) -> Option<String> {
    if !s.is_ascii() || s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return None;
    }
    Some(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tagged_lines_with_and_without_codes() {
        let t = parse_tagged(b"A7 OK [APPENDUID 38505 3955] APPEND completed\r\n").unwrap();
        assert_eq!(t.tag, "A7");
        assert_eq!(t.status, Status::Ok);
        assert_eq!(appenduid(t.code.as_deref().unwrap()), Some((38505, 3955)));
        assert_eq!(t.text, "APPEND completed");
        let t = parse_tagged(b"a1 no [AUTHENTICATIONFAILED] Authentication failed.\r\n").unwrap();
        assert_eq!(t.status, Status::No);
        assert_eq!(t.code.as_deref(), Some("AUTHENTICATIONFAILED"));
        let t = parse_tagged(b"A2 BAD Error in IMAP command\r\n").unwrap();
        assert_eq!((t.status, t.code), (Status::Bad, None));
        assert!(parse_tagged(b"* OK [CAPABILITY IMAP4rev1] ready\r\n").is_none());
        assert!(parse_tagged(b"+ OK\r\n").is_none());
        assert!(parse_tagged(b"A3 MAYBE\r\n").is_none());
        // Found by the fuzzer: a leading space made an empty tag.
        assert!(parse_tagged(b" OK [CAPABILITY IMAP4rev1] ready\r\n").is_none());
        assert!(parse_tagged(b"A\x004 OK done\r\n").is_none());
    }

    #[test]
    fn greetings_ok_preauth_and_refusals() {
        assert_eq!(
            parse_greeting(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"),
            (Greeting::Ok, Some("CAPABILITY IMAP4rev1 LITERAL+".into()))
        );
        assert_eq!(
            parse_greeting(b"* preauth logged in as joe\r\n"),
            (Greeting::PreAuth, None)
        );
        assert_eq!(parse_greeting(b"* BYE go away\r\n").0, Greeting::Refused);
        assert_eq!(parse_greeting(b"+OK pop3\r\n").0, Greeting::Refused);
        assert_eq!(parse_greeting(b"").0, Greeting::Refused);
    }

    #[test]
    fn literals_capabilities_and_search() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {42}\r\n"), Some(42));
        assert_eq!(literal_len(b"* 1 FETCH (BINARY[] ~{42}\r\n"), Some(42));
        assert_eq!(literal_len(b"A1 APPEND INBOX {10+}\r\n"), Some(10));
        assert_eq!(literal_len(b"* OK {not}\r\n"), None);
        assert_eq!(literal_len(b"* OK fine\r\n"), None);
        assert_eq!(
            capabilities("* CAPABILITY IMAP4rev1 LITERAL+ UIDPLUS STARTTLS"),
            ["IMAP4REV1", "LITERAL+", "UIDPLUS", "STARTTLS"]
        );
        assert_eq!(
            capabilities("CAPABILITY IMAP4rev1 AUTH=PLAIN]"),
            ["IMAP4REV1", "AUTH=PLAIN"]
        );
        assert_eq!(search_results(b"* SEARCH 3 5 8\r\n"), Some(vec![3, 5, 8]));
        assert_eq!(search_results(b"* SEARCH\r\n"), Some(vec![]));
        assert_eq!(search_results(b"* 3 EXISTS\r\n"), None);
        let next = |l: &[u8]| untagged_ok_number(l, "UIDNEXT");
        assert_eq!(
            next(b"* OK [UIDNEXT 4392] Predicted next UID\r\n"),
            Some(4392)
        );
        assert_eq!(next(b"* ok [uidnext 7]\r\n"), Some(7));
        assert_eq!(next(b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"), None);
        assert_eq!(
            untagged_ok_number(
                b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
                "UIDVALIDITY"
            ),
            Some(3857529045)
        );
        assert_eq!(next(b"A1 OK [UIDNEXT 3] done\r\n"), None);
        assert_eq!(next(b"* OK [UIDNEXT x]\r\n"), None);
    }

    #[test]
    fn personal_namespaces_of_real_servers() {
        // Courier, and Cyrus with Debian's altnamespace: no.
        assert_eq!(
            personal_namespace(b"* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\"))\r\n"),
            Some(("INBOX.".into(), Some('.')))
        );
        // Dovecot.
        assert_eq!(
            personal_namespace(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"),
            Some((String::new(), Some('/')))
        );
        assert_eq!(
            personal_namespace(b"* NAMESPACE ((\"a\\\\b\" NIL)) NIL NIL\r\n"),
            Some(("a\\b".into(), None))
        );
        assert_eq!(personal_namespace(b"* NAMESPACE NIL NIL NIL\r\n"), None);
        assert_eq!(personal_namespace(b"* SEARCH 1\r\n"), None);
        assert_eq!(
            personal_namespace(b"* NAMESPACE ((\"unterminated\r\n"),
            None
        );
    }

    #[test]
    fn multiappend_uid_sets() {
        assert_eq!(
            appenduid_set("APPENDUID 7 101:103,107", 4),
            Some((7, vec![101, 102, 103, 107]))
        );
        assert_eq!(appenduid_set("APPENDUID 7 5", 1), Some((7, vec![5])));
        assert_eq!(appenduid_set("APPENDUID 7 1:4000000000", 3), None);
        assert_eq!(appenduid_set("APPENDUID 7 1:2", 3), None);
        assert_eq!(appenduid_set("UIDNEXT 7", 1), None);
    }

    #[test]
    fn list_lines_give_decoded_names() {
        assert_eq!(
            list_mailbox(b"* LIST (\\HasNoChildren) \"/\" \"Archiv/Entw&APw-rfe\"\r\n").as_deref(),
            Some("Archiv/Entwürfe")
        );
        assert_eq!(
            list_mailbox(b"* LIST (\\Noselect) \".\" INBOX.Drafts\r\n").as_deref(),
            Some("INBOX.Drafts")
        );
        assert_eq!(
            list_mailbox(b"* LIST () NIL {5}\r\nA&-B.\r\n").as_deref(),
            Some("A&B.")
        );
        // Not valid modified UTF-7: shown as sent.
        assert_eq!(
            list_mailbox(b"* list () \"/\" \"&Jjo!\"\r\n").as_deref(),
            Some("&Jjo!")
        );
        assert_eq!(list_mailbox(b"* SEARCH 1\r\n"), None);
    }

    #[test]
    fn quoting_escapes_or_refuses() {
        assert_eq!(quoted("<a@b>").unwrap(), "\"<a@b>\"");
        assert_eq!(quoted("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted("line\r\nbreak"), None);
        assert_eq!(quoted("Grüße"), None);
    }
}
