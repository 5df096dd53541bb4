//! The detection engine: takes [`Record`]s, keeps per-entity features and baselines in a bounded table,
//! runs the detectors and pushes [`Alert`]s. It runs on the detector thread (never on the data path)
//! and owns no I/O: the runtime feeds it, snapshots it and acts on its alerts.

use super::detectors::{self, Finding, Peer, LIGHT};
use super::hst::Forest;
use super::sketch::{bit32, LogHistogram, Q16};
use super::state::{short_label, Kind, Pair, State};
use super::table::Table;
use super::{Alert, Detector, Entity, PrincipalTarget, Record, Signals};
use crate::exchange::PrincipalKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

/// The engine's settings. `Default` is the documented defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// 1.0 by default; 2.0 fires at lower scores, 0.5 only on the clearest cases.
    pub sensitivity: f64,
    /// Tracked entities (principals, keys, addresses, claimed identities); least recently seen evicted,
    /// newcomers before entities with history.
    pub max_entities: usize,
    /// IPv6 clients are one entity per prefix of this length.
    pub ipv6_prefix: u8,
    /// One alert per (detector, entity) per cooldown.
    pub cooldown_ms: u64,
    /// The detectors that run.
    pub enabled: Vec<Detector>,
    /// Key of the entity hash (SipHash); `None`: a random one. A snapshot keeps its own.
    pub seed: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sensitivity: 1.0,
            max_entities: 1_000_000,
            ipv6_prefix: 64,
            cooldown_ms: 10 * 60 * 1000,
            enabled: Detector::ALL.to_vec(),
            seed: None,
        }
    }
}

impl Settings {
    /// The sensitivity a score is judged at: 1 when the setting is not a positive number.
    pub(crate) fn effective_sensitivity(&self) -> f64 {
        if self.sensitivity.is_finite() && self.sensitivity > 0.0 {
            self.sensitivity
        } else {
            1.0
        }
    }
}

/// One route's suggested limit (`portcullis limits suggest`).
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub route: u16,
    /// Distinct clients (principals, or addresses when unauthenticated) seen on the route (estimate).
    pub principals: usize,
    /// Client-minutes observed.
    pub samples: u64,
    /// The quantile of per-client requests per minute, times the margin.
    pub per_minute: f64,
    /// The quantile of per-client busiest second in a minute, times the margin.
    pub per_second: f64,
    /// Ready to paste: `120/m`.
    pub rate: String,
    pub burst: u32,
}

/// Routes past this index are not tracked for suggestions (route tables are far smaller).
const MAX_ROUTES: usize = 4096;
/// Peer groups (distinct first roles) tracked; the rest share one group.
const MAX_PEERS: usize = 256;
/// User agents whose usual header order is tracked.
const MAX_AGENTS: usize = 4096;
/// Records up to this late still count in the minute they belong to when the engine closes windows.
const LATE_MS: u64 = 5_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RouteStats {
    per_minute: LogHistogram,
    per_second: LogHistogram,
    /// Linear counting over 1024 bits: distinct clients.
    clients: Vec<u64>,
    /// Distributed stuffing: the current minute's answers, its 401s, and the client networks that got
    /// them (linear counting over 64 bits), with the record time (s) of the route's last alert.
    #[serde(default)]
    minute: u32,
    #[serde(default)]
    answers: u32,
    #[serde(default)]
    failed: u32,
    #[serde(default)]
    failing_nets: u64,
    #[serde(default)]
    last_alert_s: u32,
    /// The route's usual 401 answers a minute (over the minutes it answered, but those it alerted in
    /// or was over its limit), and how many minutes taught it.
    #[serde(default)]
    failed_base: super::sketch::Ewma,
    #[serde(default)]
    failed_minutes: u32,
    /// The current minute went over the limit (whether it alerted or the cooldown held it back).
    #[serde(default)]
    over: bool,
    /// Object-level probing on the route in the clock hour, by principals ([`refusals_in_hour`]).
    #[serde(default)]
    objects: RouteObjects,
}

/// One route's objects refused to principals in the current clock hour, and its usual count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RouteObjects {
    hour: u32,
    /// The route's answers to principals in the hour, and its 403/404 among them naming an object.
    answers: u32,
    refused: u32,
    /// Distinct objects refused (linear counting over 1024 bits, by keyed hash) and the principals
    /// they were refused to (over 64).
    map: [u64; 16],
    principals: u64,
    /// The route's usual distinct objects refused an hour, and how many hours taught it.
    base: super::sketch::Ewma,
    hours: u32,
    /// The hour went over the limit (alerted or held back by the cooldown): it teaches nothing.
    over: bool,
    last_alert_s: u32,
}

/// Object-level probing spread over credentials on one route (several accounts each under the
/// principal's hourly tier, [`detectors::HOUR_REFUSED_OBJECTS`]): distinct objects refused to
/// principals in the clock hour, from 3 principals or more, at [`ROUTE_OBJECTS`] when they are half
/// the route's answers to principals or more; else, once [`ROUTE_OBJECTS_WARM`] hours are learnt,
/// over the route's own usual count (mean + 6 sd, and 4 × the mean, and never under the floor): a
/// busy route's stale links are its normal.
const ROUTE_OBJECTS: f64 = 200.0;
const ROUTE_OBJECT_PRINCIPALS: f64 = 3.0;
const ROUTE_OBJECTS_WARM: u32 = 24;

/// The hour that ends teaches the route's usual count, as a minute teaches its usual 401s
/// ([`learn_usual`]; an hour counts at most twice the usual, or 20).
fn learn_route_objects(o: &mut RouteObjects) {
    if o.answers == 0 || o.over {
        return;
    }
    let half = f64::from(o.refused) * 2.0 >= f64::from(o.answers);
    let distinct = route_objects(o);
    learn_usual(&mut o.base, &mut o.hours, distinct, half, (ROUTE_OBJECTS, ROUTE_OBJECTS_WARM, 20.0));
}

fn route_objects(o: &RouteObjects) -> f64 {
    super::sketch::linear_count(o.map.iter().map(|w| w.count_ones()).sum(), 1024)
}

/// Counts a principal's answer on the route (`principal`: its entity key) and judges the route's
/// refused objects in the hour. The map restarts after an alarm, as a principal's does.
fn refusals_in_hour(
    o: &mut RouteObjects,
    record: &Record,
    principal: u64,
    settings: &Settings,
    alerts: &mut Vec<Alert>,
) {
    let hour = (record.at_ms / 3_600_000) as u32;
    if hour > o.hour {
        learn_route_objects(o);
        *o = RouteObjects {
            hour,
            base: o.base,
            hours: o.hours,
            last_alert_s: o.last_alert_s,
            ..RouteObjects::default()
        };
    }
    o.answers = o.answers.saturating_add(1);
    if !(matches!(record.status, 403 | 404) && record.params_hash != 0) {
        return;
    }
    o.refused = o.refused.saturating_add(1);
    let bit = super::sketch::mix(record.params_hash) % 1024;
    if let Some(w) = o.map.get_mut((bit / 64) as usize) {
        *w |= 1 << (bit % 64);
    }
    o.principals |= 1 << (super::sketch::mix(principal) % 64);
    let principals = super::sketch::linear_count(o.principals.count_ones(), 64);
    if principals < ROUTE_OBJECT_PRINCIPALS {
        return;
    }
    let distinct = route_objects(o);
    let half = f64::from(o.refused) * 2.0 >= f64::from(o.answers);
    let limit = if half { ROUTE_OBJECTS } else { usual_limit(&o.base, o.hours, ROUTE_OBJECTS, ROUTE_OBJECTS_WARM) };
    let x = distinct / limit;
    if x * settings.effective_sensitivity() < 1.0 {
        return;
    }
    o.over = true;
    if route_cooling(&mut o.last_alert_s, record.at_ms, settings) {
        return;
    }
    let score = x / (1.0 + x);
    let d = Detector::Enumeration;
    let label: Arc<str> = Arc::from(record.route.to_string());
    let against = if half { "the fixed limit, at half its answers or more," } else { "its own usual count an hour" };
    let explanation = format!(
        "{}: route {label} had refused_objects_on_route = {distinct:.0} over 3600 s ({} refusals of {} answers to \
         principals), to about {} principals, against {against} of {limit:.0}: score {score:.2}",
        d.id(),
        o.refused,
        o.answers,
        principals.round(),
    );
    let found = (d, "refused_objects_on_route", limit, distinct, score, 3600);
    alerts.push(route_alert(label, found, record.at_ms, explanation));
    // Restart the map and its share: a probe that goes on fires again once it has refused as many
    // again (the hour stays `over`: it teaches nothing).
    (o.map, o.principals, o.refused, o.answers) = ([0; 16], 0, 0, 0);
}

