//! What a URL's host names: parsed as a browser or `inet_aton` would (IPv4 in 1 to 4 parts, each
//! decimal, octal or hex; bracketed IPv6 with its IPv4-mapped and embedded forms), then classified.
//! No allocation: the host is folded into a fixed buffer.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a host points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// Loopback, `0.0.0.0`/`::`, `localhost` and names that resolve to it.
    Loopback,
    /// A cloud metadata service.
    Metadata,
    /// RFC 1918, link-local, unique-local IPv6.
    Private,
    /// Shared address space (100.64/10), multicast, broadcast, and internal-looking names
    /// (`.internal`, `.local`, `kubernetes.default`).
    Reserved,
    /// A public address or an ordinary name.
    Public,
}

/// A classified host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Host {
    pub(super) class: Class,
    /// An IP literal written in a form other than four plain decimals (`2130706433`, `0x7f.1`,
    /// `0177.0.0.1`, `127.1`, `①②⑦.⓪.⓪.①`).
    pub(super) obfuscated: bool,
    /// An IP literal (any form).
    pub(super) literal: bool,
    /// A wildcard-DNS name embedding an address (`127.0.0.1.nip.io`).
    pub(super) rebinding: bool,
}

const MAX_HOST: usize = 255;

/// Classifies a host as written in a URL (without port or user info; IPv6 in brackets).
pub(super) fn classify(host: &str) -> Host {
    let mut buf = [0u8; MAX_HOST];
    let (folded, mapped) = fold(host, &mut buf);
    let folded = folded.strip_suffix(b".").unwrap_or(folded);
    let public = Host { class: Class::Public, obfuscated: false, literal: false, rebinding: false };
    if let Some(inner) = folded.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        let inner = match inner.iter().position(|&c| c == b'%') {
            Some(p) => inner.get(..p).unwrap_or_default(),
            None => inner,
        };
        let Some(ip) = std::str::from_utf8(inner).ok().and_then(|s| s.parse::<Ipv6Addr>().ok()) else {
            return public;
        };
        return Host { class: class_v6(ip), obfuscated: mapped, literal: true, rebinding: false };
    }
    if let Some((ip, canonical)) = parse_v4(folded) {
        return Host { class: class_v4(ip), obfuscated: !canonical || mapped, literal: true, rebinding: false };
    }
    Host { class: class_name(folded), rebinding: rebinding(folded), ..public }
}

/// Lower-cases ASCII and maps the digit and dot look-alikes that IDNA folds to ASCII (circled,
/// full-width, ideographic full stop). Returns the folded host and whether anything was mapped.
fn fold<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> (&'b [u8], bool) {
    let mut n = 0;
    let mut mapped = false;
    for c in host.chars() {
        let a = match c {
            'A'..='Z' => c.to_ascii_lowercase() as u8,
            c if c.is_ascii() => c as u8,
            '\u{24ea}' | '\u{ff10}' => b'0',
            '\u{2460}'..='\u{2468}' => b'1' + (c as u32 - 0x2460) as u8,
            '\u{ff11}'..='\u{ff19}' => b'1' + (c as u32 - 0xff11) as u8,
            '\u{3002}' | '\u{ff0e}' | '\u{ff61}' => b'.',
            _ => b'~',
        };
        mapped |= !c.is_ascii();
        let Some(slot) = buf.get_mut(n) else { break };
        *slot = a;
        n += 1;
    }
    (buf.get(..n).unwrap_or_default(), mapped)
}

