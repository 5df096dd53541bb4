//! The detectors: each a documented rule over an entity's features that gives `x`, the observation
//! over its limit (1.0 = at the limit at sensitivity 1). The score is `x / (1 + x)`; a detector fires
//! when `x * sensitivity >= 1`, that is at score `1 / (1 + sensitivity)` (0.5 by default). Limits
//! come from the entity's own baseline once it has [`WARM`] active minutes of history, from its peers
//! (same role) before, and from fixed floors when peers are few. See docs/anomaly.md.

use super::engine::{emit, emit_reached, Ctx, Shared};
use super::hst::DIMS;
use super::sketch::{distinct32, linear_count, LogHistogram, Q16};
use super::state::{Kind, State};
use super::{Alert, Detector};
use serde::{Deserialize, Serialize};

/// Active minutes of its own history before an entity is judged against its own baseline.
pub(crate) const WARM: u32 = 30;
/// Active minutes and hours of history before the time-of-day profile is trusted.
const HOURS_WARM_MINUTES: u32 = 20;
const HOURS_WARM_HOURS: u32 = 36;
/// ... and for sustained heavy use alone (the busy-minutes tier of [`unusual_hours`]), a day.
const HOURS_HEAVY_WARM_HOURS: u32 = 24;
/// Active minutes in an unusual clock hour that fire (a night burst is one or two; a person's rare
/// evening at the desk is often under twelve).
const HOUR_MINUTES: f64 = 12.0;
/// Peer samples (entity-minutes) before a peer baseline is trusted.
const PEERS_WARM: u64 = 200;
/// CUSUM slack (in standard deviations) and decision level for slow exfiltration.
const CUSUM_K: f64 = 2.0;
const CUSUM_H: f64 = 12.0;
/// A minute's standardised value adds at most this much to the CUSUM.
const CUSUM_CAP: f64 = 4.0;
/// The floor of the hourly response-bytes limit.
const HOURLY_FLOOR: f64 = 4.0 * 1024.0 * 1024.0;
/// Minutes with fewer response bytes never add to the CUSUM.
const CUSUM_MIN_BYTES: u32 = 128 * 1024;
/// The model fires when three consecutive windows of an entity fall below this normalised mass (typical
/// windows are near 1).
const MODEL_MASS: f64 = 0.02;

/// What a detector found: its `x` (observed over limit) and the words of the explanation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finding {
    pub(crate) detector: Detector,
    pub(crate) feature: &'static str,
    pub(crate) basis: &'static str,
    pub(crate) baseline: f64,
    pub(crate) observed: f64,
    pub(crate) x: f64,
    pub(crate) window_s: u32,
}

/// A peer group's distributions of per-entity active-minute features (the cold-start baseline).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Peer {
    pub(crate) rate: LogHistogram,
    pub(crate) rate10: LogHistogram,
    /// Response KiB per active minute.
    pub(crate) kib: LogHistogram,
    /// Members the bulk tier has finished learning: without the habit of pulling bulk data, and with
    /// it (exempt). While one of the group is new, the group's habit decides whether the tier judges
    /// it (see [`bulk_downloads`]).
    #[serde(default)]
    pub(crate) bulk_learned: u32,
    #[serde(default)]
    pub(crate) bulk_habits: u32,
}

impl Peer {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.rate.heap_bytes() + self.rate10.heap_bytes() + self.kib.heap_bytes()
    }
}

const OWN: &str = "its own baseline";
const PEERS: &str = "its peers' baseline (99.9th percentile)";
const FIXED: &str = "the fixed limit";

fn larger(a: Finding, b: Finding) -> Finding {
    if b.x > a.x {
        b
    } else {
        a
    }
}

/// Detectors that look at an address as each record arrives.
pub(crate) fn on_ip(st: &mut State, ctx: &Ctx<'_>, sh: &Shared, alerts: &mut Vec<Alert>) {
    let at = ctx.record.at_ms;
    emit(st, stuffing(st), ctx, at, alerts);
    emit(st, enumeration(st), ctx, at, alerts);
    let peer = sh.peers.first();
    emit(st, volumetric(st, peer), ctx, at, alerts);
    emit(st, automation(st), ctx, at, alerts);
}

/// Detectors that look at a principal or key as each record arrives.
pub(crate) fn on_principal(st: &mut State, ctx: &Ctx<'_>, sh: &Shared, alerts: &mut Vec<Alert>) {
    let at = ctx.record.at_ms;
    let peer = sh.peers.get(st.peer as usize);
    emit(st, volumetric(st, peer), ctx, at, alerts);
    let f = token_sharing(st);
    if emit_reached(st, f, ctx, at, alerts) && matches!(f.feature, "minutes_shared" | "minutes_on_three_networks") {
        // Restart the streaks after an alarm: the ten-minute window still holds the same networks.
        st.shared_minutes = 0;
        st.network_minutes = 0;
    }
    let f = exfiltration(st, peer);
    if emit_reached(st, f, ctx, at, alerts) && f.feature == "response_bytes_per_hour" {
        // Restart the hour after an alarm: a lasting drain fires again, its memory does not.
        st.hour_bytes = 0.0;
    }
    let f = enumeration(st);
    if emit_reached(st, f, ctx, at, alerts) && f.feature == "refused_objects_in_hour" {
        // Restart the hour's objects once the tier reaches its limit (alerted, or held back by the
        // cooldown): a probe that goes on fires again once it has refused as many again, not after
        // every cooldown on what it already did.
        st.hour_map_clear();
    }
    emit(st, unusual_hours(st, sh, at), ctx, at, alerts);
}

/// Detectors that look at an IPv6 site (a /56 of longer client prefixes) as each record arrives:
/// credential stuffing spread over its networks ([`site_stuffing`]).
pub(crate) fn on_site(st: &mut State, ctx: &Ctx<'_>, _sh: &Shared, alerts: &mut Vec<Alert>) {
    emit(st, site_stuffing(st), ctx, ctx.record.at_ms, alerts);
}

/// Credential stuffing from one IPv6 site, spread over its networks so that each stays under the
/// address tiers of [`stuffing`] (a /56 holds 256 /64s): the same tiers over the whole site, with
/// a site's limits for failing identities ([`SITE_IDENTITIES`]: its people's stale keys add up), only
/// when the failures came from [`SITE_FAILING_NETWORKS`] of its networks or more, and the 401s a
/// minute only at half the site's requests or more. One network's failures are that network's
/// finding (it is banned, not its site; the engine feeds the site nothing from a network over its own
/// limit); two could be a site's own two hosts with a stale key each.
pub(crate) fn site_stuffing(st: &State) -> Finding {
    let spread = |f: Finding| {
        let nets = match f.window_s {
            // The clock hour's tier: its networks over the hour (or the last ten minutes, which may
            // reach into the hour before). Over the ten minutes only, two /64s at a time, each under
            // its own 600, then two more after a pause, kept a /56 under it (a review's finding).
            3600.. => st.ring_b.ten().max(f64::from(st.site_hour_networks())),
            600.. => st.ring_b.ten(),
            _ => st.ring_b.minute(st.minute),
        };
        let x = if nets >= SITE_FAILING_NETWORKS - 0.5 { f.x } else { 0.0 };
        Finding { basis: SITE, x, ..f }
    };
    let [a, b, c, d] = stuffing_tiers(st, SITE_IDENTITIES, false).map(spread);
    larger(larger(a, b), larger(c, d))
}

const SITE: &str = "the site's fixed limit, over three or more of its networks,";

/// Distinct failing identities from one site in a minute, and in ten minutes, that make it stuffing.
const SITE_IDENTITIES: (f64, f64) = (10.0, 20.0);

/// Networks of a site that failed in a [`site_stuffing`] window before the site is judged.
const SITE_FAILING_NETWORKS: f64 = 3.0;

/// Detectors that look at a claimed (refused) identity.
pub(crate) fn on_claimed(st: &mut State, ctx: &Ctx<'_>, _sh: &Shared, alerts: &mut Vec<Alert>) {
    emit(st, spraying(st), ctx, ctx.record.at_ms, alerts);
}

