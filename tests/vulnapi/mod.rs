//! A deliberately vulnerable API for the live scanner's tests (issue 17): a small in-process hyper server
//! and its OpenAPI document, generated from a seed (base path, resource and field names, id format, the
//! admin, fetch and debug paths, which header is missing, which JWT flaw, where the data leaks and where
//! errors are verbose). `Mode::Vulnerable` plants one flaw of each kind; `Mode::Fixed` is its twin with
//! the same layout and no flaw.
//!
//! Planted flaws (Vulnerable):
//! - API1 BOLA: `GET /{res}/{id}` answers any caller with any object.
//! - API2 broken authentication: `alg: none` tokens accepted, or signatures not checked (seeded).
//! - API3 excessive data exposure: an undeclared property in the list or item answers (seeded).
//! - API3 mass assignment: `POST /{res}` stores every property of the body.
//! - API4 no rate limit (the twin allows 20 requests per principal and path per 10 s).
//! - API5 function-level: the admin operation answers any authenticated caller.
//! - API7 SSRF: the fetch operation fetches the URL parameter (loopback URLs only, never elsewhere).
//! - API8 a missing security header (seeded) and verbose errors (an SQL error for a malformed id, or a
//!   stack trace for a malformed JSON body; seeded: `verbose_on` Item or List).
//! - API9 an unauthenticated debug endpoint (seeded path, not in the document).
//!
//! Both modes: `GET /{res}/{id}/export` redirects to the `elsewhere` URL (a listener the scanner must
//! never reach), and the document's `servers` and the URL parameter's `example` name that same host.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "vulnapi-test-hmac-secret-0123456789abcdef";
pub const ISSUER: &str = "https://idp.vulnapi.test";
pub const AUDIENCE: &str = "vulnapi";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vulnerable,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Int,
    Uuid,
    Slug,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFlaw {
    AlgNone,
    NoSignatureCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Nosniff,
    CacheControl,
    Csp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    List,
    Item,
}

/// Everything the seed decides.
#[derive(Debug, Clone)]
pub struct Layout {
    pub seed: u64,
    pub base: String,
    pub resource: String,
    pub id_kind: IdKind,
    pub id_param: String,
    pub name_field: String,
    pub note_field: String,
    pub leak_field: String,
    pub admin_path: String,
    pub fetch_path: String,
    pub url_param: String,
    pub debug_path: String,
    pub missing_header: Header,
    pub auth_flaw: AuthFlaw,
    pub leak_on: Where,
    pub verbose_on: Where,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

impl Layout {
    pub fn from_seed(seed: u64) -> Layout {
        let mut r = Rng(seed);
        let resource =
            r.pick(&["orders", "invoices", "notes", "tickets", "projects", "shipments", "documents"]).to_string();
        let singular = resource.trim_end_matches('s').to_owned();
        let id_kind = *r.pick(&[IdKind::Int, IdKind::Uuid, IdKind::Slug]);
        let id_param = match r.next() % 3 {
            0 => "id".to_owned(),
            1 => format!("{singular}Id"),
            _ => format!("{singular}_id"),
        };
        Layout {
            seed,
            base: r.pick(&["", "/v1", "/api", "/api/v2"]).to_string(),
            resource,
            id_kind,
            id_param,
            name_field: r.pick(&["title", "name", "label", "subject"]).to_string(),
            note_field: r.pick(&["memo", "description", "comment", "details"]).to_string(),
            leak_field: r
                .pick(&["password_hash", "internal_cost", "ssn_last4", "api_secret_ref", "margin"])
                .to_string(),
            admin_path: r.pick(&["/admin/users", "/internal/metrics", "/manage/accounts", "/admin/config"]).to_string(),
            fetch_path: r.pick(&["/preview", "/webhooks/test", "/import", "/link-check"]).to_string(),
            url_param: r.pick(&["url", "target", "callback_url", "source", "feed"]).to_string(),
            debug_path: r
                .pick(&["/debug", "/debug/vars", "/actuator/env", "/_debug", "/server-status", "/console"])
                .to_string(),
            missing_header: *r.pick(&[Header::Nosniff, Header::CacheControl, Header::Csp]),
            auth_flaw: *r.pick(&[AuthFlaw::AlgNone, AuthFlaw::NoSignatureCheck]),
            leak_on: *r.pick(&[Where::List, Where::Item]),
            verbose_on: *r.pick(&[Where::List, Where::Item]),
        }
    }

