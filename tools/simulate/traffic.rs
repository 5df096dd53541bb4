//! The seeded traffic: a normal population living its days, labelled attacks injected into it, and one
//! merged stream of requests in simulated-time order.
//!
//! Every actor (a client's normal life, or one attack) has its own random generator derived from the
//! run's seed and its index, so the stream is the same on every run with the same seed and scenario.

use crate::model::{self, Family, HeadStyle, NetKind, Target, World};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) const HOUR_MS: u64 = 3_600_000;
pub(crate) const MIN_MS: u64 = 60_000;
/// Monday 2026-01-05 00:00:00 UTC: where simulated time starts.
pub(crate) const EPOCH_MS: u64 = 1_767_571_200_000;

/// The size and shape of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    /// Normal clients (principals with their own key).
    pub(crate) clients: u32,
    /// Simulated duration.
    pub(crate) hours: u32,
    /// Attacks per class and intensity.
    pub(crate) attacks: u32,
    /// The attack classes injected (default all).
    pub(crate) classes: Vec<Class>,
    /// The intensities injected (default all three).
    pub(crate) intensities: Vec<Intensity>,
}

impl Scenario {
    /// Every class at every intensity.
    pub(crate) fn new(seed: u64, clients: u32, hours: u32, attacks: u32) -> Scenario {
        Scenario { seed, clients, hours, attacks, classes: Class::ALL.to_vec(), intensities: Intensity::ALL.to_vec() }
    }
    pub(crate) fn client_hours(&self) -> f64 {
        f64::from(self.clients) * f64::from(self.hours)
    }
    pub(crate) fn end_ms(&self) -> u64 {
        EPOCH_MS + u64::from(self.hours) * HOUR_MS
    }
    /// When attacks may start: after a warm-up (a quarter of the run, at least six hours, at most
    /// half of it) so baselines exist.
    pub(crate) fn warm_ms(&self) -> u64 {
        let run = u64::from(self.hours) * HOUR_MS;
        EPOCH_MS + (run / 4).max(6 * HOUR_MS).min(run / 2)
    }
}

/// The attack classes of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Class {
    CredentialStuffing,
    PasswordSpraying,
    Enumeration,
    Scraping,
    TokenSharing,
    Exfiltration,
    UnusualHours,
    Automation,
}

impl Class {
    pub(crate) const ALL: [Class; 8] = [
        Class::CredentialStuffing,
        Class::PasswordSpraying,
        Class::Enumeration,
        Class::Scraping,
        Class::TokenSharing,
        Class::Exfiltration,
        Class::UnusualHours,
        Class::Automation,
    ];
    pub(crate) fn id(self) -> &'static str {
        match self {
            Class::CredentialStuffing => "credential_stuffing",
            Class::PasswordSpraying => "password_spraying",
            Class::Enumeration => "enumeration",
            Class::Scraping => "scraping",
            Class::TokenSharing => "token_sharing",
            Class::Exfiltration => "exfiltration",
            Class::UnusualHours => "unusual_hours",
            Class::Automation => "automation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Intensity {
    High,
    Medium,
    /// Low and slow: the detection target is 10 minutes instead of 60 seconds.
    Low,
}

impl Intensity {
    pub(crate) const ALL: [Intensity; 3] = [Intensity::High, Intensity::Medium, Intensity::Low];
    pub(crate) fn target_ms(self) -> u64 {
        match self {
            Intensity::Low => 10 * MIN_MS,
            _ => MIN_MS,
        }
    }
}

/// One injected attack: its label.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Attack {
    pub(crate) id: u32,
    pub(crate) class: Class,
    pub(crate) intensity: Intensity,
    /// Which variant of the class (e.g. `sequential_orders`, `headless`, `scanner`).
    pub(crate) variant: &'static str,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    /// Source addresses (IPv6: any address of the same /64 matches).
    pub(crate) ips: Vec<IpAddr>,
    /// Principals involved (the rogue or victim account, a fresh account).
    pub(crate) principals: Vec<String>,
    /// Key ids involved (the sprayed id).
    pub(crate) key_ids: Vec<String>,
}

/// The credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cred {
    None,
    /// The user's own key.
    Valid(u32),
    /// The user's key with a typo (the checksum fails).
    Mistyped(u32),
    /// A well-formed key that is not stored (a guessed secret, or a stuffing list's key).
    Guess(Arc<str>),
}

/// One request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) at_ms: u64,
    pub(crate) ip: IpAddr,
    pub(crate) profile: u16,
    pub(crate) style: HeadStyle,
    pub(crate) cred: Cred,
    pub(crate) target: Target,
    /// The attack it belongs to; `None`: legitimate.
    pub(crate) attack: Option<u32>,
}

/// An account: a principal with a key.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    #[allow(dead_code)]
    pub(crate) user: u32,
    pub(crate) principal: String,
    pub(crate) role: u8,
    pub(crate) key: String,
    pub(crate) key_id: String,
}

/// A device a client uses.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub(crate) profile: u16,
    pub(crate) net: NetKind,
    /// The stable address (home, office, cloud) or the current one (mobile, rotated IPv6).
    pub(crate) addr: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Life {
    /// A person: sessions through the working day (local time), fewer in the evening and at weekends.
    Human { work_start: f64, work_len: f64, day_rate: f64, evening_rate: f64 },
    /// An integration: a periodic job (with jitter) day and night, and occasional batch bursts.
    Service { period_ms: u64, jitter_ms: u64 },
}

/// A normal client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) user: u32,
    /// Hours east of UTC.
    pub(crate) tz: i32,
    pub(crate) devices: Vec<Device>,
    pub(crate) life: Life,
}

impl Client {
    /// Is local time `at_ms` inside this client's usual activity (working hours or evening)?
    pub(crate) fn usual_hour(&self, at_ms: u64) -> bool {
        match self.life {
            Life::Service { .. } => true,
            Life::Human { work_start, work_len, evening_rate, .. } => {
                let h = local_hour(at_ms, self.tz);
                in_span(h, work_start, work_len) || (evening_rate > 0.0 && (19.0..23.0).contains(&h))
            }
        }
    }
}