/// Credential stuffing: distinct identities whose credentials failed (the key ids the API-key method
/// refused) from one address, over a minute (limit 5) or ten minutes (limit 6); or, whatever the
/// gateway can name, 401 answers in a minute: 30 or more, half its requests or more, or any share
/// when they are [`REFUSALS_PER_PRINCIPAL`] or more for each authenticated principal the address
/// served in ten minutes (a login form the upstream checks, on a route without `auth:`, or tokens the
/// gateway refuses: no identity to count); or 401 answers in the clock hour: [`HOUR_FAILED`] or more,
/// on the same conditions (ten times the minute's for each principal), so that keeping every minute
/// under 30 all day does not hide a stuffing run.
pub(crate) fn stuffing(st: &State) -> Finding {
    let [a, b, c, d] = stuffing_tiers(st, (5.0, 6.0), true);
    larger(larger(a, b), larger(c, d))
}

/// [`stuffing`]'s four tiers: failing identities in a minute and in ten (against `limits`), 401s in a
/// minute and in the clock hour; `padded`: the 401s are judged at any share when they are many for
/// the principals the entity served (else at half its requests only).
fn stuffing_tiers(st: &State, limits: (f64, f64), padded: bool) -> [Finding; 4] {
    let (m1, m10) = (st.ring_a.minute(st.minute), st.ring_a.ten());
    let f = |observed: f64, limit: f64, window_s| Finding {
        detector: Detector::CredentialStuffing,
        feature: "distinct_failing_identities",
        basis: FIXED,
        baseline: limit,
        observed,
        x: observed / limit,
        window_s,
    };
    // Half its requests, or whatever their share when they are many for the principals the address
    // served: padding the refusals with anonymous requests (a public page), or with the requests of
    // a few accounts of the attacker's own, hides nothing (to hide 40 refusals a minute takes five
    // accounts, 400 forty-one), and an office whose refusals are few among many people's requests is
    // still spared. `per`: the refusals each principal accounts for in the window.
    let principals = st.ring_b.ten().round().max(1.0);
    let judged = |failed: f64, requests: u32, per: f64| {
        failed * 2.0 >= f64::from(requests) || (padded && failed >= per * principals)
    };
    let refused = |feature, failed: u16, requests, per, limit, window_s| {
        let failed = f64::from(failed);
        Finding {
            feature,
            x: if judged(failed, requests, per) { failed / limit } else { 0.0 },
            ..f(failed, limit, window_s)
        }
    };
    [
        f(m1, limits.0, 60),
        f(m10, limits.1, 600),
        refused("failed_authentications", st.s401, st.req, REFUSALS_PER_PRINCIPAL, FAILED_AUTHENTICATIONS, 60),
        refused(
            "failed_authentications_in_hour",
            st.hour_401,
            u32::from(st.hour_requests),
            REFUSALS_PER_PRINCIPAL * 10.0,
            HOUR_FAILED,
            3600,
        ),
    ]
}

/// 401 answers to one address in the clock hour that make it credential stuffing (at half its
/// requests or more, or many for the principals it served, as the minute's tier): 10 a minute all
/// hour. A client that polls with a dead credential every 10 s (a dashboard whose session expired,
/// an integration with a revoked key) makes 360, under it; 300 would have banned it (a review's
/// finding). An attacker who keeps under the minute's 30 made 1,740 an hour, all day, before this
/// tier, and is now found by the 21st minute of every clock hour it works through. Refusals by an
/// action in force (a challenge) are not counted (`Record::in_force`).
const HOUR_FAILED: f64 = 600.0;

/// 401 answers to one address in a minute that make it credential stuffing when they are half its
/// requests or more: a person who mistypes a password, or a client whose token expired and retries a
/// few times, stays far under it.
const FAILED_AUTHENTICATIONS: f64 = 30.0;

/// 401 answers in a minute, for each authenticated principal an address served in ten minutes, that
/// are judged whatever their share of its requests: a person, or a client whose token expired, gets
/// a few; an attacker who pads a stuffing run with its own accounts' requests needs one account for
/// each ten refusals a minute.
const REFUSALS_PER_PRINCIPAL: f64 = 10.0;

/// Password spraying: distinct addresses (IPv6 by prefix) failing with one claimed identity, over a
/// minute (limit 4) or ten minutes (limit 6).
pub(crate) fn spraying(st: &State) -> Finding {
    let (m1, m10) = (st.ring_a.minute(st.minute), st.ring_a.ten());
    let f = |observed: f64, limit: f64, window_s| Finding {
        detector: Detector::PasswordSpraying,
        feature: "distinct_failing_addresses",
        basis: FIXED,
        baseline: limit,
        observed,
        x: observed / limit,
        window_s,
    };
    larger(f(m1, 4.0, 60), f(m10, 6.0, 600))
}

/// Enumeration: a monotonic run of ids (steps of at most 16) of 8 or more together with 6 or more
/// 403/404 in ten minutes; or, in any order, 30 or more 403/404 that are half the requests or more;
/// or, for a principal or key, [`HOUR_REFUSED_OBJECTS`] distinct objects refused in the clock hour
/// (or a twentieth of the hour's requests when that is more), whatever their share.
pub(crate) fn enumeration(st: &State) -> Finding {
    let errs = st.err10.ten();
    let reqs = st.req10.ten().max(1.0);
    let run = f64::from(st.run);
    let seq = Finding {
        detector: Detector::Enumeration,
        feature: "sequential_id_run",
        basis: FIXED,
        baseline: 8.0,
        observed: run,
        x: (run / 8.0).min(errs / 6.0),
        window_s: 600,
    };
    let probe = Finding {
        detector: Detector::Enumeration,
        feature: "forbidden_or_not_found",
        basis: FIXED,
        baseline: 30.0,
        observed: errs,
        x: (errs / 30.0).min(errs / reqs / 0.5),
        window_s: 600,
    };
    let objects = if matches!(st.kind, Kind::Principal | Kind::ApiKey) { refused_objects(st) } else { 0.0 };
    let limit = HOUR_REFUSED_OBJECTS.max(f64::from(st.hour_requests) * HOUR_REFUSED_SHARE);
    let hourly = Finding {
        detector: Detector::Enumeration,
        feature: "refused_objects_in_hour",
        basis: "the fixed limit (or a twentieth of the hour's requests),",
        baseline: limit,
        observed: objects,
        x: objects / limit,
        window_s: 3600,
    };
    larger(larger(seq, probe), hourly)
}

/// Distinct objects refused to a principal or key in a clock hour that make it enumeration, at any
/// share of its requests up to a twentieth ([`HOUR_REFUSED_SHARE`]). The ten-minute tier asks that
/// refusals be half the requests, so a prober that pads each guess with a request that succeeds (its
/// own orders, a product page) was bounded there, not found: 29 guesses in ten minutes, all day. Now
/// it is found by about the hour's 60th distinct object; straddling the turn of the hour buys it
/// about twice that in an hour. A person or integration refuses a few (a stale link, a product
/// withdrawn: about 1% of requests, 15 in the busiest simulated hours); a client stuck on the same
/// few deleted objects counts them once. (Addresses are not judged on it: a carrier's NAT serves
/// many people's stale links, and a prober with a credential is judged on the credential.)
pub(crate) const HOUR_REFUSED_OBJECTS: f64 = 60.0;

/// The share of the hour's requests over which refused objects are judged when that is more than
/// [`HOUR_REFUSED_OBJECTS`]: a busy integration's key (6,000 requests an hour, 1 to 2% of them for
/// objects since deleted) refuses 60 to 120 in an hour, and enumeration throttles by default; a
/// prober padding each guess with 19 requests that succeed needs 1,200 requests an hour for 60
/// guesses, the volumetric hour's floor. The map counts up to about 300 objects (64 bits), so a
/// credential busier than about 6,000 requests an hour is judged by the ten-minute tiers only.
const HOUR_REFUSED_SHARE: f64 = 0.05;

