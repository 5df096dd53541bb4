//! Authorization through the real gateway: a table of principals x routes x methods with the expected
//! allow or deny, inherited roles, roles granted by config, scopes, per-method rules, `authenticated`,
//! other spellings of the same path, and that nothing denied reaches the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;

const SECRET: &str = "authz-test-server-secret-0123456789abcdef";

/// A real API key and its keyed hash (hex), as `portcullis keys` would make them.
fn key() -> (String, String, String) {
    let (id, key) = portcullis::authn::api_key::generate().unwrap();
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&k, key.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (id, key, hex)
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    keys: std::collections::HashMap<&'static str, String>,
}

/// An upstream that answers JSON objects owned by various principals (the gateway cannot know whose an
/// object is until it sees the answer), on keep-alive connections.
fn json_upstream() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let big: String = (0..200).map(|i| format!("{{\"owner\":\"alice\",\"t\":{i}}},")).collect();
                    let (status, ctype, body) = match path.as_str() {
                        "/books/mine" => {
                            (200, "application/json", r#"{"title":"mine","owner":"alice","secret":"s1"}"#.to_owned())
                        }
                        "/books/theirs" => {
                            (200, "application/json", r#"{"title":"theirs","owner":"bob","secret":"s2"}"#.to_owned())
                        }
                        "/books/noowner" => (200, "application/json", r#"{"title":"x","secret":"s3"}"#.to_owned()),
                        "/books/nested" => {
                            (200, "application/json", r#"{"owner":{"id":"alice"},"secret":"s4"}"#.to_owned())
                        }
                        "/books/dup" => {
                            (200, "application/json", r#"{"owner":"bob","owner":"alice","secret":"s5"}"#.to_owned())
                        }
                        "/books/text" => (200, "text/plain", "owner: alice, secret s6".to_owned()),
                        "/books/gone" => (404, "application/json", r#"{"error":"no such book"}"#.to_owned()),
                        "/shelf" => (
                            200,
                            "application/json",
                            r#"[{"owner":"alice","t":1},{"owner":"bob","t":2,"secret":"s7"},{"owner":"alice","t":3}]"#
                                .to_owned(),
                        ),
                        "/shelf?size=big" => (200, "application/json", format!("[{}{{\"owner\":\"alice\"}}]", big)),
                        "/shelf?odd=1" => {
                            (200, "application/json", r#"[{"owner":"alice"},{"t":2,"secret":"s8"}]"#.to_owned())
                        }
                        _ => (200, "application/json", "{}".to_owned()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if out.write_all(head.as_bytes()).and_then(|()| out.write_all(body.as_bytes())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn setup() -> Setup {
    let up = Upstream::start("app");
    let json = json_upstream();
    // principal, roles, scopes
    let people: [(&str, &str, &str); 6] = [
        ("alice", "[reader]", "[]"),
        ("bob", "[editor]", "[]"),
        ("carol", "[admin]", "[]"),
        ("dave", "[]", "[orders:write, orders:read]"),
        ("erin", "[]", "[]"),
        ("frank", "[unknown-role]", "[orders:read]"),
    ];
    let mut keys = std::collections::HashMap::new();
    let mut entries = String::new();
    for (who, roles, scopes) in people {
        let (id, key, hash) = key();
        entries.push_str(&format!(
            "        - id: {id}\n          hash: {hash}\n          principal: {who}\n          roles: {roles}\n          scopes: {scopes}\n"
        ));
        keys.insert(who, key);
    }
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
upstreams:
  app:
    targets:
      - address: {up}
  json:
    targets:
      - address: {json}
authenticators:
  keys:
    api_key:
      hmac_secret: {SECRET}
      keys:
{entries}roles:
  reader: {{}}
  editor: {{ includes: [reader] }}
  admin: {{ includes: [editor] }}
principals:
  erin: {{ roles: [admin], via: [api_key] }}
routes:
  - name: docs
    match:
      path: {{ prefix: /docs }}
    upstream: app
    auth: keys
    authorize:
      methods:
        GET: {{ roles: [reader] }}
        PUT: {{ roles: [editor] }}
        DELETE: {{ roles: [admin] }}
  - name: orders
    match:
      path: {{ prefix: /orders }}
    upstream: app
    auth: keys
    authorize:
      any_of:
        - {{ roles: [admin] }}
        - {{ scopes: {{ all_of: [orders:write, orders:read] }} }}
  - name: user-orders
    match:
      path: {{ template: "/users/{{id}}/orders" }}
    upstream: app
    auth: keys
    authorize:
      owner: {{ param: id, principal: id, override: [admin] }}
  - name: reports
    match:
      path: {{ prefix: /reports }}
    upstream: app
    auth: keys
    authorize:
      roles: [reader]
      owner: {{ query: owner, principal: id }}
  - name: profile
    match:
      path: {{ prefix: /profile }}
    upstream: app
    auth: keys
    authorize:
      roles: [reader]
      properties:
        reader: [/name, /address/city, /tags/*]
        admin: [/role]
  - name: payments
    match:
      path: {{ prefix: /payments }}
    upstream: app
    auth: keys
    authorize:
      roles: [reader]
      owner: {{ body: /account/owner, principal: id, override: [admin] }}
  - name: books
    match:
      path: {{ template: "/books/{{title}}" }}
      methods: [GET]
    upstream: json
    auth: keys
    authorize:
      roles: [reader]
      owner_in_response: {{ pointer: /owner, principal: id, override: [admin] }}
  - name: shelf
    match:
      path: {{ exact: /shelf }}
      methods: [GET]
    upstream: json
    auth: keys
    authorize:
      roles: [reader]
      owner_in_response: {{ pointer: /owner, principal: id, filter: true, max_bytes: 2KiB }}
  - name: any
    match:
      path: {{ prefix: /any }}
    upstream: app
    auth: keys
    authorize: authenticated
logging:
  level: info
  access_log: true
admin:
  address: 127.0.0.1:0
"#,
        up = up.addr,
        json = json
    );
    let gw = Gateway::start(&yaml);
    Setup { up, gw, keys }
}

fn send(s: &Setup, who: Option<&str>, method: &str, path: &str) -> (u16, String) {
    send_as(s, who, method, path, &[])
}

/// As [`send`], with more curl arguments (`--http2-prior-knowledge`, `-I` for HEAD).
fn send_as(s: &Setup, who: Option<&str>, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://{}{path}", s.gw.addr("main"));
    let mut args = vec!["--path-as-is", "-X", method];
    args.extend_from_slice(extra);
    let header;
    if let Some(who) = who {
        header = format!("X-API-Key: {}", s.keys[who]);
        args.extend(["-H", &header]);
    }
    args.push(&url);
    let (code, _, body) = curl(&args);
    (code, body)
}

#[test]
fn the_matrix_of_principals_routes_and_methods() {
    let s = setup();
    let cases: &[(Option<&str>, &str, &str, u16)] = &[
        // Per-method rules, with inherited roles.
        (Some("alice"), "GET", "/docs/a", 200),
        (Some("alice"), "PUT", "/docs/a", 403),
        (Some("alice"), "DELETE", "/docs/a", 403),
        (Some("alice"), "POST", "/docs/a", 403), // no rule for POST: denied
        (Some("bob"), "GET", "/docs/a", 200),
        (Some("bob"), "PUT", "/docs/a", 200),
        (Some("bob"), "DELETE", "/docs/a", 403),
        (Some("carol"), "DELETE", "/docs/a", 200),
        (Some("carol"), "PUT", "/docs/a", 200),
        // Roles granted by config (`principals:`), whatever the key says.
        (Some("erin"), "DELETE", "/docs/a", 200),
        // Scopes, and a role nobody declared counting for nothing.
        (Some("dave"), "GET", "/orders/1", 200),
        (Some("dave"), "GET", "/docs/a", 403),
        (Some("frank"), "GET", "/orders/1", 403),
        (Some("frank"), "GET", "/docs/a", 403),
        (Some("alice"), "GET", "/orders/1", 403),
        (Some("carol"), "GET", "/orders/1", 200),
        // `authenticated`: anyone with a valid key, nobody without.
        (Some("frank"), "PATCH", "/any/x", 200),
        (None, "GET", "/any/x", 401),
        (None, "GET", "/docs/a", 401),
        // Other spellings of the same route are the same route, with the same rules (0: refused, as
        // 403 by the rule or as 400 by the path rules, never let through).
        (Some("alice"), "DELETE", "/DOCS/a", 403),
        (Some("alice"), "DELETE", "/docs/./a", 0),
        (Some("alice"), "DELETE", "/docs//a", 0),
        (Some("alice"), "DELETE", "/%64ocs/a", 403),
        (Some("alice"), "DELETE", "/docs/x/../a", 0),
        (Some("bob"), "DELETE", "/Docs/a/", 403),
        (Some("bob"), "DELETE", "/docs%2fa", 0),
        // Ownership: the object the path names is the principal's, or an override role.
        (Some("alice"), "GET", "/users/alice/orders", 200),
        (Some("alice"), "GET", "/users/bob/orders", 403),
        (Some("bob"), "GET", "/users/alice/orders", 403),
        (Some("carol"), "GET", "/users/bob/orders", 200),
        (Some("erin"), "GET", "/users/bob/orders", 200),
        (Some("alice"), "GET", "/users/ALICE/orders", 403),
        (Some("alice"), "GET", "/users/al%69ce/orders", 200),
        (Some("alice"), "GET", "/users/bob%2f..%2falice/orders", 0),
        (Some("alice"), "GET", "/users/alice/../bob/orders", 0),
        (Some("alice"), "GET", "/users/bob;alice/orders", 0),
        // By query parameter, beside a role; named twice is refused whichever comes first.
        (Some("alice"), "GET", "/reports?owner=alice", 200),
        (Some("alice"), "GET", "/reports?owner=bob", 403),
        (Some("alice"), "GET", "/reports?owner=alice&owner=bob", 403),
        (Some("alice"), "GET", "/reports?owner=bob&owner=alice", 403),
        (Some("alice"), "GET", "/reports?%6fwner=bob&owner=alice", 403),
        (Some("alice"), "GET", "/reports", 403),
        (Some("dave"), "GET", "/reports?owner=dave", 403),
        // Spellings other frameworks read as the same parameter, or as another parameter.
        (Some("alice"), "GET", "/reports?owner=alice&Owner=bob", 403),
        (Some("alice"), "GET", "/reports?owner%5B%5D=bob&owner=alice", 403),
        (Some("alice"), "GET", "/reports?owner=alice;owner=bob", 403),
        // A method override in the query where methods have rules of their own.
        (Some("alice"), "GET", "/docs/a?_method=DELETE", 403),
        (Some("alice"), "GET", "/docs/a?_METHOD=DELETE", 403),
    ];
    let mut allowed = 0;
    for (who, method, path, want) in cases {
        let before = s.up.hits();
        let (code, body) = send(&s, *who, method, path);
        if *want == 0 {
            assert!(code == 400 || code == 403 || code == 404, "{who:?} {method} {path}: {code} {body}");
        } else {
            assert_eq!(code, *want, "{who:?} {method} {path}: {body}");
        }
        if code == 403 {
            assert_eq!(problem_type(&body), problem("forbidden"), "{body}");
            assert!(!body.contains("role") && !body.contains("authorize"), "no hint of the rule: {body}");
        }
        if code == 200 {
            allowed += 1;
        } else {
            assert_eq!(s.up.hits(), before, "{who:?} {method} {path} reached the upstream");
        }
    }
    assert_eq!(s.up.hits(), allowed);
}

#[test]
fn every_decision_names_its_rule_in_the_access_log_and_the_metrics() {
    let s = setup();
    assert_eq!(send(&s, Some("alice"), "DELETE", "/docs/a").0, 403);
    assert_eq!(send(&s, Some("bob"), "PUT", "/docs/a").0, 200);
    let log = s.gw.wait_access_log(2, std::time::Duration::from_secs(10));
    let deny = log.iter().find(|l| l["status"] == 403).expect("the denial is logged");
    assert_eq!(deny["authz"], "deny");
    assert_eq!(deny["authz_rule"], "authorize.methods.DELETE.roles");
    assert_eq!(deny["principal"], "alice");
    assert_eq!(deny["problem"], "forbidden");
    let allow = log.iter().find(|l| l["status"] == 200).expect("the allowed request is logged");
    assert_eq!(allow["authz"], "allow");
    assert_eq!(allow["authz_rule"], "authorize.methods.PUT");
    let m = s.gw.metrics();
    let series = |decision: &str, rule: &str| {
        metric(
            &m,
            &format!("portcullis_authz_decisions_total{{route=\"docs\",decision=\"{decision}\",rule=\"{rule}\"}}"),
        )
    };
    assert_eq!(series("deny", "authorize.methods.DELETE.roles"), Some(1.0), "{m}");
    assert_eq!(series("allow", "authorize.methods.PUT"), Some(1.0), "{m}");
    assert_eq!(series("allow", "authorize.methods.GET"), Some(0.0), "{m}");
}

#[test]
fn check_refuses_mistakes_in_authorization() {
    let up = closed_port();
    let base = basic_config(up, "");
    let with_route = |authorize: &str, extra: &str| {
        base.replace("    auth: none\n", &format!("    auth: keys\n    authorize: {authorize}\n")).replace(
            "routes:\n",
            &format!(
                "authenticators:\n  keys:\n    api_key:\n      hmac_secret: {SECRET}\n      keys: []\n{extra}routes:\n"
            ),
        )
    };
    let dir = TempDir::new();
    let cases = [
        (with_route("{ roles: [writer] }", "roles:\n  reader: {}\n"), "`writer` is not declared"),
        (
            with_route("{ roles: [reader] }", "roles:\n  a: { includes: [b] }\n  b: { includes: [a] }\n  reader: {}\n"),
            "cycle",
        ),
        (with_route("{ rolez: [reader] }", "roles:\n  reader: {}\n"), ""),
        (with_route("{}", ""), "authorize: authenticated"),
        (base.replace("    auth: none\n", "    auth: none\n    authorize: authenticated\n"), "needs an `auth` method"),
        // Authentication without authorization is a decision someone must write down.
        (
            with_route("authenticated", "").replace("    authorize: authenticated\n", ""),
            "says nothing of what they may do: add `authorize: authenticated`",
        ),
        // owner_in_response judges answers after the upstream acted: reads only.
        (with_route("{ owner_in_response: { pointer: /owner, principal: id } }", ""), "limit the route to reads"),
        // A sensitive route cannot be entered with an API key alone.
        (
            with_route("authenticated", "").replace("    auth: keys\n", "    auth: keys\n    sensitive: true\n"),
            "API key alone",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let path = dir.write(&format!("c{i}.yaml"), yaml);
        let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
        assert_ne!(code, 0, "case {i} passed check:\n{out}");
        assert!(err.contains(want), "case {i}: {err}");
    }
    // And a good one passes, with the stage in the printed chain.
    let path = dir.write(
        "good.yaml",
        &with_route(
            "{ roles: [reader] }",
            "roles:\n  reader: {}\nprincipals:\n  bob: { roles: [reader], via: [api_key] }\n",
        ),
    );
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authorization[roles any of reader]"), "{out}");
    assert!(!out.contains("warning:"), "{out}");
    // Lints: valid, but a role nobody can get and a method nobody can use are pointed out.
    let path = dir.write(
        "lint.yaml",
        &with_route(
            "{ roles: [reader], methods: { DELETE: { roles: [admin] } } }",
            "roles:\n  reader: {}\n  admin: { includes: [reader] }\nprincipals:\n  bob: { roles: [reader], via: [api_key] }\n",
        ),
    );
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning: role `admin` is declared but no principal can get it"), "{out}");
    assert!(!out.contains("role `reader` is declared"), "{out}");
    assert!(
        out.contains(
            "warning: route `app`: no principal can have any of the roles `authorize.methods.DELETE` requires"
        ),
        "{out}"
    );
    // Cedar: a policy error fails check (naming the set), and a policy that can never apply is pointed out.
    let policies = |text: &str| {
        format!(
            "roles:\n  reader: {{}}\nprincipals:\n  bob: {{ roles: [reader], via: [api_key] }}\npolicies:\n  p:\n    cedar: |\n      {text}\n  unused:\n    cedar: 'permit(principal, action, resource);'\n"
        )
    };
    for (i, (text, want)) in [
        ("permit(principal, action, resource) when { principal.nick == 1 };", "policies.p does not validate"),
        ("permit(principal, action, resource", "policies.p"),
    ]
    .iter()
    .enumerate()
    {
        let path = dir.write(&format!("cedar{i}.yaml"), &with_route("{ policy: p }", &policies(text)));
        let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
        assert_ne!(code, 0, "cedar case {i} passed check:\n{out}");
        assert!(err.contains(want), "cedar case {i}: {err}");
    }
    let never = "permit(principal, action == Portcullis::Action::\"PATCH\", resource); permit(principal, action, resource) when { false };";
    let path = dir.write("cedar-lint.yaml", &with_route("{ roles: [reader], policy: p }", &policies(never)));
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authorization[roles any of reader, policy p]"), "{out}");
    assert!(out.contains("warning: policies.p: policy `policy1` can never apply"), "{out}");
    assert!(out.contains("warning: policy set `unused` is declared but no route requires it"), "{out}");
    // The route serves PATCH (no `methods` listed: the standard ones), so policy0 may apply.
    assert!(!out.contains("`policy0`"), "{out}");
}

fn send_body(s: &Setup, who: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let url = format!("http://{}{path}", s.gw.addr("main"));
    let key = format!("X-API-Key: {}", s.keys[who]);
    let ct = format!("Content-Type: {content_type}");
    let (code, _, body) = curl(&["-X", method, "-H", &key, "-H", &ct, "--data-binary", body, &url]);
    (code, body)
}

#[test]
fn mass_assignment_is_refused_field_by_field() {
    let s = setup();
    let json = "application/json";
    // (who, method, content type, body, status, problem slug, pointer)
    let cases: &[(&str, &str, &str, &str, u16, &str, &str)] = &[
        ("alice", "PATCH", json, r#"{"name":"x"}"#, 200, "", ""),
        ("alice", "PATCH", json, r#"{"role":"admin"}"#, 403, "forbidden-property", "/role"),
        ("alice", "PUT", json, r#"{"name":"x","role":"admin"}"#, 403, "forbidden-property", "/role"),
        (
            "alice",
            "POST",
            "application/merge-patch+json",
            r#"{"r\u006fle":"admin"}"#,
            403,
            "forbidden-property",
            "/role",
        ),
        ("alice", "PATCH", json, r#"{"address":{"city":"c","zip":"1"}}"#, 403, "forbidden-property", "/address/zip"),
        ("alice", "PATCH", json, r#"{"address":{"city":"c"},"tags":["a",{"x":1}]}"#, 200, "", ""),
        ("alice", "PATCH", json, r#"{"address":{}}"#, 403, "forbidden-property", "/address"),
        ("alice", "PATCH", json, r#"[{"role":"admin"}]"#, 403, "forbidden-property", "/0/role"),
        // Parsers disagree on which of two keys wins: refused, as malformed.
        ("alice", "PATCH", json, r#"{"name":"a","name":"b"}"#, 400, "malformed-json", ""),
        // (the walk stops at the first field it refuses, before it meets the duplicate)
        ("alice", "PATCH", json, r#"{"role":"x","role":"y"}"#, 403, "forbidden-property", "/role"),
        // Keys that differ only in case are one key to case-insensitive parsers.
        ("alice", "PATCH", json, r#"{"name":"x","Name":"y"}"#, 400, "malformed-json", ""),
        ("alice", "PATCH", json, r#"{"name": "#, 400, "malformed-json", ""),
        ("alice", "PATCH", json, r#"{"name":"x"} {"role":"admin"}"#, 400, "malformed-json", ""),
        // A body the gateway cannot judge does not pass as if it were empty.
        ("alice", "POST", "application/x-www-form-urlencoded", "role=admin", 415, "unsupported-media-type", ""),
        ("alice", "PATCH", "text/plain", r#"{"role":"admin"}"#, 415, "unsupported-media-type", ""),
        // Roles add up: an admin is a reader too.
        ("carol", "PATCH", json, r#"{"name":"y","role":"x"}"#, 200, "", ""),
        ("dave", "PATCH", json, r#"{"name":"y"}"#, 403, "forbidden", ""),
    ];
    for (who, method, ct, body, want, slug, pointer) in cases {
        let before = s.up.hits();
        let (code, answer) = send_body(&s, who, method, "/profile/me", ct, body);
        assert_eq!(code, *want, "{who} {method} {ct} {body}: {answer}");
        if code == 200 {
            assert_eq!(s.up.hits(), before + 1);
            assert_eq!(s.up.last().unwrap().body, body.as_bytes(), "the body goes upstream as sent");
            continue;
        }
        assert_eq!(s.up.hits(), before, "{who} {method} {body} reached the upstream");
        assert_eq!(problem_type(&answer), problem(slug), "{answer}");
        let doc: serde_json::Value = serde_json::from_str(&answer).unwrap();
        if !pointer.is_empty() {
            assert_eq!(doc["pointer"], *pointer, "{answer}");
            assert!(!answer.contains("admin\""), "the value is never echoed: {answer}");
        }
        if *slug == "malformed-json" {
            assert!(doc["offset"].as_u64().is_some_and(|o| o as usize <= body.len()), "{answer}");
        }
    }
    // A GET reads no body and is judged on the head alone.
    assert_eq!(send(&s, Some("alice"), "GET", "/profile/me").0, 200);
    // Two media types: the upstream might read the body as the other one.
    let url = format!("http://{}/profile/me", s.gw.addr("main"));
    let key = format!("X-API-Key: {}", s.keys["alice"]);
    let (code, _, _) = curl(&[
        "-X",
        "PATCH",
        "-H",
        &key,
        "-H",
        "Content-Type: application/json",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data-binary",
        r#"{"name":"x"}"#,
        &url,
    ]);
    assert_eq!(code, 415);
    // The work a body causes is bounded: a long key over many leaves is refused, not walked.
    let hostile = format!("{{\"{}\":[{}0]}}", "k".repeat(5000), "0,".repeat(2000));
    let (code, answer) = send_body(&s, "alice", "PATCH", "/profile/me", "application/json", &hostile);
    assert_eq!(code, 400, "{answer}");
}

#[test]
fn tenants_from_the_path_or_the_host_must_be_the_principals() {
    let up = Upstream::start("app");
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET}
      tenant_claim: org.tenant
routes:
  - name: by-path
    match:
      path: {{ template: "/t/{{tenant}}/items" }}
    upstream: app
    auth: sso
    authorize:
      tenant: {{ param: tenant }}
  - name: by-host
    match:
      hosts: ["*.api.test"]
      path: {{ prefix: /h }}
    upstream: app
    auth: sso
    authorize:
      tenant: {{ host: "{{tenant}}.api.test" }}
logging:
  level: info
"#,
        up = up.addr
    );
    let gw = Gateway::start(&yaml);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = |org: serde_json::Value| {
        hs256(
            SECRET,
            &serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "u1", "iat": now, "exp": now + 600, "org": org}),
        )
    };
    let acme = token(serde_json::json!({"tenant": "acme"}));
    let none = token(serde_json::json!({}));
    let addr = gw.addr("main");
    let get = |token: &str, host: &str, path: &str| {
        let (code, _, body) = curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            &format!("Host: {host}"),
            &format!("http://{addr}{path}"),
        ]);
        (code, body)
    };
    let cases: &[(&str, &str, &str, u16)] = &[
        (&acme, "a", "/t/acme/items", 200),
        (&acme, "a", "/t/globex/items", 403),
        (&acme, "a", "/t/ACME/items", 403),
        (&acme, "a", "/t/ac%6de/items", 200),
        (&none, "a", "/t/acme/items", 403),
        (&acme, "acme.api.test", "/h/x", 200),
        (&acme, "ACME.Api.Test:8443", "/h/x", 200),
        (&acme, "globex.api.test", "/h/x", 403),
        (&acme, "acme.globex.api.test", "/h/x", 403),
        (&none, "acme.api.test", "/h/x", 403),
    ];
    let mut allowed = 0;
    for (token, host, path, want) in cases {
        let before = up.hits();
        let (code, body) = get(token, host, path);
        assert_eq!(code, *want, "{host} {path}: {body}");
        if code == 200 {
            allowed += 1;
        } else {
            assert_eq!(up.hits(), before, "{host} {path} reached the upstream");
            assert_eq!(problem_type(&body), problem("forbidden"), "{body}");
        }
    }
    assert_eq!(up.hits(), allowed);
}

#[test]
fn an_owner_named_in_the_json_body() {
    let s = setup();
    let json = "application/json";
    let cases: &[(&str, &str, &str, u16)] = &[
        ("alice", json, r#"{"account":{"owner":"alice"},"amount":5}"#, 200),
        ("alice", json, r#"{"account":{"owner":"bob"},"amount":5}"#, 403),
        ("alice", json, r#"{"account":{"owner":"al\u0069ce"}}"#, 200),
        ("alice", json, r#"{"account":{"owner":["alice"]}}"#, 403),
        ("alice", json, r#"{"account":{}}"#, 403),
        ("alice", json, "", 403),
        // The gateway and the upstream must read the same owner: a duplicate key is refused.
        ("alice", json, r#"{"account":{"owner":"alice","owner":"bob"}}"#, 400),
        ("alice", json, r#"{"account":{"owner":"bob"},"account":{"owner":"alice"}}"#, 400),
        ("alice", json, r#"{"account":{"owner":"alice"},"Account":{"owner":"bob"}}"#, 400),
        ("alice", json, r#"{"account":{"owner":"alice","OWNER":"bob"}}"#, 400),
        ("alice", "text/plain", r#"{"account":{"owner":"alice"}}"#, 415),
        ("carol", json, r#"{"account":{"owner":"bob"}}"#, 200),
        ("dave", json, r#"{"account":{"owner":"dave"}}"#, 403),
    ];
    for (who, ct, body, want) in cases {
        let before = s.up.hits();
        let (code, answer) = send_body(&s, who, "POST", "/payments", ct, body);
        assert_eq!(code, *want, "{who} {body}: {answer}");
        if code == 200 {
            assert_eq!(s.up.last().unwrap().body, body.as_bytes());
        } else {
            assert_eq!(s.up.hits(), before, "{who} {body} reached the upstream");
        }
    }
}

#[test]
fn ownership_known_only_to_the_upstream_is_checked_before_any_byte_is_released() {
    let s = setup();
    let cases: &[(&str, &str, u16, &str)] = &[
        ("alice", "/books/mine", 200, "s1"),
        ("bob", "/books/theirs", 200, "s2"),
        ("carol", "/books/theirs", 200, "s2"), // override role
        ("alice", "/books/theirs", 403, ""),
        ("alice", "/books/noowner", 403, ""),
        ("alice", "/books/nested", 403, ""),
        ("alice", "/books/dup", 403, ""),
        ("alice", "/books/text", 403, ""),
        ("alice", "/books/gone", 404, "no such book"),
        ("alice", "/shelf?size=big", 403, ""),
        ("alice", "/shelf?odd=1", 403, ""),
    ];
    for (who, path, want, shows) in cases {
        let (code, body) = send(&s, Some(who), "GET", path);
        assert_eq!(code, *want, "{who} {path}: {body}");
        if code == 403 {
            assert_eq!(problem_type(&body), problem("forbidden"), "{body}");
            assert!(!body.contains("secret") && !body.contains("owner"), "nothing of the answer leaks: {body}");
        } else {
            assert!(body.contains(shows), "{who} {path}: {body}");
        }
    }
    // A collection: the items that are not the principal's are dropped.
    let (code, body) = send(&s, Some("alice"), "GET", "/shelf");
    assert_eq!(code, 200, "{body}");
    let items: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(items, serde_json::json!([{"owner":"alice","t":1},{"owner":"alice","t":3}]));
    let log = s.gw.logs().join("\n");
    assert!(log.contains("\"event\":\"bola\""), "a BOLA event is logged: {log}");
    // A filtered answer is the caller's alone: no shared cache may keep it.
    let url = format!("http://{}/shelf", s.gw.addr("main"));
    let (_, headers, _) = curl(&["-H", &format!("X-API-Key: {}", s.keys["alice"]), &url]);
    assert!(headers.to_ascii_lowercase().contains("cache-control: private"), "{headers}");
}

#[test]
fn the_same_rules_hold_over_http2_and_for_head() {
    let s = setup();
    let h2 = ["--http2-prior-knowledge"];
    let cases: &[(&str, &str, &str, &[&str], u16)] = &[
        ("alice", "GET", "/docs/a", &h2, 200),
        ("alice", "DELETE", "/docs/a", &h2, 403),
        ("alice", "DELETE", "/DOCS/a", &h2, 403),
        ("alice", "GET", "/users/bob/orders", &h2, 403),
        ("alice", "GET", "/users/alice/orders", &h2, 200),
        ("alice", "GET", "/reports?owner=alice&owner=bob", &h2, 403),
        ("carol", "DELETE", "/docs/a", &h2, 200),
        // HEAD has no rule of its own under `methods:`: denied, not taken for GET.
        ("alice", "HEAD", "/docs/a", &["-I"], 403),
        ("alice", "HEAD", "/docs/a", &["-I", "--http2-prior-knowledge"], 403),
        // Where the route's own requirement applies, HEAD is judged like any method.
        ("alice", "HEAD", "/users/bob/orders", &["-I"], 403),
        ("alice", "HEAD", "/users/alice/orders", &["-I"], 200),
        // A route that judges answers is GET-only here: HEAD is not a way around it.
        ("alice", "HEAD", "/books/mine", &["-I"], 405),
    ];
    for (who, method, path, extra, want) in cases {
        let before = s.up.hits();
        let (code, body) = send_as(&s, Some(who), method, path, extra);
        assert_eq!(code, *want, "{who} {method} {path} {extra:?}: {body}");
        if code != 200 && !path.starts_with("/books") {
            assert_eq!(s.up.hits(), before, "{who} {method} {path} reached the upstream");
        }
    }
}

use std::time::Duration;

/// Polls `f` until it holds (at most `timeout`).
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// An RFC 3339 UTC time `offset` seconds from now (for policies' `datetime` windows).
fn utc(offset: i64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + offset;
    let out =
        std::process::Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"]).output();
    String::from_utf8(out.unwrap().stdout).unwrap().trim().to_owned()
}

#[test]
fn cedar_policies_decide_through_the_gateway_and_a_broken_one_is_refused_at_reload() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    // Open now (an hour either side), from one CIDR, for finance readers with an id in the path.
    let office = format!(
        r#"@id("office")
permit(principal in Portcullis::Role::"reader", action == Portcullis::Action::"GET", resource == Portcullis::Route::"reports")
when {{
  context.ip.isInRange(ip("10.20.0.0/16")) &&
  context.time >= datetime("{from}") && context.time < datetime("{to}") &&
  principal.claims has dept && principal.claims.dept == "finance" &&
  resource.params has id && resource.params.id != "locked"
}};
@id("closed")
permit(principal, action, resource == Portcullis::Route::"archive") when {{ context.time < datetime("{past}") }};
@id("no-contractors")
forbid(principal, action, resource) when {{ principal.claims has dept && principal.claims.dept == "contractors" }};
"#,
        from = utc(-3600),
        to = utc(3600),
        past = utc(-7200),
    );
    let policy_file = dir.write("office.cedar", &office);
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
trusted_proxies: [127.0.0.1/32]
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  sso:
    jwt:
      issuer: https://idp.test
      audiences: [api]
      algorithms: [HS256]
      hmac_secret: {SECRET}
      roles_claim: roles
roles:
  reader: {{}}
policies:
  office:
    file: {file}
    claims: {{ dept: String }}
routes:
  - name: reports
    match:
      path: {{ template: "/reports/{{id}}" }}
      methods: [GET, DELETE]
    upstream: app
    auth: sso
    authorize: {{ roles: [reader], policy: office }}
  - name: archive
    match:
      path: {{ prefix: /archive }}
    upstream: app
    auth: sso
    authorize: {{ policy: office }}
logging:
  level: info
  access_log: true
admin:
  address: 127.0.0.1:0
"#,
        up = up.addr,
        file = path_str(&policy_file),
    );
    let gw = Gateway::start_in(dir, &yaml);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = |dept: &str, roles: &[&str]| {
        hs256(
            SECRET,
            &serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "u1", "iat": now, "exp": now + 600,
                                "dept": dept, "roles": roles}),
        )
    };
    let finance = token("finance", &["reader"]);
    let addr = gw.addr("main");
    let get = |token: &str, from: &str, method: &str, path: &str| {
        let (code, _, body) = curl(&[
            "--path-as-is",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            &format!("X-Forwarded-For: {from}"),
            &format!("http://{addr}{path}"),
        ]);
        (code, body)
    };
    let cases: &[(&str, &str, &str, &str, u16)] = &[
        (&finance, "10.20.3.4", "GET", "/reports/7", 200),
        (&finance, "10.20.255.255", "GET", "/reports/%37", 200),
        (&finance, "10.21.3.4", "GET", "/reports/7", 403),
        (&finance, "192.0.2.1", "GET", "/reports/7", 403),
        // The last hop is the client: a spoofed first element does not count.
        (&finance, "10.20.3.4, 192.0.2.1", "GET", "/reports/7", 403),
        (&finance, "10.20.3.4", "DELETE", "/reports/7", 403),
        (&finance, "10.20.3.4", "GET", "/reports/locked", 403),
        (&token("sales", &["reader"]), "10.20.3.4", "GET", "/reports/7", 403),
        (&token("finance", &[]), "10.20.3.4", "GET", "/reports/7", 403),
        (&token("contractors", &["reader"]), "10.20.3.4", "GET", "/archive/x", 403),
        (&finance, "10.20.3.4", "GET", "/archive/x", 403),
    ];
    let mut allowed = 0;
    for (token, from, method, path, want) in cases {
        let before = up.hits();
        let (code, body) = get(token, from, method, path);
        assert_eq!(code, *want, "{from} {method} {path}: {body}");
        if code == 200 {
            allowed += 1;
        } else {
            assert_eq!(up.hits(), before, "{from} {method} {path} reached the upstream");
            assert_eq!(problem_type(&body), problem("forbidden"), "{body}");
            assert!(!body.contains("office") && !body.contains("10.20"), "no hint of the policy: {body}");
        }
    }
    assert_eq!(up.hits(), allowed);
    // Each decision names the policy that made it.
    let rules: Vec<String> = gw
        .wait_access_log(cases.len(), Duration::from_secs(5))
        .iter()
        .map(|l| l["authz_rule"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(rules.iter().any(|r| r == "authorize.policy:office/no-permit"), "{rules:?}");
    assert!(rules.iter().any(|r| r == "authorize.roles"), "{rules:?}");
    let m = gw.metrics();
    let series = r#"portcullis_authz_decisions_total{route="archive",decision="deny",rule="authorize.policy:office/no-contractors"}"#;
    assert_eq!(metric(&m, series), Some(1.0), "{m}");

    // A malformed policy is refused at reload, and the old set keeps serving.
    std::fs::write(&policy_file, "permit(principal, action, resource) when { principal.nickname == \"x\" };").unwrap();
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || gw.count_log("reload refused") >= 1), "{}", gw.logs().join("\n"));
    let refused = gw.logs().into_iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(refused.contains("office"), "{refused}");
    assert_eq!(get(&finance, "10.20.3.4", "GET", "/reports/7").0, 200);
    assert_eq!(get(&finance, "192.0.2.1", "GET", "/reports/7").0, 403);
    // A valid change applies.
    std::fs::write(&policy_file, office.replace("10.20.0.0/16", "192.0.2.0/24")).unwrap();
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || get(&finance, "192.0.2.1", "GET", "/reports/7").0 == 200));
    assert_eq!(get(&finance, "10.20.3.4", "GET", "/reports/7").0, 403);
}
