//! Test messages that exercise the wire: dot-stuffing, 8-bit text, binary attachments.
//!
//! Every message uses CRLF line endings and contains no NUL and no bare CR or LF, which is
//! exactly what Dovecot's POP3 server returns unchanged (it would turn a bare LF into CRLF), so
//! a delivered file must equal the seeded bytes. Each message carries a unique `X-Pb-Id`.

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The `X-Pb-Id` header value, for messages in assertions.
pub fn id_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Pb-Id: "))
        .unwrap_or("<no X-Pb-Id>")
        .trim()
        .to_string()
}

/// A small plain message with a given subject.
pub fn simple(id: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n\
         X-Pb-Id: {id}\r\nMessage-ID: <{id}@popbridge.test>\r\n\r\nHello {id}.\r\n"
    )
    .into_bytes()
}

/// `n` messages cycling through four shapes, reproducible from `tag`.
pub fn corpus(tag: &str, n: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(
        tag.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            match i % 4 {
                0 => dotted(&id),
                1 => eight_bit(&id, &mut rng),
                2 => base64_attachment(&id, &mut rng),
                _ => raw_8bit_attachment(&id, &mut rng),
            }
        })
        .collect()
}

fn headers(id: &str, subject: &str, content_type: &str) -> String {
    format!(
        "From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.org>\r\nTo: rcpt@example.net\r\n\
         Subject: {subject}\r\nX-Pb-Id: {id}\r\nMessage-ID: <{id}@popbridge.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
    )
}

/// Lines that POP3 must dot-stuff: a lone ".", "..", ".foo", and a body that starts with ".".
fn dotted(id: &str) -> Vec<u8> {
    let mut m = headers(id, &format!("dots {id}"), "text/plain; charset=us-ascii");
    m.push_str("\r\n.first line starts with a dot\r\n.\r\n..\r\n...\r\n. space\r\n");
    m.push_str("a line\r\n.\r\nthe line above was a lone dot\r\n");
    m.push_str(&format!(".{}\r\nend\r\n", "x".repeat(900)));
    m.into_bytes()
}

/// UTF-8 and Latin-1 bytes in headers-free 8-bit text.
fn eight_bit(id: &str, rng: &mut StdRng) -> Vec<u8> {
    let mut m = headers(id, &format!("8bit {id}"), "text/plain; charset=utf-8").into_bytes();
    m.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice("Grüße, naïve café, 日本語, emoji 📬\r\n".as_bytes());
    m.extend_from_slice(b"latin-1: \xe9\xe8\xfc\xff\r\n");
    for _ in 0..rng.gen_range(1..40) {
        m.extend_from_slice("Ünïcödé line ✓\r\n".as_bytes());
    }
    m
}

fn multipart(id: &str, kind: &str, cte: &str, part: &[u8]) -> Vec<u8> {
    let boundary = format!("=_pb_{id}");
    let mut m = headers(
        id,
        &format!("{kind} {id}"),
        &format!("multipart/mixed; boundary=\"{boundary}\""),
    )
    .into_bytes();
    m.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream; name=\"{id}.bin\"\r\n\
             Content-Transfer-Encoding: {cte}\r\n\r\n"
        )
        .as_bytes(),
    );
    m.extend_from_slice(part);
    m.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    m
}

/// A random binary attachment, base64 in 76-column lines (2 KB to 200 KB).
fn base64_attachment(id: &str, rng: &mut StdRng) -> Vec<u8> {
    let size = if rng.gen_bool(0.05) {
        200_000
    } else {
        rng.gen_range(2_000..20_000)
    };
    let data: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    multipart(id, "base64", "base64", lines.join("\r\n").as_bytes())
}

/// Raw 8-bit bytes (every value except NUL, CR, LF) in lines of up to 200 bytes, some
/// starting with a dot.
fn raw_8bit_attachment(id: &str, rng: &mut StdRng) -> Vec<u8> {
    let mut part = Vec::new();
    for i in 0..rng.gen_range(5..200) {
        if i % 7 == 0 {
            part.push(b'.');
        }
        for _ in 0..rng.gen_range(0..200) {
            let b: u8 = rng.gen_range(1..=255);
            part.push(if b == b'\r' || b == b'\n' { b'.' } else { b });
        }
        part.extend_from_slice(b"\r\n");
    }
    part.extend_from_slice(b"end of raw part");
    multipart(id, "raw", "8bit", &part)
}
