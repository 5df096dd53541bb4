//! RFC 9421 / RFC 9530 header parsing (Signature-Input, Signature, Content-Digest) never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::authn::signature::fields::{parse_content_digest, parse_inputs, parse_signatures};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_inputs(text);
    let _ = parse_signatures(text);
    let _ = parse_content_digest(text);
});