/// A route's usual count per window (its 401s a minute, its objects refused an hour), learnt so that
/// an attack cannot raise its own bar: never a window over the limit (the caller's `over`); while
/// learnt (`warm` windows), only windows under the fixed `floor` and under half refused (`half`);
/// once warm, each window counted at most twice the usual (or `least`), so that the usual count, and
/// with it the limit, climbs slowly however an attacker paces it, where a route that grows for good
/// is learnt.
fn learn_usual(
    base: &mut super::sketch::Ewma,
    n: &mut u32,
    observed: f64,
    half: bool,
    (floor, warm, least): (f64, u32, f64),
) {
    let sample = if *n < warm {
        if observed >= floor || half {
            return;
        }
        observed
    } else {
        observed.min((2.0 * base.mean()).max(least))
    };
    base.update(sample, detectors::learning_rate(*n), *n);
    *n = n.saturating_add(1);
}

/// A route's own limit once `warm` windows are learnt (mean + 6 sd, 4 × the mean, never under the
/// `floor`); none before.
fn usual_limit(base: &super::sketch::Ewma, n: u32, floor: f64, warm: u32) -> f64 {
    if n < warm {
        return f64::INFINITY;
    }
    let (m, sd) = (base.mean(), base.sd());
    (m + 6.0 * sd).max(4.0 * m).max(floor)
}

/// Whether a route's tier is within its cooldown at `at_ms`; else notes the alert's time.
fn route_cooling(last_alert_s: &mut u32, at_ms: u64, settings: &Settings) -> bool {
    let now_s = ((at_ms / 1000) as u32).max(1);
    let cool = ((settings.cooldown_ms / 1000) as u32).max(1);
    if *last_alert_s != 0 && now_s.saturating_sub(*last_alert_s) < cool {
        return true;
    }
    *last_alert_s = now_s;
    false
}

/// An alert on a route: (detector, feature, limit, observed, score, window in seconds).
fn route_alert(
    label: Arc<str>,
    (detector, feature, limit, observed, score, window_s): (Detector, &'static str, f64, f64, f64, u32),
    at_ms: u64,
    explanation: String,
) -> Alert {
    Alert {
        detector,
        entity: super::Entity { kind: super::EntityKind::Route, label },
        ip: None,
        principal: None,
        target: None,
        feature,
        baseline: limit,
        observed,
        score,
        window_s,
        at_ms,
        explanation,
    }
}

/// Distributed credential stuffing on one route (a login many addresses try, each under the address
/// tiers): 401 answers in a minute that fire when they are half the route's answers or more and come
/// from 10 client networks or more. On a route whose usual failures are known (60 minutes learnt),
/// also when they are a small share of a busy route's answers but over its own usual count (mean +
/// 6 sd, and 4 × the mean): many successful logins no longer hide the stuffing among them.
const ROUTE_FAILED: f64 = 100.0;
const ROUTE_FAILING_NETS: f64 = 10.0;
const ROUTE_FAILED_WARM: u32 = 60;

/// The minute that ends teaches the route's usual failures ([`learn_usual`]: a minute counts at most
/// twice the usual, or 10, so the usual count climbs by at most 1/(n + 1) of itself a minute however
/// an attacker paces it, n the minutes learnt: 1.6% at the 60th, 0.4% from the 240th).
fn learn_route_failures(r: &mut RouteStats) {
    if r.answers == 0 || r.over {
        return;
    }
    let failed = f64::from(r.failed);
    let half = failed * 2.0 >= f64::from(r.answers);
    learn_usual(&mut r.failed_base, &mut r.failed_minutes, failed, half, (ROUTE_FAILED, ROUTE_FAILED_WARM, 10.0));
}

/// The route's own limit on 401 answers a minute, once warm.
fn route_failed_limit(r: &RouteStats) -> f64 {
    usual_limit(&r.failed_base, r.failed_minutes, ROUTE_FAILED, ROUTE_FAILED_WARM)
}

/// A 401 that authentication (or the upstream) answered: one the stage answered for an action in force
/// (a challenge) is not a failed credential.
fn refused(r: &Record) -> bool {
    r.status == 401 && !r.in_force
}

/// The label of the alert on all routes together.
const ALL_ROUTES: &str = "*";

/// Counts one answer of the minute in `r` (a route's, or all routes'), a failure when `failed`, and
/// judges the failures: against [`ROUTE_FAILED`] when they are half its answers or more (`half`: that
/// floor applies), else once warm against its own usual count, when they came from
/// [`ROUTE_FAILING_NETS`] client networks or more (`net`: the client's bit of the 64). Pushes an alert
/// naming `label` and `feature` unless the cooldown holds it. Returns whether the minute is over the
/// limit. The route can be alerted on, not banned (nothing to act on).
#[allow(clippy::too_many_arguments)]
fn failures_in_minute<L: FnOnce() -> Arc<str>>(
    r: &mut RouteStats,
    failed: bool,
    half: bool,
    record: &Record,
    minute: u32,
    net: u64,
    settings: &Settings,
    (label, feature): (L, &'static str),
    alerts: &mut Vec<Alert>,
) -> bool {
    if minute > r.minute {
        learn_route_failures(r);
        (r.minute, r.answers, r.failed, r.failing_nets, r.over) = (minute, 0, 0, 0, false);
    }
    r.answers = r.answers.saturating_add(1);
    if !failed {
        return r.over;
    }
    r.failed = r.failed.saturating_add(1);
    r.failing_nets |= net;
    let nets = super::sketch::linear_count(r.failing_nets.count_ones(), 64);
    let failed = f64::from(r.failed);
    if nets < ROUTE_FAILING_NETS {
        return r.over;
    }
    // Half the answers against the fixed limit; else, once warm, its own.
    let (limit, own) = if half && failed * 2.0 >= f64::from(r.answers) {
        (ROUTE_FAILED, false)
    } else {
        (route_failed_limit(r), true)
    };
    let x = failed / limit;
    let s = settings.effective_sensitivity();
    if x * s < 1.0 {
        return r.over;
    }
    // Over the limit, alerted or not (the cooldown): this minute teaches the baseline nothing.
    r.over = true;
    if route_cooling(&mut r.last_alert_s, record.at_ms, settings) {
        return true;
    }
    let score = x / (1.0 + x);
    let d = Detector::CredentialStuffing;
    let label = label();
    let against = if own { "its own usual 401s a minute" } else { "the fixed limit, at half its answers or more," };
    let explanation = format!(
        "{}: route {label} had {feature} = {} over 60 s (of {} answers), from about {} client networks, against \
         {against} of {limit:.0}: score {score:.2}",
        d.id(),
        r.failed,
        r.answers,
        nets.round(),
    );
    alerts.push(route_alert(label, (d, feature, limit, failed, score, 60), record.at_ms, explanation));
    true
}

/// The usual header order of one user agent (a majority vote).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AgentOrder {
    order: u32,
    votes: u32,
    seen: u32,
}

/// Everything except the entity table, so that detectors can borrow it beside an entity's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) now_ms: u64,
    tick_minute: u32,
    pub(crate) peers: Vec<Peer>,
    peer_index: BTreeMap<u64, u32>,
    routes: Vec<RouteStats>,
    agents: BTreeMap<u64, AgentOrder>,
    pub(crate) ip_model: Forest,
    pub(crate) id_model: Forest,
    /// People's (principals' and keys') active minutes by hour relative to the centre of their own
    /// day: the population's daily rhythm, which tells a night from an evening.
    #[serde(default)]
    pub(crate) day: [u64; 24],
    /// All routes' 401 answers together, judged as one route's ([`Engine::route_failures`]).
    #[serde(default)]
    all_routes: RouteStats,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    shared: Shared,
    /// Oldest first, probation's then the protected list's ...
    entities: Vec<(u64, State)>,
    /// ... the last this many (`table::Table`; none in snapshots written before it had two lists).
    #[serde(default)]
    protected: usize,
    pairs: Vec<(u64, Pair)>,
}

