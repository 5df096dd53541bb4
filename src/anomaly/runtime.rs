//! The anomaly detector in the gateway: the `anomaly:` config section, the hot-path queue, the detector
//! thread, and the responses (issue 16).
//!
//! - **Hot path.** A finished request's [`Record`] is offered to a bounded queue ([`Anomaly::offer`]):
//!   a `try_send`, nothing else. A full queue drops the record and counts it
//!   (`portcullis_anomaly_dropped_records_total`); the request never waits for the detector.
//! - **Detector thread.** One per process. It drains the queue in batches into the [`Engine`] (features,
//!   baselines, detectors), ticks it once a second of record time, and turns each [`Alert`] into the
//!   configured responses. The engine, the recent alerts and the active actions live in `Lasting`, so
//!   they survive a reload; with `snapshot: true` and a `store:`, the engine's state is also written to
//!   the store every minute and read back at start, so it survives a restart. The store's writes (the
//!   state, gzipped, and the actions in force) go through a thread of their own (`Saver`), so the
//!   detector thread never waits on compression or the disk.
//! - **Responses**, per detector: `log` (an `anomaly.alert` security event, always), `alert` (the same
//!   event at high severity, so SIEM exporters filtering on severity see it), `throttle` (that principal
//!   or address gets a rate of its own for a time: 429), `ban` (a temporary ban through the guard's
//!   bans: 403 `banned`, shared through Redis or the store like every ban), `challenge` (that principal
//!   is refused with 401 `reauthenticate` until it presents a credential issued after the alert: a JWT
//!   whose `iat` is newer; other credentials until the challenge expires or is lifted). In `monitor`
//!   mode (the default) only `log` and `alert` happen; the event says what `enforce` would have done.
//! - Every action expires, is listed by the admin API (`/admin/v1/anomaly/actions`) and can be lifted.
//!
//! Clocks: detectors and action expiry use wall time, or, in test builds with the `sim-clock` feature
//! and `clock: simulated`, the request's `Portcullis-Sim-Time` header (milliseconds since the epoch),
//! so the traffic simulator can replay days in minutes. Bans are the guard's and always use wall time.

use super::fleet::{self, Op, Outbox, Shared, SharedTarget};
use super::{Alert, Detector, Engine, EntityKind, Record, Settings};
use crate::events::{Emitter, Event, Kind, Severity};
use crate::exchange::{Exchange, Principal, PrincipalKind, Reject};
use crate::guard::bans::{Bans, Target};
use crate::limit::gcra::{self, Clock as _};
use crate::limit::RateSpec;
use crate::observe::metrics::AnomalyMetrics;
use crate::units::Dur;
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The request header carrying simulated time (`sim-clock` builds with `clock: simulated` only).
pub const SIM_TIME_HEADER: &str = "portcullis-sim-time";
/// Alerts kept for the admin API and the dashboard.
pub const RECENT_ALERTS: usize = 4096;
/// How often the detector thread drains the queue when it is idle.
const POLL: Duration = Duration::from_millis(50);
/// How often the fleet's shared actions are written and read (`redis.share_bans: true`), as the
/// fleet's ban list is.
const FLEET_POLL: Duration = crate::guard::bans::POLL;
/// [`ActiveAction::origin`] of this node's own actions.
const HERE: &str = "here";
/// How often the engine's state is written to the store (`snapshot: true`).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);
/// The actions row is written at most this often (when they changed): every batch that set, extended
/// or expired an action wrote the whole list, and with tens of thousands in force (an attacker whose
/// many /64s each trip their own limit) serialising it took the detector thread over a second each
/// time (a review's measurement, debug build: 1.5 s at 65,536 actions), so records queued and dropped.
const ACTIONS_SAVE_EVERY: Duration = Duration::from_secs(1);

/// `anomaly:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// `monitor` (default: log and alert only) or `enforce` (also throttle, ban, challenge).
    #[serde(default)]
    pub mode: Mode,
    /// 1.0 by default; higher fires at lower scores, lower only on the clearest cases.
    #[serde(default = "default_sensitivity")]
    pub sensitivity: f64,
    /// Entities tracked (principals, keys, addresses, routes); the least recently seen go first,
    /// newcomers before entities with history (`anomaly::table`).
    #[serde(default = "default_max_entities")]
    pub max_entities: usize,
    /// IPv6 clients are one entity per prefix of this length.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// One alert per detector and entity per this long.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// Records waiting for the detector thread; beyond it they are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Keep the engine's state in the `store:` (SQLite) so it survives a restart.
    #[serde(default)]
    pub snapshot: bool,
    /// `wall` (default). `simulated` exists only in builds with the `sim-clock` feature (tests).
    #[serde(default)]
    pub clock: ClockKind,
    /// Per detector (`credential_stuffing`, `password_spraying`, `enumeration`, `volumetric`,
    /// `token_sharing`, `exfiltration`, `unusual_hours`, `automation`, `model`): `enabled`, `actions`,
    /// `duration`, `throttle`.
    #[serde(default)]
    pub detectors: BTreeMap<String, DetectorConfig>,
}

/// A route's `bot:`: refuse a client address whose bot score (0 to 1, from the `automation`
/// detector's evidence) is at least `refuse_at`: 403 `bot` in `enforce` mode; in `monitor` mode the
/// request goes on and a `guard.blocked` event says it would have been refused.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    pub refuse_at: f64,
}

fn default_sensitivity() -> f64 {
    1.0
}
fn default_max_entities() -> usize {
    1_000_000
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_cooldown() -> Dur {
    Dur::secs(600)
}
fn default_queue() -> usize {
    65_536
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Monitor,
    Enforce,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    #[default]
    Wall,
    #[cfg(feature = "sim-clock")]
    Simulated,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What happens on an alert; default per detector (see `docs/anomaly.md`).
    #[serde(default)]
    pub actions: Option<Vec<Action>>,
    /// How long a throttle, ban or challenge lasts (default 15m).
    #[serde(default)]
    pub duration: Option<Dur>,
    /// The rate a throttled entity gets (default 1/s).
    #[serde(default)]
    pub throttle: Option<RateSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Log,
    Alert,
    Throttle,
    Ban,
    Challenge,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Alert => "alert",
            Action::Throttle => "throttle",
            Action::Ban => "ban",
            Action::Challenge => "challenge",
        }
    }
}

/// A detector's actions when the config does not say.
pub fn default_actions(d: Detector) -> &'static [Action] {
    match d {
        Detector::CredentialStuffing => &[Action::Log, Action::Alert, Action::Ban],
        // The attempts come from many addresses and never authenticate: nothing to throttle or ban.
        Detector::PasswordSpraying => &[Action::Log, Action::Alert],
        Detector::Enumeration => &[Action::Log, Action::Alert, Action::Throttle],
        // One false alarm in 100,800 client-hours of the simulator's long run, but refusing a busy
        // integration by mistake costs more than a scraper served a little longer: it alerts.
        Detector::Volumetric => &[Action::Log, Action::Alert],
        Detector::TokenSharing => &[Action::Log, Action::Alert, Action::Challenge],
        Detector::Exfiltration => &[Action::Log, Action::Alert],
        Detector::UnusualHours | Detector::Automation | Detector::Model => &[Action::Log],
    }
}

/// One detector's compiled policy.
#[derive(Debug, Clone)]
struct DetectorPolicy {
    enabled: bool,
    actions: Vec<Action>,
    duration_ms: u64,
    throttle: gcra::Rate,
}

/// The compiled `anomaly:` section.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    simulated: bool,
    settings: SettingsKey,
    detectors: HashMap<Detector, DetectorPolicy>,
    snapshot: Option<PathBuf>,
    queue: usize,
    /// The lowest `refuse_at` of the routes' `bot:`, when any route has one.
    bot_floor: Option<f32>,
}

/// The settings the engine is built with; a reload that changes them gives them to the engine in
/// place (a new `max_entities` rebuilds it from its own snapshot).
#[derive(Debug, Clone, PartialEq)]
struct SettingsKey {
    sensitivity: f64,
    max_entities: usize,
    ipv6_prefix: u8,
    cooldown_ms: u64,
    enabled: Vec<Detector>,
}

impl SettingsKey {
    fn settings(&self) -> Settings {
        Settings {
            sensitivity: self.sensitivity,
            max_entities: self.max_entities,
            ipv6_prefix: self.ipv6_prefix,
            cooldown_ms: self.cooldown_ms,
            enabled: self.enabled.clone(),
            seed: None,
        }
    }
}

impl Policy {
    /// Checks and compiles the section; `store` is the top-level `store.sqlite` path, if any.
    pub fn compile(c: &AnomalyConfig, store: Option<&std::path::Path>) -> Result<Policy, String> {
        if !(c.sensitivity.is_finite() && (0.1..=10.0).contains(&c.sensitivity)) {
            return Err(format!("sensitivity {} must be between 0.1 and 10", c.sensitivity));
        }
        if !(1_000..=10_000_000).contains(&c.max_entities) {
            return Err(format!("max_entities {} must be between 1000 and 10000000", c.max_entities));
        }
        if !(32..=128).contains(&c.ipv6_prefix) {
            return Err(format!("ipv6_prefix {} must be between 32 and 128", c.ipv6_prefix));
        }
        if !(1_024..=4_194_304).contains(&c.queue) {
            return Err(format!("queue {} must be between 1024 and 4194304", c.queue));
        }
        for name in c.detectors.keys() {
            if Detector::from_id(name).is_none() {
                let known: Vec<_> = Detector::ALL.iter().map(|d| d.id()).collect();
                return Err(format!("`{name}` is not a detector; the detectors are {}", known.join(", ")));
            }
        }
        let mut detectors = HashMap::new();
        let mut enabled = Vec::new();
        for d in Detector::ALL {
            let cfg = c.detectors.get(d.id());
            let on = cfg.is_none_or(|c| c.enabled);
            if on {
                enabled.push(d);
            }
            let mut actions: Vec<Action> =
                cfg.and_then(|c| c.actions.clone()).unwrap_or_else(|| default_actions(d).to_vec());
            if !actions.contains(&Action::Log) {
                // Every alert is a security event: `log` is implied.
                actions.insert(0, Action::Log);
            }
            actions.sort();
            actions.dedup();
            if d == Detector::PasswordSpraying
                && actions.iter().any(|a| matches!(a, Action::Throttle | Action::Ban | Action::Challenge))
            {
                // Its entity is the identity refused credentials named: anyone can name anyone, so a
                // response there would land on whoever an attacker chose.
                return Err("detectors.password_spraying can only `log` and `alert`: its entity is the identity \
                     that failing credentials claimed, which any client can name"
                    .into());
            }
            if matches!(d, Detector::CredentialStuffing | Detector::Automation) && actions.contains(&Action::Challenge)
            {
                // A challenge lands on a principal; these judge client addresses only, so it would
                // never be put in force.
                return Err(format!(
                    "detectors.{}: `challenge` needs a principal, and this detector judges client addresses \
                     only: use `throttle` or `ban`",
                    d.id()
                ));
            }
            let duration = cfg.and_then(|c| c.duration).map_or(Duration::from_secs(900), |d| d.0);
            if duration < Duration::from_secs(1) || duration > Duration::from_secs(30 * 86_400) {
                return Err(format!("detectors.{}.duration must be between 1s and 30d", d.id()));
            }
            let throttle = cfg.and_then(|c| c.throttle).unwrap_or(RateSpec { count: 1, per_secs: 1 });
            let per = throttle.per_secs.saturating_mul(1_000_000_000);
            detectors.insert(
                d,
                DetectorPolicy {
                    enabled: on,
                    actions,
                    duration_ms: duration.as_millis() as u64,
                    throttle: gcra::Rate::new(throttle.count, per, u32::try_from(throttle.count).unwrap_or(u32::MAX)),
                },
            );
        }
        if c.snapshot && store.is_none() {
            return Err("snapshot: true needs a top-level `store:` to keep the state in".into());
        }
        #[cfg(feature = "sim-clock")]
        let simulated = c.clock == ClockKind::Simulated;
        #[cfg(not(feature = "sim-clock"))]
        let simulated = false;
        Ok(Policy {
            mode: c.mode,
            simulated,
            settings: SettingsKey {
                sensitivity: c.sensitivity,
                max_entities: c.max_entities,
                ipv6_prefix: c.ipv6_prefix,
                cooldown_ms: c.cooldown.0.as_millis() as u64,
                enabled,
            },
            detectors,
            snapshot: if c.snapshot { store.map(std::path::Path::to_path_buf) } else { None },
            queue: c.queue,
            bot_floor: None,
        })
    }

    /// The routes' `bot:` thresholds (by route name): the detector publishes the addresses whose bot
    /// score reaches the lowest. Each must be over 0 and at most 1, and needs the `automation` detector.
    pub fn with_bots<'a>(mut self, refuse_at: impl IntoIterator<Item = (&'a str, f64)>) -> Result<Policy, String> {
        for (route, t) in refuse_at {
            if t.is_nan() || t <= 0.0 || t > 1.0 {
                return Err(format!("route `{route}` bot: refuse_at {t} must be over 0 and at most 1"));
            }
            if !self.detectors.get(&Detector::Automation).is_some_and(|d| d.enabled) {
                return Err(format!("route `{route}` bot: needs the `automation` detector enabled in `anomaly:`"));
            }
            self.bot_floor = Some(self.bot_floor.map_or(t as f32, |f: f32| f.min(t as f32)));
        }
        Ok(self)
    }

    /// True when requests must pass the anomaly stage (enforce mode: throttles and challenges).
    pub fn enforces(&self) -> bool {
        self.mode == Mode::Enforce
    }

    /// What `check` prints.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        };
        format!("anomaly {mode}")
    }
}

/// Where the running detector is found: by the anomaly stage and the request records.
pub type Slot = Arc<ArcSwapOption<Anomaly>>;

/// The `anomaly:` section of one compiled config.
pub struct AnomalyRt {
    pub policy: Policy,
    pub slot: Slot,
    /// Route ids to names, for explanations and suggestions.
    routes: HashMap<u16, Arc<str>>,
    /// The fleet's Redis, when actions are shared with it (`redis.share_bans: true`).
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl AnomalyRt {
    pub fn new(policy: Policy, routes: HashMap<u16, Arc<str>>, fleet: Option<Arc<crate::fleet::Fleet>>) -> AnomalyRt {
        AnomalyRt { policy, slot: Arc::new(ArcSwapOption::empty()), routes, fleet }
    }

    /// Puts this config's policy in force on the process's detector (made on first use).
    pub fn activate(&self, kept: &Kept, bans: Arc<Bans>, events: Emitter, metrics: &AnomalyMetrics) {
        let a = kept.get(self.policy.clone(), metrics);
        a.attach(bans, events, self.routes.clone(), self.fleet.clone());
        self.slot.store(Some(a));
    }

    /// The detector, once this config is in force.
    #[inline]
    pub fn current(&self) -> Option<Arc<Anomaly>> {
        self.slot.load_full()
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An alert as kept for the admin API: the engine's alert, its id and what was done.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub id: u64,
    pub detector: &'static str,
    pub entity: EntityView,
    pub ip: Option<String>,
    pub principal: Option<String>,
    pub feature: &'static str,
    pub baseline: f64,
    pub observed: f64,
    pub score: f64,
    pub window_s: u32,
    pub at_ms: u64,
    pub explanation: String,
    /// The responses configured for this detector.
    pub actions: Vec<&'static str>,
    /// True when the throttle/ban/challenge among them were put in force (`enforce` mode).
    pub enforced: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityView {
    pub kind: &'static str,
    pub label: String,
}

/// An action in force.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAction {
    pub id: u64,
    /// `throttle`, `ban` or `challenge`.
    pub kind: &'static str,
    /// `ip` (an address or prefix) or `principal` (`<method>:<id>`; an id over 32 bytes is cut there,
    /// and the action still matches only the whole id it was raised on).
    pub target_kind: &'static str,
    pub target: String,
    /// A principal target's engine key: what requests are matched with.
    #[serde(skip)]
    pub key: Option<u64>,
    /// True when it holds on every node of the fleet: a ban given to the guard's ban list (shared
    /// through Redis or the store once written; until then, and while they are down, it holds on
    /// this node), or an action in the fleet's shared actions (`redis.share_bans: true`, see
    /// `anomaly::fleet`). Otherwise it holds on this node only.
    pub shared: bool,
    /// `here` when this node raised it; else the node of the fleet that did.
    pub origin: String,
    pub detector: &'static str,
    pub alert: u64,
    /// Record time the action started (ms since the epoch; simulated time under the simulated clock).
    pub since_ms: u64,
    pub expires_ms: u64,
    /// A throttle's rate, e.g. `1/s`.
    pub rate: Option<String>,
    /// A throttle's rate as enforced.
    #[serde(skip)]
    throttle: Option<gcra::Rate>,
    /// A ban the guard's ban list enforces (by address, or `api_key:<id>`); the stage holds the rest.
    #[serde(skip)]
    in_bans: bool,
    /// What this node wrote it to the fleet's shared actions as (its own actions only).
    #[serde(skip)]
    fleet: Option<SharedTarget>,
    /// An address target as the view looks it up (network and prefix length), parsed once: the
    /// view's builds take many at a time (the fleet's, under their list's lock).
    #[serde(skip)]
    net: Option<(IpAddr, u8)>,
}

/// An action in force as the store keeps it across a restart (`snapshot: true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptAction {
    id: u64,
    kind: String,
    target_kind: String,
    target: String,
    key: Option<u64>,
    shared: bool,
    detector: String,
    alert: u64,
    since_ms: u64,
    expires_ms: u64,
    rate: Option<String>,
    /// A throttle's interval (ns) and burst.
    throttle: Option<(u64, u32)>,
    in_bans: bool,
    fleet: Option<SharedTarget>,
}

/// The actions row: the actions, and the seed their principals' keys were made with. The state row
/// is written once a minute and at shutdown; the actions row at every change. So a process killed
/// before its first state row (or whose state row is lost with its seed) still finds the seed here,
/// and its principals' actions match again. An earlier build's row is the bare list.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum KeptActions {
    Seeded {
        seed: u64,
        actions: Vec<KeptAction>,
        /// The node's name in the fleet's hash (none in an earlier build's row): the fields of its
        /// shared actions there.
        #[serde(default)]
        node: Option<String>,
        /// Earlier processes' shared actions this one adopted (`adopt_kept`) and still holds, by
        /// their fields in the fleet's hash: so that they also hold across a second restart while
        /// Redis is down (an earlier build ignores them, as it would any unknown field here).
        /// (Each read alone: one this build cannot read, a later build's, is skipped, not the row.)
        #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "readable_adopted")]
        adopted: Vec<(String, Shared)>,
        /// Lifts of the fleet's actions not yet written to Redis (down): written at the next start
        /// that shares actions, so that a restart before Redis is back does not undo them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lifting: Vec<(String, u64)>,
    },
    Bare(Vec<KeptAction>),
}

/// The row's adopted actions, those this build can read.
fn readable_adopted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, Shared)>, D::Error> {
    let all: Vec<serde_json::Value> = Deserialize::deserialize(d)?;
    Ok(all.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect())
}

impl KeptActions {
    fn seed(&self) -> Option<u64> {
        match self {
            KeptActions::Seeded { seed, .. } => Some(*seed),
            KeptActions::Bare(_) => None,
        }
    }
}

