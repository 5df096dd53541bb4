//! The OpenAPI positive security model: a document (3.0 or 3.1, YAML or JSON) compiled once at load
//! into its operations (path templates and methods), their path, query, header and cookie parameter
//! schemas and their JSON request body schemas, each a `jsonschema` validator.
//!
//! - Schemas are validated with JSON Schema draft 4 semantics for 3.0 documents (with `nullable`
//!   rewritten to a `null` type) and draft 2020-12 for 3.1. Local `$ref`s (`#/components/...`) resolve;
//!   remote ones are refused at load (the crate is built without retrieval).
//! - Patterns run on the `regex` crate (linear time); a pattern it cannot compile (a backreference, a
//!   lookaround) is refused at load, naming the operation and the error.
//! - Formats are validated (`email`, `date-time`, `uuid`, `ipv4`, ...); unknown ones (`int32`) pass.
//! - Errors name where (a JSON pointer into the body, or the parameter's name) and the failing JSON
//!   Schema keyword; never a value.
//!
//! Parameters arrive as text and are read as their schema's type before validation (`?n=5` is the
//! integer 5 for `type: integer`; a value that does not read is validated as text, so it fails `type`).

use crate::exchange::{FieldError, Invalid, Reject};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `openapi.NAME` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The document (YAML or JSON), read at load and at each reload.
    #[serde(default)]
    pub file: Option<String>,
    /// The document itself, as text (instead of `file`; the built-in quickstart uses it).
    #[serde(default)]
    pub inline: Option<String>,
    /// Refuse operations the document does not declare (404 for an unknown path, 405 for an
    /// undeclared method) and query parameters it does not declare (400). Default false: undeclared
    /// operations pass unvalidated.
    #[serde(default)]
    pub strict: bool,
    /// The prefix of request paths that the document's paths are relative to. Default: the path of
    /// the document's first `servers` URL (`https://api.example.com/v1` gives `/v1`), else none.
    #[serde(default)]
    pub base_path: Option<String>,
    /// Remove from JSON answers the properties the operation's response schema does not declare
    /// (excessive data exposure, OWASP API3). Default true: a route that validates against the
    /// document filters what the upstream answers by it.
    #[serde(default = "yes")]
    pub filter_responses: bool,
}

fn yes() -> bool {
    true
}

/// The compiled documents, by name.
pub type Documents = BTreeMap<String, Arc<Document>>;

/// Compiles every document of the config (an error names the document and what is wrong).
pub fn compile_all(configs: &BTreeMap<String, OpenApiConfig>) -> Result<Documents, (String, String)> {
    configs
        .iter()
        .map(|(name, c)| Document::load(name, c).map(|d| (name.clone(), Arc::new(d))).map_err(|m| (name.clone(), m)))
        .collect()
}

/// One compiled OpenAPI document.
pub struct Document {
    name: String,
    strict: bool,
    base_path: String,
    paths: Vec<PathItem>,
    operations: Vec<Operation>,
    /// The document as parsed (3.0's `nullable` rewritten), for response filtering's `$ref`s.
    root: Value,
    /// `filter_responses` (see [`OpenApiConfig`]).
    filter_responses: bool,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document").field("name", &self.name).field("operations", &self.operations.len()).finish()
    }
}

struct PathItem {
    segments: Vec<Seg>,
    /// Indexes into `operations`, by method.
    methods: Vec<(Method, usize)>,
}

enum Seg {
    Literal(String),
    /// `{name}`, with the literal text around it in the segment (`{id}.json`).
    Param {
        prefix: String,
        name: String,
        suffix: String,
    },
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

/// How a parameter's text is read before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    /// Every occurrence (and comma-separated items unless exploded), each read as the item kind.
    Array(Scalar),
    /// Not validated (deepObject and friends are not read).
    Object,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Text,
    Integer,
    Number,
    Boolean,
}

struct Param {
    name: String,
    location: In,
    required: bool,
    kind: Kind,
    explode: bool,
    schema: Option<Arc<jsonschema::Validator>>,
}

/// One operation (a method on a path template).
pub struct Operation {
    method: Method,
    template: String,
    params: Vec<Param>,
    body: Option<RequestBody>,
    /// Response schemas by status key (`200`, `4XX`, `default`), JSON ones only.
    responses: Vec<(String, Value)>,
}

struct RequestBody {
    required: bool,
    /// Media ranges the operation accepts (lower-case, `*` allowed), each with its schema if JSON.
    content: Vec<(String, Option<Arc<jsonschema::Validator>>)>,
}

impl std::fmt::Debug for Matched<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matched").field("template", &self.operation.template).finish()
    }
}

/// A request matched to an operation of the document: what the route's validation holds on to.
pub struct Matched<'d> {
    pub operation: &'d Operation,
    /// Index of the operation, for [`Document::filter_response`].
    pub index: usize,
    /// Path parameters, percent-decoded.
    path_params: Vec<(&'d str, String)>,
}

/// Most `$ref` hops followed for one parameter, request body or response object.
const MAX_REF_HOPS: usize = 16;

impl Document {
    fn load(name: &str, c: &OpenApiConfig) -> Result<Document, String> {
        let (text, source) = match (&c.file, &c.inline) {
            (Some(file), None) => (
                std::fs::read_to_string(file)
                    .map_err(|e| format!("openapi.{name}.file `{file}` cannot be read: {}", e.kind()))?,
                format!("`{file}`"),
            ),
            (None, Some(text)) => (text.clone(), "inline".to_owned()),
            _ => return Err(format!("openapi.{name} needs exactly one of `file` or `inline`")),
        };
        let mut doc = Document::parse(name, &text, c.strict, c.base_path.as_deref())
            .map_err(|m| format!("openapi.{name} ({source}): {m}"))?;
        doc.filter_responses = c.filter_responses;
        Ok(doc)
    }

