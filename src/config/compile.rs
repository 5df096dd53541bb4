//! Compiles a parsed [`FileConfig`] into the immutable [`Runtime`] the server runs on: addresses, CIDRs,
//! TLS configs, route tables and upstream pools are built once here, never per request. A reload
//! compiles a new `Runtime` beside the running one and reuses unchanged upstreams (their pools and
//! health state).

use super::file::{self, FileConfig};
use super::ConfigError;
use crate::authn::{Authenticators, Authn};
use crate::observe::metrics::Metrics;
use crate::pipeline::chain::{Chain, Stage};
use crate::pipeline::Route;
use crate::proxy::upstream::{Upstream, UpstreamTls};
use crate::respond::cors::Cors;
use crate::route::{HostPattern, Matcher, PathOptions, PathPattern, RouteTable};
use crate::validate::Limits;
use http::header::HeaderValue;
use http::Method;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use crate::pipeline::runtime::{AdminRt, Credentials, Lasting, ListenerRt, Runtime, ServerLimits};

/// Where requests carry credentials: `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key`, and
/// the header and query parameter of every `api_key` authenticator.
/// What logs never quote: `logging.redact`, and the header and query parameter of every credential.
fn redactor(cfg: &FileConfig) -> crate::observe::redact::Redactor {
    let c = credentials(&cfg.authenticators);
    let names = cfg.logging.redact.iter().map(String::as_str);
    crate::observe::redact::Redactor::new(
        names.chain(c.headers.iter().map(http::HeaderName::as_str)).chain(c.query_params.iter().map(String::as_str)),
    )
}

fn credentials(authenticators: &BTreeMap<String, crate::authn::AuthenticatorConfig>) -> Credentials {
    let mut c = Credentials::default();
    for name in ["authorization", "proxy-authorization", "cookie", "x-api-key"] {
        c.headers.push(http::HeaderName::from_static(name));
    }
    for k in authenticators.values().filter_map(|a| a.api_key.as_ref()) {
        if let Ok(h) = http::HeaderName::from_bytes(k.header.as_bytes()) {
            if !c.headers.contains(&h) {
                c.headers.push(h);
            }
        }
        c.query_params.extend(k.query_param.iter().cloned());
    }
    // A DPoP proof is a credential too (RFC 9449): never quoted, its `_` spellings never forwarded.
    let dpop = |a: &crate::authn::AuthenticatorConfig| {
        a.jwt.as_ref().is_some_and(|j| j.dpop.is_some()) || a.introspection.as_ref().is_some_and(|i| i.dpop.is_some())
    };
    if authenticators.values().any(dpop) {
        c.headers.push(http::HeaderName::from_static("dpop"));
    }
    c
}

/// A semantic error, located afterwards by finding `key: value` in the file text.
#[derive(Debug)]
pub struct CompileError {
    pub message: String,
    pub key: &'static str,
    pub value: String,
}

impl CompileError {
    fn new(key: &'static str, value: impl Into<String>, message: impl Into<String>) -> Self {
        CompileError { message: message.into(), key, value: value.into() }
    }

    /// Finds the first line holding `key:` followed by the value; falls back to line 1.
    pub fn locate(self, text: &str, file: &Path) -> ConfigError {
        let (mut line, mut column) = (1, 1);
        for (i, l) in text.lines().enumerate() {
            let Some(k) = l.find(&format!("{}:", self.key)) else { continue };
            let rest = &l[k..];
            if self.value.is_empty() || rest.contains(self.value.as_str()) {
                line = i + 1;
                column =
                    if self.value.is_empty() { k + 1 } else { k + rest.find(self.value.as_str()).unwrap_or(0) + 1 };
                break;
            }
        }
        ConfigError { file: file.to_owned(), line, column, message: self.message }
    }
}

type Result<T> = std::result::Result<T, CompileError>;

fn addr(key: &'static str, text: &str) -> Result<SocketAddr> {
    text.parse().map_err(|_| CompileError::new(key, text, format!("`{text}` is not an IP:port address")))
}

fn limits(l: &file::Limits) -> Result<ServerLimits> {
    let bad = |key: &'static str, msg: &str| Err(CompileError::new(key, "", format!("limits.{key}: {msg}")));
    if !(1024..=1024 * 1024).contains(&l.max_header_bytes.0) {
        return bad("max_header_bytes", "must be between 1KiB and 1MiB");
    }
    if !(256..=64 * 1024).contains(&l.max_url_bytes.0) {
        return bad("max_url_bytes", "must be between 256 and 64KiB");
    }
    if !(1..=1000).contains(&l.max_headers) {
        return bad("max_headers", "must be between 1 and 1000");
    }
    if l.max_connections == 0 || l.max_connections_per_ip == 0 || l.max_concurrent_streams == 0 {
        return bad("max_connections", "connection and stream limits must be at least 1");
    }
    if l.connection_ipv6_prefix > 128 {
        return bad("connection_ipv6_prefix", "must be between 0 and 128");
    }
    if l.header_read_timeout.0.is_zero() || l.idle_timeout.0.is_zero() {
        return bad("header_read_timeout", "timeouts must be positive");
    }
    Ok(ServerLimits {
        request: Limits {
            max_header_bytes: l.max_header_bytes.0 as usize,
            max_headers: l.max_headers,
            max_url_bytes: l.max_url_bytes.0 as usize,
            max_body_bytes: l.max_body_bytes.0,
        },
        header_read_timeout: l.header_read_timeout.0,
        idle_timeout: l.idle_timeout.0,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        connection_ipv6_prefix: l.connection_ipv6_prefix,
        max_concurrent_streams: l.max_concurrent_streams,
        shutdown_timeout: l.shutdown_timeout.0,
    })
}

