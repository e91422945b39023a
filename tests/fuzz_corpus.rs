//! Replays the fuzzers' saved corpus (fuzz/corpus/<target>/, including every crash they found,
//! added there as a regression input) through the same properties on stable Rust, so CI checks
//! them without a nightly toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn replay(target: &str, property: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| property(&data));
        assert!(
            result.is_ok(),
            "{target}: {} fails its property",
            path.display()
        );
        count += 1;
    }
    assert!(count > 0, "{target}: no corpus in {}", dir.display());
}

#[test]
fn pop3_codec_corpus() {
    replay("pop3_codec", popbridge::fuzzing::pop3_codec);
}

#[test]
fn webhook_payload_corpus() {
    replay("webhook_payload", popbridge::fuzzing::webhook_payload);
}

#[test]
fn config_corpus() {
    replay("config", popbridge::fuzzing::config);
}

/// The replay must report a property that fails (a stand-in that fails on every input).
#[test]
#[should_panic(expected = "fails its property")]
fn a_failing_property_fails_the_replay() {
    replay("webhook_payload", |_| panic!("invalid JSON: stand-in"));
}

#[test]
fn imap_codec_corpus() {
    replay("imap_codec", popbridge::fuzzing::imap_codec);
}

/// The stub scanner over its own corpus and over every mail the payload fuzzer kept.
#[test]
fn stub_scan_corpus() {
    replay("stub_scan", popbridge::fuzzing::stub_scan);
    replay("webhook_payload", popbridge::fuzzing::stub_scan);
}