    /// Parses and compiles a document's text (YAML, of which JSON is a subset).
    pub fn parse(name: &str, text: &str, strict: bool, base_path: Option<&str>) -> Result<Document, String> {
        let mut root: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
        };
        let version = match root.get("openapi") {
            Some(Value::String(v)) => v.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("no `openapi` version field (this reads OpenAPI 3.0 and 3.1)".into()),
        };
        let draft = if version.starts_with("3.0.") {
            nullable_to_type(&mut root, 0);
            jsonschema::Draft::Draft4
        } else if version.starts_with("3.1.") {
            jsonschema::Draft::Draft202012
        } else {
            return Err(format!("OpenAPI version `{version}` is not supported (3.0.x or 3.1.x)"));
        };
        let base_path = match base_path {
            Some(b) => b.trim_end_matches('/').to_owned(),
            None => default_base_path(&root),
        };
        let compiler = Compiler { root: &root, draft, compiled: Default::default() };
        let mut paths = Vec::new();
        let mut operations = Vec::new();
        let Some(path_map) = root.get("paths").and_then(Value::as_object) else {
            return Err("no `paths` object".into());
        };
        for (template, item) in path_map {
            let item = compiler.resolve(item).map_err(|m| format!("paths.{template}: {m}"))?;
            let segments = parse_template(template)?;
            let shared = item.get("parameters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let mut methods = Vec::new();
            for (m, op) in item.as_object().into_iter().flatten() {
                let method = match m.as_str() {
                    "get" => Method::GET,
                    "put" => Method::PUT,
                    "post" => Method::POST,
                    "delete" => Method::DELETE,
                    "options" => Method::OPTIONS,
                    "head" => Method::HEAD,
                    "patch" => Method::PATCH,
                    "trace" => Method::TRACE,
                    _ => continue,
                };
                let at = format!("{} {template}", method.as_str());
                let operation =
                    compiler.operation(&method, template, shared, op, &segments).map_err(|m| format!("{at}: {m}"))?;
                methods.push((method, operations.len()));
                operations.push(operation);
            }
            paths.push(PathItem { segments, methods });
        }
        // Concrete paths before templated ones (OpenAPI: `/pets/mine` wins over `/pets/{id}`).
        paths.sort_by_key(|a| specificity(&a.segments));
        Ok(Document { name: name.to_owned(), strict, base_path, paths, operations, root, filter_responses: true })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Number of operations (for `check`).
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    /// The operation for a method and a (normalised) request path. `Ok(None)`: the document does not
    /// declare it and is not strict. Strict: 404 for an unknown path, 405 for an undeclared method.
    /// Literal segments compare without regard to ASCII case and one trailing slash is ignored, as
    /// routes match by default, so `/PETS/` cannot slip past the `/pets` operation's checks.
    pub fn find(&self, method: &Method, path: &str) -> Result<Option<Matched<'_>>, Reject> {
        let rest = match strip_base(path, &self.base_path) {
            Some(r) => r,
            None if self.strict => return Err(Reject::NotFound),
            None => return Ok(None),
        };
        let rest = if rest.len() > 1 { rest.strip_suffix('/').unwrap_or(rest) } else { rest };
        let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
        for item in &self.paths {
            let Some(path_params) = match_template(&item.segments, &segments) else { continue };
            // HEAD is served by a GET operation when the document declares no HEAD.
            let found = item.methods.iter().find(|(m, _)| m == method).or_else(|| {
                (method == Method::HEAD).then(|| item.methods.iter().find(|(m, _)| m == Method::GET)).flatten()
            });
            return match found {
                Some(&(_, index)) => Ok(Some(Matched { operation: &self.operations[index], index, path_params })),
                None if self.strict => {
                    Err(Reject::MethodNotAllowed(item.methods.iter().map(|(m, _)| m.clone()).collect()))
                }
                None => Ok(None),
            };
        }
        if self.strict {
            Err(Reject::NotFound)
        } else {
            Ok(None)
        }
    }

    /// Operation `index` (from [`Matched::index`]).
    pub fn operation(&self, index: usize) -> Option<&Operation> {
        self.operations.get(index)
    }

    /// The path template of operation `index` (for logs and `check`).
    pub fn template(&self, index: usize) -> Option<&str> {
        self.operations.get(index).map(|o| o.template.as_str())
    }

    /// Removes from a JSON response body the properties that the response schema of operation
    /// `operation` for `status` does not declare (excessive data exposure, OWASP API3), recursively
    /// through `properties`, `items`, `allOf`/`anyOf`/`oneOf` (a property any branch declares is
    /// kept) and local `$ref`s. An object schema that declares no properties, or allows
    /// `additionalProperties` (true or a schema), keeps what it has; a `writeOnly` property is always
    /// removed. Returns true if anything was
    /// removed. A status the document does not describe (and no `default`) leaves the body as it is.
    pub fn filter_response(&self, operation: usize, status: u16, body: &mut Value) -> bool {
        match self.response_schema(operation, status) {
            Some(schema) => self.filter(schema, body, 0),
            None => false,
        }
    }

    /// True if answers to operation `operation` with `status` are filtered: the document says
    /// `filter_responses` and describes a JSON answer for that status (or a range or `default`).
    pub fn filters_response(&self, operation: usize, status: u16) -> bool {
        self.filter_responses && self.response_schema(operation, status).is_some()
    }

    /// The JSON response schema of an operation for a status: the exact code, then `4XX`-style
    /// ranges, then `default`.
    fn response_schema(&self, operation: usize, status: u16) -> Option<&Value> {
        let op = self.operations.get(operation)?;
        // Compared without formatting the status: this runs for every answer on a validated route.
        let exact = |k: &str| k.parse::<u16>().ok() == Some(status);
        let range = |k: &str| {
            let b = k.as_bytes();
            b.len() == 3 && u16::from(b[0]) == u16::from(b'0') + status / 100 && b[1..].eq_ignore_ascii_case(b"XX")
        };
        op.responses
            .iter()
            .find(|(k, _)| exact(k))
            .or_else(|| op.responses.iter().find(|(k, _)| range(k)))
            .or_else(|| op.responses.iter().find(|(k, _)| k == "default"))
            .map(|(_, s)| s)
    }

