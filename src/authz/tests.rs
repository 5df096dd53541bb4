use super::*;
use crate::exchange::{IdentityHeaders, PrincipalKind};
use std::collections::BTreeSet;

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml_ng::from_str(text).unwrap()
}

fn roles() -> Arc<Roles> {
    let r: BTreeMap<String, RoleConfig> = yaml(
        "reader: {}\neditor: { includes: [reader] }\nadmin: { includes: [editor] }\nauditor: { includes: [reader] }\n",
    );
    let p: BTreeMap<String, PrincipalConfig> = yaml("granted-admin: { roles: [admin], via: [api_key] }\n");
    Arc::new(Roles::compile(&r, &p).unwrap())
}

fn principal(id: &str, roles: &[&str], scopes: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        kind: PrincipalKind::ApiKey,
        roles: roles.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: None,
        tenant: None,
        identity: IdentityHeaders::default(),
    }
}

fn authz(text: &str) -> Authz {
    let family = Family::default();
    Authz::compile(&yaml(text), &roles(), "r", &["id"], &Policies::new(), &family).unwrap()
}

fn decide(a: &Authz, p: &Principal, method: Method) -> (bool, String) {
    let d = a.decide(Some(p), &method, &Params::new(), None);
    (d.allowed, d.rule.to_string())
}

#[test]
fn roles_are_inherited_and_granted_by_config() {
    let a = authz("roles: [reader]");
    for role in ["reader", "editor", "admin", "auditor"] {
        assert_eq!(decide(&a, &principal("p", &[role], &[]), Method::GET), (true, "authorize".into()), "{role}");
    }
    assert_eq!(decide(&a, &principal("p", &[], &[]), Method::GET), (false, "authorize.roles".into()));
    assert!(!decide(&a, &principal("p", &["undeclared"], &[]), Method::GET).0);
    assert!(decide(&a, &principal("granted-admin", &[], &[]), Method::GET).0);
    // The same id through another method is another principal: no grant.
    let mut token = principal("granted-admin", &[], &[]);
    token.kind = PrincipalKind::Jwt;
    assert!(!decide(&a, &token, Method::GET).0);
    let a = authz("roles: [editor]");
    assert!(!decide(&a, &principal("p", &["reader"], &[]), Method::GET).0, "inheritance goes down, not up");
    assert!(!decide(&a, &principal("p", &["auditor"], &[]), Method::GET).0);
    assert!(decide(&a, &principal("p", &["admin"], &[]), Method::GET).0);
}

#[test]
fn scopes_any_and_all_and_nested_requirements() {
    let a = authz("scopes: { all_of: [orders:read, orders:write] }");
    assert!(decide(&a, &principal("p", &[], &["orders:write", "orders:read"]), Method::GET).0);
    assert_eq!(
        decide(&a, &principal("p", &[], &["orders:read"]), Method::GET),
        (false, "authorize.scopes.all_of".into())
    );
    let a = authz("any_of: [ { roles: [admin] }, { scopes: { any_of: [orders:admin, support] } } ]");
    assert!(decide(&a, &principal("p", &["admin"], &[]), Method::GET).0);
    assert!(decide(&a, &principal("p", &[], &["support"]), Method::GET).0);
    assert_eq!(decide(&a, &principal("p", &["editor"], &["x"]), Method::GET), (false, "authorize.any_of".into()));
    let a = authz("roles: [reader]\nall_of: [ { scopes: { all_of: [a] } }, { scopes: { all_of: [b] } } ]");
    assert!(decide(&a, &principal("p", &["reader"], &["a", "b"]), Method::GET).0);
    assert!(!decide(&a, &principal("p", &["reader"], &["a"]), Method::GET).0);
    assert!(!decide(&a, &principal("p", &[], &["a", "b"]), Method::GET).0);
}

