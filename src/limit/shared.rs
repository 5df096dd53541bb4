//! Limits kept in Redis (`store: redis`), so every gateway of a fleet enforces one budget per key.
//!
//! The decision is the same GCRA step as [`super::gcra`], made atomically in one Lua script (loaded
//! once, called by its SHA-1: redis-rs sends EVALSHA and loads the script on NOSCRIPT) against Redis's
//! own clock (`TIME`), so nodes whose clocks disagree still share one timeline. All the `store: redis`
//! limits of a route's stage go in one script call: one round trip per request at most, and requests
//! arriving together share one call ([`crate::fleet::Batched`]). A key expires
//! (`PEXPIRE` through `SET .. PX`) when its TAT has passed, which is exactly when it is the same as a
//! key never seen.
//!
//! Keys must be the same on every node, so they cannot use the local store's per-process SipHash key:
//! they are SHA-256 of the same length-prefixed key parts (an attacker cannot make two callers share
//! a bucket), under `portcullis:rl:<limit>:`.
//!
//! Times in the script are microseconds from a fixed epoch in Lua's doubles (exact to well under a
//! microsecond for decades), which is why a `store: redis` limit allows at most 1,000,000 requests a
//! second.

use super::gcra::{Backoff, Outcome, Rate};
use crate::fleet::{Fleet, OnFailure};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

/// The GCRA step of `gcra.rs`, for each `KEYS[i]`, in microseconds of Redis's clock. `ARGV`, three per
/// key: emission interval, tolerance, backoff cap (0: none). A key holds `"tat strikes"`. Returns four
/// integers per key: allowed (1 or 0), remaining, microseconds until full, microseconds to wait.
pub const GCRA_LUA: &str = r#"
redis.replicate_commands()
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1700000000) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local tau = tonumber(ARGV[3 * i - 1])
  local cap = tonumber(ARGV[3 * i])
  local stored, strikes = now, 0
  local cell = redis.call('GET', key)
  if cell then
    local sp = string.find(cell, ' ', 1, true)
    if sp then
      stored = tonumber(string.sub(cell, 1, sp - 1)) or now
      strikes = tonumber(string.sub(cell, sp + 1)) or 0
    end
  end
  local tat = math.max(stored, now)
  if tat - now > tau then
    local wait = tat - tau - now
    if cap > 0 then
      strikes = math.min(strikes + 1, 255)
      wait = math.max(wait, math.min(interval * 2 ^ math.min(strikes, 40), cap))
      stored = now + tau + wait
      redis.call('SET', key, string.format('%.17g %d', stored, strikes), 'PX',
        math.max(1, math.ceil((stored - now) / 1000)))
    end
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(math.max(stored, now) - now)
    out[#out + 1] = math.ceil(wait)
  else
    local used = tat + interval - now
    redis.call('SET', key, string.format('%.17g 0', tat + interval), 'PX', math.max(1, math.ceil(used / 1000)))
    out[#out + 1] = 1
    out[#out + 1] = math.floor((tau - (tat - now) + 0.01) / interval)
    out[#out + 1] = math.ceil(used)
    out[#out + 1] = 0
  end
end
return out
"#;

/// The fastest rate a `store: redis` limit may have (its interval in nanoseconds).
pub const MIN_INTERVAL_NS: u64 = 1_000;

/// A limit's link to the fleet's Redis.
pub struct SharedStore {
    pub fleet: Arc<Fleet>,
    pub on_failure: OnFailure,
    /// `portcullis:rl:<limit>:`
    pub prefix: String,
    /// `portcullis_rate_limit_store_failures_total{limit,mode}`.
    pub failures: Counter,
}

/// The script's arguments for one key.
pub fn args(rate: Rate, backoff: Option<Backoff>) -> [f64; 3] {
    let us = |ns: u64| ns as f64 / 1000.0;
    [us(rate.interval), us(rate.tau()), backoff.map_or(0.0, |b| us(b.max).max(1.0))]
}

/// The script's answer for key `i`, or `None` if it is not one.
pub fn outcome(values: &[i64], i: usize) -> Option<Outcome> {
    let v = values.get(4 * i..4 * i + 4)?;
    let ns = |us: i64| u64::try_from(us).unwrap_or(0).saturating_mul(1000);
    Some(Outcome {
        allowed: v[0] == 1,
        remaining: u32::try_from(v[1].max(0)).unwrap_or(u32::MAX),
        reset: ns(v[2]),
        retry_after: ns(v[3]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_answers() {
        // 2/s with a burst of 5 and a backoff cap of 8 s, in microseconds.
        let rate = Rate::new(2, 1_000_000_000, 5);
        assert_eq!(args(rate, Some(Backoff { max: 8_000_000_000 })), [500_000.0, 2_000_000.0, 8_000_000.0]);
        assert_eq!(args(rate, None)[2], 0.0, "0: no backoff");
        let values = [1, 4, 500_000, 0, 0, 0, 2_500_000, 500_000];
        let second = outcome(&values, 1);
        assert_eq!(
            second,
            Some(Outcome { allowed: false, remaining: 0, reset: 2_500_000_000, retry_after: 500_000_000 })
        );
        assert_eq!(outcome(&values, 0).map(|o| (o.allowed, o.remaining)), Some((true, 4)));
        assert_eq!(outcome(&values, 2), None, "a short answer is no answer");
        assert_eq!(outcome(&[1, -3, -1, 0], 0).map(|o| (o.remaining, o.reset)), Some((0, 0)));
    }
}