    fn id_schema(&self) -> Value {
        match self.id_kind {
            IdKind::Int => json!({"type": "integer", "minimum": 1}),
            IdKind::Uuid => json!({"type": "string", "format": "uuid"}),
            IdKind::Slug => json!({"type": "string", "pattern": "^[a-z0-9-]{3,40}$"}),
        }
    }

    /// The OpenAPI 3.0 document; `elsewhere` is the base URL of a host the scanner must not reach.
    pub fn openapi(&self, elsewhere: &str) -> String {
        let res = &self.resource;
        let item_path = format!("/{res}/{{{}}}", self.id_param);
        let id_param = json!({"name": self.id_param, "in": "path", "required": true, "schema": self.id_schema()});
        let item = json!({
            "type": "object",
            "properties": {
                "id": self.id_schema(),
                "owner": {"type": "string"},
                (self.name_field.clone()): {"type": "string"},
                (self.note_field.clone()): {"type": "string"},
            }
        });
        let new_item = json!({
            "type": "object",
            "additionalProperties": false,
            "required": [self.name_field],
            "properties": {
                (self.name_field.clone()): {"type": "string", "maxLength": 200},
                (self.note_field.clone()): {"type": "string", "maxLength": 2000},
            }
        });
        let json_of = |schema: Value| json!({"application/json": {"schema": schema}});
        let doc = json!({
            "openapi": "3.0.3",
            "info": {"title": format!("vulnapi seed {}", self.seed), "version": "1"},
            "servers": [{"url": format!("{elsewhere}{}", self.base)}],
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
                "schemas": {"Item": item, "NewItem": new_item}
            },
            "security": [{"bearer": []}],
            "paths": {
                "/health": {"get": {"security": [], "responses": {"200": {"description": "ok", "content": json_of(json!({"type": "object", "properties": {"status": {"type": "string"}}}))}}}},
                (format!("/{res}")): {
                    "get": {"operationId": "list", "responses": {"200": {"description": "ok", "content": json_of(json!({"type": "array", "items": {"$ref": "#/components/schemas/Item"}}))}}},
                    "post": {
                        "operationId": "create",
                        "requestBody": {"required": true, "content": json_of(json!({"$ref": "#/components/schemas/NewItem"}))},
                        "responses": {"201": {"description": "created", "content": json_of(json!({"$ref": "#/components/schemas/Item"}))}}
                    }
                },
                (item_path.clone()): {
                    "get": {"operationId": "read", "parameters": [id_param], "responses": {"200": {"description": "ok", "content": json_of(json!({"$ref": "#/components/schemas/Item"}))}}}
                },
                (format!("{item_path}/export")): {
                    "get": {"operationId": "export", "parameters": [id_param], "responses": {"302": {"description": "elsewhere"}}}
                },
                (self.admin_path.clone()): {
                    "get": {"operationId": "admin", "x-admin": true, "security": [{"bearer": ["admin"]}], "responses": {"200": {"description": "ok", "content": json_of(json!({"type": "object", "properties": {"count": {"type": "integer"}}}))}}}
                },
                (self.fetch_path.clone()): {
                    "get": {
                        "operationId": "fetch",
                        "parameters": [{"name": self.url_param, "in": "query", "required": true, "schema": {"type": "string", "format": "uri"}, "example": format!("{elsewhere}/feed")}],
                        "responses": {"200": {"description": "ok", "content": json_of(json!({"type": "object", "properties": {"status": {"type": "integer"}, "length": {"type": "integer"}}}))}}
                    }
                }
            }
        });
        serde_json::to_string_pretty(&doc).unwrap()
    }

