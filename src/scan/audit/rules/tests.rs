//! The rules on small configs, through [`crate::scan::audit::audit`] (no binary, no files).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::scan::audit::audit;
use crate::scan::finding::{Finding, Severity};
use std::path::Path;
use std::time::Duration;

const HEAD: &str = "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - address: 127.0.0.1:9000\n";

fn findings(yaml: &str) -> Vec<Finding> {
    let cfg = crate::config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    audit(&cfg, yaml, "t.yaml", Duration::from_secs(90 * 86_400), 1_800_000_000, false).findings
}

fn rules_of(yaml: &str, rule: &str) -> Vec<Finding> {
    findings(yaml).into_iter().filter(|f| f.rule == rule).collect()
}

fn route(name: &str, matcher: &str, auth: &str, extra: &str) -> String {
    format!("  - name: {name}\n    match: {matcher}\n    upstream: app\n    auth: {auth}\n{extra}")
}

const JWT: &str = "authenticators:\n  jwt-a:\n    jwt: { issuer: https://i, audiences: [a], algorithms: [ES256], max_lifetime: 1h }\n";

#[test]
fn shadowing_by_host_template_and_prefix() {
    let strong = route("api", "{ path: { prefix: /api } }", "jwt-a", "    authorize: { roles: [admin] }\n");
    // A host-specific route wins that host's requests.
    let by_host = route("host", "{ hosts: [partner.example.com], path: { prefix: /api } }", "none", "");
    let f = rules_of(&format!("{HEAD}{JWT}routes:\n{strong}{by_host}"), "PC-ROUTE-001");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("authentication") && f[0].message.contains("authorization"), "{}", f[0].message);
    // A template inside a prefix; weaker by authorization only.
    let template = route("one", "{ path: { template: \"/api/{id}\" } }", "jwt-a", "");
    let f = rules_of(&format!("{HEAD}{JWT}routes:\n{strong}{template}"), "PC-ROUTE-001");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("authorization") && !f[0].message.contains("authentication"), "{}", f[0].message);
    assert_eq!(f[0].location.as_ref().unwrap().line, 18, "the weaker route's `match`");
    // A stronger route inside a weaker one, or an equal one: nothing.
    let inner = route("inner", "{ path: { prefix: /api/secure } }", "jwt-a", "    authorize: { roles: [root] }\n");
    assert!(rules_of(&format!("{HEAD}{JWT}routes:\n{strong}{inner}"), "PC-ROUTE-001").is_empty());
    let outer = route("outer", "{ path: { prefix: / } }", "none", "");
    assert!(rules_of(&format!("{HEAD}{JWT}routes:\n{outer}{strong}"), "PC-ROUTE-001").is_empty());
    // Disjoint hosts: nothing.
    let other = route("other", "{ hosts: [b.example], path: { prefix: /api } }", "none", "");
    let strong_a = route("api", "{ hosts: [a.example], path: { prefix: /api } }", "jwt-a", "");
    assert!(rules_of(&format!("{HEAD}{JWT}routes:\n{strong_a}{other}"), "PC-ROUTE-001").is_empty());
}

#[test]
fn admin_paths_in_other_spellings() {
    for (path, hit) in [
        ("/Admin", true),
        ("/v1/_debug", true),
        ("/internal-api", true),
        ("/administrator", false),
        ("/debugger", false),
    ] {
        let r = route("r", &format!("{{ path: {{ prefix: {path} }} }}"), "none", "");
        let f = rules_of(&format!("{HEAD}routes:\n{r}"), "PC-AUTHZ-002");
        assert_eq!(f.len(), usize::from(hit), "{path}: {f:?}");
        if hit {
            assert_eq!(f[0].severity, Severity::Critical);
        }
    }
}

#[test]
fn secrets_by_place_not_by_name_alone() {
    let pg = |url: &str| {
        format!(
            "{HEAD}store:\n  sqlite: /tmp/nonexistent-portcullis-scan.db\n  postgres:\n    url: {url}\nroutes: []\n"
        )
    };
    let f = rules_of(&pg("postgres://gw:hunter2@db.internal/gw"), "PC-SECRET-001");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(!f[0].message.contains("hunter2") && !f[0].title.contains("hunter2"));
    assert!(rules_of(&pg("postgres://gw@db.internal/gw"), "PC-SECRET-001").is_empty());
    // `token` is a secret under `admin`, not in a route's tokenization fields.
    let admin = format!("{HEAD}admin:\n  address: 127.0.0.1:0\n  token: literal-admin-token\nroutes: []\n");
    assert_eq!(rules_of(&admin, "PC-SECRET-001").len(), 1);
}

#[test]
fn cors_null_and_plain_origins() {
    let cors = |origins: &str, credentials: bool| {
        let r = route(
            "w",
            "{ path: { prefix: /w } }",
            "none",
            &format!("    cors: {{ allow_origins: [{origins}], allow_credentials: {credentials} }}\n"),
        );
        rules_of(&format!("{HEAD}routes:\n{r}"), "PC-CORS-001")
    };
    assert_eq!(cors("\"null\"", true)[0].severity, Severity::High);
    assert_eq!(cors("\"null\"", false)[0].severity, Severity::Medium);
    assert_eq!(cors("\"http://app.example\"", true)[0].severity, Severity::Medium);
    assert!(cors("\"http://localhost:3000\"", true).is_empty());
    assert!(cors("\"https://app.example\"", true).is_empty());
}

#[test]
fn trusted_proxies_single_addresses_and_everything() {
    let f =
        rules_of(&format!("{HEAD}trusted_proxies: [203.0.113.7, 10.1.0.0/16, \"::/0\"]\nroutes: []\n"), "PC-NET-001");
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f.iter().map(|f| f.severity).max(), Some(Severity::Critical));
}

#[test]
fn per_method_and_any_of_authenticated_are_permissive() {
    let r = route(
        "r",
        "{ path: { prefix: /orders } }",
        "jwt-a",
        "    authorize: { roles: [clerk], methods: { GET: authenticated } }\n",
    );
    let f = rules_of(&format!("{HEAD}{JWT}routes:\n{r}"), "PC-AUTHZ-001");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("GET"), "{}", f[0].message);
    let r = route("r", "{ path: { prefix: /orders } }", "jwt-a", "    authorize: { roles: [clerk] }\n");
    assert!(rules_of(&format!("{HEAD}{JWT}routes:\n{r}"), "PC-AUTHZ-001").is_empty());
}

#[test]
fn json_configs_are_located_too() {
    let json = "{\n  \"listeners\": [{\"name\": \"m\", \"address\": \"127.0.0.1:0\"}],\n  \"authenticators\": {\n    \"k\": {\"api_key\": {\"hmac_secret\": \"literal-secret-literal-secret-0123\"}}\n  },\n  \"routes\": []\n}\n";
    let f = rules_of(json, "PC-SECRET-001");
    assert_eq!(f.len(), 1, "{f:?}");
    let at = f[0].location.as_ref().unwrap();
    assert_eq!((at.line, at.column), (4, 23), "the key's opening quote");
}
