//! Prometheus metrics. Label sets are resolved once when a route or upstream is compiled, so the request
//! path only touches atomics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<Labels, Histogram, fn() -> Histogram>,
    rejections: Family<Labels, Counter>,
    upstream_healthy: Family<Labels, Gauge>,
    pub active_connections: Gauge,
    pub rejected_connections: Family<Labels, Counter>,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub authn_failures: Family<Labels, Counter>,
    authz_decisions: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    rate_limit_store_failures: Family<Labels, Counter>,
    replay_store_failures: Family<Labels, Counter>,
    jwks_refreshes: Family<Labels, Counter>,
    inspect_detections: Family<Labels, Counter>,
    /// Connection guards: automatic bans made, and list files refused on re-read.
    pub auto_bans: Counter,
    pub ip_list_failures: Counter,
    events: Family<Labels, Counter>,
    tls_handshake_failures: Family<Labels, Counter>,
    exporter_events: Family<Labels, Counter>,
    exporter_queue: Family<Labels, Gauge>,
    api_keys_nearing: Family<Labels, Gauge>,
    /// `store_errors_total{backend,op}` and `store_up{backend}` (PostgreSQL, `store.postgres`).
    store: crate::store::postgres::StoreMetrics,
    /// The anomaly detector's alerts by detector, dropped records, tracked entities, actions in force.
    pub anomaly: AnomalyMetrics,
}

/// `anomaly_alerts_total{detector}`, `anomaly_dropped_records_total`, `anomaly_entities`,
/// `anomaly_actions`, `anomaly_bot_marked`.
#[derive(Clone, Debug, Default)]
pub struct AnomalyMetrics {
    pub alerts: Family<Labels, Counter>,
    pub dropped: Counter,
    pub entities: Gauge,
    pub actions: Gauge,
    /// Client networks whose bot score is at or over the lowest of the routes' `bot.refuse_at` (in
    /// `monitor` mode too, where they are noted, not refused).
    pub bot_marked: Gauge,
}

/// Handles for one route: counters per status class and a latency histogram.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    upstream: Histogram,
}

