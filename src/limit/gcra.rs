//! GCRA (the generic cell rate algorithm) and the in-memory store of its state.
//!
//! A limit of `rate` with `burst` is an emission interval `T` (one request's worth of time) and a
//! tolerance `tau = T * (burst - 1)`. Each key keeps one number, its theoretical arrival time (TAT): a
//! request at `now` is allowed when `max(TAT, now) - now <= tau`, and then moves the TAT on by `T`. It
//! is exact (no window edges to game) and a key whose TAT is in the past is exactly a key never seen,
//! so such keys are evicted without changing any decision.
//!
//! The store is sharded by key, each shard a small map under its own mutex held for a few dozen
//! instructions; it is bounded: a full shard first drops its idle keys, then (only under a flood of
//! distinct active keys) one key of its choosing, so an attacker rotating through source addresses
//! cannot grow memory.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Instant;

/// Nanoseconds on a monotonic clock. Injected, so tests judge decisions by the limiter's own clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The process's monotonic clock.
pub struct Monotonic(Instant);

impl Default for Monotonic {
    fn default() -> Self {
        Monotonic(Instant::now())
    }
}

impl Clock for Monotonic {
    fn now(&self) -> u64 {
        // Starts one day in, so `now - tau` never underflows for any tolerance a config can state.
        86_400_000_000_000 + self.0.elapsed().as_nanos() as u64
    }
}

/// A compiled rate: the emission interval and the tolerance, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval: u64,
    pub burst: u32,
}

impl Rate {
    /// `count` requests per `per` nanoseconds, at most `burst` at once.
    pub fn new(count: u64, per: u64, burst: u32) -> Rate {
        Rate { interval: (per / count.max(1)).max(1), burst: burst.max(1) }
    }

    /// The tolerance: how far ahead of now a key's TAT may be (`interval * (burst - 1)`).
    pub fn tau(self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst) - 1)
    }
}

/// Escalating refusals: each refusal in a row doubles the wait (from the rate's own), up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub max: u64,
}

/// A decision and what the rate-limit headers say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests that could still be made now.
    pub remaining: u32,
    /// Nanoseconds until the key is back to its full burst.
    pub reset: u64,
    /// Nanoseconds until a request would be allowed (0 when allowed).
    pub retry_after: u64,
}

/// A key's state: its TAT and how many refusals in a row it has had.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    tat: u64,
    strikes: u8,
}

/// One GCRA step on `cell` at `now`.
fn step(cell: &mut Cell, now: u64, rate: Rate, backoff: Option<Backoff>) -> Outcome {
    let tau = rate.tau();
    let t = rate.interval;
    let tat = cell.tat.max(now);
    if tat - now > tau {
        // Refused. With backoff, each refusal in a row pushes the next allowed time further.
        let mut wait = tat - tau - now;
        if let Some(b) = backoff {
            cell.strikes = cell.strikes.saturating_add(1);
            let doubled = t.saturating_mul(1u64 << u32::from(cell.strikes.min(40)));
            wait = wait.max(doubled.min(b.max));
            cell.tat = now + tau + wait;
        }
        return Outcome { allowed: false, remaining: 0, reset: cell.tat.max(now) - now, retry_after: wait };
    }
    cell.strikes = 0;
    cell.tat = tat + t;
    let used = cell.tat - now;
    let remaining = ((tau + t).saturating_sub(used) / t).min(u64::from(u32::MAX)) as u32;
    Outcome { allowed: true, remaining, reset: used, retry_after: 0 }
}

/// Keys are already keyed hashes (SipHash-1-3 with a per-process key): the map uses their bits as is.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Map = HashMap<u128, Cell, BuildHasherDefault<Identity>>;

const SHARDS: usize = 64;

/// The in-memory state of one named limit.
pub struct LocalStore {
    shards: Box<[Mutex<Map>]>,
    per_shard: usize,
}

