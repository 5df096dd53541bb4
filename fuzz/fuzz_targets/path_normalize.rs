//! The path normaliser never panics, and what it accepts is stable and free of ambiguous spellings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::validate::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(once) = normalize(text) {
        let twice = normalize(&once).expect("a normalised path normalises again");
        assert_eq!(once, twice, "normalisation is idempotent");
        assert!(!once.split('/').any(|s| s == "." || s == ".."));
        let lower = once.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%00"));
    }
});