/// What [`Engine::snapshot`] writes: [`Snapshot`]'s fields, borrowed.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    shared: &'a Shared,
    entities: Vec<(u64, &'a State)>,
    protected: usize,
    pairs: Vec<(u64, &'a Pair)>,
}

/// 2: entity state with the sustained-rate CUSUM and the route words (version 1 states are not read).
/// 3: postcard; the routes' usual 401 answers a minute.
/// 4: the clock hour's 401 answers per entity (`hour_401`); all routes' 401s together.
/// 5: each route's objects refused to principals in the clock hour (`RouteObjects`).
/// Bump it with any change to the state's layout: postcard is not self-describing, so a snapshot of
/// another version is not read (the engine starts afresh with its seed, [`Engine::seed_of`]); JSON
/// from version 2 on is read whatever it lacks.
const SNAPSHOT_VERSION: u32 = 5;

/// What a snapshot's bytes begin with: the postcard encoding follows. Earlier builds wrote JSON (it
/// begins with `{`), which is still read: the state it holds is the same.
const SNAPSHOT_MAGIC: &[u8] = b"PCA\x01";

/// About what a snapshot holds beside its entities and pairs (both forests, mostly).
const SNAPSHOT_FIXED: usize = 2_400_000;

pub struct Engine {
    settings: Settings,
    enabled: u16,
    table: Table<State>,
    pairs: Table<Pair>,
    shared: Shared,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("entities", &self.table.len()).finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        let seed = settings.seed.unwrap_or_else(random_seed);
        let shared = Shared {
            seed,
            now_ms: 0,
            tick_minute: 0,
            // Group 0: addresses; group 1: principals beyond MAX_PEERS roles.
            peers: vec![Peer::default(), Peer::default()],
            peer_index: BTreeMap::new(),
            routes: Vec::new(),
            agents: BTreeMap::new(),
            ip_model: Forest::new(seed ^ 0x1111),
            day: [0; 24],
            id_model: Forest::new(seed ^ 0x2222),
            all_routes: RouteStats::default(),
        };
        Engine::with_shared(settings, shared)
    }

    fn with_shared(settings: Settings, shared: Shared) -> Engine {
        let enabled = enabled_mask(&settings);
        let max = settings.max_entities.max(1);
        Engine { enabled, table: Table::new(max), pairs: Table::new((max / 8).max(1)), shared, settings }
    }

    /// Takes new settings in place, keeping everything learnt, when the table's size is unchanged;
    /// false (and nothing changed) when it is not, for [`Engine::restore`] from a snapshot to resize.
    pub fn reconfigure(&mut self, settings: Settings) -> bool {
        if settings.max_entities.max(1) != self.settings.max_entities.max(1) {
            return false;
        }
        self.enabled = enabled_mask(&settings);
        self.settings = settings;
        true
    }

    /// Updates features and baselines with one record and pushes the alerts it raises. Records a few
    /// seconds out of order count in their entity's current window.
    pub fn observe(&mut self, record: &Record, alerts: &mut Vec<Alert>) {
        let sh = &mut self.shared;
        sh.now_ms = sh.now_ms.max(record.at_ms);
        let minute = (record.at_ms / 60_000) as u32;

        let (ip_key, ip_bytes) = ip_key(&self.settings, sh.seed, record.ip);
        let failing = matches!(record.status, 401 | 403);
        let claimed_key = record.claimed.as_deref().map(|c| hash(sh.seed, Kind::Claimed, c.as_bytes()));
        let principal = record.principal.as_deref();
        let principal_key = principal.map(|p| principal_key(sh.seed, p));
        let ctx = Ctx { settings: &self.settings, enabled: self.enabled, record, principal_key };
        let order_odd = agent_vote(&mut sh.agents, sh.seed, record);
        let site = site_key(&self.settings, sh.seed, record.ip);

        // The address; and whether it went over its own stuffing limit this minute (`on_ip` judged it,
        // whether the cooldown let the alert out or not): its failures are its own finding then.
        let address_stuffing = {
            let (st, fresh) = self.table.touch(ip_key);
            if fresh {
                init(st, ip_key, Kind::Ip, ip_label(&self.settings, record.ip, &ip_bytes), 0, record.at_ms);
            }
            roll(st, minute, &ctx, sh, alerts);
            automation_counts(st, record, order_odd);
            count(st, record, minute);
            if let (true, Some(c)) = (failing, claimed_key) {
                st.ring_a.insert(st.minute, c);
            }
            match principal_key {
                Some(p) => st.ring_b.insert(st.minute, p),
                None => st.anon_age = 0,
            }
            detectors::on_ip(st, &ctx, sh, alerts);
            st.alerted & (1 << (Detector::CredentialStuffing as u16)) != 0
        };
        // The address's site, when it is a network of its own (an IPv6 /56 of longer prefixes): made by
        // a failure its stuffing tiers count (a failing claimed identity, or a 401), and fed none from
        // a network over its own limit (that network is found and banned on its own).
        if let (Some((site_key, site_net)), false) = (site, address_stuffing) {
            let claimed = claimed_key.filter(|_| failing);
            let feeds = claimed.is_some() || refused(record);
            let st = if feeds {
                let (st, fresh) = self.table.touch(site_key);
                if fresh {
                    init(st, site_key, Kind::Site, site_net.to_string().into(), 0, record.at_ms);
                }
                Some(st)
            } else {
                self.table.touch_existing(site_key)
            };
            if let Some(st) = st {
                roll(st, minute, &ctx, sh, alerts);
                count(st, record, minute);
                if let Some(c) = claimed {
                    st.ring_a.insert(st.minute, c);
                }
                if feeds {
                    st.ring_b.insert(st.minute, ip_key);
                    st.site_network_failed(ip_key);
                }
                detectors::on_site(st, &ctx, sh, alerts);
            }
        }
        // The principal or API key.
        if let (Some(p), Some(pk)) = (principal, principal_key) {
            let peer = peer_of(sh, p);
            let (st, fresh) = self.table.touch(pk);
            if fresh {
                init(st, pk, principal_kind(p), short_label(&p.id), peer, record.at_ms);
            }
            if st.method == 0 {
                // New, or restored from a snapshot written before methods were kept.
                st.method = METHODS.iter().position(|&m| m == p.kind).map_or(0, |i| i as u8 + 1);
                st.whole = st.label.len() == p.id.len();
            }
            roll(st, minute, &ctx, sh, alerts);
            count(st, record, minute);
            st.returns.see(&st.ring_a, st.minute, ip_key);
            st.ring_a.insert(st.minute, ip_key);
            if record.user_agent != 0 {
                st.ring_b.insert(st.minute, record.user_agent);
            }
            detectors::on_principal(st, &ctx, sh, alerts);
        }
        // The identity a refused credential claimed.
        if let (Some(c), Some(ck), true) = (record.claimed.as_deref(), claimed_key, failing) {
            let (st, fresh) = self.table.touch(ck);
            if fresh {
                init(st, ck, Kind::Claimed, short_label(c), 0, record.at_ms);
            }
            roll(st, minute, &ctx, sh, alerts);
            count(st, record, minute);
            st.ring_a.insert(st.minute, ip_key);
            detectors::on_claimed(st, &ctx, sh, alerts);
        }
        // Per (client, route), for suggestions.
        if usize::from(record.route) < MAX_ROUTES {
            let client = principal_key.unwrap_or(ip_key);
            self.pair(client, record);
            if self.enabled & (1 << (Detector::CredentialStuffing as u16)) != 0 {
                self.route_failures(record, ip_key, address_stuffing, alerts);
            }
            if let (Some(pk), true) = (principal_key, self.enabled & (1 << (Detector::Enumeration as u16)) != 0) {
                if let Some(r) = route_stats(&mut self.shared.routes, record.route) {
                    refusals_in_hour(&mut r.objects, record, pk, &self.settings, alerts);
                }
            }
        }
    }

    /// Distributed credential stuffing, judged on the route and on all routes together
    /// ([`failures_in_minute`]). All routes: stuffing spread over several routes (a credential the
    /// gateway checks works on any of them), each under its route's tier. Judged only against their
    /// usual 401s (once 60 minutes are learnt), never at the half-share floor: unrelated routes' answers
    /// do not make a share. Not fed by a route over its own limit in the minute, nor by an address over
    /// its own stuffing limit (`address_stuffing`): their alerts say it, and a decoy route kept over its
    /// limit hides nothing of the others.
    fn route_failures(&mut self, record: &Record, ip_key: u64, address_stuffing: bool, alerts: &mut Vec<Alert>) {
        let settings = &self.settings;
        let sh = &mut self.shared;
        let Some(r) = route_stats(&mut sh.routes, record.route) else { return };
        let minute = (record.at_ms / 60_000) as u32;
        let net = 1u64 << (super::sketch::mix(ip_key) % 64);
        let on_route = (|| Arc::from(record.route.to_string()), "failed_authentications_on_route");
        let route_over = failures_in_minute(r, refused(record), true, record, minute, net, settings, on_route, alerts);
        let all = (|| Arc::from(ALL_ROUTES), "failed_authentications_on_all_routes");
        let failed = refused(record) && !address_stuffing && !route_over;
        failures_in_minute(&mut sh.all_routes, failed, false, record, minute, net, settings, all, alerts);
    }

    fn pair(&mut self, client: u64, record: &Record) {
        let key =
            hash(self.shared.seed, Kind::Ip, &[client.to_le_bytes().as_slice(), &record.route.to_le_bytes()].concat());
        let minute = (record.at_ms / 60_000) as u32;
        let second = (record.at_ms / 1000) as u32;
        let (p, fresh) = self.pairs.touch(key);
        if fresh {
            *p = Pair { route: record.route, minute, ..Pair::default() };
            if let Some(r) = route_stats(&mut self.shared.routes, record.route) {
                let bit = super::sketch::mix(client) % 1024;
                if let Some(w) = r.clients.get_mut((bit / 64) as usize) {
                    *w |= 1 << (bit % 64);
                }
            }
        }
        if minute > p.minute {
            flush_pair(&mut self.shared.routes, p);
            *p = Pair { route: record.route, minute, ..Pair::default() };
        }
        p.count = p.count.saturating_add(1);
        if second != p.second {
            p.second = second;
            p.sec_count = 0;
        }
        p.sec_count += 1;
        p.sec_max = p.sec_max.max(p.sec_count);
    }

    /// Called about once per second of record time: closes the windows of entities that went quiet (so
    /// their window-end detectors run) once a minute, and flushes the suggestion samples.
    pub fn tick(&mut self, now_ms: u64, alerts: &mut Vec<Alert>) {
        let sh = &mut self.shared;
        sh.now_ms = sh.now_ms.max(now_ms);
        let target = (sh.now_ms.saturating_sub(LATE_MS) / 60_000) as u32;
        if target <= sh.tick_minute {
            return;
        }
        sh.tick_minute = target;
        let dummy = tick_record(sh.now_ms);
        let ctx = Ctx { settings: &self.settings, enabled: self.enabled, record: &dummy, principal_key: None };
        for st in self.table.values_mut() {
            if st.minute < target {
                roll(st, target, &ctx, sh, alerts);
            }
        }
        for p in self.pairs.values_mut() {
            if p.minute < target && p.count > 0 {
                flush_pair(&mut sh.routes, p);
                p.count = 0;
                p.sec_max = 0;
                p.minute = target;
            }
        }
    }

    pub fn entities(&self) -> usize {
        self.table.len()
    }

    /// An estimate of the heap the engine holds: the tables (index and slabs), the labels, and the
    /// fixed parts (models, peer groups, route statistics, agent orders).
    pub fn memory_bytes(&self) -> usize {
        let labels: usize = self.table.values().map(State::heap_bytes).sum();
        self.table.heap_bytes() + self.pairs.heap_bytes() + labels + self.fixed_bytes()
    }

    /// The part of [`Engine::memory_bytes`] that does not grow with the entities.
    pub fn fixed_bytes(&self) -> usize {
        let sh = &self.shared;
        let peers: usize =
            sh.peers.iter().map(Peer::heap_bytes).sum::<usize>() + sh.peers.capacity() * std::mem::size_of::<Peer>();
        let routes: usize = sh
            .routes
            .iter()
            .map(|r| r.per_minute.heap_bytes() + r.per_second.heap_bytes() + r.clients.capacity() * 8)
            .sum::<usize>()
            + sh.routes.capacity() * std::mem::size_of::<RouteStats>();
        // B-tree nodes hold up to 11 entries; count them a third empty.
        let maps = sh.peer_index.len() * 3 / 2 * 12 + sh.agents.len() * 3 / 2 * (8 + std::mem::size_of::<AgentOrder>());
        peers + routes + maps + sh.ip_model.heap_bytes() + sh.id_model.heap_bytes()
    }

    /// The bot score of an address (its entity), 0.0 to 1.0; 0.0 when not tracked.
    pub fn bot_score(&self, ip: IpAddr) -> f64 {
        let (key, _) = ip_key(&self.settings, self.shared.seed, ip);
        self.table.get(key).map_or(0.0, |st| detectors::bot_score(st).0)
    }

    /// Per route: the per-client request rate at `quantile` of the observed per-client per-minute
    /// rates (and per-second bursts), times `margin`.
    pub fn suggest(&self, quantile: f64, margin: f64) -> Vec<Suggestion> {
        let margin = if margin.is_finite() && margin > 0.0 { margin } else { 1.0 };
        let mut out = Vec::new();
        for (i, r) in self.shared.routes.iter().enumerate() {
            let samples = r.per_minute.total();
            if samples == 0 {
                continue;
            }
            let per_minute = (r.per_minute.quantile(quantile) * margin).ceil().max(1.0);
            let per_second = (r.per_second.quantile(quantile) * margin).ceil().max(1.0);
            let ones: u32 = r.clients.iter().map(|w| w.count_ones()).sum();
            out.push(Suggestion {
                route: i as u16,
                principals: super::sketch::linear_count(ones, 1024).round() as usize,
                samples,
                per_minute,
                per_second,
                rate: format!("{}/m", per_minute as u64),
                burst: per_second.min(f64::from(u32::MAX)) as u32,
            });
        }
        out
    }

    /// A principal's active minutes of history, when the engine still tracks it (for tests).
    #[cfg(test)]
    pub(crate) fn active_minutes(&self, p: &crate::exchange::Principal) -> Option<u32> {
        self.table.get(principal_key(self.shared.seed, p)).map(|st| st.active)
    }

    /// The key of the entity hashes (kept in snapshots, so it survives a restore).
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// A principal's entity key under `seed` ([`PrincipalTarget::key`]): what an action in force
    /// matches a request's principal with.
    pub fn principal_key(seed: u64, p: &crate::exchange::Principal) -> u64 {
        principal_key(seed, p)
    }

    /// [`Engine::principal_key`] of the principal another node names by its login method, issuer
    /// (a token's `iss`, or "") and whole id.
    pub fn key_of(seed: u64, kind: PrincipalKind, iss: &str, id: &str) -> u64 {
        key_of(seed, kind, iss, id)
    }

    /// The model's state as versioned bytes: [`SNAPSHOT_MAGIC`], then the postcard encoding of the
    /// entities oldest first, the pairs, baselines and models.
    pub fn snapshot(&self) -> Vec<u8> {
        // Sized for what it takes (about 300 bytes an entity beside 2.3 MB of models), so a million
        // entities are not copied through doubling buffers. Writing to a Vec fails only for memory.
        let mut out = Vec::with_capacity(SNAPSHOT_FIXED + 320 * self.table.len() + 24 * self.pairs.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        postcard::to_extend(&self.snapshot_ref(), out).unwrap_or_default()
    }

    /// The same state as the JSON earlier builds wrote (tests edit it to stand for those builds).
    #[cfg(test)]
    pub(crate) fn snapshot_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.snapshot_ref()).unwrap_or_default()
    }

    fn snapshot_ref(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            version: SNAPSHOT_VERSION,
            shared: &self.shared,
            entities: self.table.oldest_first().map(|s| (s.key, &s.value)).collect(),
            protected: self.table.protected_len(),
            pairs: self.pairs.oldest_first().map(|s| (s.key, &s.value)).collect(),
        }
    }

    /// The seed a snapshot was keyed with, when its version or layout is not this build's: it leads
    /// every snapshot (after the version), so an engine that starts afresh can keep it, and with it
    /// the actions in force keyed by it.
    pub fn seed_of(bytes: &[u8]) -> Option<u64> {
        match bytes.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => postcard::take_from_bytes::<(u32, u64)>(rest).ok().map(|((_, seed), _)| seed),
            None => {
                // Only the seed is kept: the rest is skipped, not built (a JSON snapshot of a million
                // entities is over a gigabyte).
                #[derive(Deserialize)]
                struct Seed {
                    seed: u64,
                }
                #[derive(Deserialize)]
                struct Front {
                    shared: Seed,
                }
                serde_json::from_slice::<Front>(bytes).ok().map(|f| f.shared.seed)
            }
        }
    }

    /// An engine from a [`Engine::snapshot`] (or from the JSON snapshots earlier builds wrote); with a
    /// smaller `max_entities`, the most recently seen entities are kept.
    pub fn restore(settings: Settings, bytes: &[u8]) -> Result<Engine, String> {
        let snap: Snapshot = match bytes.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => {
                // The version first: another layout is not decoded (it might decode to nonsense).
                let (version, _) =
                    postcard::take_from_bytes::<u32>(rest).map_err(|e| format!("anomaly snapshot: {e}"))?;
                if version != SNAPSHOT_VERSION {
                    return Err(format!("anomaly snapshot: version {version} (this build reads {SNAPSHOT_VERSION})"));
                }
                match postcard::take_from_bytes(rest) {
                    Ok((snap, [])) => snap,
                    Ok(_) => return Err("anomaly snapshot: bytes left over".into()),
                    Err(e) => return Err(format!("anomaly snapshot: {e}")),
                }
            }
            None => {
                // JSON names its fields: those a version added since take their defaults.
                let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| format!("anomaly snapshot: {e}"))?;
                if !(2..=SNAPSHOT_VERSION).contains(&snap.version) {
                    let v = snap.version;
                    return Err(format!("anomaly snapshot: version {v} (this build reads {SNAPSHOT_VERSION})"));
                }
                snap
            }
        };
        if snap.shared.peers.len() < 2 {
            return Err("anomaly snapshot: peer groups missing".into());
        }
        let mut engine = Engine::with_shared(settings, snap.shared);
        let protected: Vec<u64> = snap.entities.iter().rev().take(snap.protected).rev().map(|(key, _)| *key).collect();
        for (key, mut state) in snap.entities {
            state.key = key;
            *engine.table.touch(key).0 = state;
        }
        engine.table.protect(protected);
        for (key, pair) in snap.pairs {
            *engine.pairs.touch(key).0 = pair;
        }
        Ok(engine)
    }
}

