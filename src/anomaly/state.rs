//! The fixed-size state the engine keeps per entity (at most 512 bytes with its share of the index and
//! its label), and the small state per (client, route) pair behind `limits suggest`.

use super::sketch::{Bulk, BulkLearning, Counts10, Ewma, Returns, Ring10, Q16};
use super::EntityKind;
use serde::{Deserialize, Serialize};

/// The longest label kept (a principal id or key id is cut, on a character boundary, beyond it).
pub(crate) const MAX_LABEL: usize = 32;

/// Which entity a state belongs to. `Claimed` is an identity a refused credential named (an API key id),
/// reported as [`EntityKind::ApiKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    #[default]
    Ip,
    Principal,
    ApiKey,
    Claimed,
    /// An IPv6 site (the /56 an address's prefix is in, when that prefix is longer): judged for
    /// credential stuffing spread over its networks only, reported as [`EntityKind::Ip`].
    Site,
}

impl Kind {
    pub(crate) fn public(self) -> EntityKind {
        match self {
            Kind::Ip | Kind::Site => EntityKind::Ip,
            Kind::Principal => EntityKind::Principal,
            Kind::ApiKey | Kind::Claimed => EntityKind::ApiKey,
        }
    }

    pub(crate) fn tag(self) -> u8 {
        self as u8
    }
}