    fn deref<'a>(&'a self, mut schema: &'a Value) -> Option<&'a Value> {
        for _ in 0..MAX_REF_HOPS {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => schema = self.root.pointer(&unescape_ref(r.strip_prefix('#')?))?,
                None => return Some(schema),
            }
        }
        None
    }

    /// The properties a schema declares (with its `allOf`/`anyOf`/`oneOf` branches), or `None` when it
    /// leaves an object open.
    fn declared<'a>(&'a self, schema: &'a Value, depth: usize, out: &mut Vec<(&'a str, &'a Value)>) -> bool {
        let Some(schema) = self.deref(schema) else { return false };
        if depth > 32 {
            return false;
        }
        let mut closed = false;
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            // A `writeOnly` property (a password) is never part of a response.
            let readable = |v: &Value| self.deref(v).is_none_or(|v| v.get("writeOnly") != Some(&Value::Bool(true)));
            out.extend(props.iter().filter(|(_, v)| readable(v)).map(|(k, v)| (k.as_str(), v)));
            closed = true;
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for branch in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
                if !self.declared(branch, depth + 1, out) {
                    return false;
                }
                closed = true;
            }
        }
        match schema.get("additionalProperties") {
            Some(Value::Bool(true)) | Some(Value::Object(_)) => false,
            _ => closed,
        }
    }

    fn filter(&self, schema: &Value, body: &mut Value, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        let Some(schema) = self.deref(schema) else { return false };
        match body {
            Value::Object(map) => {
                let mut declared = Vec::new();
                if !self.declared(schema, 0, &mut declared) {
                    return false;
                }
                let before = map.len();
                map.retain(|k, _| declared.iter().any(|(name, _)| name == k));
                let mut changed = map.len() != before;
                for (k, v) in map.iter_mut() {
                    // A property declared by several branches is filtered by the first.
                    if let Some((_, s)) = declared.iter().find(|(name, _)| name == k) {
                        changed |= self.filter(s, v, depth + 1);
                    }
                }
                changed
            }
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else { return false };
                let mut changed = false;
                for v in items {
                    changed |= self.filter(item_schema, v, depth + 1);
                }
                changed
            }
            _ => false,
        }
    }
}

impl Operation {
    /// The method and path template (for logs).
    pub fn describe(&self) -> (&Method, &str) {
        (&self.method, &self.template)
    }

    /// Whether the operation declares a request body.
    pub fn has_body(&self) -> bool {
        self.body.is_some()
    }

    /// Whether the operation declares a request body of this media type (`None` when it declares no
    /// body: any type goes to the route's own list).
    pub fn accepts(&self, essence: &str) -> Option<bool> {
        let body = self.body.as_ref()?;
        Some(body.content.iter().any(|(range, _)| media_range_matches(range, essence)))
    }

    /// Checks the parameters of the request: path, query, header and cookie, and in a strict document
    /// that the query names no parameter the operation does not declare.
    pub fn check_params(
        &self,
        m: &Matched<'_>,
        parts: &http::request::Parts,
        strict: bool,
        errors: &mut Vec<FieldError>,
    ) {
        let query = parts.uri.query().unwrap_or("");
        let query_pairs: Vec<(String, String)> = if query.is_empty() {
            Vec::new()
        } else {
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (form_decode(k), form_decode(v))
                })
                .collect()
        };
        if strict {
            for (k, _) in &query_pairs {
                let declared = self.params.iter().any(|p| p.location == In::Query && p.name.eq_ignore_ascii_case(k));
                let pointer = crate::json::capped(k);
                if !declared && !errors.iter().any(|e| e.location == "query" && *e.pointer == *pointer) {
                    errors.push(FieldError {
                        location: "query",
                        pointer: pointer.into(),
                        code: "undeclared",
                        offset: None,
                    });
                }
            }
        }
        for p in &self.params {
            let values: Vec<&str> = match p.location {
                In::Path => m.path_params.iter().filter(|(n, _)| *n == p.name).map(|(_, v)| v.as_str()).collect(),
                // Names compare without regard to ASCII case: frameworks that read `LIMIT` as `limit`
                // must not get an unvalidated value (and `limit=1&LIMIT=x` is a repeated parameter).
                In::Query => query_pairs
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(&p.name))
                    .map(|(_, v)| v.as_str())
                    .collect(),
                In::Header => parts.headers.get_all(p.name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect(),
                In::Cookie => parts
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|line| line.split(';'))
                    .filter_map(|c| c.trim().split_once('='))
                    .filter(|(k, _)| *k == p.name)
                    .map(|(_, v)| v)
                    .collect(),
            };
            let error = |code| FieldError {
                location: p.location.as_str(),
                pointer: p.name.as_str().into(),
                code,
                offset: None,
            };
            if values.is_empty() {
                if p.required {
                    errors.push(error("required"));
                }
                continue;
            }
            let Some(schema) = &p.schema else { continue };
            let value = match p.kind {
                Kind::Object => continue,
                Kind::Array(item) => {
                    let items: Vec<Value> = if p.explode {
                        values.iter().map(|v| read_scalar(v, item)).collect()
                    } else {
                        values.iter().flat_map(|v| v.split(',')).map(|v| read_scalar(v, item)).collect()
                    };
                    Value::Array(items)
                }
                _ if values.len() > 1 => {
                    // One value expected, several sent: parsers disagree on which one counts.
                    errors.push(error("repeated"));
                    continue;
                }
                Kind::Text => read_scalar(values[0], Scalar::Text),
                Kind::Integer => read_scalar(values[0], Scalar::Integer),
                Kind::Number => read_scalar(values[0], Scalar::Number),
                Kind::Boolean => read_scalar(values[0], Scalar::Boolean),
            };
            let code = schema.iter_errors(&value).next().map(|e| keyword_code(e.kind().keyword()));
            if let Some(code) = code {
                errors.push(error(code));
            }
        }
    }

    /// Whether a body of this media type has a schema to be validated against.
    pub fn has_schema_for(&self, essence: &str) -> bool {
        self.body.as_ref().is_some_and(|b| {
            b.content.iter().find(|(range, _)| media_range_matches(range, essence)).is_some_and(|(_, s)| s.is_some())
        })
    }

    /// Checks a JSON request body (parsed) against the schema for its media type.
    pub fn check_body(&self, essence: &str, body: &Value, errors: &mut Vec<FieldError>) {
        let Some(rb) = &self.body else { return };
        let Some((_, Some(schema))) = rb.content.iter().find(|(range, _)| media_range_matches(range, essence)) else {
            return;
        };
        for e in schema.iter_errors(body).take(MAX_ERRORS) {
            let mut pointer = e.instance_path().as_str().to_owned();
            // `required` names the missing property (a name from the document, not the request).
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                if let Some(name) = property.as_str() {
                    pointer.push('/');
                    pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                }
            }
            errors.push(FieldError {
                location: "body",
                pointer: crate::json::capped(&pointer).into(),
                code: keyword_code(e.kind().keyword()),
                offset: None,
            });
        }
    }

    /// Whether the operation requires a body and none was sent.
    pub fn body_required(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.required)
    }
}

