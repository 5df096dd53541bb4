//! A bounded map from a 64-bit entity key to fixed-size state, with least-recently-seen eviction: a
//! hash index into a slab of slots threaded on a doubly linked recency list. At capacity the least
//! recently seen slot is reused in place; nothing grows past the capacity.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot<T> {
    pub(crate) key: u64,
    prev: u32,
    next: u32,
    pub(crate) value: T,
}

#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    index: HashMap<u64, u32>,
    slots: Vec<Slot<T>>,
    /// Most and least recently seen slots.
    head: u32,
    tail: u32,
    cap: usize,
}

impl<T: Default> Table<T> {
    pub(crate) fn new(cap: usize) -> Table<T> {
        Table { index: HashMap::new(), slots: Vec::new(), head: NIL, tail: NIL, cap: cap.clamp(1, NIL as usize - 1) }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        self.index.get(&key).and_then(|&i| self.slots.get(i as usize)).map(|s| &s.value)
    }

    /// The state of `key`, marked most recently seen; `true` when it was created (fresh or by evicting
    /// the least recently seen entity).
    pub(crate) fn touch(&mut self, key: u64) -> (&mut T, bool) {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return (&mut self.slots[i as usize].value, false);
        }
        let i = if self.slots.len() < self.cap {
            if self.slots.len() == self.slots.capacity() {
                // Grow by doubling, never past the capacity.
                let more = self.slots.len().max(16).min(self.cap - self.slots.len());
                self.slots.reserve_exact(more);
            }
            self.slots.push(Slot { key, prev: NIL, next: NIL, value: T::default() });
            (self.slots.len() - 1) as u32
        } else {
            let i = self.tail;
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            self.index.remove(&slot.key);
            slot.key = key;
            slot.value = T::default();
            i
        };
        self.index.insert(key, i);
        self.push_front(i);
        (&mut self.slots[i as usize].value, true)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }

    /// Slots from the least to the most recently seen (the order a restore re-inserts them in).
    pub(crate) fn oldest_first(&self) -> impl Iterator<Item = &Slot<T>> {
        let mut i = self.tail;
        std::iter::from_fn(move || {
            let s = self.slots.get(i as usize)?;
            i = s.prev;
            Some(s)
        })
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().map(|s| &mut s.value)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|s| &s.value)
    }

    /// Heap bytes of the index and the slab (not what the values themselves point to).
    pub(crate) fn heap_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the entry, buckets = capacity * 8 / 7.
        let buckets = self.index.capacity() * 8 / 7 + 1;
        buckets * (std::mem::size_of::<(u64, u32)>() + 1) + self.slots.capacity() * std::mem::size_of::<Slot<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn capacity_one() {
        let mut t: Table<u8> = Table::new(1);
        for k in 0..10 {
            t.touch(k);
            assert_eq!(t.len(), 1);
        }
        assert!(t.get(9).is_some());
    }
}