impl From<&ActiveAction> for KeptAction {
    fn from(a: &ActiveAction) -> KeptAction {
        KeptAction {
            id: a.id,
            kind: a.kind.to_owned(),
            target_kind: a.target_kind.to_owned(),
            target: a.target.clone(),
            key: a.key,
            shared: a.shared,
            detector: a.detector.to_owned(),
            alert: a.alert,
            since_ms: a.since_ms,
            expires_ms: a.expires_ms,
            rate: a.rate.clone(),
            throttle: a.throttle.map(|r| (r.interval, r.burst)),
            in_bans: a.in_bans,
            fleet: a.fleet.clone(),
        }
    }
}

impl KeptAction {
    /// The action again, or `None` when a name in it is not one this build knows.
    fn into_action(self) -> Option<ActiveAction> {
        let kind = [Action::Throttle, Action::Ban, Action::Challenge].into_iter().find(|a| a.as_str() == self.kind)?;
        let target_kind = ["ip", "principal"].into_iter().find(|t| *t == self.target_kind)?;
        let detector = Detector::from_id(&self.detector)?.id();
        Some(ActiveAction {
            id: self.id,
            kind: kind.as_str(),
            target_kind,
            key: self.key,
            shared: self.shared,
            origin: HERE.to_owned(),
            detector,
            alert: self.alert,
            since_ms: self.since_ms,
            expires_ms: self.expires_ms,
            rate: self.rate,
            throttle: self
                .throttle
                .map(|(interval, burst)| gcra::Rate { interval: interval.max(1), burst: burst.max(1) }),
            in_bans: self.in_bans,
            fleet: self.fleet,
            net: (target_kind != "principal").then(|| address_target(&self.target)).flatten(),
            target: self.target,
        })
    }
}

impl ActiveAction {
    /// What a lift matches on every node: the kind, and the principal's key or the address.
    fn same_target(&self, other: &ActiveAction) -> bool {
        self.kind == other.kind
            && self.target_kind == other.target_kind
            && match (self.key, other.key) {
                (Some(a), Some(b)) => a == b,
                (None, None) => self.target == other.target,
                _ => false,
            }
    }

    fn shared_form(&self, fleet: &SharedTarget, node: &str) -> Shared {
        Shared {
            kind: self.kind.to_owned(),
            target: fleet.clone(),
            label: self.target.clone(),
            detector: self.detector.to_owned(),
            alert: self.alert,
            since_ms: self.since_ms,
            expires_ms: self.expires_ms,
            interval_ns: self.throttle.map(|r| r.interval),
            burst: self.throttle.map(|r| r.burst),
            rate: self.rate.clone(),
            node: node.to_owned(),
            id: self.id,
        }
    }
}

/// The per-request view of the active throttles, challenges and stage-held bans: swapped whole on
/// change, but not rebuilt whole at every change. This node's actions are a layer built whole now and
/// then (a lift, a restart, or once the delta has grown), plus a small delta of the actions set or
/// strengthened since, copied at each change; the other nodes' actions are a layer of their own,
/// rebuilt when the fleet's list moves (at most once a poll). A lookup joins the parts of the three
/// still in force. An attacker holding many /64s that each trip a limit raises thousands of actions;
/// rebuilding them all after every batch that added one (and at every expiry) cost the detector
/// thread 0.3 s a batch at 65,536 (debug build), and a detector thread that falls behind drops records.
///
/// Local actions are one a kind per target, and a replacement only strengthens its action (a later
/// expiry, the stricter rate, a later challenge start; `act` asks for a whole build otherwise), so a
/// local layer's entry is exact for each kind, and an expired action needs no rebuild: its entry's
/// part is no longer live. Expired entries are dropped at the next whole build, which comes once they
/// are half the layer.
#[derive(Default)]
struct View {
    /// This node's actions, as of the last whole build.
    local: Arc<Layer>,
    /// This node's actions set or changed since (small).
    delta: Layer,
    /// The other nodes' actions (`redis.share_bans: true`).
    remote: Arc<Layer>,
    /// The prefix lengths the IPv6 targets of the three use: an action keeps the prefix it was raised
    /// with, so a reload that changes `ipv6_prefix` does not orphan the throttles in force.
    v6_lens: Vec<u8>,
}

/// Where an action's part sits in a layer: a principal's key, or an address and prefix length.
#[derive(Clone, Copy)]
enum Spot {
    Principal(u64),
    Address(IpAddr, u8),
}

impl Spot {
    /// An action's place and part, when it has one in the view.
    fn of(a: &ActiveAction) -> Option<(Spot, Entry)> {
        let part = Entry::of(a);
        if part.is_none() {
            return None;
        }
        let spot = match (a.target_kind, a.key) {
            ("principal", Some(key)) => Spot::Principal(key),
            ("principal", None) => return None,
            _ => {
                let (ip, len) = a.net?;
                Spot::Address(ip, len)
            }
        };
        Some((spot, part))
    }
}

/// One layer of the view: each target's entry, merged from its actions.
#[derive(Default, Clone)]
struct Layer {
    /// By the principal's engine key (its method and whole id).
    principals: HashMap<u64, Entry>,
    /// By the address (length 32 or 128), or an IPv6 prefix's network address and length.
    ips: HashMap<(IpAddr, u8), Entry>,
    /// The other nodes' layer only: each of their challenges of a principal, its start and until, by
    /// the principal's key (the entry joined keeps only the latest start). `act` finds the fleet's
    /// challenges of one principal here at once, where it scanned the fleet's whole list under its
    /// lock for each challenge it raised.
    challenges: HashMap<u64, Vec<(u64, u64)>>,
}

impl Layer {
    /// A layer of `actions` (see [`Layer::add`]).
    fn of<'a>(actions: impl Iterator<Item = &'a ActiveAction>, lens: &mut Vec<u8>, own: bool) -> Layer {
        let mut layer = Layer::default();
        actions.for_each(|a| layer.add(a, lens, own));
        layer
    }

    /// Adds one action's part (noting an IPv6 prefix length it uses in `lens`): joined with what the
    /// target holds (the fleet's nodes each hold one of a kind), or, for this node's own (one of a
    /// kind a target), in its place: the part there is the same slot's, an earlier version or one
    /// since expired, and an expired strict throttle must not hold on through its successor.
    fn add(&mut self, a: &ActiveAction, lens: &mut Vec<u8>, own: bool) {
        if let Some((spot, part)) = Spot::of(a) {
            self.put(spot, part, lens, own);
        }
    }

    fn put(&mut self, spot: Spot, part: Entry, lens: &mut Vec<u8>, own: bool) {
        let e = match spot {
            Spot::Principal(key) => {
                if let Some(c) = part.challenge.filter(|_| !own) {
                    self.challenges.entry(key).or_default().push(c);
                }
                self.principals.entry(key).or_default()
            }
            Spot::Address(ip, len) => {
                if ip.is_ipv6() && !lens.contains(&len) {
                    lens.push(len);
                }
                self.ips.entry((ip, len)).or_default()
            }
        };
        *e = if own { e.overlay(part) } else { e.join(part) };
    }

    fn len(&self) -> usize {
        self.principals.len() + self.ips.len()
    }
}

impl View {
    fn layers(&self) -> [&Layer; 3] {
        [&self.local, &self.delta, &self.remote]
    }

    fn has_principals(&self) -> bool {
        self.layers().iter().any(|l| !l.principals.is_empty())
    }

    fn has_ips(&self) -> bool {
        self.layers().iter().any(|l| !l.ips.is_empty())
    }

    /// What the layers hold for a principal's key.
    fn held_principal(&self, key: u64) -> Option<Held> {
        Held::of(self.layers().map(|l| l.principals.get(&key).copied()))
    }

    /// What the layers hold for a client address (IPv4, or IPv6 by every prefix an action uses: the
    /// fleet's nodes, or one node across a reload, may use more than one).
    fn held_address(&self, ip: IpAddr) -> impl Iterator<Item = ((IpAddr, u8), Held)> + '_ {
        let ip = ip.to_canonical();
        let lens: &[u8] = if ip.is_ipv4() { &[32] } else { &self.v6_lens };
        lens.iter().filter_map(move |&len| {
            let key = (if ip.is_ipv4() { ip } else { crate::exchange::client_net(ip, len).network() }, len);
            Held::of(self.layers().map(|l| l.ips.get(&key).copied())).map(|h| (key, h))
        })
    }

    /// What is in force at `now` for a principal's key (for tests).
    #[cfg(test)]
    fn principal(&self, key: u64, now: u64) -> Option<Entry> {
        self.held_principal(key).map(|h| h.at(now))
    }

    /// What is in force at `now` for a client address (for tests).
    #[cfg(test)]
    fn address(&self, ip: IpAddr, now: u64) -> impl Iterator<Item = ((IpAddr, u8), Entry)> + '_ {
        self.held_address(ip).map(move |(key, h)| (key, h.at(now)))
    }

    /// Targets held, counting one held by two layers once (for tests).
    #[cfg(test)]
    fn ips_len(&self) -> usize {
        self.layers().iter().flat_map(|l| l.ips.keys()).collect::<std::collections::HashSet<_>>().len()
    }
}

/// One target's entries in the three layers, as found (the request's time is read only then).
struct Held([Option<Entry>; 3]);

impl Held {
    fn of(found: [Option<Entry>; 3]) -> Option<Held> {
        found.iter().any(Option::is_some).then_some(Held(found))
    }

    /// The layers' parts in force at `now`, joined.
    fn at(&self, now: u64) -> Entry {
        self.0.iter().flatten().fold(Entry::default(), |e, f| e.join(f.live(now)))
    }
}

/// What is in force for one principal or address, each kind with its own expiry.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Entry {
    /// A throttle's rate, until.
    throttle: Option<(gcra::Rate, u64)>,
    /// A challenge's start, until.
    challenge: Option<(u64, u64)>,
    /// A principal ban held by the stage (by key), until: the ones the fleet's ban list cannot name.
    ban: Option<u64>,
}

impl Entry {
    /// One action's part: a throttle, a challenge, or a principal ban the fleet's list does not hold
    /// (address bans are the guard's).
    fn of(a: &ActiveAction) -> Entry {
        let mut e = Entry::default();
        match a.kind {
            "throttle" => e.throttle = a.throttle.map(|rate| (rate, a.expires_ms)),
            "challenge" if a.target_kind == "principal" => e.challenge = Some((a.since_ms, a.expires_ms)),
            "ban" if a.key.is_some() && !a.in_bans => e.ban = Some(a.expires_ms),
            _ => {}
        }
        e
    }

    fn is_none(&self) -> bool {
        self.throttle.is_none() && self.challenge.is_none() && self.ban.is_none()
    }

    /// Two entries of one target as one: the stricter rate (the longer interval, then the smaller
    /// burst) and the later expiry hold; a challenge takes the later start (each node's start already
    /// kept the one before it while the alert's window held that evidence: see `act`).
    fn join(self, o: Entry) -> Entry {
        Entry {
            throttle: match (self.throttle, o.throttle) {
                (Some((r, u)), Some((q, v))) => Some((if stricter(q, r) { q } else { r }, u.max(v))),
                (t, None) | (None, t) => t,
            },
            challenge: match (self.challenge, o.challenge) {
                (Some((s, u)), Some((t, v))) => Some((s.max(t), u.max(v))),
                (c, None) | (None, c) => c,
            },
            ban: self.ban.max(o.ban),
        }
    }

    /// `part`'s kinds in place of this one's.
    fn overlay(self, part: Entry) -> Entry {
        Entry {
            throttle: part.throttle.or(self.throttle),
            challenge: part.challenge.or(self.challenge),
            ban: part.ban.or(self.ban),
        }
    }

    /// Its parts still in force at `now`.
    fn live(self, now: u64) -> Entry {
        Entry {
            throttle: self.throttle.filter(|&(_, until)| until > now),
            challenge: self.challenge.filter(|&(_, until)| until > now),
            ban: self.ban.filter(|&until| until > now),
        }
    }

    fn throttle(&self, now: u64) -> Option<gcra::Rate> {
        self.throttle.filter(|&(_, until)| until > now).map(|(rate, _)| rate)
    }

    fn challenge_since(&self, now: u64) -> Option<u64> {
        self.challenge.filter(|&(_, until)| until > now).map(|(since, _)| since)
    }

    fn banned(&self, now: u64) -> bool {
        self.ban.is_some_and(|until| until > now)
    }
}

/// What one action in force is about: its kind, and a principal's key or an address (or prefix).
type ActionKey = (&'static str, Option<u64>, String);

struct Actions {
    /// By kind and target: a repeated alert finds its action in O(1), however many are in force (an
    /// attacker with many /64s raises thousands).
    list: Mutex<HashMap<ActionKey, ActiveAction>>,
    /// The earliest expiry in `list` (or later): nothing to scan before it.
    next_expiry: AtomicU64,
    /// Actions changed since the view was last updated: the detector thread updates it once a batch.
    dirty: AtomicBool,
    /// The slots of the actions set or strengthened since: the view's delta takes them.
    changed: Mutex<Vec<ActionKey>>,
    /// A change the delta cannot carry (an action weakened): the local layer is built whole.
    whole: AtomicBool,
    /// Local actions expired since the local layer was built: still in it, no longer live.
    stale: AtomicUsize,
    /// Held while the view is built and swapped (the detector, admin and fleet threads all do).
    building: Mutex<()>,
    /// Held while the other nodes' layer is built (before `building`), so that builds swap in order.
    remote_building: Mutex<()>,
    /// The earliest expiry in `remote` (or later), and its length: the fleet thread drops the other
    /// nodes' expired actions at its polls, and no other thread needs that list's lock to know them.
    remote_next_expiry: AtomicU64,
    remote_len: AtomicUsize,
    /// Whole builds of the local layer, and builds of the other nodes' (for tests: a change, or an
    /// expiry on the detector thread, must not cost one).
    #[cfg(test)]
    builds: AtomicUsize,
    #[cfg(test)]
    remote_builds: AtomicUsize,
    /// Actions changed since the store's row was last written: the detector thread writes it at most
    /// once every [`ACTIONS_SAVE_EVERY`].
    unsaved: AtomicBool,
    /// Bans for the fleet's list raised in this batch: given to the guard's bans at once at its end.
    bans_due: Mutex<Vec<(Target, i64, String)>>,
    view: ArcSwap<View>,
    /// False while nothing is in force: the stage's whole cost then.
    any: AtomicBool,
    /// Action ids are this node's tag (20 random bits) and a count (32 bits): unique in the fleet,
    /// so an id lifts the same action on any node, and under 2^53 (the dashboard's numbers).
    next_id: AtomicU64,
    throttles: gcra::LocalStore,
    clock: gcra::Monotonic,
    /// The engine's key seed (fixed for the detector's life): principals' keys are computed with it.
    seed: u64,
    /// The other nodes' actions (`redis.share_bans: true`), by their field in the fleet's hash.
    remote: Mutex<HashMap<String, ActiveAction>>,
    /// Changes for the fleet's hash, written by the fleet thread.
    outbox: Mutex<Outbox>,
    /// The previous process's shared actions, by their fields in the fleet's hash, until `attach`
    /// (see `restore_actions`).
    kept_shared: Mutex<Vec<(String, Shared)>>,
    /// Those of them adopted, as the fleet's hash last had them (or the store's row, until it is
    /// read): written to this process's row while they are in `remote` (locked after it).
    adopted: Mutex<HashMap<String, Shared>>,
    /// The previous process's lifts not yet written to the fleet's hash, until `attach`.
    kept_lifts: Mutex<Vec<(String, u64)>>,
    /// Held while the list is copied and written to the store, so that writes land in the order the
    /// list changed (a lift on the admin thread and a batch on the detector thread).
    saving: Mutex<()>,
    /// This node's name in the fleet's hash.
    node: String,
}

/// The detector of one process: kept in `Lasting`, so its state survives reloads.
pub struct Anomaly {
    tx: SyncSender<Record>,
    dropped: AtomicU64,
    metrics: AnomalyMetrics,
    policy: ArcSwap<Policy>,
    inner: Arc<Inner>,
}

struct Inner {
    engine: Mutex<Engine>,
    alerts: Mutex<VecDeque<Stored>>,
    next_alert: AtomicU64,
    actions: Actions,
    bans: ArcSwapOption<Bans>,
    /// The fleet's Redis, when actions are shared (`redis.share_bans: true`).
    fleet: ArcSwapOption<crate::fleet::Fleet>,
    fleet_started: AtomicBool,
    emitter: ArcSwap<Emitter>,
    policy: ArcSwap<Policy>,
    /// Route ids to names, for explanations and suggestions.
    routes: ArcSwap<HashMap<u16, Arc<str>>>,
    alerts_total: AtomicU64,
    entities: AtomicU64,
    memory: AtomicU64,
    /// The newest record time seen (the simulated clock's "now").
    last_record: AtomicU64,
    metrics: AnomalyMetrics,
    bots: Bots,
    /// Snapshots on their way to the store.
    saver: Arc<Saver>,
}

/// Writes to the store (the engine's snapshot, the actions in force) off the detector thread, in the
/// order the writes were asked for: a million entities take a few hundred megabytes and seconds to
/// compress and write, and records would wait meanwhile (so would an action's write behind them, on
/// the same SQLite file). At most one snapshot is queued or being written: the periodic one is
/// skipped while one is (the next comes a minute later).
#[derive(Default)]
struct Saver {
    busy: AtomicBool,
    /// Writes are numbered as asked for, per row (`STATE`, `ACTIONS`), and the store keeps the
    /// newest of each: the ones written at shutdown are not replaced by older ones still queued.
    taken: [AtomicU64; 2],
    written: Mutex<[u64; 2]>,
    queue: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

const STATE: usize = 0;
const ACTIONS: usize = 1;

struct Job {
    row: usize,
    n: u64,
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

/// Clears the saver's `busy` when a snapshot's write ends, however it ends.
struct Written<'a>(&'a AtomicBool);

impl Drop for Written<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

impl Saver {
    fn next(&self, row: usize) -> u64 {
        self.taken[row].fetch_add(1, Relaxed) + 1
    }

    fn write(&self, job: &Job) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if job.n <= written[job.row] {
            return;
        }
        let saved = if job.row == STATE {
            snapshot::save(&job.path, &job.bytes)
        } else {
            snapshot::save_actions(&job.path, &job.bytes)
        };
        match saved {
            Ok(()) => written[job.row] = job.n,
            Err(e) if job.row == STATE => tracing::warn!(error = %e, "anomaly: the state was not written to the store"),
            Err(e) => tracing::warn!(error = %e, "anomaly: the actions in force were not written to the store"),
        }
    }

    /// Hands `job` to the writer thread (started on first use, and again if it died); written here
    /// when no thread can be started.
    fn behind(self: &Arc<Self>, job: Job) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match queue.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let saver = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("anomaly-store".into()).spawn(move || {
            for job in rx {
                let Some(saver) = saver.upgrade() else { return };
                let _done = (job.row == STATE).then(|| Written(&saver.busy));
                saver.write(&job);
            }
        });
        match spawned {
            Ok(_) => {
                // (The thread owns the receiver, so this send cannot fail.)
                let _ = tx.send(job);
                *queue = Some(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "anomaly: no thread to write to the store; writing here");
                drop(queue);
                let _done = (job.row == STATE).then(|| Written(&self.busy));
                self.write(&job);
            }
        }
    }
}

/// The addresses whose bot score reached the lowest route's `bot.refuse_at`, for the `Bot` stage.
/// The detector thread scores each record's address after the engine has seen it; a mark holds for
/// the `automation` detector's `duration` after the address's last request so scored, and goes at
/// once when a request brings its score under the floor.
#[derive(Default)]
struct Bots {
    /// By the address's network (IPv6 by the engine's prefix): its score, and until when (ms).
    marks: Mutex<HashMap<IpAddr, (f32, u64)>>,
    /// The scores the stage reads, rebuilt when a mark comes, goes or changes its score.
    view: ArcSwap<HashMap<IpAddr, f32>>,
    /// False while no address is marked: the stage's whole cost then.
    any: AtomicBool,
    dirty: AtomicBool,
}

