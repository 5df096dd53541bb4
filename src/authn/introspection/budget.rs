//! The per-client budget of introspections: how many calls about tokens the gateway has no answer for
//! yet a client address may have in flight, and start per minute. A client sending made-up tokens gets
//! its share of the endpoint and no more; its extra requests are refused (429) without a call, so valid
//! tokens of other clients keep being checked.
//!
//! Clients are counted by address, IPv6 ones by their /64 (one host usually holds a whole /64). The
//! table is bounded: when it is full of clients with calls in flight or in their current minute, a new
//! client is refused too rather than the table growing or an entry being forgotten early.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// Most client addresses tracked at once.
const MAX_CLIENTS: usize = 65_536;
const WINDOW: i64 = 60;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    in_flight: u32,
    /// Start of the current minute (unix seconds), and the calls started in it.
    window: i64,
    started: u32,
}

pub struct Budget {
    concurrent: u32,
    per_minute: u32,
    clients: Mutex<HashMap<IpAddr, Slot>>,
    capacity: usize,
}

/// One call in flight; gives its place back when dropped.
pub struct Ticket<'a> {
    budget: &'a Budget,
    client: IpAddr,
}

/// The address a client is counted under.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl Budget {
    pub fn new(concurrent: u32, per_minute: u32) -> Budget {
        Budget::with_capacity(concurrent, per_minute, MAX_CLIENTS)
    }

    fn with_capacity(concurrent: u32, per_minute: u32, capacity: usize) -> Budget {
        Budget { concurrent, per_minute, clients: Mutex::new(HashMap::new()), capacity }
    }

    /// A place for one call from `ip` at `now` (unix seconds), or `None` when its budget is spent.
    pub fn take(&self, ip: IpAddr, now: i64) -> Option<Ticket<'_>> {
        let client = client_of(ip);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(&client) && clients.len() >= self.capacity {
            clients.retain(|_, s| s.in_flight > 0 || now < s.window + WINDOW);
            if clients.len() >= self.capacity {
                return None;
            }
        }
        let slot = clients.entry(client).or_default();
        if now >= slot.window + WINDOW {
            (slot.window, slot.started) = (now, 0);
        }
        if slot.in_flight >= self.concurrent || slot.started >= self.per_minute {
            return None;
        }
        slot.in_flight += 1;
        slot.started += 1;
        Some(Ticket { budget: self, client })
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut clients = self.budget.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = clients.get_mut(&self.client) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn concurrent_calls_are_bounded_per_client() {
        let b = Budget::new(2, 100);
        let (t1, t2) = (b.take(ip("10.0.0.1"), 0).unwrap(), b.take(ip("10.0.0.1"), 0).unwrap());
        assert!(b.take(ip("10.0.0.1"), 0).is_none(), "a third call in flight");
        assert!(b.take(ip("::ffff:10.0.0.1"), 0).is_none(), "the same client over IPv6-mapped");
        let other = b.take(ip("10.0.0.2"), 0);
        assert!(other.is_some(), "another client has its own budget");
        drop(t1);
        assert!(b.take(ip("10.0.0.1"), 0).is_some(), "a place given back");
        drop(t2);
    }

    #[test]
    fn calls_per_minute_are_bounded_and_renew() {
        let b = Budget::new(10, 3);
        for _ in 0..3 {
            assert!(b.take(ip("10.0.0.1"), 100).is_some());
        }
        assert!(b.take(ip("10.0.0.1"), 159).is_none(), "spent for this minute");
        assert!(b.take(ip("10.0.0.1"), 160).is_some(), "a new minute");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let b = Budget::new(1, 100);
        let _t = b.take(ip("2001:db8:1:2::1"), 0).unwrap();
        assert!(b.take(ip("2001:db8:1:2:ffff::9"), 0).is_none(), "same /64");
        assert!(b.take(ip("2001:db8:1:3::1"), 0).is_some(), "another /64");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_only_idle_clients() {
        let b = Budget::with_capacity(1, 1, 4);
        let held: Vec<_> = (1..=4).map(|i| b.take(ip(&format!("10.0.0.{i}")), 0).unwrap()).collect();
        assert!(b.take(ip("10.0.1.1"), 0).is_none(), "full of clients with calls in flight");
        drop(held);
        assert!(b.take(ip("10.0.1.1"), 30).is_none(), "full of clients within their minute");
        assert!(b.take(ip("10.0.1.1"), 60).is_some(), "idle clients forgotten");
        assert!(b.clients() <= 4);
    }
}
