//! Criterion micro-benchmark of an authorization decision (issue 11: at most 1 µs for RBAC). Run briefly
//! with `cargo bench --bench authz -- --warm-up-time 1 --measurement-time 2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use portcullis::authz::{AuthorizeConfig, Authz, PrincipalConfig, RoleConfig, Roles};
use portcullis::exchange::{IdentityHeaders, Principal, PrincipalKind};
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
    let authz = Authz::compile(&config, &roles, "orders", &["id"], &family).unwrap();
    let principal = Principal {
        id: "user777".into(),
        kind: PrincipalKind::Jwt,
        roles: vec!["role3".into(), "role12".into()],
        scopes: vec!["orders:read".into()],
        claims: None,
        tenant: None,
        identity: IdentityHeaders::default(),
    };
    let params = vec![("id".to_owned(), "user777".to_owned())];
    let mut g = c.benchmark_group("authz");
    g.bench_function("rbac+owner allow", |b| {
        b.iter(|| {
            let d = authz.decide(Some(black_box(&principal)), &Method::GET, black_box(&params), None);
            assert!(d.allowed);
        })
    });
    let other = vec![("id".to_owned(), "user778".to_owned())];
    g.bench_function("rbac+owner deny", |b| {
        b.iter(|| authz.decide(Some(black_box(&principal)), &Method::GET, black_box(&other), None))
    });
    g.finish();
}

criterion_group!(benches, bench_rbac);
criterion_main!(benches);
