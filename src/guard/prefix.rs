//! The prefix structure that IP lists and bans are matched with: CIDRs turned into sorted, disjoint
//! address ranges, looked up by binary search. IPv4 (32-bit keys) and IPv6 (64-bit keys for blocks of
//! /64 or shorter, 128-bit ones for longer blocks) live in separate tables, so a lookup walks small keys.
//!
//! CIDR blocks either nest or are disjoint, so building is a sort and one sweep with a stack of open
//! blocks: each elementary range gets the combination (`max` for ban expiries) of every block covering
//! it, and neighbours with the same value merge. Large tables (over [`INDEXED`] ranges) also get a
//! direct index of 65,536 buckets over the span their ranges cover (the 16 bits right below the
//! prefix all their starts share, so a list clustered in `2001:db8::/32` is spread as well as one
//! spread over the whole space), which narrows the search to one small bucket: a million entries
//! cost two or three cache misses per lookup rather than twenty steps.
//!
//! IPv4 clients that arrive as IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, from a dual-stack
//! listener or a proxy) are looked up as IPv4, and an entry written in the mapped form
//! (`::ffff:192.0.2.0/120`) is stored as the IPv4 block it names. Other IPv6 entries (`::/0`) never
//! match IPv4 clients.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::IpAddr;

/// Tables with more ranges than this get the 16-bit bucket index (256 KiB).
const BUCKETS: usize = 1 << 16;
const INDEXED: usize = 4096;

/// An address-range key: `u32` for IPv4, `u128` for IPv6.
pub trait Key: Copy + Ord + std::fmt::Debug {
    fn succ(self) -> Option<Self>;
    /// `self - 1`; never called on zero.
    fn pred(self) -> Self;
    /// `self - base`, widened (`self >= base`).
    fn offset(self, base: Self) -> u128;
    const BITS: u32;
}

impl Key for u32 {
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn pred(self) -> u32 {
        self.saturating_sub(1)
    }
    fn offset(self, base: u32) -> u128 {
        u128::from(self - base)
    }
    const BITS: u32 = 32;
}

impl Key for u64 {
    fn succ(self) -> Option<u64> {
        self.checked_add(1)
    }
    fn pred(self) -> u64 {
        self.saturating_sub(1)
    }
    fn offset(self, base: u64) -> u128 {
        u128::from(self - base)
    }
    const BITS: u32 = 64;
}

impl Key for u128 {
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn pred(self) -> u128 {
        self.saturating_sub(1)
    }
    fn offset(self, base: u128) -> u128 {
        self - base
    }
    const BITS: u32 = 128;
}

/// Sorted, disjoint, inclusive ranges of keys, each with a value.
#[derive(Debug, Clone)]
pub struct Ranges<K, V> {
    /// `(first, last)` of each range, side by side: a lookup reads both from one cache line.
    bounds: Vec<(K, K)>,
    values: Vec<V>,
    /// `index[b]`: the first range whose start is in bucket `b` or later (65,538 entries, the last
    /// two the length), or empty for a small table. A key's bucket is `(key - first start) >> shift`.
    index: Box<[u32]>,
    shift: u32,
}

impl<K: Key, V: Copy + PartialEq> Ranges<K, V> {
    /// Builds from inclusive `(first, last, value)` blocks that nest or are disjoint (CIDR blocks);
    /// `combine` merges the values of blocks covering the same key.
    pub fn build(mut blocks: Vec<(K, K, V)>, combine: impl Fn(V, V) -> V) -> Ranges<K, V> {
        // Outer blocks first: by start, then the longest.
        blocks.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = Ranges { bounds: Vec::new(), values: Vec::new(), index: Box::new([]), shift: 0 };
        // The open blocks, innermost last, each with the combined value of it and its parents; `pos` is
        // the first key not yet emitted (None: past the end of the key space).
        let mut open: Vec<(K, V)> = Vec::new();
        let mut pos: Option<K> = None;
        for (start, end, value) in blocks {
            while let Some(&(top_end, top_value)) = open.last() {
                if top_end >= start {
                    break;
                }
                out.emit_until(&mut pos, top_end, top_value);
                open.pop();
            }
            if let (Some(&(_, top_value)), Some(p)) = (open.last(), pos) {
                if p < start {
                    // The parent's part before this block; `start > p >= 0`, so it has a predecessor.
                    out.push(p, start.pred(), top_value);
                }
            }
            pos = Some(start);
            let combined = open.last().map_or(value, |&(_, v)| combine(v, value));
            open.push((end, combined));
        }
        while let Some((end, value)) = open.pop() {
            out.emit_until(&mut pos, end, value);
        }
        out.build_index();
        out
    }

