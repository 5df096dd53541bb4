//! The admin API from a test: a token made with `portcullis admin token create`, and calls through
//! curl (a real client).

use super::{curl, portcullis, TempDir};
use std::net::SocketAddr;
use std::path::Path;

/// Makes an admin token of `role` in the store of `config` (the CLI); returns (token, id).
pub fn token(config: &Path, role: &str) -> (String, String) {
    let (code, out, err) =
        portcullis(&["admin", "token", "create", "--role", role, "--name", role, "-c", &config.to_string_lossy()], &[]);
    assert_eq!(code, 0, "admin token create: {err}");
    let id = err.split_whitespace().nth(3).unwrap_or_default().to_owned();
    (out.trim().to_owned(), id)
}

/// An answer: status, headers (lower-cased names), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// A problem+json answer's type slug.
    pub fn problem(&self) -> String {
        assert_eq!(self.header("content-type").as_deref(), Some("application/problem+json"), "{self:?}");
        self.json()["type"].as_str().unwrap_or_default().trim_start_matches("urn:portcullis:problem:").to_owned()
    }
}

/// Calls `method path` on the admin listener `addr` with `token` (if any), a JSON `body` (if any) and
/// extra headers.
pub fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> Answer {
    let dir = TempDir::new();
    let url = format!("http://{addr}{path}");
    let mut args: Vec<String> = vec!["-X".into(), method.into()];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {t}"));
    }
    if let Some(b) = body {
        let f = dir.write("body", b);
        if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("content-type:")) {
            args.push("-H".into());
            args.push("content-type: application/json".into());
        }
        args.push("--data-binary".into());
        args.push(format!("@{}", f.display()));
    }
    for h in headers {
        args.push("-H".into());
        args.push((*h).to_owned());
    }
    args.push(url);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, headers, body) = curl(&refs);
    Answer { status, headers, body }
}