fn local_hour(at_ms: u64, tz: i32) -> f64 {
    let t = at_ms as f64 / HOUR_MS as f64 + f64::from(tz);
    t.rem_euclid(24.0)
}

fn local_weekend(at_ms: u64, tz: i32) -> bool {
    let days = ((at_ms as i64 - EPOCH_MS as i64) / 3_600_000 + i64::from(tz)).div_euclid(24);
    days.rem_euclid(7) >= 5
}

fn in_span(h: f64, start: f64, len: f64) -> bool {
    let d = (h - start).rem_euclid(24.0);
    d < len
}

/// Time-zone offsets (hours east of UTC) and how common each is.
const ZONES: &[(i32, f64)] = &[(-8, 0.12), (-5, 0.2), (0, 0.12), (1, 0.22), (2, 0.08), (5, 0.06), (8, 0.1), (9, 0.1)];

/// Everything a run is made of.
pub(crate) struct Population {
    pub(crate) scenario: Scenario,
    /// Users 1..: `accounts[user - 1]`. Normal clients first, then the fresh accounts attackers made.
    pub(crate) accounts: Vec<Account>,
    pub(crate) clients: Vec<Client>,
    pub(crate) attacks: Vec<Attack>,
    pub(crate) world: World,
    plans: Vec<Plan>,
    /// Accounts already victim or rogue of an attack.
    involved: std::collections::HashSet<u32>,
}

/// An attack's behaviour.
#[derive(Debug, Clone)]
enum Plan {
    /// One source, many guessed keys.
    Stuffing { ip: IpAddr, profile: u16, mean_ms: f64 },
    /// One key id, guessed secrets from many sources.
    Spraying { id: String, sources: Vec<(IpAddr, u16)>, mean_ms: f64 },
    /// A valid account asking for other users' objects with sequential ids.
    Enumeration { user: u32, dev: Device, by_user: bool, next: u32, mean_ms: f64 },
    /// A valid account that never stops reading.
    Scraping { user: u32, dev: Device, next_pid: u32, mean_ms: f64 },
    /// One key from many networks and agents at once.
    Sharing { user: u32, thieves: Vec<(IpAddr, u16)>, mean_ms: f64 },
    /// Large exports, over and over.
    Exfiltration { user: u32, dev: Device, page: u32, mean_ms: f64 },
    /// The account's usual behaviour at hours it is never active.
    Hours { user: u32, dev: Device, mean_ms: f64 },
    /// A browser-claiming script with a metronome, or a scanner.
    Bot { user: Option<u32>, ip: IpAddr, profile: u16, style: HeadStyle, period_ms: f64, next: u32 },
}

impl Population {
    pub(crate) fn new(scenario: Scenario) -> Population {
        let seed = scenario.seed;
        let mut rng = fastrand::Rng::with_seed(model::mix(seed, 1));
        let n = scenario.clients.max(1);
        // Offices: shared NAT addresses (about five clients behind each).
        let offices: Vec<IpAddr> = (0..(n / 30).max(2)).map(|_| model::draw_addr(&mut rng, NetKind::Office)).collect();
        let mut accounts = Vec::new();
        let mut clients = Vec::new();
        let draw_role = |rng: &mut fastrand::Rng| {
            model::weighted(rng, &model::ROLES.iter().map(|(_, w)| *w).collect::<Vec<_>>()) as u8
        };
        for i in 0..n {
            let user = i + 1;
            let role = draw_role(&mut rng);
            accounts.push(account(&mut rng, user, role));
            let profile = model::draw_profile(&mut rng);
            let primary = device(&mut rng, profile, &offices);
            let fam = model::PROFILES[primary.profile as usize].family;
            let mut devices = vec![primary];
            // A few people use the API from a second device (a phone beside the laptop).
            if fam == Family::Browser && rng.f64() < 0.12 {
                let phone = model::draw_profile_in(&mut rng, Family::Mobile);
                devices.push(device(&mut rng, phone, &offices));
            }
            let tz = ZONES[model::weighted(&mut rng, &ZONES.iter().map(|(_, w)| *w).collect::<Vec<_>>())].0;
            let life = if fam == Family::Sdk && rng.f64() < 0.7 {
                // Pollers every 30 s or a minute are active every minute of the day.
                let period_ms = [30_000, 60_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000][rng.usize(..7)];
                Life::Service { period_ms, jitter_ms: [200, 2_000, 30_000][rng.usize(..3)] }
            } else {
                Life::Human {
                    work_start: (8.5 + 1.3 * model::normal(&mut rng)).clamp(5.0, 13.0),
                    work_len: (8.0 + 1.5 * model::normal(&mut rng)).clamp(4.0, 12.0),
                    day_rate: 0.5 + 2.5 * rng.f64(),
                    evening_rate: if fam == Family::Mobile || rng.f64() < 0.3 { 0.2 + 0.6 * rng.f64() } else { 0.0 },
                }
            };
            clients.push(Client { user, tz, devices, life });
        }
        let roles: Vec<u8> = accounts.iter().map(|a| a.role).collect();
        let mut pop = Population {
            world: World::new(seed, roles),
            scenario,
            accounts,
            clients,
            attacks: Vec::new(),
            plans: Vec::new(),
            involved: Default::default(),
        };
        pop.inject_attacks(&mut rng, &offices);
        // The world knows the fresh accounts too.
        pop.world = World::new(seed, pop.accounts.iter().map(|a| a.role).collect());
        pop.place_night_sessions();
        pop
    }

