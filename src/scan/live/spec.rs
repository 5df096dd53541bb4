//! The scanner's reading of an OpenAPI document: its operations, parameters, request body schemas
//! (local `$ref`s resolved), which operations need credentials and which look administrative, and
//! sample values generated from schemas. The document is also compiled by the gateway's own validator
//! ([`crate::validate::openapi::Document`]), which both refuses a document the gateway would refuse and
//! answers "does this response carry properties the schema does not declare" exactly as the
//! gateway's response filtering would.

use crate::validate::openapi::Document;
use http::Method;
use serde_json::{json, Map, Value};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub schema: Value,
    pub example: Option<Value>,
}

impl Param {
    /// A parameter that carries a URL (SSRF candidates): `format: uri`/`url`, or a name that says so.
    pub fn takes_url(&self) -> bool {
        let format = self.schema.get("format").and_then(Value::as_str).unwrap_or("");
        if matches!(format, "uri" | "url" | "uri-reference" | "iri") {
            return true;
        }
        let n = self.name.to_ascii_lowercase();
        ["url", "uri", "link", "href", "callback", "webhook", "redirect", "target", "feed", "fetch", "src", "source"]
            .iter()
            .any(|w| n.contains(w))
    }
}

/// One operation of the document.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: Method,
    /// The path template (`/orders/{id}`), relative to the base URL.
    pub template: String,
    pub params: Vec<Param>,
    /// The JSON request body's schema, `$ref`s resolved (one level at a time when used).
    pub body: Option<Value>,
    /// The operation (or the document) requires a security scheme.
    pub secured: bool,
    /// Looks administrative: `x-admin: true`, a security scope or tag naming admin, or a path with
    /// `admin`, `internal`, `manage` or `superuser`.
    pub admin: bool,
    pub id: String,
}

impl Op {
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    pub fn path_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.location == In::Path)
    }

    pub fn has_path_params(&self) -> bool {
        self.template.contains('{')
    }

    pub fn is_write(&self) -> bool {
        matches!(self.method, Method::POST | Method::PUT | Method::PATCH)
    }
}

/// How the API takes credentials, from `components.securitySchemes`.
#[derive(Debug, Clone, Default)]
pub struct Schemes {
    /// An `http` `bearer` scheme (JWT when `bearerFormat` says so or unspecified), or OAuth 2 / OIDC.
    pub bearer: bool,
    /// `apiKey` schemes: (in, name).
    pub api_keys: Vec<(In, String)>,
}

pub struct Api {
    pub ops: Vec<Op>,
    pub schemes: Schemes,
    pub root: Value,
    /// The gateway's compiled document (base path empty: templates are relative to the base URL).
    pub compiled: Document,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("ops", &self.ops.len()).finish()
    }
}

const METHODS: [(&str, Method); 7] = [
    ("get", Method::GET),
    ("post", Method::POST),
    ("put", Method::PUT),
    ("patch", Method::PATCH),
    ("delete", Method::DELETE),
    ("head", Method::HEAD),
    ("options", Method::OPTIONS),
];

