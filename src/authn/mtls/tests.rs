use super::*;
use crate::exchange::{ConnInfo, TlsInfo};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls_pki_types::CertificateDer;

fn cert(cn: Option<&str>, sans: Vec<SanType>) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new(); // rcgen's default has a CN
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = sans;
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

fn dns(d: &str) -> SanType {
    SanType::DnsName(d.try_into().unwrap())
}

fn auth(yaml: &str) -> Result<MtlsAuth, String> {
    let c: MtlsConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    MtlsAuth::new("t", &c)
}

fn check(a: &MtlsAuth, chain: Option<Vec<CertificateDer<'static>>>) -> Verdict {
    let conn = ConnInfo::new(
        0,
        "127.0.0.1:1".parse().unwrap(),
        Some(TlsInfo { version: None, sni: None, client_chain: chain }),
    );
    let (parts, ()) = http::Request::new(()).into_parts();
    let req = AuthRequest { parts: &parts, conn: &conn, client_ip: conn.peer.ip() };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(a.check(&req))
}

fn valid(v: Verdict) -> Principal {
    match v {
        Verdict::Valid(p) => (*p).clone(),
        other => panic!("expected a principal, got {other:?}"),
    }
}

#[test]
fn identity_from_each_field_and_roles() {
    let c = cert(Some("alice"), vec![uri("spiffe://example.org/ns/prod/sa/billing"), dns("API.example.org")]);
    let a = auth("principal_from: subject_cn\ndefault_roles: [guest]").unwrap();
    let p = valid(check(&a, Some(vec![c.clone()])));
    assert_eq!(
        (p.id.as_str(), p.roles.clone(), p.kind),
        ("alice", vec!["guest".to_string()], PrincipalKind::ClientCertificate)
    );
    let a = auth("principal_from: san_uri\nroles: { \"spiffe://example.org/ns/prod/sa/billing\": [billing] }").unwrap();
    let p = valid(check(&a, Some(vec![c.clone()])));
    assert_eq!((p.id.as_str(), p.roles), ("spiffe://example.org/ns/prod/sa/billing", vec!["billing".to_string()]));
    let a = auth("principal_from: san_dns\nroles: { Api.Example.org: [api] }").unwrap();
    let p = valid(check(&a, Some(vec![c])));
    assert_eq!((p.id.as_str(), p.roles), ("api.example.org", vec!["api".to_string()]));
}

#[test]
fn absent_missing_field_and_allowlist() {
    let a = auth("principal_from: san_uri").unwrap();
    assert!(matches!(check(&a, None), Verdict::Absent));
    let cn_only = cert(Some("bob"), vec![]);
    assert!(matches!(check(&a, Some(vec![cn_only.clone()])), Verdict::Invalid("identity_missing")));
    let dns_only = cert(None, vec![dns("a.example")]);
    assert!(matches!(check(&a, Some(vec![dns_only])), Verdict::Invalid("identity_missing")));
    let a = auth("principal_from: subject_cn").unwrap();
    assert!(matches!(check(&a, Some(vec![cert(None, vec![dns("x.example")])])), Verdict::Invalid("identity_missing")));
    let a = auth("principal_from: subject_cn\nallowed_ids: [alice]").unwrap();
    assert!(matches!(check(&a, Some(vec![cn_only])), Verdict::Invalid("identity_not_allowed")));
    assert_eq!(valid(check(&a, Some(vec![cert(Some("alice"), vec![])]))).id, "alice");
    // Several names of the wanted kind: the allowed one is chosen, not the first.
    let two = cert(None, vec![uri("spiffe://a/x"), uri("spiffe://a/y")]);
    let a = auth("principal_from: san_uri\nallowed_ids: [\"spiffe://a/y\"]").unwrap();
    assert_eq!(valid(check(&a, Some(vec![two]))).id, "spiffe://a/y");
}

#[test]
fn hostile_certificates_and_configs() {
    let a = auth("principal_from: subject_cn").unwrap();
    for junk in [&b""[..], b"\x30", b"\x30\x82\xff\xff", b"not a certificate at all", &[0u8; 64]] {
        let v = check(&a, Some(vec![CertificateDer::from(junk.to_vec())]));
        assert!(matches!(v, Verdict::Invalid("unparsable_certificate")), "{junk:?}: {v:?}");
    }
    // Every truncation of a real certificate is refused without panicking.
    let good = cert(Some("alice"), vec![uri("spiffe://a/b")]);
    for n in 0..good.len() {
        let v = check(&a, Some(vec![CertificateDer::from(good[..n].to_vec())]));
        assert!(matches!(v, Verdict::Invalid(_)), "truncated at {n}");
    }
    assert!(auth("principal_from: subject_cn\nallowed_ids: []").is_err());
    assert!(auth("principal_from: email").is_err());
    assert!(auth("principal_from: subject_cn\nextra: 1").is_err());
    assert!(auth("principal_from: subject_cn\nroles: { \"\": [a] }").is_err());
    assert_eq!(a.challenge(true), "ClientCertificate realm=\"portcullis\"");
}