/// Addresses (networks) marked for the routes' `bot:` at most: beyond it, new ones wait for marks to
/// expire (about 4 MiB, and one rebuild of the stage's map per batch that changes a mark).
const MAX_BOT_MARKS: usize = 65_536;

/// What outlives a reload: the one detector of the process, and the route ids.
#[derive(Default)]
pub struct Kept {
    detector: Mutex<Option<Arc<Anomaly>>>,
    route_ids: Mutex<HashMap<Box<str>, u16>>,
}

impl Kept {
    /// A route's id in records: the same name gets the same id for the life of the process, so a
    /// reload that reorders routes does not mix their baselines. Ids run out after 65,534 names (then
    /// 65,534 is shared, which only blurs those routes' baselines).
    pub fn route_id(&self, name: &str) -> u16 {
        let mut ids = self.route_ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let id = u16::try_from(ids.len()).unwrap_or(u16::MAX - 1).min(u16::MAX - 1);
        ids.insert(name.into(), id);
        id
    }

    /// The process's detector with this policy in force: made (and started) on first use, else given
    /// the new policy (the engine takes new settings in place; a new `max_entities` rebuilds it from
    /// its own snapshot).
    pub fn get(&self, policy: Policy, metrics: &AnomalyMetrics) -> Arc<Anomaly> {
        let mut slot = self.detector.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = slot.as_ref() {
            a.set_policy(policy);
            return a.clone();
        }
        let a = Anomaly::start(policy, metrics.clone());
        *slot = Some(a.clone());
        a
    }

    /// The detector, when one was ever configured.
    pub fn current(&self) -> Option<Arc<Anomaly>> {
        self.detector.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl crate::activity::Sink for Anomaly {
    /// The hot path's whole cost: offer the record; a full queue drops it.
    #[inline]
    fn offer(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                self.metrics.dropped.inc();
            }
        }
    }
}

impl Anomaly {
    fn start(policy: Policy, metrics: AnomalyMetrics) -> Arc<Anomaly> {
        let settings = policy.settings.settings();
        let mut restored = false;
        // A stored state that cannot be used: what it learnt is lost, but with its seed (when it can be
        // read) the keys stay the same, so the actions in force (keyed with it) still match their
        // principals.
        let mut afresh = |seed: Option<u64>, what: &str, e: &str| match seed {
            Some(seed) => {
                tracing::warn!(error = %e, "anomaly: the stored state {what}; starting afresh with its seed");
                restored = true;
                Engine::new(Settings { seed: Some(seed), ..settings.clone() })
            }
            None => {
                tracing::warn!(error = %e, "anomaly: the stored state {what}; starting afresh");
                Engine::new(settings.clone())
            }
        };
        // The actions row, read first: its seed serves when the state row has none to give.
        let kept_actions = policy.snapshot.as_deref().and_then(|p| match snapshot::load_actions(p) {
            Ok(Some(bytes)) => serde_json::from_slice::<KeptActions>(&bytes)
                .inspect_err(|e| tracing::warn!(error = %e, "anomaly: the stored actions were not usable"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "anomaly: the stored actions could not be read");
                None
            }
        });
        let kept_seed = kept_actions.as_ref().and_then(KeptActions::seed);
        let engine = match policy.snapshot.as_deref().and_then(|p| snapshot::load(p).transpose()) {
            Some(Ok(bytes)) => match Engine::restore(settings.clone(), &bytes) {
                Ok(e) => {
                    tracing::info!("anomaly: state restored from the store");
                    restored = true;
                    e
                }
                // Another build's layout.
                // The actions row's seed first: the actions are what is left to keep.
                Err(e) => afresh(kept_seed.or(Engine::seed_of(&bytes)), "was not usable", &e),
            },
            // A row cut short or damaged past its head.
            Some(Err(e)) => afresh(
                kept_seed.or_else(|| policy.snapshot.as_deref().and_then(snapshot::salvage_seed)),
                "could not be read",
                &e,
            ),
            // None yet (the process before stopped before its first, a minute in): the actions' seed.
            None => Engine::new(Settings { seed: kept_seed.or(settings.seed), ..settings.clone() }),
        };
        let (tx, rx) = sync_channel(policy.queue);
        let policy = Arc::new(policy);
        let seed = engine.seed();
        let inner = Arc::new(Inner {
            engine: Mutex::new(engine),
            alerts: Mutex::new(VecDeque::new()),
            next_alert: AtomicU64::new(1),
            actions: Actions {
                list: Mutex::new(HashMap::new()),
                next_expiry: AtomicU64::new(u64::MAX),
                dirty: AtomicBool::new(false),
                changed: Mutex::new(Vec::new()),
                whole: AtomicBool::new(false),
                stale: AtomicUsize::new(0),
                building: Mutex::new(()),
                remote_building: Mutex::new(()),
                remote_next_expiry: AtomicU64::new(u64::MAX),
                remote_len: AtomicUsize::new(0),
                #[cfg(test)]
                builds: AtomicUsize::new(0),
                #[cfg(test)]
                remote_builds: AtomicUsize::new(0),
                unsaved: AtomicBool::new(false),
                bans_due: Mutex::new(Vec::new()),
                view: ArcSwap::from_pointee(View::default()),
                any: AtomicBool::new(false),
                next_id: AtomicU64::new((super::engine::random_seed() % ((1 << 20) - 1) + 1) << 32 | 1),
                throttles: gcra::LocalStore::new(100_000),
                clock: gcra::Monotonic::default(),
                seed,
                remote: Mutex::new(HashMap::new()),
                outbox: Mutex::new(Outbox::default()),
                kept_shared: Mutex::new(Vec::new()),
                adopted: Mutex::new(HashMap::new()),
                kept_lifts: Mutex::new(Vec::new()),
                saving: Mutex::new(()),
                node: fleet::node_name(),
            },
            bans: ArcSwapOption::empty(),
            fleet: ArcSwapOption::empty(),
            fleet_started: AtomicBool::new(false),
            emitter: ArcSwap::from_pointee(Emitter::default()),
            policy: ArcSwap::new(policy.clone()),
            routes: ArcSwap::from_pointee(HashMap::new()),
            alerts_total: AtomicU64::new(0),
            entities: AtomicU64::new(0),
            memory: AtomicU64::new(0),
            last_record: AtomicU64::new(0),
            bots: Bots::default(),
            saver: Arc::default(),
            metrics: metrics.clone(),
        });
        // The actions this node had in force: a principal's when the engine they were keyed with came
        // back too.
        inner.restore_actions(kept_actions, restored);
        let worker = inner.clone();
        let spawned = std::thread::Builder::new().name("anomaly".into()).spawn(move || worker.run(&rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "anomaly: the detector thread could not start; records are dropped");
        }
        Arc::new(Anomaly { tx, dropped: AtomicU64::new(0), policy: ArcSwap::new(policy), inner, metrics })
    }

    fn set_policy(&self, policy: Policy) {
        let old = self.policy.load_full();
        if old.settings != policy.settings {
            let mut engine = self.inner.engine.lock().unwrap_or_else(PoisonError::into_inner);
            // Another table size: the state goes through a snapshot into the new one.
            if !engine.reconfigure(policy.settings.settings()) {
                let bytes = engine.snapshot();
                match Engine::restore(policy.settings.settings(), &bytes) {
                    Ok(e) => *engine = e,
                    Err(e) => {
                        tracing::warn!(error = %e, "anomaly: state not carried over to the new settings");
                        // The same seed: the actions in force keep matching their principals.
                        let settings = Settings { seed: Some(self.inner.actions.seed), ..policy.settings.settings() };
                        *engine = Engine::new(settings);
                    }
                }
            }
        }
        let policy = Arc::new(policy);
        self.inner.policy.store(policy.clone());
        self.policy.store(policy);
    }

