//! Fixed-size streaming statistics the engine keeps per entity and per peer group: exponentially
//! weighted mean and variance, small linear-counting bitmaps for distinct counts, a ring of per-minute
//! bitmaps for sliding distinct counts, and a log-bucket histogram for streaming quantiles. None of
//! them grows with the traffic.

use serde::{Deserialize, Serialize};

/// Exponentially weighted mean and variance (West's incremental form), in `f32`: 8 bytes.
/// A non-negative number up to 65.535 in two bytes (steps of 0.001): the CUSUMs and the model's
/// masses, which the entity state keeps within its budget. Serialized as `f32`, as it once was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "f32", into = "f32")]
pub(crate) struct Q16(u16);

impl Q16 {
    pub(crate) const ONE: Q16 = Q16(1000);

    pub(crate) fn new(x: f64) -> Q16 {
        Q16((x * 1000.0).round().clamp(0.0, f64::from(u16::MAX)) as u16)
    }

    pub(crate) fn get(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    pub(crate) fn one() -> Q16 {
        Q16::ONE
    }
}

impl From<f32> for Q16 {
    fn from(x: f32) -> Q16 {
        Q16::new(f64::from(x))
    }
}

impl From<Q16> for f32 {
    fn from(q: Q16) -> f32 {
        q.get() as f32
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ewma {
    pub(crate) mean: f32,
    pub(crate) var: f32,
}

impl Ewma {
    /// Adds `x` with weight `alpha` (0 < alpha <= 1); the first sample (`n == 0`) sets the mean.
    pub(crate) fn update(&mut self, x: f64, alpha: f64, n: u32) {
        if n == 0 {
            self.mean = x as f32;
            self.var = 0.0;
            return;
        }
        let mean = f64::from(self.mean);
        let diff = x - mean;
        let incr = alpha * diff;
        let var = (1.0 - alpha) * (f64::from(self.var) + diff * incr);
        self.mean = (mean + incr) as f32;
        self.var = var.max(0.0) as f32;
    }

    pub(crate) fn mean(&self) -> f64 {
        f64::from(self.mean)
    }

    pub(crate) fn sd(&self) -> f64 {
        f64::from(self.var).max(0.0).sqrt()
    }
}

/// The bit a hashed element sets in a 32-bit linear-counting bitmap.
pub(crate) fn bit32(hash: u64) -> u32 {
    // The top bits: the low bits of some hashes (a `u64` id) are not well mixed.
    1u32 << (mix(hash) >> 59)
}

/// A 64-bit finaliser (splitmix64) so that nearby inputs land on unrelated bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Linear counting: the estimated number of distinct elements behind a bitmap of `bits` bits with
/// `ones` set. Exact enough below about 20 elements in 32 bits; saturates near 110.
pub(crate) fn linear_count(ones: u32, bits: u32) -> f64 {
    let m = f64::from(bits);
    let zeros = f64::from(bits.saturating_sub(ones)).max(0.5);
    m * (m / zeros).ln()
}

pub(crate) fn distinct32(map: u32) -> f64 {
    linear_count(map.count_ones(), 32)
}

/// Distinct elements over the last minute and the last ten minutes, in 32 bytes: a 64-slot
/// linear-counting bitmap whose slots each keep the minute they were last set (4 bits: minute mod 15,
/// plus one; zero is empty) instead of ten one-minute 32-bit bitmaps, which took 40 bytes and counted
/// in 32 slots (three distinct networks shared a slot about one time in eleven, and counted as two;
/// in 64 slots, about one time in twenty-two). A slot set again takes the later minute, so the count
/// for the current minute and the ten-minute count are both exact per slot; slots expire once ten
/// minutes old.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ring10 {
    /// Sixteen 4-bit stamps a word. A snapshot from before (`maps`, ten bitmaps) reads as empty: at
    /// most ten minutes of distinct counts are lost across that upgrade.
    #[serde(default)]
    stamps: [u64; 4],
}

/// The low bit of every 4-bit slot of a word.
const NIBBLE_LOW: u64 = 0x1111_1111_1111_1111;

/// The slot of a hashed element in a 64-slot map (the top bits, as [`bit32`]).
fn slot64(hash: u64) -> usize {
    (mix(hash) >> 58) as usize
}

/// The 4-bit stamp of a minute: 1 to 15 (ages up to 9 minutes, the ring's reach, never alias).
fn stamp(minute: u32) -> u64 {
    u64::from(minute % 15) + 1
}

/// One bit (the low bit of the slot) for every slot of `w` that is not zero.
fn occupied(w: u64) -> u64 {
    (w | w >> 1 | w >> 2 | w >> 3) & NIBBLE_LOW
}

/// One bit for every slot of `w` that holds `stamp`.
fn holding(w: u64, stamp: u64) -> u64 {
    !occupied(w ^ (stamp * NIBBLE_LOW)) & NIBBLE_LOW
}

impl Ring10 {
    /// Moves the ring from minute `from` to minute `to`: slots last set ten minutes or more before
    /// `to` empty.
    pub(crate) fn advance(&mut self, from: u32, to: u32) {
        let steps = to.saturating_sub(from);
        if steps >= 10 {
            self.stamps = [0; 4];
            return;
        }
        // The minutes that leave the window: from - 9 up to to - 10.
        for k in 0..steps {
            let gone = stamp((from + 15 - 9 + k) % 15);
            for w in &mut self.stamps {
                *w &= !(holding(*w, gone) * 0xF);
            }
        }
    }

