use super::*;
use http::HeaderValue;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn xff(lines: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in lines {
        h.append(&X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
    }
    h
}

fn fwd(lines: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in lines {
        h.append(&FORWARDED, HeaderValue::from_str(l).unwrap());
    }
    h
}

const XFF: ChainHeader = ChainHeader::XForwardedFor;
const FWD: ChainHeader = ChainHeader::Forwarded;

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_claims() {
    let t = nets(&["10.0.0.0/8"]);
    assert_eq!(client_ip(ip("9.9.9.9"), &xff(&["10.1.1.1"]), &t, XFF), ip("9.9.9.9"));
    assert_eq!(client_ip(ip("9.9.9.9"), &fwd(&["for=10.1.1.1"]), &t, FWD), ip("9.9.9.9"));
    assert_eq!(client_ip(ip("10.0.0.1"), &xff(&["1.1.1.1"]), &[], XFF), ip("10.0.0.1"));
}

#[test]
fn the_issue_chain_is_judged_from_the_right() {
    let t = nets(&["127.0.0.1/32"]);
    let h = xff(&["10.1.2.3, x, 203.0.113.9"]);
    assert_eq!(client_ip(ip("127.0.0.1"), &h, &t, XFF), ip("203.0.113.9"));
}

#[test]
fn trusted_hops_are_skipped_and_the_first_untrusted_one_is_the_client() {
    let t = nets(&["10.0.0.0/8"]);
    let h = xff(&["1.1.1.1, 2.2.2.2, 10.0.0.5"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("2.2.2.2"));
    assert_eq!(client_ip(ip("10.1.1.1"), &HeaderMap::new(), &t, XFF), ip("10.1.1.1"));
    // All trusted: the leftmost.
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["10.0.0.9, 10.0.0.5"]), &t, XFF), ip("10.0.0.9"));
}

#[test]
fn a_malformed_entry_ends_trust_at_the_hop_that_wrote_it() {
    let t = nets(&["10.0.0.0/8"]);
    // 10.0.0.5 wrote `junk`: nothing left of it is believed, the client is 10.0.0.5.
    let h = xff(&["1.1.1.1, junk, 10.0.0.5"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("10.0.0.5"));
    // The peer wrote it: the peer.
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["1.1.1.1, unknown"]), &t, XFF), ip("10.1.1.1"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["1.1.1.1 2.2.2.2"]), &t, XFF), ip("10.1.1.1"));
}

/// Found by the `client_chain` fuzz target: a line with bytes that are not visible ASCII used to be
/// unreadable as a whole, so a client sending `X-Forwarded-For: \xcf\x90` through a trusted proxy that
/// appended the client's real address was judged to be the proxy itself (an address inside the
/// trusted, often allow-listed, network).
#[test]
fn a_non_ascii_entry_does_not_hide_the_hop_appended_to_its_right() {
    let t = nets(&["10.0.0.0/8"]);
    for line in [&b"ee\xcf\x90-, 77::7"[..], b"\xff, 77::7", b"\xcf\x90,77::7"] {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(line).unwrap());
        assert_eq!(client_ip(ip("10.9.9.9"), &h, &t, XFF), ip("77::7"), "{line:?}");
        // and a non-ASCII entry right of the client still ends trust where it stands
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(b"77::7, \xcf\x90").unwrap());
        assert_eq!(client_ip(ip("10.9.9.9"), &h, &t, XFF), ip("10.9.9.9"));
    }
}

#[test]
fn several_lines_are_one_list_in_order() {
    let t = nets(&["10.0.0.0/8"]);
    let h = xff(&["1.1.1.1", "10.0.0.3", "10.0.0.4"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("1.1.1.1"));
    let h = xff(&["1.1.1.1, 2.2.2.2", "10.0.0.4"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("2.2.2.2"));
    // Empty elements carry no claim.
    let h = xff(&["1.1.1.1,, ,10.0.0.4", ""]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("1.1.1.1"));
}

#[test]
fn xff_entries_may_carry_ports_and_brackets() {
    let t = nets(&["10.0.0.0/8"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["192.0.2.1:8080"]), &t, XFF), ip("192.0.2.1"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["[2001:db8::1]:443"]), &t, XFF), ip("2001:db8::1"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["2001:db8::1"]), &t, XFF), ip("2001:db8::1"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["192.0.2.1:99999"]), &t, XFF), ip("10.1.1.1"));
    // IPv4-mapped addresses are the IPv4 addresses they carry: trusted as such, reported as such.
    let h = xff(&["192.0.2.9, ::ffff:10.0.0.7"]);
    assert_eq!(client_ip(ip("10.1.1.1"), &h, &t, XFF), ip("192.0.2.9"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["[::ffff:192.0.2.9]:80"]), &t, XFF), ip("192.0.2.9"));
    assert_eq!(client_ip(ip("10.1.1.1"), &xff(&["2001:db8::1:80:x"]), &t, XFF), ip("10.1.1.1"));
}