    /// Where bans go, events are emitted and (with `redis.share_bans: true`) actions are shared: this
    /// configuration's.
    pub fn attach(
        &self,
        bans: Arc<Bans>,
        emitter: Emitter,
        routes: HashMap<u16, Arc<str>>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
    ) {
        self.inner.bans.store(Some(bans));
        self.inner.emitter.store(Arc::new(emitter));
        self.inner.routes.store(Arc::new(routes));
        let old = self.inner.fleet.swap(fleet.clone());
        if fleet.is_some() && !old.as_ref().zip(fleet.as_ref()).is_some_and(|(a, b)| Arc::ptr_eq(a, b)) {
            // Newly shared (or another Redis): what is in force here goes there too.
            let mut list = self.inner.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            let mut outbox = self.inner.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            for a in list.values_mut() {
                if let Some(op) = self.inner.put(a) {
                    a.shared = true;
                    outbox.push(op);
                }
            }
        }
        let mut kept =
            std::mem::take(&mut *self.inner.actions.kept_shared.lock().unwrap_or_else(PoisonError::into_inner));
        let lifts = std::mem::take(&mut *self.inner.actions.kept_lifts.lock().unwrap_or_else(PoisonError::into_inner));
        if fleet.is_some() && !lifts.is_empty() {
            // The previous process's lifts Redis never saw: written first, and not adopted.
            let lifted: std::collections::HashSet<&str> = lifts.iter().map(|(f, _)| f.as_str()).collect();
            kept.retain(|(f, _)| !lifted.contains(f.as_str()));
            let mut outbox = self.inner.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            for (field, until) in lifts {
                outbox.push(Op::Lift(field, until));
            }
        }
        if fleet.is_some() && !kept.is_empty() {
            self.inner.adopt_kept(kept);
        }
        if fleet.is_some() && !self.inner.fleet_started.swap(true, Relaxed) {
            let weak = Arc::downgrade(&self.inner);
            let spawned = std::thread::Builder::new().name("anomaly-fleet".into()).spawn(move || fleet_loop(&weak));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "anomaly: the fleet thread could not start; actions stay on this node");
            }
        }
    }

    /// Writes the engine's state to the store now (`snapshot: true`; at shutdown).
    pub fn save_snapshot(&self) {
        self.inner.save_snapshot();
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The record of a finished request, but for its status and sizes (filled in when its answer is done,
    /// see `observe::Completion`).
    /// What the record takes from the request head, read before the head is forwarded (the proxy
    /// moves the headers into the upstream request).
    #[inline]
    pub fn head(&self, headers: &http::HeaderMap) -> Head {
        let user_agent = headers.get(http::header::USER_AGENT).map_or(0, |v| {
            let mut h = self.hasher();
            std::hash::Hasher::write(&mut h, v.as_bytes());
            std::hash::Hasher::finish(&h).max(1)
        });
        let simulated = self.policy.load().simulated.then(|| self.now_ms(headers));
        Head { at_ms: simulated, user_agent, signals: super::signals(headers) }
    }

    /// The hash of a record's user agent and path parameters, keyed with the engine's seed: with a
    /// known key, a client could choose agents or object ids whose hashes share the sketches' slots
    /// (and look like one agent, or few objects, while it uses many).
    #[inline]
    fn hasher(&self) -> siphasher::sip::SipHasher13 {
        let seed = self.inner.actions.seed;
        siphasher::sip::SipHasher13::new_with_keys(seed, seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn record(&self, head: Head, done: Done<'_>) -> Record {
        let Done { params, ip, principal, route, status, refused_in_force, claimed } = done;
        let principal = principal.filter(|_| !refused_in_force);
        let mut id_param = None;
        let mut params_hash = 0u64;
        if !params.is_empty() {
            let mut h = self.hasher();
            for (_, v) in params.iter() {
                std::hash::Hasher::write(&mut h, v.as_bytes());
                std::hash::Hasher::write_u8(&mut h, 0xff);
                id_param = v.parse::<u64>().ok();
            }
            params_hash = std::hash::Hasher::finish(&h).max(1);
        }
        // Only a refused credential claims an identity: the key id authentication refused.
        let claimed = claimed.filter(|_| status == 401 && principal.is_none() && !refused_in_force);
        Record {
            at_ms: head.at_ms.unwrap_or_else(wall_ms),
            ip,
            principal,
            claimed,
            route,
            status,
            bytes_in: 0,
            bytes_out: 0,
            id_param,
            params_hash,
            user_agent: head.user_agent,
            signals: head.signals,
            in_force: refused_in_force,
        }
    }

    /// The record time of a request: wall time, or its `Portcullis-Sim-Time` under the simulated clock.
    #[inline]
    pub fn now_ms(&self, headers: &http::HeaderMap) -> u64 {
        if self.policy.load().simulated {
            if let Some(t) = headers.get(SIM_TIME_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
                return t;
            }
        }
        wall_ms()
    }

    /// The anomaly stage on principals (enforce mode): the bans, throttles and challenges in force for
    /// this exact principal. Address bans are the guard's; address throttles are
    /// [`Anomaly::check_address`]'s, before authentication.
    pub fn check(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        let actions = &self.inner.actions;
        if !actions.any.load(Relaxed) {
            return Ok(());
        }
        let view = actions.view.load();
        if let Some(p) = ex.principal.as_deref().filter(|_| view.has_principals()) {
            // The exact principal: its method and whole id, as the engine keyed it.
            let key = Engine::principal_key(actions.seed, p);
            if let Some(held) = view.held_principal(key) {
                let now = self.now_ms(&ex.parts.headers);
                let e = held.at(now);
                if e.banned(now) {
                    ex.event(crate::events::Noted::new(Kind::GuardBlocked, "banned").attr("source", "anomaly"));
                    return Err(Reject::Banned);
                }
                if let Some(since) = e.challenge_since(now) {
                    if !issued_after(p, since) {
                        ex.event(
                            crate::events::Noted::new(Kind::AuthnFailure, "reauthenticate").attr("source", "anomaly"),
                        );
                        return Err(Reject::Reauthenticate);
                    }
                }
                if let Some(rate) = e.throttle(now) {
                    let mut bucket = [0u8; 18];
                    bucket[..10].copy_from_slice(b"principal:");
                    bucket[10..].copy_from_slice(&key.to_le_bytes());
                    self.throttle(ex, &bucket, rate)?;
                }
            }
        }
        Ok(())
    }

    /// The anomaly stage on addresses (enforce mode), before credentials are checked: the throttle in
    /// force for this client address (IPv6 by its prefix).
    pub fn check_address(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        let actions = &self.inner.actions;
        if !actions.any.load(Relaxed) {
            return Ok(());
        }
        let view = actions.view.load();
        if !view.has_ips() {
            return Ok(());
        }
        let mut now = None;
        for ((ip, len), held) in view.held_address(ex.client_ip) {
            let now = *now.get_or_insert_with(|| self.now_ms(&ex.parts.headers));
            if let Some(rate) = held.at(now).throttle(now) {
                // The address, its prefix length and its family: an IPv4 address and an IPv6 /32
                // never share a bucket.
                let mut bucket = [0u8; 18];
                match ip {
                    IpAddr::V4(v4) => bucket[..4].copy_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => bucket[..16].copy_from_slice(&v6.octets()),
                }
                bucket[16] = len;
                bucket[17] = if ip.is_ipv4() { 4 } else { 6 };
                self.throttle(ex, &bucket, rate)?;
            }
        }
        Ok(())
    }

    /// A route's `bot:`: refuses the client address when its bot score is at least `refuse_at` (403
    /// `bot`; in `monitor` mode the request goes on, and the event says it would have been refused).
    pub fn check_bot(&self, ex: &mut Exchange<'_>, refuse_at: f32) -> Result<(), Reject> {
        let bots = &self.inner.bots;
        if !bots.any.load(Relaxed) {
            return Ok(());
        }
        let policy = self.policy.load();
        let net = crate::exchange::client_net(ex.client_ip, policy.settings.ipv6_prefix).network();
        let Some(&score) = bots.view.load().get(&net) else { return Ok(()) };
        if score < refuse_at {
            return Ok(());
        }
        let enforced = policy.mode == Mode::Enforce;
        ex.event(
            crate::events::Noted::new(Kind::GuardBlocked, "bot")
                .attr("score", format!("{score:.3}"))
                .attr("refuse_at", format!("{refuse_at:.3}"))
                .attr("enforced", enforced),
        );
        if enforced {
            Err(Reject::Bot)
        } else {
            Ok(())
        }
    }

    /// One request against a throttle's bucket: 429 with `Retry-After` once it is spent.
    fn throttle(&self, ex: &mut Exchange<'_>, bucket: &[u8], rate: gcra::Rate) -> Result<(), Reject> {
        let actions = &self.inner.actions;
        let out = actions.throttles.check(hash_key(bucket), actions.clock.now(), rate, None);
        if out.allowed {
            return Ok(());
        }
        retry_after(ex, out.retry_after);
        ex.event(crate::events::Noted::new(Kind::RateLimited, "anomaly_throttle").attr("source", "anomaly"));
        Err(Reject::TooManyRequests)
    }

    /// The recent alerts, newest first, after `before` (an id), filtered.
    pub fn alerts(
        &self,
        before: Option<u64>,
        detector: Option<&str>,
        entity: Option<&str>,
        limit: usize,
    ) -> Vec<Stored> {
        let alerts = self.inner.alerts.lock().unwrap_or_else(PoisonError::into_inner);
        alerts
            .iter()
            .rev()
            .filter(|a| before.is_none_or(|b| a.id < b))
            .filter(|a| detector.is_none_or(|d| a.detector == d))
            .filter(|a| entity.is_none_or(|e| a.entity.label == e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The actions in force (expired ones are dropped first).
    pub fn actions(&self) -> Vec<ActiveAction> {
        let now = self.inner.clock_now();
        self.inner.expire(now);
        let mut list: Vec<ActiveAction> =
            self.inner.actions.list.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        // (The other nodes' expired ones are the fleet thread's to drop, at its next poll.)
        let remote = self.inner.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
        list.extend(remote.values().filter(|a| a.expires_ms > now).cloned());
        drop(remote);
        list.sort_unstable_by_key(|a| a.id);
        list
    }

    /// Lifts an action; its ban too. With shared actions, it is lifted on the fleet: every node's
    /// action of that kind on that target. Returns the action lifted, `None` when there is none with
    /// that id.
    pub fn lift(&self, id: u64) -> Option<ActiveAction> {
        let actions = &self.inner.actions;
        let sharing = self.inner.fleet.load().is_some();
        let (lifted, mut gone) = {
            // The view is built whole before the lists are let go (the order `rebuild_view` takes
            // them in): a challenge raised meanwhile must not find a lifted one's start in it.
            let _remote_building = actions.remote_building.lock().unwrap_or_else(PoisonError::into_inner);
            let _building = actions.building.lock().unwrap_or_else(PoisonError::into_inner);
            let mut list = actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            let mut remote = actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
            let lifted = list.values().chain(remote.values()).find(|a| a.id == id)?.clone();
            let mut gone = Vec::new();
            list.retain(|_, a| {
                let keep = !a.same_target(&lifted);
                if !keep {
                    gone.push(a.clone());
                }
                keep
            });
            let mut fields = Vec::new();
            remote.retain(|field, a| {
                let keep = !a.same_target(&lifted);
                if !keep {
                    fields.push((field.clone(), a.expires_ms));
                }
                keep
            });
            if !fields.is_empty() {
                self.inner.remote_changed(&remote);
            }
            if sharing {
                // Queued before the remote list is let go, so that a read of the hash under way cannot
                // put them back; marked lifted, so that no node takes a field gone from the hash for
                // data Redis lost.
                let mut outbox = actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
                for a in gone.iter().filter(|a| a.shared && a.fleet.is_some()) {
                    outbox.push(Op::Lift(self.inner.field(a), a.expires_ms));
                }
                for (f, until) in fields {
                    outbox.push(Op::Lift(f, until));
                }
            }
            self.inner.store_whole(&list, &remote);
            (lifted, gone)
        };
        if let Some(ban) = gone.iter().position(|a| a.kind == "ban" && a.in_bans) {
            let ban = gone.swap_remove(ban);
            // Not yet given to the guard (the batch it came in is still being handled): it never will be.
            actions.bans_due.lock().unwrap_or_else(PoisonError::into_inner).retain(|(t, _, _)| t.text() != ban.target);
            if let Some(bans) = self.inner.bans.load_full() {
                for b in bans.active() {
                    if b.target.text() == ban.target && b.reason.starts_with("anomaly ") {
                        if let Err(e) = bans.lift(b.id) {
                            tracing::warn!(error = %e, "anomaly: the ban of a lifted action was not lifted");
                        }
                    }
                }
            }
        }
        // A restart must not bring it back: written at once (with the fleet's lift, when Redis is
        // down: `lifting`), not within the second.
        self.inner.write_actions();
        let event = Event::new(Kind::AnomalyAction, "lifted")
            .attr("action", lifted.kind)
            .attr("target", lifted.target.clone())
            .attr("detector", lifted.detector)
            .attr("origin", lifted.origin.clone());
        self.inner.emitter.load().emit(event);
        Some(lifted)
    }

    /// `portcullis limits suggest`: per route, from observed per-principal rates.
    pub fn suggest(&self, quantile: f64, margin: f64) -> Vec<RouteSuggestion> {
        let list = self.inner.engine.lock().unwrap_or_else(PoisonError::into_inner).suggest(quantile, margin);
        let routes = self.inner.routes.load();
        list.into_iter()
            .map(|s| RouteSuggestion {
                route: routes.get(&s.route).map_or_else(|| format!("#{}", s.route), |n| n.to_string()),
                principals: s.principals,
                samples: s.samples,
                per_minute: s.per_minute,
                per_second: s.per_second,
                rate: s.rate,
                burst: s.burst,
            })
            .collect()
    }

    /// Figures for the admin API and metrics.
    pub fn status(&self) -> Status {
        Status {
            mode: self.policy.load().mode,
            entities: self.inner.entities.load(Relaxed),
            memory_bytes: self.inner.memory.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            alerts: self.inner.alerts_total.load(Relaxed),
            actions: self.inner.actions.list.lock().unwrap_or_else(PoisonError::into_inner).len()
                + self.inner.actions.remote_len.load(Relaxed),
        }
    }
}

/// What a record takes from the finished request ([`Anomaly::record`]).
pub struct Done<'a> {
    pub params: &'a crate::exchange::Params,
    pub ip: IpAddr,
    pub principal: Option<Arc<Principal>>,
    pub route: u16,
    pub status: u16,
    /// Refused after its credential was verified, by a response in force against its principal (a
    /// ban, an anomaly throttle or challenge): recorded without the principal, so that a thief
    /// replaying a challenged token does not keep the challenge going against the owner's fresh one.
    pub refused_in_force: bool,
    /// The public id of the API key authentication refused, if it did ([`Exchange::claimed`]).
    pub claimed: Option<Arc<str>>,
}

/// What a record takes from the request head ([`Anomaly::head`]).
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// The simulated clock's time of the request, under `clock: simulated`.
    at_ms: Option<u64>,
    user_agent: u64,
    signals: super::Signals,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub mode: Mode,
    pub entities: u64,
    pub memory_bytes: u64,
    pub dropped: u64,
    pub alerts: u64,
    pub actions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteSuggestion {
    pub route: String,
    pub principals: usize,
    pub samples: u64,
    pub per_minute: f64,
    pub per_second: f64,
    pub rate: String,
    pub burst: u32,
}

impl Inner {
    fn clock_now(&self) -> u64 {
        // Under the simulated clock, "now" is the newest record time the engine saw.
        if self.policy.load().simulated {
            return self.last_record.load(Relaxed);
        }
        wall_ms()
    }

    /// The detector thread: batches of records into the engine, a tick a second, alerts to responses.
    fn run(&self, rx: &Receiver<Record>) {
        let mut batch: Vec<Record> = Vec::with_capacity(1024);
        let mut alerts: Vec<Alert> = Vec::new();
        let mut next_tick = 0u64;
        let mut last_snapshot = Instant::now();
        let mut last_actions = Instant::now();
        let mut more = false;
        loop {
            // Polled, never blocked on: a receiver waiting in `recv` makes every sender wake it (a
            // futex call and a context switch per request, measured as a third of the proxy's
            // throughput). Woken by time instead, it drains what came meanwhile.
            if !more {
                std::thread::sleep(POLL);
            }
            more = false;
            loop {
                match rx.try_recv() {
                    Ok(r) => {
                        batch.push(r);
                        if batch.len() >= 4096 {
                            more = true;
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let policy = self.policy.load_full();
            let simulated = policy.simulated;
            {
                let mut engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
                for r in batch.drain(..) {
                    self.last_record.fetch_max(r.at_ms, Relaxed);
                    engine.observe(&r, &mut alerts);
                    if let Some(floor) = policy.bot_floor {
                        self.mark_bot(&engine, &r, floor, &policy);
                    }
                }
                let now = if simulated { self.last_record.load(Relaxed) } else { wall_ms() };
                if now >= next_tick && now > 0 {
                    engine.tick(now, &mut alerts);
                    next_tick = now + 1000;
                    self.entities.store(engine.entities() as u64, Relaxed);
                    self.metrics.entities.set(i64::try_from(engine.entities()).unwrap_or(i64::MAX));
                    self.memory.store(engine.memory_bytes() as u64, Relaxed);
                }
            }
            for a in alerts.drain(..) {
                self.raise(a);
            }
            if self.actions.dirty.swap(false, Relaxed) {
                self.flush_bans();
                self.update_view();
                self.save_actions();
            }
            let now = self.clock_now();
            self.expire(now);
            self.publish_bots(now, policy.bot_floor.is_some());
            if last_actions.elapsed() >= ACTIONS_SAVE_EVERY && self.actions.unsaved.swap(false, Acquire) {
                last_actions = Instant::now();
                self.write_actions();
            }
            if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                last_snapshot = Instant::now();
                self.save_snapshot_behind();
            }
        }
    }

    /// Writes the engine's state and the actions in force to the store now, and waits for it (at
    /// shutdown).
    fn save_snapshot(&self) {
        let Some(path) = self.policy.load().snapshot.clone() else { return };
        let (n, bytes) = self.take_snapshot();
        self.saver.write(&Job { row: STATE, n, path: path.clone(), bytes });
        let _saving = self.actions.saving.lock().unwrap_or_else(PoisonError::into_inner);
        self.actions.unsaved.store(false, Release);
        let (n, bytes) = (self.saver.next(ACTIONS), self.kept_actions());
        self.saver.write(&Job { row: ACTIONS, n, path, bytes });
    }

    /// The periodic snapshot: taken here, under the engine's lock (about a third of a second a million
    /// entities in a release build), and written by the store's thread.
    fn save_snapshot_behind(&self) {
        let Some(path) = self.policy.load().snapshot.clone() else { return };
        if self.saver.busy.swap(true, Acquire) {
            return;
        }
        let (n, bytes) = self.take_snapshot();
        self.saver.behind(Job { row: STATE, n, path, bytes });
    }

    fn take_snapshot(&self) -> (u64, Vec<u8>) {
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        (self.saver.next(STATE), engine.snapshot())
    }

    /// Marks the actions this node put in force for the store (`snapshot: true`), so that a restart
    /// does not free a challenged thief or a throttled client: the detector thread writes them within
    /// [`ACTIONS_SAVE_EVERY`] ([`Inner::write_actions`]), and a shutdown at once.
    fn save_actions(&self) {
        self.actions.unsaved.store(true, Release);
    }

    /// Writes the actions in force to the store now: queued for the store's thread in the order they
    /// were asked for.
    fn write_actions(&self) {
        let Some(path) = self.policy.load().snapshot.clone() else { return };
        let _saving = self.actions.saving.lock().unwrap_or_else(PoisonError::into_inner);
        let (n, bytes) = (self.saver.next(ACTIONS), self.kept_actions());
        self.saver.behind(Job { row: ACTIONS, n, path, bytes });
    }

    fn kept_actions(&self) -> Vec<u8> {
        let kept: Vec<KeptAction> = {
            let list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            list.values().map(KeptAction::from).collect()
        };
        // (Those no longer held, lifted or expired, are out of it: `remote_changed`.)
        let adopted: Vec<(String, Shared)> = {
            let adopted = self.actions.adopted.lock().unwrap_or_else(PoisonError::into_inner);
            adopted.iter().map(|(f, s)| (f.clone(), s.clone())).collect()
        };
        let lifting: Vec<(String, u64)> = {
            let outbox = self.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            outbox.lifts().map(|(f, until)| (f.to_owned(), until)).collect()
        };
        let node = Some(self.actions.node.clone());
        let row = KeptActions::Seeded { seed: self.actions.seed, actions: kept, node, adopted, lifting };
        serde_json::to_vec(&row).unwrap_or_default()
    }

    /// Puts back the actions a previous process left in the store, but those that have run out (they
    /// are not announced again: their `set` event was).
    /// An address's action is put back whatever the engine; a principal's only when the engine's seed
    /// is the one its key was made with (the row's, or for an earlier build's row, `same_seed`: the
    /// engine came back from the state row with its seed).
    ///
    /// The fleet's (`shared`) are not this process's: the guard's bans bring back those in its list,
    /// and the others are the previous process's actions in the fleet's hash, which this process reads
    /// as another node's. They are kept aside as that node's until `attach` says whether actions are
    /// shared here, so that they hold while Redis is down at the start (they lapsed until Redis was
    /// back, before); the first read of the hash drops those lifted meanwhile.
    fn restore_actions(&self, stored: Option<KeptActions>, same_seed: bool) {
        let Some(stored) = stored else { return };
        let same_seed = stored.seed().map_or(same_seed, |s| s == self.actions.seed);
        let (kept, node, adopted, lifting) = match stored {
            KeptActions::Seeded { actions, node, adopted, lifting, .. } => (actions, node, adopted, lifting),
            KeptActions::Bare(actions) => (actions, None, Vec::new(), Vec::new()),
        };
        let now = if self.policy.load().simulated { 0 } else { wall_ms() };
        // (Whatever their expiry: the action may have been extended since, and a mark is written to
        // last a minute past its write at least.)
        self.actions.kept_lifts.lock().unwrap_or_else(PoisonError::into_inner).extend(lifting);
        // What the previous process had itself adopted (a restart before Redis was back): its fields
        // name the process that raised them.
        let adopted = adopted.into_iter().filter(|(_, s)| s.expires_ms > now);
        self.actions.kept_shared.lock().unwrap_or_else(PoisonError::into_inner).extend(adopted);
        let (shared, kept): (Vec<KeptAction>, Vec<KeptAction>) =
            kept.into_iter().filter(|k| k.expires_ms > now).partition(|k| k.shared);
        if let Some(node) = node {
            // (Named in the hash by method, issuer and id: keyed with this engine's seed when applied.)
            let aside = shared.into_iter().filter(|k| !k.in_bans).filter_map(KeptAction::into_action).filter_map(|a| {
                let s = a.shared_form(a.fleet.as_ref()?, &node);
                Some((format!("{node}:{}", a.id), s))
            });
            self.actions.kept_shared.lock().unwrap_or_else(PoisonError::into_inner).extend(aside);
        }
        let kept = kept.into_iter().filter(|k| same_seed || k.key.is_none());
        let mut list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
        for k in kept {
            let Some(a) = k.into_action() else { continue };
            let slot: ActionKey = (a.kind, a.key, if a.key.is_some() { String::new() } else { a.target.clone() });
            self.actions.next_expiry.fetch_min(a.expires_ms, Relaxed);
            // (Its id keeps the previous process's node tag: unique still, as tags are random.)
            list.insert(slot, a);
        }
        let n = list.len();
        drop(list);
        if n > 0 {
            // In force before the first request is served.
            self.rebuild_view();
            tracing::info!(actions = n, "anomaly: actions in force restored from the store");
        }
    }

    /// Scores the record's address for the routes' `bot:` (after the engine has seen the record).
    fn mark_bot(&self, engine: &Engine, r: &Record, floor: f32, policy: &Policy) {
        let score = engine.bot_score(r.ip) as f32;
        let net = crate::exchange::client_net(r.ip, policy.settings.ipv6_prefix).network();
        let mut marks = self.bots.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if score >= floor {
            if marks.len() >= MAX_BOT_MARKS && !marks.contains_key(&net) {
                // Full (an attacker marking one network after another): no new mark until some
                // expire; the automation detector still alerts on them.
                return;
            }
            let hold = policy.detectors.get(&Detector::Automation).map_or(900_000, |d| d.duration_ms);
            let now = if policy.simulated { r.at_ms } else { wall_ms().max(r.at_ms) };
            // The stage's view changes only when the score moves by a hundredth or more.
            let step = |x: f32| (x * 100.0).round() as i32;
            if marks.insert(net, (score, now.saturating_add(hold))).is_none_or(|(was, _)| step(was) != step(score)) {
                self.bots.dirty.store(true, Relaxed);
            }
        } else if marks.remove(&net).is_some() {
            self.bots.dirty.store(true, Relaxed);
        }
    }

    /// Drops the marks whose hold ran out (and all of them once no route has `bot:`), and gives the
    /// stage the new scores when they changed.
    fn publish_bots(&self, now: u64, wanted: bool) {
        let mut marks = self.bots.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let before = marks.len();
        marks.retain(|_, &mut (_, until)| wanted && until > now);
        if marks.len() != before {
            self.bots.dirty.store(true, Relaxed);
        }
        if self.bots.dirty.swap(false, Relaxed) {
            // (The gauge first: once the stage refuses a network, the gauge counts it.)
            self.metrics.bot_marked.set(i64::try_from(marks.len()).unwrap_or(i64::MAX));
            self.bots.view.store(Arc::new(marks.iter().map(|(net, &(score, _))| (*net, score)).collect()));
            self.bots.any.store(!marks.is_empty(), Relaxed);
        }
    }

    /// One alert: kept, emitted as an event, and answered as the detector's policy says.
    fn raise(&self, a: Alert) {
        let policy = self.policy.load_full();
        let Some(dp) = policy.detectors.get(&a.detector) else { return };
        if !dp.enabled {
            return;
        }
        let id = self.next_alert.fetch_add(1, Relaxed);
        self.alerts_total.fetch_add(1, Relaxed);
        self.metrics.alerts.get_or_create(&vec![("detector".to_owned(), a.detector.id().to_owned())]).inc();
        let enforced = policy.mode == Mode::Enforce;
        let routes = self.routes.load();
        let label = match a.entity.kind {
            EntityKind::Route => a
                .entity
                .label
                .parse::<u16>()
                .ok()
                .and_then(|r| routes.get(&r))
                .map_or_else(|| a.entity.label.to_string(), |n| n.to_string()),
            _ => a.entity.label.to_string(),
        };
        let stored = Stored {
            id,
            detector: a.detector.id(),
            entity: EntityView { kind: a.entity.kind.as_str(), label },
            ip: a.ip.map(|i| i.to_string()),
            principal: a.principal.as_deref().map(str::to_owned),
            feature: a.feature,
            baseline: finite(a.baseline),
            observed: finite(a.observed),
            score: finite(a.score),
            window_s: a.window_s,
            at_ms: a.at_ms,
            explanation: a.explanation.clone(),
            // What the alert did (or in `monitor` mode would do): a route's alert has no one to
            // refuse, so its detector's throttle or ban is not listed for it.
            actions: dp.actions.iter().filter(|x| lands(**x, &a)).map(|x| x.as_str()).collect(),
            enforced,
        };
        let severity = if dp.actions.contains(&Action::Alert) { Severity::High } else { Severity::Medium };
        let mut event = Event::new(Kind::AnomalyAlert, a.detector.id())
            .severity(severity)
            .rule(a.detector.id())
            .attr("alert", id)
            .attr("entity_kind", stored.entity.kind)
            .attr("entity", stored.entity.label.clone())
            .attr("feature", a.feature)
            .attr("baseline", format!("{:.3}", stored.baseline))
            .attr("observed", format!("{:.3}", stored.observed))
            .attr("score", format!("{:.3}", stored.score))
            .attr("window_s", u64::from(a.window_s))
            .attr("explanation", a.explanation.clone())
            .attr("actions", stored.actions.join(","))
            .attr("mode", if enforced { "enforce" } else { "monitor" });
        event.client_ip = a.ip;
        event.principal = a.principal.as_deref().map(Into::into);
        self.emitter.load().emit(event);
        tracing::warn!(
            alert = id,
            detector = a.detector.id(),
            entity = %stored.entity.label,
            score = stored.score,
            "anomaly: {}",
            a.explanation
        );
        if enforced {
            for action in &dp.actions {
                match action {
                    Action::Throttle | Action::Challenge | Action::Ban => self.act(*action, &a, dp, id),
                    Action::Log | Action::Alert => {}
                }
            }
        }
        let mut alerts = self.alerts.lock().unwrap_or_else(PoisonError::into_inner);
        if alerts.len() >= RECENT_ALERTS {
            alerts.pop_front();
        }
        alerts.push_back(stored);
    }

    /// Puts one action in force against the alert's entity (nothing where it cannot land: [`lands`]).
    fn act(&self, action: Action, a: &Alert, dp: &DetectorPolicy, alert: u64) {
        // An address by the engine's prefix; a site by its own (the length its label names).
        let prefix = match a.entity.label.split_once('/') {
            Some((_, len)) if a.entity.kind == EntityKind::Ip => len.parse().ok(),
            _ => None,
        }
        .unwrap_or(self.policy.load().settings.ipv6_prefix);
        let (target_kind, target, key) = match (action, principal_of(a), a.ip) {
            (_, Some((t, label)), _) => ("principal", format!("{}:{label}", t.method), Some(t)),
            (Action::Challenge, None, _) => return,
            (_, None, Some(ip)) => ("ip", ip_target(ip, prefix), None),
            _ => return,
        };
        // The simulated clock's "now" is the alert's record time; on the wall clock, now (never before it).
        let since = if self.policy.load().simulated { a.at_ms } else { wall_ms().max(a.at_ms) };
        let expires_ms = since.saturating_add(dp.duration_ms);
        let rate = (action == Action::Throttle).then(|| {
            let per_s = 1e9 / dp.throttle.interval as f64;
            if per_s >= 1.0 {
                format!("{per_s:.0}/s")
            } else {
                format!("{:.0}/m", per_s * 60.0)
            }
        });
        // The fleet's ban list, for an address, or an API-key principal whose whole id the alert
        // knows (the gateway's own key store names it: one principal). Any other principal is banned on this
        // node, where the stage matches it by key: `jwt:alice` in the ban list would ban every
        // issuer's alice, and an id cut at 32 bytes names whoever shares those bytes.
        let mut in_bans = false;
        if action == Action::Ban {
            let ban_target = match (key, a.ip) {
                (None, Some(ip)) => Some(match crate::exchange::client_net(ip, prefix) {
                    net if net.prefix_len() < net.max_prefix_len() => Target::Prefix(net),
                    _ => Target::Ip(ip.to_canonical()),
                }),
                (Some(t), _) if t.whole && t.method == PrincipalKind::ApiKey.as_str() => {
                    Some(Target::Principal(target.clone()))
                }
                _ => None,
            };
            if let (Some(ban_target), true) = (ban_target, self.bans.load().is_some()) {
                let until =
                    crate::guard::bans::now_ms().saturating_add(i64::try_from(dp.duration_ms).unwrap_or(i64::MAX));
                let reason = format!("anomaly {} (alert {alert})", a.detector.id());
                self.actions.bans_due.lock().unwrap_or_else(PoisonError::into_inner).push((ban_target, until, reason));
                in_bans = true;
            } else if key.is_none() {
                return;
            }
        }
        // The rest holds on the fleet when actions are shared and every node can name the target: an
        // address, or the principal itself (its method, issuer and whole id).
        let fleet = match (in_bans, key) {
            (true, _) => None,
            (false, Some(t)) => t.principal.as_deref().map(|p| SharedTarget::Principal {
                method: t.method.to_owned(),
                iss: super::engine::issuer(p).to_owned(),
                id: p.id.clone(),
            }),
            (false, None) => Some(SharedTarget::Ip { address: target.clone() }),
        };
        // (Kept whether or not actions are shared now: a reload that shares them writes it then.)
        let shared = in_bans || (fleet.is_some() && self.fleet.load().is_some());
        let kind = action.as_str();
        let key = key.map(|t| t.key);
        let throttle = (action == Action::Throttle).then_some(dp.throttle);
        let (id, expires_ms) = {
            let mut list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            // One action of a kind per target: a new alert extends it (never shortens it, and a
            // throttle keeps the stricter of the two rates).
            let slot: ActionKey = (kind, key, if key.is_some() { String::new() } else { target.clone() });
            let old = list.remove(&slot);
            let (mut detector, mut rate, mut throttle) = (a.detector.id(), rate, throttle);
            if let Some(o) =
                old.as_ref().filter(|o| o.throttle.zip(throttle).is_some_and(|(was, now)| stricter(was, now)))
            {
                (detector, rate, throttle) = (o.detector, o.rate.clone(), o.throttle);
            }
            let id = old.as_ref().map_or_else(|| self.actions.next_id.fetch_add(1, Relaxed), |o| o.id);
            let expires_ms = old.as_ref().map_or(expires_ms, |o| o.expires_ms.max(expires_ms));
            // A challenge raised again while the alert's window still holds the evidence from before
            // it began keeps the time it began: that evidence is the thief's old requests, and moving
            // the start would lock out the owner's token issued after the first alert. Once the window
            // has moved past it, a new alert is about tokens issued since, and the start moves.
            // The same holds for the fleet's other nodes' challenges of this principal.
            let since = if kind == "challenge" {
                let view = self.actions.view.load();
                let others = key.and_then(|k| view.remote.challenges.get(&k)).into_iter().flatten();
                let others = others.filter(|&&(_, until)| until > a.at_ms).map(|&(since, _)| since);
                let starts = old.iter().map(|o| o.since_ms).chain(others);
                starts.filter(|&s| a.at_ms < s.saturating_add(u64::from(a.window_s) * 1000)).min().unwrap_or(since)
            } else {
                since
            };
            let action = ActiveAction {
                id,
                kind,
                target_kind,
                net: (key.is_none()).then(|| address_target(&target)).flatten(),
                target: target.clone(),
                key,
                shared: shared || old.as_ref().is_some_and(|o| o.shared),
                origin: HERE.to_owned(),
                detector,
                alert,
                since_ms: since,
                expires_ms,
                rate,
                throttle,
                in_bans: in_bans || old.as_ref().is_some_and(|o| o.in_bans),
                fleet: fleet.or_else(|| old.as_ref().and_then(|o| o.fleet.clone())),
            };
            if let Some(op) = self.put(&action) {
                self.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner).push(op);
            }
            // The view's delta joins the new action over the old one, which is right only when the new
            // one is at least as strong (its expiry, rate and ban are kept above; a challenge's start
            // can move back to another node's, and a principal's ban can move to the ban list).
            if old.as_ref().is_some_and(|o| action.since_ms < o.since_ms || action.in_bans != o.in_bans) {
                self.actions.whole.store(true, Relaxed);
            }
            if !Entry::of(&action).is_none() {
                self.actions.changed.lock().unwrap_or_else(PoisonError::into_inner).push(slot.clone());
            }
            list.insert(slot, action);
            self.actions.next_expiry.fetch_min(expires_ms, Relaxed);
            (id, expires_ms)
        };
        // In force once the batch's alerts are all handled (one rebuild, not one an alert).
        self.actions.dirty.store(true, Relaxed);
        let event = Event::new(Kind::AnomalyAction, "set")
            .rule(a.detector.id())
            .attr("action", kind)
            .attr("target", target)
            .attr("id", id)
            .attr("alert", alert)
            .attr("expires_ms", expires_ms)
            .attr("shared", shared);
        self.emitter.load().emit(event);
    }

    /// Gives the batch's bans to the guard's bans at once (one rebuild of the set requests read).
    ///
    /// The batch's list stays locked until the guard's bans hold them (as pending, then written): a
    /// lift looks in the one, then in the other, and must not find a ban in neither.
    fn flush_bans(&self) {
        let mut due = self.actions.bans_due.lock().unwrap_or_else(PoisonError::into_inner);
        if due.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut *due);
        if let Some(bans) = self.bans.load_full() {
            bans.add_many_here(batch);
        }
    }

    /// Drops expired actions (and says so).
    fn expire(&self, now: u64) {
        if now < self.actions.next_expiry.load(Relaxed) {
            return;
        }
        let expired: Vec<ActiveAction> = {
            let mut list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            let mut gone = Vec::new();
            list.retain(|_, a| {
                let keep = a.expires_ms > now;
                if !keep {
                    gone.push(a.clone());
                }
                keep
            });
            let next = list.values().map(|a| a.expires_ms).min().unwrap_or(u64::MAX);
            self.actions.next_expiry.store(next, Relaxed);
            gone
        };
        // The other nodes' are the fleet thread's to drop (`tend_remote`): this thread never takes
        // their list's lock, which the fleet thread holds while it reads or copies that list.
        let left = {
            let list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            let remote = self.actions.remote_len.load(Relaxed);
            self.counted(list.len(), remote);
            list.len() + remote
        };
        if expired.is_empty() {
            // (The earliest expiry was stale: extended or lifted since.)
            return;
        }
        if self.fleet.load().is_some() {
            let mut outbox = self.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            for a in expired.iter().filter(|a| a.shared && a.fleet.is_some()) {
                outbox.push(Op::Del(self.field(a)));
            }
        }
        // The view: empty when nothing is left. This node's expired ones are no longer live in its
        // layers, which are built whole once they are half of them.
        if left == 0 {
            self.rebuild_view();
        } else {
            // (Only actions with a part in the view: an address ban is the guard's.)
            let gone = expired.iter().filter(|a| !Entry::of(a).is_none()).count();
            let stale = self.actions.stale.fetch_add(gone, Relaxed) + gone;
            let held = {
                let view = self.actions.view.load();
                view.local.len() + view.delta.len()
            };
            if gone > 0 && 2 * stale > held {
                self.actions.whole.store(true, Relaxed);
                self.update_view();
            }
        }
        self.save_actions();
        for a in expired {
            let event = Event::new(Kind::AnomalyAction, "expired")
                .rule(a.detector)
                .attr("action", a.kind)
                .attr("target", a.target);
            self.emitter.load().emit(event);
        }
    }

    /// This node's field in the fleet's hash for one of its actions.
    fn field(&self, a: &ActiveAction) -> String {
        format!("{}:{}", self.actions.node, a.id)
    }

    /// The write that shares one of this node's actions, when it is shared and actions are.
    fn put(&self, a: &ActiveAction) -> Option<Op> {
        let target = a.fleet.as_ref().filter(|_| self.fleet.load().is_some())?;
        let value = serde_json::to_string(&a.shared_form(target, &self.actions.node)).ok()?;
        Some(Op::Put(self.field(a), value))
    }

    /// The other nodes' actions as last read from the fleet's hash (fields this node wrote are its
    /// own and skipped). An action keeps its id while its field stays. One gone from the hash but
    /// neither marked lifted nor expired is kept: Redis lost its data (a restart without
    /// persistence), and the node that raised it writes it again.
    /// `present`: every field in the hash (by default, those read).
    fn set_remote(
        &self,
        read: Vec<(String, Shared)>,
        lifted: &std::collections::HashSet<String>,
        present: Option<&std::collections::HashSet<String>>,
    ) {
        let now = self.clock_now();
        let changed = {
            let mut remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
            // Lifted here since this read began: not yet marked in the hash. (Taken under the remote
            // list's lock, which `lift` holds while it queues them.)
            let lifting: std::collections::HashSet<String> = self
                .actions
                .outbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lifting()
                .map(str::to_owned)
                .collect();
            let mut next: HashMap<String, ActiveAction> = HashMap::with_capacity(read.len());
            // Each id in `next` and its field: whether an id is taken, at once (a scan of `next` for
            // each field read made a read of 20,000 fields take 30 s under this lock: a review's finding).
            let mut ids: HashMap<u64, String> = HashMap::with_capacity(read.len());
            let read_fields: std::collections::HashSet<&str> = read.iter().map(|(f, _)| f.as_str()).collect();
            {
                // An adopted action as the fleet's hash has it now (extended since the row was
                // written): what the row carries and what is written back if Redis loses it.
                let mut adopted = self.actions.adopted.lock().unwrap_or_else(PoisonError::into_inner);
                if !adopted.is_empty() {
                    for (field, s) in &read {
                        if let Some(copy) = adopted.get_mut(field).filter(|copy| *copy != s) {
                            copy.clone_from(s);
                            self.save_actions();
                        }
                    }
                }
            }
            for (field, a) in remote.iter() {
                let absent = present.map_or(!read_fields.contains(field.as_str()), |p| !p.contains(field));
                if absent && !lifted.contains(field) && a.expires_ms > now && next.len() < fleet::MAX_READ {
                    next.insert(field.clone(), a.clone());
                    ids.insert(a.id, field.clone());
                }
            }
            for (field, s) in read {
                let drop_field = |next: &mut HashMap<String, ActiveAction>, ids: &mut HashMap<u64, String>| {
                    if let Some(o) = next.remove(&field) {
                        ids.remove(&o.id);
                    }
                };
                // (A field marked lifted is dead for good, as ids are never reused: one written again
                // after its lift, by a node that had not yet seen the lift, is not put back in force.)
                // (Expired: dropped by its readers within a minute; not taken in only to be dropped.)
                if self.own_id(&field).is_some()
                    || lifting.contains(&field)
                    || lifted.contains(&field)
                    || s.expires_ms <= now
                {
                    drop_field(&mut next, &mut ids);
                    continue;
                }
                let id = remote.get(&field).map(|a| a.id);
                let Some(mut a) = self.remote_action(&s) else {
                    tracing::warn!(field = %field, "anomaly: a shared action this node cannot apply was skipped");
                    drop_field(&mut next, &mut ids);
                    continue;
                };
                // The raising node's id (one id for the action on every node). One of ours instead when
                // it has none (an older node), or it has our tag or another field's id (two nodes drew
                // one tag).
                let tag = self.actions.next_id.load(Relaxed) >> 32;
                let taken = |i: u64| i >> 32 == tag || ids.get(&i).is_some_and(|f| *f != field);
                a.id = Some(s.id)
                    .filter(|&i| i != 0 && !taken(i))
                    .or(id.filter(|&i| !taken(i)))
                    .unwrap_or_else(|| self.actions.next_id.fetch_add(1, Relaxed));
                if let Some(o) = next.get(&field) {
                    ids.remove(&o.id);
                }
                ids.insert(a.id, field.clone());
                next.insert(field, a);
            }
            let changed = next.len() != remote.len()
                || next.iter().any(|(f, a)| {
                    remote.get(f).is_none_or(|o| {
                        (o.expires_ms, o.since_ms, o.throttle) != (a.expires_ms, a.since_ms, a.throttle)
                    })
                });
            *remote = next;
            self.remote_changed(&remote);
            changed
        };
        if changed {
            self.rebuild_remote();
        }
    }

    /// Another node's action as this node holds it: a principal keyed with this engine's seed.
    fn remote_action(&self, s: &Shared) -> Option<ActiveAction> {
        let kind = ["throttle", "ban", "challenge"].into_iter().find(|k| *k == s.kind)?;
        let detector = Detector::from_id(&s.detector)?.id();
        let (target_kind, key) = match &s.target {
            SharedTarget::Principal { method, iss, id } => {
                let method = SharedTarget::method(method)?;
                ("principal", Some(Engine::key_of(self.actions.seed, method, iss, id)))
            }
            SharedTarget::Ip { address } => {
                address_target(address)?;
                ("ip", None)
            }
        };
        let throttle = match (kind, s.interval_ns, s.burst) {
            ("throttle", Some(interval), Some(burst)) => {
                Some(gcra::Rate { interval: interval.max(1), burst: burst.max(1) })
            }
            ("throttle", _, _) => return None,
            _ => None,
        };
        let target = match &s.target {
            SharedTarget::Ip { address } => address.clone(),
            SharedTarget::Principal { .. } => s.label.clone(),
        };
        let net = (target_kind != "principal").then(|| address_target(&target)).flatten();
        Some(ActiveAction {
            id: 0,
            kind,
            target_kind,
            target,
            key,
            shared: true,
            origin: s.node.clone(),
            detector,
            alert: s.alert,
            since_ms: s.since_ms,
            expires_ms: s.expires_ms,
            rate: s.rate.clone(),
            throttle,
            in_bans: false,
            fleet: None,
            net,
        })
    }

    /// Builds the whole view: this node's actions and the other nodes'.
    fn rebuild_view(&self) {
        let _remote_building = self.actions.remote_building.lock().unwrap_or_else(PoisonError::into_inner);
        let _building = self.actions.building.lock().unwrap_or_else(PoisonError::into_inner);
        let list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
        let remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
        self.store_whole(&list, &remote);
    }

    /// The whole view of `list` and `remote`, swapped in: the caller holds `remote_building`,
    /// `building` and both lists' locks.
    fn store_whole(&self, list: &HashMap<ActionKey, ActiveAction>, remote: &HashMap<String, ActiveAction>) {
        let mut lens = Vec::new();
        let local = Layer::of(list.values(), &mut lens, true);
        let remote_layer = Layer::of(remote.values(), &mut lens, false);
        self.built(list.len(), remote.len());
        self.actions.view.store(Arc::new(View {
            local: Arc::new(local),
            delta: Layer::default(),
            remote: Arc::new(remote_layer),
            v6_lens: lens,
        }));
    }

    /// The view after a batch that set actions: the delta takes them, or, once it has grown past
    /// about eight times the square root of the local layer (at 65,536 actions, 2,048: each batch then
    /// copies at most that many entries, and a whole build comes once in that many changes), the
    /// local layer is built whole.
    fn update_view(&self) {
        let _building = self.actions.building.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = std::mem::take(&mut *self.actions.changed.lock().unwrap_or_else(PoisonError::into_inner));
        let list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
        let view = self.actions.view.load();
        let limit = (view.local.len().isqrt() * 8).max(256);
        let mut lens = view.v6_lens.clone();
        if self.actions.whole.swap(false, Relaxed) || view.delta.len() + changed.len() > limit {
            let local = Layer::of(list.values(), &mut lens, true);
            self.built(list.len(), self.actions.remote_len.load(Relaxed));
            self.actions.view.store(Arc::new(View {
                local: Arc::new(local),
                delta: Layer::default(),
                remote: view.remote.clone(),
                v6_lens: lens,
            }));
            return;
        }
        let mut delta = view.delta.clone();
        // (A slot gone from the list since was lifted: the lift built the view whole.)
        for a in changed.iter().filter_map(|slot| list.get(slot)) {
            delta.add(a, &mut lens, true);
        }
        self.counted(list.len(), self.actions.remote_len.load(Relaxed));
        self.actions.view.store(Arc::new(View {
            local: view.local.clone(),
            delta,
            remote: view.remote.clone(),
            v6_lens: lens,
        }));
    }

    /// The view with the other nodes' layer built again (their list moved); this node's kept.
    ///
    /// Built from the fleet list's parts copied out under its lock, then swapped under `building`:
    /// remote builds are serialised apart (`remote_building`), so a later one always swaps in the
    /// later list.
    fn rebuild_remote(&self) {
        let _remote_building = self.actions.remote_building.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(test)]
        self.actions.remote_builds.fetch_add(1, Relaxed);
        // The parts are copied out under the lock (a few words each), and the layer built after it:
        // the detector thread's `act` and `expire` take that lock.
        let parts: Vec<(Spot, Entry)> = {
            let remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
            remote.values().filter_map(Spot::of).collect()
        };
        let (mut remote_layer, mut lens) = (Layer::default(), Vec::new());
        for (spot, part) in parts {
            remote_layer.put(spot, part, &mut lens, false);
        }
        let _building = self.actions.building.lock().unwrap_or_else(PoisonError::into_inner);
        let view = self.actions.view.load();
        for len in &view.v6_lens {
            if !lens.contains(len) {
                lens.push(*len);
            }
        }
        self.counted(
            self.actions.list.lock().unwrap_or_else(PoisonError::into_inner).len(),
            self.actions.remote_len.load(Relaxed),
        );
        self.actions.view.store(Arc::new(View {
            local: view.local.clone(),
            delta: view.delta.clone(),
            remote: Arc::new(remote_layer),
            v6_lens: lens,
        }));
    }

    /// After the local layer is built whole from `list`: nothing is pending or stale.
    fn built(&self, list: usize, remote: usize) {
        self.actions.changed.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.actions.whole.store(false, Relaxed);
        self.actions.stale.store(0, Relaxed);
        #[cfg(test)]
        self.actions.builds.fetch_add(1, Relaxed);
        self.counted(list, remote);
    }

    /// The fleet thread's part of the view: the other nodes' actions expired by `now` dropped, and
    /// their layer built again. Until then an expired one is no longer live in the layer (each part
    /// counts only while in force), but two nodes' throttles of one target are one entry there, the
    /// stricter rate with the later expiry, so that rate can hold up to a poll, half a second, past
    /// its own expiry. The detector thread does not pay for the fleet's list, which an attacker whose
    /// /64s each trip a limit on another node makes as long as it likes.
    fn tend_remote(&self, now: u64) {
        if now < self.actions.remote_next_expiry.load(Relaxed) {
            return;
        }
        let gone = {
            let mut remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
            let before = remote.len();
            remote.retain(|_, a| a.expires_ms > now);
            self.remote_changed(&remote);
            remote.len() != before
        };
        if gone {
            self.rebuild_remote();
        }
    }

    /// After a change to the fleet's list, under its lock: its length and earliest expiry, for the
    /// threads that do not take that lock, and the adopted actions it no longer holds out of this
    /// process's row (an adopted action lifted elsewhere meanwhile must not come back at a restart
    /// before the next read of the hash).
    fn remote_changed(&self, remote: &HashMap<String, ActiveAction>) {
        self.actions.remote_len.store(remote.len(), Relaxed);
        let next = remote.values().map(|a| a.expires_ms).min().unwrap_or(u64::MAX);
        self.actions.remote_next_expiry.store(next, Relaxed);
        let mut adopted = self.actions.adopted.lock().unwrap_or_else(PoisonError::into_inner);
        if !adopted.is_empty() {
            let held = adopted.len();
            adopted.retain(|field, _| remote.contains_key(field));
            if adopted.len() != held {
                self.save_actions();
            }
        }
    }

    /// Whether anything is in force (the stage's whole cost when nothing is), and the gauge, from the
    /// lengths of this node's list and the fleet's.
    fn counted(&self, list: usize, remote: usize) {
        self.actions.any.store(list + remote > 0, Relaxed);
        self.metrics.actions.set(i64::try_from(list + remote).unwrap_or(i64::MAX));
    }
}

/// The fleet thread (`redis.share_bans: true`): every [`FLEET_POLL`], writes this node's changes to
/// the fleet's shared actions and reads the others' when the version moved. It ends with the detector.
fn fleet_loop(weak: &std::sync::Weak<Inner>) {
    let mut conn: Option<(Arc<crate::fleet::Fleet>, crate::fleet::Blocking)> = None;
    let mut seen: Option<i64> = None;
    // This node's fields known to be in the hash: one gone from it was lifted by another node.
    let mut written: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut failing = false;
    let mut polls = 0u32;
    let mut held = 0usize;
    loop {
        std::thread::sleep(FLEET_POLL);
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(fleet::FULL_READ_EVERY) {
            seen = None;
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.tend_remote(inner.clock_now());
        let Some(fleet) = inner.fleet.load_full() else {
            // No longer shared (a reload): the fleet's actions no longer hold here.
            let held = {
                let mut remote = inner.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
                let held = std::mem::take(&mut *remote);
                inner.remote_changed(&remote);
                held
            };
            if !held.is_empty() {
                inner.rebuild_remote();
            }
            (conn, seen) = (None, None);
            written.clear();
            inner.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner).clear();
            continue;
        };
        if conn.as_ref().is_none_or(|(f, _)| !Arc::ptr_eq(f, &fleet)) {
            conn = Some((fleet.clone(), fleet.blocking()));
            (seen, failing) = (None, false);
        }
        let Some((_, c)) = conn.as_mut() else { continue };
        // (Left in the outbox until written: a failed write is retried at the next poll, under what
        // came since, and the store's row sees the lifts in flight.)
        let ops = inner.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner).pending();
        // Simulated time is whatever clients sent: never prune the fleet's hash by it.
        let now = if inner.policy.load().simulated { 0 } else { inner.clock_now() };
        // A hash this large (an attacker with many networks) is read every five seconds, not every poll.
        let due = held < fleet::LARGE || polls.is_multiple_of(10);
        let result = match fleet::write(c, &ops, now) {
            Ok(()) => {
                inner.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner).written(&ops);
                if ops.iter().any(|op| matches!(op, Op::Lift(..))) {
                    // Out of the row now that Redis has them.
                    inner.save_actions();
                }
                for op in &ops {
                    match op {
                        Op::Put(f, _) => written.insert(f.clone()),
                        Op::Del(f) | Op::Lift(f, _) => written.remove(f),
                    };
                }
                if due {
                    fleet::read(c, seen, now)
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(read)) => {
                seen = Some(read.version);
                held = read.actions.len();
                failing = false;
                // This node's actions missing from the hash, or marked lifted there: lifted by another
                // node, or lost with Redis's data (written again). (Marked but present: written again
                // by this node as another lifted it, a race the mark settles.)
                let missing: Vec<String> = written
                    .iter()
                    .filter(|f| !read.present.contains(f.as_str()) || read.lifted.contains(f.as_str()))
                    .cloned()
                    .collect();
                for f in missing {
                    written.remove(&f);
                    if read.lifted.contains(&f) {
                        inner.lifted_elsewhere(&f);
                    } else {
                        inner.rewrite(&f);
                    }
                }
                inner.set_remote(read.actions, &read.lifted, Some(&read.present));
                inner.republish_adopted(&read.present, &read.lifted);
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "anomaly: the fleet's shared actions cannot be reached; those in force stay");
                }
                failing = true;
                seen = None;
            }
        }
    }
}

impl Inner {
    /// The id of this node's action at `field` in the fleet's hash (`None`: another node's).
    fn own_id(&self, field: &str) -> Option<u64> {
        field.strip_prefix(self.actions.node.as_str())?.strip_prefix(':')?.parse().ok()
    }

    /// Writes this node's action at `field` again (Redis lost it), while it is in force.
    /// Queued under the list's lock, so that a lift in between cannot be overwritten by it.
    fn rewrite(&self, field: &str) {
        let Some(id) = self.own_id(field) else { return };
        let now = self.clock_now();
        let list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(op) = list.values().find(|a| a.id == id && a.expires_ms > now).and_then(|a| self.put(a)) {
            self.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner).push(op);
        }
    }

    /// The adopted actions (`adopt_kept`) the fleet's hash lacks, neither lifted nor expired: Redis
    /// lost them, or the previous process never got them there. Written again under their fields, so
    /// that they hold on every node, as the node that raised them would have. Queued under the remote
    /// list's lock, which `lift` holds while it queues a lift, so that a lift here is not overwritten;
    /// a lift elsewhere racing this write marks the field, and a marked field is not read back.
    fn republish_adopted(
        &self,
        present: &std::collections::HashSet<String>,
        lifted: &std::collections::HashSet<String>,
    ) {
        let now = self.clock_now();
        let remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
        let adopted = self.actions.adopted.lock().unwrap_or_else(PoisonError::into_inner);
        let due: Vec<Op> = adopted
            .iter()
            .filter(|(f, _)| !present.contains(f.as_str()) && !lifted.contains(f.as_str()))
            .filter(|(f, _)| remote.get(f.as_str()).is_some_and(|a| a.expires_ms > now))
            .filter_map(|(f, s)| Some(Op::Put(f.clone(), serde_json::to_string(s).ok()?)))
            .collect();
        if !due.is_empty() {
            let mut outbox = self.actions.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            for op in due {
                outbox.push(op);
            }
        }
    }

    /// The previous process's shared actions (`restore_actions`), in force as another node's until the
    /// fleet's hash says otherwise: a field found lifted there is dropped, one gone unmarked is kept
    /// to its expiry, as any node's.
    fn adopt_kept(&self, kept: Vec<(String, Shared)>) {
        let now = self.clock_now();
        {
            let mut remote = self.actions.remote.lock().unwrap_or_else(PoisonError::into_inner);
            let tag = self.actions.next_id.load(Relaxed) >> 32;
            let mut ids: std::collections::HashSet<u64> = remote.values().map(|o| o.id).collect();
            let mut adopted = Vec::new();
            for (field, s) in kept {
                if s.expires_ms <= now || remote.contains_key(&field) {
                    continue;
                }
                let Some(mut a) = self.remote_action(&s) else { continue };
                // Its id, unless it has this process's tag (two processes drew one).
                a.id = Some(s.id)
                    .filter(|&i| i >> 32 != tag && !ids.contains(&i))
                    .unwrap_or_else(|| self.actions.next_id.fetch_add(1, Relaxed));
                ids.insert(a.id);
                remote.insert(field.clone(), a);
                adopted.push((field, s));
            }
            self.actions.adopted.lock().unwrap_or_else(PoisonError::into_inner).extend(adopted);
            self.remote_changed(&remote);
        }
        self.rebuild_remote();
        // In this process's row too, while this process holds them.
        self.save_actions();
    }

    /// One of this node's actions another node lifted: lifted here too.
    fn lifted_elsewhere(&self, field: &str) {
        let Some(id) = self.own_id(field) else { return };
        let now = self.clock_now();
        let lifted = {
            let mut list = self.actions.list.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(key) = list.iter().find(|(_, a)| a.id == id && a.fleet.is_some()).map(|(k, _)| k.clone()) else {
                return;
            };
            list.remove(&key)
        };
        if let Some(a) = lifted.filter(|a| a.expires_ms > now) {
            self.rebuild_view();
            self.save_actions();
            let event = Event::new(Kind::AnomalyAction, "lifted")
                .attr("action", a.kind)
                .attr("target", a.target.clone())
                .attr("detector", a.detector)
                .attr("origin", "fleet");
            self.emitter.load().emit(event);
        }
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `Retry-After` on a throttle's 429: whole seconds until a request would pass, at least one (the
/// longest any limit asks for, as the route's limits do).
fn retry_after(ex: &mut Exchange<'_>, nanos: u64) {
    let h = ex.limit_headers.get_or_insert_with(Box::default);
    h.retry_after = Some(h.retry_after.unwrap_or(0).max(crate::limit::secs_up(nanos).max(1)));
}

/// True when the principal's credential was issued after `since_ms` (a JWT's `iat`).
fn issued_after(p: &Principal, since_ms: u64) -> bool {
    let iat = p.claims.as_ref().and_then(|c| c.get("iat")).and_then(serde_json::Value::as_f64);
    iat.is_some_and(|iat| iat * 1000.0 > since_ms as f64)
}

fn hash_key(bytes: &[u8]) -> u128 {
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(0x616e_6f6d, 0x0061_6c79);
    std::hash::Hasher::write(&mut h, bytes);
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// An address action's target (`203.0.113.7`, `2001:db8:1:2::/64`) as `View::address` looks it up:
/// its network address (another node may have written host bits) and prefix length. `None` for
/// anything else (a prefix on an IPv4 address, a length over 128).
fn address_target(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = text.split_once('/').map_or((text, None), |(a, l)| (a, Some(l)));
    let ip = addr.parse::<IpAddr>().ok()?.to_canonical();
    match (ip, len) {
        (IpAddr::V4(_), None) => Some((ip, 32)),
        (IpAddr::V4(_), Some(_)) => None,
        (IpAddr::V6(_), None) => Some((ip, 128)),
        (IpAddr::V6(_), Some(l)) => {
            let len = l.parse::<u8>().ok().filter(|l| *l <= 128)?;
            Some((crate::exchange::client_net(ip, len).network(), len))
        }
    }
}

fn ip_target(ip: IpAddr, prefix: u8) -> String {
    match crate::exchange::client_net(ip, prefix) {
        net if net.prefix_len() < net.max_prefix_len() => net.to_string(),
        _ => ip.to_canonical().to_string(),
    }
}

/// The engine's state in the store (SQLite, table `anomaly_state`).
mod snapshot {
    use std::path::Path;

    const MIGRATION: &str = "CREATE TABLE IF NOT EXISTS anomaly_state (id INTEGER PRIMARY KEY CHECK (id = 1), \
                             saved_at INTEGER NOT NULL, state BLOB NOT NULL); \
                             CREATE TABLE IF NOT EXISTS anomaly_actions (id INTEGER PRIMARY KEY CHECK (id = 1), \
                             saved_at INTEGER NOT NULL, actions BLOB NOT NULL);";

    fn open(path: &Path) -> Result<rusqlite::Connection, String> {
        let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(|e| e.to_string())?;
        conn.execute_batch(MIGRATION).map_err(|e| e.to_string())?;
        Ok(conn)
    }

    /// The one row of `table`'s `column` (the engine's state, or the actions in force).
    pub(super) fn load_row(path: &Path, table: &str, column: &str) -> Result<Option<Vec<u8>>, String> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = open(path)?;
        let mut stmt =
            conn.prepare(&format!("SELECT {column} FROM {table} WHERE id = 1")).map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        match rows.next().map_err(|e| e.to_string())? {
            Some(row) => row.get::<_, Vec<u8>>(0).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    pub(super) fn save_row(path: &Path, table: &str, column: &str, bytes: &[u8]) -> Result<(), String> {
        let conn = open(path)?;
        conn.execute(
            &format!(
                "INSERT INTO {table} (id, saved_at, {column}) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at, {column} = excluded.{column}"
            ),
            rusqlite::params![super::wall_ms() as i64, bytes],
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// What a stored state inflates to at most (a million entities take about 350 MB).
    const MAX_STATE: u64 = 4 << 30;

    /// The stored state, inflated (states written before it was compressed are read as they are).
    pub(super) fn load(path: &Path) -> Result<Option<Vec<u8>>, String> {
        use std::io::Read;
        let Some(stored) = load_row(path, "anomaly_state", "state")? else { return Ok(None) };
        if !stored.starts_with(&[0x1f, 0x8b]) {
            return Ok(Some(stored));
        }
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(stored.as_slice())
            .take(MAX_STATE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("the stored state does not inflate: {e}"))?;
        if bytes.len() as u64 > MAX_STATE {
            return Err(format!("the stored state inflates past {MAX_STATE} bytes"));
        }
        Ok(Some(bytes))
    }

    /// The seed at the head of a stored state that does not load whole (a row cut short, or damaged
    /// past its first bytes), inflated as far as it goes: the engine starts afresh with it, and the
    /// actions in force, keyed with it, still match their principals.
    pub(super) fn salvage_seed(path: &Path) -> Option<u64> {
        use std::io::Read;
        let stored = load_row(path, "anomaly_state", "state").ok()??;
        if !stored.starts_with(&[0x1f, 0x8b]) {
            return super::Engine::seed_of(&stored);
        }
        let mut head = Vec::new();
        // On an error, what was inflated before it is kept.
        let _ = flate2::read::GzDecoder::new(stored.as_slice()).take(64).read_to_end(&mut head);
        super::Engine::seed_of(&head)
    }

    /// Stores the state gzipped at the fastest level: about a quarter of its size, at a few hundred
    /// megabytes a second.
    pub(super) fn save(path: &Path, state: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(state.len() / 3), flate2::Compression::fast());
        gz.write_all(state).map_err(|e| e.to_string())?;
        let stored = gz.finish().map_err(|e| e.to_string())?;
        save_row(path, "anomaly_state", "state", &stored)
    }

    pub(super) fn load_actions(path: &Path) -> Result<Option<Vec<u8>>, String> {
        load_row(path, "anomaly_actions", "actions")
    }

    pub(super) fn save_actions(path: &Path, actions: &[u8]) -> Result<(), String> {
        save_row(path, "anomaly_actions", "actions", actions)
    }
}

/// The principal an alert's action lands on, when the alert's entity is one: its exact credential
/// (the target) and its label. An address's alert lands on the address.
fn principal_of(a: &Alert) -> Option<(&super::PrincipalTarget, &str)> {
    a.target.as_ref().zip(a.principal.as_deref()).filter(|_| a.entity.kind != EntityKind::Ip)
}

/// Whether `action` can land on the alert's entity (`Inner::act`): log and alert always; a
/// throttle or a ban on a principal or an address; a challenge on a principal only. A route's alert
/// lands none of the three.
fn lands(action: Action, a: &Alert) -> bool {
    match action {
        Action::Log | Action::Alert => true,
        Action::Challenge => principal_of(a).is_some(),
        Action::Throttle | Action::Ban => principal_of(a).is_some() || a.ip.is_some(),
    }
}

/// Whether throttle rate `a` is stricter than `b`: the longer interval, or the same interval and the
/// smaller burst (a 1/s throttle with a burst of 60 lets sixty requests through at once where one
/// with a burst of 1 lets one).
fn stricter(a: gcra::Rate, b: gcra::Rate) -> bool {
    (a.interval, b.burst) > (b.interval, a.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store holds the newest snapshot taken (one written late does not replace a newer one), gzipped,
    /// and still reads a state stored as it is by an earlier build; a damaged one is an error.
    #[test]
    fn the_store_keeps_the_newest_snapshot_gzipped() {
        let dir = std::env::temp_dir().join(format!("portcullis-anomaly-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let saver = Saver::default();
        let state = |n: u8| [b"PCA\x01".as_slice(), &[n; 4096]].concat();
        let job = |n: u8| Job { row: STATE, n: u64::from(n), path: path.clone(), bytes: state(n) };
        saver.write(&job(2));
        saver.write(&job(1));
        assert_eq!(snapshot::load(&path).unwrap(), Some(state(2)));
        let stored = snapshot::load_row(&path, "anomaly_state", "state").unwrap().unwrap();
        assert!(stored.starts_with(&[0x1f, 0x8b]) && stored.len() < 200, "{} bytes stored", stored.len());
        snapshot::save_row(&path, "anomaly_state", "state", b"{\"version\":2}").unwrap();
        assert_eq!(snapshot::load(&path).unwrap().as_deref(), Some(b"{\"version\":2}".as_slice()));
        snapshot::save_row(&path, "anomaly_state", "state", &[0x1f, 0x8b, 8, 0, 0]).unwrap();
        assert!(snapshot::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn alert(detector: Detector, ip: IpAddr, at_ms: u64) -> Alert {
        Alert {
            detector,
            entity: super::super::Entity { kind: EntityKind::Ip, label: ip.to_string().into() },
            ip: Some(ip),
            principal: None,
            target: None,
            feature: "sequential_id_run",
            baseline: 20.0,
            observed: 40.0,
            score: 0.67,
            window_s: 600,
            at_ms,
            explanation: "test".into(),
        }
    }

    /// A token-sharing alert on the JWT principal `alice` with engine key `key`.
    fn alice_sharing(key: u64, principal: Option<Arc<Principal>>, at_ms: u64) -> Alert {
        Alert {
            detector: Detector::TokenSharing,
            entity: super::super::Entity { kind: EntityKind::Principal, label: "alice".into() },
            ip: None,
            principal: Some("alice".into()),
            target: Some(super::super::PrincipalTarget { key, method: "jwt", whole: true, principal }),
            feature: "distinct_addresses",
            baseline: 5.0,
            observed: 9.0,
            score: 0.6,
            window_s: 600,
            at_ms,
            explanation: "test".into(),
        }
    }

    /// A node sharing its actions with an unreachable Redis (down), under `c`, that challenged alice
    /// (the node, alice, her key there, and when).
    fn challenged_alice(c: &AnomalyConfig) -> (Arc<Anomaly>, Arc<Principal>, u64, u64) {
        let node = Kept::default().get(Policy::compile(c, None).unwrap(), &AnomalyMetrics::default());
        node.inner.fleet.store(Some(unreachable_redis()));
        let alice = Arc::new(alice());
        let t0 = wall_ms();
        let key = Engine::principal_key(node.inner.actions.seed, &alice);
        node.inner.raise(alice_sharing(key, Some(alice.clone()), t0));
        (node, alice, key, t0)
    }

    /// Another node's throttle of an address, as read from the fleet's hash.
    fn throttle_of_another_node(t0: u64) -> (String, Shared) {
        throttle_from("203.0.113.44", "other", t0)
    }

    /// `node`'s throttle of `address` (1/s for an hour from `t0`), under its field `<node>:1`.
    fn throttle_from(address: &str, node: &str, t0: u64) -> (String, Shared) {
        let s = Shared {
            kind: "throttle".into(),
            target: SharedTarget::Ip { address: address.into() },
            label: address.into(),
            detector: "enumeration".into(),
            alert: 1,
            since_ms: t0,
            expires_ms: t0 + 3_600_000,
            interval_ns: Some(1_000_000_000),
            burst: Some(1),
            rate: Some("1/s".into()),
            node: node.into(),
            id: 0,
        };
        (format!("{node}:1"), s)
    }

    /// A fleet whose Redis nothing answers (actions shared, every call failing fast).
    fn unreachable_redis() -> Arc<crate::fleet::Fleet> {
        let cfg = crate::fleet::RedisConfig {
            url: "redis://127.0.0.1:9/0".into(),
            username: None,
            password: None,
            command_timeout: crate::units::Dur(Duration::from_millis(50)),
            connect_timeout: crate::units::Dur(Duration::from_millis(50)),
            share_bans: true,
        };
        Arc::new(crate::fleet::Fleet::new(&cfg).unwrap())
    }

    /// The JWT principal `alice` of `https://idp.test`.
    fn alice() -> Principal {
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({"iss": "https://idp.test", "sub": "alice"})).unwrap();
        Principal {
            id: "alice".into(),
            kind: PrincipalKind::Jwt,
            roles: vec![],
            scopes: vec![],
            claims: Some(Arc::new(claims)),
            tenant: None,
            identity: Default::default(),
        }
    }

    /// Polls (to a deadline) until `f` holds: the detector thread rebuilds the view after a batch.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Thousands of actions (an attacker with many /64s): each alert finds its own, the detector
    /// thread puts them in force, a repeated alert extends (never shortens) its action and keeps the
    /// stricter throttle, and expiry and lifting take them out of the list and the view.
    #[test]
    fn many_actions_extend_never_shorten_keep_the_stricter_rate_and_expire() {
        let yaml = "mode: enforce\ndetectors:\n  enumeration: { duration: 10m }\n  volumetric: { actions: [log, throttle], duration: 1m, throttle: 2/m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let inner = &a.inner;
        let now = wall_ms();
        let ip = |i: u32| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, i as u16, 0, 0, 0, 1));
        for i in 0..5_000u32 {
            inner.raise(alert(Detector::Enumeration, ip(i), now));
        }
        // Set by `raise`, put in force by the detector thread at the end of its batch.
        eventually("the view never held the 5,000 throttles", || inner.actions.view.load().ips_len() == 5_000);
        let listed = a.actions();
        assert_eq!(listed.len(), 5_000);
        assert!(listed.windows(2).all(|w| w[0].id < w[1].id), "listed in id order");
        let first = listed.iter().find(|x| x.target == ip_target(ip(7), 64)).unwrap().clone();
        assert_eq!(first.rate.as_deref(), Some("1/s"));
        // A stricter detector on the same address: its rate, the later expiry kept (its own is 1m).
        inner.raise(alert(Detector::Volumetric, ip(7), now + 1_000));
        let find = |id: u64| a.actions().into_iter().find(|x| x.id == id).unwrap();
        let second = find(first.id);
        assert_eq!((second.rate.as_deref(), second.detector), (Some("2/m"), "volumetric"));
        assert_eq!(second.expires_ms, first.expires_ms, "a shorter action shortened it");
        // The looser one again, later: the expiry moves on, the stricter rate stays.
        inner.raise(alert(Detector::Enumeration, ip(7), now + 60_000));
        let third = find(first.id);
        assert_eq!(third.rate.as_deref(), Some("2/m"));
        assert!(third.expires_ms > first.expires_ms);
        assert_eq!(a.actions().len(), 5_000);
        // Lifted by id: gone from the list and, with the next rebuild, the view.
        assert!(a.lift(first.id).is_some());
        assert_eq!(a.actions().len(), 4_999);
        assert_eq!(inner.actions.view.load().ips_len(), 4_999);
        // Any address of a throttled /64 finds it, also after a reload moves `ipv6_prefix` to /48
        // (the action keeps the prefix it was raised with); the next /64 does not.
        let other = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 7, 0xa, 0xb, 0xc, n));
        assert!(inner.actions.view.load().address(other(9), now).next().is_none(), "lifted above");
        assert!(inner
            .actions
            .view
            .load()
            .address(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 8, 1, 2, 3, 4)), now)
            .next()
            .is_some());
        let c48: AnomalyConfig = serde_yaml_ng::from_str(&format!("{yaml}ipv6_prefix: 48\n")).unwrap();
        a.set_policy(Policy::compile(&c48, None).unwrap());
        inner.rebuild_view();
        let view = inner.actions.view.load();
        assert_eq!(
            view.address(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 8, 1, 2, 3, 4)), now)
                .map(|((net, len), _)| format!("{net}/{len}"))
                .collect::<Vec<_>>(),
            ["2001:db8:7:8::/64"]
        );
        assert!(view.address("2001:db8:7:1388::1".parse().unwrap(), now).next().is_none());
        // Expiry: everything has run out ten minutes and a second on.
        inner.expire(now + 11 * 60_000);
        assert!(a.actions().is_empty());
        assert_eq!(inner.actions.view.load().ips_len(), 0);
        assert_eq!(inner.actions.next_expiry.load(Relaxed), u64::MAX);
    }

    /// The actions row is written by the detector thread after a change, without a shutdown (at most
    /// once a second: a batch that changes actions no longer serialises the whole list each time), and
    /// holds the seed the principals' keys were made with.
    #[test]
    fn the_actions_row_follows_a_change_without_a_shutdown() {
        let dir = std::env::temp_dir().join(format!("portcullis-anomaly-actions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let yaml =
            "mode: enforce\nsnapshot: true\ndetectors:\n  enumeration: { actions: [log, throttle], throttle: 1/s }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, Some(&path)).unwrap(), &AnomalyMetrics::default());
        let now = wall_ms();
        for i in 0..3u8 {
            a.inner.raise(alert(Detector::Enumeration, IpAddr::from([198, 51, 100, i]), now));
        }
        let stored = || {
            snapshot::load_actions(&path).ok().flatten().and_then(|b| serde_json::from_slice::<KeptActions>(&b).ok())
        };
        eventually("the actions row never held the three throttles", || {
            stored().is_some_and(|k| matches!(&k, KeptActions::Seeded { actions, .. } if actions.len() == 3))
        });
        assert_eq!(stored().and_then(|k| k.seed()), Some(a.inner.actions.seed));
        drop(a);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two throttles of one interval (1/s with a burst of 1, 60/m with a burst of 60): the smaller burst
    /// is the stricter and holds, whichever came first (the interval alone was compared, and the later
    /// alert's burst of 60 replaced the burst of 1).
    #[test]
    fn a_throttle_of_the_same_interval_with_a_smaller_burst_is_the_stricter() {
        let yaml = "mode: enforce\ndetectors:\n  enumeration: { actions: [log, throttle], throttle: 1/s }\n  volumetric: { actions: [log, throttle], throttle: 60/m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let now = wall_ms();
        for order in [[Detector::Enumeration, Detector::Volumetric], [Detector::Volumetric, Detector::Enumeration]] {
            let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
            let inner = &a.inner;
            let ip: IpAddr = "198.51.100.7".parse().unwrap();
            inner.raise(alert(order[0], ip, now));
            inner.raise(alert(order[1], ip, now + 1_000));
            let listed = a.actions();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].detector, "enumeration", "{order:?}");
            inner.rebuild_view();
            let view = inner.actions.view.load();
            let (_, entry) = view.address(ip, now).next().expect("in force");
            let (rate, _) = entry.throttle.expect("a throttle");
            assert_eq!((rate.interval, rate.burst), (1_000_000_000, 1), "{order:?}");
        }
    }

    /// A challenge raised again while its window still holds the evidence from before it began keeps
    /// its start (the owner's fresh token stays good); once the window has moved past, it moves. A
    /// principal ban that the fleet's list cannot name exactly (a JWT) is held by the stage.
    #[test]
    fn a_challenge_keeps_its_start_within_the_window_and_bans_of_jwt_principals_stay_here() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge, ban], duration: 1h }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let sharing = |at_ms: u64| alice_sharing(42, None, at_ms);
        let t0 = wall_ms();
        a.inner.raise(sharing(t0));
        let since = |a: &Anomaly| a.actions().into_iter().find(|x| x.kind == "challenge").unwrap().since_ms;
        let began = since(&a);
        a.inner.raise(sharing(t0 + 5 * 60_000));
        assert_eq!(since(&a), began, "moved within the window");
        a.inner.raise(sharing(t0 + 11 * 60_000));
        assert!(since(&a) >= t0 + 11 * 60_000, "kept past the window");
        let ban = a.actions().into_iter().find(|x| x.kind == "ban").unwrap();
        assert_eq!((ban.target.as_str(), ban.shared, ban.key), ("jwt:alice", false, Some(42)));
        a.inner.rebuild_view();
        let view = a.inner.actions.view.load();
        let e = view.principal(42, t0).unwrap();
        assert!(e.banned(t0) && e.challenge_since(t0).is_some());
        // Each kind runs out on its own.
        assert!(!e.banned(ban.expires_ms) && e.challenge_since(ban.expires_ms).is_none());
    }

    /// Another node's actions (`redis.share_bans: true`) as written to the fleet's hash and read back
    /// here: a principal is keyed with this node's own seed, an address as written; each node holds
    /// the strictest; lifting here lifts the other node's too, and that node drops its own when its
    /// field is gone.
    #[test]
    fn shared_actions_apply_on_another_node_and_a_lift_anywhere_lifts_them_all() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge, ban], duration: 1h }\n  enumeration: { actions: [log, throttle], duration: 1h, throttle: 2/m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let node = || {
            let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
            // Shared, with no fleet thread: the test moves the writes between the nodes itself.
            a.inner.fleet.store(Some(unreachable_redis()));
            a
        };
        let (a, b) = (node(), node());
        assert_ne!(a.inner.actions.seed, b.inner.actions.seed);
        let alice = Arc::new(alice());
        let key_a = Engine::principal_key(a.inner.actions.seed, &alice);
        let t0 = wall_ms();
        let sharing = |key: u64, at_ms: u64| alice_sharing(key, Some(alice.clone()), at_ms);
        a.inner.raise(sharing(key_a, t0));
        let ip: IpAddr = "2001:db8:7:7::1".parse().unwrap();
        a.inner.raise(alert(Detector::Enumeration, ip, t0));
        let listed = a.actions();
        assert_eq!(listed.len(), 3, "{listed:?}");
        let began = listed.iter().find(|x| x.kind == "challenge").unwrap().since_ms;
        assert!(listed.iter().all(|x| x.shared && x.origin == HERE), "{listed:?}");
        // What node A writes, node B reads.
        let ops = a.inner.actions.outbox.lock().unwrap().take();
        let read: Vec<(String, Shared)> = ops
            .iter()
            .map(|op| match op {
                Op::Put(f, v) => (f.clone(), serde_json::from_str(v).unwrap()),
                Op::Del(f) | Op::Lift(f, _) => panic!("deleted {f}"),
            })
            .collect();
        assert_eq!(read.len(), 3);
        b.inner.set_remote(read.clone(), &Default::default(), None);
        // Its own writes read back are not another node's.
        a.inner.set_remote(read.clone(), &Default::default(), None);
        assert_eq!(a.actions().len(), 3);
        let on_b = b.actions();
        assert_eq!(on_b.len(), 3, "{on_b:?}");
        // One id for each action on every node: an id lifts the same action wherever it is sent.
        let ids = |l: &[ActiveAction]| l.iter().map(|x| x.id).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(ids(&on_b), ids(&listed));
        assert!(on_b.iter().all(|x| x.shared && x.origin == a.inner.actions.node), "{on_b:?}");
        let view = b.inner.actions.view.load();
        let key_b = Engine::principal_key(b.inner.actions.seed, &alice);
        assert_ne!(key_a, key_b);
        let e = view.principal(key_b, t0).expect("alice, keyed with B's seed");
        assert!(e.banned(t0) && e.challenge_since(t0) == Some(began));
        let (_, e) = view.address("2001:db8:7:7:aaaa::9".parse().unwrap(), t0).next().expect("the /64, as written");
        assert_eq!(e.throttle(t0).map(|r| r.interval), Some(30_000_000_000));
        // Another issuer's alice is someone else.
        let other = Principal { claims: None, ..(*alice).clone() };
        assert!(view.principal(Engine::principal_key(b.inner.actions.seed, &other), t0).is_none());
        drop(view);
        // B's own challenge of alice, within the alert's window of A's: it keeps A's start (the
        // owner's token issued since stays good on every node).
        b.inner.raise(sharing(key_b, t0 + 60_000));
        b.inner.rebuild_view();
        assert_eq!(b.inner.actions.view.load().principal(key_b, t0).unwrap().challenge_since(t0), Some(began));
        // Lifting A's challenge on B lifts B's own too, and deletes A's field.
        let challenge = b.actions().into_iter().find(|x| x.kind == "challenge" && x.origin != HERE).unwrap();
        b.inner.actions.outbox.lock().unwrap().clear();
        b.lift(challenge.id).unwrap();
        assert!(b.actions().iter().all(|x| x.kind != "challenge"), "{:?}", b.actions());
        let dels: Vec<Op> = b.inner.actions.outbox.lock().unwrap().take();
        let a_field = read.iter().find(|(_, s)| s.kind == "challenge").unwrap().0.clone();
        assert!(dels.iter().any(|op| matches!(op, Op::Lift(f, _) if *f == a_field)), "{dels:?}");
        assert!(dels.iter().any(|op| matches!(op, Op::Lift(f, _) if f.starts_with(&b.inner.actions.node))), "{dels:?}");
        assert_eq!(dels.len(), 2, "B's own challenge and A's: {dels:?}");
        assert!(b.inner.actions.view.load().principal(key_b, t0).unwrap().challenge_since(t0).is_none());
        // A sees its field gone: lifted there too.
        a.inner.lifted_elsewhere(&a_field);
        assert!(a.actions().iter().all(|x| x.kind != "challenge"), "{:?}", a.actions());
        assert_eq!(a.actions().len(), 2);
        // What another node cannot apply is skipped: an unknown method, a throttle without its rate.
        let mut bad = read.clone();
        for (_, s) in &mut bad {
            match &mut s.target {
                SharedTarget::Principal { method, .. } => *method = "smoke_signal".into(),
                SharedTarget::Ip { .. } => s.interval_ns = None,
            }
        }
        b.inner.set_remote(bad, &Default::default(), None);
        assert!(b.actions().iter().all(|x| x.origin == HERE), "{:?}", b.actions());
        // Gone from the hash unmarked (Redis lost its data): kept. Marked lifted: dropped.
        b.inner.set_remote(read.clone(), &Default::default(), None);
        assert_eq!(b.actions().iter().filter(|x| x.origin != HERE).count(), 3);
        b.inner.set_remote(vec![], &Default::default(), None);
        assert_eq!(b.actions().iter().filter(|x| x.origin != HERE).count(), 3, "lost data taken for a lift");
        let marks = read.iter().map(|(f, _)| f.clone()).collect();
        b.inner.set_remote(vec![], &marks, None);
        assert_eq!(b.actions().iter().filter(|x| x.origin != HERE).count(), 0);
        // Written again after its mark (a node that had not seen the lift yet): still lifted.
        b.inner.set_remote(read.clone(), &marks, None);
        assert_eq!(b.actions().iter().filter(|x| x.origin != HERE).count(), 0, "a lift undone by a late write");
        // Past the window of A's challenge, B's new one starts at its own alert: a token stolen again
        // after the first challenge is refused on every node.
        b.inner.set_remote(read.clone(), &Default::default(), None);
        b.inner.raise(sharing(key_b, t0 + 11 * 60_000));
        b.inner.rebuild_view();
        let since = b.inner.actions.view.load().principal(key_b, t0).unwrap().challenge_since(t0).unwrap();
        assert!(since >= t0 + 11 * 60_000 && since > began, "{since}");
        // Throttles of two prefix lengths (nodes with different `ipv6_prefix`) never stand for each other.
        let throttle = |address: &str, node: &str| throttle_from(address, node, t0);
        b.inner.set_remote(
            vec![throttle("2001:db8::/64", "c"), throttle("2001:db9::/48", "d")],
            &Default::default(),
            None,
        );
        let view = b.inner.actions.view.load();
        let found =
            |ip: &str| view.address(ip.parse().unwrap(), t0).map(|((n, l), _)| format!("{n}/{l}")).collect::<Vec<_>>();
        assert_eq!(found("2001:db8::77"), ["2001:db8::/64"]);
        assert!(found("2001:db8:0:5::1").is_empty(), "a /64's network taken for a /48");
        assert_eq!(found("2001:db9:0:1::1"), ["2001:db9::/48"]);
        drop(view);
        // Host bits another node wrote are its network's; an id with this node's tag (two nodes drew
        // one) gets one of this node's instead, so an id never names two actions here.
        let tag = b.inner.actions.next_id.load(Relaxed) >> 32;
        let (field, mut clash) = throttle("2001:dba::9/64", "e");
        clash.id = tag << 32 | 1;
        b.inner.set_remote(vec![(field, clash)], &Default::default(), None);
        assert_eq!(b.inner.actions.view.load().address("2001:dba::1".parse().unwrap(), t0).count(), 1);
        let held = b.actions().into_iter().find(|x| x.target == "2001:dba::9/64").unwrap();
        assert_ne!(held.id, tag << 32 | 1);
        let ids: Vec<u64> = b.actions().iter().map(|x| x.id).collect();
        assert_eq!(ids.len(), ids.iter().collect::<std::collections::BTreeSet<_>>().len(), "{ids:?}");
    }

    /// Restarted while Redis is down: the previous process's shared actions (a throttle of an address,
    /// a challenge of alice) hold from the start, as that process's (another node's, keyed with this
    /// engine's seed); before, they lapsed until Redis was back. The first read of the fleet's hash then
    /// drops the one lifted meanwhile and keeps the one gone unmarked (Redis lost its data). Without
    /// sharing they are not put back (a reload that stops sharing drops the fleet's actions too).
    #[test]
    fn shared_actions_hold_across_a_restart_while_redis_is_down() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge], duration: 1h }\n  enumeration: { actions: [log, throttle], duration: 1h, throttle: 2/m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let (before, alice, key, t0) = challenged_alice(&c);
        let ip: IpAddr = "2001:db8:7:7::1".parse().unwrap();
        before.inner.raise(alert(Detector::Enumeration, ip, t0));
        let raised = before.actions();
        assert!(raised.len() == 2 && raised.iter().all(|x| x.shared), "{raised:?}");
        let row = before.inner.kept_actions();
        let node = before.inner.actions.node.clone();
        drop(before);
        let restart_from = |row: &[u8], sharing: bool| {
            let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
            a.inner.restore_actions(Some(serde_json::from_slice(row).unwrap()), false);
            let bans = Arc::new(crate::guard::bans::Bans::empty(None));
            a.attach(bans, Emitter::default(), HashMap::new(), sharing.then(unreachable_redis));
            a
        };
        let restart = |sharing: bool| restart_from(&row, sharing);
        // Restarted a second time, Redis still down: what the first restart adopted is in its row,
        // and holds again (it was lost here before).
        let after = restart_from(&restart(true).inner.kept_actions(), true);
        let listed = after.actions();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().all(|x| x.origin == node && x.shared), "{listed:?}");
        assert_eq!(
            listed.iter().map(|x| x.id).collect::<std::collections::BTreeSet<_>>(),
            raised.iter().map(|x| x.id).collect()
        );
        let view = after.inner.actions.view.load();
        let (_, e) = view.address("2001:db8:7:7:9::9".parse().unwrap(), t0).next().expect("the /64's throttle");
        assert_eq!(e.throttle(t0).map(|r| r.interval), Some(30_000_000_000));
        let key_after = Engine::principal_key(after.inner.actions.seed, &alice);
        assert_ne!(key, key_after);
        assert!(view.principal(key_after, t0).and_then(|e| e.challenge_since(t0)).is_some());
        drop(view);
        // Redis is back: the challenge was lifted meanwhile (its field marked), the throttle's field is
        // gone unmarked.
        let challenge = raised.iter().find(|x| x.kind == "challenge").unwrap();
        let marks = [format!("{node}:{}", challenge.id)].into_iter().collect();
        after.inner.set_remote(vec![], &marks, None);
        let left = after.actions();
        assert!(left.len() == 1 && left[0].kind == "throttle", "{left:?}");
        assert!(after.inner.actions.view.load().principal(key_after, t0).is_none_or(|e| e.is_none()));
        // The lifted one has left the row; the other is still carried by it.
        let third = restart_from(&after.inner.kept_actions(), true).actions();
        assert!(third.len() == 1 && third[0].kind == "throttle" && third[0].origin == node, "{third:?}");
        // Not shared after the restart: not put back.
        assert!(restart(false).actions().is_empty());
    }

    /// The adopted copy follows the fleet's hash: the raising process extended its action there and
    /// died before its row write; Redis then loses its data, and this node writes back the hash's
    /// later copy, not the row's (which would end the action an hour early on every node). (From a
    /// review.)
    #[test]
    fn an_adopted_action_is_written_back_as_the_fleet_last_had_it() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge], duration: 1h }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let (before, _, _, _) = challenged_alice(&c);
        let row = before.inner.kept_actions();
        let ops = before.inner.actions.outbox.lock().unwrap().take();
        let (field, mut latest) = match &ops[0] {
            Op::Put(f, v) => (f.clone(), serde_json::from_str::<Shared>(v).unwrap()),
            op => panic!("{op:?}"),
        };
        latest.expires_ms += 3_600_000;
        drop(before);
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        a.inner.restore_actions(Some(serde_json::from_slice(&row).unwrap()), false);
        let bans = Arc::new(crate::guard::bans::Bans::empty(None));
        a.attach(bans, Emitter::default(), HashMap::new(), Some(unreachable_redis()));
        let present: std::collections::HashSet<String> = [field.clone()].into_iter().collect();
        a.inner.set_remote(vec![(field.clone(), latest.clone())], &Default::default(), Some(&present));
        assert_eq!(a.actions()[0].expires_ms, latest.expires_ms);
        let empty = std::collections::HashSet::new();
        a.inner.set_remote(vec![], &Default::default(), Some(&empty));
        a.inner.actions.outbox.lock().unwrap().clear();
        a.inner.republish_adopted(&empty, &empty);
        let put = a.inner.actions.outbox.lock().unwrap().take();
        let Some(Op::Put(f, v)) = put.first() else { panic!("{put:?}") };
        assert_eq!(*f, field);
        assert_eq!(serde_json::from_str::<Shared>(v).unwrap(), latest);
        // And the row carries that copy.
        let row: serde_json::Value = serde_json::from_slice(&a.inner.kept_actions()).unwrap();
        assert_eq!(row["adopted"][0][1]["expires_ms"], latest.expires_ms, "{row}");
    }

    /// An adopted entry this build cannot read (a later build's, with one more field: `Shared` denies
    /// unknown fields) is skipped; the row, with this node's own actions and the seed, is not lost.
    /// (From a review.)
    #[test]
    fn an_unreadable_adopted_entry_is_skipped_not_the_row() {
        let yaml =
            "mode: enforce\ndetectors:\n  enumeration: { actions: [log, throttle], duration: 1h, throttle: 2/m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let t0 = wall_ms();
        a.inner.raise(alert(Detector::Enumeration, "198.51.100.9".parse().unwrap(), t0));
        let mut row: serde_json::Value = serde_json::from_slice(&a.inner.kept_actions()).unwrap();
        let entry = |extra: bool| {
            let mut v = serde_json::json!(["old-node:1", {
                "kind": "throttle", "target": {"kind": "ip", "address": "203.0.113.1"}, "label": "203.0.113.1",
                "detector": "enumeration", "alert": 1, "since_ms": t0, "expires_ms": t0 + 3_600_000,
                "interval_ns": 30_000_000_000u64, "burst": 1, "rate": "2/m", "node": "old-node", "id": 1
            }]);
            if extra {
                v[0] = "old-node:2".into();
                v[1]["scope"] = "a later build's field".into();
            }
            v
        };
        row["adopted"] = serde_json::json!([entry(true), entry(false)]);
        let parsed: KeptActions = serde_json::from_slice(&serde_json::to_vec(&row).unwrap()).unwrap();
        let KeptActions::Seeded { seed, actions, adopted, .. } = parsed else { panic!("not the seeded row") };
        assert_eq!((seed, actions.len()), (a.inner.actions.seed, 1));
        assert_eq!(adopted.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["old-node:1"]);
    }

    /// A lift of the fleet's action made while Redis is down waits in the outbox: the row carries it,
    /// so the next process writes it (it is not adopted meanwhile). Before, a restart before Redis was
    /// back lost it, and the action came back on every node. (From a review.)
    #[test]
    fn a_lift_made_while_redis_is_down_outlives_a_restart() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge], duration: 1h }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let (before, _, _, t0) = challenged_alice(&c);
        let theirs = throttle_of_another_node(t0);
        before.inner.set_remote(vec![theirs.clone()], &Default::default(), None);
        assert_eq!(before.actions().len(), 2);
        for x in before.actions() {
            before.lift(x.id).unwrap();
        }
        let row = before.inner.kept_actions();
        drop(before);
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        a.inner.restore_actions(Some(serde_json::from_slice(&row).unwrap()), false);
        let bans = Arc::new(crate::guard::bans::Bans::empty(None));
        a.attach(bans, Emitter::default(), HashMap::new(), Some(unreachable_redis()));
        assert!(a.actions().is_empty(), "{:?}", a.actions());
        let mut lifts: Vec<String> = a
            .inner
            .actions
            .outbox
            .lock()
            .unwrap()
            .take()
            .into_iter()
            .map(|op| match op {
                Op::Lift(f, until) if until > t0 => f,
                op => panic!("{op:?}"),
            })
            .collect();
        lifts.sort();
        assert_eq!(lifts.len(), 2, "{lifts:?}");
        assert!(lifts.contains(&theirs.0), "{lifts:?}");
    }

    /// The user agent's hash is keyed with the engine's seed (as the path parameters' is, by the same
    /// hasher): stable in one engine, another in an engine of another seed, so no client can choose
    /// agents or ids whose hashes share the sketches' slots.
    #[test]
    fn record_hashes_are_keyed_with_the_engines_seed() {
        let c: AnomalyConfig = serde_yaml_ng::from_str("mode: monitor\n").unwrap();
        let node = || Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let (a, b) = (node(), node());
        assert_ne!(a.inner.actions.seed, b.inner.actions.seed);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("curl/8.5.0"));
        let ua = |x: &Anomaly| x.head(&headers).user_agent;
        assert_eq!(ua(&a), ua(&a));
        assert_ne!(ua(&a), ua(&b));
        let unkeyed = {
            let mut h = siphasher::sip::SipHasher13::new();
            std::hash::Hasher::write(&mut h, b"curl/8.5.0");
            std::hash::Hasher::finish(&h).max(1)
        };
        assert_ne!(ua(&a), unkeyed);
    }

    #[test]
    fn ban_and_throttle_targets_group_ipv6_by_prefix_except_nat64() {
        let t = |ip: &str| ip_target(ip.parse().unwrap(), 64);
        assert_eq!(t("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(t("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(t("64:ff9b::203.0.113.7"), "64:ff9b::cb00:7107");
        assert_eq!(t("64:ff9b:1:2::cb00:7107"), "64:ff9b:1:2::cb00:7107");
        let p = |ip: &str| crate::exchange::client_net(ip.parse().unwrap(), 64).network().to_string();
        assert_eq!(p("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(p("64:ff9b::203.0.113.7"), "64:ff9b::cb00:7107");
    }

    #[test]
    fn password_spraying_can_only_log_and_alert() {
        for actions in ["[log, ban]", "[throttle]", "[alert, challenge]"] {
            let yaml = format!("detectors:\n  password_spraying: {{ actions: {actions} }}\n");
            let c: AnomalyConfig = serde_yaml_ng::from_str(&yaml).unwrap();
            let e = Policy::compile(&c, None).unwrap_err();
            assert!(e.contains("password_spraying"), "{e}");
        }
        let c: AnomalyConfig =
            serde_yaml_ng::from_str("detectors:\n  password_spraying: { actions: [log, alert] }\n").unwrap();
        assert!(Policy::compile(&c, None).is_ok());
    }

    /// What the view holds for `ips` and the principal keys `keys` at `now`, as `layer` lookups
    /// joined (the parts in force only; a target with none is absent).
    fn in_force(view: &View, ips: &[IpAddr], keys: &[u64], now: u64) -> Vec<(String, Entry)> {
        let mut out: Vec<(String, Entry)> = Vec::new();
        for &ip in ips {
            for ((net, len), e) in view.address(ip, now) {
                out.push((format!("{net}/{len}"), e));
            }
        }
        for &k in keys {
            out.extend(view.principal(k, now).map(|e| (format!("key {k}"), e)));
        }
        out.retain(|(_, e)| !e.is_none());
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The view as one whole build of the list and the fleet's actions makes it.
    fn built_whole(inner: &Inner) -> View {
        let list = inner.actions.list.lock().unwrap();
        let remote = inner.actions.remote.lock().unwrap();
        let mut lens = Vec::new();
        let local = Layer::of(list.values(), &mut lens, true);
        let other = Layer::of(remote.values(), &mut lens, false);
        View { local: Arc::new(local), delta: Layer::default(), remote: Arc::new(other), v6_lens: lens }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        /// The view kept by deltas, lazy expiry and occasional whole builds answers every lookup as a
        /// whole build of the actions in force does: through alerts that set, extend and strengthen
        /// throttles, challenges and bans, lifts, and expiries, in any order.
        #[test]
        fn the_view_kept_by_deltas_answers_as_a_whole_build(
            ops in proptest::collection::vec((0u8..6, 0u8..8, 0u64..400_000), 1..60),
        ) {
            let yaml = "mode: enforce\ndetectors:\n  enumeration: { actions: [log, throttle], duration: 5m, throttle: 1/s }\n  volumetric: { actions: [log, throttle], duration: 2m, throttle: 2/m }\n  token_sharing: { actions: [log, challenge, ban], duration: 3m }\n";
            let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
            let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
            let inner = &a.inner;
            let ips: Vec<IpAddr> = (0..6u16)
                .map(|i| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 9, i, 0, 0, 0, 1)))
                .chain([IpAddr::from([198, 51, 100, 1]), IpAddr::from([198, 51, 100, 2])])
                .collect();
            // Alice as another node names her (the fleet's lists), keyed with this node's seed.
            let keys = [Engine::principal_key(inner.actions.seed, &alice()), 8, 9];
            // Other nodes' actions: throttles (one stricter than this node's, one looser, one on an IPv4
            // address, and a third node's beside the first) and a challenge of alice that may have
            // begun before this node's.
            let other = |i: u8, t: u64, dt: u64| {
                let (kind, target, label, interval, burst) = match i {
                    0 => ("throttle", SharedTarget::Ip { address: "2001:db8:9::/64".into() }, "2001:db8:9::/64", 60, 1),
                    1 => ("throttle", SharedTarget::Ip { address: "2001:db8:9:1::/64".into() }, "2001:db8:9:1::/64", 1, 5),
                    2 => ("throttle", SharedTarget::Ip { address: "198.51.100.1".into() }, "198.51.100.1", 30, 2),
                    // A third node's on the first's /64: two nodes' throttles of one target.
                    4 => ("throttle", SharedTarget::Ip { address: "2001:db8:9::/64".into() }, "2001:db8:9::/64", 2, 3),
                    _ => (
                        "challenge",
                        SharedTarget::Principal { method: "jwt".into(), iss: "https://idp.test".into(), id: "alice".into() },
                        "jwt:alice",
                        0,
                        0,
                    ),
                };
                let throttle = kind == "throttle";
                (
                    format!("other{}:{i}", i / 4),
                    Shared {
                        kind: kind.into(),
                        target,
                        label: label.into(),
                        detector: "enumeration".into(),
                        alert: 1,
                        since_ms: t.saturating_sub(dt % 600_000),
                        // (The third node's outlasts the first's, stricter, one.)
                        expires_ms: t + if i == 4 { 2 * dt } else { dt / (u64::from(i) + 1) } + 1,
                        interval_ns: throttle.then_some(interval * 1_000_000_000),
                        burst: throttle.then_some(burst),
                        rate: throttle.then(|| "x".into()),
                        node: format!("other{}", i / 4),
                        id: 0,
                    },
                )
            };
            // In the future of the wall clock: the detector thread's own expiry takes none of them.
            let mut t = wall_ms() + 60_000;
            for (op, n, dt) in ops {
                t += dt / 4;
                match op {
                    0 => inner.raise(alert(Detector::Enumeration, ips[n as usize], t)),
                    1 => inner.raise(alert(Detector::Volumetric, ips[n as usize], t)),
                    2 => inner.raise(alice_sharing(keys[n as usize % 3], None, t)),
                    3 => {
                        let listed = a.actions();
                        if !listed.is_empty() {
                            a.lift(listed[n as usize % listed.len()].id);
                        }
                    }
                    4 => {
                        t += dt;
                        inner.expire(t);
                    }
                    _ => {
                        // The fleet's list now holds those of the five in `n`'s bits (and `dt`'s 8 and
                        // 16); the others are marked lifted.
                        let bits = u64::from(n) | (dt & 24);
                        let (held, gone): (Vec<u8>, Vec<u8>) = (0..5u8).partition(|i| bits >> i & 1 == 1);
                        let read = held.iter().map(|&i| other(i, t, dt)).collect();
                        let marks = gone.iter().map(|&i| other(i, t, dt).0).collect();
                        inner.set_remote(read, &marks, None);
                    }
                }
                inner.update_view();
                // (The fleet thread's poll.)
                inner.tend_remote(t);
                let kept = in_force(&inner.actions.view.load(), &ips, &keys, t);
                let whole = in_force(&built_whole(inner), &ips, &keys, t);
                proptest::prop_assert_eq!(kept, whole);
            }
        }
    }

    /// The detector thread never takes the fleet's list's lock, which the fleet thread holds while it
    /// reads the hash or copies the list out: with that lock held elsewhere, a batch that raises a
    /// challenge (which looks up the fleet's challenges of that principal), a throttle, an expiry and
    /// the store's row all complete. Before, `act`, `expire` and the view's counts took it (and `act`
    /// scanned the whole list for each challenge). Polled to a deadline, not timed.
    #[test]
    fn the_detector_thread_never_waits_on_the_fleets_list() {
        let yaml = "mode: enforce\ndetectors:\n  token_sharing: { actions: [log, challenge], duration: 1h }\n  \
                    enumeration: { actions: [log, throttle], duration: 1m }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let inner = &a.inner;
        let t = wall_ms();
        let alice = Arc::new(alice());
        let key = Engine::principal_key(inner.actions.seed, &alice);
        // Another node's challenge of alice from ten minutes before (within the window: its start holds).
        let theirs = Shared::alices_challenge(t - 60_000, t + 3_600_000, "other");
        inner.set_remote(vec![("other:1".into(), theirs)], &Default::default(), None);
        let held = inner.actions.remote.lock().unwrap();
        let (sent, finished) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                inner.raise(alice_sharing(key, Some(alice.clone()), t));
                inner.raise(alert(Detector::Enumeration, "192.0.2.9".parse().unwrap(), t));
                inner.update_view();
                inner.expire(t + 120_000);
                let _ = inner.kept_actions();
                sent.send(()).unwrap();
            });
            let done = finished.recv_timeout(Duration::from_secs(60));
            drop(held);
            assert!(done.is_ok(), "the detector thread waited on the fleet's list");
        });
        // The challenge kept the other node's earlier start, as before.
        let mine = a.actions().into_iter().find(|x| x.kind == "challenge" && x.origin == HERE).unwrap();
        assert_eq!(mine.since_ms, t - 60_000);
    }

    /// A batch that sets one action among many in force does not build the view whole: 20,000
    /// throttles in force, then 1,000 batches of one new throttle each (and expiries) cost at most two
    /// whole builds (each cost the whole list before: 1,000). Counted, not timed.
    #[test]
    fn one_more_action_among_thousands_does_not_build_the_view_whole() {
        let yaml =
            "mode: enforce\ndetectors:\n  enumeration: { actions: [log, throttle], duration: 10m, throttle: 1/s }\n";
        let c: AnomalyConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let a = Kept::default().get(Policy::compile(&c, None).unwrap(), &AnomalyMetrics::default());
        let inner = &a.inner;
        let now = wall_ms() + 60_000;
        let ip = |i: u32| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1));
        for i in 0..20_000u32 {
            inner.raise(alert(Detector::Enumeration, ip(i), now));
        }
        inner.rebuild_view();
        let before = inner.actions.builds.load(Relaxed);
        for i in 20_000..21_000u32 {
            inner.raise(alert(Detector::Enumeration, ip(i), now + u64::from(i)));
            inner.update_view();
            // In force at once, and the one before it still.
            let view = inner.actions.view.load();
            assert!(view.address(ip(i), now + 1).next().is_some_and(|(_, e)| e.throttle(now + 1).is_some()));
            assert!(view.address(ip(i - 1), now + 1).next().is_some());
        }
        // The first 20,000 run out (raised at `now`): not one whole build an expiry; then, half the
        // view stale, one.
        inner.expire(now + 10 * 60_000);
        assert_eq!(a.actions().len(), 1_000);
        let view = inner.actions.view.load();
        assert!(view.address(ip(5), now + 10 * 60_000).next().is_none_or(|(_, e)| e.is_none()));
        assert!(view.address(ip(20_500), now + 10 * 60_000).next().is_some_and(|(_, e)| !e.is_none()));
        let builds = inner.actions.builds.load(Relaxed) - before;
        assert!(builds <= 2, "{builds} whole builds");
        assert_eq!(view.ips_len(), 1_000, "the expired ones are dropped by the whole build");
        drop(view);
        // The fleet's 5,000 (another node's /64s), running out five at a time: the detector thread's
        // expiry builds none of their layer; the fleet thread's next poll builds it once.
        let t = now + 11 * 60_000;
        let theirs = (0..5_000u64)
            .map(|i| {
                let address = format!("2001:db8:ffff:{i:x}::/64");
                let s = Shared {
                    kind: "throttle".into(),
                    target: SharedTarget::Ip { address: address.clone() },
                    label: address,
                    detector: "enumeration".into(),
                    alert: 1,
                    since_ms: t,
                    expires_ms: t + 60_000 + i / 5 * 1_000,
                    interval_ns: Some(1_000_000_000),
                    burst: Some(1),
                    rate: Some("1/s".into()),
                    node: "other".into(),
                    id: 0,
                };
                (format!("other:{i}"), s)
            })
            .collect();
        inner.set_remote(theirs, &Default::default(), None);
        let remote_before = inner.actions.remote_builds.load(Relaxed);
        for k in 0..100u64 {
            inner.expire(t + 60_000 + k * 1_000);
        }
        assert_eq!(
            inner.actions.remote_builds.load(Relaxed),
            remote_before,
            "the detector thread built the fleet's layer"
        );
        assert_eq!(inner.actions.remote.lock().unwrap().len(), 5_000, "the detector thread took the fleet's list");
        let end = t + 60_000 + 99_000;
        inner.tend_remote(end);
        inner.tend_remote(end);
        assert_eq!(inner.actions.remote.lock().unwrap().len(), 4_500);
        assert_eq!(inner.actions.remote_builds.load(Relaxed), remote_before + 1);
        let view = inner.actions.view.load();
        assert_eq!(view.remote.ips.len(), 4_500);
        assert!(view.address("2001:db8:ffff:0::1".parse().unwrap(), t + 200_000).next().is_none());
        assert!(view.address("2001:db8:ffff:1387::1".parse().unwrap(), t + 200_000).next().is_some());
    }
}
