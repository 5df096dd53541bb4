//! A bounded map from a 64-bit entity key to fixed-size state, evicting the least recently seen: a
//! hash index into a slab of slots threaded on doubly linked recency lists. At capacity a slot is
//! reused in place; nothing grows past the capacity.
//!
//! Two lists, so that a flood of new keys cannot flush what the engine has learned (an attacker
//! sending a million refused keys with made-up ids makes a million entities): new entities enter
//! *probation*; the ones whose value says it is worth keeping ([`Keep`]: an entity with some history)
//! move to the *protected* list when eviction reaches them, and eviction takes from probation first.
//! The protected list holds at most three quarters of the capacity (its least recently seen goes back
//! to probation beyond that), so newcomers always have room to build a history.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const NIL: u32 = u32::MAX;
/// Swaps (a promotion that pushes the protected list's least recently seen back) one eviction may
/// make before it evicts probation's tail anyway: all of probation worth keeping, the protected list
/// full.
const PROMOTIONS: usize = 8;

/// Whether a value is worth keeping over a newcomer when the table is full.
pub(crate) trait Keep {
    fn keep(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot<T> {
    pub(crate) key: u64,
    prev: u32,
    next: u32,
    pub(crate) value: T,
}

/// One recency list: its most and least recently seen slots, and its length.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY: List = List { head: NIL, tail: NIL, len: 0 };

#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    index: HashMap<u64, u32>,
    slots: Vec<Slot<T>>,
    /// [probation, protected].
    lists: [List; 2],
    /// One bit a slot: set when it is on the protected list.
    protected: Vec<u64>,
    cap: usize,
}

impl<T: Default + Keep> Table<T> {
    pub(crate) fn new(cap: usize) -> Table<T> {
        Table {
            index: HashMap::new(),
            slots: Vec::new(),
            lists: [EMPTY; 2],
            protected: Vec::new(),
            cap: cap.clamp(1, NIL as usize - 1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        self.index.get(&key).and_then(|&i| self.slots.get(i as usize)).map(|s| &s.value)
    }

    /// The state of `key`, marked most recently seen; `true` when it was created (fresh or by evicting
    /// another entity).
    pub(crate) fn touch(&mut self, key: u64) -> (&mut T, bool) {
        if let Some(&i) = self.index.get(&key) {
            self.bump(i);
            return (&mut self.slots[i as usize].value, false);
        }
        let i = if self.slots.len() < self.cap {
            if self.slots.len() == self.slots.capacity() {
                // Grow by doubling, never past the capacity.
                let more = self.slots.len().max(16).min(self.cap - self.slots.len());
                self.slots.reserve_exact(more);
            }
            self.slots.push(Slot { key, prev: NIL, next: NIL, value: T::default() });
            let i = self.slots.len() - 1;
            if i / 64 >= self.protected.len() {
                self.protected.push(0);
            }
            i as u32
        } else {
            let i = self.victim();
            let slot = &mut self.slots[i as usize];
            self.index.remove(&slot.key);
            slot.key = key;
            slot.value = T::default();
            i
        };
        self.index.insert(key, i);
        self.push_front(i, 0);
        (&mut self.slots[i as usize].value, true)
    }

    /// The state of `key` when it is tracked, marked most recently seen; never creates one.
    pub(crate) fn touch_existing(&mut self, key: u64) -> Option<&mut T> {
        let i = *self.index.get(&key)?;
        self.bump(i);
        self.slots.get_mut(i as usize).map(|s| &mut s.value)
    }

    /// Moves slot `i` to the front of its list.
    fn bump(&mut self, i: u32) {
        let l = self.list_of(i);
        self.unlink(i, l);
        self.push_front(i, l);
    }

    /// The slot to reuse, unlinked: probation's least recently seen, once the ones at its tail worth
    /// keeping have moved to the protected list; the protected list's when probation is empty. A move
    /// that pushes the protected list's least recently seen back to probation is a swap, not progress:
    /// after [`PROMOTIONS`] of those, the tail goes whatever it is.
    fn victim(&mut self) -> u32 {
        let mut swaps = 0;
        while swaps < PROMOTIONS {
            let i = self.lists[0].tail;
            if i == NIL || !self.slots[i as usize].value.keep() {
                break;
            }
            self.unlink(i, 0);
            self.push_front(i, 1);
            if self.lists[1].len > self.cap / 4 * 3 {
                let old = self.lists[1].tail;
                self.unlink(old, 1);
                self.push_front(old, 0);
                swaps += 1;
            }
        }
        let l = if self.lists[0].tail != NIL { 0 } else { 1 };
        let i = self.lists[l].tail;
        self.unlink(i, l);
        i
    }

    fn list_of(&self, i: u32) -> usize {
        usize::from(self.protected[i as usize / 64] & (1 << (i % 64)) != 0)
    }

    fn unlink(&mut self, i: u32, l: usize) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match prev {
            NIL => self.lists[l].head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.lists[l].tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        self.lists[l].len -= 1;
    }

    fn push_front(&mut self, i: u32, l: usize) {
        let old = self.lists[l].head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.lists[l].tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.lists[l].head = i;
        self.lists[l].len += 1;
        let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
        if l == 1 {
            self.protected[word] |= bit;
        } else {
            self.protected[word] &= !bit;
        }
    }

    /// How many entities the protected list holds.
    pub(crate) fn protected_len(&self) -> usize {
        self.lists[1].len
    }

    /// Puts `keys` (least recently seen first) on the protected list, as a snapshot listed them; at
    /// most three quarters of the table, the most recently seen (a snapshot restored into a smaller
    /// table must still leave newcomers their quarter).
    pub(crate) fn protect(&mut self, keys: impl IntoIterator<Item = u64>) {
        let keys: Vec<u64> = keys.into_iter().collect();
        let room = (self.cap / 4 * 3).saturating_sub(self.lists[1].len);
        for &key in &keys[keys.len().saturating_sub(room)..] {
            if let Some(&i) = self.index.get(&key) {
                let l = self.list_of(i);
                self.unlink(i, l);
                self.push_front(i, 1);
            }
        }
    }

    /// Slots from the least to the most recently seen, probation's first (the order a restore
    /// re-inserts them in: the protected ones come last, so a smaller table keeps them).
    pub(crate) fn oldest_first(&self) -> impl Iterator<Item = &Slot<T>> {
        let walk = |mut i: u32| {
            std::iter::from_fn(move || {
                let s = self.slots.get(i as usize)?;
                i = s.prev;
                Some(s)
            })
        };
        walk(self.lists[0].tail).chain(walk(self.lists[1].tail))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().map(|s| &mut s.value)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.value)
    }

    /// Heap bytes of the index, the slab and the protected bits (not what the values themselves
    /// point to).
    pub(crate) fn heap_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the entry, buckets = capacity * 8 / 7.
        let buckets = self.index.capacity() * 8 / 7 + 1;
        buckets * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.protected.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keep for u32 {}
    impl Keep for u8 {}

    /// A value the table keeps when it is at least 10 (an entity with some history).
    #[derive(Debug, Default, Clone, Copy, PartialEq)]
    struct Aged(u32);

    impl Keep for Aged {
        fn keep(&self) -> bool {
            self.0 >= 10
        }
    }

    #[test]
    fn evicts_the_least_recently_seen() {
        let mut t: Table<u32> = Table::new(3);
        for k in 1..=3u64 {
            *t.touch(k).0 = k as u32;
        }
        t.touch(1); // 2 is now the oldest
        let (v, fresh) = t.touch(4);
        assert!(fresh);
        assert_eq!(*v, 0);
        assert_eq!(t.len(), 3);
        assert!(t.get(2).is_none());
        assert_eq!(t.get(1), Some(&1));
        let order: Vec<u64> = t.oldest_first().map(|s| s.key).collect();
        assert_eq!(order, vec![3, 1, 4]);
        assert!(!t.touch(3).1);
        let order: Vec<u64> = t.oldest_first().map(|s| s.key).collect();
        assert_eq!(order, vec![1, 4, 3]);
    }

    #[test]
    fn touching_an_existing_key_never_creates_one() {
        let mut t: Table<u32> = Table::new(3);
        assert!(t.touch_existing(7).is_none());
        assert_eq!(t.len(), 0);
        for k in 1..=3u64 {
            *t.touch(k).0 = k as u32;
        }
        *t.touch_existing(1).unwrap() += 10; // 1 is now the newest, 2 the oldest
        t.touch(4);
        assert!(t.get(2).is_none());
        assert_eq!(t.get(1), Some(&11));
        assert!(t.touch_existing(2).is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn capacity_one() {
        let mut t: Table<u8> = Table::new(1);
        for k in 0..10 {
            t.touch(k);
            assert_eq!(t.len(), 1);
        }
        assert!(t.get(9).is_some());
    }

    #[test]
    fn a_flood_of_new_keys_does_not_flush_what_has_history() {
        // 100 slots: 60 entities with history, then 100,000 keys seen once each (an attacker's
        // made-up ids). Every one of the 60 is still there, and the table never grows.
        let mut t: Table<Aged> = Table::new(100);
        for k in 0..60u64 {
            *t.touch(k).0 = Aged(10 + k as u32);
        }
        for k in 1_000..101_000u64 {
            t.touch(k);
            assert!(t.len() <= 100);
        }
        for k in 0..60u64 {
            assert_eq!(t.get(k), Some(&Aged(10 + k as u32)), "{k}");
        }
        // Newcomers still get a quarter of the table: the last 25 of the flood are there.
        assert!((100_975..101_000u64).all(|k| t.get(k).is_some()));
        // With more history than three quarters of the table holds, the least recently seen of it go
        // first: the table still takes every newcomer.
        let mut t: Table<Aged> = Table::new(100);
        for k in 0..100u64 {
            *t.touch(k).0 = Aged(10);
        }
        for k in 1_000..1_100u64 {
            assert!(t.touch(k).1);
            assert!(t.get(k).is_some());
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.oldest_first().count(), 100);
    }

    /// The lists hold every slot once, their lengths add up, and the bits say which list.
    fn check<T: Default + Keep>(t: &Table<T>) {
        let mut seen = 0;
        for l in 0..2 {
            let (mut i, mut n) = (t.lists[l].tail, 0);
            while i != NIL {
                assert_eq!(t.list_of(i), l, "slot {i}");
                n += 1;
                i = t.slots[i as usize].prev;
            }
            assert_eq!(n, t.lists[l].len);
            seen += n;
        }
        assert_eq!(seen, t.slots.len());
        assert!(t.lists[1].len <= t.cap / 4 * 3 || t.cap < 4);
    }

    #[test]
    fn protecting_keeps_newcomers_their_quarter() {
        // A snapshot of 100 protected entities put into a table of 40: 30 protected at most, the
        // most recently seen; the rest on probation. Newcomers seen 10 times then stay.
        let mut t: Table<Aged> = Table::new(40);
        for k in 0..40u64 {
            *t.touch(k).0 = Aged(10);
        }
        t.protect(0..40u64);
        check(&t);
        assert_eq!(t.protected_len(), 30);
        assert!((10..40u64).all(|k| t.list_of(*t.index.get(&k).unwrap()) == 1));
        for k in 100..110u64 {
            *t.touch(k).0 = Aged(10);
            check(&t);
        }
        assert!((100..110u64).all(|k| t.get(k).is_some()));
        // And the invariants hold through a flood and returns.
        for k in 0..5_000u64 {
            let (v, _) = t.touch(k % 97 + (k / 500) * 1000);
            v.0 += 1;
            if k % 250 == 0 {
                check(&t);
            }
        }
        check(&t);
    }

    #[test]
    fn a_key_keeps_its_list_when_seen_again() {
        let mut t: Table<Aged> = Table::new(4);
        for k in 0..4u64 {
            *t.touch(k).0 = Aged(if k == 0 { 10 } else { 0 });
        }
        // Key 0, kept, moves to the protected list when eviction reaches it; 1 goes.
        t.touch(10);
        assert!(t.get(0).is_some() && t.get(1).is_none());
        assert_eq!(t.list_of(*t.index.get(&0).unwrap()), 1);
        // Seen again, it stays protected; the newest newcomers push out the cold ones.
        t.touch(0);
        t.touch(11);
        t.touch(12);
        assert!(t.get(0).is_some());
        assert_eq!(t.oldest_first().map(|s| s.key).collect::<Vec<_>>(), vec![10, 11, 12, 0]);
    }
}
