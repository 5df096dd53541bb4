//! The forwarding-chain walk never panics, and the client it names is the peer or an address some
//! entry spelled, with only readable trusted hops to its right: nothing left of an unreadable entry or
//! of an untrusted hop is ever believed.
#![no_main]
use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::client_ip::{client_ip, forwarded_hop, xff_hop, ChainHeader, Hop};
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
    let peer: IpAddr = "10.9.9.9".parse().unwrap();
    for (name, chain, hop) in [
        ("x-forwarded-for", ChainHeader::XForwardedFor, xff_hop as fn(&str) -> Hop),
        ("forwarded", ChainHeader::Forwarded, forwarded_hop as fn(&str) -> Hop),
    ] {
        let mut headers = HeaderMap::new();
        let mut lines = Vec::new();
        for line in data.split(|&b| b == b'\n') {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                headers.append(name, v);
                lines.push(line);
            }
        }
        let got = client_ip(peer, &headers, &trusted, chain);
        // The reference: every entry, rightmost first, judged one by one.
        let mut expected = peer;
        'walk: for line in lines.iter().rev() {
            let entries = line.split(|&b| b == b',').rev().map(<[u8]>::trim_ascii).filter(|e| !e.is_empty());
            for entry in entries {
                // An entry that is not visible ASCII is unreadable where it stands.
                let entry = std::str::from_utf8(entry).ok().filter(|e| e.is_ascii()).unwrap_or("\u{0}");
                match hop(entry) {
                    Hop::Unreadable => break 'walk,
                    Hop::Addr(ip) if trusted.iter().any(|n| n.contains(&ip)) => expected = ip,
                    Hop::Addr(ip) => {
                        expected = ip;
                        break 'walk;
                    }
                }
            }
        }
        assert_eq!(got, expected);
    }
});