fn enabled_mask(settings: &Settings) -> u16 {
    settings.enabled.iter().fold(0u16, |m, d| m | 1 << (*d as u16))
}

/// What the detectors need about the record in hand.
pub(crate) struct Ctx<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) enabled: u16,
    pub(crate) record: &'a Record,
    /// The key of the record's principal: an alert on that entity names the principal itself.
    pub(crate) principal_key: Option<u64>,
}

impl Ctx<'_> {
    pub(crate) fn on(&self, d: Detector) -> bool {
        self.enabled & (1 << (d as u16)) != 0
    }
}

fn init(st: &mut State, key: u64, kind: Kind, label: Box<str>, peer: u32, at_ms: u64) {
    // Peer groups are capped (MAX_PEERS), far below u16::MAX.
    let peer = u16::try_from(peer).unwrap_or(u16::MAX);
    st.key = key;
    st.kind = kind;
    st.label = label;
    st.peer = peer;
    st.first_s = (at_ms / 1000) as u32;
    st.minute = (at_ms / 60_000) as u32;
    st.hour = (at_ms / 3_600_000) as u32;
    st.last_ms = at_ms;
    st.model_mass = Q16::ONE;
    st.model_mass2 = Q16::ONE;
    st.model_mass3 = Q16::ONE;
    st.anon_age = u8::MAX;
}