/// At most this many errors are listed in one answer.
pub const MAX_ERRORS: usize = 20;

/// The refusal for a list of errors: 400 `invalid-request`.
pub fn invalid(reason: &'static str, errors: Vec<FieldError>) -> Reject {
    Reject::Invalid(Box::new(Invalid { status: StatusCode::BAD_REQUEST, reason, errors }))
}

/// The JSON Schema keyword as a `'static` code (the crate's keyword names are not `'static`).
fn keyword_code(keyword: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "type",
        "required",
        "enum",
        "const",
        "format",
        "pattern",
        "additionalProperties",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "properties",
        "patternProperties",
        "propertyNames",
        "items",
        "additionalItems",
        "prefixItems",
        "contains",
        "minContains",
        "maxContains",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "contentEncoding",
        "contentMediaType",
        "$ref",
        "false",
    ];
    KNOWN.iter().find(|k| **k == keyword).copied().unwrap_or("schema")
}

/// A query name or value as forms encode it: `+` is a space, then percent-decoding (lossy UTF-8).
fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

fn read_scalar(text: &str, kind: Scalar) -> Value {
    let parsed = match kind {
        Scalar::Text => None,
        Scalar::Integer => text.parse::<i64>().ok().map(Value::from),
        Scalar::Number => text.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(|f| {
            text.parse::<i64>().ok().map(Value::from).or_else(|| serde_json::Number::from_f64(f).map(Value::Number))
        }),
        Scalar::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// `application/json` matches `application/json`, `application/*` and `*/*`.
fn media_range_matches(range: &str, essence: &str) -> bool {
    if range == "*/*" || range == essence {
        return true;
    }
    match range.strip_suffix("/*") {
        Some(top) => essence.split('/').next() == Some(top),
        None => false,
    }
}

fn strip_base<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    if base.is_empty() {
        return Some(path);
    }
    let head = path.get(..base.len())?;
    if !head.eq_ignore_ascii_case(base) {
        return None;
    }
    let rest = &path[base.len()..];
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn default_base_path(root: &Value) -> String {
    let Some(url) = root.pointer("/servers/0/url").and_then(Value::as_str) else { return String::new() };
    if url.contains('{') {
        return String::new();
    }
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("", |j| &url[i + 3 + j..]),
        None => url,
    };
    path.trim_end_matches('/').to_owned()
}

fn parse_template(template: &str) -> Result<Vec<Seg>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(format!("path `{template}` does not start with `/`"));
    };
    let rest = if rest.len() > 1 { rest.strip_suffix('/').unwrap_or(rest) } else { rest };
    rest.split('/')
        .map(|seg| match seg.find('{') {
            None if seg.contains('}') => Err(format!("path `{template}`: unbalanced `}}` in `{seg}`")),
            None => Ok(Seg::Literal(seg.to_owned())),
            Some(open) => {
                let close = seg[open..]
                    .find('}')
                    .map(|c| open + c)
                    .ok_or_else(|| format!("path `{template}`: unclosed `{{` in `{seg}`"))?;
                let (prefix, name, suffix) = (&seg[..open], &seg[open + 1..close], &seg[close + 1..]);
                if name.is_empty() || suffix.contains(['{', '}']) {
                    return Err(format!("path `{template}`: one parameter per segment is supported, in `{seg}`"));
                }
                Ok(Seg::Param { prefix: prefix.to_owned(), name: name.to_owned(), suffix: suffix.to_owned() })
            }
        })
        .collect()
}

/// Sort key: literal segments first, earlier segments weigh more.
fn specificity(segments: &[Seg]) -> Vec<u8> {
    segments.iter().map(|s| u8::from(matches!(s, Seg::Param { .. }))).collect()
}

fn match_template<'t>(template: &'t [Seg], segments: &[&str]) -> Option<Vec<(&'t str, String)>> {
    if template.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, s) in template.iter().zip(segments) {
        match t {
            Seg::Literal(l) => {
                if !l.eq_ignore_ascii_case(s) {
                    return None;
                }
            }
            Seg::Param { prefix, name, suffix } => {
                if s.len() < prefix.len() + suffix.len() + 1 {
                    return None;
                }
                let (head, tail) = (s.get(..prefix.len())?, s.get(s.len() - suffix.len()..)?);
                if !head.eq_ignore_ascii_case(prefix) || !tail.eq_ignore_ascii_case(suffix) {
                    return None;
                }
                let value = s.get(prefix.len()..s.len() - suffix.len())?;
                params.push((
                    name.as_str(),
                    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned(),
                ));
            }
        }
    }
    Some(params)
}

/// Every local `$ref` (`#/...`, as a JSON pointer) in a schema, bounded in depth.
fn local_refs<'v>(v: &'v Value, out: &mut Vec<&'v str>, depth: usize) {
    if depth > 256 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => {
                        if let Some(p) = r.strip_prefix('#') {
                            out.push(p);
                        }
                    }
                    _ => local_refs(child, out, depth + 1),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|c| local_refs(c, out, depth + 1)),
        _ => {}
    }
}

/// One JSON pointer segment, unescaped (`~1` is `/`, `~0` is `~`), after percent-decoding.
fn unescape_segment(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg).decode_utf8_lossy().replace("~1", "/").replace("~0", "~")
}