    /// Records `hash` at `minute` (the ring's current minute).
    pub(crate) fn insert(&mut self, minute: u32, hash: u64) {
        let slot = slot64(hash);
        let (word, shift) = (slot / 16, (slot % 16) * 4);
        let w = &mut self.stamps[word];
        *w = (*w & !(0xF << shift)) | (stamp(minute) << shift);
    }

    /// Distinct elements seen in `minute` (the ring's current minute).
    pub(crate) fn minute(&self, minute: u32) -> f64 {
        let s = stamp(minute);
        linear_count(self.stamps.iter().map(|&w| holding(w, s).count_ones()).sum(), 64)
    }

    /// Whether slot `slot` holds an element of the last ten minutes.
    fn holds_slot(&self, slot: usize) -> bool {
        self.stamps[slot / 16] >> ((slot % 16) * 4) & 0xF != 0
    }

    /// Distinct elements over the last ten minutes.
    pub(crate) fn ten(&self) -> f64 {
        linear_count(self.stamps.iter().map(|&w| occupied(w).count_ones()).sum(), 64)
    }
}

/// Returns to an address over the last five to ten minutes, in three bytes: requests that came from an
/// address the ten-minute [`Ring10`] already holds, other than the previous request's. One credential
/// used by several parties at once interleaves their networks (A B A C B ...); a person who moves from
/// one network to the next (home, then the phone's carrier, then the office) returns rarely. Counted
/// in two five-minute halves (saturating at 255 each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Returns {
    /// The previous request's slot in the ring, plus one (0: none yet).
    last: u8,
    halves: [u8; 2],
}

impl Returns {
    fn half(minute: u32) -> usize {
        (minute / 5 % 2) as usize
    }

    /// Moves the window from minute `from` to minute `to`: the halves that begin after `from` empty.
    pub(crate) fn advance(&mut self, from: u32, to: u32) {
        let (a, b) = (from / 5, to / 5);
        if b > a {
            self.halves[Self::half(to)] = 0;
        }
        if b > a + 1 {
            self.halves[Self::half(to) ^ 1] = 0;
        }
    }

    /// Counts a request from the address hashed as `hash` in `minute`, against `ring` before the
    /// request is inserted in it.
    pub(crate) fn see(&mut self, ring: &Ring10, minute: u32, hash: u64) {
        let slot = slot64(hash);
        if usize::from(self.last) != slot + 1 && ring.holds_slot(slot) {
            let h = &mut self.halves[Self::half(minute)];
            *h = h.saturating_add(1);
        }
        self.last = slot as u8 + 1;
    }

    /// Returns over the last five to ten minutes.
    pub(crate) fn count(&self) -> u32 {
        u32::from(self.halves[0]) + u32::from(self.halves[1])
    }
}

/// Ten one-minute counters (saturating `u16`): the sum over the last ten minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Counts10 {
    counts: [u16; 10],
}

impl Counts10 {
    pub(crate) fn advance(&mut self, from: u32, to: u32) {
        let steps = to.saturating_sub(from).min(10);
        for k in 1..=steps {
            self.counts[((from + k) % 10) as usize] = 0;
        }
    }

