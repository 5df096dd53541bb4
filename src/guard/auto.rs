//! Automatic (fail2ban-style) bans: `after` answers with one of `statuses` (401 and 429 by default) to
//! one client address within `within` ban that address for `ban_for`. An IPv4 client is one address;
//! an IPv6 client is its /64 (`ipv6_prefix`), since one host usually holds a whole /64.
//!
//! The count is exact over a sliding window: each tracked address keeps the times of its last `after`
//! such answers. Memory is bounded: at most `max_tracked` addresses (100,000 by default) in 16 shards;
//! a full shard first forgets addresses with nothing in the window, then (only under a flood of
//! distinct active addresses) one address of its choosing, so rotating source addresses cannot grow it.

use crate::units::Dur;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// `auto_ban:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AutoBanConfig {
    /// How many answers ban (at least 2, at most 1,000).
    pub after: u32,
    /// Which answer statuses count (default 401 and 429).
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// The window they must fall in.
    pub within: Dur,
    /// How long the ban lasts.
    pub ban_for: Dur,
    /// IPv6 clients are counted and banned by this prefix (default 64).
    #[serde(default)]
    pub ipv6_prefix: Option<u8>,
    /// Addresses never banned automatically (monitoring, your own egress).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The most addresses tracked at once (default 100,000).
    #[serde(default)]
    pub max_tracked: Option<usize>,
}

fn default_statuses() -> Vec<u16> {
    vec![401, 429]
}

const SHARDS: usize = 16;

/// One shard: per address key, the times (ms) of its counted answers in the window, oldest first.
type Shard = Mutex<HashMap<u128, VecDeque<u64>>>;

/// The per-address counts, kept across reloads.
pub struct Tracker {
    shards: Box<[Shard]>,
    per_shard: usize,
    epoch: Instant,
}

impl Tracker {
    pub fn new(max_tracked: usize) -> Tracker {
        Tracker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_tracked / SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds on the tracker's monotonic clock.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records one answer for `key` at `now` (ms); true when it is the `after`th within `window` (ms),
    /// in which case the address's count starts again.
    pub fn record(&self, key: u128, now: u64, after: u32, window: u64) -> bool {
        let mixed = (key as u64) ^ ((key >> 64) as u64);
        let shard = &self.shards[(mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |t: &u64| t.saturating_add(window) > now;
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            map.retain(|_, times| times.back().is_some_and(fresh));
            if map.len() >= self.per_shard {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        let times = map.entry(key).or_default();
        while times.front().is_some_and(|t| !fresh(t)) {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() >= after as usize {
            map.remove(&key);
            return true;
        }
        false
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

/// The block an address is counted and banned as: IPv4 whole, IPv6 by `prefix` (each address behind a
/// NAT64: [`crate::exchange::client_net`]).
pub fn block_of(ip: IpAddr, ipv6_prefix: u8) -> (u128, IpNet) {
    let net = crate::exchange::client_net(ip, ipv6_prefix);
    let key = match net.network() {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    };
    (key, net)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_nth_answer_within_the_window_bans() {
        let t = Tracker::new(1000);
        // 3 within 1000 ms.
        assert!(!t.record(1, 0, 3, 1000));
        assert!(!t.record(1, 500, 3, 1000));
        assert!(t.record(1, 999, 3, 1000));
        // Counting starts again after a ban.
        assert!(!t.record(1, 1000, 3, 1000));
        // Spread out: the window slides, never three inside one second.
        let t = Tracker::new(1000);
        for i in 0..20 {
            assert!(!t.record(2, i * 600, 3, 1000), "at {i}");
        }
    }

    #[test]
    fn memory_stays_bounded_under_address_rotation() {
        let t = Tracker::new(1600);
        for k in 0..100_000u128 {
            t.record(k * 7919, k as u64, 10, 60_000);
        }
        assert!(t.len() <= t.capacity(), "{} > {}", t.len(), t.capacity());
        // A persistent offender still gets counted.
        let mut banned = false;
        for i in 0..10 {
            banned = t.record(42, 200_000 + i, 10, 60_000);
        }
        assert!(banned);
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_as_ipv4() {
        let a = block_of("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
        let b = block_of("2001:db8:1:2:bbbb::9".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_eq!(a.1.to_string(), "2001:db8:1:2::/64");
        let v4 = block_of("192.0.2.1".parse().unwrap(), 64);
        assert_eq!(v4, block_of("::ffff:192.0.2.1".parse().unwrap(), 64));
        assert_eq!(v4.1.to_string(), "192.0.2.1/32");
        assert_ne!(v4.0, block_of("192.0.2.2".parse().unwrap(), 64).0);
    }
}