#[test]
fn methods_carry_their_own_requirement_and_unlisted_ones_are_denied() {
    let a = authz("methods: { GET: { roles: [reader] }, DELETE: { roles: [admin] } }");
    let reader = principal("p", &["reader"], &[]);
    let admin = principal("p", &["admin"], &[]);
    assert_eq!(decide(&a, &reader, Method::GET), (true, "authorize.methods.GET".into()));
    assert_eq!(decide(&a, &reader, Method::DELETE), (false, "authorize.methods.DELETE.roles".into()));
    assert!(decide(&a, &admin, Method::DELETE).0);
    assert_eq!(decide(&a, &admin, Method::POST), (false, "authorize.methods (method not listed)".into()));
    // With a route-level requirement, unlisted methods fall back to it.
    let a = authz("roles: [reader]\nmethods: { DELETE: { roles: [admin] } }");
    assert!(decide(&a, &reader, Method::POST).0);
    assert!(!decide(&a, &reader, Method::DELETE).0);
    let a = authz("authenticated");
    assert_eq!(decide(&a, &principal("anyone", &[], &[]), Method::PATCH), (true, "authenticated".into()));
    assert!(!a.decide(None, &Method::GET, &Params::new(), None).allowed, "no principal, no access");
}

#[test]
fn config_mistakes_are_refused() {
    let family = Family::default();
    let bad = |text: &str| Authz::compile(&yaml(text), &roles(), "r", &["id"], &Policies::new(), &family).unwrap_err();
    assert!(bad("roles: [writer]").contains("not declared"));
    assert!(bad("roles: []").contains("empty"));
    assert!(bad("scopes: {}").contains("neither"));
    assert!(bad("any_of: [ { methods: { GET: authenticated } } ]").contains("only at the top"));
    assert!(bad("methods: { get: authenticated }").contains("not an HTTP method"));
    assert!(bad("{}").contains("authorize: authenticated"));
    assert!(serde_yaml_ng::from_str::<AuthorizeConfig>("rolez: [reader]").is_err(), "unknown keys are errors");
    let cycle: BTreeMap<String, RoleConfig> =
        yaml("a: { includes: [b] }\nb: { includes: [c] }\nc: { includes: [a] }\n");
    assert!(Roles::compile(&cycle, &BTreeMap::new()).unwrap_err().contains("cycle"));
    let undeclared: BTreeMap<String, RoleConfig> = yaml("a: { includes: [z] }\n");
    assert!(Roles::compile(&undeclared, &BTreeMap::new()).unwrap_err().contains("not declared"));
    let grants: BTreeMap<String, PrincipalConfig> = yaml("p: { roles: [nope], via: [jwt] }\n");
    assert!(Roles::compile(&BTreeMap::new(), &grants).unwrap_err().contains("not declared"));
    let r: BTreeMap<String, RoleConfig> = yaml("a: {}\n");
    let no_via: BTreeMap<String, PrincipalConfig> = yaml("p: { roles: [a] }\n");
    assert!(Roles::compile(&r, &no_via).unwrap_err().contains("via: [api_key]"));
    let bad_via: BTreeMap<String, PrincipalConfig> = yaml("p: { roles: [a], via: [saml] }\n");
    assert!(Roles::compile(&r, &bad_via).unwrap_err().contains("is not one of"));
}

#[test]
fn decisions_are_counted_per_rule() {
    let family = Family::default();
    let a = Authz::compile(&yaml("roles: [admin]"), &roles(), "orders", &[], &Policies::new(), &family).unwrap();
    let _ = a.decide(Some(&principal("p", &["admin"], &[])), &Method::GET, &Params::new(), None);
    // Two decisions (allow, deny) for each rule id: authorize, authorize.roles, and the unlisted-method,
    // property and response-owner ids.
    assert_eq!(a.counters.len(), 10);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// With no role granted, no requirement on roles lets anyone through, whatever the method.
        #[test]
        fn no_roles_no_access(method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                              role in prop::sample::select(vec!["reader", "editor", "admin", "auditor"]),
                              per_method in any::<bool>()) {
            let text = if per_method { format!("methods: {{ {method}: {{ roles: [{role}] }} }}") } else { format!("roles: [{role}]") };
            let a = authz(&text);
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            prop_assert!(!a.decide(Some(&principal("nobody", &[], &["scope"])), &m, &Params::new(), None).allowed);
            prop_assert!(!a.decide(None, &m, &Params::new(), None).allowed);
        }
    }
}