fn unescape_ref(pointer: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy();
    decoded.into_owned()
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema says it: `null` added to `type` (and to `enum`).
fn nullable_to_type(v: &mut Value, depth: usize) {
    if depth > 256 {
        return;
    }
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
                    }
                    Some(Value::Array(list)) if !list.iter().any(|t| t == "null") => list.push("null".into()),
                    _ => {}
                }
                if let Some(Value::Array(list)) = map.get_mut("enum") {
                    if !list.contains(&Value::Null) {
                        list.push(Value::Null);
                    }
                }
            }
            for child in map.values_mut() {
                nullable_to_type(child, depth + 1);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|c| nullable_to_type(c, depth + 1)),
        _ => {}
    }
}

struct Compiler<'a> {
    /// Validators by their schema's text: a schema used by many operations (`{ $ref: Order }`,
    /// `{ type: integer }`) is compiled once.
    compiled: std::cell::RefCell<std::collections::HashMap<String, Arc<jsonschema::Validator>>>,
    root: &'a Value,
    draft: jsonschema::Draft,
}

impl Compiler<'_> {
    /// Follows local `$ref`s of a parameter, request body, response or path item object.
    fn resolve<'v>(&'v self, mut v: &'v Value) -> Result<&'v Value, String> {
        for _ in 0..MAX_REF_HOPS {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let Some(local) = r.strip_prefix('#') else {
                        return Err(format!("`$ref: {r}` is not local (only `#/...` references resolve)"));
                    };
                    v = self
                        .root
                        .pointer(&unescape_ref(local))
                        .ok_or_else(|| format!("`$ref: {r}` does not resolve"))?;
                }
                None => return Ok(v),
            }
        }
        Err("`$ref` chain too long (or a cycle)".into())
    }

    /// A validator for one schema of the document: the schema under `allOf`, beside a copy of just the
    /// parts of the document its local `$ref`s reach (transitively), at the same places, so
    /// `#/components/...` references resolve and a large document is not copied per schema.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self.compiled.borrow().get(&key) {
            return Ok(v.clone());
        }
        let v = Arc::new(self.build(schema)?);
        self.compiled.borrow_mut().insert(key, v.clone());
        Ok(v)
    }

    fn build(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut wrapped = Map::new();
        wrapped.insert("allOf".into(), Value::Array(vec![schema.clone()]));
        let mut reached = Value::Object(Map::new());
        let mut pending: Vec<&Value> = vec![schema];
        let mut copied = std::collections::HashSet::new();
        while let Some(v) = pending.pop() {
            let mut refs = Vec::new();
            local_refs(v, &mut refs, 0);
            for r in refs {
                // The entry a reference lands in: its first three segments (`components/schemas/Pet`).
                let entry: Vec<&str> = r.split('/').skip(1).take(3).collect();
                if entry.first().is_none_or(|s| *s == "allOf") || !copied.insert(entry.join("/")) {
                    continue;
                }
                let pointer = format!("/{}", entry.join("/"));
                let Some(target) = self.root.pointer(&unescape_ref(&pointer)) else { continue };
                let mut at = &mut reached;
                for seg in &entry {
                    let key = unescape_segment(seg);
                    let Value::Object(map) = at else { break };
                    at = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
                }
                *at = target.clone();
                pending.push(target);
            }
        }
        if let Value::Object(top) = reached {
            wrapped.extend(top);
        }
        jsonschema::options()
            .with_draft(self.draft)
            .should_validate_formats(true)
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&Value::Object(wrapped))
            .map_err(|e| {
                let at =
                    e.schema_path().as_str().strip_prefix("/allOf/0").unwrap_or(e.schema_path().as_str()).to_owned();
                let at = if at.is_empty() { String::new() } else { format!(" at schema `{at}`") };
                format!(
                    "schema{at} cannot be compiled: {e} (patterns must compile on the linear-time `regex` engine: \
                     no backreferences or lookaround)"
                )
            })
    }

    /// The schema's type, as parameters read their text.
    fn kind(&self, schema: &Value) -> Kind {
        let schema = self.resolve(schema).unwrap_or(schema);
        let ty = |s: &Value| -> Option<String> {
            match s.get("type") {
                Some(Value::String(t)) => Some(t.clone()),
                Some(Value::Array(list)) => {
                    list.iter().filter_map(Value::as_str).find(|t| *t != "null").map(str::to_owned)
                }
                _ => None,
            }
        };
        let scalar = |t: Option<String>| match t.as_deref() {
            Some("integer") => Scalar::Integer,
            Some("number") => Scalar::Number,
            Some("boolean") => Scalar::Boolean,
            _ => Scalar::Text,
        };
        match ty(schema).as_deref() {
            Some("array") => {
                let item = schema.get("items").map(|i| self.resolve(i).unwrap_or(i));
                Kind::Array(scalar(item.and_then(ty)))
            }
            Some("object") => Kind::Object,
            Some("integer") => Kind::Integer,
            Some("number") => Kind::Number,
            Some("boolean") => Kind::Boolean,
            _ => Kind::Text,
        }
    }

    fn operation(
        &self,
        method: &Method,
        template: &str,
        shared: &[Value],
        op: &Value,
        segments: &[Seg],
    ) -> Result<Operation, String> {
        let mut params: Vec<Param> = Vec::new();
        let own = op.get("parameters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        // The operation's own parameters override the path item's of the same name and place.
        for p in own.iter().chain(shared) {
            let p = self.resolve(p)?;
            let name = p.get("name").and_then(Value::as_str).ok_or("a parameter has no `name`")?;
            let location = match p.get("in").and_then(Value::as_str) {
                Some("path") => In::Path,
                Some("query") => In::Query,
                Some("header") => In::Header,
                Some("cookie") => In::Cookie,
                other => {
                    return Err(format!(
                        "parameter `{name}`: `in: {}` is not one of path, query, header, cookie",
                        other.unwrap_or("(none)")
                    ))
                }
            };
            if params.iter().any(|q| q.name == name && q.location == location) {
                continue;
            }
            let name = if location == In::Header { name.to_ascii_lowercase() } else { name.to_owned() };
            if location == In::Path && !segments.iter().any(|s| matches!(s, Seg::Param { name: n, .. } if *n == name)) {
                return Err(format!("path parameter `{name}` is not in the path template"));
            }
            if location == In::Header && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("header parameter `{name}` is not a valid header name"));
            }
            let schema_value = p.get("schema").or_else(|| {
                // `content: { media: { schema } }` instead of `schema`: read as text.
                p.get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| c.values().next())
                    .and_then(|m| m.get("schema"))
            });
            let schema =
                schema_value.map(|s| self.validator(s)).transpose().map_err(|m| format!("parameter `{name}`: {m}"))?;
            let kind =
                if p.get("schema").is_some() { schema_value.map_or(Kind::Text, |s| self.kind(s)) } else { Kind::Text };
            let style_form = p.get("style").and_then(Value::as_str).is_none_or(|s| s == "form");
            let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(location == In::Query && style_form);
            let required = location == In::Path || p.get("required").and_then(Value::as_bool).unwrap_or(false);
            params.push(Param { name, location, required, kind, explode, schema });
        }
        let body = match op.get("requestBody") {
            None => None,
            Some(rb) => {
                let rb = self.resolve(rb)?;
                let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
                let mut content = Vec::new();
                for (media, obj) in rb.get("content").and_then(Value::as_object).into_iter().flatten() {
                    let essence = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                    let json = essence == "application/json" || essence.ends_with("+json");
                    let schema = match obj.get("schema") {
                        Some(s) if json => {
                            Some(self.validator(s).map_err(|m| format!("request body `{essence}`: {m}"))?)
                        }
                        _ => None,
                    };
                    content.push((essence, schema));
                }
                Some(RequestBody { required, content })
            }
        };
        let mut responses = Vec::new();
        for (status, resp) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
            let resp = self.resolve(resp)?;
            let schema = resp.get("content").and_then(Value::as_object).and_then(|c| {
                c.iter()
                    .find(|(m, _)| {
                        let m = m.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                        m == "application/json" || m.ends_with("+json")
                    })
                    .and_then(|(_, o)| o.get("schema"))
            });
            if let Some(s) = schema {
                responses.push((status.clone(), s.clone()));
            }
        }
        Ok(Operation { method: method.clone(), template: template.to_owned(), params, body, responses })
    }
}

