#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn set(entries: &[&str]) -> IpSet<()> {
    IpSet::build(entries.iter().map(|e| (parse_entry(e).unwrap(), ())), |_, _| ())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv4_and_ipv6_blocks() {
    let s = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "2001:db9::1"]);
    assert!(s.contains(ip("10.1.2.3")));
    assert!(s.contains(ip("10.255.255.255")));
    assert!(!s.contains(ip("11.0.0.0")));
    assert!(!s.contains(ip("9.255.255.255")));
    assert!(s.contains(ip("192.0.2.7")));
    assert!(!s.contains(ip("192.0.2.8")));
    assert!(s.contains(ip("2001:db8:ffff::1")));
    assert!(!s.contains(ip("2001:db7::1")));
    assert!(s.contains(ip("2001:db9::1")));
    assert!(!s.contains(ip("2001:db9::2")));
}

#[test]
fn mapped_addresses_are_ipv4() {
    let s = set(&["192.0.2.0/24", "::ffff:198.51.100.0/120"]);
    assert!(s.contains(ip("::ffff:192.0.2.9")), "a mapped client matches an IPv4 entry");
    assert!(s.contains(ip("198.51.100.4")), "a mapped entry matches an IPv4 client");
    assert!(!s.contains(ip("::192.0.2.9")), "IPv4-compatible (deprecated) is not mapped");
    let all6 = set(&["::/0"]);
    assert!(!all6.contains(ip("192.0.2.1")), "::/0 is every IPv6 address, not IPv4");
    assert!(!all6.contains(ip("::ffff:192.0.2.1")));
    assert!(all6.contains(ip("::1")));
}

#[test]
fn whole_address_spaces_and_edges() {
    let s = set(&["0.0.0.0/0", "::/0"]);
    for a in ["0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"] {
        assert!(s.contains(ip(a)), "{a}");
    }
    let s = set(&["255.255.255.255/32", "0.0.0.0/32"]);
    assert!(s.contains(ip("255.255.255.255")) && s.contains(ip("0.0.0.0")));
    assert!(!s.contains(ip("255.255.255.254")) && !s.contains(ip("0.0.0.1")));
}

