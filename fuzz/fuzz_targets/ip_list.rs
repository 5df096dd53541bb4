//! IP list parsing and the prefix structure: any text read as a list file never panics, and for every
//! address the input names (and the first and last address of every block) the prefix structure says
//! what a scan of the blocks says: the largest value among the blocks holding it, IPv4-mapped
//! addresses matched as IPv4.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::guard::prefix::{canonical, parse_entry, IpSet};
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut blocks = Vec::new();
    let mut probes: Vec<IpAddr> = Vec::new();
    for (i, line) in text.lines().take(256).enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if let Some(net) = parse_entry(entry) {
            assert_eq!(canonical(net), net, "entries are stored canonical");
            blocks.push((net, (i % 7) as u8));
            probes.extend([net.network(), net.broadcast()]);
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            probes.push(ip);
        }
    }
    let set = IpSet::build(blocks.iter().copied(), u8::max);
    for ip in probes {
        let canonical_ip = ip.to_canonical();
        let want = blocks.iter().filter(|(n, _)| n.contains(&canonical_ip)).map(|(_, v)| *v).max();
        assert_eq!(set.get(ip), want, "{ip}");
    }
});
