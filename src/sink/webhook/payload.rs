//! The JSON payload (`schemas/webhook-payload.v1.json`), built with mail-parser.
//!
//! Memory: mail-parser needs the whole message in memory, and holds decoded copies of its
//! parts, so JSON mode peaks at about twice the message size. Attachment contents and the raw
//! message are base64-encoded straight into the output writer (`collect_str` over
//! `Base64Display`), never into a third copy, and the caller writes the JSON to a spool file, not
//! to memory. `format: raw` streams the message and stays bounded whatever its size.
//!
//! With `offload`, content left out for size gets a `link` (and the message a `raw_link`):
//! [`large_attachments`] names what to store, [`write_json_with_links`] writes the links.

use crate::sink::offload::Link;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use mail_parser::{Address, HeaderValue, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

/// What the payload says about the delivery itself (not the message).
#[derive(Clone, Debug)]
pub struct Meta<'a> {
    pub key: &'a str,
    pub mailbox: &'a str,
    pub uidl: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub max_inline_attachment_bytes: u64,
    pub include_raw: bool,
}

/// Links to content offloaded to S3: attachments by their SHA-256, and the whole message.
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub attachments: HashMap<String, Link>,
    pub raw: Option<Link>,
}

/// An attachment over the inline limit, as the offload step sees it.
pub struct Large<'a> {
    pub sha256: String,
    pub content_type: Option<String>,
    pub contents: &'a [u8],
}

/// Bytes serialised as a base64 JSON string, encoded while written.
struct B64<'a>(&'a [u8]);

impl Serialize for B64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

#[derive(Serialize)]
struct Mailbox<'a> {
    name: Option<&'a str>,
    address: Option<&'a str>,
}

#[derive(Serialize)]
struct HeaderField<'a> {
    name: &'a str,
    /// The value as written, unfolded, not decoded (decoded forms are in the fields above).
    value: String,
}

#[derive(Serialize)]
struct Attachment<'a> {
    filename: Option<&'a str>,
    content_type: Option<String>,
    disposition: Option<&'a str>,
    content_id: Option<&'a str>,
    size: usize,
    sha256: String,
    content: Option<B64<'a>>,
    /// True when `content` is left out because the attachment is over the inline limit.
    truncated: bool,
    /// Where the left-out content can be read, when it was offloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<Link>,
}

#[derive(Serialize)]
struct Payload<'a> {
    version: u32,
    id: &'a str,
    mailbox: &'a str,
    uidl: &'a str,
    size: u64,
    sha256: &'a str,
    fetched_at: String,
    message_id: Option<&'a str>,
    date: Option<String>,
    subject: Option<&'a str>,
    from: Vec<Mailbox<'a>>,
    to: Vec<Mailbox<'a>>,
    cc: Vec<Mailbox<'a>>,
    reply_to: Vec<Mailbox<'a>>,
    in_reply_to: Vec<&'a str>,
    references: Vec<&'a str>,
    headers: Vec<HeaderField<'a>>,
    text: Option<Cow<'a, str>>,
    html: Option<Cow<'a, str>>,
    attachments: Vec<Attachment<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<B64<'a>>,
    /// The whole message offloaded: sent instead of `raw`.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_link: Option<Link>,
}

fn mailboxes<'a>(a: Option<&'a Address<'a>>) -> Vec<Mailbox<'a>> {
    a.map(|a| {
        a.iter()
            .map(|m| Mailbox {
                name: m.name(),
                address: m.address(),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn ids<'a>(v: &'a HeaderValue<'a>) -> Vec<&'a str> {
    match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    }
}

/// `\r\n` or `\n` followed by white space is a fold: remove the line break, keep the space.
fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {}
            _ => out.push(c),
        }
    }
    out.trim().to_string()
}

fn body_of<'a>(part: Option<&'a MessagePart<'a>>, html: bool) -> Option<Cow<'a, str>> {
    let part = part?;
    match &part.body {
        PartType::Html(t) if html => Some(Cow::Borrowed(t.as_ref())),
        PartType::Text(t) if !html => Some(Cow::Borrowed(t.as_ref())),
        _ => None,
    }
}

fn parse(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    // mail-parser must not take the delivery down with it: a malformed message found by the
    // fuzzer trips a `debug_assert!` inside it.
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

fn content_type(a: &MessagePart<'_>) -> Option<String> {
    a.content_type().map(|ct| match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub),
        None => ct.ctype().to_string(),
    })
}

