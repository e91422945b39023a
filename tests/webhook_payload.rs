//! Golden tests for the webhook JSON payload: `tests/fixtures/eml/NNN.eml` against `NNN.json`,
//! each also with LF line endings. On a mismatch the actual output is written to
//! `NNN.actual.json` beside the fixture, to diff and, once reviewed, to adopt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use popbridge::sink::webhook::payload::{write_json, Meta, Options};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const OPTS: Options = Options {
    // Small, so fixture 003 has one attachment inline and one over the limit.
    max_inline_attachment_bytes: 512,
    include_raw: false,
};

fn payload(raw: &[u8], uidl: &str) -> Value {
    let sha = hex::encode(Sha256::digest(raw));
    let meta = Meta {
        key: "pb1_00000000000000000000000000000000",
        mailbox: "fixtures",
        uidl,
        size: raw.len() as u64,
        sha256: &sha,
        fetched_at: chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .into(),
    };
    let mut out = Vec::new();
    write_json(raw, &meta, OPTS, &mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

/// What must not change when CRLF becomes LF: drop the byte-level fields, and normalise
/// line breaks in every string.
fn line_ending_free(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace("\r\n", "\n")),
        Value::Array(a) => Value::Array(a.iter().map(line_ending_free).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "sha256" | "size"))
                .map(|(k, v)| match (k.as_str(), v) {
                    // Attachment and raw bytes: compare them decoded, line endings normalised.
                    ("content" | "raw", Value::String(b64)) => {
                        use base64::Engine;
                        let e = base64::engine::general_purpose::STANDARD;
                        let bytes = e.decode(b64).unwrap();
                        let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
                        (k.clone(), Value::String(text))
                    }
                    _ => (k.clone(), line_ending_free(v)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn payloads_match_golden_files_with_crlf_and_lf() {
    let files = fixtures();
    assert!(files.len() >= 8, "expected the fixtures, found {files:?}");
    let mut failures = Vec::new();
    for eml in &files {
        let raw = std::fs::read(eml).unwrap();
        let stem = eml.file_stem().unwrap().to_string_lossy().to_string();
        let actual = payload(&raw, &stem);
        let golden = eml.with_extension("json");
        let expected: Option<Value> = std::fs::read(&golden)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        if expected.as_ref() != Some(&actual) {
            let out = eml.with_extension("actual.json");
            std::fs::write(&out, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
            failures.push(format!(
                "{stem}: differs from {} (actual in {})",
                golden.display(),
                out.display()
            ));
            continue;
        }
        let lf: Vec<u8> = String::from_utf8_lossy(&raw)
            .replace("\r\n", "\n")
            .into_bytes();
        let lf = if raw.is_ascii() || std::str::from_utf8(&raw).is_ok() {
            lf
        } else {
            // 8-bit non-UTF-8 bodies: convert line endings on the bytes.
            raw.split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .collect::<Vec<_>>()
                .join(&b'\n')
        };
        let with_lf = payload(&lf, &stem);
        if line_ending_free(&with_lf) != line_ending_free(&actual) {
            failures.push(format!(
                "{stem}: LF line endings give a different payload:\n{}\nvs\n{}",
                serde_json::to_string_pretty(&line_ending_free(&with_lf)).unwrap(),
                serde_json::to_string_pretty(&line_ending_free(&actual)).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn include_raw_carries_the_exact_message() {
    use base64::Engine;
    let raw = std::fs::read(&fixtures()[0]).unwrap();
    let sha = hex::encode(Sha256::digest(&raw));
    let meta = Meta {
        key: "k",
        mailbox: "m",
        uidl: "u",
        size: raw.len() as u64,
        sha256: &sha,
        fetched_at: chrono::Utc::now(),
    };
    let mut out = Vec::new();
    write_json(
        &raw,
        &meta,
        Options {
            max_inline_attachment_bytes: 0,
            include_raw: true,
        },
        &mut out,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let back = base64::engine::general_purpose::STANDARD
        .decode(v["raw"].as_str().unwrap())
        .unwrap();
    assert_eq!(back, raw);
}

/// Found by the fuzzer: a nested message/rfc822 part whose boundary never closes makes
/// mail-parser 0.11 hit a `debug_assert!` (a panic in debug builds). The payload must still be
/// valid JSON, and when the parser gave up, the message travels whole in `raw`.
#[test]
fn a_message_that_trips_the_mime_parser_is_still_sent_whole() {
    use base64::Engine;
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/regressions/mail-parser-part-id.eml"),
    )
    .unwrap();
    let v = payload(&raw, "regression");
    assert_eq!(v["size"], raw.len() as u64);
    if cfg!(debug_assertions) {
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["raw"].as_str().expect("raw carries the unparsed message"))
            .unwrap();
        assert_eq!(back, raw);
    } else {
        assert_eq!(v["message_id"], "002@example.com");
    }
}

/// Offloaded content (sink option `offload`): an attachment over the limit carries a `link`
/// beside its size, type and sha256, and `raw_link` replaces `raw`. Golden file
/// `003.links.json`; validated against the schema by `webhook_offload.rs` through the sink.
#[test]
fn offloaded_content_is_linked_golden() {
    use popbridge::sink::offload::Link;
    use popbridge::sink::webhook::payload::{write_json_with_links, Links};
    let eml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml/003.eml");
    let raw = std::fs::read(&eml).unwrap();
    let sha = hex::encode(Sha256::digest(&raw));
    let meta = Meta {
        key: "pb1_00000000000000000000000000000000",
        mailbox: "fixtures",
        uidl: "003",
        size: raw.len() as u64,
        sha256: &sha,
        fetched_at: chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .into(),
    };
    let link = |what: &str| Link {
        url: format!("https://s3.example.com/mail/offload/{what}?X-Amz-Signature=0"),
        expires_at: Some("2026-11-23T12:00:00Z".into()),
    };
    let mut links = Links {
        raw: Some(link(&sha)),
        ..Links::default()
    };
    let mut large = Vec::new();
    popbridge::sink::webhook::payload::large_attachments(
        &raw,
        OPTS.max_inline_attachment_bytes,
        |a| {
            large.push(a.sha256);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(
        large.len(),
        1,
        "fixture 003 has one attachment over the limit"
    );
    for s in large {
        links.attachments.insert(s.clone(), link(&s));
    }
    let opts = Options {
        include_raw: true,
        ..OPTS
    };
    let mut out = Vec::new();
    write_json_with_links(&raw, &meta, opts, &links, &mut out).unwrap();
    let actual: Value = serde_json::from_slice(&out).unwrap();
    assert!(actual.get("raw").is_none(), "raw_link replaces raw");
    let golden = eml.with_file_name("003.links.json");
    let expected: Option<Value> = std::fs::read(&golden)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    if expected.as_ref() != Some(&actual) {
        let out = eml.with_file_name("003.links.actual.json");
        std::fs::write(&out, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
        panic!(
            "differs from {} (actual in {})",
            golden.display(),
            out.display()
        );
    }
}
