//! The config loader turns any text into a config or a located error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = portcullis::config::parse(text, std::path::Path::new("fuzz.yaml")) {
        assert!(e.line >= 1 && e.column >= 1);
    }
});
