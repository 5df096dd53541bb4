//! [`signals`]: what a request head says about automation, computed on the data path in one pass over
//! the header names plus one scan of the `User-Agent` value. No allocation.

use super::Signals;
use http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, USER_AGENT};
use http::HeaderMap;

/// Substrings of a `User-Agent` (lower-cased) that name a scanner or attack tool.
const SCANNERS: [&[u8]; 16] = [
    b"sqlmap",
    b"nikto",
    b"nuclei",
    b"zgrab",
    b"masscan",
    b"nmap",
    b"dirbuster",
    b"gobuster",
    b"wfuzz",
    b"ffuf",
    b"acunetix",
    b"nessus",
    b"openvas",
    b"wpscan",
    b"burpcollaborator",
    b"feroxbuster",
];

/// Tokens of a `User-Agent` that claim a browser.
const BROWSERS: [&[u8]; 5] = [b"mozilla/", b"chrome/", b"safari/", b"firefox/", b"edg/"];

/// The automation signals of a request head: the order of its header names (a hash), which of the
/// headers browsers always send are present, whether the agent claims a browser or names a scanner.
pub fn signals(headers: &HeaderMap) -> Signals {
    let mut order: u32 = 0x811c_9dc5; // FNV-1a over the names, in the order sent
    let mut flags = 0u16;
    for name in headers.keys() {
        for &b in name.as_str().as_bytes() {
            order = (order ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        order = (order ^ u32::from(b'\n')).wrapping_mul(0x0100_0193);
        let n = name.as_str();
        if name == ACCEPT {
            flags |= Signals::HAS_ACCEPT;
        } else if name == ACCEPT_LANGUAGE {
            flags |= Signals::HAS_ACCEPT_LANGUAGE;
        } else if name == ACCEPT_ENCODING {
            flags |= Signals::HAS_ACCEPT_ENCODING;
        } else if n.starts_with("sec-fetch-") || n.starts_with("sec-ch-ua") {
            flags |= Signals::HAS_FETCH_METADATA;
        } else if n.contains("acunetix") || n == "x-scanner" || n.starts_with("x-wipp") {
            flags |= Signals::SCANNER;
        }
    }
    match headers.get(USER_AGENT) {
        None => flags |= Signals::NO_USER_AGENT,
        Some(ua) => flags |= agent_flags(ua.as_bytes()),
    }
    Signals { header_order: order, flags }
}

/// One automaton over every browser and scanner token, ASCII case-insensitive: one pass over the agent
/// (the aho-corasick crate already serves the inspection detectors).
fn tokens() -> Option<&'static aho_corasick::AhoCorasick> {
    static TOKENS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> = std::sync::OnceLock::new();
    TOKENS
        .get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(BROWSERS.iter().chain(SCANNERS.iter()))
                .ok()
        })
        .as_ref()
}

fn agent_flags(ua: &[u8]) -> u16 {
    let mut flags = 0;
    // Only the first 256 bytes: enough for every real agent, and bounded work for a hostile one.
    let ua = &ua[..ua.len().min(256)];
    let Some(ac) = tokens() else { return 0 };
    for m in ac.find_overlapping_iter(ua) {
        flags |= if m.pattern().as_usize() < BROWSERS.len() { Signals::CLAIMS_BROWSER } else { Signals::SCANNER };
        if flags == Signals::CLAIMS_BROWSER | Signals::SCANNER {
            break;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const CHROME: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

    #[test]
    fn a_browser_head() {
        let s = signals(&head(&[
            ("host", "api.example"),
            ("user-agent", CHROME),
            ("accept", "*/*"),
            ("accept-language", "en"),
            ("accept-encoding", "gzip"),
            ("sec-fetch-mode", "cors"),
        ]));
        let all = Signals::HAS_ACCEPT
            | Signals::HAS_ACCEPT_LANGUAGE
            | Signals::HAS_ACCEPT_ENCODING
            | Signals::HAS_FETCH_METADATA
            | Signals::CLAIMS_BROWSER;
        assert_eq!(s.flags, all);
    }

    #[test]
    fn order_matters_and_scanners_are_named() {
        let a = signals(&head(&[("host", "x"), ("accept", "*/*")]));
        let b = signals(&head(&[("accept", "*/*"), ("host", "x")]));
        assert_ne!(a.header_order, b.header_order);
        assert_eq!(a.flags & Signals::NO_USER_AGENT, Signals::NO_USER_AGENT);
        let s = signals(&head(&[("user-agent", "Mozilla/5.0 SQLMap/1.7")]));
        assert_ne!(s.flags & Signals::SCANNER, 0);
        assert_ne!(s.flags & Signals::CLAIMS_BROWSER, 0);
        let s = signals(&head(&[("user-agent", "curl/8.5.0"), ("x-scanner", "1")]));
        assert_eq!(s.flags, Signals::SCANNER);
    }
}
