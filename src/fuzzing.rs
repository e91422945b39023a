//! Properties checked by the fuzz targets in `fuzz/` (cargo fuzz, nightly) and replayed over
//! the saved corpus by `tests/fuzz_corpus.rs` on stable, so every input the fuzzers kept, and
//! every crash they found, runs in CI. Each function panics when its property fails.

use crate::pop3::codec::{self, BodyDecoder};
use bytes::BytesMut;

/// POP3 response decoding: status lines parse or fail cleanly, and the body decoder gives the
/// same bytes whether the input arrives whole or in any split, with nothing past the terminator.
pub fn pop3_codec(data: &[u8]) {
    let (split, input) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s), rest),
        None => return,
    };
    let mut buf = BytesMut::from(input);
    while let Ok(Some(line)) = codec::take_line(&mut buf, 512) {
        let _ = codec::parse_status(&line);
        let _ = codec::multiline_item(&line);
        let _ = codec::preview(&line);
    }

    let whole = decode_all(&[input]);
    let cut = if input.is_empty() {
        0
    } else {
        split % (input.len() + 1)
    };
    let (a, b) = input.split_at(cut);
    assert_eq!(
        decode_all(&[a, b]),
        whole,
        "split at {cut} changed the output"
    );
    let ones: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        decode_all(&ones),
        whole,
        "byte-at-a-time changed the output"
    );
    if let Ok((out, Some(consumed))) = &whole {
        assert!(*consumed <= input.len());
        assert!(out.len() <= *consumed, "unstuffing never adds bytes");
    }
}

/// Output bytes and, when the terminator was seen, the input bytes used up to it.
type Decoded = Result<(Vec<u8>, Option<usize>), String>;

fn decode_all(chunks: &[&[u8]]) -> Decoded {
    let mut dec = BodyDecoder::new(1000);
    let mut out = Vec::new();
    let mut used = 0;
    for chunk in chunks {
        let p = dec.decode(chunk, &mut out).map_err(|e| e.to_string())?;
        used += p.consumed;
        if p.done {
            return Ok((out, Some(used)));
        }
    }
    Ok((out, None))
}

/// The webhook JSON payload: any bytes make valid JSON with the metadata we passed in.
pub fn webhook_payload(data: &[u8]) {
    use crate::sink::webhook::payload::{write_json, Meta, Options};
    let meta = Meta {
        key: "pb1_00000000000000000000000000000000",
        mailbox: "fuzz",
        uidl: "u1",
        size: data.len() as u64,
        sha256: "00",
        fetched_at: chrono::DateTime::UNIX_EPOCH,
    };
    let opts = Options {
        max_inline_attachment_bytes: 64,
        include_raw: data.len().is_multiple_of(2),
    };
    let mut out = Vec::new();
    if let Err(e) = write_json(data, &meta, opts, &mut out) {
        panic!("writing to memory failed: {e}");
    }
    let value: serde_json::Value = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(e) => panic!("invalid JSON: {e}"),
    };
    assert_eq!(value["id"], meta.key);
    assert_eq!(value["size"], data.len() as u64);
}

/// The config loader: any text gives a config or an error, never a panic, and an error names
/// the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = std::path::Path::new("/fuzz/popbridge.yaml");
    if let Err(e) = crate::config::load_str_with_env(text, origin, |name| {
        (name == "SET").then(|| "value".to_string())
    }) {
        let shown = e.to_string();
        assert!(
            shown.contains("popbridge.yaml"),
            "error without the file: {shown}"
        );
    }
}

/// IMAP response handling: every parser takes any line without panicking, and quoting a
/// string then reading it back as IMAP does gives the string again.
pub fn imap_codec(data: &[u8]) {
    use crate::imap::codec;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(t) = codec::parse_tagged(line) {
            assert!(!t.tag.is_empty() && t.tag != "*" && t.tag != "+");
            if let Some(code) = &t.code {
                let _ = codec::appenduid(code);
                let _ = codec::capabilities(code);
            }
        }
        let _ = codec::literal_len(line);
        let _ = codec::search_results(line);
        let _ = codec::capabilities(&String::from_utf8_lossy(line));
    }
    let text = String::from_utf8_lossy(data);
    if let Some(q) = codec::quoted(&text) {
        let inner = &q[1..q.len() - 1];
        let mut back = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => back.extend(chars.next()),
                '"' => panic!("an unescaped quote inside {q}"),
                c => back.push(c),
            }
        }
        assert_eq!(back, text);
    }
}

/// The stub of any bytes: the streamed scan never panics, gives the same result whatever the
/// read size, holds no more than its caps, and the stub carries its marker with CRLF line ends.
pub fn stub_scan(data: &[u8]) {
    use crate::sink::offload::{stub_message, stub_scan, Link};
    let scan = |cap: usize| match stub_scan::scan(std::io::BufReader::with_capacity(cap, data)) {
        Ok(s) => s,
        Err(e) => panic!("reading from memory failed: {e}"),
    };
    let whole = scan(8192);
    for cap in [1, 7] {
        let split = scan(cap);
        assert_eq!(split.attachments, whole.attachments, "capacity {cap}");
        assert_eq!(split.fields, whole.fields, "capacity {cap}");
    }
    assert!(whole.peak_buffered <= 512 * 1024, "{}", whole.peak_buffered);
    let link = Link {
        url: "https://files.example.com/x".into(),
        expires_at: None,
    };
    let stub = match stub_message::build_from(data, "00", data.len() as u64, &link) {
        Ok(s) => s,
        Err(e) => panic!("reading from memory failed: {e}"),
    };
    assert_eq!(
        stub_message::marker(&stub),
        Some(("00".to_string(), data.len() as u64))
    );
    for (i, b) in stub.iter().enumerate() {
        assert!(
            *b != b'\n' || i > 0 && stub[i - 1] == b'\r',
            "bare LF at {i}"
        );
    }
}