/// The distinct objects refused in the clock hour, estimated from the bits of
/// [`State::refused_objects_map`] (linear counting: 39 bits of 64 are about 60 objects).
pub(crate) fn refused_objects(st: &State) -> f64 {
    linear_count(st.refused_objects_map().count_ones(), 64)
}

/// Requests a minute that make a minute part of a light or heavy streak.
pub(crate) const LIGHT: u32 = 4;
pub(crate) const HEAVY: u32 = 30;
/// A monotonic run of ids this long on one route (steps of at most 16) is a copy of its objects.
const SEQUENTIAL_READS: f64 = 20.0;
/// Streak lengths (consecutive minutes, the current one included) that fire.
const LIGHT_STREAK_COLD: f64 = 30.0;
const HEAVY_STREAK: f64 = 5.0;

/// The share of its life's minutes at which an entity counts as always on.
const ALWAYS_ON: f64 = 0.5;

/// The rate's fixed floors: requests in a minute, and in ten minutes, per principal ([`sharers`]). A
/// batch job (a few hundred requests in a minute or two) stays under the first; two of them back to
/// back (an integration's daily batch comes now and then right after the one before) under the
/// second, which was 600 until two such pairs, each alerting on the key and its address, made four
/// false alarms over twelve seeds of the long run.
const MINUTE_FLOOR: f64 = 250.0;
const TEN_MINUTE_FLOOR: f64 = 800.0;

/// Requests in the clock hour, per principal ([`sharers`]): two batch jobs and a person's busy hour
/// stay under it; a client that keeps each minute and each ten minutes under their floors and never
/// stops (29 a minute from its first minute: the light streak never judges an entity active in
/// every minute of its life) reaches it in about 41 minutes.
const HOUR_FLOOR: f64 = 1200.0;
/// Active minutes in the clock hour from which [`HOUR_FLOOR`] judges it (one and a half times the
/// floor before).
const HOUR_ACTIVE_MINUTES: u8 = 30;
/// Distinct objects (path parameters) in the minute up to which an entity's own usual hour can raise
/// the floor.
const HOUR_OWN_OBJECTS: f64 = 4.0;

/// At most this many principals share an address's fixed volumetric floors.
const SHARERS: f64 = 4.0;

/// How many principals an address's fixed volumetric floors are for: the distinct authenticated
/// principals it served in the current minute (`ten`: in the last ten minutes), whatever their
/// answers, from 1 to [`SHARERS`]; 1 for every other entity. An office or a cloud NAT serves several
/// clients, whose bursts and batch jobs can land in the same minutes; each principal is still judged
/// against the floors on its own entity, so a party with several credentials behind one address
/// gains no more than it would by spreading them over addresses.
///
/// Only while every request of the window carried a principal: one request without (anonymous, or
/// a refused credential) and the floors are one share's. Otherwise a few cheap accounts, each
/// sending a request a minute, would lend their shares to an anonymous flood from the same address,
/// which no principal's own entity ever sees.
pub(crate) fn sharers(st: &State, ten: bool) -> f64 {
    shares(st, ten, ten)
}

/// [`sharers`], with the principals counted over the ten minutes or the minute, and the requests
/// without one looked for over the ten minutes or the minute.
fn shares(st: &State, principals_ten: bool, anonymous_ten: bool) -> f64 {
    if st.kind != Kind::Ip {
        return 1.0;
    }
    let anonymous = if anonymous_ten { st.anon_age < 10 } else { st.anon_age == 0 };
    if anonymous {
        return 1.0;
    }
    principals(st, principals_ten)
}

/// The distinct authenticated principals an address served in the last ten minutes (`ten`) or the
/// current minute, from 1 to [`SHARERS`].
fn principals(st: &State, ten: bool) -> f64 {
    let n = if ten { st.ring_b.ten() } else { st.ring_b.minute(st.minute) };
    n.round().clamp(1.0, SHARERS)
}

/// Whether the current minute is busy enough to extend a heavy streak: [`HEAVY`] requests per
/// principal the address served over the ten minutes, unless the minute holds a request without
/// one ([`sharers`]). People behind one office address take turns being busy (one for two minutes,
/// another for the next three), and each of them is judged on its own entity; an anonymous flood
/// fills every minute it is in.
pub(crate) fn busy(st: &State) -> bool {
    f64::from(st.req) >= f64::from(HEAVY) * shares(st, true, false)
}

/// The share of the minutes since the entity appeared in which it was active (the current one
/// included).
pub(crate) fn duty(st: &State) -> f64 {
    let first = st.first_s / 60;
    let span = st.minute.saturating_sub(first) + 1;
    (f64::from(st.active) + 1.0) / f64::from(span)
}

/// Volumetric abuse and scraping, six ways:
/// - rate: requests in the current minute over the larger of 250 (above a normal batch job) and the
///   entity's own baseline (mean + 8 sd, 4 x mean) or, while cold, twice its peers' 99.9th percentile;
///   requests in ten minutes over the larger of 800 (two batch jobs back to back) and mean + 6 sd,
///   3 x mean (own) or 1.5 x the peers' 99.9th percentile; an address's floors are per principal it
///   serves ([`sharers`]);
/// - heavy streak: 5 consecutive minutes with 30 requests or more (bursts and batches end sooner),
///   per principal on an address;
/// - light streak: 30 consecutive minutes with 4 requests or more (a person's session ends sooner; a
///   scraper never stops), once warm 1.5 x its own longest streak + 10 when higher; never judged on
///   an entity active in most minutes of its life;
/// - sequential reads: a monotonic run of 20 ids on one route (steps of at most 16), whatever the
///   answers: a copy of the catalogue in id order;
/// - the clock hour: 1,200 requests or more per principal an address served (up to four), 1,800
///   while the entity has been active in under 30 minutes of the hour; or, with a day of the entity's
///   own history and a few objects a minute, six times its usual hour when higher.
pub(crate) fn volumetric(st: &State, peer: Option<&Peer>) -> Finding {
    let r1 = f64::from(st.req);
    let r10 = st.req10.ten();
    let (own1, own10, base1, base10, basis) = if st.active >= WARM {
        let (m, sd) = (st.rate.mean(), st.rate.sd());
        let (m10, sd10) = (st.rate10.mean(), st.rate10.sd());
        ((m + 8.0 * sd).max(4.0 * m), (m10 + 6.0 * sd10).max(3.0 * m10), m, m10, OWN)
    } else if let Some(p) = peer.filter(|p| p.rate.total() >= PEERS_WARM) {
        let (q1, q10) = (p.rate.quantile(0.999), p.rate10.quantile(0.999));
        (2.0 * q1, 1.5 * q10, q1, q10, PEERS)
    } else {
        (0.0, 0.0, MINUTE_FLOOR, TEN_MINUTE_FLOOR, FIXED)
    };
    let f = |feature, observed: f64, limit: f64, baseline, basis, window_s| Finding {
        detector: Detector::Volumetric,
        feature,
        basis,
        baseline,
        observed,
        x: observed / limit,
        window_s,
    };
    let light = f64::from(st.streak_light) + if st.req >= LIGHT { 1.0 } else { 0.0 };
    // The light streak is judged against the entity's own longest ended streak (a working session, a
    // shared office address) once it is warm; a new entity gets a generous fixed limit, so a person's
    // first long session is not a scraper. A scraper never stops: it passes either limit.
    // An entity active in most minutes of its life (a poller, an office address many people share)
    // shows its nature in a long streak, not a change: the light streak is not judged there.
    let always = duty(st) >= ALWAYS_ON;
    let light_limit = if always {
        f64::INFINITY
    } else if st.active >= WARM {
        (1.5 * f64::from(st.streak_light_max) + 10.0).max(LIGHT_STREAK_COLD)
    } else {
        LIGHT_STREAK_COLD
    };
    // A client that reads one route's objects in id order (the catalogue, page after page) is
    // copying it, whatever its pace; enumeration is the same walk that mostly fails.
    let walk = f64::from(st.run);
    let heavy = f64::from(st.streak_heavy) + if busy(st) { 1.0 } else { 0.0 };
    // The clock hour: a fixed floor per principal, and for an entity with a day of its own history
    // six times its usual hour (ten minutes' worth at its active minutes, six times over), so that a
    // client that has always polled fast keeps its pace; but only while it reads a few objects a
    // minute (a poller re-reads its own), or a client born scraping would learn its scraping as its
    // usual hour in a day and go unjudged after it. Not the light streak's exemption: an entity born
    // scraping (active every minute of its life) has no other limit under the rate's floors.
    let day_old = st.minute.saturating_sub(st.first_s / 60) >= 24 * 60;
    let few_objects = super::sketch::distinct32(st.params) <= HOUR_OWN_OBJECTS;
    let own_hour = if st.active >= WARM && day_old && few_objects { 36.0 * st.rate10.mean() } else { 0.0 };
    // One and a half times the floor for a client active in under half the hour: a batch or a burst
    // that fills a few minutes of an hour (1,275 requests by a key whose usual hour is 112, on the
    // simulator) is the rate floors' to judge; 199 a minute in 12 minutes of every hour is not.
    let gate = if st.hour_minutes >= HOUR_ACTIVE_MINUTES { 1.0 } else { 1.5 };
    // An address's principals over ten minutes, up to four, whether or not it also served anonymous
    // requests: an office whose tokens expire now and then is not held to one share an hour (a flood
    // riding four cheap keys' shares is still held by the minute's and ten minutes' floors).
    let hour_shares = if st.kind == Kind::Ip { principals(st, true) } else { 1.0 };
    let hour = f64::from(st.hour_requests);
    let streak = |feature, n: f64, limit: f64| f(feature, n, limit, limit, FIXED, (n as u32).max(1) * 60);
    [
        f("requests", r1, own1.max(MINUTE_FLOOR * sharers(st, false)), base1, basis, 60),
        f("requests", r10, own10.max(TEN_MINUTE_FLOOR * sharers(st, true)), base10, basis, 600),
        streak("busy_minutes_in_a_row", heavy, HEAVY_STREAK),
        streak("active_minutes_in_a_row", light, light_limit),
        f("sequential_ids_read", walk, SEQUENTIAL_READS, SEQUENTIAL_READS, FIXED, 600),
        f(
            "requests_in_clock_hour",
            hour,
            own_hour.max(gate * HOUR_FLOOR * hour_shares),
            if own_hour > 0.0 { own_hour / 6.0 } else { HOUR_FLOOR },
            if own_hour > 0.0 { OWN } else { FIXED },
            3600,
        ),
    ]
    .into_iter()
    .fold(f("requests", 0.0, 1.0, 0.0, basis, 60), larger)
}

