//! The probes. Each sends through [`Client`] (one origin, paced, bounded) and turns what it sees into
//! [`Finding`]s with redacted evidence. Order: discovery (lists and creates as each principal), missing
//! authentication, object-level authorization, property-level authorization, function-level
//! authorization, injection and error verbosity, SSRF, headers/CORS/methods, debug endpoints, the JWT
//! catalogue, TLS, and the rate-limit burst last (so its 429s cannot disturb the others).

use super::http::{Client, Miss, Req, Resp};
use super::jwt;
use super::report::{Evidence, Finding, Owasp, Redactor, Severity};
use super::spec::{default_text, sample_path, Api, In, Op, Param, SEGMENT};
use http::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A test principal from `--as NAME=KIND:VALUE`.
#[derive(Clone)]
pub struct Principal {
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// The credential itself (for redaction and the JWT catalogue).
    pub secret: String,
    /// May reach administrative operations (`--admin NAME`).
    pub admin: bool,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal").field("name", &self.name).field("admin", &self.admin).finish_non_exhaustive()
    }
}

impl Principal {
    /// `KIND:VALUE` with KIND `bearer`, `apikey`, `header` (`header:NAME:VALUE`) or `cookie`
    /// (`cookie:NAME=VALUE`); a VALUE `env:VAR` is read from the environment variable VAR.
    pub fn parse(spec: &str, api: &Api, admins: &[String]) -> Result<Principal, String> {
        let (name, cred) =
            spec.split_once('=').ok_or("--as takes NAME=KIND:VALUE (bearer:, apikey:, header:, cookie:)")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("--as: `{name}` is not a principal name (letters, digits, - and _)"));
        }
        let (kind, value) = cred.split_once(':').ok_or_else(|| format!("--as {name}: give KIND:VALUE"))?;
        let read = |v: &str| -> Result<String, String> {
            match v.strip_prefix("env:") {
                Some(var) => {
                    std::env::var(var).map_err(|_| format!("--as {name}: environment variable {var} is not set"))
                }
                None => Ok(v.to_owned()),
            }
        };
        let mut p = Principal {
            name: name.to_owned(),
            headers: Vec::new(),
            query: Vec::new(),
            secret: String::new(),
            admin: admins.iter().any(|a| a == name),
        };
        match kind.to_ascii_lowercase().as_str() {
            "bearer" => {
                p.secret = read(value)?;
                p.headers.push(("authorization".into(), format!("Bearer {}", p.secret)));
            }
            "apikey" => {
                p.secret = read(value)?;
                match api.schemes.api_keys.first() {
                    Some((In::Query, n)) => p.query.push((n.clone(), p.secret.clone())),
                    Some((In::Cookie, n)) => p.headers.push(("cookie".into(), format!("{n}={}", p.secret))),
                    Some((_, n)) => p.headers.push((n.clone(), p.secret.clone())),
                    None => p.headers.push(("x-api-key".into(), p.secret.clone())),
                }
            }
            "header" => {
                let (h, v) = value.split_once(':').ok_or_else(|| format!("--as {name}: header:NAME:VALUE"))?;
                p.secret = read(v.trim_start())?;
                p.headers.push((h.to_owned(), p.secret.clone()));
            }
            "cookie" => {
                let c = read(value)?;
                p.secret = c.split_once('=').map_or(c.clone(), |(_, v)| v.to_owned());
                p.headers.push(("cookie".into(), c));
            }
            other => {
                return Err(format!("--as {name}: unknown credential kind `{other}` (bearer, apikey, header, cookie)"))
            }
        }
        if p.secret.is_empty() {
            return Err(format!("--as {name}: empty credential"));
        }
        Ok(p)
    }

    /// The secret's bearer token when it is a JWT.
    pub fn jwt(&self) -> Option<&str> {
        let token = self.headers.iter().find_map(|(k, v)| {
            let scheme = v.get(..7)?;
            (k.eq_ignore_ascii_case("authorization") && scheme.eq_ignore_ascii_case("bearer ")).then(|| v[7..].trim())
        })?;
        jwt::decode(token).is_some().then_some(token)
    }
}

/// A canary HTTP listener on the scan host's loopback: SSRF payloads point at it, and a request to its
/// secret path proves the API fetched a URL it was given.
pub struct Canary {
    pub port: u16,
    pub token: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Canary {
    pub async fn start() -> Option<Canary> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let port = listener.local_addr().ok()?.port();
        let mut raw = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, t) = (hits.clone(), token.clone());
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                let (h, t) = (h.clone(), t.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(0);
                    if String::from_utf8_lossy(&buf[..n]).contains(&format!("/pcs-ssrf-{t}")) {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    let body = format!("pcs-ssrf-canary-{t}");
                    let _ = s
                        .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                });
            }
        });
        Some(Canary { port, token, hits, task })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/pcs-ssrf-{}", self.port, self.token)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Marker text sent in injection probes: harmless, but it breaks naive SQL and HTML.
const CANARY: &str = "pcs'\"<pcsx>";

/// Scan-wide options for the probes.
pub struct Options {
    pub burst: usize,
    pub jwt_public_key: Option<Vec<u8>>,
}