    fn make_id(&self, n: u64) -> Value {
        match self.id_kind {
            IdKind::Int => json!(1000 + n),
            IdKind::Uuid => {
                let h = Rng(self.seed ^ (n * 7919)).next();
                json!(format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    h >> 32,
                    (h >> 16) & 0xffff,
                    h & 0xfff,
                    (h >> 20) & 0xfff,
                    n * 104_729 + 17
                ))
            }
            IdKind::Slug => {
                json!(format!("{}-{}-{n}", ["alpha", "beta", "gamma", "delta"][(n % 4) as usize], self.resource))
            }
        }
    }

    fn id_text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A token as the API's identity provider issues it.
pub fn token(sub: &str, roles: &[&str], exp_in: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles, "iat": now, "exp": now + exp_in});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

struct State {
    layout: Layout,
    mode: Mode,
    elsewhere: String,
    objects: Vec<Value>,
    next: u64,
    hits: HashMap<(String, String), Vec<Instant>>,
}

/// A running vulnerable (or fixed) API.
pub struct VulnApi {
    pub addr: SocketAddr,
    pub layout: Layout,
    /// Arrival time, method and path of every request.
    pub log: Arc<Mutex<Vec<(Instant, String, String)>>>,
    _server: crate::common::Served,
}

impl VulnApi {
    pub fn start(seed: u64, mode: Mode, elsewhere: &str) -> VulnApi {
        let layout = Layout::from_seed(seed);
        let mut objects = Vec::new();
        for (n, owner) in [(1u64, "alice"), (2, "alice"), (3, "bob"), (4, "bob")] {
            objects.push(json!({
                "id": layout.make_id(n),
                "owner": owner,
                (layout.name_field.clone()): format!("{owner}'s {} #{n}", layout.resource),
                (layout.note_field.clone()): "seeded",
                (layout.leak_field.clone()): format!("hidden-{n}"),
            }));
        }
        let state = Arc::new(Mutex::new(State {
            layout: layout.clone(),
            mode,
            elsewhere: elsewhere.to_owned(),
            objects,
            next: 5,
            hits: HashMap::new(),
        }));
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let server = crate::common::serve(None, move |_, req| {
            let (state, log) = (state.clone(), log2.clone());
            async move { handle(&state, &log, req).await }
        });
        VulnApi { addr: server.addr, layout, log, _server: server }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.layout.base)
    }

    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

