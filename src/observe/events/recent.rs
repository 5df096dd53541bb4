//! The last security events of the process, for the admin API (`GET /admin/v1/events`) and its live
//! stream (`/admin/v1/events/stream`, the dashboard). A bounded ring (oldest dropped) and a broadcast
//! channel; each event gets a sequence number, which is the API's cursor. Events arrive here after the
//! hub has applied `logging.client_ip` (an address the config hashes is never kept in clear).

use crate::events::Event;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many events the ring keeps.
pub const KEPT: usize = 2048;

pub struct Recent {
    ring: Mutex<VecDeque<(u64, Arc<Event>)>>,
    next: AtomicU64,
    live: tokio::sync::broadcast::Sender<(u64, Arc<Event>)>,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            ring: Mutex::new(VecDeque::with_capacity(KEPT)),
            next: AtomicU64::new(1),
            live: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").finish_non_exhaustive()
    }
}

impl Recent {
    pub fn push(&self, event: Arc<Event>) {
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Numbered under the lock, so the ring is in sequence order.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back((seq, event.clone()));
        drop(ring);
        // No subscriber is fine: the send fails and nothing is kept.
        let _ = self.live.send((seq, event));
    }

    /// Events older than `before` (all when `None`), newest first, that `keep` accepts: at most `limit`.
    pub fn page(&self, before: Option<u64>, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<(u64, Arc<Event>)> {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.iter()
            .rev()
            .filter(|(seq, _)| before.is_none_or(|b| *seq < b))
            .filter(|(_, e)| keep(e))
            .take(limit)
            .map(|(s, e)| (*s, e.clone()))
            .collect()
    }

    /// Events from now on (a slow reader skips what it missed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(u64, Arc<Event>)> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    #[test]
    fn the_ring_is_bounded_and_pages_newest_first() {
        let r = Recent::default();
        for i in 0..(KEPT + 10) {
            r.push(Arc::new(Event::new(Kind::AuthnFailure, if i % 2 == 0 { "even" } else { "odd" })));
        }
        let page = r.page(None, 5, |_| true);
        assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2058, 2057, 2056, 2055, 2054]);
        let next = r.page(Some(2054), 2, |e| e.reason == "even");
        assert_eq!(next.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2053, 2051]);
        assert_eq!(r.page(None, usize::MAX, |_| true).len(), KEPT);
        assert!(r.page(Some(1), 10, |_| true).is_empty());
    }
}
