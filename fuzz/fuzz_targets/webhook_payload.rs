#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| popbridge::fuzzing::webhook_payload(data));