#[test]
fn forwarded_follows_the_same_rules() {
    let t = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
    let p = ip("10.1.1.1");
    assert_eq!(client_ip(p, &fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"]), &t, FWD), ip("192.0.2.60"));
    assert_eq!(client_ip(p, &fwd(&["For=\"[2001:db8:cafe::17]:4711\""]), &t, FWD), ip("2001:db8:cafe::17"));
    assert_eq!(client_ip(p, &fwd(&["for=192.0.2.43, for=\"[2001:db8:ffff::1]\""]), &t, FWD), ip("192.0.2.43"));
    assert_eq!(client_ip(p, &fwd(&["for=192.0.2.43", "for=10.0.0.7"]), &t, FWD), ip("192.0.2.43"));
    assert_eq!(client_ip(p, &fwd(&["for=\"10.0.0.7:_port\""]), &t, FWD), ip("10.0.0.7"));
    // `unknown`, obfuscated identifiers and elements without `for` end trust where they stand.
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1, for=unknown, for=10.0.0.7"]), &t, FWD), ip("10.0.0.7"));
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1, for=_hidden"]), &t, FWD), p);
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1, proto=https"]), &t, FWD), p);
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1;for=10.0.0.2"]), &t, FWD), p);
    assert_eq!(client_ip(p, &fwd(&["for=\"1.1.1.1"]), &t, FWD), p);
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1;host=\"a\\\"b\""]), &t, FWD), p);
    // A quoted comma cuts the element; neither half is believed.
    assert_eq!(client_ip(p, &fwd(&["for=1.1.1.1;x=\"a, for=2.2.2.2\""]), &t, FWD), p);
    // The chain header not configured is never read.
    assert_eq!(client_ip(p, &fwd(&["for=192.0.2.60"]), &t, XFF), p);
    assert_eq!(client_ip(p, &xff(&["192.0.2.60"]), &t, FWD), p);
}

/// One entry of a generated chain: a trusted proxy, an outside address, or junk.
#[derive(Debug, Clone)]
enum Gen {
    Trusted(u8),
    Outside(u8),
    Junk(String),
}

impl Gen {
    fn text(&self) -> String {
        match self {
            Gen::Trusted(n) => format!("10.0.0.{n}"),
            Gen::Outside(n) => format!("198.51.100.{n}"),
            Gen::Junk(s) => s.clone(),
        }
    }
}

fn gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        any::<u8>().prop_map(Gen::Trusted),
        any::<u8>().prop_map(Gen::Outside),
        "[a-z_=\\[\\]:\" ]{1,8}"
            .prop_filter("not an address", |s| !s.trim().is_empty() && xff_hop(s.trim()) == Hop::Unreadable)
            .prop_map(Gen::Junk),
    ]
}

proptest! {
    /// Against a reference written from the rules: whatever the chain and however it is cut into lines,
    /// the answer is the peer or an entry all of whose right-hand neighbours are readable trusted hops;
    /// never anything left of junk or left of an outside address.
    #[test]
    fn the_walk_matches_the_reference(chain in proptest::collection::vec(gen(), 0..8), cuts in proptest::collection::vec(any::<bool>(), 8)) {
        let t = nets(&["10.0.0.0/8"]);
        let peer = ip("10.255.0.1");
        // Reference: from the right, a plain loop over the generated meaning.
        let mut expected = peer;
        for g in chain.iter().rev() {
            match g {
                Gen::Trusted(n) => expected = ip(&format!("10.0.0.{n}")),
                Gen::Outside(n) => { expected = ip(&format!("198.51.100.{n}")); break; }
                Gen::Junk(_) => break,
            }
        }
        // Cut into header lines wherever `cuts` says.
        let mut lines = vec![String::new()];
        for (i, g) in chain.iter().enumerate() {
            let line = lines.last_mut().unwrap();
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(&g.text());
            if cuts[i] {
                lines.push(String::new());
            }
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        prop_assert_eq!(client_ip(peer, &xff(&refs), &t, XFF), expected);
        // The same chain as `Forwarded` elements.
        let flines: Vec<String> = lines
            .iter()
            .map(|l| l.split(", ").filter(|e| !e.is_empty()).map(|e| format!("for=\"{e}\"")).collect::<Vec<_>>().join(", "))
            .collect();
        let frefs: Vec<&str> = flines.iter().map(String::as_str).collect();
        if chain.iter().all(|g| !matches!(g, Gen::Junk(s) if s.contains(['"', ',']))) {
            prop_assert_eq!(client_ip(peer, &fwd(&frefs), &t, FWD), expected);
        }
    }
}