impl Api {
    pub fn parse(text: &str) -> Result<Api, String> {
        let compiled = Document::parse("scan", text, false, Some(""))?;
        let root: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
        };
        let mut schemes = Schemes::default();
        for (_, s) in root.pointer("/components/securitySchemes").and_then(Value::as_object).into_iter().flatten() {
            let s = resolve(&root, s);
            match s.get("type").and_then(Value::as_str) {
                Some("http")
                    if s.get("scheme").and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case("bearer")) =>
                {
                    schemes.bearer = true
                }
                Some("oauth2" | "openIdConnect") => schemes.bearer = true,
                Some("apiKey") => {
                    let loc = match s.get("in").and_then(Value::as_str) {
                        Some("query") => In::Query,
                        Some("cookie") => In::Cookie,
                        _ => In::Header,
                    };
                    if let Some(name) = s.get("name").and_then(Value::as_str) {
                        schemes.api_keys.push((loc, name.to_owned()));
                    }
                }
                _ => {}
            }
        }
        let global_security = root.get("security").cloned();
        let mut ops = Vec::new();
        for (template, item) in root.get("paths").and_then(Value::as_object).into_iter().flatten() {
            let item = resolve(&root, item);
            let shared: Vec<Value> = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            for (key, method) in METHODS.iter() {
                let Some(op) = item.get(*key) else { continue };
                let op = resolve(&root, op);
                let mut params: Vec<Param> = Vec::new();
                for p in shared.iter().chain(op.get("parameters").and_then(Value::as_array).into_iter().flatten()) {
                    let p = resolve(&root, p);
                    let Some(name) = p.get("name").and_then(Value::as_str) else { continue };
                    let location = match p.get("in").and_then(Value::as_str) {
                        Some("path") => In::Path,
                        Some("query") => In::Query,
                        Some("header") => In::Header,
                        Some("cookie") => In::Cookie,
                        _ => continue,
                    };
                    let schema = p.get("schema").map(|s| resolve(&root, s).clone()).unwrap_or(json!({}));
                    let example = p.get("example").or_else(|| schema.get("example")).cloned();
                    params.retain(|q: &Param| !(q.name == name && q.location == location));
                    params.push(Param {
                        name: name.to_owned(),
                        location,
                        required: location == In::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false),
                        schema,
                        example,
                    });
                }
                let body = op
                    .pointer("/requestBody")
                    .map(|b| resolve(&root, b))
                    .and_then(|b| b.get("content"))
                    .and_then(Value::as_object)
                    .and_then(|c| c.iter().find(|(k, _)| k.contains("json")).map(|(_, v)| v))
                    .and_then(|m| m.get("schema"))
                    .map(|s| resolve(&root, s).clone());
                let security = op.get("security").or(global_security.as_ref());
                let secured = security.and_then(Value::as_array).is_some_and(|reqs| {
                    !reqs.is_empty() && reqs.iter().all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                });
                let scopes_admin = security.and_then(Value::as_array).into_iter().flatten().any(|r| {
                    r.as_object().into_iter().flatten().any(|(_, scopes)| {
                        scopes.as_array().into_iter().flatten().filter_map(Value::as_str).any(admin_word)
                    })
                });
                let tags_admin = op
                    .get("tags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(admin_word);
                let admin = op.get("x-admin").and_then(Value::as_bool).unwrap_or(false)
                    || scopes_admin
                    || tags_admin
                    || template.split('/').any(admin_word);
                let id = op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{} {template}", method));
                ops.push(Op { method: method.clone(), template: template.clone(), params, body, secured, admin, id });
            }
        }
        Ok(Api { ops, schemes, root, compiled })
    }

    /// Properties of a JSON answer that the operation's response schema does not declare, by the
    /// gateway's own filtering rules. Empty when the document describes no schema for `status`.
    pub fn undeclared(&self, op: &Op, status: u16, body: &Value) -> Vec<String> {
        let path = sample_path(op, &|_| None);
        let Ok(Some(matched)) = self.compiled.find(&op.method, &path) else { return Vec::new() };
        let mut filtered = body.clone();
        if !self.compiled.filter_response(matched.index, status, &mut filtered) {
            return Vec::new();
        }
        let mut gone = Vec::new();
        diff(body, &filtered, "", &mut gone);
        gone
    }

    /// Resolves a local `$ref` chain (at most 16 hops) in this document.
    pub fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        resolve(&self.root, v)
    }

    /// A sample value for a schema: `example`, `default`, the first `enum`, else by type and format.
    /// `write`: leave out `readOnly` properties.
    pub fn sample(&self, schema: &Value, write: bool) -> Value {
        self.sample_depth(schema, write, 0)
    }

    fn sample_depth(&self, schema: &Value, write: bool, depth: usize) -> Value {
        let s = self.resolve(schema);
        if depth > 8 {
            return Value::Null;
        }
        let fmt = s.get("format").and_then(Value::as_str);
        let url_like = |v: &Value| v.as_str().is_some_and(|t| t.contains("://"));
        if matches!(fmt, Some("uri" | "url" | "uri-reference" | "iri")) {
            return json!(PLACEHOLDER_URL);
        }
        if let Some(v) = s.get("example").or_else(|| s.get("default")) {
            return if url_like(v) { json!(PLACEHOLDER_URL) } else { v.clone() };
        }
        if let Some(v) = s.get("examples").and_then(Value::as_array).and_then(|a| a.first()) {
            return v.clone();
        }
        if let Some(v) = s.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
            return v.clone();
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            if let Some(branches) = s.get(key).and_then(Value::as_array) {
                if key == "allOf" {
                    let mut out = Map::new();
                    for b in branches {
                        if let Value::Object(o) = self.sample_depth(b, write, depth + 1) {
                            out.extend(o);
                        }
                    }
                    return Value::Object(out);
                }
                if let Some(first) = branches.first() {
                    return self.sample_depth(first, write, depth + 1);
                }
            }
        }
        let ty = match s.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("string"),
            _ if s.get("properties").is_some() => "object",
            _ => "string",
        };
        match ty {
            "object" => {
                let mut out = Map::new();
                for (k, p) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
                    let p = self.resolve(p);
                    if write && p.get("readOnly").and_then(Value::as_bool) == Some(true) {
                        continue;
                    }
                    out.insert(k.clone(), self.sample_depth(p, write, depth + 1));
                }
                Value::Object(out)
            }
            "array" => {
                let item = s.get("items").map(|i| self.sample_depth(i, write, depth + 1)).unwrap_or(json!("scan"));
                Value::Array(vec![item])
            }
            "integer" => json!(s.get("minimum").and_then(Value::as_i64).map_or(1, |m| m.max(1))),
            "number" => json!(s.get("minimum").and_then(Value::as_f64).map_or(1.0, |m| m.max(1.0))),
            "boolean" => json!(true),
            _ => json!(sample_string(s)),
        }
    }

    /// The `readOnly` properties of a write body's schema (top level).
    pub fn read_only(&self, schema: &Value) -> Vec<(String, Value)> {
        let s = self.resolve(schema);
        let mut out = Vec::new();
        for (k, p) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let p = self.resolve(p);
            if p.get("readOnly").and_then(Value::as_bool) == Some(true) {
                out.push((k.clone(), p.clone()));
            }
        }
        out
    }
}