#[test]
fn owners_by_path_or_query_against_the_id_or_a_claim_with_an_override_role() {
    let by_id = authz("owner: { param: id, principal: id, override: [admin] }");
    let alice = principal("alice", &[], &[]);
    let params = |v: &str| vec![("id".to_owned(), v.to_owned())];
    let d = |a: &Authz, p: &Principal, params: &[(String, String)], q: Option<&str>| {
        let params: Params = params.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        a.decide(Some(p), &Method::GET, &params, q).allowed
    };
    assert!(d(&by_id, &alice, &params("alice"), None));
    assert!(!d(&by_id, &alice, &params("bob"), None));
    assert!(!d(&by_id, &alice, &params("Alice"), None), "ids compare exactly");
    assert!(!d(&by_id, &alice, &params("alice\u{fffd}"), None));
    assert!(!d(&by_id, &alice, &[], None), "no value, no ownership");
    let twice = [("id".to_owned(), "alice".to_owned()), ("id".to_owned(), "bob".to_owned())];
    assert!(!d(&by_id, &alice, &twice, None));
    assert!(d(&by_id, &principal("root", &["admin"], &[]), &params("bob"), None), "override role");
    assert!(!d(&by_id, &principal("ed", &["editor"], &[]), &params("bob"), None));

    let by_claim = authz("owner: { query: user, claim: sub }");
    let mut carol = principal("key-17", &[], &[]);
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"sub":"carol smith","n":5}"#).unwrap();
    carol.claims = Some(Arc::new(claims));
    assert!(d(&by_claim, &carol, &[], Some("user=carol+smith")));
    assert!(d(&by_claim, &carol, &[], Some("a=1&user=carol%20smith")));
    assert!(!d(&by_claim, &carol, &[], Some("user=carol+smith&user=dave")), "named twice");
    assert!(!d(&by_claim, &carol, &[], Some("user=carol+smith&%75ser=dave")), "named twice, once encoded");
    assert!(!d(&by_claim, &carol, &[], Some("user=dave")));
    assert!(!d(&by_claim, &carol, &[], Some("user=%ff")));
    assert!(!d(&by_claim, &carol, &[], None));
    assert!(!d(&by_claim, &principal("key-18", &[], &[]), &[], Some("user=carol+smith")), "no claims");
    let by_number = authz("owner: { query: n, claim: n }");
    assert!(!d(&by_number, &carol, &[], Some("n=5")), "only string claims are owners");

    let family = Family::default();
    let bad = |text: &str| Authz::compile(&yaml(text), &roles(), "r", &["id"], &Policies::new(), &family).unwrap_err();
    assert!(bad("owner: { param: user, principal: id }").contains("captures no `{user}`"));
    assert!(bad("owner: { param: id, query: id, principal: id }").contains("exactly one of `param`"));
    assert!(bad("owner: { body: owner, principal: id }").contains("not a JSON pointer"));
    assert!(bad("owner: { param: id }").contains("exactly one of `principal: id`"));
    assert!(bad("owner: { param: id, principal: id, override: [root] }").contains("not declared"));
    assert!(bad("tenant: { param: org }").contains("captures no `{org}`"));
    assert!(bad("tenant: { host: \"api.example.com\" }").contains("exactly one `{tenant}`"));
    assert!(bad("tenant: { host: \"{tenant}.{tenant}.example.com\" }").contains("exactly one `{tenant}`"));
    assert!(bad("tenant: { host: \"{tenant}.*.example.com\" }").contains("plain labels"));
    assert!(bad("tenant: {}").contains("exactly one of `param` or `host`"));
}

