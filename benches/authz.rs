//! Criterion micro-benchmarks of authorization decisions (issue 11: at most 1 µs for RBAC, 20 µs for a
//! Cedar decision on 20 policies). Run briefly
//! with `cargo bench --bench authz -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use portcullis::authz::cedar::{ClaimType, Facts, PolicyConfig, PolicySet, Uses};
use portcullis::authz::{AuthorizeConfig, Authz, Policies, PrincipalConfig, RoleConfig, Roles};
use portcullis::exchange::{IdentityHeaders, Params, Principal, PrincipalKind};
use prometheus_client::metrics::family::Family;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

fn bench_rbac(c: &mut Criterion) {
    // Twenty roles in a chain of inheritance, 1,000 principals granted roles by config.
    let mut roles = BTreeMap::new();
    for i in 0..20 {
        let includes = if i == 0 { vec![] } else { vec![format!("role{}", i - 1)] };
        roles.insert(format!("role{i}"), RoleConfig { includes });
    }
    let principals: BTreeMap<String, PrincipalConfig> = (0..1000)
        .map(|i| {
            (format!("user{i}"), PrincipalConfig { roles: vec![format!("role{}", i % 20)], via: vec!["jwt".into()] })
        })
        .collect();
    let roles = Arc::new(Roles::compile(&roles, &principals).unwrap());
    let family = Family::default();
    let config: AuthorizeConfig = serde_yaml_ng::from_str(
        "roles: [role5]\nowner: { param: id, principal: id, override: [role19] }\nmethods: { DELETE: { roles: [role19] } }",
    )
    .unwrap();
    let authz = Authz::compile(&config, &roles, "orders", &["id"], &Default::default(), &family).unwrap();
    let principal = Principal {
        id: "user777".into(),
        kind: PrincipalKind::Jwt,
        roles: vec!["role3".into(), "role12".into()],
        scopes: vec!["orders:read".into()],
        claims: None,
        tenant: None,
        identity: IdentityHeaders::default(),
    };
    let params: Params = [("id", "user777")].into_iter().collect();
    let mut g = c.benchmark_group("authz");
    g.bench_function("rbac+owner allow", |b| {
        b.iter(|| {
            let d = authz.decide(Some(black_box(&principal)), &Method::GET, black_box(&params), None);
            assert!(d.allowed);
        })
    });
    let other: Params = [("id", "user778")].into_iter().collect();
    g.bench_function("rbac+owner deny", |b| {
        b.iter(|| authz.decide(Some(black_box(&principal)), &Method::GET, black_box(&other), None))
    });
    g.finish();
}

/// A 20-policy Cedar set on route `orders`: 18 permits scoped to other methods, one that applies (a
/// role, a CIDR, hours, a claim, a path parameter) and one forbid. Roles are tested as entity
/// membership (`principal in Portcullis::Role::"r"`) or as the `roles` attribute.
fn cedar_authz(membership: bool) -> Authz {
    let role = |r: &str| {
        if membership {
            format!("principal in Portcullis::Role::\"{r}\"")
        } else {
            format!("principal.roles.contains(\"{r}\")")
        }
    };
    let mut text = String::new();
    for i in 0..18 {
        let method = ["PUT", "POST", "PATCH"][i % 3];
        text.push_str(&format!(
            "@id(\"p{i}\") permit(principal, action == Portcullis::Action::\"{method}\", resource) \
             when {{ {} && resource.params has id && resource.params.id == \"{i}\" }};\n",
            role(&format!("role{}", i % 20))
        ));
    }
    text.push_str(&format!(
        "@id(\"office\") permit(principal, action == Portcullis::Action::\"GET\", resource) \
         when {{ {} && context.ip.isInRange(ip(\"10.0.0.0/8\")) && context.hour >= 0 && context.hour < 24 && \
         principal.claims has dept && principal.claims.dept == \"finance\" && resource.params has id }};\n\
         @id(\"banned\") forbid(principal, action, resource) when {{ principal.scopes.contains(\"banned\") }};\n",
        role("role5")
    ));
    let config =
        PolicyConfig { cedar: Some(text), claims: [("dept".to_owned(), ClaimType::String)].into(), file: None };
    let uses = Uses {
        routes: ["orders".to_owned()].into(),
        params: ["id".to_owned()].into(),
        methods: ["GET", "PUT", "POST", "PATCH"].iter().map(|m| (*m).to_owned()).collect(),
    };
    let set = Arc::new(PolicySet::compile("bench", &config, &uses).unwrap());
    assert_eq!(set.names().count(), 20);
    let mut roles = BTreeMap::new();
    for i in 0..20 {
        let includes = if i == 0 { vec![] } else { vec![format!("role{}", i - 1)] };
        roles.insert(format!("role{i}"), RoleConfig { includes });
    }
    let roles = Arc::new(Roles::compile(&roles, &BTreeMap::new()).unwrap());
    let policies: Policies = [("bench".to_owned(), set)].into();
    let config: AuthorizeConfig = serde_yaml_ng::from_str("policy: bench").unwrap();
    Authz::compile(&config, &roles, "orders", &["id"], &policies, &Family::default()).unwrap()
}

/// A Cedar decision on a set of 20 policies (issue 11: at most 20 µs).
fn bench_cedar(c: &mut Criterion) {
    let principal = Principal {
        id: "user777".into(),
        kind: PrincipalKind::Jwt,
        roles: vec!["role7".into()],
        scopes: vec!["orders:read".into()],
        claims: Some(Arc::new(serde_json::from_str(r#"{"dept":"finance","sub":"user777"}"#).unwrap())),
        tenant: None,
        identity: IdentityHeaders::default(),
    };
    let params: Params = [("id", "42")].into_iter().collect();
    let facts = Facts { route: "orders", path: "/orders/42", ip: "10.1.2.3".parse().unwrap(), ..Facts::default() };
    let outside = Facts { ip: "192.0.2.1".parse().unwrap(), ..facts.clone() };
    let mut g = c.benchmark_group("authz");
    for (membership, form) in [(false, "roles attribute"), (true, "role membership")] {
        let authz = cedar_authz(membership);
        g.bench_function(format!("cedar 20 policies, {form}, allow"), |b| {
            b.iter(|| {
                let d = authz.decide_at(Some(black_box(&principal)), &Method::GET, black_box(&params), None, &facts);
                assert!(d.allowed);
            })
        });
        // Each decision from another client: no context is reused.
        let mut n = 0u32;
        g.bench_function(format!("cedar 20 policies, {form}, allow, a new client each time"), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let ip = std::net::IpAddr::from((10u32 << 24 | (n & 0xff_ffff)).to_be_bytes());
                let f = Facts { ip, ..facts.clone() };
                authz.decide_at(Some(black_box(&principal)), &Method::GET, black_box(&params), None, &f)
            })
        });
        g.bench_function(format!("cedar 20 policies, {form}, deny"), |b| {
            b.iter(|| authz.decide_at(Some(black_box(&principal)), &Method::GET, black_box(&params), None, &outside))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_rbac, bench_cedar);
criterion_main!(benches);
