//! A real OpenID Provider for the tests: `tests/idp/server.mjs` (oidc-provider on Node.js) on a free
//! loopback port, its packages installed once when missing, stopped on drop. Used by the OIDC, DPoP and
//! secrets tests; each adds its own calls on top of [`Idp::post`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::curl;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client-credentials client the provider knows (`tests/idp/server.mjs`).
pub const APP: (&str, &str) = ("app", "app-secret-0123456789");
/// The gateway's introspection client, authenticating with HTTP Basic.
pub const INTROSPECTION_SECRET: &str = "gateway-secret-0123456789";
/// The gateway's introspection client that sends its secret in the form body.
pub const POST_SECRET: &str = "gateway-post-secret-0123";

pub fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Installs the provider's packages once when missing (several test processes may race: a lock file
/// decides which one runs `npm ci`).
pub fn ensure_installed() {
    let dir = idp_dir();
    let ready = || dir.join("node_modules/oidc-provider/package.json").exists();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        let lock = dir.join(".npm-ci.lock");
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&lock).is_ok() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("run npm (Node.js and npm are needed for the OpenID Provider tests)");
            let _ = std::fs::remove_file(&lock);
            assert!(status.success(), "npm ci in tests/idp failed");
        } else {
            assert!(Instant::now() < deadline, "waited too long for another test's npm ci");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A running provider; stopped (killed) on drop.
pub struct Idp {
    child: Child,
    _stdin: ChildStdin,
    pub issuer: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Idp {
    pub fn start() -> Idp {
        ensure_installed();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(idp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node (Node.js is needed for the OpenID Provider tests)");
        let stdin = child.stdin.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err_lines, err) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                err_lines.lock().unwrap().push(line);
            }
        });
        let Ok(issuer) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the OpenID Provider did not start:\n{}", stderr.lock().unwrap().join("\n"));
        };
        Idp { child, _stdin: stdin, issuer, stderr }
    }

    /// What the provider wrote on stderr so far (for assertion messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// POSTs a form to `path` (with HTTP Basic `auth` and extra `headers` when given): status and JSON body
    /// (`null` when the body is not JSON).
    pub fn post(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        form: &[(&str, &str)],
        headers: &[String],
    ) -> (u16, Value) {
        let mut args = vec![format!("{}{path}", self.issuer), "-X".into(), "POST".into()];
        if let Some((user, pw)) = auth {
            args.extend(["-u".into(), format!("{user}:{pw}")]);
        }
        for (k, v) in form {
            args.extend(["--data-urlencode".into(), format!("{k}={v}")]);
        }
        for h in headers {
            args.extend(["-H".into(), h.clone()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, body) = curl(&refs);
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The token endpoint's answer for `resource` by the client credentials grant (extra `headers`, such as
    /// a DPoP proof, when given); fails the test unless it is 200.
    pub fn token_response(&self, resource: &str, headers: &[String]) -> Value {
        let form = [("grant_type", "client_credentials"), ("scope", "orders:read"), ("resource", resource)];
        let (code, body) = self.post("/token", Some(APP), &form, headers);
        assert_eq!(code, 200, "token: {body}\n{}", self.stderr());
        body
    }

    /// An access token for `resource` by the client credentials grant.
    pub fn token(&self, resource: &str) -> String {
        self.token_response(resource, &[])["access_token"].as_str().unwrap().to_owned()
    }

    /// A JWT access token (the provider's `urn:portcullis:orders` resource).
    pub fn jwt(&self) -> String {
        self.token("urn:portcullis:orders")
    }

    /// An opaque access token, which only introspection can check.
    pub fn opaque(&self) -> String {
        let token = self.token("urn:portcullis:opaque");
        assert!(!token.contains('.'), "an opaque token");
        token
    }

    /// The provider's own counters (`/__admin/stats`).
    pub fn stats(&self) -> Value {
        let (code, _, body) = curl(&[&format!("{}/__admin/stats", self.issuer)]);
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub fn count(&self, what: &str) -> u64 {
        self.stats()[what].as_u64().unwrap()
    }

    /// Revokes `token` at the provider (RFC 7009).
    pub fn revoke(&self, token: &str) {
        let (code, body) = self.post("/token/revocation", Some(APP), &[("token", token)], &[]);
        assert_eq!(code, 200, "revocation: {body}");
    }

    /// One of the test server's own controls (`/__admin/ACTION`: rotate, retire, down, up).
    pub fn admin(&self, action: &str) -> Value {
        let (code, body) = self.post(&format!("/__admin/{action}"), None, &[], &[]);
        assert_eq!(code, 200, "admin {action}");
        body
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
