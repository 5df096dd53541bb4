//! API key parsing never panics, and only keys of the exact shape pass the checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(id) = portcullis::authn::api_key::parse(text) {
        assert!(text.starts_with("pcs_") && text.contains(id));
    }
});