/// A listener that must see no traffic: counts connections and answers 200 to anything.
pub struct Elsewhere {
    pub addr: SocketAddr,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Elsewhere {
    pub fn start() -> Elsewhere {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = connections.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Ok(mut s) = s {
                    use std::io::Write;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                }
            }
        });
        Elsewhere { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type Resp = hyper::Response<Full<Bytes>>;

fn respond(status: u16, body: Value, headers: &[(&str, String)]) -> (u16, Vec<u8>, Vec<(String, String)>) {
    (status, body.to_string().into_bytes(), headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
}

fn problem(status: u16, title: &str) -> (u16, Vec<u8>, Vec<(String, String)>) {
    (
        status,
        json!({"type": "about:blank", "title": title, "status": status}).to_string().into_bytes(),
        vec![("content-type".into(), "application/problem+json".into())],
    )
}

/// The verified claims of the request's bearer token, under the mode's rules.
fn authenticate(mode: Mode, flaw: AuthFlaw, auth: Option<&str>) -> Option<Value> {
    let token = auth?.strip_prefix("Bearer ")?;
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let alg = header["alg"].as_str().unwrap_or("");
    let signature_ok = || {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let sig = URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
        aws_lc_rs::hmac::verify(&key, format!("{h}.{c}").as_bytes(), &sig).is_ok()
    };
    let trusted = match (mode, flaw) {
        (Mode::Vulnerable, AuthFlaw::AlgNone) if alg.eq_ignore_ascii_case("none") => true,
        (Mode::Vulnerable, AuthFlaw::NoSignatureCheck) => true,
        _ => alg == "HS256" && signature_ok(),
    };
    if !trusted {
        return None;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let lax = mode == Mode::Vulnerable && flaw == AuthFlaw::NoSignatureCheck;
    if !lax && (claims["exp"].as_i64().unwrap_or(0) < now || claims["aud"] != AUDIENCE || claims["iss"] != ISSUER) {
        return None;
    }
    claims["sub"].is_string().then_some(claims)
}

async fn handle(
    state: &Mutex<State>,
    log: &Mutex<Vec<(Instant, String, String)>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Resp {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    log.lock().unwrap().push((Instant::now(), parts.method.to_string(), path_and_query.clone()));
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, body, mut headers, mode, missing, authed) = {
        let mut st = state.lock().unwrap();
        let mode = st.mode;
        let claims = authenticate(mode, st.layout.auth_flaw, auth.as_deref());
        let missing = st.layout.missing_header;
        let authed = claims.is_some();
        let (s, b, h) = route(&mut st, &parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""), claims, &body);
        (s, b, h, mode, missing, authed)
    };
    let (status, body) = match status {
        // The fetch operation: performed outside the lock.
        0 => fetch(&String::from_utf8_lossy(&body)).await,
        s => (s, body),
    };
    if !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let mut b = hyper::Response::builder().status(status);
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let add = |h: Header| mode == Mode::Fixed || missing != h;
    if add(Header::Nosniff) {
        b = b.header("x-content-type-options", "nosniff");
    }
    if add(Header::Csp) {
        b = b.header("content-security-policy", "default-src 'none'; frame-ancestors 'none'");
    }
    if add(Header::CacheControl) && authed {
        b = b.header("cache-control", "no-store");
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

/// SSRF, planted: fetches `url` if (and only if) it points at a loopback address.
async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let Some(rest) = url.strip_prefix("http://") else { return (400, b"{}".to_vec()) };
    let hostport = rest.split('/').next().unwrap_or("");
    let Ok(addr) = hostport.parse::<SocketAddr>() else { return (400, b"{}".to_vec()) };
    if !addr.ip().is_loopback() {
        return (400, b"{}".to_vec());
    }
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let result = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.len())
    })
    .await;
    let n = result.ok().flatten().unwrap_or(0);
    (200, json!({"status": 200, "length": n}).to_string().into_bytes())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

type Answer = (u16, Vec<u8>, Vec<(String, String)>);

fn route(
    st: &mut State,
    method: &hyper::Method,
    full_path: &str,
    query: &str,
    claims: Option<Value>,
    body: &[u8],
) -> Answer {
    let l = st.layout.clone();
    let vulnerable = st.mode == Mode::Vulnerable;
    let Some(path) = full_path.strip_prefix(l.base.as_str()).filter(|p| p.starts_with('/')) else {
        return problem(404, "Not Found");
    };
    if vulnerable && path == l.debug_path && method == hyper::Method::GET {
        return respond(
            200,
            json!({"debug": true, "env": {"DATABASE_URL": "postgres://app@db/app", "BUILD": "1.4.2-dev"}, "goroutines": 17, "last_error": "<script>alert('pcs')</script><img src=x onerror=alert(1)>"}),
            &[],
        );
    }
    if method != hyper::Method::GET && method != hyper::Method::POST {
        return problem(405, "Method Not Allowed");
    }
    if path == "/health" {
        return respond(200, json!({"status": "ok"}), &[]);
    }
    let res_path = format!("/{}", l.resource);
    let known =
        path == res_path || path.starts_with(&format!("{res_path}/")) || path == l.admin_path || path == l.fetch_path;
    if !known {
        return problem(404, "Not Found");
    }
    let Some(claims) = claims else {
        return (
            401,
            br#"{"title":"Unauthorized","status":401}"#.to_vec(),
            vec![("www-authenticate".into(), "Bearer".into())],
        );
    };
    let sub = claims["sub"].as_str().unwrap_or("").to_owned();
    // The twin's rate limit: 20 requests per principal and path per 10 seconds.
    if !vulnerable {
        let now = Instant::now();
        let hits = st.hits.entry((sub.clone(), path.to_owned())).or_default();
        hits.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
        if hits.len() >= 20 {
            return (
                429,
                br#"{"title":"Too Many Requests","status":429}"#.to_vec(),
                vec![("retry-after".into(), "10".into())],
            );
        }
        hits.push(now);
    }
    let roles: Vec<&str> =
        claims["roles"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if path == l.admin_path {
        if !vulnerable && !roles.contains(&"admin") {
            return problem(403, "Forbidden");
        }
        return respond(200, json!({"count": st.objects.len()}), &[]);
    }
    if path == l.fetch_path {
        let url = query.split('&').find_map(|kv| kv.strip_prefix(&format!("{}=", l.url_param))).map(percent_decode);
        let Some(url) = url else { return problem(400, "Bad Request") };
        if vulnerable {
            // Status 0: the caller performs the fetch (outside the lock), the URL in the body.
            return (0, url.into_bytes(), Vec::new());
        }
        return problem(400, "URL not allowed");
    }
    let public = |o: &Value, leak: bool| {
        let mut o = o.clone();
        if !(leak && vulnerable) {
            if let Some(m) = o.as_object_mut() {
                m.remove(&l.leak_field);
            }
        }
        o
    };
    if path == res_path {
        if method == hyper::Method::GET {
            let mine: Vec<Value> = st
                .objects
                .iter()
                .filter(|o| o["owner"] == sub.as_str())
                .map(|o| public(o, l.leak_on == Where::List))
                .collect();
            return respond(200, Value::Array(mine), &[]);
        }
        let parsed: Result<Value, _> = serde_json::from_slice(body);
        let Ok(Value::Object(input)) = parsed else {
            if vulnerable && l.verbose_on == Where::List {
                return (500, b"SyntaxError: Unexpected end of JSON input\n    at JSON.parse (<anonymous>)\n    at parseBody (/srv/app/routes/items.js:41:17)\n    at Layer.handle (/srv/app/node_modules/express/lib/router/layer.js:95:5)".to_vec(), vec![("content-type".into(), "text/plain".into())]);
            }
            return problem(400, "Bad Request");
        };
        let Some(name) = input.get(&l.name_field).and_then(Value::as_str) else { return problem(400, "Bad Request") };
        let id = l.make_id(st.next);
        st.next += 1;
        let mut obj = json!({"id": id, "owner": sub, (l.name_field.clone()): name, (l.note_field.clone()): input.get(&l.note_field).and_then(Value::as_str).unwrap_or("")});
        if vulnerable {
            // Mass assignment, planted: every property of the body is stored.
            for (k, v) in input {
                obj[k] = v;
            }
        } else if input.keys().any(|k| k != &l.name_field && k != &l.note_field) {
            return problem(400, "Bad Request");
        }
        st.objects.push(obj.clone());
        return respond(201, public(&obj, false), &[]);
    }
    let rest = &path[res_path.len() + 1..];
    let (id, export) = match rest.strip_suffix("/export") {
        Some(id) => (percent_decode(id), true),
        None => (percent_decode(rest), false),
    };
    if id.contains('/') || method != hyper::Method::GET {
        return problem(404, "Not Found");
    }
    let well_formed = match l.id_kind {
        IdKind::Int => id.parse::<u64>().is_ok(),
        IdKind::Uuid => id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        IdKind::Slug => id.len() >= 3 && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
    };
    if !well_formed {
        if vulnerable && l.verbose_on == Where::Item {
            return (
                500,
                format!(
                    "ERROR: syntax error at or near \"{}\"\nSQLSTATE[42601] in SELECT * FROM {} WHERE id = {id}",
                    id.chars().take(8).collect::<String>(),
                    l.resource
                )
                .into_bytes(),
                vec![("content-type".into(), "text/plain".into())],
            );
        }
        return problem(400, "Bad Request");
    }
    let found = st.objects.iter().find(|o| Layout::id_text(&o["id"]) == id).cloned();
    let Some(obj) = found else { return problem(404, "Not Found") };
    if !vulnerable && obj["owner"] != sub.as_str() {
        return problem(404, "Not Found");
    }
    if export {
        return (302, Vec::new(), vec![("location".into(), format!("{}/export/{id}", st.elsewhere))]);
    }
    respond(200, public(&obj, l.leak_on == Where::Item), &[])
}
