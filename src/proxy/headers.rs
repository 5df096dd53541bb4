//! Header hygiene between client and upstream.
//!
//! Toward the upstream: hop-by-hop headers and every header named in `Connection` are removed;
//! `Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host` are set, and incoming ones are kept only
//! when the peer is a configured trusted proxy (which is also how the client IP is decided);
//! `X-Request-Id` is always present. Toward the client: hop-by-hop headers, `Server` and `X-Powered-By`
//! are removed.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use ipnet::IpNet;
use std::net::IpAddr;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
static PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &PROXY_AUTHENTICATE, &PROXY_AUTHORIZATION] {
        headers.remove(name);
    }
    headers.remove(TE);
    headers.remove(TRAILER);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    !trusted.is_empty() && trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy (or the leftmost, if all are trusted).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut leftmost = None;
    let hops: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    for ip in hops.iter().rev() {
        leftmost = Some(*ip);
        if !is_trusted(*ip, trusted) {
            return *ip;
        }
    }
    leftmost.unwrap_or(peer)
}

pub struct Forwarding<'a> {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub proto: &'static str,
    pub host: Option<&'a str>,
}

/// Sets `Forwarded` and `X-Forwarded-*` for the upstream.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    if !f.peer_trusted {
        headers.remove(&FORWARDED);
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }
    let peer = f.peer.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer}"),
        None => peer.clone(),
    };
    insert(headers, &X_FORWARDED_FOR, xff);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    }
    if let Some(host) = f.host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            insert(headers, &X_FORWARDED_HOST, host.to_owned());
        }
    }
    let node = if f.peer.is_ipv6() { format!("\"[{peer}]\"") } else { peer };
    let mut element = format!("for={node};proto={}", f.proto);
    if let Some(host) = f.host {
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    let forwarded = match headers.get(&FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    insert(headers, &FORWARDED, forwarded);
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name.clone(), v);
    }
}

/// Headers the gateway never passes back to clients.
pub fn clean_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(http::header::SERVER);
    headers.remove(&X_POWERED_BY);
}

/// A client-supplied request id is kept if it is 1-128 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A new random request id (32 hex digits).
pub fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"));
        let ext: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(ext, &h, &trusted), ext);
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &trusted), "2.2.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let f = Forwarding {
            peer: "127.0.0.1".parse().unwrap(),
            peer_trusted: false,
            proto: "https",
            host: Some("a.example"),
        };
        set_forwarded(&mut h, &f);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&FORWARDED], "for=127.0.0.1;proto=https;host=\"a.example\"");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("\"}")));
        assert_eq!(new_request_id().len(), 32);
    }
}