/// One entity's features and baselines. Windows are minutes of record time; `minute` is the one the
/// `cur_*` counters describe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) kind: Kind,
    pub(crate) label: Box<str>,
    /// The entity's key in the table (a snapshot from before it was kept gets it back on restore).
    #[serde(default)]
    pub(crate) key: u64,
    /// A principal's login method ([`super::engine::METHODS`] index plus one; 0 for other entities).
    #[serde(default)]
    pub(crate) method: u8,
    /// True when `label` is the whole id (not cut at [`MAX_LABEL`]).
    #[serde(default)]
    pub(crate) whole: bool,
    /// Peer group (role) for the cold start.
    pub(crate) peer: u16,
    pub(crate) first_s: u32,
    pub(crate) last_ms: u64,
    pub(crate) minute: u32,
    /// Closed windows with activity: the entity's own history.
    pub(crate) active: u32,

    // The current minute.
    pub(crate) req: u32,
    pub(crate) s401: u16,
    pub(crate) s403: u16,
    pub(crate) s404: u16,
    pub(crate) s429: u16,
    /// Routes new to the entity this minute: at most 128 in its life (`known_routes`), so a byte (a
    /// snapshot from when it was a `u16` is read the same way).
    #[serde(deserialize_with = "saturating")]
    pub(crate) new_routes: u8,
    /// Detectors that alerted in this window (bits by `Detector as u16`): their windows do not teach
    /// the baselines.
    pub(crate) alerted: u16,
    pub(crate) bytes_in: u32,
    /// Response bytes in the current minute (saturating at 4 GiB; a snapshot from before it was a
    /// `u32` is read the same way).
    #[serde(deserialize_with = "saturating")]
    pub(crate) bytes_out: u32,
    pub(crate) routes: u32,
    pub(crate) params: u32,
    /// Every route the entity ever used (route index mod 128): the new-route ratio.
    /// Two words, not a `u128`: its 16-byte alignment would pad the state past its budget.
    pub(crate) known_routes: [u64; 2],

    // Sliding ten minutes.
    pub(crate) req10: Counts10,
    pub(crate) err10: Counts10,
    /// IP and site: failing claimed identities; principal/key: client addresses; claimed: failing
    /// addresses.
    pub(crate) ring_a: Ring10,
    /// IP: authenticated principals; principal/key: user agents; site: its networks (by the
    /// engine's prefix) with a failure its stuffing tiers count (a failing claimed identity, or a 401).
    pub(crate) ring_b: Ring10,

    // Baselines (over active minutes).
    pub(crate) rate: Ewma,
    pub(crate) rate10: Ewma,
    /// ln(1 + response bytes per active minute).
    pub(crate) bytes: Ewma,
    /// Upper CUSUM of the standardised response bytes (slow exfiltration).
    pub(crate) cusum: Q16,
    /// ln(1 + requests per active minute), and the upper CUSUM of its standardised value over
    /// consecutive active minutes (a client that keeps going faster than it does).
    #[serde(default)]
    pub(crate) lrate: Ewma,
    #[serde(default)]
    pub(crate) rate_cusum: Q16,
    /// Distinct addresses (ring_a) and agents (ring_b) over ten minutes.
    pub(crate) spread_a: Ewma,
    pub(crate) spread_b: Ewma,
    /// Response bytes over about the last hour (an exponentially decayed sum, time constant 1 h), and
    /// its baseline (sampled at active-minute closes).
    pub(crate) hour_bytes: f32,
    pub(crate) hour_bytes_base: Ewma,
    /// Consecutive active minutes that closed with 3 or more addresses and 2 or more agents in ten
    /// minutes (saturating; a snapshot from when it was a `u16` is read the same way) ...
    #[serde(deserialize_with = "saturating")]
    pub(crate) shared_minutes: u8,
    /// ... and with 3 or more addresses, whatever the agents (a thief who replays the owner's agent).
    #[serde(default)]
    pub(crate) network_minutes: u8,

    /// Requests that went back to an address of the last ten minutes (principal/key): sharing is
    /// judged only when networks interleave.
    #[serde(default)]
    pub(crate) returns: Returns,
    /// An address: minutes since it last served a request without a principal (anonymous, or a
    /// refused credential), saturating (255: long ago, or never). Its fixed volumetric floors are
    /// shared by principals only while it serves none.
    #[serde(default = "never")]
    pub(crate) anon_age: u8,

    // Enumeration: the monotonic run of `id_param`.
    pub(crate) last_id: u64,
    /// (Saturating at 255, far past the 20 that fires; a snapshot from when it was a `u16` is read
    /// the same way.)
    #[serde(deserialize_with = "saturating")]
    pub(crate) run: u8,
    pub(crate) run_dir: i8,
    /// The route the run follows: ids on other routes (a search between two reads) do not break it.
    #[serde(default)]
    pub(crate) run_route: u16,
    /// Minutes since the run last grew: it ends after ten.
    #[serde(default)]
    pub(crate) run_idle: u8,

    // Automation.
    pub(crate) gap: Ewma,
    pub(crate) gaps: u16,
    /// (The four `bot_*` counters are an address's. A site, which counts no automation, keeps in
    /// them the networks that fed it a failure in the current clock hour
    /// ([`State::site_hour_networks`]); a principal or key, the objects refused to it in the current
    /// clock hour ([`State::refused_objects_map`]).)
    pub(crate) bot_req: u16,
    pub(crate) bot_missing: u16,
    pub(crate) bot_order: u16,
    pub(crate) bot_scanner: u16,

    /// The model's mass for the entity's previous active window (1.0: none or typical).
    pub(crate) model_mass: Q16,
    /// ... and for the one before it.
    #[serde(default = "Q16::one")]
    pub(crate) model_mass2: Q16,
    /// ... and for the one before that: four low minutes in a row fire.
    #[serde(default = "Q16::one")]
    pub(crate) model_mass3: Q16,

    // Time of day: active minutes per hour of the day (UTC), and in the current clock hour.
    pub(crate) hours: [u16; 24],
    pub(crate) hour: u32,
    pub(crate) hour_minutes: u8,
    /// Requests in the current clock hour.
    #[serde(default)]
    pub(crate) hour_requests: u16,
    /// 401 answers in the current clock hour (credential stuffing that keeps each minute under its
    /// limit, all day).
    #[serde(default)]
    pub(crate) hour_401: u16,
    /// Consecutive closed minutes with at least 4 requests (light) and 30 (heavy): a client that never
    /// stops.
    pub(crate) streak_light: u16,
    /// (Saturating; a snapshot from when it was a `u16` is read the same way.)
    #[serde(deserialize_with = "saturating")]
    pub(crate) streak_heavy: u8,
    /// The longest light streak this entity has ended without an alert: its own normal.
    #[serde(default)]
    pub(crate) streak_light_max: u16,
    /// Large responses over about the last ten minutes; its flag: pulling many of them is this
    /// entity's own normal (seen while it was still learning). Two bytes, in what was padding.
    #[serde(default)]
    pub(crate) bulk: Bulk,
    /// How far the bulk tier has learned this entity: it judges only after [`WARM`] active minutes
    /// of its own, counted apart from `active` so that an entity restored from a snapshot written
    /// before the tier existed (nothing here) learns its habit too, instead of being judged at once.
    ///
    /// [`WARM`]: super::detectors::WARM
    #[serde(default)]
    pub(crate) bulk_learning: BulkLearning,

    /// Per detector: record time (seconds) of its last alert on this entity.
    pub(crate) last_alert: [u32; 9],
}

