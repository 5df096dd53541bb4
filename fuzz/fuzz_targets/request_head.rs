//! The HTTP/1 framer (`validate::head::Framer`, the parser of record in front of hyper) on any bytes:
//! - no panic;
//! - however the bytes are split into reads (the first input byte chooses the split), it passes the same
//!   bytes, accepts the same heads and refuses the same way;
//! - differential against hyper's own parsers: fed byte by byte, the first head it accepts ends exactly
//!   where httparse finds a complete head, and http's method and URI parsers (which hyper applies next)
//!   accept it; no byte of a head passes before the head is accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::validate::head::{Framer, HeadLimits};

fn limits() -> HeadLimits {
    HeadLimits::new(4096, 32, 1024)
}

/// Bytes passed (held bytes go out with the read that completes their head), heads, refusal.
fn run(data: &[u8], step: usize) -> (Vec<u8>, u32, Option<String>) {
    let mut f = Framer::new(limits(), true);
    let (mut passed, mut held, mut heads) = (Vec::new(), Vec::new(), 0);
    for chunk in data.chunks(step.max(1)) {
        let fed = f.feed(chunk);
        heads += fed.heads;
        if fed.pass > 0 {
            passed.append(&mut held);
            passed.extend_from_slice(&chunk[..fed.pass]);
        }
        if let Some(r) = fed.refused {
            return (passed, heads, Some(format!("{r:?}")));
        }
        held.extend_from_slice(&chunk[fed.pass..]);
    }
    (passed, heads, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else { return };
    let whole = run(data, data.len());
    let split = run(data, usize::from(split % 16) + 1);
    assert_eq!(whole, split, "the split into reads changed the outcome");
    assert!(data.starts_with(&whole.0), "passed bytes are a prefix of the input");

    let mut f = Framer::new(limits(), false);
    for i in 0..data.len() {
        let fed = f.feed(&data[i..=i]);
        if fed.refused.is_some() {
            return;
        }
        if fed.heads == 1 {
            let end = i + 1;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&data[..end]) {
                Ok(httparse::Status::Complete(n)) => assert_eq!(n, end, "httparse ends the head elsewhere"),
                other => panic!("the framer accepted a head httparse reads as {other:?}"),
            }
            assert!(http::Method::from_bytes(req.method.unwrap_or("").as_bytes()).is_ok());
            assert!(http::Uri::try_from(req.path.unwrap_or("")).is_ok());
            return;
        }
        assert_eq!(fed.pass, 0, "a byte of an incomplete head passed");
    }
});
