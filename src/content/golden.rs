//! Golden inputs for the normalisers (`content.rs`, `sink/imap/compare.rs`): the fixture
//! messages under `tests/fixtures` in the forms servers hand them back in, and the check of an
//! output against its pinned file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn lf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len());
    for (i, &b) in m.iter().enumerate() {
        if !(b == b'\r' && m.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

/// After the first header line, what GNU mailutils pop3d writes into an mbox.
fn with_mbox_headers(m: &[u8], eol: &str) -> Vec<u8> {
    let at = m
        .iter()
        .position(|&b| b == b'\n')
        .map_or(m.len(), |i| i + 1);
    let mut out = m[..at].to_vec();
    for h in [
        "X-UIDL: 9f.1.1",
        "X-IMAPbase: 1796141213 3",
        "X-UID: 1",
        "Status: OR",
    ] {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(&m[at..]);
    out
}

/// Edge cases the fixtures do not cover.
const EDGES: &[(&str, &[u8])] = &[
    ("edge/empty", b""),
    ("edge/header-only", b"Subject: a"),
    ("edge/lone-cr", b"a: b\n\nx\ry\n"),
    ("edge/cr-before-lf-split", b"Subject: x\r\r\n\r\nbody\r"),
    ("edge/long-name", &[b'x'; 100]),
    (
        "edge/folded-volatile",
        b"Status: RO\r\n  more\r\nSubject: s\r\n\r\nStatus: body\r\n",
    ),
    (
        "edge/8bit-header",
        "Subject: Gr\u{fc}\u{df}e\r\nReceived: by x\r\n\r\n\u{fc}ber\r\n".as_bytes(),
    ),
    ("edge/no-colon", b"not a header\r\nStatus: O\r\n\r\nb\r\n"),
];

/// `(name, bytes)` for every fixture in its forms, then the edge cases; sorted, so the
/// golden file is stable. Fails when no fixture is found.
pub(crate) fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["eml", "regressions"] {
        for entry in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 8, "fixtures not found: {files:?}");
    let mut out = Vec::new();
    for path in files {
        let name = path.strip_prefix(fixtures()).unwrap().display().to_string();
        let raw = std::fs::read(&path).unwrap();
        let crlf = raw.clone();
        let lf = lf(&raw);
        out.push((format!("{name}/crlf"), crlf.clone()));
        out.push((format!("{name}/lf"), lf.clone()));
        out.push((
            format!("{name}/crlf+mbox"),
            with_mbox_headers(&crlf, "\r\n"),
        ));
        out.push((format!("{name}/lf+mbox"), with_mbox_headers(&lf, "\n")));
    }
    out.extend(EDGES.iter().map(|(n, m)| (n.to_string(), m.to_vec())));
    out
}

/// Compares `actual` with `tests/fixtures/<name>`; on a difference writes `<name>.actual`
/// beside it and fails.
pub(crate) fn check(name: &str, actual: &str) {
    let path = fixtures().join(name);
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let out = path.with_extension("golden.actual");
        std::fs::write(&out, actual).unwrap();
        panic!(
            "{} differs from the pinned output; actual written to {}",
            path.display(),
            out.display()
        );
    }
}
