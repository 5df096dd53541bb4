//! Concurrency limits: at most `max` requests in flight per route, per client address or per principal
//! (`route.concurrency: { max: 8, per: principal }`). A request holds its place from the moment the
//! stage admits it until its answer has been sent (or the client went away), so a slow upstream or a
//! slow reader counts for as long as it lasts. Over the limit: 429 with `Retry-After: 1`.
//!
//! Places are counted per key in a sharded map that only holds keys with a request in flight, so its
//! size is bounded by the requests in flight.

use super::KeyPart;
use crate::exchange::{Exchange, Place, Reject};
use serde::Deserialize;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `route.concurrency`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    pub max: u32,
    /// `route` (default: the route as a whole), `client_ip` (IPv6 by /64) or `principal`.
    #[serde(default)]
    pub per: Per,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    #[default]
    Route,
    ClientIp,
    Principal,
}

const SHARDS: usize = 16;

/// A route's concurrency limit.
pub struct Concurrency {
    max: u32,
    per: Per,
    shards: Arc<[Mutex<HashMap<u128, u32>>]>,
    describe: String,
}

impl std::fmt::Debug for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// A request's place, given back when dropped.
pub struct InFlight {
    shards: Arc<[Mutex<HashMap<u128, u32>>]>,
    key: u128,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = lock(&self.shards[shard(self.key)]);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shard(key: u128) -> usize {
    (key >> 64) as usize % SHARDS
}

impl Concurrency {
    pub fn compile(c: &ConcurrencyConfig) -> Result<Concurrency, String> {
        if c.max == 0 {
            return Err("concurrency.max must be at least 1".into());
        }
        let per = match c.per {
            Per::Route => "route",
            Per::ClientIp => "client_ip",
            Per::Principal => "principal",
        };
        Ok(Concurrency {
            max: c.max,
            per: c.per,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            describe: format!("concurrency {} per {per}", c.max),
        })
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Per principal: after authorization; otherwise before authentication.
    pub fn place(&self) -> Place {
        if self.per == Per::Principal {
            Place::PrincipalLimits
        } else {
            Place::PreAuthLimits
        }
    }

    /// Admits the request (its place is held on the exchange until the answer is done) or refuses it.
    pub fn enter(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        let key = self.key_of(ex);
        {
            let mut map = lock(&self.shards[shard(key)]);
            let n = map.entry(key).or_insert(0);
            if *n >= self.max {
                let h = ex.limit_headers.get_or_insert_with(Box::default);
                h.retry_after = Some(h.retry_after.unwrap_or(0).max(1));
                ex.event(
                    crate::events::Noted::new(crate::events::Kind::RateLimited, "concurrency")
                        .attr("max", self.max as u64),
                );
                return Err(Reject::RateLimited);
            }
            *n += 1;
        }
        ex.held.push(Box::new(InFlight { shards: self.shards.clone(), key }));
        Ok(())
    }

    /// The key parts of `per` (a principal missing on a public route counts as its address).
    fn key_of(&self, ex: &Exchange<'_>) -> u128 {
        let parts: &[KeyPart] = match self.per {
            Per::Route => &[],
            Per::ClientIp => &[KeyPart::ClientIp],
            Per::Principal => &[KeyPart::Principal],
        };
        let mut h = SipHasher13::new_with_key(super::process_key());
        super::write_parts(parts, 64, ex, None, &mut h);
        h.finish128().as_u128()
    }

    /// Requests in flight (tests).
    pub fn in_flight(&self) -> u32 {
        self.shards.iter().map(|s| lock(s).values().sum::<u32>()).sum()
    }
}