/// Sustained rate: CUSUM slack (standard deviations of ln(1 + requests a minute)) and decision level.
/// Each active minute adds at most [`CUSUM_CAP`]; a skipped minute restarts it.
const RATE_CUSUM_K: f64 = 1.5;
const RATE_CUSUM_H: f64 = 15.0;

/// Volumetric, sustained (principals and keys, once warm): the upper CUSUM of the standardised
/// ln(1 + requests) of consecutive active minutes against the entity's own baseline (sd at least
/// 0.25), with slack 1.5 sd, reaching 15. A burst or a batch (a few minutes) never fires it; a client
/// that keeps going at several times its usual pace (a poller's key scraping) fires in 6 minutes or
/// more. It restarts
/// after an alarm and whenever a minute passes without a request.
fn rate_cusum(st: &State) -> Finding {
    Finding {
        detector: Detector::Volumetric,
        feature: "requests_sustained_cusum",
        basis: OWN,
        baseline: RATE_CUSUM_H,
        observed: st.rate_cusum.get(),
        x: st.rate_cusum.get() / RATE_CUSUM_H,
        window_s: 600,
    }
}

/// Token sharing: distinct addresses, or user agents, using one principal in ten minutes: limit 5, or
/// once warm its own usual count (mean + 4 sd + 2) when higher; or both together over 70% of the sum
/// of their limits (7 by default); or 3 addresses and 2 agents (or 2 and 3) at once for 4 active minutes in a row;
/// or, for an entity usually on under two networks, 3 addresses whatever the agents for 10 active
/// minutes in a row (thieves who replay the owner's agent).
///
/// Every finding on addresses, and the two streaks, ask also that the networks be used at once
/// ([`interleaved`]): requests going back and forth between networks, or three networks in one
/// minute, where a person who moves from home to the phone's carrier to the office goes through them
/// one after the other. Agents alone, or addresses with three agents or more, are judged without it.
/// A streak grows in minutes whose networks interleave, and a minute that holds the networks without
/// interleaving them takes one off instead of ending it (three thieves at a request every 30 s
/// between them go back and forth less often than the window asks, now and then; a person on the
/// move whose phone's new address lands on an old one's slot of the sketch seems to go back once).
pub(crate) fn token_sharing(st: &State) -> Finding {
    let warm = st.active >= WARM;
    let lim = |e: &super::sketch::Ewma| if warm { (e.mean() + 4.0 * e.sd() + 2.0).max(5.0) } else { 5.0 };
    let (la, lb) = (lim(&st.spread_a), lim(&st.spread_b));
    let basis = if warm { OWN } else { FIXED };
    let (a, b) = (st.ring_a.ten(), st.ring_b.ten());
    let mixed = interleaved(st);
    let f = |feature, observed: f64, limit: f64| Finding {
        detector: Detector::TokenSharing,
        feature,
        basis,
        baseline: limit,
        observed,
        x: observed / limit,
        window_s: 600,
    };
    // Three over the addresses limit (8 while cold) is more than a person moving reaches in ten
    // minutes (about five): one party that rotates addresses and never goes back is judged without
    // interleaving.
    let on_addresses = |f: Finding| if mixed || a >= la + 3.0 { f } else { Finding { x: 0.0, ..f } };
    // Three agents or more are several parties already, whether or not their networks interleave.
    let both = f("distinct_addresses_and_agents", a + b, (la + lb) * 0.7);
    let both = if b >= 3.0 { both } else { on_addresses(both) };
    // Only while the ten minutes still hold the networks: a streak from an attack that ended hours
    // ago says nothing about the request at hand.
    let now = if shared_now(st) { f64::from(st.shared_minutes) } else { 0.0 };
    let lasting = Finding {
        feature: "minutes_shared",
        basis: FIXED,
        baseline: SHARED_MINUTES,
        observed: now,
        x: now / SHARED_MINUTES,
        ..both
    };
    // The same with addresses alone, for an entity whose own ten minutes hold under two networks: a
    // thief who replays the owner's user agent (or thieves on one browser) shows no second agent.
    let armed = warm && st.spread_a.mean() < 2.0 && a >= 3.0;
    let networks = if armed { f64::from(st.network_minutes) } else { 0.0 };
    let on_networks = Finding {
        feature: "minutes_on_three_networks",
        basis: "the fixed limit, for an entity on under two networks in its usual ten minutes,",
        baseline: NETWORK_MINUTES,
        observed: networks,
        x: networks / NETWORK_MINUTES,
        ..both
    };
    // Three networks and three agents used at once, on an entity known to be one party: three parties
    // from their first minutes, where the streak waits for four minutes in a row. (Not on a new
    // entity: a key that serves three machines would alarm from its first minutes, and an alarming
    // entity does not learn that this is its normal.)
    let one_party = warm && st.spread_a.mean() < 2.0 && st.spread_b.mean() < 2.0;
    // (Both counted first: the score scales with the sensitivity, and two devices must never reach
    // it, whatever the sensitivity.)
    let parties = if one_party && mixed && a >= PARTIES && b >= PARTIES { a.min(b) } else { 0.0 };
    let at_once = Finding {
        feature: "parties_at_once",
        basis: "the fixed limit, for an entity whose ten minutes hold under two networks and agents,",
        baseline: PARTIES,
        observed: parties,
        x: parties / PARTIES,
        ..both
    };
    [
        on_addresses(f("distinct_addresses", a, la)),
        f("distinct_user_agents", b, lb),
        both,
        lasting,
        on_networks,
        at_once,
    ]
    .into_iter()
    .reduce(larger)
    .unwrap_or(both)
}

