#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| popbridge::fuzzing::stub_scan(data));