/// A policy set required by route `reports` (template `/reports/{id}`, GET and DELETE).
fn with_policy(cedar_text: &str, claims: &str) -> Result<Authz, String> {
    let config: cedar::PolicyConfig = yaml(&format!("cedar: |\n{}\nclaims: {claims}\n", indent(cedar_text)));
    let uses = cedar::Uses {
        routes: ["reports".to_owned()].into(),
        params: ["id".to_owned()].into(),
        methods: ["GET".to_owned(), "DELETE".to_owned()].into(),
    };
    let set = Arc::new(cedar::PolicySet::compile("office", &config, &uses)?);
    let policies: Policies = [("office".to_owned(), set)].into();
    let family = Family::default();
    Authz::compile(&yaml("{ roles: [reader], policy: office }"), &roles(), "reports", &["id"], &policies, &family)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// 2026-11-30 (a Monday) at `hh:mm` UTC.
fn monday_at(hh: u64, mm: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_996_800 + hh * 3600 + mm * 60)
}

fn at_time(a: &Authz, p: &Principal, method: Method, now: std::time::SystemTime, ip: &str, id: &str) -> (bool, String) {
    let facts =
        cedar::Facts { route: "reports", path: "/reports/x", ip: ip.parse().unwrap(), now, ..Default::default() };
    let params: Params = [("id", id)].into_iter().collect();
    let d = a.decide_at(Some(p), &method, &params, None, &facts);
    (d.allowed, d.rule.to_string())
}

const OFFICE: &str = r#"@id("office-hours")
permit(principal in Portcullis::Role::"reader", action == Portcullis::Action::"GET", resource)
when { context.ip.isInRange(ip("10.20.0.0/16")) && context.weekday <= 5 && context.hour >= 9 && context.hour < 17 };
@id("admins-delete")
permit(principal in Portcullis::Role::"admin", action == Portcullis::Action::"DELETE", resource is Portcullis::Route)
when { resource.params has id && resource.params.id != "locked" };
@id("no-interns")
forbid(principal, action, resource) when { principal.claims has level && principal.claims.level < 2 };"#;

#[test]
fn cedar_business_hours_from_one_cidr_with_a_fixed_clock() {
    let a = with_policy(OFFICE, "{ level: Long }").unwrap();
    let reader = principal("r", &["reader"], &[]);
    let inside = "10.20.3.4";
    assert_eq!(at_time(&a, &reader, Method::GET, monday_at(10, 0), inside, "1"), (true, "authorize".into()));
    assert!(at_time(&a, &reader, Method::GET, monday_at(9, 0), inside, "1").0, "the first minute");
    let no_permit = (false, "authorize.policy:office/no-permit".to_owned());
    assert_eq!(at_time(&a, &reader, Method::GET, monday_at(8, 59), inside, "1"), no_permit);
    assert_eq!(at_time(&a, &reader, Method::GET, monday_at(17, 0), inside, "1"), no_permit, "17:00 is closed");
    let saturday = monday_at(10, 0) - std::time::Duration::from_secs(2 * 86_400);
    assert_eq!(at_time(&a, &reader, Method::GET, saturday, inside, "1"), no_permit);
    // An IPv4 client seen on a dual-stack socket is the IPv4 client.
    assert!(at_time(&a, &reader, Method::GET, monday_at(10, 0), "::ffff:10.20.3.4", "1").0);
    for outside in ["10.21.0.1", "192.0.2.1", "::ffff:10.21.3.4", "::a14:304", "2001:db8::1", "127.0.0.1"] {
        assert_eq!(at_time(&a, &reader, Method::GET, monday_at(10, 0), outside, "1"), no_permit, "{outside}");
    }
    // Roles still apply beside the policy, and the policy beside the roles.
    assert_eq!(at_time(&a, &principal("n", &[], &[]), Method::GET, monday_at(10, 0), inside, "1").1, "authorize.roles");
    assert_eq!(at_time(&a, &reader, Method::DELETE, monday_at(10, 0), inside, "1"), no_permit);
}