/// `portcullis openapi import`: the `openapi:` and `routes:` sections a document implies, as YAML.
/// The document is compiled first (a broken one is refused with the same message `check` gives).
/// One route per path template (with the base path), its declared methods, `validate: { openapi }`,
/// and a placeholder `auth` that names no authenticator, so the config does not compile until the
/// user chooses how callers authenticate: a route is never public by accident.
pub fn import(file: &str, text: &str, name: &str, upstream: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    let doc = Document::parse(name, text, true, None)?;
    let root = &doc.root;
    let title = root.pointer("/info/title").and_then(Value::as_str).unwrap_or("(untitled)");
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Routes implied by the OpenAPI document {} ({}), from `portcullis openapi import`.",
        q(file),
        q(title)
    );
    let _ = writeln!(
        out,
        "# Merge into your config, declare the upstream {} under `upstreams:`, and choose each",
        q(upstream)
    );
    let _ = writeln!(out, "# route's `auth` (see the note on the first route).");
    let _ = writeln!(out, "openapi:\n  {}:\n    file: {}", q(name), q(file));
    let _ = writeln!(
        out,
        "    # refuse operations (404/405) and query parameters the document does not declare\n    strict: true"
    );
    if !doc.base_path.is_empty() {
        let _ = writeln!(out, "    base_path: {}", q(&doc.base_path));
    }
    let _ = writeln!(out, "routes:");
    let mut names = std::collections::HashSet::new();
    let paths = root.get("paths").and_then(Value::as_object).ok_or("no `paths` object")?;
    for (i, (template, item)) in paths.iter().enumerate() {
        let methods: Vec<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if methods.is_empty() {
            continue;
        }
        // The route's path: the document's template where routes can say it (whole-segment
        // parameters with plain names); otherwise the literal prefix before the first parameter.
        let full = format!("{}{}", doc.base_path, template);
        let mut route_path = String::new();
        let mut is_template = false;
        let mut prefix_only = false;
        for seg in full.split('/').skip(1) {
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
                    let clean: String = p.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    route_path.push_str(&format!("/{{{clean}}}"));
                    is_template = true;
                }
                _ if seg.contains(['{', '}']) => {
                    prefix_only = true;
                    break;
                }
                _ => {
                    route_path.push('/');
                    route_path.push_str(seg);
                }
            }
        }
        if route_path.is_empty() {
            route_path.push('/');
        }
        let kind = if prefix_only {
            "prefix"
        } else if is_template {
            "template"
        } else {
            "exact"
        };
        let slug: String = template
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let mut route_name = if slug.is_empty() { format!("{name}-root") } else { format!("{name}-{slug}") };
        if !names.insert(route_name.clone()) {
            route_name = format!("{route_name}-{i}");
            names.insert(route_name.clone());
        }
        let _ = writeln!(out, "  - name: {}", q(&route_name));
        let _ = writeln!(out, "    match:");
        if prefix_only {
            let _ = writeln!(
                out,
                "      # {} has a parameter inside a segment, which routes cannot match: this prefix covers it",
                q(template)
            );
        }
        let _ = writeln!(out, "      path: {{ {kind}: {} }}", q(&route_path));
        let _ = writeln!(out, "      methods: [{}]", methods.join(", "));
        let _ = writeln!(out, "    upstream: {}", q(upstream));
        if i == 0 {
            let _ = writeln!(
                out,
                "    # Choose how callers authenticate: `auth: none` for a public route, or the name of an"
            );
            let _ = writeln!(
                out,
                "    # authenticator (with `authorize: authenticated` or roles). The placeholder names no"
            );
            let _ = writeln!(out, "    # authenticator, so `portcullis check` refuses the config until you choose.");
        }
        let _ = writeln!(out, "    auth: CHOOSE-AUTH");
        let _ = writeln!(out, "    validate: {{ openapi: {} }}", q(name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETS: &str = r##"
openapi: 3.0.3
info: { title: Pets, version: "1" }
servers: [ { url: "https://api.example.com/v1" } ]
paths:
  /pets:
    get:
      parameters:
        - { name: limit, in: query, schema: { type: integer, minimum: 1, maximum: 100 } }
        - { name: tag, in: query, schema: { type: array, items: { type: string, enum: [cat, dog] } } }
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { type: array, items: { $ref: "#/components/schemas/Pet" } }
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/NewPet" }
      responses: { "201": { description: created } }
  /pets/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer } }
    get:
      responses:
        "200":
          description: ok
          content: { application/json: { schema: { $ref: "#/components/schemas/Pet" } } }
  /pets/mine:
    get: { responses: { "200": { description: ok } } }