    pub(crate) fn add(&mut self, minute: u32, n: u16) {
        let c = &mut self.counts[(minute % 10) as usize];
        *c = c.saturating_add(n);
    }

    pub(crate) fn ten(&self) -> f64 {
        self.counts.iter().map(|&c| f64::from(c)).sum()
    }
}

/// Large responses over about the last ten minutes, in one `u16`: five 3-bit counts of two minutes
/// each (saturating at 7, so the sum reaches 35), and in the top bit a flag the owner keeps (for the
/// exfiltration detector: pulling many large responses is this entity's own normal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Bulk(u16);

impl Bulk {
    const FLAG: u16 = 1 << 15;

    fn slot(minute: u32) -> u32 {
        3 * (minute / 2 % 5)
    }

    /// Moves the window from minute `from` to minute `to` (clearing the two-minute spans between).
    pub(crate) fn advance(&mut self, from: u32, to: u32) {
        let steps = (to / 2).saturating_sub(from / 2).min(5);
        for k in 1..=steps {
            self.0 &= !(0b111 << Bulk::slot(from + 2 * k));
        }
    }

    pub(crate) fn add(&mut self, minute: u32) {
        let at = Bulk::slot(minute);
        if (self.0 >> at) & 0b111 < 7 {
            self.0 += 1 << at;
        }
    }

    /// Large responses in the window (the current two minutes and the four spans before).
    pub(crate) fn count(self) -> u32 {
        (0..5).map(|i| u32::from((self.0 >> (3 * i)) & 0b111)).sum()
    }

    pub(crate) fn flag(self) -> bool {
        self.0 & Bulk::FLAG != 0
    }

    pub(crate) fn set_flag(&mut self) {
        self.0 |= Bulk::FLAG;
    }
}

/// How far the bulk tier has learned an entity, in one byte: the active minutes it has watched
/// (saturating at 63), whether the bulk pattern held when the last one closed, and whether one
/// episode of it (a run of minutes it held in) has been seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct BulkLearning(u8);

impl BulkLearning {
    const HELD: u8 = 1 << 6;
    const EPISODE: u8 = 1 << 7;
    const MINUTES: u8 = 0b11_1111;

    pub(crate) fn minutes(self) -> u32 {
        u32::from(self.0 & BulkLearning::MINUTES)
    }

    /// The window holds no large response any more: whatever held at the last close has ended.
    pub(crate) fn window_emptied(&mut self) {
        self.0 &= !BulkLearning::HELD;
    }

    /// Counts a closed minute in which the pattern held or not; true when this minute starts the
    /// second episode or a later one (an episode is a run of minutes the pattern held in).
    pub(crate) fn watch(&mut self, held: bool) -> bool {
        if self.0 & BulkLearning::MINUTES < BulkLearning::MINUTES {
            self.0 += 1;
        }
        let starts = held && self.0 & BulkLearning::HELD == 0;
        let again = starts && self.0 & BulkLearning::EPISODE != 0;
        if starts {
            self.0 |= BulkLearning::EPISODE;
        }
        if held {
            self.0 |= BulkLearning::HELD;
        } else {
            self.0 &= !BulkLearning::HELD;
        }
        again
    }
}

/// Number of buckets of [`LogHistogram`]: bucket 0 holds 0, bucket `i` holds values in
/// `[GROWTH^(i-1), GROWTH^i)`; the last bucket holds everything above.
const BUCKETS: usize = 96;
const GROWTH: f64 = 1.15;

/// A streaming quantile sketch with 15% relative accuracy and a fixed 384 bytes: a log-bucket
/// histogram (the idea of DDSketch, with a fixed range of 0 to about 600,000).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogHistogram {
    counts: Vec<u32>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram { counts: vec![0; BUCKETS], total: 0 }
    }
}

impl LogHistogram {
    fn bucket(x: f64) -> usize {
        if x.is_nan() || x < 1.0 {
            return usize::from(x > 0.0);
        }
        let i = 1 + (x.ln() / GROWTH.ln()).floor() as usize;
        i.min(BUCKETS - 1)
    }