    /// Emits `[pos, end]` with `value` if anything of it is left, and moves `pos` past `end`.
    fn emit_until(&mut self, pos: &mut Option<K>, end: K, value: V) {
        if let Some(p) = *pos {
            if p <= end {
                self.push(p, end, value);
                *pos = end.succ();
            }
        }
    }

    /// Appends a range, merging it into the previous one when they touch and agree.
    fn push(&mut self, start: K, end: K, value: V) {
        if let (Some((_, last_end)), Some(last_value)) = (self.bounds.last_mut(), self.values.last()) {
            if *last_value == value && last_end.succ() == Some(start) {
                *last_end = end;
                return;
            }
        }
        self.bounds.push((start, end));
        self.values.push(value);
    }

    fn build_index(&mut self) {
        let (Some(&(base, _)), Some(&(last, _))) = (self.bounds.first(), self.bounds.last()) else { return };
        if self.bounds.len() <= INDEXED {
            return;
        }
        // The fewest bits that hold every start's offset, less 16: every start's bucket is below 2^16.
        let span_bits = 128 - last.offset(base).leading_zeros();
        self.shift = span_bits.saturating_sub(16).min(K::BITS);
        let mut index = vec![0u32; BUCKETS + 2];
        let mut i = 0;
        for (b, slot) in index.iter_mut().enumerate() {
            while i < self.bounds.len() && self.bucket(self.bounds[i].0) < b {
                i += 1;
            }
            *slot = i as u32;
        }
        self.index = index.into_boxed_slice();
    }

    /// The bucket of a key at or above the first start: at most [`BUCKETS`] (past every start).
    #[inline]
    fn bucket(&self, key: K) -> usize {
        (key.offset(self.bounds[0].0) >> self.shift).min(BUCKETS as u128) as usize
    }

    /// The value of the range holding `key`.
    #[inline]
    pub fn get(&self, key: K) -> Option<V> {
        let p = if self.index.is_empty() {
            self.bounds.partition_point(|(s, _)| *s <= key)
        } else if key < self.bounds[0].0 {
            return None;
        } else {
            let b = self.bucket(key);
            let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
            lo + self.bounds[lo..hi].partition_point(|(s, _)| *s <= key)
        };
        let i = p.checked_sub(1)?;
        (key <= self.bounds[i].1).then(|| self.values[i])
    }

    /// The smallest value over `[start, end]` when the ranges hold every key of it; `None` when any
    /// key of it is held by none. Walks the ranges inside the span.
    pub fn min_covering(&self, start: K, end: K) -> Option<V>
    where
        V: Ord,
    {
        let mut i = self.bounds.partition_point(|(s, _)| *s <= start).checked_sub(1)?;
        let mut at = start;
        let mut min: Option<V> = None;
        loop {
            let (s, e) = *self.bounds.get(i)?;
            if s > at || e < at {
                return None;
            }
            let v = self.values[i];
            min = Some(min.map_or(v, |m| m.min(v)));
            if e >= end {
                return min;
            }
            at = e.succ()?;
            i += 1;
        }
    }

    /// The number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
}