fn listener(
    l: &file::Listener,
    authenticators: &BTreeMap<String, crate::authn::AuthenticatorConfig>,
    self_signed: &crate::tls::server::SelfSignedCache,
) -> Result<ListenerRt> {
    let address = addr("address", &l.address)?;
    let err = |m: String| CompileError::new("name", l.name.clone(), format!("listener `{}`: {m}", l.name));
    let plain_value = match l.plain_http {
        Some(file::PlainHttp::Redirect) => "redirect",
        Some(file::PlainHttp::Refuse) => "refuse",
        None => "",
    };
    let plain_err = |m: &str| CompileError::new("plain_http", plain_value, format!("listener `{}`: {m}", l.name));
    let (redirect_https_port, refuse_plain) = match (l.plain_http, l.redirect_https_port) {
        (None, port) => (port, false),
        (Some(file::PlainHttp::Redirect), Some(port)) => (Some(port), false),
        (Some(file::PlainHttp::Redirect), None) => {
            return Err(plain_err("`plain_http: redirect` needs `redirect_https_port`"));
        }
        (Some(file::PlainHttp::Refuse), None) => (None, true),
        (Some(file::PlainHttp::Refuse), Some(_)) => {
            return Err(plain_err("`plain_http: refuse` and `redirect_https_port` contradict each other"));
        }
    };
    if redirect_https_port == Some(0) {
        return Err(CompileError::new(
            "redirect_https_port",
            "0",
            format!("listener `{}`: port 0 cannot be redirected to", l.name),
        ));
    }
    let credentials = credentials(authenticators);
    let (tls, http2, hsts) = match &l.tls {
        Some(t) => {
            if l.redirect_https_port.is_some() {
                return Err(err("redirect_https_port is for plain listeners only".into()));
            }
            if l.plain_http.is_some() {
                return Err(plain_err("plain_http is for plain listeners only"));
            }
            let http2 = l.http2.unwrap_or(true);
            let config = crate::tls::server::server_config(t, http2, self_signed).map_err(err)?;
            let hsts = t.hsts.then(|| HeaderValue::from(t.hsts_max_age.0.as_secs())).map(|age| {
                let v = format!("max-age={}", age.to_str().unwrap_or("31536000"));
                HeaderValue::try_from(v).unwrap_or(HeaderValue::from_static("max-age=31536000"))
            });
            (Some(config), http2, hsts)
        }
        None => (None, l.http2.unwrap_or(false), None),
    };
    Ok(ListenerRt {
        name: l.name.clone(),
        address,
        tls,
        http2,
        redirect_https_port,
        refuse_plain,
        credentials,
        underscores_in_headers: l.underscores_in_headers,
        hsts,
    })
}

