//! Body decoding (`content::decode_body`) never panics on any bytes under any `Content-Encoding`, and
//! what it returns respects the bound: at most `max_bytes`, and at most `max_ratio` times the input.
//!
//! Input layout: byte 0 picks the coding (gzip, deflate, identity, stacked, unknown); the rest is
//! the body. Half the time the body is first gzip-compressed, so the decoder sees valid streams too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::content::{decode_body, Decoding};

const CODINGS: [&str; 6] = ["gzip", "deflate", "identity", "x-gzip", "gzip, gzip", "br"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let coding = CODINGS[(pick & 0x7F) as usize % CODINGS.len()];
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static(coding));
    let bound = Decoding { max_bytes: 64 * 1024, max_ratio: 50 };
    if let Ok(out) = decode_body(&headers, body, &bound) {
        if coding != "identity" {
            assert!(out.len() as u64 <= bound.max_bytes);
            assert!(out.len() as u64 <= bound.max_ratio as u64 * body.len().max(1) as u64);
        }
    }
});