/// Each distinct attachment of `raw` over `max_inline` bytes (decoded), for the offload step.
pub fn large_attachments(
    raw: &[u8],
    max_inline: u64,
    mut each: impl FnMut(Large<'_>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Some(m) = parse(raw) else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for a in m.attachments() {
        let contents = a.contents();
        if contents.len() as u64 <= max_inline {
            continue;
        }
        let sha256 = hex::encode(Sha256::digest(contents));
        if seen.insert(sha256.clone()) {
            each(Large {
                sha256,
                content_type: content_type(a),
                contents,
            })?;
        }
    }
    Ok(())
}

/// Write the JSON payload of `raw` to `out`.
pub fn write_json(
    raw: &[u8],
    meta: &Meta<'_>,
    opts: Options,
    out: impl Write,
) -> std::io::Result<()> {
    write_json_with_links(raw, meta, opts, &Links::default(), out)
}

/// Write the JSON payload of `raw` to `out`, with links to what was offloaded.
pub fn write_json_with_links(
    raw: &[u8],
    meta: &Meta<'_>,
    opts: Options,
    links: &Links,
    out: impl Write,
) -> std::io::Result<()> {
    // A message mail-parser cannot parse is still sent, with the metadata and, whatever
    // `include_raw` says, the raw message (or its link): never dropped.
    let parsed = parse(raw);
    let mut p = Payload {
        version: 1,
        id: meta.key,
        mailbox: meta.mailbox,
        uidl: meta.uidl,
        size: meta.size,
        sha256: meta.sha256,
        fetched_at: meta.fetched_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        message_id: None,
        date: None,
        subject: None,
        from: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        reply_to: Vec::new(),
        in_reply_to: Vec::new(),
        references: Vec::new(),
        headers: Vec::new(),
        text: None,
        html: None,
        attachments: Vec::new(),
        raw: opts.include_raw.then_some(B64(raw)),
        raw_link: None,
    };
    if parsed.is_none() {
        p.raw = Some(B64(raw));
    }
    if let Some(link) = &links.raw {
        p.raw = None;
        p.raw_link = Some(link.clone());
    }
    if let Some(m) = &parsed {
        p.message_id = m.message_id();
        p.date = m.date().map(|d| d.to_rfc3339());
        p.subject = m.subject();
        p.from = mailboxes(m.from());
        p.to = mailboxes(m.to());
        p.cc = mailboxes(m.cc());
        p.reply_to = mailboxes(m.reply_to());
        p.in_reply_to = ids(m.in_reply_to());
        p.references = ids(m.references());
        p.headers = m
            .headers()
            .iter()
            .map(|h| HeaderField {
                name: h.name(),
                value: unfold(
                    raw.get(h.offset_start as usize..h.offset_end as usize)
                        .unwrap_or_default(),
                ),
            })
            .collect();
        // The first text/plain and text/html bodies as they are: no conversion between them.
        p.text = m.text_bodies().find_map(|b| body_of(Some(b), false));
        p.html = m.html_bodies().find_map(|b| body_of(Some(b), true));
        p.attachments = m
            .attachments()
            .map(|a| {
                let contents = a.contents();
                let inline = contents.len() as u64 <= opts.max_inline_attachment_bytes;
                let sha256 = hex::encode(Sha256::digest(contents));
                let link = if inline {
                    None
                } else {
                    links.attachments.get(&sha256).cloned()
                };
                Attachment {
                    filename: a.attachment_name(),
                    content_type: content_type(a),
                    disposition: a.content_disposition().map(|d| d.ctype()),
                    content_id: a.content_id(),
                    size: contents.len(),
                    sha256,
                    content: inline.then_some(B64(contents)),
                    truncated: !inline,
                    link,
                }
            })
            .collect();
    }
    // Nothing mail-parser could structure (no header section, say): the bytes are the text,
    // so a receiver never gets an empty payload for a message that has content.
    if p.headers.is_empty()
        && p.text.is_none()
        && p.html.is_none()
        && p.attachments.is_empty()
        && !raw.is_empty()
    {
        p.text = Some(String::from_utf8_lossy(raw));
    }
    serde_json::to_writer(out, &p).map_err(std::io::Error::other)
}