#[test]
fn host_bits_are_cleared_and_bad_entries_refused() {
    assert_eq!(parse_entry("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_entry(" 2001:db8::1 ").unwrap().to_string(), "2001:db8::1/128");
    assert_eq!(parse_entry("::ffff:10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
    for bad in ["", "10.0.0.0/33", "10.0.0", "example.com", "10.0.0.0/8/8", "::/129"] {
        assert!(parse_entry(bad).is_none(), "{bad}");
    }
}

#[test]
fn nested_values_combine_and_neighbours_merge() {
    let e = |s: &str| parse_entry(s).unwrap();
    let s = IpSet::build(
        vec![(e("10.0.0.0/8"), 5u64), (e("10.1.0.0/16"), 9), (e("10.2.0.0/16"), 1), (e("10.1.2.0/24"), 3)],
        u64::max,
    );
    assert_eq!(s.get(ip("10.0.0.1")), Some(5));
    assert_eq!(s.get(ip("10.1.2.3")), Some(9), "inside /16 (9) and /24 (3): the max");
    assert_eq!(s.get(ip("10.1.3.0")), Some(9));
    assert_eq!(s.get(ip("10.2.0.0")), Some(5));
    assert_eq!(s.get(ip("11.0.0.0")), None);
    // Adjacent blocks with one value are one range.
    let merged = set(&["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16"]);
    assert_eq!(merged.len(), 1);
}

#[test]
fn a_large_table_uses_its_index() {
    let nets: Vec<_> =
        (0..20_000u32).map(|i| (IpNet::V4(Ipv4Net::new(Ipv4Addr::from(i * 4096), 24).unwrap()), ())).collect();
    let s = IpSet::build(nets, |_, _| ());
    assert_eq!(s.len(), 20_000);
    assert!(s.contains(IpAddr::V4(Ipv4Addr::from(4096 * 19_999 + 255))));
    assert!(!s.contains(IpAddr::V4(Ipv4Addr::from(4096 * 19_999 + 256))));
    assert!(!s.contains(IpAddr::V4(Ipv4Addr::from(4096 * 20_000))));
}

/// A CIDR biased towards overlap: a few base addresses with random prefix lengths.
fn arb_net() -> impl Strategy<Value = IpNet> {
    let v4 = (0u32..8, any::<u32>(), 0u8..=32).prop_map(|(base, noise, len)| {
        let addr = (base << 28) | (noise >> 4);
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc())
    });
    let v6 = (0u128..8, any::<u128>(), 0u8..=128).prop_map(|(base, noise, len)| {
        let addr = (base << 124) | (noise >> 4);
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
    });
    let mapped = (any::<u32>(), 96u8..=128).prop_map(|(a, len)| {
        let addr = Ipv4Addr::from(a).to_ipv6_mapped();
        IpNet::V6(Ipv6Net::new(addr, len).unwrap().trunc())
    });
    prop_oneof![4 => v4, 4 => v6, 1 => mapped]
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u32..8, any::<u32>()).prop_map(|(b, n)| IpAddr::V4(Ipv4Addr::from((b << 28) | (n >> 4)))),
        (0u128..8, any::<u128>()).prop_map(|(b, n)| IpAddr::V6(Ipv6Addr::from((b << 124) | (n >> 4)))),
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

/// The reference: every block checked in turn, with the same mapped-address rule.
fn naive(nets: &[(IpNet, u16)], ip: IpAddr) -> Option<u16> {
    let ip = ip.to_canonical();
    nets.iter().filter(|(n, _)| canonical(*n).contains(&ip)).map(|(_, v)| *v).max()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_a_naive_scan(
        nets in proptest::collection::vec((arb_net(), any::<u16>()), 0..60),
        probes in proptest::collection::vec(arb_ip(), 1..60),
    ) {
        let set = IpSet::build(nets.iter().copied(), u16::max);
        for ip in probes {
            prop_assert_eq!(set.get(ip), naive(&nets, ip), "{}", ip);
        }
        // Every block's own first and last address.
        for (n, _) in &nets {
            for ip in [n.network(), n.broadcast()] {
                prop_assert_eq!(set.get(ip), naive(&nets, ip), "{}", ip);
            }
        }
    }
}

#[test]
fn an_indexed_table_matches_a_scan_also_when_clustered() {
    // Over INDEXED ranges, all inside 2001:db8::/32 (one top-16-bit value), plus keys below and above.
    let mut rng = fastrand::Rng::with_seed(5);
    let base = 0x2001_0db8u128 << 96;
    let nets: Vec<(IpNet, u16)> = (0..14_000)
        .map(|_| {
            let addr = Ipv6Addr::from(base | (u128::from(rng.u64(..)) << 32));
            (IpNet::V6(Ipv6Net::new(addr, rng.u8(40..=96)).unwrap().trunc()), rng.u16(..))
        })
        .collect();
    let set = IpSet::build(nets.iter().copied(), u16::max);
    assert!(set.v6.len() > INDEXED && set.v6_long.len() > INDEXED, "{} {}", set.v6.len(), set.v6_long.len());
    let mut probes: Vec<IpAddr> = (0..600)
        .map(|_| IpAddr::V6(Ipv6Addr::from(base | (u128::from(rng.u64(..)) << 32) | u128::from(rng.u32(..)))))
        .collect();
    for (n, _) in nets.iter().take(100) {
        probes.extend([n.network(), n.broadcast()]);
    }
    probes.extend(["::", "2001:db7:ffff::1", "2001:db9::", "ffff::1"].map(ip));
    for p in probes {
        assert_eq!(set.get(p), naive(&nets, p), "{p}");
    }
}

/// Whether a block is banned whole: a ban on the first /64 of a /56 is not a ban on the /56 (the other
/// 255 stay open); nested blocks give the smallest value over the block; IPv4-mapped blocks are IPv4.
#[test]
fn a_block_is_covered_only_when_all_of_it_is() {
    let e = |s: &str| parse_entry(s).unwrap();
    let s = IpSet::build(vec![(e("2001:db8:1:200::/64"), 9u64)], u64::max);
    assert_eq!(s.get(ip("2001:db8:1:200::")), Some(9), "the /56's first address");
    assert_eq!(s.covered_until(e("2001:db8:1:200::/56")), None);
    assert_eq!(s.covered_until(e("2001:db8:1:200::/64")), Some(9));
    assert_eq!(s.covered_until(e("2001:db8:1:200::7/128")), Some(9));
    let s = IpSet::build(vec![(e("2001:db8:1:200::/56"), 5u64), (e("2001:db8:1:2ff::/64"), 9)], u64::max);
    assert_eq!(s.covered_until(e("2001:db8:1:200::/56")), Some(5));
    assert_eq!(s.covered_until(e("2001:db8:1:2ff::/64")), Some(9));
    assert_eq!(s.covered_until(e("2001:db8:1::/48")), None);
    // Longer than /64: the /64 holds it, or the longer blocks do, all of it.
    let s = IpSet::build(vec![(e("2001:db8::/97"), 3u64), (e("2001:db8::8000:0/97"), 4)], u64::max);
    assert_eq!(s.covered_until(e("2001:db8::/96")), Some(3));
    assert_eq!(s.covered_until(e("2001:db8::/95")), None);
    let s =
        IpSet::build(vec![(e("10.0.0.0/25"), 7u64), (e("10.0.0.128/25"), 2), (e("::ffff:10.0.1.0/120"), 1)], u64::max);
    assert_eq!(s.covered_until(e("10.0.0.0/24")), Some(2));
    assert_eq!(s.covered_until(e("10.0.0.0/23")), Some(1));
    assert_eq!(s.covered_until(e("10.0.0.0/22")), None);
    assert_eq!(s.covered_until(e("::ffff:10.0.0.128/121")), Some(2));
    assert_eq!(s.covered_until(e("10.0.0.5/32")), Some(7));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `covered_until` against every address of small IPv4 blocks: the smallest value, or none when
    /// one address is held by no block.
    #[test]
    fn covered_until_matches_every_address(
        nets in proptest::collection::vec(((0u32..65_536), 16u8..=32, any::<u16>()), 0..24),
        probes in proptest::collection::vec(((0u32..65_536), 20u8..=32), 1..8),
    ) {
        let net = |a: u32, len: u8| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | a), len).unwrap().trunc());
        let nets: Vec<(IpNet, u16)> = nets.into_iter().map(|(a, len, v)| (net(a, len), v)).collect();
        let set = IpSet::build(nets.iter().copied(), u16::max);
        for (a, len) in probes {
            let block = net(a, len);
            let IpNet::V4(b) = block else { unreachable!() };
            let each: Option<Vec<u16>> =
                (u32::from(b.network())..=u32::from(b.broadcast())).map(|x| naive(&nets, IpAddr::V4(Ipv4Addr::from(x)))).collect();
            prop_assert_eq!(set.covered_until(block), each.and_then(|v| v.into_iter().min()), "{}", block);
        }
    }
}