pub struct Scan<'a> {
    pub api: &'a Api,
    pub client: Client,
    pub principals: Vec<Principal>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    redactor: Redactor,
    /// Object ids seen in each principal's answers, by principal index: (key, value).
    ids: Vec<BTreeSet<(String, String)>>,
    /// 2xx JSON answers seen as a principal: (op index, status, body, evidence) for API3 checks.
    seen: Vec<(usize, u16, Value, Evidence)>,
    opts: Options,
    reported: BTreeSet<(String, String)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<'a> Scan<'a> {
    pub fn new(api: &'a Api, client: Client, principals: Vec<Principal>, opts: Options) -> Scan<'a> {
        let redactor = Redactor::new(principals.iter().map(|p| p.secret.clone()).collect());
        let ids = vec![BTreeSet::new(); principals.len()];
        Scan {
            api,
            client,
            principals,
            findings: Vec::new(),
            notes: Vec::new(),
            redactor,
            ids,
            seen: Vec::new(),
            opts,
            reported: BTreeSet::new(),
        }
    }

    fn evidence(&self, req: &Req, resp: Option<&Resp>) -> Evidence {
        let r = &self.redactor;
        let mut request = format!("{} {}\n", req.method, r.text(&self.client.url(&req.path)));
        for (k, v) in &req.headers {
            request.push_str(&r.header(k, v));
            request.push('\n');
        }
        if let Some(b) = &req.body {
            request.push('\n');
            request.push_str(&truncate(&r.text(&String::from_utf8_lossy(b))));
        }
        let response = match resp {
            None => "(no answer)".to_owned(),
            Some(resp) => {
                let mut s = format!("{}\n", resp.status);
                for (k, v) in &resp.headers {
                    s.push_str(&r.header(k.as_str(), &String::from_utf8_lossy(v.as_bytes())));
                    s.push('\n');
                }
                s.push('\n');
                s.push_str(&truncate(&r.text(&resp.text())));
                s
            }
        };
        Evidence { request, response }
    }

    #[allow(clippy::too_many_arguments)]
    fn find(
        &mut self,
        rule: &'static str,
        owasp: Owasp,
        severity: Severity,
        target: String,
        title: String,
        detail: String,
        fix: &'static str,
        evidence: Vec<Evidence>,
    ) {
        // One finding per rule and target.
        if !self.reported.insert((rule.to_owned(), target.clone())) {
            return;
        }
        self.findings.push(Finding {
            rule,
            owasp,
            severity,
            target,
            title,
            detail: self.redactor.text(&detail),
            fix,
            evidence,
        });
    }

    async fn send(&mut self, req: &Req) -> Option<Resp> {
        match self.client.send(req).await {
            Ok(r) => Some(r),
            Err(Miss::Failed(m)) => {
                if self.notes.len() < 50 {
                    self.notes.push(format!("{} {}: {m}", req.method, self.redactor.text(&req.path)));
                }
                None
            }
            Err(_) => None,
        }
    }

    /// The request for `op` as `who` (None: no credentials), path parameters from `ids`.
    fn request(
        &self,
        op: &Op,
        who: Option<usize>,
        path_value: &dyn Fn(&Param) -> Option<String>,
        probe: &'static str,
    ) -> Req {
        let mut path = sample_path(op, path_value);
        let mut query: Vec<(String, String)> = op
            .params
            .iter()
            .filter(|p| p.location == In::Query && p.required)
            .map(|p| (p.name.clone(), default_text(p)))
            .collect();
        let mut req = Req::new(op.method.clone(), String::new(), probe);
        for p in op.params.iter().filter(|p| p.required && p.location == In::Header) {
            req = req.header(&p.name, &default_text(p));
        }
        if let Some(i) = who {
            let pr = &self.principals[i];
            req = req.headers(&pr.headers);
            query.extend(pr.query.iter().cloned());
        }
        push_query(&mut path, &query);
        req.path = path;
        if let Some(schema) = &op.body {
            req = req.json(&self.api.sample(schema, true));
        }
        req
    }

    pub async fn run(&mut self) {
        // DELETE is never sent (not even without credentials: a vulnerable API would delete an object).
        let ops: Vec<Op> = self.api.ops.iter().filter(|o| o.method != Method::DELETE).cloned().collect();
        self.discover(&ops).await;
        self.no_credentials(&ops).await;
        self.bola(&ops).await;
        self.exposure(&ops);
        self.mass_assignment(&ops).await;
        self.function_level(&ops).await;
        self.injection(&ops).await;
        self.ssrf(&ops).await;
        self.headers_cors_methods(&ops).await;
        self.debug_endpoints(&ops).await;
        self.jwt_catalogue(&ops).await;
        self.tls().await;
        self.rate_limit(&ops).await;
    }

    fn remember(&mut self, who: usize, op_index: usize, req: &Req, resp: &Resp) {
        if !resp.ok() {
            return;
        }
        let Some(body) = resp.json() else { return };
        collect_ids(&body, &mut self.ids[who], 0);
        if self.seen.len() < 200 {
            let ev = self.evidence(req, Some(resp));
            self.seen.push((op_index, resp.status.as_u16(), body, ev));
        }
    }

    /// Lists and creates (operations without path parameters) as each principal: object ids for the
    /// authorization probes, answers for the exposure check; and whether each credential works at all.
    async fn discover(&mut self, ops: &[Op]) {
        for who in 0..self.principals.len() {
            for (i, op) in ops.iter().enumerate() {
                if op.has_path_params() || op.admin || !matches!(op.method, Method::GET | Method::POST) {
                    continue;
                }
                let req = self.request(op, Some(who), &|_| None, "discover");
                let Some(resp) = self.send(&req).await else { continue };
                self.remember(who, i, &req, &resp);
                if op.secured && matches!(resp.status.as_u16(), 401) {
                    let note =
                        format!("the credential of `{}` was refused (401) on {}", self.principals[who].name, op.name());
                    self.notes.push(note);
                }
            }
            // Reading one object of each kind as its owner also feeds the exposure check.
            for (i, op) in ops.iter().enumerate() {
                if !op.has_path_params() || op.method != Method::GET || op.admin {
                    continue;
                }
                let Some(value) = self.id_for(who, op) else { continue };
                let req = self.request(op, Some(who), &|_| Some(value.clone()), "discover");
                if let Some(resp) = self.send(&req).await {
                    self.remember(who, i, &req, &resp);
                }
            }
        }
    }

    /// An id of `who`'s for the (first) path parameter of `op`.
    fn id_for(&self, who: usize, op: &Op) -> Option<String> {
        let param = op.path_params().last()?;
        let name = param.name.to_ascii_lowercase();
        let ids = &self.ids[who];
        let pick = |pred: &dyn Fn(&str) -> bool| {
            ids.iter().find(|(k, _)| pred(&k.to_ascii_lowercase())).map(|(_, v)| v.clone())
        };
        pick(&|k| k == name)
            .or_else(|| pick(&|k| k == "id"))
            .or_else(|| pick(&|k| k == "slug" || k == "uuid"))
            .or_else(|| pick(&|k| name.ends_with("id") && k.ends_with("id")))
    }

    async fn no_credentials(&mut self, ops: &[Op]) {
        for op in ops.iter().filter(|o| o.secured && o.method != Method::DELETE) {
            let id = self.id_for(0, op).filter(|_| !self.principals.is_empty());
            let req = self.request(op, None, &|_| id.clone(), "no-credentials");
            let Some(resp) = self.send(&req).await else { continue };
            if resp.ok() {
                let ev = self.evidence(&req, Some(&resp));
                self.find(
                    "live.no-auth",
                    Owasp::API2,
                    Severity::High,
                    op.name(),
                    "Secured operation answers without credentials".into(),
                    format!("The document requires a security scheme for {}, and it answered {} to a request with no credential.", op.name(), resp.status),
                    "Require authentication on this operation (in the API or at the gateway: `auth:` on the route).",
                    vec![ev],
                );
            }
        }
    }

    async fn bola(&mut self, ops: &[Op]) {
        if self.principals.len() < 2 {
            self.notes
                .push("object-level authorization (BOLA) needs two principals (--as alice=... --as bob=...)".into());
            return;
        }
        let (owner, other) = (0usize, 1usize);
        for op in ops.iter().filter(|o| o.method == Method::GET && o.has_path_params() && !o.admin) {
            let Some(id) = self.id_for(owner, op) else {
                self.notes.push(format!(
                    "BOLA: no object id of `{}` found for {}",
                    self.principals[owner].name,
                    op.name()
                ));
                continue;
            };
            // The other principal owning the same id (a shared or public object) proves nothing.
            if self.ids[other].iter().any(|(_, v)| *v == id) {
                continue;
            }
            let own = self.request(op, Some(owner), &|_| Some(id.clone()), "bola");
            let Some(own_resp) = self.send(&own).await else { continue };
            if !own_resp.ok() {
                continue;
            }
            let cross = self.request(op, Some(other), &|_| Some(id.clone()), "bola");
            let Some(resp) = self.send(&cross).await else { continue };
            if resp.ok() && (resp.body == own_resp.body || resp.text().contains(&id)) {
                let ev = vec![self.evidence(&own, Some(&own_resp)), self.evidence(&cross, Some(&resp))];
                let (a, b) = (self.principals[owner].name.clone(), self.principals[other].name.clone());
                self.find(
                    "live.bola",
                    Owasp::API1,
                    Severity::High,
                    op.name(),
                    format!("`{b}` reads `{a}`'s object"),
                    format!("{} with {a}'s object id `{id}` answered {} to {b} with the same object.", op.name(), resp.status),
                    "Check the caller's ownership of every object the request names (the gateway's `authorize` with an owner rule, or the API).",
                    ev,
                );
            }
        }
    }

    /// Answers seen as principals that carry properties their schema does not declare.
    fn exposure(&mut self, ops: &[Op]) {
        let seen = std::mem::take(&mut self.seen);
        for (i, status, body, ev) in &seen {
            let op = &ops[*i];
            let extra = self.api.undeclared(op, *status, body);
            if extra.is_empty() {
                continue;
            }
            let shown: Vec<&str> = extra.iter().take(8).map(String::as_str).collect();
            self.find(
                "live.excessive-data",
                Owasp::API3,
                Severity::Medium,
                op.name(),
                "Answer carries properties the schema does not declare".into(),
                format!("{} answered {status} with undeclared properties: {}.", op.name(), shown.join(", ")),
                "Return only declared properties (or let the gateway filter answers by the document: `filter_responses`, on by default with `validate.openapi`).",
                vec![ev.clone()],
            );
        }
        self.seen = seen;
    }

    async fn mass_assignment(&mut self, ops: &[Op]) {
        for op in ops.iter().filter(|o| o.is_write() && o.body.is_some() && !o.admin) {
            let Some(schema) = op.body.clone() else { continue };
            let mut body = self.api.sample(&schema, true);
            let Value::Object(map) = &mut body else { continue };
            let mut planted: Vec<(String, Value)> = Vec::new();
            for (name, prop) in self.api.read_only(&schema) {
                let v = match prop.get("type").and_then(Value::as_str) {
                    Some("integer" | "number") => json!(987_654_321),
                    Some("boolean") => continue,
                    Some("string") | None => json!(format!("pcs-ro-{name}")),
                    _ => continue,
                };
                map.insert(name.clone(), v.clone());
                planted.push((name, v));
            }
            map.insert("pcs_scan_extra".into(), json!("pcs-extra-value"));
            planted.push(("pcs_scan_extra".into(), json!("pcs-extra-value")));
            let who = if self.principals.is_empty() { None } else { Some(0) };
            let id = who.and_then(|w| self.id_for(w, op));
            let mut req = self.request(op, who, &|_| id.clone(), "mass-assignment");
            req = Req {
                body: None,
                headers: req.headers.into_iter().filter(|(k, _)| k != "content-type").collect(),
                ..req
            }
            .json(&body);
            let Some(resp) = self.send(&req).await else { continue };
            if !resp.ok() {
                continue;
            }
            let Some(answer) = resp.json() else { continue };
            let accepted: Vec<&str> =
                planted.iter().filter(|(k, v)| contains_pair(&answer, k, v, 0)).map(|(k, _)| k.as_str()).collect();
            if !accepted.is_empty() {
                let ev = self.evidence(&req, Some(&resp));
                self.find(
                    "live.mass-assignment",
                    Owasp::API3,
                    Severity::High,
                    op.name(),
                    "Write accepts read-only or undeclared properties".into(),
                    format!("{} stored properties a client must not set: {}.", op.name(), accepted.join(", ")),
                    "Bind writes to an allow-list of properties; refuse undeclared ones (`additionalProperties: false` with the gateway's `validate.openapi`) and readOnly ones.",
                    vec![ev],
                );
            }
        }
    }

    async fn function_level(&mut self, ops: &[Op]) {
        let users: Vec<usize> = (0..self.principals.len()).filter(|&i| !self.principals[i].admin).collect();
        if users.is_empty() {
            return;
        }
        for op in ops.iter().filter(|o| o.admin && o.method != Method::DELETE) {
            for &who in &users {
                let req = self.request(op, Some(who), &|_| None, "function-level");
                let Some(resp) = self.send(&req).await else { continue };
                if resp.ok() {
                    let ev = self.evidence(&req, Some(&resp));
                    let name = self.principals[who].name.clone();
                    self.find(
                        "live.function-level",
                        Owasp::API5,
                        Severity::High,
                        op.name(),
                        format!("Administrative operation reachable by `{name}`"),
                        format!("{} looks administrative (x-admin, an admin scope, tag or path) and answered {} to the ordinary principal `{name}`.", op.name(), resp.status),
                        "Restrict administrative operations to an admin role (`authorize: { roles: [admin] }` on the route).",
                        vec![ev],
                    );
                    break;
                }
            }
        }
    }

    async fn injection(&mut self, ops: &[Op]) {
        let who = if self.principals.is_empty() { None } else { Some(0) };
        for op in ops.iter().filter(|o| o.method != Method::DELETE) {
            let mut reqs: Vec<Req> = Vec::new();
            for p in op.params.iter().filter(|p| matches!(p.location, In::Path | In::Query)) {
                let mut req = if p.location == In::Path {
                    let name = p.name.clone();
                    let id = who.and_then(|w| self.id_for(w, op));
                    self.request(
                        op,
                        who,
                        &move |q: &Param| if q.name == name { Some(CANARY.to_owned()) } else { id.clone() },
                        "injection",
                    )
                } else {
                    self.request(op, who, &|_| None, "injection")
                };
                if p.location == In::Query {
                    req.path = strip_query_param(&req.path, &p.name);
                    push_query(&mut req.path, &[(p.name.clone(), CANARY.to_owned())]);
                }
                reqs.push(req);
            }
            if op.body.is_some() {
                let id = who.and_then(|w| self.id_for(w, op));
                let mut req = self.request(op, who, &|_| id.clone(), "malformed-json");
                req.body = Some(bytes::Bytes::from_static(b"{\"pcs\": [1, 2,"));
                reqs.push(req);
            }
            for req in reqs.into_iter().take(4) {
                let Some(resp) = self.send(&req).await else { continue };
                let text = resp.text();
                if let Some(what) = verbose_error(&text) {
                    let ev = self.evidence(&req, Some(&resp));
                    self.find(
                        "live.verbose-error",
                        Owasp::API8,
                        Severity::Medium,
                        op.name(),
                        "Error answer reveals internals".into(),
                        format!("{} answered {} with {what} to malformed input.", op.name(), resp.status),
                        "Answer errors with a terse problem document; log details server-side (the gateway's `respond.scrub_errors` replaces 5xx bodies).",
                        vec![ev],
                    );
                }
                let html = resp.header("content-type").is_some_and(|c| c.contains("html"));
                if html && text.contains("<pcsx>") {
                    let ev = self.evidence(&req, Some(&resp));
                    self.find(
                        "live.reflected-input",
                        Owasp::API8,
                        Severity::Medium,
                        op.name(),
                        "Input reflected unescaped in HTML".into(),
                        format!(
                            "{} echoed the canary markup unescaped in a {} answer.",
                            op.name(),
                            resp.header("content-type").unwrap_or("")
                        ),
                        "Escape output, answer JSON with its content type and `X-Content-Type-Options: nosniff`.",
                        vec![ev],
                    );
                }
            }
        }
    }

    async fn ssrf(&mut self, ops: &[Op]) {
        let candidates: Vec<(Op, Option<String>)> = ops
            .iter()
            .filter(|o| o.method != Method::DELETE)
            .flat_map(|o| {
                let mut v: Vec<(Op, Option<String>)> = o
                    .params
                    .iter()
                    .filter(|p| p.location == In::Query && p.takes_url())
                    .map(|p| (o.clone(), Some(p.name.clone())))
                    .collect();
                let body_url = o
                    .body
                    .as_ref()
                    .map(|b| self.api.resolve(b))
                    .and_then(|b| b.get("properties"))
                    .and_then(Value::as_object)
                    .and_then(|props| {
                        props
                            .iter()
                            .find(|(k, s)| {
                                Param {
                                    name: (*k).clone(),
                                    location: In::Query,
                                    required: false,
                                    schema: (*s).clone(),
                                    example: None,
                                }
                                .takes_url()
                            })
                            .map(|(k, _)| k.clone())
                    });
                if let Some(k) = body_url {
                    v.push((o.clone(), Some(format!("body:{k}"))));
                }
                v
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        if self.client.dry_run {
            for (op, param) in &candidates {
                let mut req = self.request(op, None, &|_| None, "ssrf");
                if let Some(p) = param.as_deref().filter(|p| !p.starts_with("body:")) {
                    push_query(&mut req.path, &[(p.to_owned(), "http://127.0.0.1:PORT/pcs-ssrf-TOKEN".into())]);
                }
                let _ = self.send(&req).await;
            }
            return;
        }
        let Some(canary) = Canary::start().await else {
            self.notes.push("SSRF: could not open the canary listener on 127.0.0.1".into());
            return;
        };
        if !self.client.target.is_loopback() {
            self.notes.push("SSRF: the target is not on this host, so a callback to the canary on 127.0.0.1 cannot be seen; only reflected canary content is detected".into());
        }
        let who = if self.principals.is_empty() { None } else { Some(0) };
        for (op, param) in candidates {
            let Some(param) = param else { continue };
            let before = canary.hits();
            let id = who.and_then(|w| self.id_for(w, &op));
            let mut req = self.request(&op, who, &|_| id.clone(), "ssrf");
            match param.strip_prefix("body:") {
                Some(field) => {
                    let mut body = op.body.as_ref().map(|b| self.api.sample(b, true)).unwrap_or(json!({}));
                    body[field] = json!(canary.url());
                    req = Req {
                        body: None,
                        headers: req.headers.into_iter().filter(|(k, _)| k != "content-type").collect(),
                        ..req
                    }
                    .json(&body);
                }
                None => {
                    req.path = strip_query_param(&req.path, &param);
                    push_query(&mut req.path, &[(param.clone(), canary.url())]);
                }
            }
            let resp = self.send(&req).await;
            // The fetch may complete after the answer: poll briefly.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while canary.hits() == before && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let reflected =
                resp.as_ref().is_some_and(|r| r.text().contains(&format!("pcs-ssrf-canary-{}", canary.token)));
            if canary.hits() > before || reflected {
                let ev = self.evidence(&req, resp.as_ref());
                let field = param.trim_start_matches("body:");
                self.find(
                    "live.ssrf",
                    Owasp::API7,
                    Severity::High,
                    op.name(),
                    format!("Server fetches the URL given in `{field}`"),
                    format!("{} fetched the scanner's canary URL given in `{field}`{}.", op.name(), if reflected { " and returned its content" } else { "" }),
                    "Fetch only allow-listed hosts; refuse loopback, private and link-local addresses (the gateway's inspection blocks URL parameters aimed at them).",
                    vec![ev],
                );
            }
        }
    }

    async fn headers_cors_methods(&mut self, ops: &[Op]) {
        let who = if self.principals.is_empty() { None } else { Some(0) };
        let Some(op) = ops
            .iter()
            .find(|o| o.method == Method::GET && !o.has_path_params() && !o.admin && (o.secured == who.is_some()))
            .or_else(|| ops.iter().find(|o| o.method == Method::GET && !o.has_path_params() && !o.admin))
            .cloned()
        else {
            return;
        };
        let as_who = if op.secured { who } else { None };
        let req = self.request(&op, as_who, &|_| None, "headers").header("origin", "https://pcs-scan.invalid");
        let Some(resp) = self.send(&req).await else { return };
        let ev = self.evidence(&req, Some(&resp));
        if resp.ok() {
            if !resp.header("x-content-type-options").is_some_and(|v| v.trim().eq_ignore_ascii_case("nosniff")) {
                self.header_finding(
                    &op,
                    "X-Content-Type-Options: nosniff",
                    "browsers may sniff an answer as HTML",
                    ev.clone(),
                );
            }
            if as_who.is_some() {
                let cc = resp.header("cache-control").unwrap_or("").to_ascii_lowercase();
                if !(cc.contains("no-store") || cc.contains("private")) {
                    self.header_finding(
                        &op,
                        "Cache-Control: no-store",
                        "an authenticated answer may be stored by shared caches",
                        ev.clone(),
                    );
                }
            }
            if !resp
                .header("content-security-policy")
                .is_some_and(|v| v.contains("frame-ancestors") || v.contains("default-src"))
            {
                self.header_finding(
                    &op,
                    "Content-Security-Policy",
                    "an answer rendered by a browser has no policy (frame-ancestors 'none' for APIs)",
                    ev.clone(),
                );
            }
            if self.client.target.https && resp.header("strict-transport-security").is_none() {
                self.header_finding(
                    &op,
                    "Strict-Transport-Security",
                    "browsers may reach the API over plain HTTP",
                    ev.clone(),
                );
            }
        }
        let acao = resp.header("access-control-allow-origin").unwrap_or("");
        let acac = resp.header("access-control-allow-credentials").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if acao == "https://pcs-scan.invalid" || (acao == "*" && acac) {
            self.find(
                "live.cors",
                Owasp::API8,
                if acac { Severity::High } else { Severity::Low },
                op.name(),
                "CORS trusts any origin".into(),
                format!(
                    "The answer allows the origin `{acao}` sent by the scanner{}.",
                    if acac { " with credentials" } else { "" }
                ),
                "Allow-list CORS origins; never reflect Origin together with Access-Control-Allow-Credentials.",
                vec![ev],
            );
        }
        for server in ["server", "x-powered-by"] {
            if let Some(v) = resp.header(server).filter(|v| v.chars().any(|c| c.is_ascii_digit())) {
                let detail = format!("`{server}: {v}` names software and version.");
                let ev = self.evidence(&req, Some(&resp));
                self.find(
                    "live.version-disclosure",
                    Owasp::API8,
                    Severity::Info,
                    server.to_owned(),
                    "Software version disclosed".into(),
                    detail,
                    "Drop or genericise the header.",
                    vec![ev],
                );
            }
        }
        let mut trace = Req::new(Method::TRACE, sample_path(&op, &|_| None), "methods");
        trace = trace.header("x-pcs-trace", "pcs-trace-marker");
        if let Some(resp) = self.send(&trace).await {
            if resp.ok() && resp.text().contains("pcs-trace-marker") {
                let ev = self.evidence(&trace, Some(&resp));
                self.find(
                    "live.trace",
                    Owasp::API8,
                    Severity::Low,
                    format!("TRACE {}", op.template),
                    "TRACE is enabled".into(),
                    "The server echoes TRACE requests (cross-site tracing can expose headers).".into(),
                    "Refuse TRACE (405).",
                    vec![ev],
                );
            }
        }
    }

    fn header_finding(&mut self, op: &Op, header: &str, why: &str, ev: Evidence) {
        self.find(
            "live.security-header",
            Owasp::API8,
            Severity::Low,
            format!("{} ({header})", op.name()),
            format!("Missing security header {header}"),
            format!("{} answered without `{header}`: {why}.", op.name()),
            "Send the header (the gateway's `respond.security_headers` adds it by default).",
            vec![ev],
        );
    }

    async fn debug_endpoints(&mut self, ops: &[Op]) {
        let declared: BTreeSet<String> = ops.iter().map(|o| o.template.to_ascii_lowercase()).collect();
        let mut raw = [0u8; 6];
        let _ = aws_lc_rs::rand::fill(&mut raw);
        let nonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let missing = format!("/pcs-scan-none-{nonce}");
        let baseline = self.send(&Req::new(Method::GET, missing.clone(), "debug-baseline")).await;
        // A catch-all answers every path alike, perhaps naming the path: compare with the path masked.
        let base_path = self.client.target.base_path.clone();
        let masked = move |body: &[u8], path: &str| {
            let full = format!("{base_path}{path}");
            String::from_utf8_lossy(body).replace(&full, "<path>").replace(path, "<path>")
        };
        let baseline_body = baseline.as_ref().filter(|b| b.ok()).map(|b| masked(&b.body, &missing));
        for path in DEBUG_PATHS {
            if declared.contains(*path) {
                continue;
            }
            let req = Req::new(Method::GET, *path, "debug-endpoint");
            let Some(resp) = self.send(&req).await else { continue };
            let same_as_missing = baseline_body.as_ref().is_some_and(|b| *b == masked(&resp.body, path));
            if resp.ok() && !same_as_missing && !resp.body.is_empty() {
                let ev = self.evidence(&req, Some(&resp));
                self.find(
                    "live.debug-endpoint",
                    Owasp::API9,
                    Severity::High,
                    format!("GET {path}"),
                    "Unauthenticated debug endpoint".into(),
                    format!("GET {path}, which the document does not declare, answered {} without credentials.", resp.status),
                    "Remove debug endpoints from production, or refuse them at the edge (a route that answers 404 for /debug).",
                    vec![ev],
                );
            }
        }
    }

    async fn jwt_catalogue(&mut self, ops: &[Op]) {
        let Some(who) = (0..self.principals.len()).find(|&i| self.principals[i].jwt().is_some()) else { return };
        let Some(token) = self.principals[who].jwt().map(str::to_owned) else { return };
        let Some(op) =
            ops.iter().find(|o| o.secured && o.method == Method::GET && !o.has_path_params() && !o.admin).cloned()
        else {
            self.notes.push("JWT catalogue: no secured GET operation without path parameters to try tokens on".into());
            return;
        };
        // Baseline: the genuine token works and no token does not.
        let good = self.request(&op, Some(who), &|_| None, "jwt");
        let Some(good_resp) = self.send(&good).await else { return };
        let bare = self.request(&op, None, &|_| None, "jwt");
        let Some(bare_resp) = self.send(&bare).await else { return };
        if !good_resp.ok() || bare_resp.ok() {
            self.notes.push(format!("JWT catalogue: {} does not tell a good token from none; skipped", op.name()));
            return;
        }
        for attack in jwt::attacks(&token, self.opts.jwt_public_key.as_deref(), now_secs()) {
            let mut req = self.request(&op, None, &|_| None, "jwt");
            req = req.header("authorization", &format!("Bearer {}", attack.token));
            let Some(resp) = self.send(&req).await else { continue };
            if resp.ok() {
                let ev = self.evidence(&req, Some(&resp));
                self.find(
                    "live.jwt",
                    Owasp::API2,
                    Severity::Critical,
                    format!("{} ({})", op.name(), attack.name),
                    format!("Forged JWT accepted: {}", attack.name),
                    format!("{} answered {} to a forged token: the API {}.", op.name(), resp.status, attack.flaw),
                    "Verify JWTs with a pinned algorithm and key, and check exp, nbf, iss and aud (the gateway's `jwt` authenticator does).",
                    vec![ev],
                );
            }
        }
    }

    async fn tls(&mut self) {
        if !self.client.target.https {
            self.notes.push("TLS: the base URL is plain http://; versions and suites not probed".into());
            return;
        }
        if self.client.dry_run {
            self.client.listed.push(format!(
                "TLS handshakes to {}:{} (versions, suites, legacy ClientHello)",
                self.client.target.host, self.client.target.port
            ));
            return;
        }
        let (host, port) = (self.client.target.host.clone(), self.client.target.port);
        let budget = std::cell::Cell::new(self.client.max.saturating_sub(self.client.sent));
        let interval = Duration::from_secs_f64(0.1);
        let result = super::tls::probe(&host, port, || {
            let left = budget.get();
            budget.set(left.saturating_sub(1));
            async move {
                tokio::time::sleep(interval).await;
                left > 0
            }
        })
        .await;
        self.client.sent += result.handshakes;
        let detail = format!("accepted: {}; suites: {}", result.versions.join(", "), result.suites.join(", "));
        if !result.legacy.is_empty() {
            self.find(
                "live.tls-legacy",
                Owasp::API8,
                Severity::Medium,
                "TLS".into(),
                format!("Legacy TLS accepted: {}", result.legacy.join(", ")),
                format!("The server answered a ServerHello for {} ({detail}).", result.legacy.join(", ")),
                "Accept TLS 1.2 and 1.3 only.",
                Vec::new(),
            );
        }
        let weak: Vec<&String> =
            result.suites.iter().filter(|s| s.contains("CBC") || s.contains("_SHA,") || s.ends_with("_SHA")).collect();
        if !weak.is_empty() {
            self.find(
                "live.tls-weak-suite",
                Owasp::API8,
                Severity::Low,
                "TLS".into(),
                "Weak TLS suites accepted".into(),
                format!("{weak:?}"),
                "Offer AEAD suites only.",
                Vec::new(),
            );
        }
        self.notes.push(format!("TLS: {detail}"));
    }

    async fn rate_limit(&mut self, ops: &[Op]) {
        let who = if self.principals.is_empty() { None } else { Some(0) };
        // A secured list as a principal (what a client would hammer), else any list.
        let list = |o: &&Op| o.method == Method::GET && !o.has_path_params() && !o.admin;
        let Some(op) = ops
            .iter()
            .filter(list)
            .find(|o| o.secured && who.is_some())
            .or_else(|| ops.iter().filter(list).find(|o| !o.secured))
            .cloned()
        else {
            return;
        };
        let as_who = if op.secured { who } else { None };
        let mut ok = 0usize;
        let mut last: Option<(Req, Resp)> = None;
        let start = tokio::time::Instant::now();
        for _ in 0..self.opts.burst {
            let req = self.request(&op, as_who, &|_| None, "rate-limit");
            let Some(resp) = self.send(&req).await else { break };
            if resp.status.as_u16() == 429 || resp.status.as_u16() == 503 {
                return;
            }
            if resp.ok() {
                ok += 1;
            }
            last = Some((req, resp));
        }
        if ok == self.opts.burst && ok > 0 {
            let secs = start.elapsed().as_secs_f64();
            let ev = last.map(|(q, r)| vec![self.evidence(&q, Some(&r))]).unwrap_or_default();
            self.find(
                "live.no-rate-limit",
                Owasp::API4,
                Severity::Medium,
                op.name(),
                "No rate limiting observed".into(),
                format!("{ok} requests to {} in {secs:.1} s were all answered, none with 429.", op.name()),
                "Limit requests per client (the gateway's `limits:` on the route, per principal or per address).",
                ev,
            );
        }
    }
}

/// Paths tried for unauthenticated debug and diagnostics endpoints.
const DEBUG_PATHS: &[&str] = &[
    "/debug",
    "/_debug",
    "/debug/vars",
    "/debug/pprof/",
    "/__debug__/",
    "/actuator",
    "/actuator/env",
    "/actuator/heapdump",
    "/env",
    "/.env",
    "/server-status",
    "/console",
    "/trace",
    "/_profiler",
    "/phpinfo.php",
    "/internal/debug",
    "/admin/debug",
    "/config.json",
];

fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn push_query(path: &mut String, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&percent_encoding::utf8_percent_encode(k, SEGMENT).to_string());
        path.push('=');
        path.push_str(&percent_encoding::utf8_percent_encode(v, SEGMENT).to_string());
    }
}

fn strip_query_param(path: &str, name: &str) -> String {
    let Some((p, q)) = path.split_once('?') else { return path.to_owned() };
    let enc = percent_encoding::utf8_percent_encode(name, SEGMENT).to_string();
    let kept: Vec<&str> = q.split('&').filter(|kv| kv.split('=').next() != Some(enc.as_str())).collect();
    if kept.is_empty() {
        p.to_owned()
    } else {
        format!("{p}?{}", kept.join("&"))
    }
}

/// Ids in an answer: string or integer values of keys named `id`, `*_id`, `*Id`, `uuid`, `slug`.
fn collect_ids(v: &Value, out: &mut BTreeSet<(String, String)>, depth: usize) {
    if depth > 6 || out.len() > 500 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let kl = k.to_ascii_lowercase();
                let idish = kl == "id" || kl.ends_with("_id") || kl.ends_with("id") || kl == "uuid" || kl == "slug";
                match x {
                    Value::String(s) if idish && !s.is_empty() && s.len() < 200 => {
                        out.insert((k.clone(), s.clone()));
                    }
                    Value::Number(n) if idish => {
                        out.insert((k.clone(), n.to_string()));
                    }
                    _ => collect_ids(x, out, depth + 1),
                }
            }
        }
        Value::Array(a) => a.iter().take(50).for_each(|x| collect_ids(x, out, depth + 1)),
        _ => {}
    }
}

