//! `/admin/v1/anomaly`: the anomaly detector's alerts (with their explanations), the responses in force
//! (and lifting them), its status, and rate limits suggested from observed behaviour.

use super::{audit, json, page, Operator, PageParams, Path, Problem, Query, St, Viewer};
use crate::anomaly::runtime::{ActiveAction, Anomaly, RouteSuggestion, Stored};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One alert and its explanation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: u64,
    /// The detector's id, e.g. `credential_stuffing`.
    pub detector: String,
    pub entity: Entity,
    /// The client address the alert is about, when it is about one.
    pub ip: Option<String>,
    /// The principal (`<method>:<id>`) the alert is about, when it is about one.
    pub principal: Option<String>,
    /// The feature that crossed its threshold.
    pub feature: String,
    /// The baseline it was compared with (the entity's own, or its peers' while it is new).
    pub baseline: f64,
    /// What was observed over the window.
    pub observed: f64,
    /// 0 to 1.
    pub score: f64,
    pub window_s: u32,
    /// When (ms since the epoch; record time).
    pub at_ms: u64,
    pub explanation: String,
    /// The detector's configured responses that can land on the alert's entity (a route's alert:
    /// `log` and `alert` only; a challenge needs a principal).
    pub actions: Vec<String>,
    /// True when throttle, ban or challenge were put in force (`mode: enforce`).
    pub enforced: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entity {
    /// `principal`, `api_key`, `ip` or `route`.
    pub kind: String,
    pub label: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    pub items: Vec<Alert>,
    pub next_cursor: Option<String>,
}