fn upstream_tls(name: &str, t: &file::UpstreamTls) -> Result<UpstreamTls> {
    let err = |m: String| CompileError::new("ca", t.ca.clone(), format!("upstream `{name}` tls: {m}"));
    let roots = crate::tls::load_roots(&t.ca).map_err(err)?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(crate::tls::load_certs(c).map_err(err)?, crate::tls::load_key(k).map_err(err)?)
            .map_err(|e| err(format!("client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(err("client_cert and client_key go together".into())),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = match &t.server_name {
        Some(n) => Some(
            rustls_pki_types::ServerName::try_from(n.clone())
                .map_err(|_| err(format!("`{n}` is not a server name")))?,
        ),
        None => None,
    };
    Ok(UpstreamTls { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
}

/// What routes name: compiled once per config, looked up by each route.
struct Named<'a> {
    upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    authenticators: &'a Authenticators,
    roles: &'a Arc<crate::authz::Roles>,
    policies: &'a crate::authz::Policies,
    limiters: &'a BTreeMap<String, Arc<crate::limit::Limiter>>,
    quotas: &'a BTreeMap<String, Arc<crate::limit::quota::Quota>>,
    openapi: &'a crate::validate::openapi::Documents,
    respond: &'a crate::respond::protect::Defaults,
    inspect: Option<&'a crate::inspect::InspectConfig>,
    redactor: &'a Arc<crate::observe::redact::Redactor>,
    /// The `tokenization:` section and the token vault, when the config has one.
    tokenization: Option<(&'a crate::tokenize::TokenizationConfig, Arc<crate::tokenize::vault::Vault>)>,
    /// The anomaly detector's slot, when it enforces (its stage goes into every route).
    anomaly: Option<&'a crate::anomaly::runtime::Slot>,
    /// The same slot in either mode: a route's `bot:` refuses in `enforce` and notes in `monitor`.
    bots: Option<&'a crate::anomaly::runtime::Slot>,
    /// Route ids in the anomaly detector's records.
    route_ids: &'a std::collections::HashMap<&'a str, u16>,
}

fn route(
    r: &file::Route,
    named: &Named<'_>,
    l: &ServerLimits,
    metrics: &Metrics,
    guards: &mut crate::guard::RouteGuards,
) -> Result<(Matcher, Arc<Route>)> {
    let Named {
        upstreams,
        authenticators,
        roles,
        policies,
        limiters,
        quotas,
        openapi,
        respond,
        inspect,
        redactor,
        ref tokenization,
        anomaly,
        bots,
        route_ids: _,
    } = *named;
    let err =
        |key: &'static str, value: &str, m: String| CompileError::new(key, value, format!("route `{}`: {m}", r.name));
    let upstream = upstreams
        .get(&r.upstream)
        .ok_or_else(|| err("upstream", &r.upstream, format!("upstream `{}` is not defined", r.upstream)))?
        .clone();
    let hosts = r
        .matcher
        .hosts
        .iter()
        .map(|h| HostPattern::parse(h).map_err(|m| err("hosts", h, m)))
        .collect::<Result<Vec<_>>>()?;
    let path = match &r.matcher.path {
        file::PathMatch { exact: Some(p), prefix: None, template: None } => {
            PathPattern::exact(p).map_err(|m| err("exact", p, m))?
        }
        file::PathMatch { exact: None, prefix: Some(p), template: None } => {
            PathPattern::prefix(p).map_err(|m| err("prefix", p, m))?
        }
        file::PathMatch { exact: None, prefix: None, template: Some(p) } => {
            PathPattern::template(p).map_err(|m| err("template", p, m))?
        }
        _ => return Err(err("path", "", "match.path needs exactly one of `exact`, `prefix` or `template`".into())),
    };
    let methods = r
        .matcher
        .methods
        .iter()
        .map(|m| match Method::from_bytes(m.as_bytes()) {
            Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => Ok(method),
            _ => Err(err("methods", m, format!("`{m}` is not an HTTP method (upper case)"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let cors = r.cors.as_ref().map(Cors::compile).transpose().map_err(|m| err("cors", "", m))?;
    // The route's own stages; `Chain::new` puts them in their fixed places.
    let mut stages = Vec::new();
    if let Some(f) = &r.ip_filter {
        let name = format!("route `{}` ip_filter", r.name);
        let filter = Arc::new(crate::guard::filter::IpFilter::compile(&name, f).map_err(|m| err("ip_filter", "", m))?);
        if filter.has_files() {
            guards.watched.push(filter.clone());
        }
        stages.push(Stage::IpFilter(filter));
    }
    let authn = Authn::compile(&r.auth, authenticators, metrics).map_err(|m| err("auth", "", m))?;
    let public = authn.is_public();
    let api_key_alone = authn.api_key_alone();
    if !public {
        stages.push(Stage::Authentication(authn));
        // Right after authentication (a stable sort keeps it behind): banned principals.
        stages.push(Stage::PrincipalBans(guards.bans.clone()));
    }
    if let Some(slot) = anomaly {
        // Address throttles before credentials are tried; behind the bans, the principal's bans,
        // throttles and challenges the anomaly detector put in force.
        stages.push(Stage::AnomalyAddresses(slot.clone()));
        if !public {
            stages.push(Stage::Anomaly(slot.clone()));
        }
    }
    if let Some(b) = r.bot {
        // (Its range and the `automation` detector are checked with the `anomaly:` section.)
        let Some(slot) = bots else {
            return Err(err("bot", "", "needs an `anomaly:` section: the bot score is the anomaly detector's".into()));
        };
        stages.push(Stage::Bot(slot.clone(), b.refuse_at as f32));
    }
    if r.sensitive && api_key_alone {
        return Err(err(
            "sensitive",
            "true",
            "a sensitive route cannot be entered with an API key alone: use a JWT, introspection, mutual TLS \
             or signed requests, or `auth: { all_of: [<api key>, <another method>] }`"
                .into(),
        ));
    }
    if r.authorize.is_none() && !public {
        return Err(err(
            "authorize",
            "",
            "the route authenticates callers but says nothing of what they may do: add `authorize: authenticated` \
             (any authenticated caller) or a requirement such as `authorize: { roles: [reader] }`"
                .into(),
        ));
    }
    if let Some(a) = &r.authorize {
        if public {
            return Err(err(
                "authorize",
                "",
                "`authorize` needs an `auth` method: a public route has no principal".into(),
            ));
        }
        let in_response = matches!(a, crate::authz::AuthorizeConfig::Rule(rule) if rule.owner_in_response.is_some());
        let reads_only = !methods.is_empty() && methods.iter().all(|m| *m == Method::GET || *m == Method::HEAD);
        if in_response && !reads_only {
            return Err(err(
                "owner_in_response",
                "",
                "owner_in_response judges the upstream's answer after it acted: limit the route to reads \
                 (`match: { methods: [GET] }`) and give writes a route of their own with an `owner` rule"
                    .into(),
            ));
        }
        let authz =
            crate::authz::Authz::compile(a, roles, &r.name, &path.param_names(), policies, metrics.authz_decisions())
                .map_err(|m| err("authorize", "", m))?;
        stages.push(Stage::Authorization(Box::new(authz)));
    }
    let mut by_place: BTreeMap<crate::exchange::Place, Vec<Arc<crate::limit::Limiter>>> = BTreeMap::new();
    for (i, name) in r.rate_limits.iter().enumerate() {
        let l = limiters.get(name).ok_or_else(|| {
            err("rate_limits", name, format!("rate limit `{name}` is not declared under `rate_limits`"))
        })?;
        if r.rate_limits[..i].contains(name) {
            return Err(err("rate_limits", name, format!("rate limit `{name}` is named twice")));
        }
        by_place.entry(l.place()).or_default().push(l.clone());
    }
    let mut quotas_at: BTreeMap<crate::exchange::Place, Vec<Arc<crate::limit::quota::Quota>>> = BTreeMap::new();
    for (i, name) in r.quotas.iter().enumerate() {
        let q = quotas
            .get(name)
            .ok_or_else(|| err("quotas", name, format!("quota `{name}` is not declared under `quotas`")))?;
        if r.quotas[..i].contains(name) {
            return Err(err("quotas", name, format!("quota `{name}` is named twice")));
        }
        quotas_at.entry(q.place()).or_default().push(q.clone());
    }
    if let Some(c) = &r.concurrency {
        let c = crate::limit::concurrency::Concurrency::compile(c).map_err(|m| err("concurrency", "", m))?;
        stages.push(Stage::Concurrency(c));
    }
    for (place, list) in by_place {
        let refused = list.iter().map(|l| metrics.rate_limited(&r.name, l.name())).collect();
        stages.push(Stage::Limits(crate::limit::Limits::new(list, place, refused)));
    }
    // After the rate limits of the same place: a request they refuse uses none of the quota.
    for (place, list) in quotas_at {
        stages.push(Stage::Quotas(crate::limit::quota::Quotas::new(list, place)));
    }
    let max_body_bytes = r.max_body_bytes.map_or(l.request.max_body_bytes, |b| b.0);
    let mut validation_document = None;
    if let Some(v) = &r.validate {
        let v = crate::validate::shape::Validate::compile(v, max_body_bytes, l.request.max_headers, openapi)
            .map_err(|m| err("validate", "", m))?;
        validation_document = v.document().cloned();
        stages.push(Stage::Validation(Box::new(v)));
    }
    if let Some(c) = crate::inspect::effective(r.inspect.as_ref(), inspect) {
        let engine = crate::inspect::Engine::compile(c).map_err(|m| err("inspect", "", m))?;
        let inspection =
            crate::inspect::Inspection::new(engine, metrics.inspect_detections().clone(), redactor.clone());
        stages.push(Stage::Inspection(Box::new(inspection)));
    }
    let mut protect =
        crate::respond::protect::Protect::compile(respond, r.respond.as_ref()).map_err(|m| err("respond", "", m))?;
    if let Some(doc) = r.validate.as_ref().and(validation_document.as_ref()) {
        protect.set_response_schema(Arc::new(OpenApiResponses(doc.clone())));
    }
    if let Some(fields) = &r.tokenize {
        let (top, vault) = match tokenization {
            Some((top, vault)) => (Some(*top), vault.clone()),
            None => (None, Arc::new(crate::tokenize::vault::Vault::memory(0))),
        };
        let t = Arc::new(
            crate::tokenize::Tokenizer::compile(&r.name, fields, top, vault).map_err(|m| err("tokenize", "", m))?,
        );
        let mut masks = Vec::with_capacity(t.fields().len());
        for f in t.fields() {
            let m = roles.mask_of_any(&f.detokenize_roles).map_err(|m| err("detokenize_roles", "", m))?;
            masks.push(m);
        }
        if t.rewrites_answers() {
            protect.set_detokenizer(Arc::new(Detokenizer { tokenizer: t.clone(), roles: roles.clone(), masks }));
        }
        stages.push(Stage::Tokenization(t));
    }
    let compiled = Route {
        name: r.name.as_str().into(),
        anomaly_id: named.route_ids.get(r.name.as_str()).copied().unwrap_or(crate::anomaly::NO_ROUTE),
        upstream,
        chain: Chain::new(stages),
        cors,
        max_body_bytes,
        matrix_params: r.matcher.matrix_params,
        metrics: Arc::new(metrics.route(&r.name)),
        protect,
    };
    let options = PathOptions {
        case_sensitive: r.matcher.case_sensitive,
        strict_trailing_slash: r.matcher.trailing_slash == file::TrailingSlash::Strict,
    };
    Ok((Matcher { hosts, path, methods, options }, Arc::new(compiled)))
}

/// What the routes requiring each policy set tell its schema: their names, path parameters and methods.
pub fn policy_uses(cfg: &FileConfig) -> BTreeMap<&str, crate::authz::cedar::Uses> {
    const STANDARD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    let mut uses: BTreeMap<&str, crate::authz::cedar::Uses> = BTreeMap::new();
    for r in &cfg.routes {
        let Some(a) = &r.authorize else { continue };
        for name in crate::authz::policy_names(a) {
            let u = uses.entry(name).or_default();
            u.routes.insert(r.name.clone());
            if let Some(t) = &r.matcher.path.template {
                if let Ok(p) = PathPattern::template(t) {
                    u.params.extend(p.param_names().into_iter().map(str::to_owned));
                }
            }
            if r.matcher.methods.is_empty() {
                u.methods.extend(STANDARD.iter().map(|m| (*m).to_owned()));
            } else {
                u.methods.extend(r.matcher.methods.iter().cloned());
            }
        }
    }
    uses
}

/// Reads, parses and validates every policy set (an error names the set and the policy).
fn policy_sets(cfg: &FileConfig) -> Result<crate::authz::Policies> {
    let uses = policy_uses(cfg);
    let mut sets = BTreeMap::new();
    for (name, p) in &cfg.policies {
        let u = uses.get(name.as_str()).cloned().unwrap_or_default();
        let set = crate::authz::cedar::PolicySet::compile(name, p, &u)
            .map_err(|m| CompileError::new("policies", name.clone(), m))?;
        sets.insert(name.clone(), Arc::new(set));
    }
    Ok(sets)
}

/// Compiles the config. `previous` lends unchanged upstreams to the new runtime.
/// `lasting` is the state that outlives reloads (metrics, what stages keep by name).
pub fn compile(cfg: &FileConfig, lasting: &Lasting, previous: Option<&Runtime>) -> Result<Runtime> {
    let metrics = &lasting.metrics;
    if cfg.listeners.is_empty() {
        return Err(CompileError::new("listeners", "", "at least one listener is required"));
    }
    if let Some(w) = cfg.workers {
        if !(1..=1024).contains(&w) {
            return Err(CompileError::new("workers", w.to_string(), "workers must be between 1 and 1024"));
        }
    }
    let mut names = std::collections::HashSet::new();
    for l in &cfg.listeners {
        if !names.insert(l.name.as_str()) {
            return Err(CompileError::new("name", l.name.clone(), format!("listener name `{}` is used twice", l.name)));
        }
    }
    let listeners = cfg
        .listeners
        .iter()
        .map(|l| listener(l, &cfg.authenticators, &lasting.self_signed))
        .collect::<Result<Vec<_>>>()?;
    let limits = limits(&cfg.limits)?;
    let trusted_proxies = cfg
        .trusted_proxies
        .iter()
        .map(|c| {
            c.parse::<IpNet>().or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                CompileError::new("trusted_proxies", c.clone(), format!("`{c}` is not a CIDR or IP address"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut upstreams = BTreeMap::new();
    for (name, u) in &cfg.upstreams {
        let reused = previous.and_then(|p| p.upstreams.get(name)).filter(|p| p.source == *u);
        let up = match reused {
            Some(p) => p.clone(),
            None => {
                let tls = u.tls.as_ref().map(|t| upstream_tls(name, t)).transpose()?;
                if let Some(hc) = &u.health_check {
                    if !hc.path.starts_with('/') || hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                        return Err(CompileError::new("path", hc.path.clone(), format!("upstream `{name}`: health_check needs a path starting with / and thresholds of at least 1")));
                    }
                }
                Arc::new(Upstream::new(name, u, tls, metrics).map_err(|m| CompileError::new("address", "", m))?)
            }
        };
        upstreams.insert(name.clone(), up);
    }
    let fleet = cfg
        .redis
        .as_ref()
        .map(|r| lasting.fleet.fleet(r).map_err(|m| CompileError::new("redis", "", m)))
        .transpose()?;
    let postgres = cfg
        .store
        .as_ref()
        .and_then(|s| s.postgres.as_ref())
        .map(|p| lasting.postgres.get(p, metrics.store()).map_err(|m| CompileError::new("postgres", "", m)))
        .transpose()?;
    let revoked = lasting
        .authn
        .revoked
        .list(cfg.store.as_ref().map(|s| s.sqlite.as_path()), fleet.as_ref())
        .map_err(|m| CompileError::new("sqlite", "", m))?;
    let shared = crate::authn::Context {
        kept: &lasting.authn,
        fleet: fleet.as_ref(),
        metrics,
        revoked,
        events: lasting.events.handle(),
        normalize_path,
        postgres: postgres.as_ref(),
    };
    let authenticators = Authenticators::compile(&cfg.authenticators, previous.map(|p| &p.authenticators), &shared)
        .map_err(|(name, m)| CompileError::new("", name.clone(), format!("authenticator `{name}`: {m}")))?;
    let roles = Arc::new(
        crate::authz::Roles::compile(&cfg.roles, &cfg.principals).map_err(|m| CompileError::new("roles", "", m))?,
    );
    let policies = policy_sets(cfg)?;
    let limiters = cfg
        .rate_limits
        .iter()
        .map(|(name, c)| {
            crate::limit::Limiter::compile(name, c, &lasting.limits, fleet.as_ref(), metrics)
                .map(|l| (name.clone(), Arc::new(l)))
                .map_err(|m| CompileError::new("rate_limits", name.clone(), m))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let store = cfg.store.as_ref().map(|s| &s.sqlite);
    let quotas = cfg
        .quotas
        .iter()
        .map(|(name, c)| {
            crate::limit::quota::Quota::compile(name, c, store, &lasting.limits.quotas, fleet.as_ref(), metrics)
                .map(|q| (name.clone(), Arc::new(q)))
                .map_err(|m| CompileError::new("quotas", name.clone(), m))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let openapi = crate::validate::openapi::compile_all(&cfg.openapi)
        .map_err(|(name, m)| CompileError::new("openapi", name, m))?;
    let respond = crate::respond::protect::Defaults::compile(cfg.respond.as_ref())
        .map_err(|m| CompileError::new("respond", "", format!("respond: {m}")))?;
    let redactor = Arc::new(redactor(cfg));
    let tokenization = match &cfg.tokenization {
        Some(t) => {
            let path = cfg.store.as_ref().map(|s| s.sqlite.as_path());
            let vault = lasting
                .tokenize
                .vault(path, t.vault_max_entries)
                .map_err(|m| CompileError::new("tokenization", "", m))?;
            Some((t, vault))
        }
        None => None,
    };
    let anomaly = cfg
        .anomaly
        .as_ref()
        .map(|c| {
            let policy = crate::anomaly::runtime::Policy::compile(c, cfg.store.as_ref().map(|s| s.sqlite.as_path()))
                .map_err(|m| CompileError::new("anomaly", "", format!("anomaly: {m}")))?
                .with_bots(cfg.routes.iter().filter_map(|r| r.bot.map(|b| (r.name.as_str(), b.refuse_at))))
                .map_err(|m| CompileError::new("bot", "", m))?;
            let routes = cfg
                .routes
                .iter()
                .map(|r| (lasting.anomaly.route_id(&r.name), Arc::<str>::from(r.name.as_str())))
                .collect();
            // With `share_bans`, the detector's throttles, challenges and principal bans are the
            // fleet's too (`anomaly::fleet`).
            let shared = fleet.clone().filter(|_| cfg.redis.as_ref().is_some_and(|r| r.share_bans));
            Ok::<_, CompileError>(crate::anomaly::runtime::AnomalyRt::new(policy, routes, shared))
        })
        .transpose()?;
    let route_ids: std::collections::HashMap<&str, u16> =
        cfg.routes.iter().map(|r| (r.name.as_str(), lasting.anomaly.route_id(&r.name))).collect();
    let named = Named {
        upstreams: &upstreams,
        authenticators: &authenticators,
        roles: &roles,
        policies: &policies,
        limiters: &limiters,
        quotas: &quotas,
        openapi: &openapi,
        respond: &respond,
        inspect: cfg.inspect.as_ref(),
        redactor: &redactor,
        tokenization,
        anomaly: anomaly.as_ref().filter(|a| a.policy.enforces()).map(|a| &a.slot),
        bots: anomaly.as_ref().map(|a| &a.slot),
        route_ids: &route_ids,
    };
    let bans = lasting
        .guard
        .bans(cfg.store.as_ref(), fleet.as_ref().filter(|_| cfg.redis.as_ref().is_some_and(|r| r.share_bans)))
        .map_err(|m| CompileError::new("sqlite", "", m))?;
    bans.set_events(lasting.events.handle());
    let mut guards = crate::guard::RouteGuards { bans, watched: Vec::new() };
    crate::tokenize::check_names(cfg.routes.iter().filter_map(|r| Some((r.name.as_str(), r.tokenize.as_deref()?))))
        .map_err(|m| CompileError::new("tokenize", "", m))?;
    let mut route_names = std::collections::HashSet::new();
    let mut entries = Vec::new();
    for r in &cfg.routes {
        if !route_names.insert(r.name.as_str()) {
            return Err(CompileError::new("name", r.name.clone(), format!("route name `{}` is used twice", r.name)));
        }
        entries.push(route(r, &named, &limits, metrics, &mut guards)?);
    }
    let guard = crate::guard::Guard::compile(
        cfg.ip_filter.as_ref(),
        cfg.auto_ban.as_ref(),
        guards,
        &lasting.guard,
        (metrics.auto_bans.clone(), metrics.ip_list_failures.clone()),
    )
    .map_err(|m| {
        let key = if m.starts_with("auto_ban") { "auto_ban" } else { "ip_filter" };
        CompileError::new(key, "", m)
    })?;
    let admin = match &cfg.admin {
        None => None,
        Some(a) => {
            let address = addr("address", &a.address)?;
            if !address.ip().is_loopback() && (a.token.is_none() || a.tls.is_none()) {
                return Err(CompileError::new(
                    "address",
                    a.address.clone(),
                    "admin: a non-loopback admin address needs `tls` (the admin API's tokens and sessions \
                     must not cross the network in clear) and a `token` (for /metrics)",
                ));
            }
            let tls = a
                .tls
                .as_ref()
                .map(|t| crate::tls::server::server_config(t, false, &lasting.self_signed))
                .transpose()
                .map_err(|m| CompileError::new("tls", "", format!("admin: {m}")))?;
            let certificates = match &a.client_certificates {
                None => None,
                Some(c) => {
                    if a.tls.as_ref().is_none_or(|t| t.client_auth.is_none()) {
                        return Err(CompileError::new(
                            "client_certificates",
                            "",
                            "admin: `client_certificates` needs `tls.client_auth` (a CA to verify them)",
                        ));
                    }
                    if let Some((id, role)) =
                        c.roles.iter().find(|(_, r)| !matches!(r.as_str(), "viewer" | "operator" | "admin"))
                    {
                        return Err(CompileError::new(
                            "roles",
                            role.clone(),
                            format!("admin: `{id}`: `{role}` is not a role (viewer, operator or admin)"),
                        ));
                    }
                    let mtls = crate::authn::mtls::MtlsConfig {
                        principal_from: c.principal_from,
                        roles: BTreeMap::new(),
                        default_roles: Vec::new(),
                        allowed_ids: Some(c.roles.keys().cloned().collect()),
                    };
                    let auth = crate::authn::mtls::MtlsAuth::new("admin", &mtls)
                        .map_err(|m| CompileError::new("client_certificates", "", m))?;
                    // Identities compare as `identity()` gives them: DNS names in lowercase.
                    let roles = c
                        .roles
                        .iter()
                        .map(|(k, v)| match c.principal_from {
                            crate::authn::mtls::PrincipalFrom::SanDns => (k.to_ascii_lowercase(), v.clone()),
                            _ => (k.clone(), v.clone()),
                        })
                        .collect();
                    Some((Arc::new(auth), roles))
                }
            };
            Some(AdminRt {
                address,
                token: a.token.clone(),
                store: cfg.store.clone(),
                postgres: postgres.clone(),
                tls,
                certificates,
            })
        }
    };
    let demo_upstream = cfg.demo_upstream.as_ref().map(|d| addr("address", &d.address)).transpose()?;
    if cfg.logging.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
        return Err(CompileError::new(
            "level",
            cfg.logging.level.clone(),
            "logging.level is not a valid filter (try `info`)",
        ));
    }
    let privacy = crate::observe::privacy::Privacy::new(
        cfg.logging.client_ip,
        cfg.logging.hash_key.as_ref().map_or(&lasting.log_key.0[..], |k| k.expose().as_bytes()),
    );
    let audit = lasting.audit.trail(cfg.audit.as_ref(), metrics).map_err(|e| CompileError::new("audit", "", e))?;
    let audit_security = cfg.audit.as_ref().is_some_and(|a| a.security_events);
    let (events, events_activation) = lasting
        .events
        .emitter(cfg.events.as_ref(), audit, audit_security, &privacy, metrics)
        .map_err(|f| CompileError::new(f.key, f.value, f.message))?;
    let tracer = lasting
        .traces
        .tracer(cfg.traces.as_ref(), &privacy, metrics)
        .map_err(|e| CompileError::new("traces", "", e))?;
    Ok(Runtime {
        listeners,
        limits,
        trusted_proxies,
        client_ip_header: match cfg.client_ip_header {
            file::ClientIpHeader::XForwardedFor => crate::proxy::client_ip::ChainHeader::XForwardedFor,
            file::ClientIpHeader::Forwarded => crate::proxy::client_ip::ChainHeader::Forwarded,
        },
        routes: RouteTable::new(entries),
        upstreams,
        authenticators,
        access_log: cfg.logging.access_log,
        log_level: cfg.logging.level.clone(),
        unmatched: Arc::new(metrics.route("-")),
        metrics: metrics.clone(),
        admin,
        demo_upstream,
        workers: cfg.workers,
        guard: Arc::new(guard),
        security_headers: respond.headers,
        events,
        events_activation,
        privacy: Arc::new(privacy),
        tracer,
        anomaly,
    })
}

impl Runtime {
    /// Starts what runs beside the runtime (health checks of new upstreams). Needs a tokio runtime.
    pub fn start(&self, lasting: &Lasting) {
        if let Some(a) = &self.anomaly {
            a.activate(&lasting.anomaly, self.guard.bans().clone(), self.events.clone(), &lasting.metrics.anomaly);
        }
        self.events_activation.activate();
        self.authenticators.start();
        self.guard.start();
        for (name, up) in &self.upstreams {
            if let Some(hc) = &up.source.health_check {
                if up.start_once() {
                    tracing::debug!(upstream = name.as_str(), "starting health checks");
                    crate::proxy::health::spawn(up, hc.clone(), self.events.clone());
                }
            }
        }
    }

    /// Refuses a reload that would need new sockets or threads.
    pub fn reloadable_from(&self, old: &Runtime) -> std::result::Result<(), String> {
        let addrs =
            |r: &Runtime| r.listeners.iter().map(|l| (l.name.clone(), l.address, l.tls.is_some())).collect::<Vec<_>>();
        if addrs(self) != addrs(old) {
            return Err("listener names, addresses or TLS on/off changed; these need a restart".into());
        }
        if self.admin.as_ref().map(|a| a.address) != old.admin.as_ref().map(|a| a.address) {
            return Err("the admin address changed; this needs a restart".into());
        }
        if self.workers != old.workers || self.demo_upstream != old.demo_upstream {
            return Err("workers or demo_upstream changed; these need a restart".into());
        }
        Ok(())
    }

    /// The compiled route table as `check` prints it: for each host named in a route (and for any other
    /// host), the routes a request can reach, in the order `find` ranks them for that host.
    pub fn describe_routes(&self) -> String {
        let mut groups: Vec<(String, Option<String>)> = Vec::new();
        for (m, _) in self.routes.iter() {
            for h in &m.hosts {
                let shown = match h {
                    HostPattern::Exact(e) => e.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                };
                if !groups.iter().any(|(_, g)| g.as_deref() == Some(shown.as_str())) {
                    // `*.example.com` is not a valid host, but as a stand-in it matches exactly the
                    // patterns that match every name under it.
                    groups.push((format!("host {shown}"), Some(shown)));
                }
            }
        }
        groups.push((if groups.is_empty() { "any host" } else { "any other host" }.into(), None));
        let mut out = String::new();
        for (title, host) in &groups {
            out.push_str(&format!("routes for {title}, most specific first:\n"));
            out.push_str(&self.describe_order(host.as_deref()));
        }
        out.push_str("chains (request side, proxy, response side):\n");
        for (_, r) in self.routes.iter() {
            let hsts = self.listeners.iter().any(|l| l.hsts.is_some());
            out.push_str(&format!("  {}: {}\n", r.name, r.describe_chain(hsts)));
        }
        out
    }

    fn describe_order(&self, host: Option<&str>) -> String {
        let mut out = String::from("order  route                 hosts                 path                           methods        upstream     auth\n");
        for r in self.route_rows(host) {
            out.push_str(&format!(
                "{:<6} {:<21} {:<21} {:<30} {:<14} {:<12} {}\n",
                r.order,
                r.name,
                if r.hosts.is_empty() { "*".to_string() } else { r.hosts.join(",") },
                r.path,
                if r.methods.is_empty() { "any".to_string() } else { r.methods.join(",") },
                r.upstream,
                r.auth
            ));
        }
        out
    }

    /// The routes in the order they are tried for `host` (`None`: a host no route names), with each
    /// route's effective chain: what `check` prints and the admin API's `GET /admin/v1/routes` shows.
    pub fn route_rows(&self, host: Option<&str>) -> Vec<RouteRow> {
        let hsts = self.listeners.iter().any(|l| l.hsts.is_some());
        let mut rows = Vec::new();
        for (i, (m, r)) in self.routes.order_for(host).into_iter().enumerate() {
            let hosts = m
                .hosts
                .iter()
                .map(|h| match h {
                    HostPattern::Exact(e) => e.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                })
                .collect();
            let path = match &m.path {
                PathPattern::Exact(p) => format!("= {p}"),
                PathPattern::Prefix(p) => format!("{p}*"),
                PathPattern::Template(segs) => segs
                    .iter()
                    .map(|s| match s {
                        crate::route::Segment::Literal(l) => format!("/{l}"),
                        crate::route::Segment::Param(p) => format!("/{{{p}}}"),
                    })
                    .collect(),
            };
            rows.push(RouteRow {
                order: i + 1,
                name: r.name.to_string(),
                hosts,
                path,
                methods: m.methods.iter().map(|m| m.as_str().to_owned()).collect(),
                upstream: r.upstream.name.to_string(),
                auth: r
                    .chain
                    .stages()
                    .iter()
                    .find(|s| s.place() == crate::exchange::Place::Authentication)
                    .map_or_else(|| "none".into(), |s| s.describe()),
                chain: r.describe_chain(hsts),
            });
        }
        rows
    }
}

/// One route as `check` and the admin API show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RouteRow {
    /// Its place in the matching order (1 is tried first).
    pub order: usize,
    pub name: String,
    /// Host patterns (empty: any host).
    pub hosts: Vec<String>,
    /// `= /exact`, `/prefix*` or a template such as `/users/{id}`.
    pub path: String,
    /// Empty: any method.
    pub methods: Vec<String>,
    pub upstream: String,
    pub auth: String,
    /// The effective chain: request side, proxy, response side.
    pub chain: String,
}

/// Response schema filtering (place 14) over a route's OpenAPI document: the response side asks by the
/// operation validation matched.
#[derive(Debug)]
struct OpenApiResponses(Arc<crate::validate::openapi::Document>);

impl crate::respond::protect::ResponseSchema for OpenApiResponses {
    fn filters(&self, operation: usize, status: u16) -> bool {
        self.0.filters_response(operation, status)
    }
    fn filter(&self, operation: usize, status: u16, body: &mut serde_json::Value) -> bool {
        self.0.filter_response(operation, status, body)
    }
}

/// Routing's path normalisation, for DPoP's `htu` comparison (authentication does not import validation).
fn normalize_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    crate::validate::path::normalize(path).ok()
}

/// Detokenization (place `detokenization`) of a route's answers: the fields' originals for principals
/// holding one of their `detokenize_roles` (with what those roles include).
#[derive(Debug)]
struct Detokenizer {
    tokenizer: Arc<crate::tokenize::Tokenizer>,
    roles: Arc<crate::authz::Roles>,
    /// Per field, the mask of its `detokenize_roles`.
    masks: Vec<u128>,
}

impl crate::respond::protect::Detokenize for Detokenizer {
    fn detokenize(&self, principal: Option<&crate::exchange::Principal>, body: &mut serde_json::Value) -> bool {
        let held = principal.map_or(0, |p| self.roles.of(p));
        self.tokenizer.detokenize(body, |i| self.masks.get(i).is_some_and(|m| held & m != 0))
    }

    fn pointers(&self) -> Vec<String> {
        self.tokenizer.pointers()
    }

    fn describe(&self) -> String {
        self.tokenizer.pointers().join(", ")
    }
}