/// Closes the entity's window when `minute` is past it: window-end detectors, baselines, rings.
fn roll(st: &mut State, minute: u32, ctx: &Ctx<'_>, sh: &mut Shared, alerts: &mut Vec<Alert>) {
    if minute <= st.minute {
        return;
    }
    if st.req > 0 {
        detectors::close_window(st, ctx, sh, alerts);
    }
    // Streaks continue only into the very next minute.
    let next = minute == st.minute + 1;
    if !next || st.req == 0 {
        // The model's four low windows in a row are four minutes in a row (a tick moves an idle
        // entity a minute at a time, through empty ones): a periodic job's runs, hours apart, are
        // not one odd stretch.
        st.model_mass = Q16::ONE;
        st.model_mass2 = Q16::ONE;
        st.model_mass3 = Q16::ONE;
        // And a minute without a request ends a sustained rate.
        st.rate_cusum = Q16::default();
    }
    // Ten minutes without growing end a run of ids.
    let idle = (minute - st.minute).min(255) as u8;
    st.run_idle = st.run_idle.saturating_add(idle);
    if st.run_idle >= 10 {
        st.run = 0;
        st.run_idle = 0;
    }
    let light = if next && st.req >= LIGHT { st.streak_light.saturating_add(1) } else { 0 };
    if light == 0 && st.alerted & (1 << (super::Detector::Volumetric as u16)) == 0 {
        // A streak that ended without a volumetric alert was this entity's normal.
        st.streak_light_max = st.streak_light_max.max(st.streak_light);
    }
    st.streak_light = light;
    st.streak_heavy = if next && detectors::busy(st) { st.streak_heavy.saturating_add(1) } else { 0 };
    st.req10.advance(st.minute, minute);
    st.bulk.advance(st.minute, minute);
    if st.bulk.count() == 0 {
        st.bulk_learning.window_emptied();
    }
    st.err10.advance(st.minute, minute);
    st.ring_a.advance(st.minute, minute);
    st.ring_b.advance(st.minute, minute);
    st.returns.advance(st.minute, minute);
    // After the streaks: the closing minute was judged with its own requests.
    st.anon_age = st.anon_age.saturating_add(idle);
    st.minute = minute;
    st.req = 0;
    st.s401 = 0;
    st.s403 = 0;
    st.s404 = 0;
    st.s429 = 0;
    st.new_routes = 0;
    st.alerted = 0;
    st.bytes_in = 0;
    st.bytes_out = 0;
    st.routes = 0;
    st.params = 0;
}