fn admin_word(w: &str) -> bool {
    let w = w.to_ascii_lowercase();
    ["admin", "internal", "manage", "superuser", "root", "staff", "ops"].iter().any(|a| {
        w == *a
            || w.starts_with(&format!("{a}:"))
            || w.ends_with(&format!(":{a}"))
            || w.starts_with(a) && w.len() <= a.len() + 6
    })
}

fn sample_string(s: &Value) -> String {
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let base = match s.get("format").and_then(Value::as_str).unwrap_or("") {
        "uuid" => "3f2a6c1e-8b4d-4e7a-9c21-5d0f6b8e1a34".to_owned(),
        "email" => "scan@example.com".to_owned(),
        "date-time" => "2026-01-01T00:00:00Z".to_owned(),
        "date" => "2026-01-01".to_owned(),
        "uri" | "url" | "uri-reference" => PLACEHOLDER_URL.to_owned(),
        "ipv4" => "192.0.2.1".to_owned(),
        "ipv6" => "2001:db8::1".to_owned(),
        "hostname" => "example.com".to_owned(),
        _ => "scan".to_owned(),
    };
    if base.len() < min {
        format!("{base}{}", "x".repeat(min - base.len()))
    } else {
        base
    }
}

/// The path of `op` with each path parameter from `value` (or its example, or a sample), encoded.
pub fn sample_path(op: &Op, value: &dyn Fn(&Param) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = op.template.as_str();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + end];
        let text = match op.params.iter().find(|p| p.location == In::Path && p.name == name) {
            Some(p) => value(p).unwrap_or_else(|| default_text(p)),
            None => "1".to_owned(),
        };
        out.push_str(&percent_encoding::utf8_percent_encode(&text, SEGMENT).to_string());
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Characters escaped in a path segment or a query value.
pub const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The URL put in URL-valued parameters and properties outside the SSRF probe: a reserved name
/// (RFC 2606 `.invalid`) that never resolves. A document's own examples are never used for these: they
/// may name hosts outside the scan's scope.
pub const PLACEHOLDER_URL: &str = "https://pcs-scan.invalid/";