/// A response in force.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Action {
    pub id: u64,
    /// `throttle`, `ban` or `challenge`.
    pub kind: String,
    /// `ip` or `principal`.
    pub target_kind: String,
    pub target: String,
    /// True when it holds on every node of the fleet (the fleet's ban list, or its shared actions
    /// with `redis.share_bans: true`); false: on this node only.
    pub shared: bool,
    /// `here` when this node raised it, else the node of the fleet that did.
    pub origin: String,
    pub detector: String,
    /// The alert that put it in force.
    pub alert: u64,
    pub since_ms: u64,
    pub expires_ms: u64,
    pub rate: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActionList {
    pub items: Vec<Action>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnomalyStatus {
    /// `monitor` or `enforce`.
    pub mode: String,
    pub entities: u64,
    pub memory_bytes: u64,
    /// Records dropped because the detector's queue was full.
    pub dropped: u64,
    pub alerts: u64,
    pub actions: usize,
}

/// A suggested per-principal rate limit for one route.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    pub route: String,
    /// Principals observed on the route.
    pub principals: usize,
    pub samples: u64,
    /// The per-principal request rate at the quantile, per minute and per second (burst).
    pub per_minute: f64,
    pub per_second: f64,
    /// The suggested limit, e.g. `120/m`.
    pub rate: String,
    pub burst: u32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Suggestions {
    pub quantile: f64,
    pub margin: f64,
    pub items: Vec<Suggestion>,
    /// The same as a config fragment (`rate_limits:`), ready to paste.
    pub yaml: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    /// 1 to 500 (default 100).
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// Only this detector's alerts.
    pub detector: Option<String>,
    /// Only alerts about this entity (its label: an address, a principal, a route).
    pub entity: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SuggestParams {
    /// The quantile of observed per-principal rates (default 0.999).
    pub quantile: Option<f64>,
    /// Multiplied into the observed rate (default 2).
    pub margin: Option<f64>,
}

fn detector(state: &St) -> Result<Arc<Anomaly>, Problem> {
    state
        .shared
        .lasting
        .anomaly
        .current()
        .ok_or_else(|| Problem::not_found("the anomaly detector is not configured (`anomaly:`)"))
}

fn alert_view(a: Stored) -> Alert {
    Alert {
        id: a.id,
        detector: a.detector.to_owned(),
        entity: Entity { kind: a.entity.kind.to_owned(), label: a.entity.label },
        ip: a.ip,
        principal: a.principal,
        feature: a.feature.to_owned(),
        baseline: a.baseline,
        observed: a.observed,
        score: a.score,
        window_s: a.window_s,
        at_ms: a.at_ms,
        explanation: a.explanation,
        actions: a.actions.iter().map(|s| (*s).to_owned()).collect(),
        enforced: a.enforced,
    }
}

fn action_view(a: ActiveAction) -> Action {
    Action {
        id: a.id,
        kind: a.kind.to_owned(),
        target_kind: a.target_kind.to_owned(),
        target: a.target,
        shared: a.shared,
        origin: a.origin,
        detector: a.detector.to_owned(),
        alert: a.alert,
        since_ms: a.since_ms,
        expires_ms: a.expires_ms,
        rate: a.rate,
    }
}

/// The detector's recent alerts, newest first, each with its explanation.
#[utoipa::path(get, path = "/admin/v1/anomaly/alerts", tag = "anomaly", params(AlertParams),
    responses((status = 200, body = AlertPage), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn alerts(State(state): State<St>, _: Viewer, Query(p): Query<AlertParams>) -> Result<Response, Problem> {
    let d = detector(&state)?;
    if let Some(name) = &p.detector {
        if crate::anomaly::Detector::from_id(name).is_none() {
            return Err(Problem::bad_request(format!("`{name}` is not a detector")));
        }
    }
    let all: Vec<Alert> = d
        .alerts(None, p.detector.as_deref(), p.entity.as_deref(), crate::anomaly::runtime::RECENT_ALERTS)
        .into_iter()
        .map(alert_view)
        .collect();
    let paging = PageParams { limit: p.limit, cursor: p.cursor };
    // Newest first: the key runs down as ids run up.
    let (items, next_cursor) = page(all, |a| format!("{:020}", u64::MAX - a.id), &paging)?;
    Ok(json(StatusCode::OK, &AlertPage { items, next_cursor }))
}

/// The responses in force (throttles, bans, challenges), each with its expiry.
#[utoipa::path(get, path = "/admin/v1/anomaly/actions", tag = "anomaly",
    responses((status = 200, body = ActionList), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn actions(State(state): State<St>, _: Viewer) -> Result<Response, Problem> {
    let d = detector(&state)?;
    let items = d.actions().into_iter().map(action_view).collect();
    Ok(json(StatusCode::OK, &ActionList { items }))
}

/// Lift a response now (a ban it set is lifted too).
#[utoipa::path(delete, path = "/admin/v1/anomaly/actions/{id}", tag = "anomaly", params(("id" = u64, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn lift(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(id): Path<u64>,
) -> Result<Response, Problem> {
    let d = detector(&state)?;
    let lifted = tokio::task::spawn_blocking(move || d.lift(id))
        .await
        .map_err(|_| Problem::store("the lift task failed"))?
        .ok_or_else(|| Problem::not_found(format!("no anomaly action {id} in force")))?;
    audit(
        &state,
        &caller,
        "anomaly.action_lifted",
        format!("anomaly_action:{id}"),
        serde_json::json!({"kind": lifted.kind, "target": lifted.target, "detector": lifted.detector}),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The detector's mode and size.
#[utoipa::path(get, path = "/admin/v1/anomaly/status", tag = "anomaly",
    responses((status = 200, body = AnomalyStatus), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn status(State(state): State<St>, _: Viewer) -> Result<Response, Problem> {
    let s = detector(&state)?.status();
    let mode = match s.mode {
        crate::anomaly::runtime::Mode::Monitor => "monitor",
        crate::anomaly::runtime::Mode::Enforce => "enforce",
    };
    Ok(json(
        StatusCode::OK,
        &AnomalyStatus {
            mode: mode.into(),
            entities: s.entities,
            memory_bytes: s.memory_bytes,
            dropped: s.dropped,
            alerts: s.alerts,
            actions: s.actions,
        },
    ))
}

/// Per-route rate limits derived from observed per-principal behaviour (`portcullis limits suggest`).
#[utoipa::path(get, path = "/admin/v1/anomaly/suggest", tag = "anomaly", params(SuggestParams),
    responses((status = 200, body = Suggestions), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn suggest(State(state): State<St>, _: Viewer, Query(p): Query<SuggestParams>) -> Result<Response, Problem> {
    let d = detector(&state)?;
    let quantile = p.quantile.unwrap_or(0.999);
    let margin = p.margin.unwrap_or(2.0);
    if !(0.5..1.0).contains(&quantile) {
        return Err(Problem::bad_request("`quantile` must be at least 0.5 and below 1"));
    }
    if !(1.0..=100.0).contains(&margin) {
        return Err(Problem::bad_request("`margin` must be between 1 and 100"));
    }
    let items: Vec<Suggestion> = d
        .suggest(quantile, margin)
        .into_iter()
        .map(|s: RouteSuggestion| Suggestion {
            route: s.route,
            principals: s.principals,
            samples: s.samples,
            per_minute: s.per_minute,
            per_second: s.per_second,
            rate: s.rate,
            burst: s.burst,
        })
        .collect();
    let yaml = suggestion_yaml(&items, quantile, margin);
    Ok(json(StatusCode::OK, &Suggestions { quantile, margin, items, yaml }))
}

/// The suggestions as a config fragment: one `rate_limits:` entry per route, keyed by principal, and
/// the line to add to each route.
pub fn suggestion_yaml(items: &[Suggestion], quantile: f64, margin: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `portcullis limits suggest`: per principal, the {}th percentile of observed rates x {margin}.",
        quantile * 100.0
    );
    out.push_str("rate_limits:\n");
    for s in items {
        let name: String =
            s.route.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let _ = writeln!(
            out,
            "  suggested-{name}:   # route `{}`: {} principals, {} samples, observed {:.1}/min, {:.1}/s at peak",
            s.route, s.principals, s.samples, s.per_minute, s.per_second
        );
        let _ = writeln!(out, "    rate: {}\n    burst: {}\n    key: [principal]", s.rate, s.burst);
    }
    out.push_str("# and on each route: rate_limits: [suggested-<route>]\n");
    out
}