/// `key: value` anywhere in `v`.
fn contains_pair(v: &Value, key: &str, value: &Value, depth: usize) -> bool {
    if depth > 6 {
        return false;
    }
    match v {
        Value::Object(m) => m.get(key) == Some(value) || m.values().any(|x| contains_pair(x, key, value, depth + 1)),
        Value::Array(a) => a.iter().any(|x| contains_pair(x, key, value, depth + 1)),
        _ => false,
    }
}

/// What in an error answer gives internals away (a stack trace, an SQL error), if anything.
pub fn verbose_error(body: &str) -> Option<&'static str> {
    const SIGNS: &[(&str, &str)] = &[
        ("Traceback (most recent call last)", "a Python stack trace"),
        ("panicked at", "a Rust panic message"),
        ("Exception in thread", "a Java stack trace"),
        ("\tat java.", "a Java stack trace"),
        ("at java.", "a Java stack trace"),
        ("at org.springframework", "a Java stack trace"),
        ("    at ", "a stack trace"),
        ("goroutine ", "a Go stack trace"),
        ("SQLSTATE", "an SQL error"),
        ("syntax error at or near", "an SQL error"),
        ("You have an error in your SQL syntax", "an SQL error"),
        ("ORA-0", "an Oracle error"),
        ("SQLITE_ERROR", "an SQL error"),
        ("unterminated quoted string", "an SQL error"),
        ("pg_query(", "an SQL error"),
        ("Microsoft OLE DB", "an SQL error"),
        ("System.Data.SqlClient", "an SQL error"),
        ("<b>Warning</b>:", "a PHP warning"),
        ("Fatal error:", "a PHP error"),
    ];
    SIGNS.iter().find(|(s, _)| body.contains(s)).map(|(_, what)| *what)
}