    /// Puts each unusual-hours attack where its label is true of the account's own traffic: after a
    /// day of the account's own history (from its first request, not from the start of the run), at a
    /// local 01:00-04:00 hour that neither it nor the hours beside it has held a request of the
    /// account on any day before. The victim's legitimate stream is replayed here to know (its actor
    /// has its own seed, so this is the stream the run will send). A victim with no such hour before
    /// the run's end gives way to another person who has one (the first, from a seeded place, not yet
    /// in an attack); with none anywhere, the attack keeps the place `inject_attacks` gave it.
    fn place_night_sessions(&mut self) {
        // A day of history and a session: nothing to place in a shorter run.
        if u64::from(self.scenario.hours) < 26 {
            return;
        }
        for i in 0..self.attacks.len() {
            let Plan::Hours { user, mean_ms, .. } = self.plans[i] else { continue };
            let dur = self.attacks[i].end_ms - self.attacks[i].start_ms;
            // From where `inject_attacks` drew it (its random place in the run), else from the start.
            let drawn = self.attacks[i].start_ms;
            let mut rng =
                fastrand::Rng::with_seed(model::mix(self.scenario.seed, 3_000_000 + u64::from(self.attacks[i].id)));
            let own = self.night_hour(user, dur, drawn).or_else(|| self.night_hour(user, dur, 0));
            let found = own.map(|t| (user, t)).or_else(|| {
                let n = self.clients.len();
                let from = rng.usize(..n);
                (0..n).map(|k| &self.clients[(from + k) % n]).find_map(|c| {
                    let free = matches!(c.life, Life::Human { .. }) && !self.involved.contains(&c.user);
                    free.then(|| self.night_hour(c.user, dur, 0)).flatten().map(|t| (c.user, t))
                })
            });
            let Some((victim, t)) = found else {
                eprintln!(
                    "simulate: unusual-hours attack #{} keeps its place: no person has an unused night hour",
                    self.attacks[i].id
                );
                continue;
            };
            let start = t + rng.u64(..HOUR_MS / 2);
            if victim != user {
                self.involved.insert(victim);
                let dev = self.clients[victim as usize - 1].devices[0].clone();
                self.plans[i] = Plan::Hours { user: victim, dev, mean_ms };
                let (ips, principals, key_ids) = self.entities(&self.plans[i]);
                let a = &mut self.attacks[i];
                (a.ips, a.principals, a.key_ids) = (ips, principals, key_ids);
            }
            self.attacks[i].start_ms = start;
            self.attacks[i].end_ms = start + dur;
        }
    }

    /// The first hour (its start), from `not_before` on, at which a night session of `dur` on
    /// `user`'s account is unusual by the account's own traffic (see
    /// [`Population::place_night_sessions`]).
    fn night_hour(&self, user: u32, dur: u64, not_before: u64) -> Option<u64> {
        let end = self.scenario.end_ms();
        let warm = self.scenario.warm_ms();
        let c = &self.clients[user as usize - 1];
        let mut actor = Actor::normal(self, c);
        let mut times = Vec::new();
        while let Some(t) = actor.pending.take().map(|r| r.at_ms).filter(|&t| t < end) {
            times.push(t);
            actor.advance(self);
        }
        // The first whole hour after a day of history (and the warm-up), not before `not_before`'s hour.
        let mut t = ((times.first()? + 24 * HOUR_MS).max(warm).div_ceil(HOUR_MS) * HOUR_MS)
            .max(not_before - not_before % HOUR_MS);
        // The session may start half an hour into it, and must end a quarter of an hour before the run.
        while t + HOUR_MS / 2 + dur + 15 * MIN_MS <= end {
            let h = local_hour(t, c.tz).floor();
            // The account's requests before this hour: none in it or beside it (local time).
            let used = times.iter().take_while(|&&x| x < t).any(|&x| {
                let d = (local_hour(x, c.tz).floor() - h).rem_euclid(24.0);
                !(2.0..=22.0).contains(&d)
            });
            if (1.0..4.0).contains(&h) && !c.usual_hour(t) && !used {
                return Some(t);
            }
            t += HOUR_MS;
        }
        None
    }