/// The per-record counters every entity keeps.
fn count(st: &mut State, r: &Record, minute: u32) {
    let minute = minute.max(st.minute);
    if st.req == 0 {
        // The first request of an active minute: the time-of-day profile.
        let hour = minute / 60;
        if hour != st.hour {
            st.hour = hour;
            st.hour_minutes = 0;
            st.hour_requests = 0;
            st.hour_401 = 0;
            if st.keeps_hour_map() {
                st.hour_map_clear();
            }
        }
        st.hour_minutes = st.hour_minutes.saturating_add(1);
    }
    let dt = r.at_ms.saturating_sub(st.last_ms) as f64;
    st.hour_bytes = (f64::from(st.hour_bytes) * (-dt / 3_600_000.0).exp() + f64::from(r.bytes_out)) as f32;
    st.last_ms = st.last_ms.max(r.at_ms);
    st.req = st.req.saturating_add(1);
    st.hour_requests = st.hour_requests.saturating_add(1);
    match r.status {
        401 if !r.in_force => {
            st.s401 = st.s401.saturating_add(1);
            st.hour_401 = st.hour_401.saturating_add(1);
        }
        403 => st.s403 = st.s403.saturating_add(1),
        404 => st.s404 = st.s404.saturating_add(1),
        429 => st.s429 = st.s429.saturating_add(1),
        _ => {}
    }
    st.bytes_in = st.bytes_in.saturating_add(r.bytes_in);
    st.bytes_out = st.bytes_out.saturating_add(r.bytes_out);
    st.req10.add(minute, 1);
    if r.bytes_out >= detectors::LARGE_RESPONSE {
        st.bulk.add(minute);
    }
    if matches!(r.status, 403 | 404) {
        st.err10.add(minute, 1);
        if r.params_hash != 0 && matches!(st.kind, Kind::Principal | Kind::ApiKey) {
            st.object_refused(r.params_hash ^ u64::from(r.route).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
    }
    if r.route != super::NO_ROUTE {
        st.routes |= bit32(u64::from(r.route));
        let (word, bit) = (usize::from(r.route / 64 % 2), 1u64 << (r.route % 64));
        if st.known_routes[word] & bit == 0 {
            st.known_routes[word] |= bit;
            st.new_routes = st.new_routes.saturating_add(1);
        }
    }
    if r.params_hash != 0 {
        st.params |= bit32(r.params_hash);
    }
    if let Some(id) = r.id_param.filter(|_| r.route == st.run_route || st.run < 3) {
        if r.route != st.run_route {
            // A run of under three follows the route of the newest id.
            st.run_route = r.route;
            st.run = 0;
        }
        let dir: i8 = match id.cmp(&st.last_id) {
            std::cmp::Ordering::Greater if id - st.last_id <= 16 => 1,
            std::cmp::Ordering::Less if st.last_id - id <= 16 => -1,
            std::cmp::Ordering::Equal => 0,
            _ => 2,
        };
        match dir {
            0 => {}
            1 | -1 if st.run > 0 && (dir == st.run_dir || st.run == 1) => {
                st.run = st.run.saturating_add(1);
                st.run_dir = dir;
                st.run_idle = 0;
            }
            1 | -1 => {
                st.run = 2;
                st.run_dir = dir;
            }
            _ => {
                st.run = 1;
                st.run_dir = 0;
            }
        }
        st.last_id = id;
    }
}

fn automation_counts(st: &mut State, r: &Record, order_odd: bool) {
    let gap = r.at_ms.saturating_sub(st.last_ms.min(r.at_ms)) as f64;
    if st.bot_req > 0 {
        st.gap.update(gap, 0.1, u32::from(st.gaps));
        st.gaps = st.gaps.saturating_add(1);
    }
    let f = r.signals.flags;
    st.bot_req = st.bot_req.saturating_add(1);
    let browser_headers = Signals::HAS_ACCEPT_LANGUAGE | Signals::HAS_ACCEPT_ENCODING | Signals::HAS_ACCEPT;
    if f & Signals::CLAIMS_BROWSER != 0 && (f & browser_headers != browser_headers) {
        st.bot_missing = st.bot_missing.saturating_add(1);
    }
    if order_odd {
        st.bot_order = st.bot_order.saturating_add(1);
    }
    if f & Signals::SCANNER != 0 {
        st.bot_scanner = st.bot_scanner.saturating_add(1);
    }
    // Age the evidence: the last few hundred requests count.
    if st.bot_req >= 400 {
        st.bot_req /= 2;
        st.bot_missing /= 2;
        st.bot_order /= 2;
        st.bot_scanner /= 2;
    }
}

/// Votes the record's header order for its user agent; `true` when the agent is well known and the
/// order is not its usual one.
fn agent_vote(agents: &mut BTreeMap<u64, AgentOrder>, seed: u64, r: &Record) -> bool {
    if r.user_agent == 0 {
        return false;
    }
    // Keyed with the seed: an attacker who reads the (unkeyed) agent hash cannot place its made-up
    // agents right after established ones, where the eviction's samples would pass them by.
    let key = super::sketch::mix(seed ^ r.user_agent);
    if agents.len() >= MAX_AGENTS && !agents.contains_key(&key) {
        evict_agent(agents, key);
    }
    let a = agents.entry(key).or_default();
    let order = r.signals.header_order;
    let odd = a.seen >= 50 && a.votes >= 10 && a.order != order;
    // Boyer-Moore majority vote.
    if a.votes == 0 {
        a.order = order;
        a.votes = 1;
    } else if a.order == order {
        a.votes = a.votes.saturating_add(1).min(1000);
    } else {
        a.votes -= 1;
    }
    a.seen = a.seen.saturating_add(1);
    odd
}

/// Makes room in the full table of agents for a new one: of [`AGENT_SAMPLES`] entries drawn at
/// places `probe` picks (the agent's key, its hash mixed with the engine's seed: a replay evicts the same),
/// the one seen least goes. A flood of made-up agents (each seen once) therefore evicts its own
/// entries, not the established ones a browser's header order is judged against; before, a full
/// table took no new agent ever again, and 4,096 made-up agents switched the header-order vote off
/// for every browser released after them.
fn evict_agent(agents: &mut BTreeMap<u64, AgentOrder>, probe: u64) {
    let mut at = probe;
    let mut victim: Option<(u32, u64)> = None;
    for _ in 0..AGENT_SAMPLES {
        at = super::sketch::mix(at);
        let drawn = agents.range(at..).next().or_else(|| agents.iter().next());
        if let Some((&k, a)) = drawn {
            if victim.is_none_or(|(seen, _)| a.seen < seen) {
                victim = Some((a.seen, k));
            }
        }
    }
    if let Some((_, k)) = victim {
        agents.remove(&k);
    }
}

/// Entries [`evict_agent`] compares: with a table half full of made-up agents, an established one goes
/// only when all of them land on established ones (one time in 256).
const AGENT_SAMPLES: usize = 8;

fn peer_of(sh: &mut Shared, p: &crate::exchange::Principal) -> u32 {
    let role = p.roles.first().map_or("", String::as_str);
    let key = hash(sh.seed, principal_kind(p), role.as_bytes());
    if let Some(&g) = sh.peer_index.get(&key) {
        return g;
    }
    if sh.peers.len() >= MAX_PEERS {
        return 1;
    }
    let g = sh.peers.len() as u32;
    sh.peers.push(Peer::default());
    sh.peer_index.insert(key, g);
    g
}

fn route_stats(routes: &mut Vec<RouteStats>, route: u16) -> Option<&mut RouteStats> {
    let i = usize::from(route);
    if i >= MAX_ROUTES {
        return None;
    }
    if routes.len() <= i {
        routes.resize_with(i + 1, || RouteStats { clients: vec![0; 16], ..RouteStats::default() });
    }
    routes.get_mut(i)
}

fn flush_pair(routes: &mut Vec<RouteStats>, p: &Pair) {
    if p.count == 0 {
        return;
    }
    if let Some(r) = route_stats(routes, p.route) {
        r.per_minute.add(f64::from(p.count));
        r.per_second.add(f64::from(p.sec_max));
    }
}

/// The login methods a principal entity records (`State::method` is the index plus one).
pub(crate) const METHODS: [PrincipalKind; 5] = [
    PrincipalKind::ApiKey,
    PrincipalKind::Jwt,
    PrincipalKind::Introspection,
    PrincipalKind::ClientCertificate,
    PrincipalKind::Signature,
];

/// A principal's entity key: its method, its issuer when its credential names one (a JWT's or an
/// introspected token's `iss`: two identity providers may both have an `alice`), and its whole id,
/// hashed with the engine's seed. The same id under two methods or two issuers is two entities. (API
/// keys hash as they always did, so older snapshots keep them; the others add bytes no UTF-8 text can
/// hold: a method tag no id can start with, and 0xff after the issuer.)
pub(crate) fn principal_key(seed: u64, p: &crate::exchange::Principal) -> u64 {
    key_of(seed, p.kind, issuer(p), &p.id)
}

/// A token's `iss`, as [`principal_key`] reads it ("" when the credential names none).
pub(crate) fn issuer(p: &crate::exchange::Principal) -> &str {
    p.claims.as_ref().and_then(|c| c.get("iss")).and_then(serde_json::Value::as_str).unwrap_or("")
}

/// [`principal_key`] from its parts: what another node of the fleet names (method, issuer, whole id)
/// keyed with this engine's seed.
pub(crate) fn key_of(seed: u64, kind: PrincipalKind, iss: &str, id: &str) -> u64 {
    match kind {
        PrincipalKind::ApiKey => hash(seed, Kind::ApiKey, id.as_bytes()),
        other => {
            let tag = 0xf8 + METHODS.iter().position(|&m| m == other).unwrap_or(0) as u8;
            hash_parts(seed, Kind::Principal, &[&[tag], iss.as_bytes(), &[0xff], id.as_bytes()])
        }
    }
}

fn principal_kind(p: &crate::exchange::Principal) -> Kind {
    match p.kind {
        PrincipalKind::ApiKey => Kind::ApiKey,
        _ => Kind::Principal,
    }
}

/// SipHash-1-3 keyed by the engine's seed (std's `DefaultHasher` has fixed keys; `SipHasher` takes
/// them): entity keys an attacker cannot aim at another entity's.
pub(crate) fn hash(seed: u64, kind: Kind, bytes: &[u8]) -> u64 {
    hash_parts(seed, kind, &[bytes])
}

/// [`hash`] of the parts one after the other (the same as of their concatenation), without joining them.
fn hash_parts(seed: u64, kind: Kind, parts: &[&[u8]]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(seed, seed.rotate_left(32) ^ 0x5bd1_e995_7f4a_7c15);
    h.write_u8(kind.tag());
    for part in parts {
        h.write(part);
    }
    h.finish()
}

/// The address's entity key and its bytes (IPv6 masked to the prefix; IPv4-mapped as IPv4).
fn ip_key(settings: &Settings, seed: u64, ip: IpAddr) -> (u64, Vec<u8>) {
    let bytes = match crate::exchange::client_net(ip, settings.ipv6_prefix).network() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    (hash(seed, Kind::Ip, &bytes), bytes)
}

/// The prefix length of an IPv6 site: what an ISP usually gives one customer (a home, a small
/// business), and a cloud one virtual network. Not the /48 of the old end-site rule: ISPs carve a /48
/// into 256 customers' /56s, and one of them must not be able to get its neighbours banned.
pub(crate) const SITE_PREFIX: u8 = 56;

/// The entity key and network of the site an IPv6 address is in (its /56), when the engine counts
/// IPv6 clients by a longer prefix: `None` for IPv4 (and IPv4-mapped) addresses, NAT64 ones (an IPv4
/// host each), and when each client is already a /56 or wider. (Its label is written only when the
/// site is made: most records only look it up.)
fn site_key(settings: &Settings, seed: u64, ip: IpAddr) -> Option<(u64, ipnet::Ipv6Net)> {
    let IpAddr::V6(v6) = ip.to_canonical() else { return None };
    let nat64 = crate::exchange::v6_client_bits(&v6, 0) == 128;
    let bits = crate::exchange::v6_client_bits(&v6, settings.ipv6_prefix);
    if nat64 || bits <= SITE_PREFIX {
        return None;
    }
    let net = ipnet::Ipv6Net::new(v6, SITE_PREFIX).ok()?.trunc();
    Some((hash(seed, Kind::Site, &net.network().octets()), net))
}

fn ip_label(settings: &Settings, ip: IpAddr, bytes: &[u8]) -> Box<str> {
    match <[u8; 16]>::try_from(bytes) {
        Ok(b) if crate::exchange::v6_client_bits(&b.into(), settings.ipv6_prefix) < 128 => {
            format!("{}/{}", std::net::Ipv6Addr::from(b), settings.ipv6_prefix).into()
        }
        Ok(b) => std::net::Ipv6Addr::from(b).to_string().into(),
        Err(_) => match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()).into(),
            IpAddr::V4(v4) => v4.to_string().into(),
        },
    }
}