/// A summary of findings per rule, for tests and the table's footer.
pub fn by_rule(findings: &[Finding]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for f in findings {
        *m.entry(f.rule).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_error_signs() {
        assert!(verbose_error("ERROR: syntax error at or near \"'\"").is_some());
        assert!(verbose_error("Traceback (most recent call last):\n  File").is_some());
        assert!(verbose_error("{\"type\":\"about:blank\",\"title\":\"Bad Request\"}").is_none());
    }

    #[test]
    fn ids_and_pairs() {
        let mut ids = BTreeSet::new();
        collect_ids(&json!({"items": [{"id": 7, "title": "x"}, {"order_id": "a-b"}]}), &mut ids, 0);
        assert!(ids.contains(&("id".into(), "7".into())) && ids.contains(&("order_id".into(), "a-b".into())));
        assert!(contains_pair(&json!({"data": {"owner": "pcs"}}), "owner", &json!("pcs"), 0));
        assert_eq!(strip_query_param("/a?url=x&b=1", "url"), "/a?b=1");
    }

    #[test]
    fn principals() {
        let api = Api::parse("openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {}\n").unwrap();
        let p = Principal::parse("alice=bearer:abc.def", &api, &[]).unwrap();
        assert_eq!(p.headers, vec![("authorization".to_owned(), "Bearer abc.def".to_owned())]);
        let p = Principal::parse("bob=header:X-Token:t0k3n", &api, &["bob".into()]).unwrap();
        assert!(p.admin && p.headers[0] == ("X-Token".to_owned(), "t0k3n".to_owned()));
        assert!(!format!("{p:?}").contains("t0k3n"));
        assert!(Principal::parse("carol=magic:x", &api, &[]).is_err());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        let p = Principal::parse(&format!("dave=header:Authorization:Bearer {jwt}"), &api, &[]).unwrap();
        assert_eq!(p.jwt(), Some(jwt));
        assert_eq!(Principal::parse(&format!("erin=bearer:{jwt}"), &api, &[]).unwrap().jwt(), Some(jwt));
        assert_eq!(Principal::parse("frank=bearer:opaque", &api, &[]).unwrap().jwt(), None);
        assert!(Principal::parse("=bearer:x", &api, &[]).is_err());
    }
}