/// Active minutes that closed with 3 or more addresses and 2 or more user agents (or 2 and 3) over ten
/// minutes, interleaved: a few thieves at once, minute after minute. A minute that holds them without
/// interleaving takes one off (see [`shared_streak`]). It counts only while the ten minutes still hold
/// them, and restarts after an alarm.
const SHARED_MINUTES: f64 = 4.0;

/// Addresses and agents, each, in ten minutes and used at once, on an entity usually one party.
const PARTIES: f64 = 3.0;

/// Active minutes that closed with 3 or more addresses over ten minutes, interleaved, whatever the
/// agents, for an entity that usually holds under two: thieves who all send one agent.
const NETWORK_MINUTES: f64 = 10.0;

/// Requests that went back to an address of the last ten minutes (other than the previous request's),
/// over the last five to ten minutes, from which a principal's networks count as used at once ...
const RETURNS: u32 = 3;
/// ... or distinct addresses in one minute.
const MINUTE_NETWORKS: f64 = 3.0;

/// Whether the entity's networks are used at once: [`RETURNS`] requests or more went back to an
/// address the ten minutes already held, other than the one just before, or the current minute holds
/// [`MINUTE_NETWORKS`] addresses. Several parties on one credential go back and forth within minutes
/// (many of them fill a minute with their networks); one person changing networks goes back rarely
/// (home, the phone, home again is one return) and is on one network a minute, two when moving.
fn interleaved(st: &State) -> bool {
    st.returns.count() >= RETURNS || st.ring_a.minute(st.minute) >= MINUTE_NETWORKS
}

/// Updates the shared-minutes streaks when an active minute closes (only minutes whose networks
/// interleave add to them).
fn shared_streak(st: &mut State) {
    let mixed = interleaved(st);
    let step = |held: bool, mixed: bool, n: u8| match (held, mixed) {
        (false, _) => 0,
        (true, true) => n.saturating_add(1),
        (true, false) => n.saturating_sub(1),
    };
    // Three networks and three agents need no interleaving: parties who take turns on a stolen
    // credential, each on its own network and device, are not one person moving.
    let many = st.ring_a.ten() >= 3.0 && st.ring_b.ten() >= 3.0;
    st.shared_minutes = step(shared_now(st), mixed || many, st.shared_minutes);
    st.network_minutes = step(st.ring_a.ten() >= 3.0, mixed, st.network_minutes);
}

/// Three addresses or more and two user agents or more in the last ten minutes, or two and three (a
/// person has one agent a device; and two networks of three can share a slot of the sketch, about one
/// time in twenty-two).
fn shared_now(st: &State) -> bool {
    let (a, b) = (st.ring_a.ten(), st.ring_b.ten());
    (a >= 3.0 && b >= 2.0) || (a >= 2.0 && b >= 3.0)
}

/// Exfiltration, sudden: response bytes in the current minute at least 6 sd (in log space), twenty
/// times above the entity's own baseline, and 8 MiB or more; while cold, over four times its peers'
/// 99.9th percentile.
pub(crate) fn exfiltration(st: &State, peer: Option<&Peer>) -> Finding {
    let bytes = f64::from(st.bytes_out);
    let mut f = Finding {
        detector: Detector::Exfiltration,
        feature: "response_bytes",
        basis: OWN,
        baseline: 0.0,
        observed: bytes,
        x: 0.0,
        window_s: 60,
    };
    let hourly = hourly_bytes(st);
    if st.active >= WARM {
        let y = bytes.ln_1p();
        let (m, sd) = (st.bytes.mean(), st.bytes.sd().max(0.25));
        f.baseline = m.exp_m1();
        f.x = ((y - m) / sd / 6.0).min((y - m) / 20f64.ln()).min(bytes / f64::from(8u32 << 20));
    } else if let Some(p) = peer.filter(|p| p.kib.total() >= PEERS_WARM) {
        let q = p.kib.quantile(0.999).max(128.0);
        f.basis = PEERS;
        f.baseline = q * 1024.0;
        f.x = bytes / 1024.0 / (4.0 * q);
    }
    larger(larger(f, hourly), bulk_downloads(st, peer))
}

/// A response this large is a bulk download (an export, a dump, a page of thousands of rows); the
/// pages, objects and searches of an application are a few KiB.
pub(crate) const LARGE_RESPONSE: u32 = 100 * 1024;
/// Large responses over about ten minutes that fire ...
const BULK_COUNT: f64 = 4.0;
/// ... when they are at least this share of the entity's requests in the same ten minutes.
const BULK_SHARE: f64 = 0.5;

/// The large responses in the window and their share of the entity's requests in it.
fn bulk_now(st: &State) -> (f64, f64) {
    let n = f64::from(st.bulk.count());
    (n, n / st.req10.ten().max(1.0))
}

/// Called when an active minute of a principal or key closes, while the bulk tier is still learning
/// the entity (its first [`WARM`] active minutes). When the bulk pattern comes back after a break,
/// a second episode, pulling bulk data is a habit of the entity (an export job, a reporting
/// integration) and the bulk tier never fires for it; its hourly and CUSUM tiers still watch it. One
/// drain on a new credential, however long, is one episode and buys no exemption.
fn learn_bulk(st: &mut State, peer: Option<&mut Peer>) {
    if st.bulk_learning.minutes() >= WARM {
        return;
    }
    let (n, share) = bulk_now(st);
    let habit = st.bulk_learning.watch(n >= BULK_COUNT && share >= BULK_SHARE);
    // The group counts each member once: when it shows the habit, or when it is learned without it.
    let counter = if st.bulk.flag() {
        None
    } else if habit {
        st.bulk.set_flag();
        peer.map(|p| &mut p.bulk_habits)
    } else if st.bulk_learning.minutes() >= WARM {
        peer.map(|p| &mut p.bulk_learned)
    } else {
        None
    };
    if let Some(c) = counter {
        *c = c.saturating_add(1);
    }
}

/// Members of a peer group the bulk tier must have learned before the group's habit speaks for a
/// new member ...
const PEERS_BULK_WARM: u32 = 20;
/// ... and the share of them with the habit under which a new member is judged while it is learned.
const PEERS_BULK_HABIT: f64 = 0.02;

/// Whether the bulk tier judges a member of its peer group: learned (its first [`WARM`] active
/// minutes watched) without the habit, or new in a group that has shown it pulls bulk data rarely
/// (a credential stolen before its owner used it much is judged from its first download).
fn bulk_judged(st: &State, peer: Option<&Peer>) -> bool {
    if st.bulk.flag() {
        return false;
    }
    if st.bulk_learning.minutes() >= WARM {
        return true;
    }
    // Only an entity new to the engine, not one new to the tier: an entity restored from a snapshot
    // written before the tier existed (an export job among them) is learned first.
    if st.active >= WARM {
        return false;
    }
    peer.is_some_and(|p| {
        let learned = p.bulk_learned + p.bulk_habits;
        learned >= PEERS_BULK_WARM && f64::from(p.bulk_habits) < PEERS_BULK_HABIT * f64::from(learned)
    })
}

/// Exfiltration, bulk: four or more responses of 100 KiB or more over about ten minutes (five spans
/// of two minutes), making half or more of the entity's requests in those minutes: a client that
/// does little but pull bulk data. A person's busy session holds a few exports among many pages; an
/// export job shows the pattern again and again while the tier learns it (its first 30 active
/// minutes), which exempts it (see [`learn_bulk`]). While it learns, it is judged if its peers
/// rarely pull bulk data: a new export job in such a group alerts on its first run, once. Judged on
/// every response, so a fast drain is found within seconds of its fourth download.
fn bulk_downloads(st: &State, peer: Option<&Peer>) -> Finding {
    let (n, share) = bulk_now(st);
    let own = bulk_judged(st, peer);
    let f = Finding {
        detector: Detector::Exfiltration,
        feature: "large_responses",
        basis: "the fixed limit, when they are half its requests or more,",
        baseline: BULK_COUNT,
        observed: n,
        x: if own { (n / BULK_COUNT).min(share / BULK_SHARE) } else { 0.0 },
        window_s: 600,
    };
    // However many other requests come with them: a drain on a busy integration's credential is a
    // small share of that client's own traffic.
    let alone = Finding {
        basis: "the fixed limit, whatever its other requests,",
        baseline: BULK_ALONE,
        x: if own { n / BULK_ALONE } else { 0.0 },
        ..f
    };
    larger(f, alone)
}

