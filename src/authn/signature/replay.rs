//! The replay store: remembers each accepted `(keyid, nonce)` until the signature that carried it could no
//! longer be accepted anyway (its `created` time plus the allowed skew, or its `expires`).
//!
//! It is bounded: when it is full of live nonces it refuses new signatures (the client sees a 401 and
//! can retry later) rather than grow without limit or forget a nonce early, which would allow a replay.
//! One store per authenticator name, kept across reloads so a reload does not forget the nonces.
//! A cluster-wide store (Redis, when the cluster store arrives) will implement the same `remember`.

use crate::exchange::Registry;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct ReplayStore {
    capacity: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `keyid \n nonce` → unix time from which it may be forgotten.
    until: HashMap<String, i64>,
    /// The same entries, soonest expiry first, so eviction never scans the map.
    queue: BinaryHeap<Reverse<(i64, String)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This nonce was already used with this key within the window.
    Replayed,
    /// Too many live nonces; refused so memory stays bounded.
    Full,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Replayed => "replayed_nonce",
            Refused::Full => "replay_store_full",
        }
    }
}

impl ReplayStore {
    pub fn new(capacity: usize) -> ReplayStore {
        ReplayStore { capacity: AtomicUsize::new(capacity), inner: Mutex::new(Inner::default()) }
    }

    /// The store of authenticator `name`: the one a previous runtime used if it is still alive.
    pub fn for_authenticator(stores: &Registry<ReplayStore>, name: &str, capacity: usize) -> Arc<ReplayStore> {
        stores.get_or_insert(
            name,
            |store| store.capacity.store(capacity, Ordering::Relaxed),
            || ReplayStore::new(capacity),
        )
    }

    /// Records `(keyid, nonce)` until `until` (unix seconds), or refuses if it is already recorded.
    pub fn remember(&self, keyid: &str, nonce: &str, until: i64, now: i64) -> Result<(), Refused> {
        let key = format!("{keyid}\n{nonce}");
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.evict(now);
        if inner.until.contains_key(&key) {
            return Err(Refused::Replayed);
        }
        if inner.until.len() >= self.capacity.load(Ordering::Relaxed) {
            return Err(Refused::Full);
        }
        inner.until.insert(key.clone(), until);
        inner.queue.push(Reverse((until, key)));
        Ok(())
    }

    /// True if `(keyid, nonce)` is recorded and still live: a request carrying it would be refused.
    pub fn contains(&self, keyid: &str, nonce: &str, now: i64) -> bool {
        let key = format!("{keyid}\n{nonce}");
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.until.get(&key).is_some_and(|until| *until > now)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn evict(&mut self, now: i64) {
        while let Some(Reverse((until, _))) = self.queue.peek() {
            if *until > now {
                break;
            }
            if let Some(Reverse((until, key))) = self.queue.pop() {
                if self.until.get(&key) == Some(&until) {
                    self.until.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_until_expiry() {
        let s = ReplayStore::new(10);
        assert_eq!(s.remember("k", "n1", 100, 0), Ok(()));
        assert_eq!(s.remember("k", "n1", 100, 50), Err(Refused::Replayed));
        assert_eq!(s.remember("other", "n1", 100, 50), Ok(()), "nonces are per key");
        assert_eq!(s.remember("k", "n1", 200, 100), Ok(()), "forgotten once expired");
        assert_eq!(s.remember("k", "n1", 200, 150), Err(Refused::Replayed));
    }

    #[test]
    fn bounded_and_refuses_when_full() {
        let s = ReplayStore::new(3);
        for n in ["a", "b", "c"] {
            assert_eq!(s.remember("k", n, 10, 0), Ok(()));
        }
        assert_eq!(s.remember("k", "d", 10, 5), Err(Refused::Full));
        assert_eq!(s.len(), 3);
        assert_eq!(s.remember("k", "d", 20, 10), Ok(()), "expired entries make room");
        assert_eq!(s.len(), 1);
        // Out-of-order expiries are evicted in expiry order.
        let s = ReplayStore::new(100);
        for (i, until) in [50, 10, 30, 20, 40].iter().enumerate() {
            s.remember("k", &i.to_string(), *until, 0).unwrap();
        }
        s.remember("k", "x", 100, 25).unwrap();
        assert_eq!(s.len(), 4);
    }

    proptest::proptest! {
        /// Whatever the sequence of calls: the store never holds more than its capacity, and a nonce
        /// accepted at `t` with expiry `u` is refused at every later time before `u`.
        #[test]
        fn bounded_and_never_accepts_a_live_nonce_twice(
            calls in proptest::collection::vec((0u8..12, 0i64..40, 1i64..30), 1..200),
            capacity in 1usize..8,
        ) {
            let s = ReplayStore::new(capacity);
            let mut accepted: Vec<(u8, i64)> = Vec::new(); // (nonce, until)
            let mut now = 0;
            for (nonce, step, ttl) in calls {
                now += step % 5;
                let live = accepted.iter().any(|(n, until)| *n == nonce && *until > now);
                let result = s.remember("k", &nonce.to_string(), now + ttl, now);
                if live {
                    proptest::prop_assert_eq!(result, Err(Refused::Replayed));
                }
                if result.is_ok() {
                    accepted.push((nonce, now + ttl));
                }
                proptest::prop_assert!(s.len() <= capacity);
            }
        }
    }

    #[test]
    fn adopted_across_reloads() {
        let stores = Registry::default();
        let a = ReplayStore::for_authenticator(&stores, "replay-test-auth", 5);
        a.remember("k", "n", i64::MAX, 0).unwrap();
        let b = ReplayStore::for_authenticator(&stores, "replay-test-auth", 7);
        assert_eq!(b.remember("k", "n", i64::MAX, 0), Err(Refused::Replayed));
        drop((a, b));
        let c = ReplayStore::for_authenticator(&stores, "replay-test-auth", 5);
        assert!(c.is_empty());
    }
}
