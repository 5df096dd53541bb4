//! Who the client is, when the peer is a trusted proxy: the forwarding chain read from the right.
//!
//! Each proxy appends the address of its own peer, so an entry is only as believable as the hop that
//! wrote it. The walk starts at the TCP peer and moves left one entry at a time: while the current hop is
//! a trusted proxy, the entry to its left (which that proxy wrote) is believed. The first entry that is
//! not a trusted proxy is the client. An entry that cannot be read (not an address, `unknown`, an
//! obfuscated identifier, an element without `for=`) ends the walk, and the client is the last trusted
//! hop seen: the proxy that wrote the unreadable entry, or the peer itself. Everything left of that point
//! may have been written by anybody, so it is never used. If every entry is a trusted proxy, the leftmost
//! one is the client.
//!
//! Several header lines form one list, in order. Empty list elements are ignored (RFC 9110, 5.6.1).
//! Entries are split on commas without regard to quotes: no valid node contains a comma, and an element
//! that a comma cut through does not parse, so it ends the walk. The walk allocates nothing.

use super::headers::{is_trusted, FORWARDED, X_FORWARDED_FOR};
use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

/// Which header carries the chain the trusted proxies write. Only one is read: a proxy that writes one
/// passes the other through as the client sent it, so reading both would believe the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

/// One entry of a chain, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    Addr(IpAddr),
    /// Present but not an address: malformed, `unknown`, obfuscated, or an element without `for=`.
    Unreadable,
}

/// The client's address seen through `peer` (see the module docs).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet], chain: ChainHeader) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    match chain {
        ChainHeader::XForwardedFor => walk(peer, trusted, entries(headers, &X_FORWARDED_FOR).map(xff_hop)),
        ChainHeader::Forwarded => walk(peer, trusted, entries(headers, &FORWARDED).map(forwarded_hop)),
    }
}

/// The walk itself over `hops`, rightmost first, starting from a trusted `peer`.
pub fn walk(peer: IpAddr, trusted: &[IpNet], hops: impl Iterator<Item = Hop>) -> IpAddr {
    let mut last_trusted = peer;
    for hop in hops {
        match hop {
            Hop::Unreadable => return last_trusted,
            Hop::Addr(ip) if is_trusted(ip, trusted) => last_trusted = ip,
            Hop::Addr(ip) => return ip,
        }
    }
    last_trusted
}

/// The non-empty list elements of every `name` line, rightmost first. Lines are split as bytes, so an
/// element that is not visible ASCII is one unreadable element (`"\0"`) where it stands: it ends the walk
/// there, and never hides the readable hops a trusted proxy appended to its right.
fn entries<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','))
        .map(|e| std::str::from_utf8(e.trim_ascii()).ok().filter(|e| e.is_ascii()).unwrap_or("\u{0}"))
        .filter(|e| !e.is_empty())
}

/// An `X-Forwarded-For` element: an address, optionally with a port (`192.0.2.1:8080`,
/// `[2001:db8::1]:443`, `[2001:db8::1]`).
pub fn xff_hop(e: &str) -> Hop {
    node(e).map_or(Hop::Unreadable, Hop::Addr)
}

/// A `Forwarded` element (RFC 7239): its `for=` node. Parameters are `token=token` or
/// `token="quoted"` (no escapes); anything else, a repeated or missing `for`, makes it unreadable.
pub fn forwarded_hop(element: &str) -> Hop {
    let mut found = None;
    for pair in element.split(';') {
        let Some((name, value)) = pair.trim().split_once('=') else { return Hop::Unreadable };
        let value = match value.strip_prefix('"') {
            Some(quoted) => match quoted.strip_suffix('"') {
                Some(inner) if !inner.contains(['"', '\\']) => inner,
                _ => return Hop::Unreadable,
            },
            None if !value.is_empty() && value.bytes().all(token_or_node_byte) => value,
            None => return Hop::Unreadable,
        };
        if name.is_empty() || !name.bytes().all(token_byte) {
            return Hop::Unreadable;
        }
        if name.eq_ignore_ascii_case("for") {
            if found.is_some() {
                return Hop::Unreadable;
            }
            found = Some(value);
        }
    }
    // `unknown` and obfuscated identifiers (`_hidden`) are not addresses: `node` refuses them.
    found.and_then(node).map_or(Hop::Unreadable, Hop::Addr)
}

/// `IPv4`, `IPv4:port`, `[IPv6]`, `[IPv6]:port`; a bare IPv6 (as X-Forwarded-For writes it) too. A port
/// may be obfuscated (`_p1`), as RFC 7239 allows. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as
/// dual-stack proxies write their IPv4 peers) is read as the IPv4 address it is, so that
/// `trusted_proxies` and key CIDRs written for IPv4 apply to it.
fn node(s: &str) -> Option<IpAddr> {
    node_as_written(s).map(|ip| ip.to_canonical())
}

fn node_as_written(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, p) = s.rsplit_once(':')?;
    if !port(p) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn port(p: &str) -> bool {
    match p.strip_prefix('_') {
        Some(obf) => {
            !obf.is_empty() && obf.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok(),
    }
}

fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token, or an unquoted bracketed node some proxies write (`for=[2001:db8::1]`).
fn token_or_node_byte(b: u8) -> bool {
    token_byte(b) || matches!(b, b'[' | b']' | b':')
}

#[cfg(test)]
mod tests;