components:
  schemas:
    NewPet:
      type: object
      additionalProperties: false
      required: [name]
      properties:
        name: { type: string, pattern: "^[A-Za-z ]+$", maxLength: 20 }
        email: { type: string, format: email }
        nickname: { type: string, nullable: true }
        password: { type: string, writeOnly: true }
    Pet:
      allOf:
        - $ref: "#/components/schemas/NewPet"
        - type: object
          properties:
            id: { type: integer }
            owner: { type: object, properties: { name: { type: string } } }
"##;

    fn doc(strict: bool) -> Document {
        Document::parse("pets", PETS, strict, None).unwrap()
    }

    fn body_errors(d: &Document, body: Value) -> Vec<(String, &'static str)> {
        let m = d.find(&Method::POST, "/v1/pets").unwrap().unwrap();
        let mut errors = Vec::new();
        m.operation.check_body("application/json", &body, &mut errors);
        errors.into_iter().map(|e| (e.pointer.to_string(), e.code)).collect()
    }

    #[test]
    fn finds_operations_literal_first_and_strictly() {
        let d = doc(true);
        assert_eq!(d.find(&Method::GET, "/v1/pets/mine").unwrap().unwrap().operation.template, "/pets/mine");
        let m = d.find(&Method::GET, "/v1/pets/7").unwrap().unwrap();
        assert_eq!(m.operation.template, "/pets/{id}");
        assert_eq!(m.path_params, vec![("id", "7".to_owned())]);
        assert!(d.find(&Method::GET, "/V1/PETS/").unwrap().is_some());
        assert_eq!(d.find(&Method::GET, "/v1/owners").unwrap_err(), Reject::NotFound);
        assert_eq!(d.find(&Method::GET, "/v2/pets").unwrap_err(), Reject::NotFound);
        assert!(
            matches!(d.find(&Method::DELETE, "/v1/pets").unwrap_err(), Reject::MethodNotAllowed(m) if m.len() == 2)
        );
        let lax = doc(false);
        assert!(lax.find(&Method::GET, "/v1/owners").unwrap().is_none());
        assert!(lax.find(&Method::DELETE, "/v1/pets").unwrap().is_none());
    }

    #[test]
    fn bodies_are_validated_by_pointer_and_keyword() {
        let d = doc(true);
        assert!(body_errors(&d, serde_json::json!({"name": "Rex", "nickname": null})).is_empty());
        assert_eq!(body_errors(&d, serde_json::json!({"name": 5})), vec![("/name".into(), "type")]);
        assert_eq!(body_errors(&d, serde_json::json!({})), vec![("/name".into(), "required")]);
        assert_eq!(body_errors(&d, serde_json::json!({"name": "R3x"})), vec![("/name".into(), "pattern")]);
        assert_eq!(
            body_errors(&d, serde_json::json!({"name": "Rex", "email": "nope"})),
            vec![("/email".into(), "format")]
        );
        assert_eq!(
            body_errors(&d, serde_json::json!({"name": "Rex", "role": "admin"})),
            vec![("".into(), "additionalProperties")]
        );
    }

    #[test]
    fn parameters_are_read_as_their_type() {
        let d = doc(true);
        let check = |target: &str| {
            let req = http::Request::get(target).body(()).unwrap();
            let (parts, ()) = req.into_parts();
            let m = d.find(&parts.method, parts.uri.path()).unwrap().unwrap();
            let mut errors = Vec::new();
            m.operation.check_params(&m, &parts, d.strict, &mut errors);
            errors.into_iter().map(|e| (e.location, e.pointer.to_string(), e.code)).collect::<Vec<_>>()
        };
        assert!(check("/v1/pets?limit=5&tag=cat&tag=dog").is_empty());
        assert_eq!(check("/v1/pets?limit=five"), vec![("query", "limit".into(), "type")]);
        assert_eq!(check("/v1/pets?limit=500"), vec![("query", "limit".into(), "maximum")]);
        assert_eq!(check("/v1/pets?limit=1&limit=2"), vec![("query", "limit".into(), "repeated")]);
        assert_eq!(check("/v1/pets?LIMIT=five"), vec![("query", "limit".into(), "type")]);
        assert_eq!(check("/v1/pets?limit=1&Limit=x"), vec![("query", "limit".into(), "repeated")]);
        assert_eq!(check("/v1/pets?li%6Dit=x"), vec![("query", "limit".into(), "type")]);
        assert_eq!(check("/v1/pets?tag=cow"), vec![("query", "tag".into(), "enum")]);
        assert_eq!(check("/v1/pets?debug=1"), vec![("query", "debug".into(), "undeclared")]);
        assert_eq!(check("/v1/pets/x"), vec![("path", "id".into(), "type")]);
    }

    #[test]
    fn responses_lose_undeclared_properties() {
        let d = doc(true);
        let m = d.find(&Method::GET, "/v1/pets/1").unwrap().unwrap();
        let mut body =
            serde_json::json!({"id": 1, "name": "Rex", "password_hash": "x", "owner": {"name": "a", "ssn": "1"}});
        assert!(d.filter_response(m.index, 200, &mut body));
        assert_eq!(body, serde_json::json!({"id": 1, "name": "Rex", "owner": {"name": "a"}}));
        assert!(!d.filter_response(m.index, 200, &mut body), "nothing left to remove");
        let list = d.find(&Method::GET, "/v1/pets").unwrap().unwrap();
        let mut body = serde_json::json!([{"id": 1, "secret": 2}, {"name": "b"}]);
        assert!(d.filter_response(list.index, 200, &mut body));
        assert_eq!(body, serde_json::json!([{"id": 1}, {"name": "b"}]));
        let mut other = serde_json::json!({"anything": 1});
        assert!(!d.filter_response(list.index, 500, &mut other), "undescribed status: left alone");
    }

    #[test]
    fn json_documents_and_3_1_type_lists() {
        let text = r#"{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":{"/a/{id}.json":{"post":{
            "parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer"}},
                          {"name":"X-Trace","in":"header","required":true,"schema":{"type":"string","pattern":"^[a-f0-9]{8}$"}}],
            "requestBody":{"content":{"application/json":{"schema":{"type":"object","properties":{"n":{"type":["string","null"]}}}}}},
            "responses":{"200":{"description":"ok"}}}}}}"#;
        let d = Document::parse("j", text, true, None).unwrap();
        let m = d.find(&Method::POST, "/a/7.json").unwrap().unwrap();
        let mut errors = Vec::new();
        m.operation.check_body("application/json", &serde_json::json!({"n": null}), &mut errors);
        m.operation.check_body("application/json", &serde_json::json!({"n": "x"}), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        m.operation.check_body("application/json", &serde_json::json!({"n": 1}), &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(d.find(&Method::POST, "/a/x.json").is_ok());
        assert_eq!(d.find(&Method::POST, "/a/7.xml").unwrap_err(), Reject::NotFound);
        let req = http::Request::post("/a/x.json").header("x-trace", "nothex!!").body(()).unwrap();
        let (parts, ()) = req.into_parts();
        let m = d.find(&parts.method, parts.uri.path()).unwrap().unwrap();
        let mut errors = Vec::new();
        m.operation.check_params(&m, &parts, true, &mut errors);
        let got: Vec<_> = errors.iter().map(|e| (e.location, &*e.pointer, e.code)).collect();
        assert_eq!(got, vec![("path", "id", "type"), ("header", "x-trace", "pattern")]);
    }

    #[test]
    fn recursive_and_chained_references_resolve() {
        let text = r##"
openapi: 3.0.3
info: { title: t, version: "1" }
paths:
  /tree:
    post:
      requestBody:
        content: { application/json: { schema: { $ref: "#/components/schemas/Node" } } }
      responses: { "200": { description: ok } }
components:
  schemas:
    Node:
      type: object
      properties:
        label: { $ref: "#/components/schemas/Label" }
        children: { type: array, items: { $ref: "#/components/schemas/Node" } }
    Label: { type: string, maxLength: 3 }
    Unused: { type: string, pattern: "^(a)$" }
"##;
        let d = Document::parse("t", text, true, None).unwrap();
        let m = d.find(&Method::POST, "/tree").unwrap().unwrap();
        let mut errors = Vec::new();
        let body = serde_json::json!({"label": "a", "children": [{"label": "b", "children": [{"label": "long"}]}]});
        m.operation.check_body("application/json", &body, &mut errors);
        let got: Vec<_> = errors.iter().map(|e| (&*e.pointer, e.code)).collect();
        assert_eq!(got, vec![("/children/0/children/0/label", "maxLength")]);
    }

    #[test]
    fn import_prints_one_route_per_path() {
        let yaml = import("pets.yaml", PETS, "pets", "backend").unwrap();
        let v: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v.pointer("/openapi/pets/file"), Some(&Value::from("pets.yaml")));
        assert_eq!(v.pointer("/openapi/pets/base_path"), Some(&Value::from("/v1")));
        let routes = v["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 3);
        let by_id = routes.iter().find(|r| r["name"] == "pets-pets-id").unwrap();
        assert_eq!(by_id.pointer("/match/path/template"), Some(&Value::from("/v1/pets/{id}")));
        assert_eq!(by_id.pointer("/match/methods"), Some(&serde_json::json!(["GET"])));
        assert_eq!(by_id["auth"], "CHOOSE-AUTH");
        assert_eq!(by_id.pointer("/validate/openapi"), Some(&Value::from("pets")));
        let list = routes.iter().find(|r| r["name"] == "pets-pets").unwrap();
        assert_eq!(list.pointer("/match/path/exact"), Some(&Value::from("/v1/pets")));
        assert_eq!(list.pointer("/match/methods"), Some(&serde_json::json!(["GET", "POST"])));
        assert!(import("x", "openapi: 3.0.0\n", "x", "y").is_err());
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf =
            prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), "[a-z]{0,4}".prop_map(Value::from)];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![Just("id".to_owned()), Just("name".to_owned()), Just("owner".to_owned()), "[a-z]{1,3}"],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any path finds at most an operation, never a panic; filtering is idempotent and only removes.
        #[test]
        fn any_path_and_any_response(path in "(/[a-zA-Z0-9%é.{}]{0,6}){0,4}", body in json_value()) {
            let d = doc(true);
            let _ = d.find(&Method::GET, &path);
            for index in 0..d.operation_count() {
                let mut once = body.clone();
                d.filter_response(index, 200, &mut once);
                let mut twice = once.clone();
                proptest::prop_assert!(!d.filter_response(index, 200, &mut twice));
                proptest::prop_assert_eq!(&once, &twice);
            }
        }
    }

    #[test]
    fn broken_documents_are_refused_with_a_reason() {
        let bad = |text: &str| Document::parse("x", text, false, None).unwrap_err();
        assert!(bad("openapi: 2.0\npaths: {}").contains("not supported"));
        assert!(bad("openapi: 3.0.0\n").contains("paths"));
        assert!(bad("{ nope").contains("JSON"));
        let backref = "openapi: 3.1.0\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { type: string, pattern: '(a)\\1' }\n";
        let e = bad(backref);
        assert!(e.contains("POST /a") && e.contains("regex"), "{e}");
        let lookahead = backref.replace("(a)\\\\1", "(?=a)a").replace("'(a)\\1'", "'(?=a)a'");
        assert!(bad(&lookahead).contains("POST /a"));
        let dangling = "openapi: 3.0.0\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: '#/components/schemas/Gone' }\n";
        assert!(bad(dangling).contains("POST /a"), "{}", bad(dangling));
        let remote = dangling.replace("#/components/schemas/Gone", "https://example.com/s.json");
        assert!(bad(&remote).contains("POST /a"));
    }
}
