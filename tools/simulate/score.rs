//! Scoring alerts against the labels: precision and recall, time to detection, false alarms per 10,000
//! normal client-hours, and what the actions cost legitimate clients. The report as a table or JSON,
//! and the targets of issue 16.

use crate::model;
use crate::traffic::{Attack, Class, Population, Req, MIN_MS};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Alerts up to this long after an attack's end still count as detecting it (windows close late).
pub(crate) const GRACE_MS: u64 = 10 * MIN_MS;

/// An alert as the scorer needs it: from the engine in process, or from the admin API's JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Seen {
    pub(crate) detector: String,
    pub(crate) kind: String,
    pub(crate) label: String,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) principal: Option<String>,
    pub(crate) feature: String,
    pub(crate) baseline: f64,
    pub(crate) observed: f64,
    pub(crate) score: f64,
    pub(crate) window_s: u64,
    pub(crate) at_ms: u64,
    pub(crate) explanation: String,
}

impl Seen {
    /// From the admin API's alert object.
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Seen> {
        Some(Seen {
            detector: v["detector"].as_str()?.to_owned(),
            kind: v["entity"]["kind"].as_str().unwrap_or("").to_owned(),
            label: v["entity"]["label"].as_str().unwrap_or("").to_owned(),
            ip: v["ip"].as_str().and_then(|s| s.parse().ok()),
            principal: v["principal"].as_str().map(str::to_owned),
            feature: v["feature"].as_str().unwrap_or("").to_owned(),
            baseline: v["baseline"].as_f64().unwrap_or(0.0),
            observed: v["observed"].as_f64().unwrap_or(0.0),
            score: v["score"].as_f64().unwrap_or(0.0),
            window_s: v["window_s"].as_u64().unwrap_or(0),
            at_ms: v["at_ms"].as_u64()?,
            explanation: v["explanation"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// A modelled block: until when, on what, and whether the detector's default actions refuse.
struct Block {
    until: u64,
    ip: Option<IpAddr>,
    principal: Option<String>,
    /// The strongest refusing action among the detector's defaults, if any.
    action: Option<&'static str>,
    /// The alert's entity is an address (else its principal): where a default action lands.
    on_address: bool,
}

/// Legitimate requests one kind of default action refused, and from how many clients.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RefusedBy {
    pub(crate) requests: u64,
    pub(crate) clients: usize,
}

/// The scorer: fed every request (for counts and the modelled action cost) and every alert.
pub(crate) struct Scorer {
    attacks: Vec<Attack>,
    /// Per attack: requests sent, routes touched, detections (detector -> first alert time).
    sent: Vec<u64>,
    routes: Vec<BTreeSet<u16>>,
    /// Per attack: the networks it sent from (a mobile attacker changes address between sessions).
    used: Vec<BTreeSet<IpAddr>>,
    found: Vec<BTreeMap<String, u64>>,
    /// Per detector: (true, false) alerts.
    by_detector: BTreeMap<String, (u64, u64)>,
    false_alarms: Vec<Seen>,
    /// Normal principals and addresses: who a false alarm touched.
    normal_principals: HashMap<String, u32>,
    legit_requests: u64,
    /// Legitimate requests the gateway refused for an action (measured through the gateway).
    pub(crate) legit_refused: u64,
    /// Modelled in process: every alert blocks its address and principal for `block_ms`; the flag says
    /// whether the detector's default actions refuse (a ban, throttle or challenge), and then the
    /// block is on its entity alone (its address, or its principal).
    blocks: Vec<Block>,
    pub(crate) block_ms: u64,
    modelled_refused: u64,
    refused_clients: BTreeSet<String>,
    /// Under the default actions, by action (`ban`, `challenge`, `throttle`): legitimate requests
    /// refused, and the clients (principal, or the network of an anonymous request) they came from.
    default_refused: BTreeMap<&'static str, (u64, BTreeSet<String>)>,
    pub(crate) alerts_total: u64,
    /// Alerts after an attack's grace whose window still reached into it ([`Scorer::aftermath`]).
    after_attacks: u64,
    /// Every answer's status, how often (legitimate and attack requests).
    pub(crate) statuses: BTreeMap<u16, u64>,
}

impl Scorer {
    pub(crate) fn new(pop: &Population) -> Scorer {
        let n = pop.attacks.len();
        Scorer {
            attacks: pop.attacks.clone(),
            sent: vec![0; n],
            routes: vec![BTreeSet::new(); n],
            used: vec![BTreeSet::new(); n],
            found: vec![BTreeMap::new(); n],
            by_detector: portcullis::anomaly::Detector::ALL.iter().map(|d| (d.id().to_owned(), (0, 0))).collect(),
            false_alarms: Vec::new(),
            normal_principals: pop.clients.iter().map(|c| (pop.account(c.user).principal.clone(), c.user)).collect(),
            legit_requests: 0,
            legit_refused: 0,
            blocks: Vec::new(),
            block_ms: 15 * MIN_MS,
            modelled_refused: 0,
            refused_clients: BTreeSet::new(),
            default_refused: BTreeMap::new(),
            alerts_total: 0,
            after_attacks: 0,
            statuses: BTreeMap::new(),
        }
    }

    /// Counts a request (before it is sent), and whether the modelled actions would refuse it.
    pub(crate) fn on_request(&mut self, pop: &Population, req: &Req) {
        match req.attack {
            Some(a) => {
                self.sent[a as usize] += 1;
                self.used[a as usize].insert(model::network_of(req.ip));
                if let Some(r) = req.target.route() {
                    self.routes[a as usize].insert(r);
                }
            }
            None => {
                self.legit_requests += 1;
                if self.blocks.is_empty() {
                    return;
                }
                self.blocks.retain(|b| b.until > req.at_ms);
                let principal = match &req.cred {
                    crate::traffic::Cred::Valid(u) => Some(pop.account(*u).principal.as_str()),
                    _ => None,
                };
                let net = model::network_of(req.ip);
                let on_ip = |b: &Block| b.ip.is_some_and(|ip| model::network_of(ip) == net);
                let on_principal = |b: &Block| b.principal.is_some() && b.principal.as_deref() == principal;
                if self.blocks.iter().any(|b| on_ip(b) || on_principal(b)) {
                    self.modelled_refused += 1;
                    if let Some(p) = principal {
                        self.refused_clients.insert(p.to_owned());
                    }
                }
                let by_default = |b: &&Block| if b.on_address { on_ip(b) } else { on_principal(b) };
                // The strongest default action in force on this request (a ban before a challenge
                // before a throttle).
                if let Some(action) = self
                    .blocks
                    .iter()
                    .filter(by_default)
                    .filter_map(|b| b.action)
                    .min_by_key(|a| ["ban", "challenge", "throttle"].iter().position(|x| x == a))
                {
                    let (n, who) = self.default_refused.entry(action).or_default();
                    *n += 1;
                    who.insert(principal.map_or_else(|| net.to_string(), str::to_owned));
                }
            }
        }
    }

    /// The attacks an alert is about: its time inside the attack (plus `grace_ms`) and one of its
    /// entities among the attack's.
    fn matches(&self, s: &Seen, grace_ms: u64) -> Vec<usize> {
        let label_net: Option<IpNet> = s.label.parse().ok().or_else(|| s.label.parse::<IpAddr>().ok().map(IpNet::from));
        let mut out = Vec::new();
        for (i, a) in self.attacks.iter().enumerate() {
            if s.at_ms < a.start_ms || s.at_ms > a.end_ms + grace_ms {
                continue;
            }
            let ip_hit = a.ips.iter().chain(&self.used[i]).any(|aip| {
                s.ip.is_some_and(|ip| model::network_of(ip) == model::network_of(*aip))
                    || label_net.is_some_and(|n| n.contains(aip))
            });
            let who_hit = a
                .principals
                .iter()
                .chain(&a.key_ids)
                .any(|p| s.principal.as_deref() == Some(p.as_str()) || (s.kind != "route" && s.label == *p));
            // A route's alert is about the attacks of its own detector's class on the route (the
            // stuffing tiers': spraying too): a route enumeration alert, raised while an enumeration
            // attack and a token-sharing one both used the route, found the enumeration only.
            let logins = matches!(a.class, Class::CredentialStuffing | Class::PasswordSpraying);
            let of_class = detector_of(a.class) == s.detector || (s.detector == "credential_stuffing" && logins);
            let route_hit = s.kind == "route"
                && of_class
                && s.label
                    .parse::<u16>()
                    .ok()
                    .or_else(|| model::ROUTES.iter().position(|r| r.0 == s.label).map(|x| x as u16))
                    .is_some_and(|r| self.routes[i].contains(&r));
            // All routes together ("*"): about any login attack under way.
            let all_routes = s.kind == "route" && s.label == "*" && logins;
            let route_hit = route_hit || all_routes;
            if ip_hit || who_hit || route_hit {
                out.push(i);
            }
        }
        out
    }

    /// Whether an alert past every attack's grace is an attack's aftermath: the detector that finds
    /// the attack's class, on one of its entities, with a window (at most an hour: the hourly
    /// exfiltration sum decays over one) that still reaches into the attack. What it measured was
    /// the attack's: an hour's response bytes, most of them drained by the attacker.
    fn aftermath(&self, s: &Seen) -> bool {
        let reach = s.window_s.min(3600).saturating_mul(1000);
        self.matches(s, reach).into_iter().any(|i| detector_of(self.attacks[i].class) == s.detector)
    }

    /// The alerts that matched no attack.
    pub(crate) fn false_alarms(&self) -> impl Iterator<Item = &Seen> {
        self.false_alarms.iter()
    }

    pub(crate) fn on_alert(&mut self, s: Seen) {
        self.alerts_total += 1;
        let hits = self.matches(&s, GRACE_MS);
        let after = hits.is_empty() && self.aftermath(&s);
        let entry = self.by_detector.entry(s.detector.clone()).or_insert((0, 0));
        if after {
            // Not a false alarm, not a true alert, and not a detection either (too late to count).
            self.after_attacks += 1;
        } else if hits.is_empty() {
            entry.1 += 1;
            self.false_alarms.push(s.clone());
        } else {
            entry.0 += 1;
            for i in hits {
                self.found[i].entry(s.detector.clone()).or_insert(s.at_ms);
            }
        }
        use portcullis::anomaly::runtime::{default_actions, Action};
        let defaults = portcullis::anomaly::Detector::from_id(&s.detector).map_or(&[][..], default_actions);
        let action = [(Action::Ban, "ban"), (Action::Challenge, "challenge"), (Action::Throttle, "throttle")]
            .into_iter()
            .find(|(a, _)| defaults.contains(a))
            .map(|(_, name)| name);
        let on_address = s.kind == "ip" || s.principal.is_none();
        self.blocks.push(Block {
            until: s.at_ms + self.block_ms,
            ip: s.ip,
            principal: s.principal.clone(),
            action,
            on_address,
        });
    }

    pub(crate) fn report(&self, pop: &Population, mode: &str) -> Report {
        let hours = pop.scenario.client_hours();
        let per10k = |n: u64| n as f64 * 10_000.0 / hours.max(1.0);
        let mut classes = Vec::new();
        for class in Class::ALL {
            let idx: Vec<usize> = (0..self.attacks.len()).filter(|i| self.attacks[*i].class == class).collect();
            if idx.is_empty() {
                continue;
            }
            let mut ttd = Vec::new();
            let mut late = 0;
            let mut by = BTreeMap::<String, u32>::new();
            let mut missed = Vec::new();
            let mut late_attacks = Vec::new();
            for &i in &idx {
                let a = &self.attacks[i];
                match self.found[i].values().min() {
                    Some(t) => {
                        let d = t - a.start_ms;
                        if d > a.intensity.target_ms() {
                            late += 1;
                            late_attacks.push(format!("#{} {:?} {}", a.id, a.intensity, secs(Some(d as f64 / 1000.0))));
                        }
                        ttd.push(d);
                        for (det, at) in &self.found[i] {
                            if *at == *t {
                                *by.entry(det.clone()).or_default() += 1;
                            }
                        }
                    }
                    None => {
                        missed.push(format!("#{} {:?}/{} ({} requests)", a.id, a.intensity, a.variant, self.sent[i]))
                    }
                }
            }
            ttd.sort_unstable();
            let detected = ttd.len();
            classes.push(ClassRow {
                class: class.id(),
                attacks: idx.len(),
                detected,
                recall: detected as f64 / idx.len() as f64,
                ttd_median_s: ttd.get(ttd.len() / 2).map(|d| *d as f64 / 1000.0),
                ttd_max_s: ttd.last().map(|d| *d as f64 / 1000.0),
                late,
                first_by: by,
                missed,
                late_attacks,
            });
        }
        let mut detectors = Vec::new();
        for (det, (tp, fp)) in &self.by_detector {
            let caught: Vec<usize> = (0..self.attacks.len()).filter(|i| self.found[*i].contains_key(det)).collect();
            let mut per_class = BTreeMap::<&'static str, u32>::new();
            for i in &caught {
                *per_class.entry(self.attacks[*i].class.id()).or_default() += 1;
            }
            detectors.push(DetectorRow {
                detector: det.clone(),
                alerts: tp + fp,
                true_alerts: *tp,
                false_alarms: *fp,
                precision: if tp + fp > 0 { Some(*tp as f64 / (tp + fp) as f64) } else { None },
                attacks_detected: caught.len(),
                recall: caught.len() as f64 / self.attacks.len().max(1) as f64,
                false_per_10k_h: per10k(*fp),
                classes: per_class,
            });
        }
        let fp_total: u64 = self.by_detector.values().map(|v| v.1).sum();
        let mut touched = BTreeSet::new();
        for s in &self.false_alarms {
            if let Some(p) = s.principal.as_ref().filter(|p| self.normal_principals.contains_key(*p)) {
                touched.insert(p.clone());
            }
        }
        Report {
            mode: mode.to_owned(),
            scenario: pop.scenario.clone(),
            client_hours: hours,
            legit_requests: self.legit_requests,
            attack_requests: self.sent.iter().sum(),
            alerts: self.alerts_total,
            after_attacks: self.after_attacks,
            false_alarms: fp_total,
            false_per_10k_h: per10k(fp_total),
            false_alarm_bound: (hours / 10_000.0).ceil() as u64,
            principals_falsely_alerted: touched.len(),
            legit_refused_measured: self.legit_refused,
            legit_refused_modelled: self.modelled_refused,
            clients_refused_modelled: self.refused_clients.len(),
            refused_default: self
                .default_refused
                .iter()
                .map(|(a, (n, who))| ((*a).to_owned(), RefusedBy { requests: *n, clients: who.len() }))
                .collect(),
            classes,
            detectors,
            false_alarm_examples: self.false_alarms.iter().take(25).cloned().collect(),
            statuses: self.statuses.clone(),
            labels: self
                .attacks
                .iter()
                .zip(&self.used)
                .map(|(a, used)| {
                    let mut a = a.clone();
                    for ip in used {
                        if !a.ips.iter().any(|x| model::network_of(*x) == *ip) {
                            a.ips.push(*ip);
                        }
                    }
                    a
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ClassRow {
    pub(crate) class: &'static str,
    pub(crate) attacks: usize,
    pub(crate) detected: usize,
    pub(crate) recall: f64,
    pub(crate) ttd_median_s: Option<f64>,
    pub(crate) ttd_max_s: Option<f64>,
    /// Detected, but later than the target (60 s, 10 min low-and-slow).
    pub(crate) late: usize,
    /// Which detectors raised the first alert, how often.
    pub(crate) first_by: BTreeMap<String, u32>,
    pub(crate) missed: Vec<String>,
    /// The attacks found later than the target, with their time to detection.
    pub(crate) late_attacks: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DetectorRow {
    pub(crate) detector: String,
    pub(crate) alerts: u64,
    pub(crate) true_alerts: u64,
    pub(crate) false_alarms: u64,
    pub(crate) precision: Option<f64>,
    pub(crate) attacks_detected: usize,
    /// Of all attacks, the share this detector alerted on.
    pub(crate) recall: f64,
    pub(crate) false_per_10k_h: f64,
    pub(crate) classes: BTreeMap<&'static str, u32>,
}

/// The detector whose job an attack class is.
fn detector_of(class: Class) -> &'static str {
    match class {
        Class::Scraping => "volumetric",
        c => c.id(),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) mode: String,
    pub(crate) scenario: crate::traffic::Scenario,
    pub(crate) client_hours: f64,
    pub(crate) legit_requests: u64,
    pub(crate) attack_requests: u64,
    pub(crate) alerts: u64,
    /// Alerts past an attack's grace (10 min) by the detector of its class, on one of its entities,
    /// whose own window (at most an hour) still reached into the attack (an hour's response bytes,
    /// most of them the attack's): neither false alarms, true alerts nor detections.
    pub(crate) after_attacks: u64,
    pub(crate) false_alarms: u64,
    pub(crate) false_per_10k_h: f64,
    /// At most this many false alarms: ceil(client-hours / 10,000).
    pub(crate) false_alarm_bound: u64,
    /// Normal principals named by a false alarm.
    pub(crate) principals_falsely_alerted: usize,
    /// Through the gateway in enforce mode: legitimate requests refused (403 banned, 429, 401 reauthenticate).
    pub(crate) legit_refused_measured: u64,
    /// In process: legitimate requests that a 15-minute block of every alerted address and principal
    /// would have refused (an upper bound of the actions' cost).
    pub(crate) legit_refused_modelled: u64,
    pub(crate) clients_refused_modelled: usize,
    /// In process, under each detector's default actions in `enforce` (stuffing bans its address,
    /// enumeration throttles, token sharing challenges; the others only log and alert), by action:
    /// legitimate requests an alert's action would refuse for 15 min, and the clients they came from
    /// (a true alert's too: the owner of a shared token is challenged with the thieves).
    pub(crate) refused_default: BTreeMap<String, RefusedBy>,
    pub(crate) classes: Vec<ClassRow>,
    pub(crate) detectors: Vec<DetectorRow>,
    pub(crate) false_alarm_examples: Vec<Seen>,
    /// Every answer's status, how often: the same in process and through the gateway (in monitor mode).
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// The labels: every injected attack (with every address or /64 it sent from).
    pub(crate) labels: Vec<Attack>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |s| if s < 120.0 { format!("{s:.0}s") } else { format!("{:.1}min", s / 60.0) })
}

impl Report {
    /// The human-readable tables.
    pub(crate) fn table(&self) -> String {
        let mut o = String::new();
        let s = &self.scenario;
        o.push_str(&format!(
            "portcullis-simulate ({}): seed {}, {} clients x {} h = {:.0} client-hours, {} legitimate and {} attack requests, {} attacks\n\n",
            self.mode,
            s.seed,
            s.clients,
            s.hours,
            self.client_hours,
            self.legit_requests,
            self.attack_requests,
            self.classes.iter().map(|c| c.attacks).sum::<usize>()
        ));
        o.push_str(
            "| attack class | attacks | detected | recall | TTD median | TTD max | late | first detected by |\n",
        );
        o.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
        for c in &self.classes {
            let by: Vec<String> = c.first_by.iter().map(|(d, n)| format!("{d} {n}")).collect();
            o.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.class,
                c.attacks,
                c.detected,
                pct(c.recall),
                secs(c.ttd_median_s),
                secs(c.ttd_max_s),
                c.late,
                by.join(", ")
            ));
        }
        o.push_str("\n| detector | alerts | true | false | precision | attacks detected | recall (all attacks) | false / 10k client-h | classes |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for d in &self.detectors {
            let cl: Vec<String> = d.classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            o.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
                d.detector,
                d.alerts,
                d.true_alerts,
                d.false_alarms,
                d.precision.map_or("-".into(), pct),
                d.attacks_detected,
                pct(d.recall),
                d.false_per_10k_h,
                cl.join(", ")
            ));
        }
        o.push_str(&format!(
            "\nfalse alarms: {} ({:.2} per 10,000 client-hours; bound for this run {}), normal principals named: {}\n",
            self.false_alarms, self.false_per_10k_h, self.false_alarm_bound, self.principals_falsely_alerted
        ));
        if self.after_attacks > 0 {
            o.push_str(&format!(
                "alerts after an attack's grace whose window reached into it (neither false alarms nor detections): {}\n",
                self.after_attacks
            ));
        }
        o.push_str(&format!(
            "legitimate requests refused: {} measured (gateway, enforce), {} modelled ({} clients; every alert blocking its address and principal for 15 min)\n",
            self.legit_refused_measured, self.legit_refused_modelled, self.clients_refused_modelled
        ));
        let by = |a: &str| self.refused_default.get(a).map_or((0, 0), |r| (r.clients, r.requests));
        let ((bc, br), (cc, cr), (tc, tr)) = (by("ban"), by("challenge"), by("throttle"));
        o.push_str(&format!(
            "legitimate clients under the default actions (enforce, modelled): {bc} banned ({br} requests), {cc} challenged ({cr}), {tc} throttled ({tr})\n"
        ));
        for c in self.classes.iter().filter(|c| !c.missed.is_empty()) {
            o.push_str(&format!("missed {}: {}\n", c.class, c.missed.join("; ")));
        }
        for s in self.false_alarm_examples.iter().take(10) {
            o.push_str(&format!(
                "false alarm: {} on {} {} at +{:.1}h: {} (feature {}, baseline {:.2}, observed {:.2}, score {:.2})\n",
                s.detector,
                s.kind,
                s.label,
                (s.at_ms - crate::traffic::EPOCH_MS) as f64 / 3_600_000.0,
                s.explanation,
                s.feature,
                s.baseline,
                s.observed,
                s.score
            ));
        }
        o
    }

    /// The targets of issue 16, scaled to this run; the misses, or none.
    pub(crate) fn misses(&self, enforce: bool) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.classes {
            if c.recall < 0.95 {
                out.push(format!("recall of {} is {} (< 95%)", c.class, pct(c.recall)));
            }
            if c.late > 0 {
                out.push(format!("{} of {} {} attacks detected later than the target", c.late, c.detected, c.class));
            }
        }
        if self.false_alarms > self.false_alarm_bound {
            out.push(format!(
                "{} false alarms over {:.0} client-hours (at most {})",
                self.false_alarms, self.client_hours, self.false_alarm_bound
            ));
        }
        if !self.detectors.iter().any(|d| d.detector == "model") {
            out.push("the model detector has no row".into());
        }
        if let Some(b) = self.refused_default.get("ban") {
            out.push(format!("{} legitimate clients banned under the default actions (modelled)", b.clients));
        }
        if enforce && self.legit_refused_measured > 0 {
            out.push(format!("{} legitimate requests refused in enforce mode", self.legit_refused_measured));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Population, Scenario};

    fn seen(detector: &str, kind: &str, label: &str, ip: Option<IpAddr>, principal: Option<&str>, at_ms: u64) -> Seen {
        Seen {
            detector: detector.into(),
            kind: kind.into(),
            label: label.into(),
            ip,
            principal: principal.map(str::to_owned),
            feature: "f".into(),
            baseline: 0.0,
            observed: 1.0,
            score: 1.0,
            window_s: 60,
            at_ms,
            explanation: "x".into(),
        }
    }

    #[test]
    fn default_actions_refuse_only_where_they_land() {
        use crate::model::{HeadStyle, Target};
        use crate::traffic::Cred;
        let pop = Population::new(Scenario::new(2, 40, 24, 1));
        let mut s = Scorer::new(&pop);
        let (banned, other): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "192.0.2.9".parse().unwrap());
        let owner = pop.account(1).principal.clone();
        let t = pop.scenario.warm_ms() + 60_000;
        // A stuffing alert on an address bans it (its default); an unusual-hours alert on a principal
        // only logs.
        s.on_alert(seen("credential_stuffing", "ip", "198.51.100.7", Some(banned), None, t));
        s.on_alert(seen("unusual_hours", "principal", &owner, Some(other), Some(&owner), t));
        let req = |ip: IpAddr, cred: Cred, at_ms: u64| Req {
            at_ms,
            ip,
            profile: 0,
            style: HeadStyle::Native,
            cred,
            target: Target::Orders { user: 1, limit: 20, page: 0 },
            attack: None,
        };
        s.on_request(&pop, &req(banned, Cred::None, t + 1_000));
        s.on_request(&pop, &req(other, Cred::Valid(1), t + 1_000));
        // After the ban's 15 minutes, nothing.
        s.on_request(&pop, &req(banned, Cred::None, t + 16 * MIN_MS));
        let r = s.report(&pop, "in-process");
        assert_eq!(r.refused_default.len(), 1, "{:?}", r.refused_default);
        let ban = r.refused_default["ban"];
        assert_eq!((ban.requests, ban.clients), (1, 1));
        // The pessimistic model blocks both alerts' entities.
        assert_eq!(r.legit_refused_modelled, 2);
        assert!(r.misses(false).iter().any(|m| m.contains("1 legitimate clients banned")), "{:?}", r.misses(false));
    }

    #[test]
    fn alerts_match_attacks_by_entity_and_window_only() {
        let pop = Population::new(Scenario::new(2, 40, 24, 1));
        let mut s = Scorer::new(&pop);
        let a = pop.attacks.iter().find(|a| a.class == Class::CredentialStuffing).unwrap().clone();
        let ip = a.ips[0];
        // Right entity, right time: detected.
        s.on_alert(seen("credential_stuffing", "ip", &ip.to_string(), Some(ip), None, a.start_ms + 30_000));
        // Right entity, before the attack: a false alarm.
        s.on_alert(seen("credential_stuffing", "ip", &ip.to_string(), Some(ip), None, a.start_ms - 1));
        // Another entity in the window: a false alarm.
        s.on_alert(seen("volumetric", "principal", "user-1", None, Some("user-1"), a.start_ms + 1));
        let r = s.report(&pop, "test");
        let row = r.classes.iter().find(|c| c.class == "credential_stuffing").unwrap();
        assert!(row.detected >= 1);
        assert_eq!(row.ttd_median_s, Some(30.0));
        assert_eq!(r.false_alarms, 2);
        assert_eq!(r.detectors.iter().find(|d| d.detector == "credential_stuffing").unwrap().precision, Some(0.5));
        assert!(r.detectors.iter().any(|d| d.detector == "model"));
        assert!(!r.misses(false).is_empty());
    }

    /// An alert past an attack's grace whose own window still reaches into the attack, on one of its
    /// entities, measured the attack: neither a false alarm nor a detection. A short window there, or
    /// a long one that ends before the attack, is a false alarm.
    #[test]
    fn an_alert_whose_window_reaches_into_an_attack_is_its_aftermath() {
        let pop = Population::new(Scenario::new(2, 40, 24, 1));
        let a = pop.attacks.iter().find(|a| a.class == Class::Exfiltration).unwrap().clone();
        let who = a.principals[0].as_str();
        let hour = |at_ms| Seen { window_s: 3600, ..seen("exfiltration", "api_key", who, None, Some(who), at_ms) };
        let mut s = Scorer::new(&pop);
        s.on_alert(hour(a.end_ms + 15 * MIN_MS));
        let r = s.report(&pop, "test");
        assert_eq!((r.false_alarms, r.after_attacks), (0, 1));
        let row = r.classes.iter().find(|c| c.class == "exfiltration").unwrap();
        assert_eq!(row.detected, 0, "too late to count as a detection");

        let ex = r.detectors.iter().find(|d| d.detector == "exfiltration").unwrap();
        assert_eq!((ex.true_alerts, ex.false_alarms), (0, 0), "nor a true alert");

        // A short window there, a long one that ends before the attack, another detector's alert
        // (whatever its window), or a window past an hour: false alarms.
        let mut s = Scorer::new(&pop);
        s.on_alert(seen("exfiltration", "api_key", who, None, Some(who), a.end_ms + 15 * MIN_MS));
        s.on_alert(hour(a.end_ms + 61 * MIN_MS));
        s.on_alert(Seen {
            window_s: 3600,
            ..seen("unusual_hours", "api_key", who, None, Some(who), a.end_ms + 30 * MIN_MS)
        });
        s.on_alert(Seen { window_s: 200_000, ..hour(a.end_ms + 24 * 60 * MIN_MS) });
        let r = s.report(&pop, "test");
        assert_eq!((r.false_alarms, r.after_attacks), (4, 0));
    }

    #[test]
    fn an_ipv6_prefix_label_matches_any_address_in_it() {
        let pop = Population::new(Scenario::new(9, 40, 24, 3));
        let a = pop.attacks.iter().find(|a| a.ips.iter().any(IpAddr::is_ipv6)).cloned();
        let Some(a) = a else { return };
        let ip = a.ips.iter().find(|i| i.is_ipv6()).copied().unwrap();
        let net = IpNet::new(ip, 64).unwrap().trunc();
        let mut s = Scorer::new(&pop);
        s.on_alert(seen("token_sharing", "ip", &net.to_string(), None, None, a.start_ms + 5));
        let r = s.report(&pop, "test");
        assert_eq!(r.false_alarms, 0, "{:?}", r.false_alarm_examples);
    }
}