/// A parameter's text when nothing better is known: its example, else a sample of its schema.
/// URL-valued parameters get [`PLACEHOLDER_URL`].
pub fn default_text(p: &Param) -> String {
    if p.takes_url() {
        return PLACEHOLDER_URL.to_owned();
    }
    let v = match &p.example {
        Some(Value::String(e)) if e.contains("://") => return PLACEHOLDER_URL.to_owned(),
        Some(e) => e.clone(),
        None => match p.schema.get("type").and_then(Value::as_str) {
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            _ => p
                .schema
                .get("enum")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .cloned()
                .unwrap_or_else(|| json!(sample_string(&p.schema))),
        },
    };
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

pub fn resolve<'a>(root: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else { return v };
        let Some(pointer) = r.strip_prefix('#') else { return v };
        match root.pointer(pointer) {
            Some(next) => v = next,
            None => return v,
        }
    }
    v
}

/// JSON pointers of what `full` has and `kept` lost.
fn diff(full: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (full, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let here = format!("{at}/{k}");
                match b.get(k) {
                    None => out.push(here),
                    Some(w) => diff(v, w, &here, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff(v, w, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"
openapi: 3.0.3
info: { title: t, version: "1" }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
  schemas:
    Note:
      type: object
      properties:
        id: { type: integer, readOnly: true }
        title: { type: string, minLength: 2 }
security: [ { bearer: [] } ]
paths:
  /notes/{id}:
    get:
      parameters: [ { name: id, in: path, required: true, schema: { type: integer } } ]
      responses:
        "200": { description: ok, content: { application/json: { schema: { $ref: "#/components/schemas/Note" } } } }
  /notes:
    post:
      requestBody: { content: { application/json: { schema: { $ref: "#/components/schemas/Note" } } } }
      responses: { "201": { description: ok } }
  /admin/stats:
    get: { responses: { "200": { description: ok } } }
  /health:
    get: { security: [], responses: { "200": { description: ok } } }
"##;

    #[test]
    fn reads_operations_security_and_admin() {
        let api = Api::parse(DOC).unwrap();
        assert_eq!(api.ops.len(), 4);
        assert!(api.schemes.bearer);
        let health = api.ops.iter().find(|o| o.template == "/health").unwrap();
        assert!(!health.secured);
        let admin = api.ops.iter().find(|o| o.template == "/admin/stats").unwrap();
        assert!(admin.admin && admin.secured);
        let post = api.ops.iter().find(|o| o.method == Method::POST).unwrap();
        let body = api.sample(post.body.as_ref().unwrap(), true);
        assert_eq!(body, json!({"title": "scan"}));
        assert_eq!(api.read_only(post.body.as_ref().unwrap()).len(), 1);
    }

    #[test]
    fn undeclared_properties_by_the_gateway_rules() {
        let api = Api::parse(DOC).unwrap();
        let get = api.ops.iter().find(|o| o.template == "/notes/{id}").unwrap();
        let found = api.undeclared(get, 200, &json!({"id": 1, "title": "x", "password_hash": "h"}));
        assert_eq!(found, vec!["/password_hash".to_owned()]);
        assert!(api.undeclared(get, 200, &json!({"id": 1})).is_empty());
        assert_eq!(sample_path(get, &|_| Some("a b".into())), "/notes/a%20b");
    }
}
