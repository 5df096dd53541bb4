//! The admin listener over TLS, with admin callers by client certificate, and the rule that an admin
//! address off loopback needs TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::pki::Ca;
use common::*;

fn config(dir: &TempDir, ca: &str, admin_extra: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: 127.0.0.1:9
store:
  sqlite: {state}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: none
logging:
  level: info
admin:
  address: 127.0.0.1:0
  tls:
    certificates:
      - self_signed: [localhost]
    client_auth:
      ca: {ca}
      mode: optional
{admin_extra}
"#,
        state = dir.path("state.db").display(),
    )
}

fn call(gw: &Gateway, cert: Option<&(String, String)>, method: &str, path: &str) -> (u16, String) {
    let url = format!("https://localhost:{}{path}", gw.addr("admin").port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr("admin").port());
    let mut args = vec!["-k", "--resolve", &resolve, "-X", method];
    if let Some((c, k)) = cert {
        args.extend(["--cert", c.as_str(), "--key", k.as_str()]);
    }
    if method == "POST" {
        args.extend(["-H", "content-type: application/json", "-d", r#"{"name":"t","role":"viewer"}"#]);
    }
    args.push(&url);
    let (code, _, body) = curl(&args);
    (code, body)
}

#[test]
fn client_certificates_are_admin_callers_by_role() {
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "admin");
    let other = Ca::new(&dir.0, "other");
    let admin = ca.client("ops-admin", "/CN=ops-admin", &[]);
    let viewer = ca.client("ops-viewer", "/CN=ops-viewer", &[]);
    let stranger = ca.client("stranger", "/CN=stranger", &[]);
    let forged = other.client("forged", "/CN=ops-admin", &[]);
    let roles = "  client_certificates:\n    roles:\n      ops-admin: admin\n      ops-viewer: viewer\n";
    let yaml = config(&dir, &path_str(&ca.pem()), roles);
    let gw = Gateway::start_in(dir, &yaml);
    let (code, body) = call(&gw, Some(&admin), "GET", "/admin/v1/whoami");
    assert_eq!(code, 200, "{body}");
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((who["id"].as_str(), who["role"].as_str()), (Some("mtls:ops-admin"), Some("admin")));
    assert_eq!(call(&gw, Some(&admin), "GET", "/admin/v1/tokens").0, 200);
    assert_eq!(call(&gw, Some(&viewer), "GET", "/admin/v1/whoami").0, 200);
    assert_eq!(call(&gw, Some(&viewer), "GET", "/admin/v1/tokens").0, 403, "a viewer is not an admin");
    assert_eq!(call(&gw, Some(&viewer), "POST", "/admin/v1/tokens").0, 403);
    assert_eq!(call(&gw, Some(&stranger), "GET", "/admin/v1/whoami").0, 401, "a trusted certificate naming no admin");
    assert_eq!(call(&gw, None, "GET", "/admin/v1/whoami").0, 401);
    // A certificate with the admin's name from another CA never completes the handshake.
    assert_eq!(call(&gw, Some(&forged), "GET", "/admin/v1/whoami").0, 0);
    // The admin API's tokens work over TLS too, and plain HTTP to the TLS port gets nothing.
    let (code, _, _) = curl(&[&format!("http://127.0.0.1:{}/admin/v1/whoami", gw.addr("admin").port())]);
    assert_ne!(code, 200);
    assert!(gw.logs().iter().any(|l| l.contains("\"listener\":\"admin\"") && l.contains("\"tls\":true")));
}

#[test]
fn an_admin_address_off_loopback_needs_tls_and_certificates_need_a_ca() {
    let dir = TempDir::new();
    let base = |admin: &str| {
        format!(
            "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - address: 127.0.0.1:9\n\
             routes:\n  - name: app\n    match:\n      path: {{ prefix: / }}\n    upstream: app\n    auth: none\n{admin}"
        )
    };
    let cases = [
        ("admin:\n  address: 0.0.0.0:0\n  token: a-long-enough-metrics-token-1234\n", "needs `tls`"),
        ("admin:\n  address: 0.0.0.0:0\n  tls:\n    certificates:\n      - self_signed: [localhost]\n", "needs `tls`"),
        (
            "admin:\n  address: 127.0.0.1:0\n  tls:\n    certificates:\n      - self_signed: [localhost]\n  client_certificates:\n    roles:\n      ops: admin\n",
            "needs `tls.client_auth`",
        ),
        ("admin:\n  address: 127.0.0.1:0\n  client_certificates:\n    roles:\n      ops: root\n", "client_auth"),
        ("admin:\n  address: 127.0.0.1:0\n  tokens: x\n", "unknown field"),
    ];
    for (admin, want) in cases {
        let cfg = dir.write("c.yaml", &base(admin));
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
        assert_eq!(code, 1, "{admin}: {out}");
        assert!(err.contains(want), "{admin}: {err}");
    }
    let ok = "admin:\n  address: 0.0.0.0:0\n  token: a-long-enough-metrics-token-1234\n  tls:\n    certificates:\n      - self_signed: [localhost]\n";
    let cfg = dir.write("c.yaml", &base(ok));
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&cfg)], &[]);
    assert_eq!(code, 0, "{out}{err}");
}