/// Parses an IPv4 address the way `inet_aton` and the URL standard do: 1 to 4 parts, each decimal,
/// octal (leading 0) or hex (0x), the last part filling the remaining bytes. Returns the address and
/// whether it was written canonically (four plain decimals).
pub(super) fn parse_v4(h: &[u8]) -> Option<(Ipv4Addr, bool)> {
    if h.is_empty() || h.len() > 64 {
        return None;
    }
    let mut parts = [0u64; 4];
    let mut n = 0;
    let mut canonical = true;
    for part in h.split(|&c| c == b'.') {
        let slot = parts.get_mut(n)?;
        let (value, plain) = parse_part(part)?;
        *slot = value;
        canonical &= plain;
        n += 1;
    }
    canonical &= n == 4;
    let (last, init) = parts.get(..n)?.split_last()?;
    if init.iter().any(|&p| p > 255) || *last >= 1u64 << (8 * (5 - n)) {
        return None;
    }
    let mut addr = *last;
    for (k, p) in init.iter().enumerate() {
        addr |= p << (8 * (3 - k));
    }
    Some((Ipv4Addr::from(u32::try_from(addr).ok()?), canonical))
}

fn parse_part(p: &[u8]) -> Option<(u64, bool)> {
    let (digits, radix, plain) = match p {
        [b'0', b'x', rest @ ..] => (rest, 16, false),
        [b'0', rest @ ..] if !rest.is_empty() => (rest, 8, false),
        [] => return None,
        _ => (p, 10, true),
    };
    let mut value: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)?;
        value = value.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some((value, plain))
}

pub(super) fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, d] = ip.octets();
    match (a, b, c, d) {
        (169, 254, 169, 254) | (169, 254, 170, 2) | (100, 100, 100, 200) | (192, 0, 0, 192) => Class::Metadata,
        (127, ..) | (0, ..) => Class::Loopback,
        (10, ..) | (192, 168, ..) | (169, 254, ..) => Class::Private,
        (172, b, ..) if (16..32).contains(&b) => Class::Private,
        (100, b, ..) if (64..128).contains(&b) => Class::Reserved,
        (198, 18 | 19, ..) | (224..=255, ..) => Class::Reserved,
        _ => Class::Public,
    }
}

pub(super) fn class_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_loopback() || ip.is_unspecified() {
        return Class::Loopback;
    }
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Class::Metadata;
    }
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        // IPv4-mapped, IPv4-compatible (deprecated, still routed by some stacks), NAT64.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            class_v4(v4(hi, lo))
        }
        // 6to4 embeds the IPv4 address in bits 16 to 48.
        [0x2002, hi, lo, ..] => class_v4(v4(hi, lo)),
        [a, ..] if a & 0xfe00 == 0xfc00 || a & 0xffc0 == 0xfe80 || a & 0xffc0 == 0xfec0 => Class::Private,
        [a, ..] if a & 0xff00 == 0xff00 => Class::Reserved,
        _ => Class::Public,
    }
}

fn class_name(h: &[u8]) -> Class {
    let is = |name: &[u8]| {
        h == name || (h.ends_with(name) && h.len() > name.len() && h.get(h.len() - name.len() - 1) == Some(&b'.'))
    };
    if is(b"localhost")
        || h == b"localhost.localdomain"
        || h == b"ip6-localhost"
        || h == b"ip6-loopback"
        || is(b"localtest.me")
        || is(b"lvh.me")
        || is(b"vcap.me")
        || is(b"lacolhost.com")
    {
        return Class::Loopback;
    }
    if h == b"metadata"
        || h == b"metadata.google.internal"
        || h == b"metadata.goog"
        || h == b"instance-data"
        || h == b"instance-data.ec2.internal"
        || h == b"metadata.azure.com"
    {
        return Class::Metadata;
    }
    if let Some(ip) = embedded_v4(h) {
        return class_v4(ip);
    }
    if is(b"internal")
        || is(b"local")
        || is(b"localdomain")
        || is(b"intranet")
        || is(b"corp")
        || is(b"lan")
        || is(b"home.arpa")
        || h.starts_with(b"kubernetes.default")
    {
        return Class::Reserved;
    }
    Class::Public
}

const WILDCARD_DNS: &[&[u8]] = &[b".nip.io", b".sslip.io", b".xip.io", b".nip.direct", b".traefik.me", b".localh.st"];