fn never() -> u8 {
    u8::MAX
}

/// Active minutes of history that make an entity worth keeping over a newcomer when the table is
/// full (`table::Keep`): ten minutes of requests, which a flood of made-up ids does not have.
const KEEP_MINUTES: u32 = 10;

impl super::table::Keep for State {
    fn keep(&self) -> bool {
        self.active >= KEEP_MINUTES
    }
}

impl super::table::Keep for Pair {}

impl State {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.label.len()
    }
}

/// A counter narrowed since older snapshots were written.
trait Narrowed: TryFrom<u64> {
    const MAX: Self;
}

impl Narrowed for u8 {
    const MAX: u8 = u8::MAX;
}

impl Narrowed for u32 {
    const MAX: u32 = u32::MAX;
}

/// A counter narrowed since older snapshots were written: from JSON (earlier builds' snapshots), a
/// `u64` capped at its maximum; from postcard (this layout's, versioned), the type itself. Postcard
/// writes a `u8` as one raw byte and reads a `u64` as a varint, so reading a `u8` of 128 or more as a
/// `u64` took the next field's byte too, and the whole snapshot failed to decode: one id walk of 128
/// (`run`) or a client busy 128 minutes in a row (`streak_heavy`) cost the engine everything it had
/// learnt at the next restart.
fn saturating<'de, D: serde::Deserializer<'de>, T: Narrowed + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    if !d.is_human_readable() {
        return T::deserialize(d);
    }
    let v = <u64 as Deserialize>::deserialize(d)?;
    Ok(T::try_from(v).unwrap_or(T::MAX))
}

/// Cuts a label to [`MAX_LABEL`] bytes on a character boundary.
pub(crate) fn short_label(s: &str) -> Box<str> {
    let mut end = s.len().min(MAX_LABEL);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// Per (client, route): requests in the current minute and the busiest second in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pair {
    pub(crate) route: u16,
    pub(crate) minute: u32,
    pub(crate) count: u32,
    pub(crate) second: u32,
    pub(crate) sec_count: u32,
    pub(crate) sec_max: u32,
}

impl State {
    /// A site's networks that fed it a failure in the current clock hour: the distinct bits set of 64,
    /// one a network by its keyed hash (three networks set three bits 95 times in a hundred, four set
    /// two or fewer four times in ten thousand; an attacker cannot choose the bits). Kept in the four
    /// `bot_*` counters, which only addresses use: the state has no spare bytes, and a new field would
    /// change the snapshot's layout. (16 bits, a first cut, missed three networks one time in five.)
    pub(crate) fn site_hour_networks(&self) -> u32 {
        debug_assert_eq!(self.kind, Kind::Site);
        self.hour_map().count_ones()
    }

    /// Notes a site's network (its entity key) that fed it a failure in the current clock hour.
    pub(crate) fn site_network_failed(&mut self, network: u64) {
        debug_assert_eq!(self.kind, Kind::Site);
        self.hour_map_insert(network);
    }

    /// A principal's or key's objects (a route's path parameters) refused with 403 or 404 in the
    /// current clock hour: one bit of 64 an object, by its keyed hash mixed with the route (the
    /// distinct objects: [`super::detectors::refused_objects`]). Kept as a site keeps its networks.
    pub(crate) fn refused_objects_map(&self) -> u64 {
        debug_assert!(matches!(self.kind, Kind::Principal | Kind::ApiKey));
        self.hour_map()
    }

    /// Notes an object refused to a principal or key: `object` is its keyed hash.
    pub(crate) fn object_refused(&mut self, object: u64) {
        debug_assert!(matches!(self.kind, Kind::Principal | Kind::ApiKey));
        self.hour_map_insert(object);
    }

