//! `/admin/v1`: who am I, the OpenAPI document, quotas, the compiled routes, upstream health, and the
//! config (validate a candidate, reload).

use super::{audit, json, AdminRole, Body, Operator, Path, Problem, Query, St, Viewer};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub id: String,
    pub role: crate::admin::auth::Role,
}

/// The caller and their role.
#[utoipa::path(get, path = "/admin/v1/whoami", tag = "system", responses((status = 200, body = WhoAmI), (status = 401, body = Problem)))]
pub async fn whoami(Viewer(c): Viewer) -> Response {
    json(StatusCode::OK, &WhoAmI { id: c.id, role: c.role })
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/admin/v1/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(State(state): State<St>, _: Viewer) -> Response {
    let mut resp = json(StatusCode::OK, &serde_json::Value::Null);
    *resp.body_mut() = axum::body::Body::from(state.openapi.get().cloned().unwrap_or_default());
    resp
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub quota: String,
    /// Hex digest of the quota's key parts (the caller, as the quota keys it).
    pub key: String,
    pub used: u64,
    pub period_start: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuotaUsage {
    pub items: Vec<Usage>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaFilter {
    /// Only this quota.
    pub quota: Option<String>,
}

/// What each caller used of each quota in its running period (this node's counts).
#[utoipa::path(get, path = "/admin/v1/quotas", tag = "quotas", params(QuotaFilter), responses((status = 200, body = QuotaUsage)))]
pub async fn quotas(State(state): State<St>, _: Viewer, Query(f): Query<QuotaFilter>) -> Response {
    let items = state
        .shared
        .lasting
        .limits
        .quotas
        .usage()
        .into_iter()
        .filter(|u| f.quota.as_ref().is_none_or(|q| *q == u.quota))
        .map(|u| Usage { quota: u.quota, key: u.key, used: u.used, period_start: super::keys::secs(u.period_start) })
        .collect();
    json(StatusCode::OK, &QuotaUsage { items })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResetParams {
    /// One caller's key (from `GET /admin/v1/quotas`); without it, every caller's count.
    pub key: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reset {
    pub quota: String,
    pub reset: usize,
}

/// Reset a quota's counts (of one caller, or all).
#[utoipa::path(delete, path = "/admin/v1/quotas/{name}", tag = "quotas", params(("name" = String, Path), ResetParams),
    responses((status = 200, body = Reset), (status = 404, body = Problem)))]
pub async fn reset_quota(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(name): Path<String>,
    Query(p): Query<ResetParams>,
) -> Result<Response, Problem> {
    if p.key.as_ref().is_some_and(|k| k.len() != 32 || !k.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(Problem::bad_request("`key` is the 32 hex digits `GET /admin/v1/quotas` shows"));
    }
    let (s, n, k) = (state.clone(), name.clone(), p.key.clone());
    let reset = tokio::task::spawn_blocking(move || s.shared.lasting.limits.quotas.reset(&n, k.as_deref()))
        .await
        .map_err(|_| Problem::store("the quota task failed"))?
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| Problem::not_found(format!("no quota `{name}` in force")))?;
    audit(&state, &caller, "quota.reset", format!("quota:{name}"), serde_json::json!({"key": p.key, "reset": reset}));
    Ok(json(StatusCode::OK, &Reset { quota: name, reset }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Routes {
    pub items: Vec<crate::config::compile::RouteRow>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoutesFor {
    /// The order for requests to this host (default: a host no route names).
    pub host: Option<String>,
}

/// The compiled route table, in matching order, with each route's effective chain.
#[utoipa::path(get, path = "/admin/v1/routes", tag = "system", params(RoutesFor), responses((status = 200, body = Routes)))]
pub async fn routes(State(state): State<St>, _: Viewer, Query(q): Query<RoutesFor>) -> Response {
    let rt = state.shared.runtime.load();
    let host = q.host.map(|h| h.to_ascii_lowercase());
    json(StatusCode::OK, &Routes { items: rt.route_rows(host.as_deref()) })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetHealth {
    pub address: String,
    pub healthy: bool,
    /// In rotation now (healthy and not ejected by passive checks).
    pub available: bool,
    pub in_flight: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpstreamHealth {
    pub name: String,
    pub targets: Vec<TargetHealth>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub upstreams: Vec<UpstreamHealth>,
}

/// Upstream and target health.
#[utoipa::path(get, path = "/admin/v1/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<St>, _: Viewer) -> Response {
    let rt = state.shared.runtime.load();
    let upstreams = rt
        .upstreams
        .values()
        .map(|u| UpstreamHealth {
            name: u.name.to_string(),
            targets: u
                .targets
                .iter()
                .map(|t| TargetHealth {
                    address: t.address.clone(),
                    healthy: t.is_healthy(),
                    available: t.available(),
                    in_flight: t.outstanding.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect(),
        })
        .collect();
    json(StatusCode::OK, &Health { upstreams })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// `file:line:column: message` when it is not valid.
    pub error: Option<String>,
    pub warnings: Vec<String>,
    /// The candidate's route table, when it compiles.
    pub routes: Vec<crate::config::compile::RouteRow>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// The config file's text (YAML or JSON).
    pub config: String,
}

/// Validate a candidate config (parse and compile, as `portcullis check` does) without applying it.
#[utoipa::path(post, path = "/admin/v1/config/validate", tag = "config", request_body = Candidate,
    responses((status = 200, body = Validation), (status = 403, body = Problem)))]
pub async fn validate(State(_s): State<St>, _: AdminRole, Body(c): Body<Candidate>) -> Result<Response, Problem> {
    let text = c.config;
    let v = tokio::task::spawn_blocking(move || {
        let file = std::path::Path::new("candidate");
        let parsed = crate::config::parse(&text, file);
        let cfg = match parsed {
            Ok(cfg) => cfg,
            Err(e) => return Validation { valid: false, error: Some(e.to_string()), warnings: vec![], routes: vec![] },
        };
        let lasting = crate::pipeline::runtime::Lasting::default();
        match crate::config::compile::compile(&cfg, &lasting, None) {
            Ok(rt) => Validation {
                valid: true,
                error: None,
                warnings: crate::config::lint::lints(&cfg),
                routes: rt.route_rows(None),
            },
            Err(e) => Validation {
                valid: false,
                error: Some(e.locate(&text, file).to_string()),
                warnings: vec![],
                routes: vec![],
            },
        }
    })
    .await
    .map_err(|_| Problem::store("the validation task failed"))?;
    Ok(json(StatusCode::OK, &v))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    pub reloaded: bool,
}

/// Reload the config file now (as SIGHUP does); a refused config leaves the running one in force.
#[utoipa::path(post, path = "/admin/v1/config/reload", tag = "config",
    responses((status = 200, body = Reloaded), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reload(State(state): State<St>, AdminRole(caller): AdminRole, _h: HeaderMap) -> Result<Response, Problem> {
    let Some(reload) = state.reload.clone() else {
        return Err(Problem::conflict("this gateway runs without a config file (quickstart): nothing to reload"));
    };
    let done =
        tokio::task::spawn_blocking(move || reload()).await.map_err(|_| Problem::store("the reload task failed"))?;
    audit(&state, &caller, "config.reload", "config".into(), serde_json::json!({"applied": done.is_ok()}));
    match done {
        Ok(()) => {
            let mut resp = json(StatusCode::OK, &Reloaded { reloaded: true });
            resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err(e) => Err(Problem::invalid(format!("refused; the running configuration stays: {e}"))),
    }
}
