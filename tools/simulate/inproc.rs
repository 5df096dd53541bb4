//! The in-process sink: each request becomes the [`Record`] the gateway would build for it, answered
//! by the world, and is fed straight to the detection engine. No sockets: the long run's hundred
//! thousand client-hours take minutes.

use crate::model::{self, HeadStyle};
use crate::score::{Scorer, Seen};
use crate::traffic::{Cred, Population, Req};

use portcullis::anomaly::{Alert, Engine, Record, Settings, Signals, NO_ROUTE};
use portcullis::exchange::Principal;
use std::collections::HashMap;
use std::sync::Arc;

/// The host the simulated clients call.
pub(crate) const HOST: &str = "api.shop.example";

/// The request head a request is sent with, in its client's order: `(name, value)`.
pub(crate) fn head(pop: &Population, req: &Req, sim_ms: u64) -> Vec<(&'static str, String)> {
    let (template, ua) = model::head_template(req.profile, req.style);
    let key = match &req.cred {
        Cred::None => None,
        Cred::Valid(u) => Some(pop.account(*u).key.clone()),
        Cred::Mistyped(u) => Some(model::mistype(&pop.account(*u).key, (req.at_ms % 97) as usize)),
        Cred::Guess(k) => Some(k.to_string()),
    };
    let mut out = Vec::with_capacity(template.len());
    for (name, value) in template {
        let v = match *name {
            "host" => HOST.to_owned(),
            "user-agent" => ua.to_owned(),
            "x-api-key" => match &key {
                Some(k) => k.clone(),
                None => continue,
            },
            "x-forwarded-for" => req.ip.to_string(),
            "portcullis-sim-time" => sim_ms.to_string(),
            _ => (*value).to_owned(),
        };
        out.push((*name, v));
    }
    if req.target.body_len() > 0 {
        out.push(("content-type", "application/json".into()));
        out.push(("content-length", req.target.body_len().to_string()));
    }
    out
}

/// The automation signals of a head, as the gateway computes them.
fn signals_of(pop: &Population, req: &Req) -> Signals {
    let mut map = http::HeaderMap::new();
    for (name, value) in head(pop, req, req.at_ms) {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value)) {
            map.append(n, v);
        }
    }
    portcullis::anomaly::signals(&map)
}

/// Builds records for requests: principals built once per account, signals once per head shape.
pub(crate) struct Recorder {
    principals: Vec<Arc<Principal>>,
    claimed: HashMap<String, Arc<str>>,
    signals: HashMap<(u16, HeadStyle, bool), Signals>,
}

impl Recorder {
    pub(crate) fn new(pop: &Population) -> Recorder {
        let principals = pop
            .accounts
            .iter()
            .map(|a| {
                portcullis::authn::api_key::principal(
                    &a.principal,
                    vec![model::ROLES[a.role as usize].0.to_owned()],
                    Vec::new(),
                )
            })
            .collect();
        Recorder { principals, claimed: HashMap::new(), signals: HashMap::new() }
    }

    /// The record of `req` and its answer.
    pub(crate) fn record(&mut self, pop: &Population, req: &Req) -> Record {
        let route = req.target.route();
        let caller = match (&req.cred, route) {
            (Cred::Valid(u), Some(_)) => Some(*u),
            _ => None,
        };
        let (status, bytes_out) = pop.world.answer(caller, req.target);
        let claimed = match (&req.cred, route) {
            (_, None) => None,
            (Cred::Mistyped(u), _) => Some(pop.account(*u).key_id.clone()),
            (Cred::Guess(k), _) => Some(model::key_id(k).to_owned()),
            _ => None,
        }
        .map(|id| self.claimed.entry(id.clone()).or_insert_with(|| Arc::from(id.as_str())).clone());
        let params = req.target.params();
        let id_param = params.last().and_then(|p| p.parse::<u64>().ok());
        let params_hash = if params.is_empty() { 0 } else { model::hash64(&params) };
        let (_, ua) = model::head_template(req.profile, req.style);
        let has_key = req.cred != Cred::None;
        let key = (req.profile, req.style, has_key);
        let signals = match self.signals.get(&key) {
            Some(s) => *s,
            None => {
                let s = signals_of(pop, req);
                self.signals.insert(key, s);
                s
            }
        };
        Record {
            at_ms: req.at_ms,
            ip: req.ip,
            principal: caller.map(|u| self.principals[u as usize - 1].clone()),
            claimed,
            route: route.unwrap_or(NO_ROUTE),
            status,
            bytes_in: 380 + req.target.body_len(),
            bytes_out,
            id_param,
            params_hash,
            user_agent: model::hash64(ua),
            signals,
            // The in-process run has no stage: nothing is refused by an action in force.
            in_force: false,
        }
    }
}

