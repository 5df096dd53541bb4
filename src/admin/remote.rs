//! `portcullis keys --admin URL` and `portcullis bans --admin URL`: the same commands as against a local
//! store, sent to a running gateway's admin API instead (so a fleet is managed through any node). The
//! token comes from `--token` or, better (a command line is visible to other users), the environment
//! variable `PORTCULLIS_ADMIN_TOKEN`. `http://` is accepted for loopback addresses only.

use crate::authn::api_key::cli::KeysCommand;
use crate::client::{Client, Url};
use crate::guard::cli::BansCommand;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use std::time::Duration;

/// The environment variable the admin token is read from when `--token` is not given.
pub const TOKEN_ENV: &str = "PORTCULLIS_ADMIN_TOKEN";

pub struct Remote {
    client: Client,
    base: Url,
    token: String,
    rt: tokio::runtime::Runtime,
}

impl Remote {
    /// `ca`: a PEM file trusted for an `https://` admin URL (default: the system's trust store).
    pub fn new(url: &str, token: Option<String>, ca: Option<&str>) -> Result<Remote, String> {
        let base = Url::parse(url.trim_end_matches('/'))?;
        let token = token
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("give the admin token with --token or {TOKEN_ENV}"))?;
        let client = Client::new(ca, base.https, Duration::from_secs(30), 4 << 20)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        Ok(Remote { client, base, token, rt })
    }

    /// Calls the API; a problem answer becomes its detail (or title) as the error.
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = self.base.with_path(path);
        let mut headers = HeaderMap::new();
        let auth =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| "the token is not a header value")?;
        headers.insert(http::header::AUTHORIZATION, auth);
        let bytes = match &body {
            Some(b) => {
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                bytes::Bytes::from(b.to_string())
            }
            None => bytes::Bytes::new(),
        };
        let resp = self
            .rt
            .block_on(self.client.request(method, &url, headers, bytes))
            .map_err(|e| format!("{}: {e}", self.base.redacted()))?;
        let value: Value =
            if resp.body.is_empty() { Value::Null } else { serde_json::from_slice(&resp.body).unwrap_or(Value::Null) };
        if resp.status.is_success() {
            return Ok(value);
        }
        let why = value["detail"].as_str().or(value["title"].as_str()).unwrap_or("no detail");
        Err(format!("the admin API answered {}: {why}", resp.status.as_u16()))
    }
}

fn query(authenticator: Option<&str>) -> String {
    authenticator.map(|a| format!("?authenticator={}", crate::client::form_encode(a))).unwrap_or_default()
}

/// `portcullis keys --admin URL ...`.
pub fn keys(remote: &Remote, authenticator: Option<&str>, cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Create { principal, roles, scopes, expires, cidrs } => {
            let mut body = json!({"principal": principal, "roles": roles, "scopes": scopes, "cidrs": cidrs});
            if let Some(e) = expires {
                body["expires_in"] = e.into();
            }
            if let Some(a) = authenticator {
                body["authenticator"] = a.into();
            }
            let made = remote.call(Method::POST, "/admin/v1/keys", Some(body))?;
            eprintln!(
                "created key {} for {} (shown once: store it now)",
                made["key"]["id"].as_str().unwrap_or("?"),
                made["key"]["principal"].as_str().unwrap_or("?")
            );
            println!("{}", made["secret"].as_str().unwrap_or_default());
        }
        KeysCommand::List { expiring } => {
            if expiring.is_some() {
                return Err("--expiring works on a local store only; list through the API and filter".into());
            }
            println!("{:<10} {:<20} {:<20} {:<20} {:<10} expires", "id", "principal", "roles", "scopes", "status");
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/admin/v1/keys{}", query(authenticator));
                if let Some(c) = &cursor {
                    path.push(if path.contains('?') { '&' } else { '?' });
                    path.push_str(&format!("cursor={c}"));
                }
                let page = remote.call(Method::GET, &path, None)?;
                for k in page["items"].as_array().into_iter().flatten() {
                    let list = |v: &Value| {
                        v.as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                            .unwrap_or_default()
                    };
                    println!(
                        "{:<10} {:<20} {:<20} {:<20} {:<10} {}",
                        k["id"].as_str().unwrap_or(""),
                        k["principal"].as_str().unwrap_or(""),
                        list(&k["roles"]),
                        list(&k["scopes"]),
                        k["status"].as_str().unwrap_or(""),
                        k["expires_at"].as_str().unwrap_or("never")
                    );
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
        }
        KeysCommand::Rotate { id, grace } => {
            let made = remote.call(
                Method::POST,
                &format!("/admin/v1/keys/{id}/rotate{}", query(authenticator)),
                Some(json!({"grace": grace})),
            )?;
            eprintln!(
                "key {id} rotated to {}; the old key stays valid for {grace}",
                made["key"]["id"].as_str().unwrap_or("?")
            );
            println!("{}", made["secret"].as_str().unwrap_or_default());
        }
        KeysCommand::Revoke { id } => {
            remote.call(Method::POST, &format!("/admin/v1/keys/{id}/revoke{}", query(authenticator)), None)?;
            eprintln!("key {id} revoked");
        }
        KeysCommand::Hash => return Err("`keys hash` works on the config's secret, locally only".into()),
    }
    Ok(())
}

/// `portcullis bans --admin URL ...`.
pub fn bans(remote: &Remote, cmd: BansCommand) -> Result<(), String> {
    match cmd {
        BansCommand::Add { ip, prefix, principal, duration, reason } => {
            let (kind, target) = match (ip, prefix, principal) {
                (Some(t), None, None) => ("ip", t),
                (None, Some(t), None) => ("prefix", t),
                (None, None, Some(t)) => ("principal", t),
                _ => return Err("give one of --ip, --prefix, --principal".into()),
            };
            let ban = remote.call(
                Method::POST,
                "/admin/v1/bans",
                Some(json!({"kind": kind, "target": target, "duration": duration, "reason": reason})),
            )?;
            eprintln!(
                "banned {} {} until {}",
                ban["kind"].as_str().unwrap_or(""),
                ban["target"].as_str().unwrap_or(""),
                ban["until"].as_str().unwrap_or("")
            );
            println!("{}", ban["id"]);
        }
        BansCommand::List { all } => {
            if all {
                return Err("--all works on a local store only".into());
            }
            println!("{:<8} {:<10} {:<40} {:<21} {:<8} reason", "id", "kind", "target", "until", "source");
            let page = remote.call(Method::GET, "/admin/v1/bans?limit=500", None)?;
            for b in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<10} {:<40} {:<21} {:<8} {}",
                    b["id"],
                    b["kind"].as_str().unwrap_or(""),
                    b["target"].as_str().unwrap_or(""),
                    b["until"].as_str().unwrap_or(""),
                    b["source"].as_str().unwrap_or(""),
                    b["reason"].as_str().unwrap_or("")
                );
            }
        }
        BansCommand::Remove { id } => {
            remote.call(Method::DELETE, &format!("/admin/v1/bans/{id}"), None)?;
            eprintln!("ban {id} lifted");
        }
    }
    Ok(())
}