fn rebinding(h: &[u8]) -> bool {
    embedded_v4(h).is_some_and(|ip| class_v4(ip) != Class::Public)
}

/// The address a wildcard-DNS name embeds: `a.127.0.0.1.nip.io`, `127-0-0-1.sslip.io`.
fn embedded_v4(h: &[u8]) -> Option<Ipv4Addr> {
    let stem = WILDCARD_DNS.iter().find_map(|s| h.strip_suffix(*s))?;
    // The last four dot-separated labels, or the last label's dash-separated parts.
    let mut cut = 0;
    let mut seen = 0;
    for (i, &c) in stem.iter().enumerate().rev() {
        if c == b'.' {
            seen += 1;
            if seen == 4 {
                cut = i + 1;
                break;
            }
        }
    }
    let dots = stem.get(cut..).unwrap_or_default();
    if let Some((ip, _)) = parse_v4(dots) {
        return Some(ip);
    }
    let label = stem.rsplit(|&c| c == b'.').next()?;
    let mut octets = [0u8; 4];
    let mut n = 0;
    for part in label.rsplit(|&c| c == b'-').take(4) {
        let o = octets.get_mut(3 - n)?;
        *o = std::str::from_utf8(part).ok()?.parse().ok()?;
        n += 1;
    }
    (n == 4).then(|| Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::{classify, parse_v4, Class};
    use std::net::Ipv4Addr;

    #[test]
    fn ipv4_in_every_spelling() {
        let lo = Ipv4Addr::new(127, 0, 0, 1);
        for (h, canonical) in [
            ("127.0.0.1", true),
            ("2130706433", false),
            ("0x7f000001", false),
            ("0177.0.0.1", false),
            ("0x7f.1", false),
            ("127.1", false),
            ("127.0.1", false),
            ("017700000001", false),
            ("127.000.000.001", false),
        ] {
            assert_eq!(parse_v4(h.as_bytes()), Some((lo, canonical)), "{h}");
        }
        for h in ["256.0.0.1", "1.2.3.4.5", "09.1.1.1", "example.com", "1.2.3.256", "4294967296", "", "1..1"] {
            assert_eq!(parse_v4(h.as_bytes()), None, "{h}");
        }
    }

    #[test]
    fn hosts_are_classified() {
        for (h, class) in [
            ("127.0.0.1", Class::Loopback),
            ("0", Class::Loopback),
            ("LOCALHOST", Class::Loopback),
            ("a.localhost", Class::Loopback),
            ("[::1]", Class::Loopback),
            ("[::]", Class::Loopback),
            ("[0:0:0:0:0:ffff:127.0.0.1]", Class::Loopback),
            ("[::ffff:7f00:1]", Class::Loopback),
            ("[::ffff:a9fe:a9fe]", Class::Metadata),
            ("[fd00:ec2::254]", Class::Metadata),
            ("169.254.169.254", Class::Metadata),
            ("0xa9fea9fe", Class::Metadata),
            ("metadata.google.internal", Class::Metadata),
            ("10.1.2.3", Class::Private),
            ("172.31.255.1", Class::Private),
            ("192.168.0.1", Class::Private),
            ("[fe80::1%25eth0]", Class::Private),
            ("127.0.0.1.nip.io", Class::Loopback),
            ("169.254.169.254.xip.io", Class::Metadata),
            ("10-0-0-1.sslip.io", Class::Private),
            ("①②⑦.⓪.⓪.①", Class::Loopback),
            ("example.com", Class::Public),
            ("8.8.8.8", Class::Public),
            ("172.32.0.1", Class::Public),
            ("api.internal", Class::Reserved),
        ] {
            assert_eq!(classify(h).class, class, "{h}");
        }
        assert!(classify("2130706433").obfuscated);
        assert!(!classify("127.0.0.1").obfuscated);
        assert!(classify("127.0.0.1.nip.io").rebinding);
    }
}
