//! The validation stage (`validate:`) through the real binary: shape limits at their boundaries,
//! content types, charsets and codings (a gzip bomb), duplicate keys, malformed JSON, and the OpenAPI
//! positive model (types, strict operations and parameters, patterns refused at load, broken
//! documents refused by `check` and by a reload), and `portcullis openapi import`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::Write as _;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/openapi/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A config with one upstream and the given routes (and top-level extra sections).
fn config(upstream: std::net::SocketAddr, top: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {upstream}
{top}
routes:
{routes}
logging:
  level: info
"#
    )
}

/// Sends one request; returns the status and the parsed body (`Null` if not JSON).
fn send(gw: &Gateway, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, serde_json::Value) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let resp = RawConn::connect(gw.addr("main")).send(&bytes, T);
    let json = serde_json::from_str(body_of(&resp)).unwrap_or(serde_json::Value::Null);
    (status_of(&resp), json)
}

fn post_json(gw: &Gateway, target: &str, body: &str) -> (u16, serde_json::Value) {
    send(gw, "POST", target, &[("Content-Type", "application/json")], body.as_bytes())
}

/// Asserts a 400 `invalid-request` whose first error is (in, pointer, code).
fn assert_invalid(got: &(u16, serde_json::Value), location: &str, pointer: &str, code: &str) {
    let (status, body) = got;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["type"], problem("invalid-request"), "{body}");
    let e = &body["errors"][0];
    assert_eq!(
        (e["in"].as_str(), e["pointer"].as_str(), e["code"].as_str()),
        (Some(location), Some(pointer), Some(code)),
        "{body}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const SHAPED: &str = r#"  - name: shaped
    match: { path: { prefix: /shaped } }
    upstream: app
    auth: none
    max_body_bytes: 200
    validate:
      content_types: [application/json, text/plain, application/x-www-form-urlencoded]
      charsets: [utf-8, us-ascii]
      max_query_params: 3
      max_cookies: 2
      max_headers: 6
      json: { max_depth: 3, max_keys: 3, max_array: 3, max_string: 8 }
      decoding: { max_bytes: 1MiB, max_ratio: 100 }
  - name: open
    match: { path: { prefix: /open } }
    upstream: app
    auth: none
"#;

#[test]
fn each_shape_limit_passes_at_its_bound_and_refuses_one_past_it() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", SHAPED));
    let mut hits = 0;
    let mut pass = |got: (u16, serde_json::Value)| {
        assert_eq!(got.0, 200, "{}", got.1);
        hits += 1;
        assert_eq!(up.hits(), hits);
    };
    pass(post_json(&gw, "/shaped", r#"{"a":[[1]]}"#));
    pass(post_json(&gw, "/shaped", r#"{"a":1,"b":2,"c":3}"#));
    pass(post_json(&gw, "/shaped", r#"{"l":[1,2,3]}"#));
    pass(post_json(&gw, "/shaped", r#"{"k":"12345678"}"#));
    pass(send(&gw, "GET", "/shaped?a=1&b=2&c=3", &[], b""));
    pass(send(&gw, "GET", "/shaped", &[("Cookie", "a=1; b=2")], b""));
    // Host + 5 = 6 header fields.
    pass(send(&gw, "GET", "/shaped", &[("x-1", "1"), ("x-2", "2"), ("x-3", "3"), ("x-4", "4"), ("x-5", "5")], b""));
    let at = hits;

    let depth = post_json(&gw, "/shaped", r#"{"a":[[[1]]]}"#);
    assert_invalid(&depth, "body", "/a/0/0", "max-depth");
    assert!(depth.1["errors"][0]["offset"].as_u64().is_some(), "{}", depth.1);
    assert_invalid(&post_json(&gw, "/shaped", r#"{"x":{"a":1,"b":2,"c":3,"d":4}}"#), "body", "/x", "max-keys");
    assert_invalid(&post_json(&gw, "/shaped", r#"{"l":[1,2,3,4]}"#), "body", "/l", "max-array");
    assert_invalid(&post_json(&gw, "/shaped", r#"{"k":"123456789"}"#), "body", "/k", "max-string");
    assert_invalid(&send(&gw, "GET", "/shaped?a=1&b=2&c=3&d=4", &[], b""), "query", "", "max-query-params");
    assert_invalid(&send(&gw, "GET", "/shaped", &[("Cookie", "a=1; b=2; c=3")], b""), "cookie", "", "max-cookies");
    // split over two Cookie lines, the count is the same
    assert_invalid(
        &send(&gw, "GET", "/shaped", &[("Cookie", "a=1; b=2"), ("Cookie", "c=3")], b""),
        "cookie",
        "",
        "max-cookies",
    );
    let (status, body) = send(
        &gw,
        "GET",
        "/shaped",
        &[("x-1", "1"), ("x-2", "2"), ("x-3", "3"), ("x-4", "4"), ("x-5", "5"), ("x-6", "6")],
        b"",
    );
    assert_eq!((status, body["type"].as_str()), (431, Some(problem("headers-too-large").as_str())));
    // the body limit is the route's max_body_bytes: 200 bytes pass, 201 do not
    let exact = format!("{{\"s\":\"{}\"}}", "a".repeat(200 - 8));
    assert_eq!(exact.len(), 200);
    let long = post_json(&gw, "/shaped", &exact);
    assert_invalid(&long, "body", "/s", "max-string");
    let (status, body) = post_json(&gw, "/shaped", &format!("{exact} "));
    assert_eq!((status, body["type"].as_str()), (413, Some(problem("payload-too-large").as_str())));
    assert_eq!(up.hits(), at, "nothing refused reached the upstream");
    // A route without `validate:` is untouched by any of it.
    assert_eq!(post_json(&gw, "/open", r#"{"a":[[[[[1]]]]],"a":2}"#).0, 200);
}

#[test]
fn content_types_charsets_and_codings() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", SHAPED));
    let unsupported = |got: (u16, serde_json::Value)| {
        assert_eq!(
            (got.0, got.1["type"].as_str()),
            (415, Some(problem("unsupported-media-type").as_str())),
            "{}",
            got.1
        );
    };
    unsupported(send(&gw, "POST", "/shaped", &[("Content-Type", "application/xml")], b"<a/>"));
    unsupported(send(&gw, "POST", "/shaped", &[], b"{}"));
    unsupported(send(&gw, "POST", "/shaped", &[("Content-Type", "application/json; charset=iso-8859-1")], b"{}"));
    unsupported(send(&gw, "POST", "/shaped", &[("Content-Type", "text/plain; charset=utf-16")], b"hi"));
    unsupported(send(
        &gw,
        "POST",
        "/shaped",
        &[("Content-Type", "application/json"), ("Content-Type", "text/plain")],
        b"{}",
    ));
    unsupported(send(
        &gw,
        "POST",
        "/shaped",
        &[("Content-Type", "application/json"), ("Content-Encoding", "br")],
        b"{}",
    ));
    let gz = gzip(br#"{"a":1}"#);
    unsupported(send(
        &gw,
        "POST",
        "/shaped",
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip, gzip")],
        &gz,
    ));
    // Not valid in its declared charset: 400.
    assert_invalid(&send(&gw, "POST", "/shaped", &[("Content-Type", "text/plain")], b"caf\xe9"), "body", "", "charset");
    assert_invalid(
        &send(&gw, "POST", "/shaped", &[("Content-Type", "text/plain; charset=us-ascii")], "café".as_bytes()),
        "body",
        "",
        "charset",
    );
    assert_invalid(
        &send(&gw, "POST", "/shaped", &[("Content-Type", "application/x-www-form-urlencoded")], b"a=%zz"),
        "body",
        "",
        "charset",
    );
    assert_eq!(up.hits(), 0);
    assert_eq!(
        send(&gw, "POST", "/shaped", &[("Content-Type", "Text/Plain; Charset=\"UTF-8\"")], "café".as_bytes()).0,
        200
    );
    assert_eq!(
        send(&gw, "POST", "/shaped", &[("Content-Type", "application/x-www-form-urlencoded")], b"a=%C3%A9+b").0,
        200
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn gzip_bodies_are_decoded_and_validated_and_a_bomb_is_413() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", SHAPED));
    let json = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")];
    let good = gzip(br#"{"a":[1,2]}"#);
    assert_eq!(send(&gw, "POST", "/shaped", &json, &good).0, 200);
    assert_eq!(up.last().unwrap().body, good, "the upstream gets the original bytes");
    // the decoded body is what is validated
    assert_invalid(&send(&gw, "POST", "/shaped", &json, &gzip(br#"{"a":[[[1]]]}"#)), "body", "/a/0/0", "max-depth");
    let (status, body) = send(&gw, "POST", "/shaped", &json, &gzip(b"{\"a\":"));
    assert_eq!((status, body["type"].as_str()), (400, Some(problem("malformed-json").as_str())), "{body}");
    let (status, body) = send(&gw, "POST", "/shaped", &json, b"not gzip at all");
    assert_eq!((status, body["type"].as_str()), (400, Some(problem("bad-request").as_str())), "{body}");
    // 10 MB of zeros in about 10 KB: over the ratio bound (100x) long before it is inflated.
    let bomb = gzip(&vec![0u8; 10 << 20]);
    let big_route = SHAPED.replace("max_body_bytes: 200", "max_body_bytes: 64KiB");
    let gw2 = Gateway::start(&config(up.addr, "", &big_route));
    let started = Instant::now();
    let (status, body) = send(&gw2, "POST", "/shaped", &json, &bomb);
    assert_eq!((status, body["type"].as_str()), (413, Some(problem("payload-too-large").as_str())), "{body}");
    eprintln!("gzip bomb ({} bytes) refused in {:?}", bomb.len(), started.elapsed());
    assert_eq!(up.hits(), 1);
}

#[test]
fn duplicate_keys_and_malformed_json() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(up.addr, "", SHAPED));
    assert_invalid(&post_json(&gw, "/shaped", r#"{"a":1,"a":2}"#), "body", "/a", "duplicate-key");
    assert_invalid(&post_json(&gw, "/shaped", r#"{"id":1,"ID":2}"#), "body", "/ID", "duplicate-key");
    assert_invalid(&post_json(&gw, "/shaped", r#"{"r":1,"\u0072":2}"#), "body", "/r", "duplicate-key");
    let (status, body) = post_json(&gw, "/shaped", "{\"a\":1,\n \"b\" 2}");
    assert_eq!((status, body["type"].as_str()), (400, Some(problem("malformed-json").as_str())), "{body}");
    assert_eq!(body["offset"], 13, "{body}");
    let (status, body) = post_json(&gw, "/shaped", "{\"a\":1} trailing");
    assert_eq!((status, body["type"].as_str()), (400, Some(problem("malformed-json").as_str())), "{body}");
    assert_eq!(up.hits(), 0);
    let allow = SHAPED.replace("max_string: 8 }", "max_string: 8, duplicate_keys: allow }");
    let gw = Gateway::start(&config(up.addr, "", &allow));
    assert_eq!(post_json(&gw, "/shaped", r#"{"a":1,"a":2}"#).0, 200);
}

fn openapi_config(up: std::net::SocketAddr, file: &str, strict: bool) -> String {
    config(
        up,
        &format!("openapi:\n  pets:\n    file: {file}\n    strict: {strict}\n"),
        r#"  - name: pets
    match: { path: { prefix: /v1 } }
    upstream: app
    auth: none
    validate: { openapi: pets }
"#,
    )
}

#[test]
fn openapi_types_and_strict_operations() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&openapi_config(up.addr, &fixture("pets.yaml"), true));
    assert_eq!(post_json(&gw, "/v1/pets", r#"{"name":"O'Brien","species":"dog","nickname":null}"#).0, 200);
    assert_eq!(send(&gw, "GET", "/v1/pets?limit=5&tag=cat&tag=dog", &[], b"").0, 200);
    assert_eq!(send(&gw, "GET", "/v1/pets/7", &[], b"").0, 200);
    assert_eq!(up.hits(), 3);
    // A wrong type names the field's pointer and never echoes the value.
    let wrong = post_json(&gw, "/v1/pets", r#"{"name":987654321,"species":"dog"}"#);
    assert_invalid(&wrong, "body", "/name", "type");
    assert!(!wrong.1.to_string().contains("987654321"), "{}", wrong.1);
    let attack = post_json(&gw, "/v1/pets", r#"{"name":"<script>alert(1)</script>","species":"dog"}"#);
    assert_invalid(&attack, "body", "/name", "pattern");
    assert!(!attack.1.to_string().contains("script"), "{}", attack.1);
    assert_invalid(&post_json(&gw, "/v1/pets", r#"{"name":"Rex"}"#), "body", "/species", "required");
    assert_invalid(&post_json(&gw, "/v1/pets", r#"{"name":"Rex","species":"cow"}"#), "body", "/species", "enum");
    assert_invalid(
        &post_json(&gw, "/v1/pets", r#"{"name":"Rex","species":"cat","email":"x"}"#),
        "body",
        "/email",
        "format",
    );
    assert_invalid(
        &post_json(&gw, "/v1/pets", r#"{"name":"Rex","species":"cat","is_admin":true}"#),
        "body",
        "",
        "additionalProperties",
    );
    assert_invalid(
        &send(&gw, "POST", "/v1/pets", &[("Content-Type", "application/json")], b""),
        "body",
        "",
        "required",
    );
    assert_invalid(&send(&gw, "GET", "/v1/pets?limit=abc", &[], b""), "query", "limit", "type");
    assert_invalid(&send(&gw, "GET", "/v1/pets?limit=1000", &[], b""), "query", "limit", "maximum");
    assert_invalid(&send(&gw, "GET", "/v1/pets/0", &[], b""), "path", "id", "minimum");
    assert_invalid(&send(&gw, "GET", "/v1/pets/abc", &[], b""), "path", "id", "type");
    // strict: undeclared query parameters, paths and methods
    assert_invalid(&send(&gw, "GET", "/v1/pets?limit=5&debug=true", &[], b""), "query", "debug", "undeclared");
    let (status, body) = send(&gw, "GET", "/v1/owners", &[], b"");
    assert_eq!((status, body["type"].as_str()), (404, Some(problem("not-found").as_str())), "{body}");
    let (status, body) = send(&gw, "PUT", "/v1/pets/7", &[("Content-Type", "application/json")], b"{}");
    assert_eq!((status, body["type"].as_str()), (405, Some(problem("method-not-allowed").as_str())), "{body}");
    // other spellings of a declared path are still validated, not let through as undeclared
    assert_invalid(&post_json(&gw, "/V1/PETS/", r#"{"name":1,"species":"dog"}"#), "body", "/name", "type");
    // a body the operation does not declare
    assert_invalid(
        &send(&gw, "GET", "/v1/pets/7", &[("Content-Type", "application/json")], b"{}"),
        "body",
        "",
        "undeclared",
    );
    // a type the operation does not declare
    let (status, _) = send(&gw, "POST", "/v1/pets", &[("Content-Type", "text/plain")], b"hi");
    assert_eq!(status, 415);
    assert_eq!(up.hits(), 3, "nothing refused reached the upstream");
    // other spellings of a declared parameter are validated too
    assert_invalid(&send(&gw, "GET", "/v1/pets?LIMIT=abc", &[], b""), "query", "limit", "type");
    assert_invalid(&send(&gw, "GET", "/v1/pets?limit=5&li%6Dit=abc", &[], b""), "query", "limit", "repeated");
    // not strict: undeclared operations and parameters pass unvalidated
    let lax = Gateway::start(&openapi_config(up.addr, &fixture("pets.yaml"), false));
    assert_eq!(send(&lax, "GET", "/v1/owners", &[], b"").0, 200);
    assert_eq!(send(&lax, "GET", "/v1/pets?debug=true", &[], b"").0, 200);
    assert_invalid(&post_json(&lax, "/v1/pets", r#"{"name":[],"species":"dog"}"#), "body", "/name", "type");
}

const BACKREF_DOC: &str = r#"openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /things:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                code: { type: string, pattern: '^(a+)\1$' }
      responses: { "200": { description: ok } }
"#;

#[test]
fn a_pattern_the_linear_engine_cannot_run_fails_check_by_name_and_nested_quantifiers_stay_linear() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let doc = dir.write("bad.yaml", BACKREF_DOC);
    let cfg = dir.write("gw.yaml", &openapi_config(up.addr, &path_str(&doc), false));
    let (code, _, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("openapi.pets") && stderr.contains("POST /things"), "{stderr}");
    assert!(stderr.contains("/properties/code/pattern") || stderr.contains("\\1"), "{stderr}");
    // `(a+)+$` is a catastrophic pattern for a backtracking engine; on the linear one it is harmless.
    let nested = BACKREF_DOC.replace(r"'^(a+)\1$'", "'^(a+)+$'").replace("/things", "/v1/things");
    let doc = dir.write("nested.yaml", &nested);
    let gw = Gateway::start(&openapi_config(up.addr, &path_str(&doc), false));
    let evil = format!("{{\"code\":\"{}!\"}}", "a".repeat(5000));
    let started = Instant::now();
    assert_invalid(&post_json(&gw, "/v1/things", &evil), "body", "/code", "pattern");
    eprintln!("(a+)+$ on 5000 a's: {:?}", started.elapsed());
    assert_eq!(post_json(&gw, "/v1/things", r#"{"code":"aaa"}"#).0, 200);
}

#[test]
fn a_broken_document_fails_check_and_a_reload_keeps_the_old_one() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let doc = dir.write("pets.yaml", &std::fs::read_to_string(fixture("pets.yaml")).unwrap());
    let yaml = openapi_config(up.addr, &path_str(&doc), true);
    let cfg = dir.write("gw.yaml", &yaml);
    let (code, stdout, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("openapi `pets`"), "{stdout}");
    for (broken, says) in [
        ("openapi: 3.0.3\npaths: [", "YAML"),
        ("openapi: 2.0\npaths: {}\n", "not supported"),
        ("openapi: 3.0.3\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: '#/components/schemas/Nope' }\n", "Nope"),
    ] {
        std::fs::write(&doc, broken).unwrap();
        let (code, _, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("openapi.pets") && stderr.contains(says), "{says}: {stderr}");
    }
    std::fs::remove_file(&doc).unwrap();
    let (code, _, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot be read"), "{stderr}");

    // A running gateway keeps its compiled document when a reload finds the new one broken.
    let gw_dir = TempDir::new();
    let doc = gw_dir.write("pets.yaml", &std::fs::read_to_string(fixture("pets.yaml")).unwrap());
    let gw = Gateway::start_in(gw_dir, &openapi_config(up.addr, &path_str(&doc), true));
    assert_invalid(&post_json(&gw, "/v1/pets", r#"{"name":1,"species":"dog"}"#), "body", "/name", "type");
    std::fs::write(&doc, "openapi: 3.0.3\npaths: [").unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + T;
    while gw.count_log("reload refused") == 0 {
        assert!(Instant::now() < deadline, "{}", gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = gw.logs().into_iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(refused.contains("openapi.pets"), "{refused}");
    assert_invalid(&post_json(&gw, "/v1/pets", r#"{"name":1,"species":"dog"}"#), "body", "/name", "type");
    assert_eq!(post_json(&gw, "/v1/pets", r#"{"name":"Rex","species":"dog"}"#).0, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn openapi_import_prints_routes_that_compile_once_auth_is_chosen() {
    let (code, stdout, stderr) =
        portcullis(&["openapi", "import", &fixture("pets.yaml"), "--name", "pets", "--upstream", "app"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("template: \"/v1/pets/{id}\""), "{stdout}");
    assert!(stdout.contains("methods: [GET, DELETE]"), "{stdout}");
    assert!(stdout.contains("methods: [GET, POST]"), "{stdout}");
    assert!(stdout.contains("validate: { openapi: \"pets\" }"), "{stdout}");
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let base = format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - address: {}\n",
        up.addr
    );
    // As printed, the placeholder auth does not compile: the user has to choose.
    let cfg = dir.write("gw.yaml", &format!("{base}{stdout}"));
    let (code, _, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("CHOOSE-AUTH"), "{stderr}");
    let chosen = stdout.replace("auth: CHOOSE-AUTH", "auth: none");
    let cfg = dir.write("gw.yaml", &format!("{base}{chosen}"));
    let (code, stdout2, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout2.contains("openapi `pets` (4 operations, strict)"), "{stdout2}");
    // An inline document works as a file does.
    let inline = format!(
        "{base}openapi:\n  pets:\n    inline: {}\n    strict: true\nroutes:\n  - name: p\n    match: {{ path: {{ prefix: /v1 }} }}\n    upstream: app\n    auth: none\n    validate: {{ openapi: pets }}\n",
        serde_json::Value::String(std::fs::read_to_string(fixture("pets.yaml")).unwrap())
    );
    let cfg = dir.write("gw.yaml", &inline);
    let (code, out, stderr) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("openapi `pets` (4 operations, strict)"), "{out}");
    let (code, _, stderr) = portcullis(&["openapi", "import", "/nonexistent.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot be read"), "{stderr}");
}

#[test]
fn chunked_and_http2_bodies_are_judged_the_same() {
    let up = Upstream::start("app");
    let h2 = config(up.addr, "", SHAPED).replace("address: 127.0.0.1:0\n", "address: 127.0.0.1:0\n    http2: true\n");
    let gw = Gateway::start(&h2);
    // HTTP/1.1 chunked: the body is split over chunks, the duplicate key still seen.
    let body = br#"{"a":1,"A":2}"#;
    let mut req =
        b"POST /shaped HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in body.chunks(4) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = RawConn::connect(gw.addr("main")).send(&req, T);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(body_of(&resp).contains("duplicate-key"), "{resp}");
    // HTTP/2 (h2c prior knowledge): the same refusals.
    let url = format!("http://{}/shaped", gw.addr("main"));
    let (code, _, out) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"a":[[[1]]]}"#,
        &url,
    ]);
    assert_eq!(code, 400, "{out}");
    assert!(out.contains("max-depth"), "{out}");
    let (code, _, out) =
        curl(&["--http2-prior-knowledge", "-H", "content-type: text/html", "--data-binary", "<b>", &url]);
    assert_eq!(code, 415, "{out}");
    assert_eq!(up.hits(), 0);
    let (code, _, out) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"a":[1]}"#,
        &url,
    ]);
    assert_eq!(code, 200, "{out}");
    assert_eq!(up.hits(), 1);
}
