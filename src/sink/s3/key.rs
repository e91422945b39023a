//! Object keys: a template filled from the message. Every part must be the same on a retry
//! after a crash (the key is how a repeat finds the first upload), so the date comes from the
//! message's own `Date:` header, not from the fetch time, which changes when a message is
//! fetched again.

use chrono::{DateTime, Datelike, Utc};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Mailbox,
    Id,
    Uidl,
    Sha256,
    Year,
    Month,
    Day,
}

/// A parsed `key:` template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTemplate(Vec<Part>);

/// What a key is built from.
pub struct KeyInput<'a> {
    pub mailbox: &'a str,
    pub id: &'a str,
    pub uidl: &'a str,
    pub sha256: &'a str,
    /// From the `Date:` header; `None` gives `0000/00/00`.
    pub date: Option<DateTime<Utc>>,
}

/// Keeps a value from adding path levels or characters S3 keys handle badly.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@+=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`key`: unclosed `{{` in {text:?}"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "mailbox" => Part::Mailbox,
                "id" => Part::Id,
                "uidl" => Part::Uidl,
                "sha256" => Part::Sha256,
                "yyyy" => Part::Year,
                "mm" => Part::Month,
                "dd" => Part::Day,
                other => {
                    return Err(format!(
                        "`key`: unknown placeholder {{{other}}} (known: mailbox, id, uidl, sha256, yyyy, mm, dd)"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.contains(&Part::Id) {
            return Err("`key` must contain {id}, or two messages could share one object".into());
        }
        if text.starts_with('/') {
            return Err("`key` must not start with `/`".into());
        }
        Ok(Self(parts))
    }

    pub fn render(&self, v: &KeyInput) -> String {
        let (y, m, d) = v
            .date
            .map_or(("0000".into(), "00".into(), "00".into()), |t| {
                (
                    format!("{:04}", t.year()),
                    format!("{:02}", t.month()),
                    format!("{:02}", t.day()),
                )
            });
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Mailbox => safe(v.mailbox),
                Part::Id => v.id.to_string(),
                Part::Uidl => safe(v.uidl),
                Part::Sha256 => v.sha256.to_string(),
                Part::Year => y.clone(),
                Part::Month => m.clone(),
                Part::Day => d.clone(),
            })
            .collect()
    }
}

/// What a message's header block gives the key and the metadata.
pub type HeaderFields = (Option<DateTime<Utc>>, Option<String>);

/// `Date:` (in UTC) and `Message-ID:` from a message's header block. Whatever the bytes, this
/// returns: a header block the parser cannot read, or that makes it panic, gives neither, so
/// the key gets the stable placeholder date and the delivery goes on (as the webhook payload
/// does with mail-parser, which has tripped on fuzzed input before).
pub fn header_fields(head: &[u8]) -> HeaderFields {
    guarded(|| parse_header_fields(head))
}

fn parse_header_fields(head: &[u8]) -> HeaderFields {
    let Some(msg) = mail_parser::MessageParser::new().parse_headers(head) else {
        return (None, None);
    };
    let date = msg
        .date()
        .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0));
    (date, msg.message_id().map(str::to_string))
}

/// Runs a header parser, turning its panic into "no fields". The parse is pure (it only reads
/// the bytes), so nothing is left half-changed by an unwind.
fn guarded(parse: impl FnOnce() -> HeaderFields + std::panic::UnwindSafe) -> HeaderFields {
    std::panic::catch_unwind(parse).unwrap_or((None, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(date: Option<DateTime<Utc>>) -> KeyInput<'static> {
        KeyInput {
            mailbox: "sales/eu",
            id: "pb1_0123",
            uidl: "00000001 x",
            sha256: "ab",
            date,
        }
    }

    #[test]
    fn default_template_uses_the_date_header_in_utc() {
        let head =
            b"From: a@b\r\nDate: Tue, 31 Dec 2024 23:30:00 -0500\r\nMessage-ID: <m1@x>\r\n\r\nbody";
        let (date, mid) = header_fields(head);
        assert_eq!(mid.as_deref(), Some("m1@x"));
        let t = KeyTemplate::parse(super::super::config::DEFAULT_KEY).unwrap();
        assert_eq!(t.render(&input(date)), "sales_eu/2025/01/01/pb1_0123.eml");
    }

    #[test]
    fn no_date_header_gives_a_stable_placeholder_date() {
        let (date, mid) = header_fields(b"Subject: x\r\n\r\nbody");
        assert_eq!((date, mid), (None, None));
        let t = KeyTemplate::parse("{yyyy}-{mm}-{dd}/{uidl}/{id}").unwrap();
        assert_eq!(t.render(&input(None)), "0000-00-00/00000001_x/pb1_0123");
    }

    #[test]
    fn a_parser_panic_gives_no_fields_instead_of_failing_the_delivery() {
        let fields = guarded(|| panic!("mail-parser tripped on a hostile header"));
        assert_eq!(fields, (None, None));
        let t = KeyTemplate::parse(super::super::config::DEFAULT_KEY).unwrap();
        assert_eq!(
            t.render(&input(fields.0)),
            "sales_eu/0000/00/00/pb1_0123.eml"
        );
    }

    #[test]
    fn hostile_header_bytes_give_a_stable_key() {
        let long_line = [b"X-Long: ".as_slice(), &[b'A'; 70_000]].concat();
        let comments = [b"Date: ".as_slice(), &[b'('; 20_000], b"\r\n\r\n"].concat();
        let many = b"X-A: b\r\n".repeat(10_000);
        let hostile: Vec<Vec<u8>> = vec![
            b"Date: \xff\xfe\x00\x01 Jan 2024\r\nMessage-ID: <\x00\xff@x>\r\n\r\n".to_vec(),
            b"Date: 99 Foo 99999 99:99:99 +9999\r\n\r\n".to_vec(),
            b"Date: 31 Feb 0 25:61:61 -9999 (((\r\n\r\n".to_vec(),
            b"Date: Mon, 32 Dec 65535 23:59:59 EST\r\n".to_vec(),
            b"Subject: =?x-unknown?B?////?= =?utf-7?Q?+AGE-?=\r\nDate:\r\n\r\n".to_vec(),
            b"\r\n\r\nDate: Tue, 31 Dec 2024 23:30:00 -0500\r\n".to_vec(),
            b"Date\r Tue, 31 Dec 2024\rMessage-ID: <a\r\n".to_vec(),
            b":\r\n:\r\n: : :\r\n\r\n".to_vec(),
            long_line,
            comments,
            many,
            Vec::new(),
        ];
        let t = KeyTemplate::parse("{yyyy}/{mm}/{dd}/{id}").unwrap();
        for head in &hostile {
            let fields = header_fields(head);
            assert_eq!(
                fields,
                header_fields(head),
                "the same bytes, the same fields"
            );
            let key = t.render(&input(fields.0));
            let date = key.trim_end_matches("/pb1_0123");
            assert!(
                date.split('/')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                "{key}"
            );
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(KeyTemplate::parse("{mailbox}/x.eml")
            .unwrap_err()
            .contains("{id}"));
        assert!(KeyTemplate::parse("{id}/{hour}")
            .unwrap_err()
            .contains("unknown"));
        assert!(KeyTemplate::parse("{id").unwrap_err().contains("unclosed"));
        assert!(KeyTemplate::parse("/{id}").is_err());
    }
}