/// Large responses over about ten minutes that fire whatever their share of the entity's requests:
/// well above what a busy integration of the simulated population pulls in ten minutes (6 at most
/// for one that makes 80 requests every ten minutes, 1.5% of them exports).
const BULK_ALONE: f64 = 16.0;

/// Under this, an hour is learned at the full rate however far above the usual one it is ...
const HOURLY_CLIMB: f64 = 1024.0 * 1024.0;
/// ... and so is every hour of an entity's first three (its decayed hour is 95% settled then).
const HOURLY_SETTLED_S: u32 = 3 * 3600;

/// Exfiltration, sustained: response bytes over about the last hour (decayed sum) over the larger of
/// 4 MiB and the entity's own usual hour (mean + 6 sd, 6 x mean); at the 4 MiB floor only while the
/// entity is draining, or from twice the floor (see [`hourly_bytes`]). The sum restarts after an
/// alarm; the baseline learns hours between half the limit and the limit four times slower, a
/// settled entity's climbing hour slowly and as twice its usual one, and none above the limit.
fn hourly_limit(st: &State) -> (f64, f64, f64) {
    let (m, sd) = (st.hour_bytes_base.mean(), st.hour_bytes_base.sd());
    let own = if st.active >= WARM { (m + 6.0 * sd).max(6.0 * m) } else { 0.0 };
    (own.max(HOURLY_FLOOR), own, m)
}

/// At the fixed limit, the hourly tier judges only while the entity is draining: large responses at
/// least this share of its requests over the last ten minutes, ...
const HOURLY_SHARE: f64 = 0.1;
/// ... or responses of this many bytes on average in the current minute (a drain in pieces under
/// [`LARGE_RESPONSE`]). An integration's batch (a few hundred requests in two minutes, a few exports
/// among them) that takes a quiet client's hour past 4 MiB is mostly small pages: 13 of the 17 false
/// alarms of this tier over twelve seeds went with this condition (16 with the share alone; this
/// branch closes the way around it), and no detection came later.
const HOURLY_MEAN_BYTES: u32 = 64 * 1024;
/// From this many times the floor the hour is judged whatever its responses: small pieces, or large
/// ones padded with small requests, keep the draining conditions false but pay twice the floor.
const HOURLY_CEILING: f64 = 2.0;

fn hourly_bytes(st: &State) -> Finding {
    let (limit, own, m) = hourly_limit(st);
    let fixed = own <= HOURLY_FLOOR;
    let draining = !fixed
        || bulk_now(st).1 >= HOURLY_SHARE
        || st.bytes_out / st.req.max(1) >= HOURLY_MEAN_BYTES
        || f64::from(st.hour_bytes) >= HOURLY_CEILING * HOURLY_FLOOR;
    Finding {
        detector: Detector::Exfiltration,
        feature: "response_bytes_per_hour",
        basis: if fixed {
            "the fixed limit, while it is draining (large or many bytes a response) or at twice it,"
        } else {
            OWN
        },
        baseline: if fixed { HOURLY_FLOOR } else { m },
        observed: f64::from(st.hour_bytes),
        x: if draining { f64::from(st.hour_bytes) / limit } else { 0.0 },
        window_s: 3600,
    }
}

/// Exfiltration, slow: the upper CUSUM of standardised ln(response bytes) per active minute (each
/// minute adding at most 4, minutes under 128 KiB nothing), with slack 2 sd, reaching 12: one heavy
/// minute never fires it; minutes 4 sd above the baseline fire in 6, 3 sd in 12. It restarts after
/// an alarm.
fn exfiltration_cusum(st: &State) -> Finding {
    Finding {
        detector: Detector::Exfiltration,
        feature: "response_bytes_cusum",
        basis: OWN,
        baseline: CUSUM_H,
        observed: st.cusum.get(),
        x: st.cusum.get() / CUSUM_H,
        window_s: 600,
    }
}

/// Entities whose activity is at least this concentrated around one hour of the day have a daily
/// rhythm (1: every active minute in one hour; 0: spread evenly over the day).
const RHYTHM: f64 = 0.3;
/// People's active minutes in the population's day before it is trusted.
const DAY_WARM: u64 = 2_000;
/// The share of the population's activity per hour under which an hour of its day is night.
const NIGHT: f64 = 0.005;
/// Deep night: under this share, 12 active minutes suffice; between it and `NIGHT` the minutes needed
/// grow linearly to 24 (an hour people use a little is weaker evidence than one nobody uses).
const DEEP_NIGHT: f64 = 0.0015;

/// Active minutes in an hour the entity never uses that make it unusual, when the population uses
/// that hour of its day (relative to its centre) `share` of the time: 12 at deep night, growing
/// linearly to 24 at the edge of night, and `None` (not night: heavy use only) from `NIGHT` on.
pub(crate) fn night_minutes(share: f64) -> Option<f64> {
    (share < NIGHT).then(|| HOUR_MINUTES * (1.0 + ((share - DEEP_NIGHT) / (NIGHT - DEEP_NIGHT)).clamp(0.0, 1.0)))
}

/// Active minutes added, in an hour within two of one the entity has used, to what the hour needs.
const EDGE_MINUTES: f64 = 6.0;
/// Active minutes that make an hour unusual when the population is often awake at it, but the entity
/// has used no hour within three of it.
const FAR_MINUTES: f64 = 25.0;

/// Hours from `h` to the nearest hour of the day holding activity in `profile` (either way round the
/// clock; 24 when none does).
pub(crate) fn hours_from_used(profile: &[u16; 24], h: usize) -> usize {
    (0..=12).find(|&k| profile[(h + k) % 24] > 0 || profile[(h + 24 - k) % 24] > 0).unwrap_or(24)
}

/// The hour of day (UTC, fractional) at the centre of an entity's activity and how concentrated its
/// activity is around it (the length of the mean resultant vector of its hours on the clock face).
pub(crate) fn day_centre(hours: &[u16; 24]) -> (f64, f64) {
    use std::f64::consts::TAU;
    let (mut s, mut c, mut n) = (0.0, 0.0, 0.0);
    for (h, &k) in hours.iter().enumerate() {
        let a = TAU * h as f64 / 24.0;
        let k = f64::from(k);
        s += k * a.sin();
        c += k * a.cos();
        n += k;
    }
    if n <= 0.0 {
        return (0.0, 0.0);
    }
    (s.atan2(c).rem_euclid(TAU) * 24.0 / TAU, s.hypot(c) / n)
}

/// Hour `h` (UTC) relative to an entity's centre of day, as a bin of the population's day.
fn day_bin(h: usize, centre: f64) -> usize {
    ((h as f64 - centre).round() as i64).rem_euclid(24) as usize
}

/// The population's share of activity per hour around bin `b` (itself and its neighbours).
fn day_share(day: &[u64; 24], b: usize) -> Option<f64> {
    let total: u64 = day.iter().sum();
    (total >= DAY_WARM).then(|| (day[(b + 23) % 24] + day[b] + day[(b + 1) % 24]) as f64 / 3.0 / total as f64)
}