    pub(crate) fn add(&mut self, x: f64) {
        let i = Self::bucket(x);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
        // Halve when a count nears saturation: the sketch ages instead of overflowing.
        if self.counts.get(i).is_some_and(|&c| c >= u32::MAX / 2) {
            self.counts.iter_mut().for_each(|c| *c /= 2);
            self.total = self.counts.iter().map(|&c| u64::from(c)).sum();
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The upper edge of the bucket holding the `q` quantile (0 when empty).
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = (q.clamp(0.0, 1.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return if i == 0 { 0.0 } else { GROWTH.powi(i as i32) };
            }
        }
        GROWTH.powi(BUCKETS as i32 - 1)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_tracks_mean_and_spread() {
        let mut e = Ewma::default();
        for n in 0..2000u32 {
            e.update(if n % 2 == 0 { 8.0 } else { 12.0 }, 0.05, n);
        }
        assert!((e.mean() - 10.0).abs() < 0.3, "{e:?}");
        assert!((e.sd() - 2.0).abs() < 0.3, "{e:?}");
    }

    #[test]
    fn linear_counting_is_close_for_small_sets() {
        for n in [1u64, 3, 5, 8, 12] {
            let map = (0..n).fold(0u32, |m, i| m | bit32(i * 7919 + 13));
            let est = distinct32(map);
            assert!((est - n as f64).abs() <= n as f64 * 0.35 + 1.0, "{n}: {est}");
        }
        assert_eq!(distinct32(0), 0.0);
        assert!(distinct32(u32::MAX) > 100.0);
    }

    #[test]
    fn ring_slides() {
        let mut r = Ring10::default();
        for m in 0..10u32 {
            r.insert(m, u64::from(m));
        }
        assert!(r.ten() >= 8.0, "{r:?}");
        r.advance(9, 30);
        assert_eq!(r.ten(), 0.0);
        let mut c = Counts10::default();
        c.add(3, 5);
        c.add(4, 5);
        assert_eq!(c.ten(), 10.0);
        c.advance(4, 13);
        assert_eq!(c.ten(), 5.0);
    }

    #[test]
    fn ring_counts_each_slot_at_its_last_minute_and_forgets_it_after_ten() {
        let mut r = Ring10::default();
        r.insert(100, 1);
        r.insert(100, 2);
        r.insert(100, 3);
        assert_eq!(r.minute(100), r.ten());
        assert!((r.ten() - 3.0).abs() < 0.1, "{r:?}");
        // Seen again at minute 105: it belongs to minute 105 now, and still once to the ten minutes.
        r.advance(100, 105);
        r.insert(105, 1);
        assert!((r.minute(105) - 1.0).abs() < 0.1, "{r:?}");
        assert!((r.ten() - 3.0).abs() < 0.1, "{r:?}");
        // Minute 110 is ten minutes after 100: 2 and 3 leave, 1 (minute 105) stays until 115.
        r.advance(105, 110);
        assert!((r.ten() - 1.0).abs() < 0.1, "{r:?}");
        assert_eq!(r.minute(110), 0.0);
        r.advance(110, 114);
        assert!((r.ten() - 1.0).abs() < 0.1, "{r:?}");
        r.advance(114, 115);
        assert_eq!(r.ten(), 0.0);
    }

    /// Addresses on distinct slots of the ring.
    fn addresses(n: usize) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        let mut h = 1u64;
        while out.len() < n {
            h += 1;
            if out.iter().all(|&o| slot64(o) != slot64(h)) {
                out.push(h);
            }
        }
        out
    }

    #[test]
    fn returns_count_going_back_not_staying_or_moving_on() {
        let a = addresses(4);
        let mut ring = Ring10::default();
        let mut r = Returns::default();
        let mut minute = 100;
        let step = |ring: &mut Ring10, r: &mut Returns, m: &mut u32, h: u64| {
            r.advance(*m, *m + 1);
            ring.advance(*m, *m + 1);
            *m += 1;
            r.see(ring, *m, h);
            ring.insert(*m, h);
        };
        // Staying on one network, then moving on to the next, and the next: no return.
        for &h in &[a[0], a[0], a[0], a[1], a[1], a[2], a[2], a[2]] {
            step(&mut ring, &mut r, &mut minute, h);
        }
        assert_eq!(r.count(), 0);
        // Back to the first, and then back and forth.
        for &h in &[a[0], a[1], a[0], a[3]] {
            step(&mut ring, &mut r, &mut minute, h);
        }
        assert_eq!(r.count(), 3);
        // Ten quiet minutes forget them (two five-minute halves).
        r.advance(minute, minute + 10);
        assert_eq!(r.count(), 0);
        // Five minutes on: the older half goes, the newer stays. In the engine's order: each request
        // is seen against the ring before it goes in.
        let mut r = Returns::default();
        let mut ring = Ring10::default();
        let at = |ring: &mut Ring10, r: &mut Returns, m: u32, h: u64| {
            r.see(ring, m, h);
            ring.insert(m, h);
        };
        for &h in &[a[0], a[1], a[0], a[1]] {
            at(&mut ring, &mut r, 200, h);
        }
        assert_eq!(r.count(), 2, "A B A B: the second A and B go back");
        r.advance(200, 206);
        ring.advance(200, 206);
        at(&mut ring, &mut r, 206, a[0]);
        assert_eq!(r.count(), 3);
        r.advance(206, 211);
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn ring_from_an_older_snapshot_reads_as_empty() {
        let r: Ring10 = serde_json::from_str(r#"{"maps":[1,2,4,8,0,0,0,0,0,0]}"#).unwrap();
        assert_eq!(r, Ring10::default());
        let mut r = Ring10::default();
        r.insert(7, 42);
        let back: Ring10 = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    proptest::proptest! {
        /// The ring agrees with a plain model (each slot's last minute) over any run of minutes,
        /// gaps of any length included: the 4-bit stamps never alias.
        #[test]
        fn ring_matches_a_model_of_last_minutes(steps in proptest::collection::vec((0u32..14, 0u64..40), 1..300)) {
            let mut r = Ring10::default();
            let mut last: [Option<u32>; 64] = [None; 64];
            let mut now = 1_000u32;
            for (gap, item) in steps {
                r.advance(now, now + gap);
                now += gap;
                let hash = item.wrapping_mul(0x9E37_79B9);
                r.insert(now, hash);
                last[slot64(hash)] = Some(now);
                let ten = last.iter().filter(|m| m.is_some_and(|m| now - m < 10)).count() as u32;
                let one = last.iter().filter(|m| *m == &Some(now)).count() as u32;
                proptest::prop_assert_eq!(r.ten(), linear_count(ten, 64));
                proptest::prop_assert_eq!(r.minute(now), linear_count(one, 64));
            }
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = LogHistogram::default();
        for i in 1..=1000 {
            h.add(f64::from(i));
        }
        let q = h.quantile(0.999);
        assert!((900.0..1200.0).contains(&q), "{q}");
        let q = h.quantile(0.5);
        assert!((430.0..600.0).contains(&q), "{q}");
        h.add(f64::NAN);
        h.add(-3.0);
        assert_eq!(LogHistogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn bulk_counts_ten_minutes_in_two_minute_spans() {
        let mut b = Bulk::default();
        let mut minute = 1000;
        for _ in 0..3 {
            b.add(minute);
        }
        b.advance(minute, minute + 1);
        minute += 1;
        b.add(minute);
        assert_eq!(b.count(), 4);
        // Each span saturates at 7 and never carries into the next.
        for _ in 0..20 {
            b.add(minute);
        }
        assert_eq!(b.count(), 7);
        b.set_flag();
        b.advance(minute, minute + 2);
        minute += 2;
        b.add(minute);
        assert_eq!(b.count(), 8);
        // Ten minutes on, the first span is gone; the flag stays.
        b.advance(minute, minute + 8);
        assert_eq!(b.count(), 1);
        assert!(b.flag());
        b.advance(minute + 8, minute + 1000);
        assert_eq!(b.count(), 0);
        assert!(b.flag());
        // Its snapshot form is a plain number.
        assert_eq!(serde_json::to_string(&b).unwrap(), "32768");
    }

    #[test]
    fn bulk_learning_counts_minutes_and_episodes() {
        let mut l = BulkLearning::default();
        // One long episode is one episode.
        assert!(!l.watch(true));
        assert!(!l.watch(true));
        assert!(!l.watch(false));
        // The pattern again after a break: the second episode.
        assert!(l.watch(true));
        assert!(!l.watch(true));
        assert_eq!(l.minutes(), 5);
        // An emptied window ends an episode as well.
        l.window_emptied();
        assert!(l.watch(true));
        for _ in 0..100 {
            l.watch(false);
        }
        assert_eq!(l.minutes(), 63);
        assert!(l.watch(true), "the minute count never carries into the flags");
        assert_eq!(l.minutes(), 63);
    }
}
