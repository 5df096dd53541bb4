//! The inspection engine never panics on any query, cookie, header or body, whatever the declared
//! media type, and its work stays linear in the input (the `work` counter it reports).
//!
//! Input layout: byte 0 picks the body's media type (JSON, form, multipart, XML, text, none) and
//! byte 1 the paranoia level; the rest is split at the first 0xFF byte into the query (and cookie
//! and User-Agent, where the bytes are a valid field value) and the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::inspect::{Engine, InspectConfig};

const MEDIA: [&str; 6] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "text/plain; charset=utf-8",
    "",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let media = MEDIA[data[0] as usize % MEDIA.len()];
    let paranoia = 1 + data[1] % 4;
    let rest = &data[2..];
    let (head, body) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let cfg = InspectConfig { paranoia, ..InspectConfig::default() };
    let Ok(engine) = Engine::compile(&cfg) else { return };
    // The query as the client sent it: percent-encode what a target may not carry raw.
    let mut query = String::from("/fuzz?");
    for &b in head {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            query.push(b as char);
        } else {
            query.push_str(&format!("%{b:02X}"));
        }
    }
    let mut req = http::Request::builder().method("POST").uri(query.as_str());
    if let Ok(v) = http::HeaderValue::from_bytes(head) {
        req = req.header("user-agent", v.clone()).header("cookie", v);
    }
    if !media.is_empty() {
        req = req.header("content-type", media);
    }
    let Ok(req) = req.body(()) else { return };
    let (parts, ()) = req.into_parts();
    let report = engine.inspect(&parts, if body.is_empty() { None } else { Some(body) });
    // Normalisation decodes in a bounded number of passes, and every detector is linear: the work is a
    // small multiple of what was looked at, never quadratic.
    let input = (query.len() + 2 * head.len() + body.len()) as u64;
    assert!(report.work <= 512 * (input + 64), "work {} for {} input bytes", report.work, input);
});
