//! Modified UTF-7 (RFC 3501 5.1.3), the form of non-ASCII mailbox names on the wire: printable
//! ASCII stands for itself (`&` as `&-`), any other run of characters is UTF-16 in modified
//! base64 (`,` for `/`, no padding) between `&` and `-`. Pure functions, no I/O.

use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

fn engine() -> Option<GeneralPurpose> {
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").ok()?;
    Some(GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    ))
}

fn printable(c: char) -> bool {
    ('\x20'..='\x7e').contains(&c)
}

/// `name` in modified UTF-7.
pub fn encode(name: &str) -> String {
    let Some(b64) = engine() else {
        return name.to_string();
    };
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&b64.encode(bytes));
        out.push('-');
        run.clear();
    };
    for c in name.chars() {
        if printable(c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The name a modified UTF-7 `wire` form stands for; `None` when it is not valid modified
/// UTF-7 (then the caller shows the raw name).
pub fn decode(wire: &str) -> Option<String> {
    let b64 = engine()?;
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(at) = rest.find('&') {
        let (plain, tail) = rest.split_at(at);
        if !plain.chars().all(printable) {
            return None;
        }
        out.push_str(plain);
        let tail = &tail[1..];
        let end = tail.find('-')?;
        let (coded, after) = (&tail[..end], &tail[end + 1..]);
        if coded.is_empty() {
            out.push('&');
        } else {
            let bytes = b64.decode(coded).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            let text = String::from_utf16(&units).ok()?;
            // A run that encodes printable ASCII is not in canonical form (RFC 3501 5.1.3).
            if text.chars().any(printable) {
                return None;
            }
            out.push_str(&text);
        }
        rest = after;
    }
    if !rest.chars().all(printable) {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_rfc_examples() {
        // RFC 3501 5.1.3: "~peter/mail/台北/日本語".
        assert_eq!(
            encode("~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("A&B"), "A&-B");
        assert_eq!(encode("INBOX.Sent"), "INBOX.Sent");
        // Outside the BMP: a surrogate pair in one run.
        assert_eq!(
            decode(&encode("Mail \u{1F4E7}")).as_deref(),
            Some("Mail \u{1F4E7}")
        );
    }

    #[test]
    fn decodes_the_rfc_examples_and_refuses_broken_forms() {
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Some("~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}")
        );
        assert_eq!(decode("&-").as_deref(), Some("&"));
        assert_eq!(
            decode("Archiv/Entw&APw-rfe").as_deref(),
            Some("Archiv/Entwürfe")
        );
        // No closing `-`; printable ASCII ("a") in base64; raw 8-bit.
        assert_eq!(decode("&Jjo!"), None);
        assert_eq!(decode("&AGE-"), None);
        assert_eq!(decode("raw ü"), None);
    }

    #[test]
    fn round_trips() {
        for name in [
            "",
            "INBOX",
            "Archiv/Entwürfe",
            "Gelöschte Elemente",
            "&&&",
            "a&ü&b",
            "Входящие/Отправленные",
            "日本語",
            "mixed ünïcödé & ascii ~/.",
            "\u{1F600}\u{1F601} x \u{1F602}",
        ] {
            let wire = encode(name);
            assert!(wire.chars().all(printable), "{wire}");
            assert_eq!(decode(&wire).as_deref(), Some(name), "{wire}");
        }
    }
}