/// An engine alert as the scorer takes it.
pub(crate) fn seen(a: &Alert) -> Seen {
    Seen {
        detector: a.detector.id().to_owned(),
        kind: a.entity.kind.as_str().to_owned(),
        label: a.entity.label.to_string(),
        ip: a.ip,
        principal: a.principal.as_deref().map(str::to_owned),
        feature: a.feature.to_owned(),
        baseline: a.baseline,
        observed: a.observed,
        score: a.score,
        window_s: u64::from(a.window_s),
        at_ms: a.at_ms,
        explanation: a.explanation.clone(),
    }
}

/// Runs the whole stream through a fresh engine; returns the scorer.
pub(crate) fn run(
    pop: &Population,
    settings: Settings,
    mut each_alert: impl FnMut(&Seen),
    mut records_out: Option<&mut dyn std::io::Write>,
) -> Scorer {
    let mut engine = Engine::new(settings);
    let mut scorer = Scorer::new(pop);
    let mut rec = Recorder::new(pop);
    let mut alerts = Vec::new();
    let mut last_tick = 0u64;
    for req in pop.stream() {
        // The engine's clock: about one tick per second of record time. Across a quiet gap it gets at
        // most ten, then one at the new time.
        let sec = req.at_ms / 1000;
        if last_tick == 0 {
            last_tick = sec;
        }
        if sec > last_tick {
            let gap = sec - last_tick;
            for s in (last_tick + 1..=sec).take(10) {
                engine.tick(s * 1000, &mut alerts);
            }
            if gap > 10 {
                engine.tick(sec * 1000, &mut alerts);
            }
            last_tick = sec;
        }
        scorer.on_request(pop, &req);
        let record = rec.record(pop, &req);
        *scorer.statuses.entry(record.status).or_default() += 1;
        if let Some(w) = records_out.as_mut() {
            let line = serde_json::json!({
                "at_ms": record.at_ms,
                "ip": record.ip.to_string(),
                "principal": record.principal.as_ref().map(|p| p.id.as_str()),
                "claimed": record.claimed.as_deref(),
                "route": record.route,
                "status": record.status,
                "bytes_out": record.bytes_out,
                "id_param": record.id_param,
                "attack": req.attack,
            });
            let _ = writeln!(w, "{line}");
        }
        engine.observe(&record, &mut alerts);
        for a in alerts.drain(..) {
            let s = seen(&a);
            each_alert(&s);
            scorer.on_alert(s);
        }
    }
    let end = pop.scenario.end_ms();
    engine.tick(end, &mut alerts);
    let t = std::time::Instant::now();
    let snapshot = engine.snapshot().len();
    eprintln!(
        "engine: {} entities, {} bytes in memory, a snapshot of {snapshot} bytes ({} an entity) in {:?}",
        engine.entities(),
        engine.memory_bytes(),
        snapshot / engine.entities().max(1),
        t.elapsed()
    );
    for a in alerts.drain(..) {
        let s = seen(&a);
        each_alert(&s);
        scorer.on_alert(s);
    }
    scorer
}