/// IPv4 and IPv6 blocks with values. IPv6 blocks of /64 or shorter (nearly all of them in practice)
/// are kept by their upper 64 bits, which halves the memory a lookup walks; longer ones in a table of
/// their own, consulted only when it holds anything.
#[derive(Debug, Clone)]
pub struct IpSet<V> {
    v4: Ranges<u32, V>,
    v6: Ranges<u64, V>,
    v6_long: Ranges<u128, V>,
    combine: fn(V, V) -> V,
}

impl<V: Copy + PartialEq> Default for IpSet<V> {
    fn default() -> Self {
        IpSet::build(Vec::new(), |a, _| a)
    }
}

impl<V: Copy + PartialEq> IpSet<V> {
    /// Builds from CIDR blocks with values; `combine` merges the values of nested blocks.
    pub fn build(nets: impl IntoIterator<Item = (IpNet, V)>, combine: fn(V, V) -> V) -> IpSet<V> {
        let (mut v4, mut v6, mut v6_long) = (Vec::new(), Vec::new(), Vec::new());
        for (net, value) in nets {
            match canonical(net) {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()), value)),
                IpNet::V6(n) if n.prefix_len() <= 64 => {
                    let hi = |a: std::net::Ipv6Addr| (u128::from(a) >> 64) as u64;
                    v6.push((hi(n.network()), hi(n.broadcast()), value));
                }
                IpNet::V6(n) => v6_long.push((u128::from(n.network()), u128::from(n.broadcast()), value)),
            }
        }
        IpSet {
            v4: Ranges::build(v4, combine),
            v6: Ranges::build(v6, combine),
            v6_long: Ranges::build(v6_long, combine),
            combine,
        }
    }

    /// The combined value of every block holding `ip` (an IPv4-mapped address is its IPv4 address).
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => {
                    let bits = u128::from(a);
                    let short = self.v6.get((bits >> 64) as u64);
                    if self.v6_long.is_empty() {
                        return short;
                    }
                    match (short, self.v6_long.get(bits)) {
                        (Some(x), Some(y)) => Some((self.combine)(x, y)),
                        (x, y) => x.or(y),
                    }
                }
            },
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get(ip).is_some()
    }

    /// The smallest combined value over every address of `net` when blocks hold all of them (for ban
    /// expiries: until when the whole block is banned already); `None` when any address of it is held
    /// by none. Looking up the block's first address alone would take a ban on one /64 for a ban on
    /// its whole /56. (Many blocks longer than /64 that together cover a /64 or a wider block are not
    /// counted: `None`, the safe answer for a caller deciding whether a new block adds anything.)
    pub fn covered_until(&self, net: IpNet) -> Option<V>
    where
        V: Ord,
    {
        match canonical(net) {
            IpNet::V4(n) => self.v4.min_covering(u32::from(n.network()), u32::from(n.broadcast())),
            IpNet::V6(n) => {
                let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                if n.prefix_len() <= 64 {
                    return self.v6.min_covering((lo >> 64) as u64, (hi >> 64) as u64);
                }
                // Within one /64: a block of /64 or shorter holds all of it, or the longer blocks do.
                match (self.v6.get((lo >> 64) as u64), self.v6_long.min_covering(lo, hi)) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                }
            }
        }
    }

    /// Disjoint ranges held (after merging).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.v6_long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty() && self.v6_long.is_empty()
    }
}

/// A block in the form it is matched in: host bits cleared, and an IPv4-mapped IPv6 block
/// (`::ffff:0:0/96` or narrower) as the IPv4 block it names.
pub fn canonical(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96).map_or(IpNet::V6(n), |m| IpNet::V4(m.trunc())),
            None => IpNet::V6(n),
        },
        other => other,
    }
}

/// Reads one entry: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (a /32 or /128).
pub fn parse_entry(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(canonical(net));
    }
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(IpNet::V4(Ipv4Net::from(a))),
        IpAddr::V6(a) => Some(canonical(IpNet::V6(Ipv6Net::from(a)))),
    }
}

#[cfg(test)]
#[path = "prefix_tests.rs"]
mod tests;