#[test]
fn cedar_reads_roles_params_and_claims_and_names_the_deciding_policy() {
    let a = with_policy(OFFICE, "{ level: Long }").unwrap();
    let admin = principal("a", &["admin"], &[]);
    let now = monday_at(3, 0);
    assert!(at_time(&a, &admin, Method::DELETE, now, "192.0.2.1", "7").0, "admin includes reader; any time");
    assert_eq!(at_time(&a, &admin, Method::DELETE, now, "192.0.2.1", "locked").1, "authorize.policy:office/no-permit");
    // A claim of the declared type decides; one of another type is absent (the forbid does not apply).
    let mut intern = admin.clone();
    intern.claims = Some(Arc::new(serde_json::from_str(r#"{"level": 1}"#).unwrap()));
    assert_eq!(
        at_time(&a, &intern, Method::DELETE, now, "192.0.2.1", "7"),
        (false, "authorize.policy:office/no-interns".into())
    );
    intern.claims = Some(Arc::new(serde_json::from_str(r#"{"level": "1"}"#).unwrap()));
    assert!(at_time(&a, &intern, Method::DELETE, now, "192.0.2.1", "7").0);
    // Principals of different methods with one id are different entities.
    let p = |kind| Principal { kind, ..principal("alice", &["reader"], &[]) };
    let one =
        with_policy(r#"permit(principal == Portcullis::Principal::"jwt:alice", action, resource);"#, "{}").unwrap();
    assert!(at_time(&one, &p(PrincipalKind::Jwt), Method::GET, now, "192.0.2.1", "1").0);
    assert!(!at_time(&one, &p(PrincipalKind::ApiKey), Method::GET, now, "192.0.2.1", "1").0);
}

#[test]
fn cedar_an_erroring_forbid_denies() {
    // Validation catches most errors; an overflow is only found at run time.
    let text = r#"permit(principal, action, resource);
forbid(principal, action, resource) when { context.hour * 9223372036854775807 > 1 };"#;
    let a = with_policy(text, "{}").unwrap();
    let d = at_time(&a, &principal("r", &["reader"], &[]), Method::GET, monday_at(10, 0), "10.20.0.1", "1");
    assert_eq!(d, (false, "authorize.policy:office/error".into()));
}

#[test]
fn cedar_policies_are_validated_at_load() {
    let bad = [
        ("permit(principal, action, resource", "does not parse"),
        ("permit(principal, action, resource) when { principal.nickname == \"x\" };", "attribute that does not exist"),
        ("permit(principal, action, resource) when { resource.params.id == \"x\" };", "optional without `has`"),
        ("permit(principal, action, resource) when { context.hour == \"9\" };", "types differ"),
        ("permit(principal, action == Portcullis::Action::\"FETCH\", resource);", "unknown action"),
        ("permit(principal, action, resource) when { principal.claims.level == 1 };", "undeclared claim"),
        ("permit(principal == ?principal, action, resource);", "template"),
        ("", "empty"),
        (
            "@id(\"x\") permit(principal, action, resource);\n@id(\"x\") forbid(principal, action, resource);",
            "one name twice",
        ),
    ];
    for (text, why) in bad {
        assert!(with_policy(text, "{}").is_err(), "{why}: {text}");
    }
    assert!(with_policy("permit(principal, action, resource) when { principal.claims has level };", "{ level: Long }")
        .is_ok());
}

#[test]
fn cedar_lints_policies_that_can_never_apply() {
    let config: cedar::PolicyConfig = yaml(
        "cedar: |\n  permit(principal, action == Portcullis::Action::\"PUT\", resource);\n  permit(principal, action, resource == Portcullis::Route::\"other\");\n  permit(principal, action, resource) when { false };\n  permit(principal, action == Portcullis::Action::\"GET\", resource);\n",
    );
    let uses = cedar::Uses {
        routes: ["reports".to_owned()].into(),
        params: BTreeSet::new(),
        methods: ["GET".to_owned()].into(),
    };
    let set = cedar::PolicySet::compile("s", &config, &uses).unwrap();
    let never = set.never.join("\n");
    assert!(never.contains("`policy0` names only methods"), "{never}");
    assert!(never.contains("`policy1` names route `other`"), "{never}");
    assert!(never.contains("`policy2` can never apply"), "{never}");
    assert!(!never.contains("policy3"), "{never}");
}