    /// Whether the entity keeps a map of the clock hour in the `bot_*` counters.
    pub(crate) fn keeps_hour_map(&self) -> bool {
        matches!(self.kind, Kind::Site | Kind::Principal | Kind::ApiKey)
    }

    /// A new clock hour (or an alarm that restarts it) for an entity that keeps a map of it.
    pub(crate) fn hour_map_clear(&mut self) {
        debug_assert!(self.keeps_hour_map());
        self.set_hour_map(0);
    }

    fn hour_map_insert(&mut self, hash: u64) {
        let bits = self.hour_map() | 1 << (hash >> 58);
        self.set_hour_map(bits);
    }

    fn hour_map(&self) -> u64 {
        [self.bot_req, self.bot_missing, self.bot_order, self.bot_scanner]
            .iter()
            .enumerate()
            .fold(0, |m, (i, &w)| m | u64::from(w) << (16 * i))
    }

    fn set_hour_map(&mut self, bits: u64) {
        let w = |i: u32| (bits >> (16 * i)) as u16;
        (self.bot_req, self.bot_missing, self.bot_order, self.bot_scanner) = (w(0), w(1), w(2), w(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_fits_its_budget() {
        // 512 bytes per entity: the state, its label, its share of the index and of the pair table.
        let size = std::mem::size_of::<State>();
        eprintln!("State: {size} bytes");
        assert!(size + MAX_LABEL <= 440, "State is {size} bytes");
    }

    #[test]
    fn minute_bytes_from_an_older_snapshot_saturate() {
        #[derive(Deserialize)]
        struct W {
            #[serde(deserialize_with = "saturating")]
            v: u32,
        }
        let w: W = serde_json::from_str(r#"{"v": 5000000000}"#).unwrap();
        assert_eq!(w.v, u32::MAX);
        let w: W = serde_json::from_str(r#"{"v": 1234}"#).unwrap();
        assert_eq!(w.v, 1234);
        assert!(serde_json::from_str::<W>(r#"{"v": -1}"#).is_err());
        #[derive(Deserialize)]
        struct B {
            #[serde(deserialize_with = "saturating")]
            v: u8,
        }
        assert_eq!(serde_json::from_str::<B>(r#"{"v": 300}"#).unwrap().v, u8::MAX);
        assert_eq!(serde_json::from_str::<B>(r#"{"v": 7}"#).unwrap().v, 7);
    }

    /// The narrowed counters at 128 and over survive postcard (a raw byte, not a varint).
    #[test]
    fn narrowed_counters_round_trip_through_postcard() {
        let st = State {
            run: 200,
            new_routes: 129,
            streak_heavy: 255,
            shared_minutes: 128,
            bytes_out: u32::MAX,
            label: "x".into(),
            ..State::default()
        };
        let bytes = postcard::to_allocvec(&st).unwrap();
        assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), st);
    }

    /// A site's networks of the hour: kept in the four counters, counted by distinct bits, emptied
    /// by a new hour; three random networks show as three at least nine times in ten.
    #[test]
    fn a_sites_networks_of_the_hour() {
        let mut st = State { kind: Kind::Site, ..State::default() };
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut three = 0;
        for _ in 0..1_000 {
            st.hour_map_clear();
            assert_eq!(st.site_hour_networks(), 0);
            let n = next();
            st.site_network_failed(n);
            st.site_network_failed(n);
            assert_eq!(st.site_hour_networks(), 1, "one network twice");
            st.site_network_failed(next());
            st.site_network_failed(next());
            three += usize::from(st.site_hour_networks() == 3);
        }
        assert!(three >= 900, "{three} of 1,000");
        st.set_hour_map(u64::MAX);
        assert_eq!(
            (st.bot_req, st.bot_missing, st.bot_order, st.bot_scanner),
            (u16::MAX, u16::MAX, u16::MAX, u16::MAX)
        );
        assert_eq!(st.site_hour_networks(), 64);
    }

    #[test]
    fn labels_are_cut_on_char_boundaries() {
        let l = short_label(&"é".repeat(40));
        assert!(l.len() <= MAX_LABEL);
        assert_eq!(&*short_label("alice"), "alice");
    }
}