/// Unusual hours: activity in a clock hour the entity never uses (one alert an hour). Its
/// time-of-day profile before this hour (after 20 active minutes over 36 hours or more: a day and a
/// half shows a morning and an evening) must have under 0.3% of its activity in this hour of the day
/// and the hours beside it. Then it fires on
/// - 12 active minutes in the hour, when the entity has a daily rhythm (concentration 0.3 or more)
///   and this hour, relative to the centre of its day, is deep night for the population: people are
///   active in it (with the hours beside it) under 0.15% of their time. Towards the edge of night
///   (0.5%) the minutes needed grow to 24: a late evening or an early start that an entity's short
///   history has not shown yet is the commonest false alarm, and an hour nobody uses is stronger
///   evidence than one a few people do. From 0.5% on it is not night;
/// - 24 active minutes, when the entity has no daily rhythm to place the hour with (two shifts, say);
/// - 200 requests in the hour, whatever the population does at that hour (and before its day is
///   learned): more than a person's long working session, at an hour this entity has never used;
/// - 8 minutes in a row with 4 requests or more each, in the hour, whatever the population does:
///   sustained use, found in about eight minutes where the other tiers take twelve or more. This tier
///   alone judges from 24 hours of history on.
pub(crate) fn unusual_hours(st: &State, sh: &Shared, at_ms: u64) -> Finding {
    let mut f = Finding {
        detector: Detector::UnusualHours,
        feature: "active_minutes_in_hour",
        basis: "its own time-of-day profile, at its night",
        baseline: 0.0,
        observed: f64::from(st.hour_minutes),
        x: 0.0,
        // The clock hour so far, in whole minutes: what `hour_minutes` and `hour_requests` count.
        window_s: ((at_ms / 1000 % 3600) / 60 + 1) as u32 * 60,
    };
    let span_h = ((at_ms / 1000) as u32).saturating_sub(st.first_s) / 3600;
    if st.active < HOURS_WARM_MINUTES || span_h < HOURS_HEAVY_WARM_HOURS {
        return f;
    }
    // Under a day and a half of history, only sustained heavy use is judged (the busy-minutes tier):
    // a day shows where the entity's day is, not yet every hour it uses.
    let seasoned = span_h >= HOURS_WARM_HOURS;
    // Once per clock hour (the window): a session that goes on is the same finding.
    if st.last_alert[Detector::UnusualHours as usize] / 3600 == st.hour {
        return f;
    }
    let total: f64 = st.hours.iter().map(|&h| f64::from(h)).sum();
    let h = (st.hour % 24) as usize;
    // The profile before this clock hour (its own closed minutes are already in `hours[h]`), with
    // the hours beside it: a day that starts or ends an hour off is not unusual.
    let before = st.hours[h].saturating_sub(u16::from(st.hour_minutes));
    let near = f64::from(before) + f64::from(st.hours[(h + 23) % 24]) + f64::from(st.hours[(h + 1) % 24]);
    if total <= 0.0 || near / total >= 0.003 {
        return f;
    }
    let mut profile = st.hours;
    profile[h] = before;
    let (centre, rhythm) = day_centre(&profile);
    f.baseline = f64::from(before) / f64::from((span_h / 24).max(1));
    // Active minutes, not requests: a burst at night is one or two minutes; a session is many. At an
    // hour the population calls night, 12; without a daily rhythm to place the hour, twice as many.
    // (A population whose day is not learned yet cannot call an hour night: requests only.)
    let share = (rhythm >= RHYTHM).then(|| day_share(&sh.day, day_bin(h, centre)));
    let minutes = match share {
        Some(Some(d)) => night_minutes(d),
        Some(None) => None,
        None => Some(2.0 * HOUR_MINUTES),
    };
    // Where the hour lies against the entity's own day: within two hours of an hour it has used, a
    // day that ran late or started early (the commonest false alarm) needs `EDGE_MINUTES` more; three
    // or more hours from any, an hour the population is awake at is judged too, at `FAR_MINUTES`
    // (a person whose day sits early or late against the population's is still asleep then).
    let away = hours_from_used(&profile, h);
    let minutes = match minutes {
        Some(m) if away <= 2 => Some(m + EDGE_MINUTES),
        None if matches!(share, Some(Some(_))) && away >= 3 => Some(FAR_MINUTES),
        m => m,
    };
    let by_minutes = minutes.filter(|_| seasoned).map_or(0.0, |m| f64::from(st.hour_minutes) / m);
    // Otherwise (an hour the population is often awake at), only heavy use: more requests than a
    // person's longest session, at an hour the entity never uses.
    let by_requests = if seasoned { f64::from(st.hour_requests) / HOUR_REQUESTS } else { 0.0 };
    // Or sustained use: minutes in a row in this hour, each with 4 requests or more (the current one
    // counts once it has them).
    let busy = (u32::from(st.streak_light) + u32::from(st.req >= LIGHT)).min(u32::from(st.hour_minutes));
    let by_streak = f64::from(busy) / HOUR_BUSY_MINUTES;
    let never = "its own time-of-day profile, at an hour it never uses";
    f.x = by_minutes;
    if minutes.is_none_or(|m| m >= 2.0 * HOUR_MINUTES) {
        f.basis = never;
    }
    let requests = Finding {
        feature: "requests_in_hour",
        basis: never,
        observed: f64::from(st.hour_requests),
        x: by_requests,
        ..f
    };
    let streak = Finding {
        feature: "busy_minutes_in_a_row",
        basis: never,
        observed: f64::from(busy),
        x: by_streak,
        window_s: busy * 60,
        ..f
    };
    larger(larger(f, requests), streak)
}

/// Minutes in a row, each with 4 requests or more, in a clock hour the entity never uses: a session
/// that keeps going. A person's long working session averages two or three requests a minute, and a
/// burst (a page loading many items) fills one or two minutes.
const HOUR_BUSY_MINUTES: f64 = 8.0;

/// Requests in a clock hour the entity never uses that are unusual even when the population is
/// often awake at that hour: more than a person's longest working session.
const HOUR_REQUESTS: f64 = 200.0;

/// The bot score of an address and its main reason: scanner signature (0.97), the share of requests
/// claiming a browser without the headers browsers always send (x 0.8), the share whose header order
/// is not the usual one for their user agent (x 0.8), and clockwork timing (0.4: 20 gaps or more,
/// mean under 30 s, coefficient of variation under 0.15). Combined as independent evidence; needs 10
/// requests unless a scanner is named.
pub(crate) fn bot_score(st: &State) -> (f64, &'static str, f64) {
    if st.bot_req < 10 && st.bot_scanner == 0 {
        return (0.0, "requests", f64::from(st.bot_req));
    }
    let n = f64::from(st.bot_req.max(1));
    let cv = if st.gap.mean() > 0.0 { st.gap.sd() / st.gap.mean() } else { 1.0 };
    let regular = st.gaps >= 20 && st.gap.mean() < 30_000.0 && cv < 0.15;
    let parts = [
        ("scanner_signature", if st.bot_scanner > 0 { 0.97 } else { 0.0 }, f64::from(st.bot_scanner)),
        ("missing_browser_headers", 0.8 * f64::from(st.bot_missing) / n, f64::from(st.bot_missing) / n),
        ("header_order_mismatch", 0.8 * f64::from(st.bot_order) / n, f64::from(st.bot_order) / n),
        ("timing_regularity", if regular { 0.4 } else { 0.0 }, cv),
    ];
    let keep = parts.iter().fold(1.0, |k, (_, p, _)| k * (1.0 - p));
    let main = parts.iter().fold(parts[0], |a, b| if b.1 > a.1 { *b } else { a });
    ((1.0 - keep).clamp(0.0, 1.0), main.0, main.2)
}

/// Automation: the bot score, fired at 0.5 (sensitivity 1).
pub(crate) fn automation(st: &State) -> Finding {
    let (b, feature, observed) = bot_score(st);
    Finding {
        detector: Detector::Automation,
        feature,
        basis: "what browsers and people do",
        baseline: 0.0,
        observed,
        x: if b >= 1.0 { 1e6 } else { b / (1.0 - b) },
        window_s: 600,
    }
}