    /// The population as JSON: who each client is and how it lives (for reading false alarms).
    pub(crate) fn describe(&self) -> serde_json::Value {
        let clients: Vec<serde_json::Value> = self
            .clients
            .iter()
            .map(|c| {
                let a = self.account(c.user);
                serde_json::json!({
                    "principal": a.principal,
                    "key_id": a.key_id,
                    "role": model::ROLES[a.role as usize].0,
                    "tz": c.tz,
                    "life": format!("{:?}", c.life),
                    "devices": c.devices.iter().map(|d| serde_json::json!({
                        "agent": model::PROFILES[d.profile as usize].name,
                        "net": d.net,
                        "addr": d.addr.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "clients": clients, "attacks": self.attacks })
    }

    pub(crate) fn account(&self, user: u32) -> &Account {
        &self.accounts[(user as usize).saturating_sub(1).min(self.accounts.len() - 1)]
    }

    fn fresh_account(&mut self, rng: &mut fastrand::Rng, role: u8) -> u32 {
        let user = self.accounts.len() as u32 + 1;
        self.accounts.push(account(rng, user, role));
        user
    }

    fn inject_attacks(&mut self, rng: &mut fastrand::Rng, offices: &[IpAddr]) {
        let s = self.scenario.clone();
        let end = s.end_ms();
        let warm = s.warm_ms();
        let n = self.clients.len() as u32;
        for &class in &s.classes {
            for &intensity in &s.intensities {
                for _ in 0..s.attacks {
                    let id = self.attacks.len() as u32;
                    let (dur_ms, plan, variant): (u64, Plan, &'static str) = self.plan(rng, class, intensity, offices);
                    let latest = end.saturating_sub(dur_ms + 15 * MIN_MS).max(warm + 1);
                    let mut start = warm + rng.u64(..latest - warm);
                    if class == Class::UnusualHours {
                        // At the account's local 01:00-04:00 (hours it is never active).
                        let Plan::Hours { user, .. } = &plan else { unreachable!() };
                        let c = &self.clients[*user as usize - 1];
                        // After a day of the account's own history when the run is long enough.
                        let day = EPOCH_MS + 24 * HOUR_MS;
                        let from = if s.hours >= 36 && start < day {
                            day + rng.u64(..(u64::from(s.hours) - 34) * HOUR_MS)
                        } else {
                            start
                        };
                        let mut t = from - from % HOUR_MS;
                        loop {
                            let h = local_hour(t, c.tz);
                            if (1.0..4.0).contains(&h) && !c.usual_hour(t) && t >= warm {
                                break;
                            }
                            t += HOUR_MS;
                        }
                        start = t + rng.u64(..HOUR_MS / 2);
                        if start + dur_ms > end {
                            start = start.saturating_sub(24 * HOUR_MS).max(warm);
                        }
                    }
                    let (ips, principals, key_ids) = self.entities(&plan);
                    let _ = n;
                    self.attacks.push(Attack {
                        id,
                        class,
                        intensity,
                        variant,
                        start_ms: start,
                        end_ms: start + dur_ms,
                        ips,
                        principals,
                        key_ids,
                    });
                    self.plans.push(plan);
                }
            }
        }
    }

    /// A normal client to act as an attack's rogue or victim account (humans only when `human`).
    /// Each account is the victim or rogue of at most one attack while there are enough to go round,
    /// so one attack's alerts are never credited to another's label.
    fn pick_client(&mut self, rng: &mut fastrand::Rng, pred: impl Fn(&Client, &Account) -> bool) -> u32 {
        for round in 0..2 {
            for _ in 0..10_000 {
                let c = &self.clients[rng.usize(..self.clients.len())];
                if pred(c, self.account(c.user)) && (round == 1 || !self.involved.contains(&c.user)) {
                    let user = c.user;
                    self.involved.insert(user);
                    return user;
                }
            }
        }
        self.clients[0].user
    }

    fn plan(
        &mut self,
        rng: &mut fastrand::Rng,
        class: Class,
        intensity: Intensity,
        offices: &[IpAddr],
    ) -> (u64, Plan, &'static str) {
        let pick = |hi: u64, mid: u64, lo: u64| match intensity {
            Intensity::High => hi,
            Intensity::Medium => mid,
            Intensity::Low => lo,
        };
        let pickf = |hi: f64, mid: f64, lo: f64| match intensity {
            Intensity::High => hi,
            Intensity::Medium => mid,
            Intensity::Low => lo,
        };
        let source = |rng: &mut fastrand::Rng| {
            let profile = model::draw_profile(rng);
            let fam = model::PROFILES[profile as usize].family;
            let net = model::draw_net(rng, fam);
            (model::draw_addr(rng, net), profile)
        };
        match class {
            Class::CredentialStuffing => {
                let (ip, profile) = source(rng);
                let plan = Plan::Stuffing { ip, profile, mean_ms: pickf(1_000.0, 4_000.0, 45_000.0) };
                (pick(10, 30, 180) * MIN_MS, plan, "one_source_many_keys")
            }
            Class::PasswordSpraying => {
                let victim = self.pick_client(rng, |_, _| true);
                let id = self.account(victim).key_id.clone();
                let k = pick(60, 40, 20) as usize;
                let sources = (0..k).map(|_| source(rng)).collect();
                let plan = Plan::Spraying { id, sources, mean_ms: pickf(1_000.0, 4_000.0, 45_000.0) };
                (pick(10, 30, 180) * MIN_MS, plan, "one_key_many_sources")
            }
            Class::Enumeration => {
                let by_user = rng.bool();
                let fresh = rng.bool();
                let user = if fresh {
                    let u = self.fresh_account(rng, 0);
                    let _ = u;
                    u
                } else {
                    self.pick_client(rng, |c, _| matches!(c.life, Life::Human { .. }))
                };
                let dev = if fresh {
                    {
                        let profile = model::draw_profile(rng);
                        device(rng, profile, offices)
                    }
                } else {
                    self.clients[user as usize - 1].devices[0].clone()
                };
                let next = if by_user {
                    rng.u32(1..self.clients.len() as u32 + 1)
                } else {
                    rng.u32(1..(self.clients.len() as u32 * 16).max(2))
                };
                let plan = Plan::Enumeration { user, dev, by_user, next, mean_ms: pickf(500.0, 4_000.0, 45_000.0) };
                let variant = match (by_user, fresh) {
                    (true, true) => "sequential_users_new_account",
                    (true, false) => "sequential_users_known_account",
                    (false, true) => "sequential_orders_new_account",
                    (false, false) => "sequential_orders_known_account",
                };
                (pick(10, 30, 180) * MIN_MS, plan, variant)
            }
            Class::Scraping => {
                let user = self.pick_client(rng, |_, _| true);
                let dev = self.clients[user as usize - 1].devices[0].clone();
                let plan =
                    Plan::Scraping { user, dev, next_pid: rng.u32(1..5000), mean_ms: pickf(200.0, 1_000.0, 5_000.0) };
                (pick(20, 60, 720) * MIN_MS, plan, "never_stops")
            }
            Class::TokenSharing => {
                let user = self.pick_client(rng, |_, _| true);
                let k = pick(12, 6, 3) as usize;
                let thieves = (0..k).map(|_| source(rng)).collect();
                let plan = Plan::Sharing { user, thieves, mean_ms: pickf(3_000.0, 8_000.0, 30_000.0) };
                (pick(60, 120, 360) * MIN_MS, plan, "many_networks_at_once")
            }
            Class::Exfiltration => {
                let user = self.pick_client(rng, |_, a| model::may_export(model::ROLES[a.role as usize].0));
                let dev = self.clients[user as usize - 1].devices[0].clone();
                let plan = Plan::Exfiltration { user, dev, page: 1, mean_ms: pickf(10_000.0, 60_000.0, 300_000.0) };
                (pick(30, 120, 720) * MIN_MS, plan, "bulk_exports")
            }
            Class::UnusualHours => {
                let user = self.pick_client(rng, |c, _| matches!(c.life, Life::Human { .. }));
                let dev = self.clients[user as usize - 1].devices[0].clone();
                let plan = Plan::Hours { user, dev, mean_ms: pickf(4_000.0, 8_000.0, 60_000.0) };
                (pick(60, 90, 45) * MIN_MS, plan, "night_session")
            }
            Class::Automation => {
                let scanner = intensity == Intensity::Medium;
                let (ip, profile) = source(rng);
                if scanner {
                    let style = HeadStyle::Scanner(rng.u8(..model::SCANNER_AGENTS.len() as u8));
                    let plan = Plan::Bot { user: None, ip, profile, style, period_ms: 300.0, next: 0 };
                    (10 * MIN_MS, plan, "scanner")
                } else {
                    // A script impersonating a browser: the agent drawn like any browser user's.
                    let profile = model::draw_profile_in(rng, Family::Browser);
                    let user = self.fresh_account(rng, 0);
                    let plan = Plan::Bot {
                        user: Some(user),
                        ip,
                        profile,
                        style: HeadStyle::Scripted,
                        period_ms: pickf(2_000.0, 2_000.0, 20_000.0),
                        next: rng.u32(1..5000),
                    };
                    (pick(30, 30, 180) * MIN_MS, plan, "headless_browser_impersonation")
                }
            }
        }
    }

    fn entities(&self, plan: &Plan) -> (Vec<IpAddr>, Vec<String>, Vec<String>) {
        let p = |u: u32| vec![self.account(u).principal.clone()];
        match plan {
            Plan::Stuffing { ip, .. } => (vec![*ip], vec![], vec![]),
            Plan::Spraying { id, sources, .. } => {
                let victim = self.accounts.iter().find(|a| &a.key_id == id).map(|a| a.principal.clone());
                (sources.iter().map(|s| s.0).collect(), victim.into_iter().collect(), vec![id.clone()])
            }
            Plan::Enumeration { user, dev, .. }
            | Plan::Scraping { user, dev, .. }
            | Plan::Exfiltration { user, dev, .. }
            | Plan::Hours { user, dev, .. } => (stable_ips(dev), p(*user), vec![self.account(*user).key_id.clone()]),
            Plan::Sharing { user, thieves, .. } => {
                (thieves.iter().map(|s| s.0).collect(), p(*user), vec![self.account(*user).key_id.clone()])
            }
            Plan::Bot { user, ip, .. } => (vec![*ip], user.map(p).unwrap_or_default(), vec![]),
        }
    }

    /// The merged request stream, in simulated-time order.
    pub(crate) fn stream(&self) -> Stream<'_> {
        let mut actors = Vec::new();
        for c in &self.clients {
            actors.push(Actor::normal(self, c));
        }
        for (a, plan) in self.attacks.iter().zip(&self.plans) {
            actors.push(Actor::attack(self, a, plan.clone()));
        }
        let mut heap = BinaryHeap::new();
        for (i, a) in actors.iter_mut().enumerate() {
            if let Some(t) = a.pending.as_ref().map(|r| r.at_ms) {
                heap.push(Reverse((t, i as u32)));
            }
        }
        Stream { pop: self, actors, heap, end: self.scenario.end_ms() }
    }
}

fn stable_ips(dev: &Device) -> Vec<IpAddr> {
    match dev.net {
        NetKind::Mobile4 | NetKind::Mobile6 => Vec::new(),
        _ => vec![dev.addr],
    }
}

fn account(rng: &mut fastrand::Rng, user: u32, role: u8) -> Account {
    let (key_id, key) = model::random_key(rng);
    Account { user, principal: format!("user-{user}"), role, key, key_id }
}

fn device(rng: &mut fastrand::Rng, profile: u16, offices: &[IpAddr]) -> Device {
    let fam = model::PROFILES[profile as usize].family;
    let net = model::draw_net(rng, fam);
    let addr = if net == NetKind::Office { offices[rng.usize(..offices.len())] } else { model::draw_addr(rng, net) };
    Device { profile, net, addr }
}

/// The address a device uses for a session starting now.
fn session_addr(rng: &mut fastrand::Rng, dev: &mut Device, day: u64, last_day: &mut u64) -> IpAddr {
    match dev.net {
        NetKind::Mobile4 | NetKind::Mobile6 => {
            dev.addr = model::draw_addr(rng, dev.net);
            dev.addr
        }
        NetKind::Home6 => {
            if day != *last_day {
                *last_day = day;
                dev.addr = model::rotate_iid(rng, dev.addr);
            }
            dev.addr
        }
        _ => dev.addr,
    }
}

/// What a normal request asks for: the route mix of a person or integration using its own objects.
fn normal_target(rng: &mut fastrand::Rng, world: &World, user: u32) -> Target {
    let mine = &world.orders_of[user as usize];
    let w = [22.0, 14.0, 8.0, 30.0, 16.0, 7.0, if model::may_export(world.role(user)) { 1.5 } else { 0.0 }];
    match model::weighted(rng, &w) {
        0 if !mine.is_empty() => {
            // Now and then a stale link: an order since deleted, or someone else's.
            if rng.f64() < 0.015 {
                Target::Order { user, oid: rng.u32(1..world.owner.len() as u32) }
            } else {
                Target::Order { user, oid: mine[rng.usize(..mine.len())] }
            }
        }
        0 | 1 => Target::Orders { user, limit: 20, page: u16::from(rng.f64() < 0.1) },
        2 => Target::User { user },
        // About 3% of product ids asked for do not exist (old links).
        3 => Target::Product { pid: rng.u32(1..5150) },
        4 => Target::Search { q: rng.u32(..2000) },
        5 => Target::CreateOrder,
        _ => Target::Export { page: 1 },
    }
}

/// A think time around `mean_ms`: log-normal, the shape every actor shares.
fn think(rng: &mut fastrand::Rng, mean_ms: f64) -> u64 {
    // exp(sigma^2 / 2) = 1.83 for sigma 1.1: the median that gives this mean.
    (model::lognormal(rng, mean_ms / 1.83, 1.1)).clamp(50.0, 40.0 * mean_ms) as u64
}

struct Actor {
    rng: fastrand::Rng,
    kind: ActorKind,
    t: u64,
    pending: Option<Req>,
}

enum ActorKind {
    Normal { client: Client, left: u32, dev: usize, ip: IpAddr, mean_ms: f64, mistakes: u32, day: u64, next_job: u64 },
    Attack { id: u32, plan: Plan, end: u64, step: u32 },
}

impl Actor {
    fn normal(pop: &Population, c: &Client) -> Actor {
        let mut rng = fastrand::Rng::with_seed(model::mix(pop.scenario.seed, 1_000_000 + u64::from(c.user)));
        let ip = c.devices[0].addr;
        let next_job = EPOCH_MS + MIN_MS + rng.u64(..HOUR_MS);
        let mut a = Actor {
            rng,
            kind: ActorKind::Normal {
                client: c.clone(),
                left: 0,
                dev: 0,
                ip,
                mean_ms: 4_000.0,
                mistakes: 0,
                day: u64::MAX,
                next_job,
            },
            t: EPOCH_MS,
            pending: None,
        };
        a.advance(pop);
        a
    }

    fn attack(pop: &Population, at: &Attack, plan: Plan) -> Actor {
        let rng = fastrand::Rng::with_seed(model::mix(pop.scenario.seed, 2_000_000 + u64::from(at.id)));
        let mut a = Actor {
            rng,
            kind: ActorKind::Attack { id: at.id, plan, end: at.end_ms, step: 0 },
            t: at.start_ms,
            pending: None,
        };
        a.emit_attack(pop);
        a
    }

    /// Moves to this actor's next request (or none).
    fn advance(&mut self, pop: &Population) {
        match self.kind {
            ActorKind::Normal { .. } => self.advance_normal(pop),
            ActorKind::Attack { .. } => self.emit_attack(pop),
        }
    }

    fn advance_normal(&mut self, pop: &Population) {
        let ActorKind::Normal { client, left, dev, ip, mean_ms, mistakes, day, next_job } = &mut self.kind else {
            return;
        };
        let rng = &mut self.rng;
        let end = pop.scenario.end_ms();
        if *left == 0 {
            // A new session.
            match client.life {
                Life::Human { work_start, work_len, day_rate, evening_rate } => {
                    let max = day_rate.max(evening_rate);
                    loop {
                        self.t += (model::exponential(rng, 1.0 / max) * HOUR_MS as f64) as u64 + 1;
                        if self.t >= end {
                            self.pending = None;
                            return;
                        }
                        let h = local_hour(self.t, client.tz);
                        let mut rate = if in_span(h, work_start, work_len) {
                            day_rate
                        } else if (19.0..23.0).contains(&h) {
                            evening_rate
                        } else if h < 6.0 {
                            // People are rarely up at night, but sometimes are.
                            0.004
                        } else {
                            0.05
                        };
                        if local_weekend(self.t, client.tz) {
                            rate *= 0.35;
                        }
                        if rng.f64() * max < rate {
                            break;
                        }
                    }
                    *dev = if client.devices.len() > 1 && rng.f64() < 0.35 { 1 } else { 0 };
                    let fam = model::PROFILES[client.devices[*dev].profile as usize].family;
                    let kind = rng.f64();
                    let mean_len = if fam == Family::Mobile { 6.0 } else { 9.0 };
                    // 5% bursts (a page loading many items), 8% long working sessions (someone working
                    // through orders for 10 to 60 minutes), the rest short visits.
                    (*left, *mean_ms) = if kind < 0.05 {
                        (rng.u32(30..120), 700.0)
                    } else if kind < 0.13 {
                        (rng.u32(20..120), 25_000.0)
                    } else {
                        (1 + model::exponential(rng, mean_len) as u32, 5_000.0)
                    };
                    *mistakes = u32::from(rng.f64() < 0.004) * rng.u32(1..3);
                }
                Life::Service { period_ms, jitter_ms } => {
                    // The periodic job, or now and then a batch burst.
                    // The job's time with its jitter; never before the previous request (time order).
                    let j = rng.u64(..=2 * jitter_ms);
                    self.t = (*next_job + j).saturating_sub(jitter_ms).max(self.t + 1);
                    *next_job += period_ms;
                    if self.t >= end {
                        self.pending = None;
                        return;
                    }
                    let runs_per_day = (24 * HOUR_MS / period_ms) as f64;
                    let batch = rng.f64() < 1.5 / runs_per_day;
                    *left = if batch { rng.u32(50..300) } else { rng.u32(2..7) };
                    *mean_ms = if batch { 350.0 } else { 250.0 };
                    *mistakes = u32::from(rng.f64() < 0.001);
                    *dev = 0;
                }
            }
            let d = self.t.saturating_sub(EPOCH_MS) / (24 * HOUR_MS);
            *ip = session_addr(rng, &mut client.devices[*dev], d, day);
        } else {
            self.t += think(rng, *mean_ms);
            if self.t >= end {
                self.pending = None;
                return;
            }
        }
        let user = client.user;
        let cred = if *mistakes > 0 {
            *mistakes -= 1;
            Cred::Mistyped(user)
        } else {
            *left = left.saturating_sub(1);
            Cred::Valid(user)
        };
        let target = normal_target(rng, &pop.world, user);
        self.pending = Some(Req {
            at_ms: self.t,
            ip: *ip,
            profile: client.devices[*dev].profile,
            style: HeadStyle::Native,
            cred,
            target,
            attack: None,
        });
    }

    fn emit_attack(&mut self, pop: &Population) {
        let ActorKind::Attack { id, plan, end, step } = &mut self.kind else { return };
        let rng = &mut self.rng;
        if *step > 0 {
            let mean = match plan {
                Plan::Stuffing { mean_ms, .. }
                | Plan::Spraying { mean_ms, .. }
                | Plan::Enumeration { mean_ms, .. }
                | Plan::Scraping { mean_ms, .. }
                | Plan::Sharing { mean_ms, .. }
                | Plan::Exfiltration { mean_ms, .. }
                | Plan::Hours { mean_ms, .. } => *mean_ms,
                Plan::Bot { period_ms, style, .. } => {
                    // A script's metronome: the period with 1% jitter; a scanner as fast as it goes.
                    let p = if matches!(style, HeadStyle::Scanner(_)) {
                        think(rng, *period_ms) as f64
                    } else {
                        *period_ms * (0.99 + 0.02 * rng.f64())
                    };
                    self.t += p as u64;
                    0.0
                }
            };
            if mean > 0.0 {
                self.t += think(rng, mean);
            }
        }
        *step += 1;
        if self.t >= *end || self.t >= pop.scenario.end_ms() {
            self.pending = None;
            return;
        }
        let world = &pop.world;
        let day = self.t.saturating_sub(EPOCH_MS) / (24 * HOUR_MS);
        let (ip, profile, style, cred, target) = match plan {
            Plan::Stuffing { ip, profile, .. } => {
                let (_, key) = model::random_key(rng);
                let user = rng.u32(1..world.users + 1);
                (*ip, *profile, HeadStyle::Native, Cred::Guess(key.into()), normal_target(rng, world, user))
            }
            Plan::Spraying { id, sources, .. } => {
                let (ip, profile) = sources[rng.usize(..sources.len())];
                let user = rng.u32(1..world.users + 1);
                let key = model::guess_for(rng, id);
                (ip, profile, HeadStyle::Native, Cred::Guess(key.into()), normal_target(rng, world, user))
            }
            Plan::Enumeration { user, dev, by_user, next, .. } => {
                let mut last = day;
                let ip = if *step % 50 == 1 { session_addr(rng, dev, day, &mut last) } else { dev.addr };
                *next += 1;
                let target =
                    if *by_user { Target::User { user: *next } } else { Target::Order { user: *user, oid: *next } };
                (ip, dev.profile, HeadStyle::Native, Cred::Valid(*user), target)
            }
            Plan::Scraping { user, dev, next_pid, .. } => {
                let mut last = day;
                let ip = if *step % 50 == 1 { session_addr(rng, dev, day, &mut last) } else { dev.addr };
                let target = match rng.u32(..10) {
                    0..=5 => {
                        *next_pid = *next_pid % 5000 + 1;
                        Target::Product { pid: *next_pid }
                    }
                    6..=8 => Target::Search { q: rng.u32(..2000) },
                    _ => Target::Orders { user: *user, limit: 20, page: 0 },
                };
                (ip, dev.profile, HeadStyle::Native, Cred::Valid(*user), target)
            }
            Plan::Sharing { user, thieves, .. } => {
                let (ip, profile) = thieves[rng.usize(..thieves.len())];
                (ip, profile, HeadStyle::Native, Cred::Valid(*user), normal_target(rng, world, *user))
            }
            Plan::Exfiltration { user, dev, page, .. } => {
                *page += 1;
                let mut last = day;
                let ip = if *step % 20 == 1 { session_addr(rng, dev, day, &mut last) } else { dev.addr };
                (ip, dev.profile, HeadStyle::Native, Cred::Valid(*user), Target::Export { page: *page })
            }
            Plan::Hours { user, dev, .. } => {
                let mut last = day;
                let ip = if *step % 30 == 1 { session_addr(rng, dev, day, &mut last) } else { dev.addr };
                (ip, dev.profile, HeadStyle::Native, Cred::Valid(*user), normal_target(rng, world, *user))
            }
            Plan::Bot { user, ip, profile, style, next, .. } => match user {
                Some(u) => {
                    *next = *next % 5000 + 1;
                    let target = if rng.u32(..4) == 0 {
                        Target::Search { q: rng.u32(..2000) }
                    } else {
                        Target::Product { pid: *next }
                    };
                    (*ip, *profile, *style, Cred::Valid(*u), target)
                }
                None => {
                    let target = if rng.bool() {
                        Target::Probe { i: rng.u8(..model::PROBES.len() as u8) }
                    } else {
                        Target::User { user: rng.u32(1..world.users + 50) }
                    };
                    (*ip, *profile, *style, Cred::None, target)
                }
            },
        };
        self.pending = Some(Req { at_ms: self.t, ip, profile, style, cred, target, attack: Some(*id) });
    }
}

/// The merged stream: each next request is the earliest pending one of all actors.
pub(crate) struct Stream<'a> {
    pop: &'a Population,
    actors: Vec<Actor>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    end: u64,
}

impl Iterator for Stream<'_> {
    type Item = Req;
    fn next(&mut self) -> Option<Req> {
        let Reverse((_, i)) = self.heap.pop()?;
        let actor = &mut self.actors[i as usize];
        let req = actor.pending.take()?;
        actor.advance(self.pop);
        if let Some(t) = actor.pending.as_ref().map(|r| r.at_ms) {
            if t < self.end {
                self.heap.push(Reverse((t, i)));
            }
        }
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> Population {
        Population::new(Scenario::new(seed, 60, 30, 1))
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_and_another_seed_does_not() {
        let digest = |p: &Population| {
            let mut n = 0u64;
            let mut h = 0u64;
            for r in p.stream().take(20_000) {
                n += 1;
                h = model::mix(
                    h,
                    r.at_ms ^ model::hash64(&format!("{:?}{:?}{:?}{:?}", r.ip, r.cred, r.target, r.attack)),
                );
            }
            (n, h)
        };
        let a = digest(&small(7));
        assert_eq!(a, digest(&small(7)));
        assert_ne!(a, digest(&small(8)));
    }

    #[test]
    fn the_stream_is_in_time_order_and_every_attack_is_labelled_with_its_window() {
        let p = small(11);
        assert_eq!(p.attacks.len(), Class::ALL.len() * Intensity::ALL.len());
        let mut last = 0;
        let mut seen = vec![0u64; p.attacks.len()];
        for r in p.stream() {
            assert!(r.at_ms >= last, "out of order");
            last = r.at_ms;
            if let Some(a) = r.attack {
                let at = &p.attacks[a as usize];
                assert!(r.at_ms >= at.start_ms && r.at_ms < at.end_ms, "{:?} outside its window", at.class);
                seen[a as usize] += 1;
            }
        }
        for (a, n) in p.attacks.iter().zip(seen) {
            assert!(n >= 3, "{:?} {:?} sent {n} requests", a.class, a.intensity);
            assert!(a.start_ms >= EPOCH_MS + 6 * HOUR_MS);
            assert!(!(a.ips.is_empty() && a.principals.is_empty()), "{:?} names no entity", a.class);
        }
    }

    #[test]
    fn unusual_hours_attacks_happen_outside_the_accounts_usual_hours() {
        let p = Population::new(Scenario::new(5, 80, 60, 2));
        for a in p.attacks.iter().filter(|a| a.class == Class::UnusualHours) {
            let user: u32 = a.principals[0].trim_start_matches("user-").parse().unwrap();
            let c = &p.clients[user as usize - 1];
            assert!(!c.usual_hour(a.start_ms), "starts at a usual hour");
        }
    }

    /// An unusual-hours attack comes after a day of the victim's own history, at an hour that neither
    /// it nor the hours beside it has held a legitimate request of the victim before (read from the
    /// run's own stream).
    #[test]
    fn unusual_hours_attacks_come_at_hours_the_victim_has_not_used() {
        for seed in [11, 13, 2027] {
            night_sessions_hold(&Population::new(Scenario::new(seed, 300, 72, 5)));
        }
    }

    fn night_sessions_hold(p: &Population) {
        let mut seen: std::collections::HashMap<u32, Vec<u64>> = Default::default();
        for r in p.stream().filter(|r| r.attack.is_none()) {
            if let Cred::Valid(user) = r.cred {
                seen.entry(user).or_default().push(r.at_ms);
            }
        }
        let mut checked = 0;
        for a in p.attacks.iter().filter(|a| a.class == Class::UnusualHours) {
            let user: u32 = a.principals[0].trim_start_matches("user-").parse().unwrap();
            let c = &p.clients[user as usize - 1];
            let before: Vec<u64> = seen.get(&user).into_iter().flatten().copied().filter(|&t| t < a.start_ms).collect();
            assert!(
                before.first().is_some_and(|&f| a.start_ms >= f + 24 * HOUR_MS),
                "attack {} before a day of history",
                a.id
            );
            let h = local_hour(a.start_ms, c.tz).floor();
            for t in before {
                let d = (local_hour(t, c.tz).floor() - h).rem_euclid(24.0);
                assert!((2.0..=22.0).contains(&d), "attack {}: the victim used that hour before", a.id);
            }
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    /// No giveaway field: attackers draw their agents and address kinds from the very distribution
    /// normal clients do. Compared on many draws: family shares within two points.
    #[test]
    fn attackers_draw_agents_and_addresses_from_the_normal_distribution() {
        let p = Population::new(Scenario::new(3, 1500, 8, 40));
        let share = |profiles: &[u16], fam: Family| {
            profiles.iter().filter(|x| model::PROFILES[**x as usize].family == fam).count() as f64
                / profiles.len() as f64
        };
        let normal: Vec<u16> = p.clients.iter().map(|c| c.devices[0].profile).collect();
        let mut attack = Vec::new();
        let mut ip6 = (0usize, 0usize);
        for plan in &p.plans {
            match plan {
                Plan::Stuffing { ip, profile, .. } => {
                    attack.push(*profile);
                    ip6.0 += usize::from(ip.is_ipv6());
                    ip6.1 += 1;
                }
                Plan::Spraying { sources, .. } | Plan::Sharing { thieves: sources, .. } => {
                    for (ip, profile) in sources {
                        attack.push(*profile);
                        ip6.0 += usize::from(ip.is_ipv6());
                        ip6.1 += 1;
                    }
                }
                _ => {}
            }
        }
        for fam in [Family::Browser, Family::Mobile, Family::Sdk] {
            let (n, a) = (share(&normal, fam), share(&attack, fam));
            assert!((n - a).abs() < 0.03, "{fam:?}: normal {n:.3}, attack {a:.3}");
        }
        // The v6 share of attack sources matches the distribution's expectation.
        let expect: f64 = FAMILY_WEIGHTS_V6();
        let got = ip6.0 as f64 / ip6.1 as f64;
        assert!((got - expect).abs() < 0.03, "ipv6 share {got:.3} vs {expect:.3}");
        // Same for the normal clients' primary devices.
        let v6n = p.clients.iter().filter(|c| matches!(c.devices[0].net, NetKind::Home6 | NetKind::Mobile6)).count()
            as f64
            / p.clients.len() as f64;
        assert!((v6n - expect).abs() < 0.04, "normal ipv6 share {v6n:.3} vs {expect:.3}");
    }

    #[allow(non_snake_case)]
    fn FAMILY_WEIGHTS_V6() -> f64 {
        let mut total = 0.0;
        for (fam, w) in model::FAMILY_WEIGHTS {
            let nets = model::net_weights(fam);
            let sum: f64 = nets.iter().map(|(_, x)| x).sum();
            let v6: f64 =
                nets.iter().filter(|(k, _)| matches!(k, NetKind::Home6 | NetKind::Mobile6)).map(|(_, x)| x).sum();
            total += w * v6 / sum;
        }
        total
    }
}