fn tick_record(at_ms: u64) -> Record {
    Record {
        at_ms,
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        principal: None,
        claimed: None,
        route: super::NO_ROUTE,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        id_param: None,
        params_hash: 0,
        user_agent: 0,
        signals: Signals::default(),
        in_force: false,
    }
}

pub(crate) fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        // No system randomness: a per-process random hasher key is the next best.
        Err(_) => std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
    }
}

/// [`emit`], and whether this finding reached its level (alerted, or would have but for the
/// cooldown). A detector that restarts a sum after its alarm asks this: the detector's bit for the
/// minute may already have been set by another of its features, and the sum must restart all the same
/// (else it stays at its cap and fires again after every cooldown).
pub(crate) fn emit_reached(st: &mut State, f: Finding, ctx: &Ctx<'_>, at_ms: u64, alerts: &mut Vec<Alert>) -> bool {
    let bit = 1 << (f.detector as u16);
    let before = st.alerted & bit;
    st.alerted &= !bit;
    emit(st, f, ctx, at_ms, alerts);
    let reached = st.alerted & bit != 0;
    st.alerted |= before;
    reached
}

/// Builds an [`Alert`] from a finding when its score reaches the threshold for the sensitivity and the
/// detector's cooldown on the entity has passed.
pub(crate) fn emit(st: &mut State, f: Finding, ctx: &Ctx<'_>, at_ms: u64, alerts: &mut Vec<Alert>) {
    let d = f.detector;
    if !(ctx.on(d) && f.x.is_finite() && f.x > 0.0) {
        return;
    }
    if f.x * ctx.settings.effective_sensitivity() < 1.0 {
        return;
    }
    st.alerted |= 1 << (d as u16);
    let now_s = (at_ms / 1000) as u32;
    let last = st.last_alert[d as usize];
    let cool = (ctx.settings.cooldown_ms / 1000) as u32;
    if last != 0 && now_s.saturating_sub(last) < cool.max(1) {
        return;
    }
    st.last_alert[d as usize] = now_s.max(1);
    let score = f.x / (1.0 + f.x);
    let kind = st.kind.public();
    let label: Arc<str> = Arc::from(&*st.label);
    let ip = match st.kind {
        Kind::Ip | Kind::Site => label.split('/').next().and_then(|a| a.parse().ok()),
        _ => None,
    };
    // A claimed identity is what a refused credential said it was: anyone can name anyone, so it is
    // never a principal an action could land on.
    let principal = matches!(st.kind, Kind::Principal | Kind::ApiKey).then(|| label.clone());
    let target = principal.as_ref().and_then(|_| {
        let method = METHODS.get(usize::from(st.method).checked_sub(1)?)?;
        // Raised on the principal's own request: the principal itself (its whole id and issuer), which
        // the fleet's other nodes key it by. Raised when a window closed on a tick: the key only.
        let exact = ctx.record.principal.clone().filter(|_| ctx.principal_key == Some(st.key));
        Some(PrincipalTarget { key: st.key, method: method.as_str(), whole: st.whole, principal: exact })
    });
    let explanation = format!(
        "{}: {} {} had {} = {} over {} s, against {} of {}: score {:.2}",
        d.id(),
        kind.as_str(),
        label,
        f.feature,
        round(f.observed),
        f.window_s,
        f.basis,
        round(f.baseline),
        score
    );
    alerts.push(Alert {
        detector: d,
        entity: Entity { kind, label },
        ip,
        principal,
        target,
        feature: f.feature,
        baseline: f.baseline,
        observed: f.observed,
        score,
        window_s: f.window_s,
        at_ms,
        explanation,
    });
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod agents {
    use super::*;

    fn seen(agents: &mut BTreeMap<u64, AgentOrder>, ua: u64, order: u32) -> bool {
        let r = Record {
            at_ms: 0,
            ip: IpAddr::from([192, 0, 2, 1]),
            principal: None,
            claimed: None,
            route: 0,
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            id_param: None,
            params_hash: 0,
            user_agent: ua,
            signals: crate::activity::Signals { header_order: order, flags: 0 },
            in_force: false,
        };
        agent_vote(agents, 7, &r)
    }

    /// A flood of made-up agents fills the table; an agent established before it keeps its vote, and one
    /// that appears after it is still taken and judged (before, a full table took no agent ever again).
    #[test]
    fn a_flood_of_made_up_agents_does_not_switch_the_header_order_vote_off() {
        let mut agents = BTreeMap::new();
        for _ in 0..100 {
            assert!(!seen(&mut agents, 1, 7));
        }
        for k in 0..3 * MAX_AGENTS as u64 {
            seen(&mut agents, super::super::sketch::mix(k + 1_000_000), 5);
            assert!(agents.len() <= MAX_AGENTS);
        }
        assert!(seen(&mut agents, 1, 9), "the established agent lost its vote");
        for _ in 0..60 {
            assert!(!seen(&mut agents, 2, 7));
        }
        let key = |ua: u64| super::super::sketch::mix(7 ^ ua);
        assert!(agents.contains_key(&key(2)), "a new agent was not taken");
        assert!(seen(&mut agents, 2, 9), "the new agent is not judged");
        assert!(agents.contains_key(&key(1)), "the established agent was evicted");
    }
}

#[cfg(test)]
mod usual {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However a route's windows are paced (an attacker feeding it), once warm its usual count
        /// grows by at most 1/(n + 1) of itself a window (above `least`), and its limit is never
        /// under the floor; before, it learns nothing at or over the floor, nor at half refused.
        /// (Windows are drawn mostly under the floor, so that most sequences get warm.)
        #[test]
        fn a_routes_usual_count_climbs_slowly_whatever_it_is_fed(
            seq in proptest::collection::vec((prop_oneof![4 => 0.0f64..150.0, 1 => 0.0f64..1e6], proptest::bool::weighted(0.1)), 1..600),
        ) {
            let (floor, warm, least) = (100.0, 60, 10.0);
            let (mut base, mut n) = (super::super::sketch::Ewma::default(), 0u32);
            for (observed, half) in seq {
                let (before, was) = (base.mean(), n);
                learn_usual(&mut base, &mut n, observed, half, (floor, warm, least));
                if was < warm {
                    prop_assert!(n == was || (observed < floor && !half));
                    prop_assert!(base.mean() < floor);
                } else {
                    prop_assert_eq!(n, was + 1);
                    let cap = before + detectors::learning_rate(was) * ((2.0 * before).max(least) - before).max(0.0);
                    prop_assert!(base.mean() <= cap * (1.0 + 1e-6) + 1e-6, "{} > {}", base.mean(), cap);
                }
                prop_assert!(usual_limit(&base, n, floor, warm) >= floor);
            }
        }
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    /// The snapshot's layout, pinned to its version: postcard is not self-describing, so a change to
    /// any field of what a snapshot holds must bump [`SNAPSHOT_VERSION`]. When this fails, bump it
    /// (older snapshots are then not read, and the engine starts afresh with their seed) and paste the
    /// new bytes.
    #[test]
    fn the_snapshot_layout_is_pinned_to_its_version() {
        let shapes = (
            SNAPSHOT_VERSION,
            State::default(),
            Pair::default(),
            RouteStats::default(),
            Peer::default(),
            AgentOrder::default(),
            Forest::new(1),
        );
        let bytes = postcard::to_allocvec(&shapes).unwrap();
        let hash = {
            let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
            h.write(&bytes);
            h.finish()
        };
        // (A forest seeded differently changes the figures without changing the layout: pin them then
        // without a bump.)
        assert_eq!(
            (bytes.len(), hash),
            (1_147_500, 608_678_888_147_166_939),
            "the layout changed: bump SNAPSHOT_VERSION and pin the new figures"
        );
    }
}