/// The model's point for an entity-minute: each feature scaled into [0, 1].
pub(crate) fn features(st: &State) -> [f64; DIMS] {
    let n = f64::from(st.req.max(1));
    let unit = |x: f64| x.clamp(0.0, 1.0);
    [
        unit(n.ln_1p() / 1000f64.ln_1p()),
        unit(f64::from(st.s401) / n),
        unit(f64::from(st.s403 + st.s404) / n),
        unit(f64::from(st.s429) / n),
        unit(distinct32(st.routes) / 32.0),
        unit(distinct32(st.params) / 32.0),
        unit((f64::from(st.bytes_out) / n).ln_1p() / 1e7f64.ln_1p()),
        unit(f64::from(st.new_routes) / n),
    ]
}

/// Runs when an entity's active minute closes: the model, slow exfiltration, then the baselines learn
/// the minute unless a detector fired on it.
pub(crate) fn close_window(st: &mut State, ctx: &Ctx<'_>, sh: &mut Shared, alerts: &mut Vec<Alert>) {
    let at = ctx.record.at_ms.max(st.last_ms);
    let tracked = matches!(st.kind, Kind::Ip | Kind::Principal | Kind::ApiKey);
    let person = matches!(st.kind, Kind::Principal | Kind::ApiKey);
    if tracked && st.req >= 5 {
        let x = features(st);
        let forest = if st.kind == Kind::Ip { &mut sh.ip_model } else { &mut sh.id_model };
        if forest.ready() {
            let mass = forest.mass(&x);
            // Four low windows in a row: up to three odd minutes are not enough (a burst, a retry
            // storm, an integration's batch job of a few hundred requests). With three, 8 false
            // alarms over twelve seeds of the long run were such batches; four ended them, and the
            // model still finds 264 of the 1,440 attacks there (297 with three), never first.
            let highest = mass.max(st.model_mass.get()).max(st.model_mass2.get()).max(st.model_mass3.get());
            st.model_mass3 = st.model_mass2;
            st.model_mass2 = st.model_mass;
            st.model_mass = Q16::new(mass);
            let f = Finding {
                detector: Detector::Model,
                feature: "model_mass",
                basis: "the mass of typical windows (about 1; fires under 0.02 four times in a row)",
                baseline: 1.0,
                observed: highest,
                x: MODEL_MASS / highest.max(1e-9),
                window_s: 240,
            };
            emit(st, f, ctx, at, alerts);
        }
        if st.alerted == 0 {
            forest.update(&x);
        }
    } else {
        st.model_mass = Q16::ONE;
        st.model_mass2 = Q16::ONE;
        st.model_mass3 = Q16::ONE;
    }
    let y = f64::from(st.bytes_out).ln_1p();
    if person {
        shared_streak(st);
    }
    if person && st.active >= WARM {
        let lr = f64::from(st.req).ln_1p();
        let z = ((lr - st.lrate.mean()) / st.lrate.sd().max(0.25)).min(CUSUM_CAP);
        st.rate_cusum = Q16::new((st.rate_cusum.get() + z - RATE_CUSUM_K).clamp(0.0, 2.0 * RATE_CUSUM_H));
        if emit_reached(st, rate_cusum(st), ctx, at, alerts) {
            st.rate_cusum = Q16::default();
        }
    }
    if person && st.active >= WARM {
        let z = ((y - st.bytes.mean()) / st.bytes.sd().max(0.25)).min(CUSUM_CAP);
        // Exfiltration is volume: a light minute never adds, however unusual for the entity.
        let z = if st.bytes_out < CUSUM_MIN_BYTES { z.min(0.0) } else { z };
        st.cusum = Q16::new((st.cusum.get() + z - CUSUM_K).clamp(0.0, 2.0 * CUSUM_H));
        if emit_reached(st, exfiltration_cusum(st), ctx, at, alerts) {
            // Restart after an alarm (the usual CUSUM rule): a lasting drift fires again.
            st.cusum = Q16::default();
        }
    }
    learn(st, sh, y);
}

/// The weight of the next of `n` samples a baseline has learnt: their mean while it is young, then a
/// window of about 240.
pub(crate) fn learning_rate(n: u32) -> f64 {
    (1.0 / (f64::from(n) + 1.0)).max(1.0 / 240.0)
}

fn learn(st: &mut State, sh: &mut Shared, y: f64) {
    let alpha = learning_rate(st.active);
    let quiet = |d: Detector| st.alerted & (1 << (d as u16)) == 0;
    let peer_group = match st.kind {
        Kind::Ip => Some(0usize),
        Kind::Principal | Kind::ApiKey => Some(st.peer as usize),
        Kind::Claimed | Kind::Site => None,
    };
    let (r1, r10) = (f64::from(st.req), st.req10.ten());
    if quiet(Detector::Volumetric) {
        // Not while the sustained rate climbs: a scraper must not raise its own bar.
        if st.rate_cusum.get() < RATE_CUSUM_H / 2.0 {
            st.lrate.update(r1.ln_1p(), alpha, st.active);
        }
        st.rate.update(r1, alpha, st.active);
        st.rate10.update(r10, alpha, st.active);
        if let Some(p) = peer_group.and_then(|g| sh.peers.get_mut(g)) {
            p.rate.add(r1);
            p.rate10.add(r10);
        }
    }
    if quiet(Detector::Exfiltration) {
        // While the CUSUM climbs the baseline learns four times slower: a drift is not absorbed
        // before it is caught, and a lasting change of habit is adopted in the end.
        let slow = if st.cusum.get() < CUSUM_H / 2.0 { 1.0 } else { 0.25 };
        st.bytes.update(y, alpha * slow, st.active);
        // Four times slower while the hour climbs towards its limit, and never above it: an attack
        // must not raise its own bar, but a client whose ordinary hour sits above half the limit
        // (an integration near the floor) must learn it, or its ordinary hours alarm. An hour over
        // twice the usual one (and over 1 MiB) is learned four times slower and as twice the usual
        // one: a quiet client drained slowly would otherwise lift its own limit (its usual hour plus
        // six deviations) above the climbing hour as it climbs. A lasting change of habit is still
        // adopted, doubling at most at that pace.
        let hour = f64::from(st.hour_bytes);
        let limit = hourly_limit(st).0;
        if hour < limit {
            // (Not in the entity's first hours, while its decayed hour rises from nothing to its
            // level.)
            let settled = st.minute.saturating_sub(st.first_s / 60) >= HOURLY_SETTLED_S / 60;
            let usual = if settled { (2.0 * st.hour_bytes_base.mean()).max(HOURLY_CLIMB) } else { f64::INFINITY };
            let slow = if hour < limit / 2.0 && hour < usual { 1.0 } else { 0.25 };
            st.hour_bytes_base.update(hour.min(usual), alpha * slow, st.active);
        }
        if let Some(p) = peer_group.and_then(|g| sh.peers.get_mut(g)) {
            p.kib.add(f64::from(st.bytes_out) / 1024.0);
        }
    }
    if quiet(Detector::TokenSharing) {
        // (Learning four times slower while the three-networks streak runs would keep thieves from
        // teaching a recently warmed entity that three networks are its normal; measured, it lowers
        // the address limits of people whose networks change and raised 2 false alarms in the long
        // run, so the baseline learns at its usual pace.)
        st.spread_a.update(st.ring_a.ten(), alpha, st.active);
        st.spread_b.update(st.ring_b.ten(), alpha, st.active);
    }
    if matches!(st.kind, Kind::Principal | Kind::ApiKey) {
        learn_bulk(st, sh.peers.get_mut(st.peer as usize));
    }
    let h = ((st.minute / 60) % 24) as usize;
    if matches!(st.kind, Kind::Principal | Kind::ApiKey) && st.active >= HOURS_WARM_MINUTES {
        let (centre, rhythm) = day_centre(&st.hours);
        if rhythm >= RHYTHM {
            sh.day[day_bin(h, centre)] += 1;
        }
    }
    st.hours[h] = st.hours[h].saturating_add(1);
    if st.hours[h] >= 60_000 {
        st.hours.iter_mut().for_each(|c| *c /= 2);
    }
    st.active = st.active.saturating_add(1);
}