impl RouteMetrics {
    /// One answered request: its status, total time, and the upstream's time to its response head.
    pub fn observe(&self, status: u16, seconds: f64, upstream: Option<std::time::Duration>) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
        if let Some(u) = upstream {
            self.upstream.observe(u.as_secs_f64());
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response head, by route",
            upstream_duration.clone(),
        );
        let rejections = Family::<Labels, Counter>::default();
        let upstream_healthy = Family::<Labels, Gauge>::default();
        let active_connections = Gauge::default();
        let rejected_connections = Family::<Labels, Counter>::default();
        let reloads = Counter::default();
        let reload_failures = Counter::default();
        let authn_failures = Family::<Labels, Counter>::default();
        registry.register("authn_failures", "Refused authentications by method and reason", authn_failures.clone());
        let authz_decisions = Family::<Labels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions by route, decision (allow, deny) and the rule that decided",
            authz_decisions.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register("rate_limited", "Requests refused by a rate limit, by route and limit", rate_limited.clone());
        let rate_limit_store_failures = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limit_store_failures",
            "Rate limit decisions Redis could not make in time, by limit and on_store_failure mode",
            rate_limit_store_failures.clone(),
        );
        let replay_store_failures = Family::<Labels, Counter>::default();
        registry.register(
            "replay_store_failures",
            "Signed-request nonces Redis could not record in time, by authenticator and mode",
            replay_store_failures.clone(),
        );
        let jwks_refreshes = Family::<Labels, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Fetches or re-reads of JWT signing keys by authenticator and result (ok, failed)",
            jwks_refreshes.clone(),
        );
        let inspect_detections = Family::<Labels, Counter>::default();
        registry.register(
            "inspect_detections",
            "Inspection rule matches by category and action (block, detect, log)",
            inspect_detections.clone(),
        );
        let anomaly = AnomalyMetrics::default();
        registry.register("anomaly_alerts", "Anomaly detector alerts by detector", anomaly.alerts.clone());
        registry.register(
            "anomaly_dropped_records",
            "Request records dropped because the anomaly detector's queue was full",
            anomaly.dropped.clone(),
        );
        registry.register("anomaly_entities", "Entities the anomaly detector tracks", anomaly.entities.clone());
        registry.register("anomaly_actions", "Anomaly responses in force", anomaly.actions.clone());
        registry.register(
            "anomaly_bot_marked",
            "Client networks marked for the routes' bot.refuse_at (scored at or over the lowest)",
            anomaly.bot_marked.clone(),
        );
        let (auto_bans, ip_list_failures) = (Counter::default(), Counter::default());
        registry.register("auto_bans", "Client addresses banned by auto_ban", auto_bans.clone());
        registry.register(
            "ip_list_failures",
            "IP list files refused on re-read (the lists in force stayed)",
            ip_list_failures.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register("security_events", "Security events emitted, by type", events.clone());
        let tls_handshake_failures = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes by listener and reason",
            tls_handshake_failures.clone(),
        );
        let exporter_events = Family::<Labels, Counter>::default();
        registry.register(
            "exporter_events",
            "Events handled by each event output, by result (sent, retried, dropped)",
            exporter_events.clone(),
        );
        let exporter_queue = Family::<Labels, Gauge>::default();
        registry.register(
            "exporter_queue_depth",
            "Events waiting in each event output's queue",
            exporter_queue.clone(),
        );
        let api_keys_nearing = Family::<Labels, Gauge>::default();
        registry.register(
            "api_keys_nearing_max_age",
            "Stored API keys of each authenticator within warn_before of their max_age",
            api_keys_nearing.clone(),
        );
        let store = crate::store::postgres::StoreMetrics::default();
        registry.register(
            "store_errors",
            "Failed exchanges with the shared store, by backend and operation",
            store.errors.clone(),
        );
        registry.register("store_up", "1 while the shared store answers, 0 during an outage", store.up.clone());
        registry.register("requests", "Requests by route and status class", requests.clone());
        registry.register("request_duration_seconds", "Request latency by route", duration.clone());
        registry.register("rejections", "Requests refused by the gateway, by problem type", rejections.clone());
        registry.register("upstream_healthy", "1 if the upstream target is in rotation", upstream_healthy.clone());
        registry.register("active_connections", "Open client connections", active_connections.clone());
        registry.register(
            "rejected_connections",
            "Connections refused by connection limits",
            rejected_connections.clone(),
        );
        registry.register("reloads", "Successful configuration reloads", reloads.clone());
        registry.register("reload_failures", "Refused configuration reloads", reload_failures.clone());
        Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            rejections,
            upstream_healthy,
            active_connections,
            rejected_connections,
            reloads,
            reload_failures,
            authn_failures,
            authz_decisions,
            rate_limited,
            rate_limit_store_failures,
            replay_store_failures,
            jwks_refreshes,
            inspect_detections,
            auto_bans,
            ip_list_failures,
            anomaly,
            events,
            tls_handshake_failures,
            exporter_events,
            exporter_queue,
            api_keys_nearing,
            store,
        }
    }

    /// The shared store's counters and gauge (handed to `store.postgres` when it is made).
    pub fn store(&self) -> &crate::store::postgres::StoreMetrics {
        &self.store
    }

    /// `portcullis_authz_decisions_total{route,decision,rule}`: each route's counters are made when it
    /// is compiled.
    pub fn authz_decisions(&self) -> &Family<Labels, Counter> {
        &self.authz_decisions
    }

    /// `portcullis_inspect_detections_total{category,action}`, counted by the routes' inspection stages.
    pub fn inspect_detections(&self) -> &Family<Labels, Counter> {
        &self.inspect_detections
    }

    /// `portcullis_rate_limit_store_failures_total{limit,mode}`.
    pub fn rate_limit_store_failures(&self, limit: &str, mode: &str) -> Counter {
        let labels = vec![("limit".into(), limit.into()), ("mode".into(), mode.into())];
        self.rate_limit_store_failures.get_or_create(&labels).clone()
    }

    /// `portcullis_replay_store_failures_total{authenticator,mode}`.
    pub fn replay_store_failures(&self, authenticator: &str, mode: &str) -> Counter {
        let labels = vec![("authenticator".into(), authenticator.into()), ("mode".into(), mode.into())];
        self.replay_store_failures.get_or_create(&labels).clone()
    }

    /// `portcullis_rate_limited_total{route,limit}`.
    pub fn rate_limited(&self, route: &str, limit: &str) -> Counter {
        self.rate_limited.get_or_create(&vec![("route".into(), route.into()), ("limit".into(), limit.into())]).clone()
    }

    /// Counters of one JWT authenticator's key refreshes: `(ok, failed)`.
    pub fn jwks_refreshes(&self, authenticator: &str) -> (Counter, Counter) {
        let get = |result: &str| {
            self.jwks_refreshes
                .get_or_create(&vec![("authenticator".into(), authenticator.into()), ("result".into(), result.into())])
                .clone()
        };
        (get("ok"), get("failed"))
    }

    /// `portcullis_security_events_total{type}`.
    pub fn events(&self, kind: &str) -> Counter {
        self.events.get_or_create(&vec![("type".into(), kind.into())]).clone()
    }

    /// `portcullis_tls_handshake_failures_total{listener,reason}`.
    pub fn tls_handshake_failure(&self, listener: &str, reason: &str) {
        self.tls_handshake_failures
            .get_or_create(&vec![("listener".into(), listener.into()), ("reason".into(), reason.into())])
            .inc();
    }

    /// `portcullis_exporter_events_total{exporter,result}` for `result` = sent, retried or dropped.
    pub fn exporter_events(&self, exporter: &str, result: &str) -> Counter {
        self.exporter_events
            .get_or_create(&vec![("exporter".into(), exporter.into()), ("result".into(), result.into())])
            .clone()
    }

    pub fn exporter_dropped(&self, exporter: &str) -> Counter {
        self.exporter_events(exporter, "dropped")
    }

    /// `portcullis_api_keys_nearing_max_age{authenticator}`.
    pub fn api_keys_nearing_max_age(&self, authenticator: &str) -> Gauge {
        self.api_keys_nearing.get_or_create(&vec![("authenticator".into(), authenticator.into())]).clone()
    }

    /// `portcullis_exporter_queue_depth{exporter}`.
    pub fn exporter_queue_depth(&self, exporter: &str) -> Gauge {
        self.exporter_queue.get_or_create(&vec![("exporter".into(), exporter.into())]).clone()
    }

    pub fn route(&self, route: &str) -> RouteMetrics {
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let by_class = classes.map(|c| {
            self.requests.get_or_create(&vec![("route".into(), route.into()), ("status".into(), c.into())]).clone()
        });
        let duration = self.duration.get_or_create(&vec![("route".into(), route.into())]).clone();
        let upstream = self.upstream_duration.get_or_create(&vec![("route".into(), route.into())]).clone();
        RouteMetrics { by_class, duration, upstream }
    }

    pub fn rejection(&self, slug: &str) -> Counter {
        self.rejections.get_or_create(&vec![("type".into(), slug.into())]).clone()
    }

    pub fn upstream_target(&self, upstream: &str, target: &str) -> Gauge {
        self.upstream_healthy
            .get_or_create(&vec![("upstream".into(), upstream.into()), ("target".into(), target.into())])
            .clone()
    }

    pub fn connection_refused(&self, reason: &str) {
        self.rejected_connections.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