impl LocalStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> LocalStore {
        let per_shard = (max_keys / SHARDS).max(16);
        LocalStore { shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(), per_shard }
    }

    /// Decides for `key` at `now` and records the request if allowed.
    pub fn check(&self, key: u128, now: u64, rate: Rate, backoff: Option<Backoff>) -> Outcome {
        let shard = &self.shards[(key >> 64) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = map.get_mut(&key) {
            return step(cell, now, rate, backoff);
        }
        let mut cell = Cell::default();
        let outcome = step(&mut cell, now, rate, backoff);
        if map.len() >= self.per_shard {
            // Idle keys are exactly fresh keys: dropping them changes nothing.
            map.retain(|_, c| c.tat > now);
            if map.len() >= self.per_shard {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, cell);
        outcome
    }

    /// Keys held (for the bench's memory figure and tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys it holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const S: u64 = 1_000_000_000;
    const START: u64 = 1_000 * S;

    #[test]
    fn a_burst_then_the_rate() {
        let store = LocalStore::new(1000);
        let rate = Rate::new(2, S, 5);
        let allowed = (0..20).filter(|_| store.check(7, START, rate, None).allowed).count();
        assert_eq!(allowed, 5, "the burst at one instant");
        // Half a second later exactly one more.
        assert!(store.check(7, START + S / 2, rate, None).allowed);
        assert!(!store.check(7, START + S / 2, rate, None).allowed);
        // Other keys are independent.
        assert!(store.check(8, START, rate, None).allowed);
    }

    #[test]
    fn headers_values() {
        let store = LocalStore::new(1000);
        let rate = Rate::new(2, S, 5);
        let first = store.check(1, START, rate, None);
        assert_eq!((first.allowed, first.remaining, first.reset), (true, 4, S / 2));
        for _ in 0..4 {
            store.check(1, START, rate, None);
        }
        let refused = store.check(1, START, rate, None);
        assert_eq!((refused.allowed, refused.remaining, refused.retry_after), (false, 0, S / 2));
        assert_eq!(refused.reset, 5 * S / 2);
    }

    #[test]
    fn twice_the_rate_admits_the_rate_by_the_limiters_clock() {
        // 100/s, burst 10, offered 200/s for 60 s of the limiter's clock.
        let store = LocalStore::new(1000);
        let rate = Rate::new(100, S, 10);
        let mut allowed = 0u64;
        for i in 0..12_000u64 {
            if store.check(3, START + i * S / 200, rate, None).allowed {
                allowed += 1;
            }
        }
        let want = 10 + 60 * 100;
        assert!(allowed.abs_diff(want) * 100 <= want * 2, "{allowed} admitted, {want} configured");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let store = LocalStore::new(1000);
        let rate = Rate::new(1, S, 1);
        let b = Some(Backoff { max: 8 * S });
        assert!(store.check(1, START, rate, b).allowed);
        let waits: Vec<u64> = (0..6).map(|_| store.check(1, START, rate, b).retry_after / S).collect();
        assert_eq!(waits, vec![2, 4, 8, 8, 8, 8]);
        // Coming back after the wait is allowed, and the count starts over.
        let back = START + 8 * S;
        assert!(store.check(1, back, rate, b).allowed);
        assert_eq!(store.check(1, back, rate, b).retry_after / S, 2);
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_go_first() {
        let store = LocalStore::new(64 * 16);
        let rate = Rate::new(1, S, 1);
        for k in 0..100_000u128 {
            store.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), START + k as u64, rate, None);
        }
        assert!(store.len() <= store.capacity());
    }

    proptest::proptest! {
        #[test]
        fn churn_never_grows_past_the_bound(keys in proptest::collection::vec(proptest::prelude::any::<u128>(), 1..3000), cap in 1usize..2000) {
            let store = LocalStore::new(cap);
            let rate = Rate::new(10, S, 3);
            for (i, k) in keys.iter().enumerate() {
                store.check(*k, START + i as u64 * 1000, rate, None);
                proptest::prop_assert!(store.len() <= store.capacity());
            }
        }

        #[test]
        fn never_more_than_burst_plus_rate_times_time(gaps in proptest::collection::vec(0u64..50_000_000, 1..500)) {
            let store = LocalStore::new(100);
            let rate = Rate::new(20, S, 4);
            let mut now = START;
            let mut allowed = 0u64;
            for g in &gaps {
                now += g;
                if store.check(1, now, rate, None).allowed {
                    allowed += 1;
                }
            }
            let elapsed = now - START;
            proptest::prop_assert!(allowed <= 4 + elapsed / rate.interval);
        }
    }
}
