//! Bytes to POP3 responses, with no I/O: the session feeds what it read and gets back status
//! lines, list items, or message bytes with dot-stuffing removed. Every function answers "need
//! more data" (`None` / not done) instead of waiting, and no line may grow past `max_line`, so a
//! hostile server cannot make us buffer without bound.

use super::response::{RespCode, Status, StatusLine};
use bytes::{Buf, BytesMut};

/// The server's bytes do not form a POP3 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("malformed status line {0:?}")]
    Malformed(String),
}

/// Removes one complete line (LF included) from the front of `buf`, or `None` if it has no LF
/// yet. A partial line longer than `max` is an error rather than a reason to keep reading.
/// The rule is the shared transport's ([`crate::net::line::take_line`]), IMAP's too.
pub fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, CodecError> {
    crate::net::line::take_line(buf, max).map_err(|_| CodecError::LineTooLong { max })
}

/// The line without its CRLF, or bare LF from a broken server.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `+OK text`, `-ERR [CODE] text` or a SASL `+ challenge` line (line ending optional).
pub fn parse_status(line: &[u8]) -> Result<StatusLine, CodecError> {
    let line = trim_eol(line);
    let (status, rest) = if let Some(rest) = strip_prefix_ci(line, b"+OK") {
        (Status::Ok, rest)
    } else if let Some(rest) = strip_prefix_ci(line, b"-ERR") {
        (Status::Err, rest)
    } else if line == b"+" {
        (Status::Continue, &b""[..])
    } else if let Some(rest) = line.strip_prefix(b"+ ") {
        return Ok(StatusLine {
            status: Status::Continue,
            code: None,
            text: String::from_utf8_lossy(rest).into_owned(),
        });
    } else {
        return Err(CodecError::Malformed(preview(line)));
    };
    // "+OKAY" is not "+OK": the keyword must end the line or be followed by a space.
    let rest = match rest {
        [] => rest,
        [b' ' | b'\t', tail @ ..] => tail,
        _ => return Err(CodecError::Malformed(preview(line))),
    };
    let text = String::from_utf8_lossy(rest);
    let (code, text) = split_code(&text);
    Ok(StatusLine {
        status,
        code,
        text: text.to_owned(),
    })
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &line[prefix.len()..])
}

fn split_code(text: &str) -> (Option<RespCode>, &str) {
    let Some(inner) = text.strip_prefix('[') else {
        return (None, text);
    };
    match inner.find(']') {
        Some(end) => {
            let code = inner[..end].split_whitespace().next().unwrap_or_default();
            let rest = inner[end + 1..].trim_start();
            (Some(RespCode::parse(code)), rest)
        }
        None => (None, text),
    }
}

/// A short printable view of bad server bytes, for error messages.
pub fn preview(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
    s.escape_debug().to_string()
}

/// One line of a line-oriented multi-line response (CAPA, LIST, UIDL): `None` for the `.`
/// terminator, else the line without line ending and with one leading dot removed.
pub fn multiline_item(line: &[u8]) -> Option<&[u8]> {
    let line = trim_eol(line);
    if line == b"." {
        return None;
    }
    Some(line.strip_prefix(b".").unwrap_or(line))
}

/// Where the body decoder is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// At the first byte of a line.
    LineStart,
    /// Saw a `.` as the first byte: terminator or stuffing, decided by the next byte.
    Dot,
    /// Saw `.` CR at line start: terminator if LF follows.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw the terminator.
    Done,
}

/// Streams the body of a multi-line response (RETR, TOP): bytes in, message bytes out, line by
/// line only in the sense that it tracks line starts. It never holds a line, so memory stays at
/// what the caller passes in; `max_line` still ends a line that never ends.
#[derive(Debug)]
pub struct BodyDecoder {
    state: BodyState,
    line_len: usize,
    max_line: usize,
}

/// What one [`BodyDecoder::decode`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used; after the terminator the rest belongs to the next response.
    pub consumed: usize,
    /// The terminator was seen: the body is complete.
    pub done: bool,
}

impl BodyDecoder {
    pub fn new(max_line: usize) -> Self {
        Self {
            state: BodyState::LineStart,
            line_len: 0,
            max_line,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Appends the message bytes found in `input` to `out`, exactly as sent apart from the
    /// stuffed dots (CRLF, bare LF, 8-bit and NUL bytes are kept).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, CodecError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                BodyState::Done => break,
                BodyState::Mid => {
                    let rest = &input[i..];
                    let room = self.max_line.saturating_sub(self.line_len);
                    let (take, eol) = match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    if take > room {
                        return Err(CodecError::LineTooLong { max: self.max_line });
                    }
                    out.extend_from_slice(&rest[..take]);
                    i += take;
                    if eol {
                        self.state = BodyState::LineStart;
                        self.line_len = 0;
                    } else {
                        self.line_len += take;
                    }
                }
                BodyState::LineStart => {
                    if input[i] == b'.' {
                        self.state = BodyState::Dot;
                        self.line_len = 1;
                        i += 1;
                    } else {
                        self.state = BodyState::Mid;
                    }
                }
                BodyState::Dot => match input[i] {
                    b'\r' => {
                        self.state = BodyState::DotCr;
                        self.line_len += 1;
                        i += 1;
                    }
                    b'\n' => {
                        self.state = BodyState::Done;
                        i += 1;
                    }
                    // A stuffed line: drop the dot, keep the rest (RFC 1939 section 3).
                    _ => self.state = BodyState::Mid,
                },
                BodyState::DotCr => {
                    if input[i] == b'\n' {
                        self.state = BodyState::Done;
                        i += 1;
                    } else {
                        // `.` CR then not LF: a stuffed line starting with a bare CR.
                        out.push(b'\r');
                        self.state = BodyState::Mid;
                    }
                }
            }
        }
        Ok(Progress {
            consumed: i,
            done: self.state == BodyState::Done,
        })
    }

    /// Decodes from the front of `buf`, removing what was used.
    pub fn decode_buf(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<bool, CodecError> {
        let p = self.decode(buf, out)?;
        buf.advance(p.consumed);
        Ok(p.done)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
