#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The dashboard (`/admin/ui/`) and its live statistics through the real binary: the session rules with
//! curl (cookie flags, login CSRF and limits, logout, redirects, the stats endpoints and their stream),
//! and the pages in a real headless Chromium driven through chromedriver by Debian's python3-selenium
//! (`tests/ui/driver.py`), with a screenshot of each step in `target/ui-screenshots/`.
#[allow(unreachable_pub)]
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "dashboard-test-server-secret-0123456789";

/// A real API key for `principal` and its config entry.
fn key(principal: &str) -> (String, String) {
    let (id, key) = portcullis::authn::api_key::generate().unwrap();
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hash: String = aws_lc_rs::hmac::sign(&k, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let entry = format!("        - id: {id}\n          hash: {hash}\n          principal: {principal}\n");
    (key, entry)
}

/// `/public` open, `/private` behind an API key; clients through the trusted proxy 127.0.0.1.
fn config(up: std::net::SocketAddr, dir: &TempDir, key_entry: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
trusted_proxies: [127.0.0.1/32]
store:
  sqlite: {state}
authenticators:
  keys:
    api_key:
      hmac_secret: {SECRET}
      keys:
{key_entry}
routes:
  - name: public
    match: {{ path: {{ prefix: /public }} }}
    upstream: app
    auth: none
  - name: private
    match: {{ path: {{ prefix: /private }} }}
    upstream: app
    auth: keys
    authorize: authenticated
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        state = path_str(&dir.path("state.db")),
    )
}

/// A running gateway, its upstream, an API key of its principal, and admin tokens made with
/// `portcullis admin token create`.
struct Setup {
    up: Upstream,
    gw: Gateway,
    key: String,
    admin: String,
    viewer: String,
}

fn start() -> Setup {
    start_as("alice")
}

fn start_as(principal: &str) -> Setup {
    let up = Upstream::start("app");
    let (key, entry) = key(principal);
    let dir = TempDir::new();
    launch(up, dir, |up, dir| config(up, dir, &entry), key)
}

/// Writes the config `yaml` makes, makes an admin and a viewer token in its store, starts the gateway.
fn launch(up: Upstream, dir: TempDir, yaml: impl Fn(std::net::SocketAddr, &TempDir) -> String, key: String) -> Setup {
    let yaml = yaml(up.addr, &dir);
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (admin, _) = common::admin::token(&cfg, "admin");
    let (viewer, _) = common::admin::token(&cfg, "viewer");
    let gw = Gateway::start_in(dir, &yaml);
    Setup { up, gw, key, admin, viewer }
}

fn admin_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.addr("admin"))
}

/// The value of the `Set-Cookie` named `name` (the whole header line after the name's `=`).
fn set_cookie(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        v.trim().strip_prefix(&format!("{name}=")).map(str::to_owned)
    })
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// GET the login form: (login cookie value, the form's csrf field).
fn login_form(gw: &Gateway) -> (String, String) {
    let (code, headers, body) = curl(&[&admin_url(gw, "/admin/ui/login")]);
    assert_eq!(code, 200, "{body}");
    let cookie = set_cookie(&headers, "portcullis_login").unwrap();
    let value = cookie.split(';').next().unwrap().to_owned();
    assert!(body.contains(&format!("name=\"csrf\" value=\"{value}\"")), "{body}");
    (value.clone(), value)
}

/// POST the login form; returns (status, headers, body).
fn post_login(gw: &Gateway, login_cookie: Option<&str>, csrf: &str, token: &str) -> (u16, String, String) {
    let url = admin_url(gw, "/admin/ui/login");
    let form = format!("csrf={csrf}&token={token}");
    let cookie = login_cookie.map(|c| format!("portcullis_login={c}")).unwrap_or_default();
    let mut args = vec!["-X", "POST", "--data-raw", form.as_str()];
    if login_cookie.is_some() {
        args.extend(["-b", cookie.as_str()]);
    }
    args.push(&url);
    curl(&args)
}

/// Logs in with curl: the session cookie's value.
fn log_in(gw: &Gateway, token: &str) -> String {
    let (c, csrf) = login_form(gw);
    let (code, headers, body) = post_login(gw, Some(&c), &csrf, token);
    assert_eq!(code, 303, "{body}");
    let cookie = set_cookie(&headers, "portcullis_admin").unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

fn with_session(gw: &Gateway, session: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = admin_url(gw, path);
    let cookie = format!("portcullis_admin={session}");
    let mut args = vec!["-b", cookie.as_str()];
    args.extend(extra);
    args.push(&url);
    curl(&args)
}

/// The CSRF token in a page's `<meta name="csrf-token">`.
fn page_csrf(page: &str) -> String {
    let at = page.find("name=\"csrf-token\" content=\"").unwrap() + "name=\"csrf-token\" content=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[test]
fn sessions_cookie_flags_login_csrf_logout_and_redirects() {
    let Setup { up, gw, admin, .. } = start();
    // Any page without a session: 303 to the login form, with the dashboard's headers.
    for path in ["/admin/ui/", "/admin/ui/keys", "/admin/ui/bans", "/admin/ui/whatever"] {
        let (code, headers, _) = curl(&[&admin_url(&gw, path)]);
        assert_eq!(code, 303, "{path}");
        assert_eq!(header(&headers, "location").as_deref(), Some("/admin/ui/login"), "{path}");
    }
    let (code, headers, _) = curl(&[&admin_url(&gw, "/admin/ui")]);
    assert_eq!((code, header(&headers, "location").as_deref()), (303, Some("/admin/ui/")));
    let (code, headers, body) = curl(&[&admin_url(&gw, "/admin/ui/login")]);
    assert_eq!(code, 200);
    assert_eq!(
        header(&headers, "content-security-policy").as_deref(),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    );
    for (h, v) in [
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(header(&headers, h).as_deref(), Some(v), "{h}");
    }
    assert!(!body.contains("<script>") && !body.contains("style="), "{body}");

    // A wrong token: the form again with a generic message; the token is not echoed nor logged.
    let (c, csrf) = login_form(&gw);
    let wrong = "pca_WRONGtoken%3Cscript%3E";
    let (code, headers, body) = post_login(&gw, Some(&c), &csrf, wrong);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Login failed.") && !body.contains("WRONGtoken"), "{body}");
    assert!(set_cookie(&headers, "portcullis_admin").is_none());
    // Without the form's cookie (a cross-site post cannot read it): refused even with the right token.
    let (code, headers, _) = post_login(&gw, None, &csrf, &admin);
    assert_eq!(code, 403);
    assert!(set_cookie(&headers, "portcullis_admin").is_none());
    let (code, _, _) = post_login(&gw, Some(&c), "another-value", &admin);
    assert_eq!(code, 403);
    // From another origin: refused.
    let url = admin_url(&gw, "/admin/ui/login");
    let form = format!("csrf={csrf}&token={admin}");
    let cookie = format!("portcullis_login={c}");
    let (code, _, _) =
        curl(&["-X", "POST", "--data-raw", &form, "-b", &cookie, "-H", "Origin: http://evil.example", &url]);
    assert_eq!(code, 403);

    // The right token: a session cookie with the flags, 256 random bits.
    let (code, headers, _) = post_login(&gw, Some(&c), &csrf, &admin);
    assert_eq!(code, 303);
    assert_eq!(header(&headers, "location").as_deref(), Some("/admin/ui/"));
    let cookie = set_cookie(&headers, "portcullis_admin").unwrap();
    let (session, flags) = cookie.split_once(';').unwrap();
    assert_eq!(flags.trim(), "Path=/admin; HttpOnly; SameSite=Strict", "no Secure without TLS");
    use base64::Engine;
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(session).unwrap().len(), 32);
    let session = session.to_owned();
    assert_ne!(session, log_in(&gw, &admin));
    assert!(!gw.logs().join("\n").contains(&admin), "the admin token was logged");
    assert!(!gw.logs().join("\n").contains(&session), "a session id was logged");

    // The pages and the admin API take the cookie.
    let (code, _, page) = with_session(&gw, &session, "/admin/ui/", &[]);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<script src=\"/admin/ui/app.js\" defer></script>"), "{page}");
    let csrf = page_csrf(&page);
    let (code, _, stats) = with_session(&gw, &session, "/admin/v1/stats", &[]);
    assert_eq!(code, 200, "{stats}");
    let _: Value = serde_json::from_str(&stats).unwrap();
    let (code, _, me) = with_session(&gw, &session, "/admin/v1/whoami", &[]);
    assert_eq!(code, 200, "{me}");
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["role"], "admin");
    assert!(me["id"].as_str().unwrap().starts_with("session:"), "{me}");
    // A forged or unknown cookie is no session.
    let (code, _, body) = with_session(&gw, "forged", "/admin/v1/stats", &[]);
    assert_eq!(code, 401);
    assert_eq!(problem_type(&body), problem("unauthorized"));

    // Logout needs the session's token: without it, nothing changes.
    let (code, _, _) = with_session(&gw, &session, "/admin/ui/logout", &["-X", "POST", "--data-raw", "csrf=nope"]);
    assert_eq!(code, 403);
    let (code, _, _) = with_session(&gw, &session, "/admin/ui/logout", &["-X", "POST"]);
    assert_eq!(code, 403);
    assert_eq!(with_session(&gw, &session, "/admin/v1/stats", &[]).0, 200);
    let form = format!("csrf={csrf}");
    let (code, headers, _) = with_session(&gw, &session, "/admin/ui/logout", &["-X", "POST", "--data-raw", &form]);
    assert_eq!(code, 303);
    assert!(set_cookie(&headers, "portcullis_admin").unwrap().contains("Max-Age=0"));
    // The logged-out session is refused everywhere.
    let (code, _, body) = with_session(&gw, &session, "/admin/v1/stats", &[]);
    assert_eq!(code, 401, "{body}");
    assert_eq!(problem_type(&body), problem("unauthorized"));
    let (code, headers, _) = with_session(&gw, &session, "/admin/ui/", &[]);
    assert_eq!((code, header(&headers, "location").as_deref()), (303, Some("/admin/ui/login")));

    // Failed logins are limited per address: after five (one above), even the right token waits.
    let (c, csrf) = login_form(&gw);
    for _ in 0..4 {
        assert_eq!(post_login(&gw, Some(&c), &csrf, "wrong").0, 401);
    }
    let (code, headers, body) = post_login(&gw, Some(&c), &csrf, &admin);
    assert_eq!(code, 429, "{body}");
    assert!(set_cookie(&headers, "portcullis_admin").is_none());
    // None of this reached the upstream.
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_viewers_session_reads_and_gets_no_write_controls() {
    let Setup { gw, viewer, .. } = start();
    let session = log_in(&gw, &viewer);
    for (page, form) in [("/admin/ui/keys", "key-create"), ("/admin/ui/bans", "ban-add")] {
        let (code, _, html) = with_session(&gw, &session, page, &[]);
        assert_eq!(code, 200, "{html}");
        assert!(!html.contains(form) && !html.contains("data-write"), "{html}");
    }
    let (_, _, html) = with_session(&gw, &session, "/admin/ui/", &[]);
    assert!(html.contains("(viewer)"), "{html}");
    let csrf = page_csrf(&html);
    let (code, _, _) = with_session(&gw, &session, "/admin/v1/stats", &[]);
    assert_eq!(code, 200);
    // A write with the right CSRF token is still refused for the role.
    let h = format!("X-CSRF-Token: {csrf}");
    let ban = r#"{"kind":"ip","target":"203.0.113.7","duration":"1h"}"#;
    let (code, _, body) = with_session(
        &gw,
        &session,
        "/admin/v1/bans",
        &["-X", "POST", "-H", "Content-Type: application/json", "-H", &h, "--data-raw", ban],
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(problem_type(&body), problem("forbidden"));
}

/// Polls the stats (bearer token) until `f` holds.
fn stats_until(gw: &Gateway, token: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let auth = format!("Authorization: Bearer {token}");
    loop {
        let (code, _, body) = curl(&["-H", &auth, &admin_url(gw, "/admin/v1/stats")]);
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "stats never got there: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn type_total(v: &Value, kind: &str) -> u64 {
    v["rejections_by_type"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == kind)
        .map_or(0, |t| t["total"].as_u64().unwrap())
}

#[test]
fn live_stats_count_requests_refusals_methods_and_clients() {
    let Setup { up, gw, key: k, viewer, .. } = start();
    let main = gw.addr("main");
    // Without a credential, or with a wrong one: 401.
    for auth in [None, Some("Authorization: Bearer wrong"), Some("Authorization: Basic YTpi")] {
        let mut args = vec![];
        if let Some(a) = auth {
            args.extend(["-H", a]);
        }
        let url = admin_url(&gw, "/admin/v1/stats");
        args.push(&url);
        let (code, _, body) = curl(&args);
        assert_eq!(code, 401, "{auth:?}");
        assert_eq!(problem_type(&body), problem("unauthorized"));
    }
    let mut conn = RawConn::connect(main);
    for _ in 0..40 {
        assert_eq!(status_of(&conn.get("/public/a", Duration::from_secs(5))), 200);
    }
    let key_header = format!("X-API-Key: {k}");
    for _ in 0..6 {
        let (code, _, _) =
            curl(&["-H", &key_header, "-H", "X-Forwarded-For: 198.51.100.23", &format!("http://{main}/private/x")]);
        assert_eq!(code, 200);
    }
    let before = up.hits();
    for _ in 0..3 {
        let (code, _, _) = curl(&[
            "-H",
            "X-API-Key: pcs_nope_nope",
            "-H",
            "X-Forwarded-For: 203.0.113.66",
            &format!("http://{main}/private/x"),
        ]);
        assert_eq!(code, 401);
    }
    for _ in 0..2 {
        let (code, _, _) = curl(&[&format!("http://{main}/elsewhere")]);
        assert_eq!(code, 404);
    }
    assert_eq!(up.hits(), before);
    let v = stats_until(&gw, &viewer, 10, |v| {
        v["requests"]["total"].as_u64().unwrap() >= 51
            && type_total(v, "unauthorized") == 3
            && type_total(v, "not-found") == 2
            && v["top_client_ips"].as_array().unwrap().iter().any(|t| t["name"] == "203.0.113.66" && t["refusals"] == 3)
    });
    assert_eq!(v["requests"]["total"], 51, "{v:#}");
    assert_eq!(v["rejections"]["total"], 5);
    assert_eq!(v["authn_failures"]["total"], 3);
    let methods = v["authn_failures_by_method"].as_array().unwrap();
    assert_eq!(methods.len(), 1, "{v:#}");
    assert_eq!((methods[0]["method"].as_str(), methods[0]["total"].as_u64()), (Some("api_key"), Some(3)));
    let by_type = v["rejections_by_type"].as_array().unwrap();
    assert!(by_type.iter().any(|t| t["type"] == "unauthorized" && t["status"] == 401), "{v:#}");
    assert!(by_type.iter().any(|t| t["type"] == "not-found" && t["status"] == 404), "{v:#}");
    // alice's six requests: every refusal counts; successes are sampled one in eight (so 0 or 8).
    let tops = v["top_principals"].as_array().unwrap();
    assert!(tops.iter().all(|t| t["name"] == "api_key:alice" && t["refusals"] == 0), "{v:#}");
    assert!(v["latency"]["p50_ms"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(!v["series"].as_array().unwrap().is_empty());
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    // The stream: `event: stats` once a second, each with the newest point.
    let auth = format!("Authorization: Bearer {viewer}");
    let out = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "3", "-H", &auth, &admin_url(&gw, "/admin/v1/stats/stream")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<Value> = text
        .split("\n\n")
        .filter(|f| f.starts_with("event: stats\n"))
        .map(|f| serde_json::from_str(f.strip_prefix("event: stats\ndata: ").unwrap()).unwrap())
        .collect();
    assert!(frames.len() >= 2, "{text}");
    assert!(
        frames.iter().all(|f| f["series"].as_array().unwrap().len() <= 1 && f["requests"]["total"] == 51),
        "{text}"
    );
    // The stream without a credential: 401.
    let (code, _, _) = curl(&[&admin_url(&gw, "/admin/v1/stats/stream")]);
    assert_eq!(code, 401);
}

/// Headless Chromium through chromedriver, driven by `tests/ui/driver.py` (Debian's python3-selenium)
/// one JSON command a line. Drop quits the browser and kills the driver processes by PID.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    chromedriver: u32,
    shots: PathBuf,
    step: usize,
    _profile: TempDir,
}

impl Browser {
    fn start(shots: &str) -> Browser {
        let profile = TempDir::new();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/driver.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .env("PROFILE_DIR", profile.path("chromium"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (scripts/test.sh installs python3-selenium, chromium and chromium-driver)");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let first: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("the driver did not start: {line}"));
        let chromedriver = first["value"]["chromedriver_pid"].as_u64().unwrap() as u32;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let shots = target.join("ui-screenshots").join(shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser { child, stdin, out, chromedriver, shots, step: 0, _profile: profile }
    }

    fn call(&mut self, cmd: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver answered {line:?} to {cmd}"));
        if v["ok"] == true {
            Ok(v["value"].clone())
        } else {
            Err(v["error"].as_str().unwrap_or_default().to_owned())
        }
    }

    #[track_caller]
    fn must(&mut self, cmd: Value) -> Value {
        let c = cmd.clone();
        self.call(cmd).unwrap_or_else(|e| panic!("{c}: {e}"))
    }

    fn get(&mut self, url: &str) {
        self.must(json!({"op": "get", "url": url}));
    }
    fn url(&mut self) -> String {
        self.must(json!({"op": "url"})).as_str().unwrap().to_owned()
    }
    fn click(&mut self, css: &str) {
        self.must(json!({"op": "click", "css": css}));
    }
    fn type_in(&mut self, css: &str, text: &str) {
        self.must(json!({"op": "type", "css": css, "text": text}));
    }
    fn wait_text(&mut self, css: &str, pattern: &str) -> String {
        self.must(json!({"op": "wait_text", "css": css, "pattern": pattern, "timeout": 15}))
            .as_str()
            .unwrap()
            .to_owned()
    }
    fn js(&mut self, js: &str) -> Value {
        self.must(json!({"op": "exec", "js": js}))
    }
    fn alert(&mut self) -> Option<String> {
        self.must(json!({"op": "alert"})).as_str().map(str::to_owned)
    }

    /// Saves `NN-name.png`.
    fn shot(&mut self, name: &str) {
        self.step += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        self.must(json!({"op": "screenshot", "path": path.to_str().unwrap()}));
        assert!(std::fs::metadata(&path).unwrap().len() > 1000, "empty screenshot {path:?}");
    }

    /// Polls `js` (an expression's `return`) until `f` holds of its value.
    fn until(&mut self, secs: u64, js: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(js);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{js} never held: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Logs in through the form.
    fn log_in(&mut self, gw: &Gateway, token: &str) {
        self.get(&admin_url(gw, "/admin/ui/login"));
        self.type_in("#token", token);
        self.click("#login-submit");
        self.wait_text("#who", "admin");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // chromedriver (and the browser under it) if quitting did not end it.
        let _ = Command::new("kill").args(["-9", &self.chromedriver.to_string()]).stderr(Stdio::null()).status();
    }
}

/// Sends `n` requests on keep-alive connections; counts the 200s.
fn load(addr: std::net::SocketAddr, n: usize) -> usize {
    let mut conn = RawConn::connect(addr);
    (0..n).filter(|_| status_of(&conn.get("/public/load", Duration::from_secs(5))) == 200).count()
}

#[test]
fn browser_login_redirect_and_live_counters_moving() {
    // The key's principal is markup: it must show as text in the top list.
    let hostile = "<img src=x id=pwned onerror=alert(1)>";
    let Setup { up, gw, key: k, admin, .. } = start_as(&format!("'{hostile}'"));
    let mut b = Browser::start("live");
    // A page without a session lands on the login form.
    b.get(&admin_url(&gw, "/admin/ui/keys"));
    assert!(b.url().ends_with("/admin/ui/login"), "{}", b.url());
    b.wait_text("#login-submit", "Log in");
    b.shot("redirected-to-login");
    // A wrong token: the form again, a generic message, no session.
    b.type_in("#token", "pca_not-a-token");
    b.click("#login-submit");
    b.wait_text("#login-error", "Login failed");
    assert!(b.url().ends_with("/admin/ui/login"));
    b.shot("login-failed");
    b.log_in(&gw, &admin);
    assert!(b.url().ends_with("/admin/ui/"), "{}", b.url());
    // The session cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(b.js("return document.cookie;"), json!(""));
    b.wait_text("#requests-total", "^0$");
    b.shot("live-view-idle");
    // A bounded load: the counters and charts move over the stream, without reloading the page.
    b.js("window.__marker = 1; return null;");
    assert_eq!(load(gw.addr("main"), 200), 200);
    assert_eq!(up.hits(), 200);
    b.until(15, "return document.getElementById('requests-total').textContent;", |v| v == "200");
    b.until(15, "return parseFloat(document.getElementById('rps').textContent);", |v| v.as_f64().unwrap_or(0.0) > 0.0);
    b.until(5, "return document.getElementById('latency').textContent;", |v| !v.as_str().unwrap().starts_with('–'));
    let ips = b.wait_text("#top-ips tbody", "127\\.0\\.0\\.1");
    assert!(ips.contains("127.0.0.1"), "{ips}");
    assert_eq!(b.js("return window.__marker;"), json!(1), "the page reloaded");
    b.shot("live-counters-moved");
    // Requests as the hostile principal: listed as text, no element made, no script run.
    let mut conn = RawConn::connect(gw.addr("main"));
    for _ in 0..64 {
        let req = format!("GET /private/x HTTP/1.1\r\nHost: t\r\nX-API-Key: {k}\r\n\r\n");
        assert_eq!(status_of(&conn.send(req.as_bytes(), Duration::from_secs(5))), 200);
    }
    let listed = b.wait_text("#top-principals tbody", "api_key:<img");
    assert!(listed.contains(&format!("api_key:{hostile}")), "{listed}");
    assert_eq!(b.js("return document.getElementById('pwned') === null && document.images.length === 0;"), json!(true));
    assert_eq!(b.alert(), None);
    b.shot("hostile-principal-as-text");
    // Logging out ends the session: the pages send back to the form.
    b.click("#logout button");
    b.wait_text("#login-submit", "Log in");
    b.get(&admin_url(&gw, "/admin/ui/"));
    assert!(b.url().ends_with("/admin/ui/login"), "{}", b.url());
    b.shot("logged-out");
}

/// `/public` open, `/private` behind keys kept in the SQLite store the admin API writes; bans in the
/// state store; clients through the trusted proxy 127.0.0.1.
fn store_config(up: std::net::SocketAddr, dir: &TempDir) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
trusted_proxies: [127.0.0.1/32]
store:
  sqlite: {state}
authenticators:
  keys:
    api_key:
      hmac_secret: {SECRET}
      store: {keys}
      refresh_interval: 200ms
routes:
  - name: public
    match: {{ path: {{ prefix: /public }} }}
    upstream: app
    auth: none
  - name: private
    match: {{ path: {{ prefix: /private }} }}
    upstream: app
    auth: keys
    authorize: authenticated
  - name: shop
    match: {{ path: {{ prefix: /shop }} }}
    upstream: app
    auth: none
    inspect: {{ mode: block }}
events:
  stdout: true
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        state = path_str(&dir.path("state.db")),
        keys = path_str(&dir.path("keys.db")),
    )
}

/// GET `path` through the gateway as client `from`, with `key`: (status, body).
fn through(gw: &Gateway, path: &str, from: &str, key: Option<&str>) -> (u16, String) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let xff = format!("X-Forwarded-For: {from}");
    let key = key.map(|k| format!("X-API-Key: {k}"));
    let mut args = vec!["-H", xff.as_str()];
    if let Some(k) = &key {
        args.extend(["-H", k.as_str()]);
    }
    args.push(&url);
    let (code, _, body) = curl(&args);
    (code, body)
}

fn poll(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn csrf_on_admin_api_writes_with_a_session() {
    let Setup { up, gw, admin, .. } = launch(Upstream::start("app"), TempDir::new(), store_config, String::new());
    let session = log_in(&gw, &admin);
    let (_, _, page) = with_session(&gw, &session, "/admin/ui/bans", &[]);
    let csrf = page_csrf(&page);
    let ban = r#"{"kind":"ip","target":"203.0.113.7","duration":"1h"}"#;
    let json_ct = "Content-Type: application/json";
    // Missing, wrong, another session's: 403 problem+json, and no ban.
    let other = {
        let s = log_in(&gw, &admin);
        page_csrf(&with_session(&gw, &s, "/admin/ui/", &[]).2)
    };
    for token in [None, Some("wrong".to_owned()), Some(other)] {
        let h = token.map(|t| format!("X-CSRF-Token: {t}"));
        let mut extra = vec!["-X", "POST", "-H", json_ct, "--data-raw", ban];
        if let Some(h) = &h {
            extra.extend(["-H", h.as_str()]);
        }
        let (code, headers, body) = with_session(&gw, &session, "/admin/v1/bans", &extra);
        assert_eq!(code, 403, "{body}");
        assert!(header(&headers, "content-type").unwrap().starts_with("application/problem+json"));
        let (_, _, list) = with_session(&gw, &session, "/admin/v1/bans", &[]);
        assert!(!list.contains("203.0.113.7"), "{list}");
    }
    assert_eq!(through(&gw, "/public/a", "203.0.113.7", None).0, 200);
    // With the session's token: done.
    let h = format!("X-CSRF-Token: {csrf}");
    let (code, _, body) =
        with_session(&gw, &session, "/admin/v1/bans", &["-X", "POST", "-H", json_ct, "-H", &h, "--data-raw", ban]);
    assert_eq!(code, 201, "{body}");
    assert!(poll(5, || through(&gw, "/public/a", "203.0.113.7", None).0 == 403));
    let before = up.hits();
    let (code, body) = through(&gw, "/public/a", "203.0.113.7", None);
    assert_eq!((code, problem_type(&body)), (403, problem("banned")));
    assert_eq!(up.hits(), before);
}

#[test]
fn browser_keys_bans_health_and_hostile_events() {
    let Setup { up, gw, admin, .. } = launch(Upstream::start("app"), TempDir::new(), store_config, String::new());
    let mut b = Browser::start("manage");
    b.log_in(&gw, &admin);

    // Create a key: shown once, read from the page, works through the gateway.
    b.get(&admin_url(&gw, "/admin/ui/keys"));
    b.type_in("#key-principal", "carol");
    b.click("#key-create-submit");
    let key = b.wait_text("#key-secret-value", "^pcs_");
    b.shot("key-created-shown-once");
    b.click("#key-secret-copy");
    b.wait_text("#status", "Copied|Selected");
    let before = up.hits();
    assert!(poll(5, || through(&gw, "/private/a", "198.51.100.4", Some(&key)).0 == 200), "the new key never worked");
    assert!(up.hits() > before);
    // Gone from the page when dismissed.
    b.click("#key-secret-hide");
    assert_eq!(b.js("return document.getElementById('key-secret-value').textContent;"), json!(""));
    // Revoke it in the UI: the next request with it is refused.
    let row = b.wait_text("#keys tbody", "carol");
    assert!(row.contains("active"), "{row}");
    b.click("#keys tbody tr[data-status='active'] button.revoke");
    b.wait_text("#keys tbody", "revoked");
    b.shot("key-revoked");
    assert!(poll(5, || through(&gw, "/private/a", "198.51.100.4", Some(&key)).0 == 401), "the revoked key still works");
    let before = up.hits();
    let (code, body) = through(&gw, "/private/a", "198.51.100.4", Some(&key));
    assert_eq!(code, 401, "{body}");
    assert_eq!(problem_type(&body), problem("unauthorized"));
    assert_eq!(up.hits(), before);

    // Rotate a key in the UI: the new key is shown once and works; the old one works through its grace.
    b.type_in("#key-principal", "dave");
    b.click("#key-create-submit");
    let old = b.wait_text("#key-secret-value", "^pcs_");
    assert_ne!(old, key);
    b.click("#key-secret-hide");
    b.wait_text("#keys tbody", "dave");
    b.click("#keys tbody tr[data-status='active'] button.rotate");
    let new = b.until(10, "return document.getElementById('key-secret-value').textContent;", |v| {
        v.as_str().is_some_and(|s| s.starts_with("pcs_") && s != old)
    });
    let new = new.as_str().unwrap().to_owned();
    b.wait_text("#status", "Rotated");
    b.shot("key-rotated");
    assert!(
        poll(5, || through(&gw, "/private/a", "198.51.100.4", Some(&new)).0 == 200),
        "the rotated key never worked"
    );
    assert_eq!(through(&gw, "/private/a", "198.51.100.4", Some(&old)).0, 200, "the old key is in its grace");
    b.click("#key-secret-hide");

    // Add a ban in the UI: a request from that address is refused.
    b.get(&admin_url(&gw, "/admin/ui/bans"));
    b.type_in("#ban-target", "203.0.113.7");
    b.type_in("#ban-duration", "1h");
    b.type_in("#ban-reason", "dashboard test");
    b.click("#ban-add-submit");
    b.wait_text("#bans tbody", "203\\.0\\.113\\.7");
    b.shot("ban-added");
    assert!(poll(5, || through(&gw, "/public/a", "203.0.113.7", None).0 == 403), "the ban never applied");
    let before = up.hits();
    let (code, body) = through(&gw, "/public/a", "203.0.113.7", None);
    assert_eq!(code, 403);
    assert_eq!(problem_type(&body), problem("banned"));
    assert_eq!(up.hits(), before);
    assert_eq!(through(&gw, "/public/a", "203.0.113.8", None).0, 200);
    // Lift it.
    b.click("#bans tbody tr[data-target='203.0.113.7'] button.lift");
    b.wait_text("#status", "Lifted");
    assert!(poll(5, || through(&gw, "/public/a", "203.0.113.7", None).0 == 200), "the ban was never lifted");

    // Health.
    b.get(&admin_url(&gw, "/admin/ui/health"));
    b.wait_text("#health tbody", "healthy");
    b.shot("health");

    // A hostile event: inspection blocks a JSON body whose field name is markup; the event's target
    // names that field, literally. Shown as text: no element made, no script run.
    b.get(&admin_url(&gw, "/admin/ui/events"));
    b.wait_text("#stream-state", "live");
    let field = "<img src=x id=pwned onerror=alert(1)>";
    let body = json!({ field: "<script>alert(2)</script><svg onload=alert(3)>" }).to_string();
    let url = format!("http://{}/shop/order", gw.addr("main"));
    let before = up.hits();
    let (code, _, answer) = curl(&[
        "-H",
        "X-Forwarded-For: 198.51.100.99",
        "-H",
        "Content-Type: application/json",
        "--data-raw",
        &body,
        &url,
    ]);
    assert_eq!((code, problem_type(&answer)), (403, problem("request-blocked")), "{answer}");
    assert_eq!(up.hits(), before);
    let text = b.wait_text("#events tbody", "inspect\\.detection");
    assert!(text.contains("198.51.100.99"), "{text}");
    b.click("#events tbody tr");
    let detail = b.wait_text("#event-fields", "attrs\\.target");
    assert!(detail.contains(&format!(":/{field}")), "{detail}");
    b.shot("hostile-event-as-text");
    assert_eq!(
        b.js("return document.getElementById('pwned') === null \
              && document.images.length === 0 && document.querySelectorAll('svg').length === 0 \
              && document.scripts.length === 1;"),
        json!(true)
    );
    assert_eq!(b.alert(), None);
    // The live view counted the inspection hit.
    b.get(&admin_url(&gw, "/admin/ui/"));
    b.until(15, "return document.querySelector('#by-type tbody').textContent;", |v| {
        v.as_str().unwrap().contains("request-blocked")
    });
    b.shot("live-view-after-the-attack");
    b.get(&admin_url(&gw, "/admin/ui/events"));
    b.wait_text("#events tbody", "inspect\\.detection");
    // Filters: by type and by text.
    b.must(json!({"op": "select", "css": "#f-kind", "text": "ban.set"}));
    assert_eq!(b.must(json!({"op": "count", "css": "#events tbody tr"})), json!(0));
    b.must(json!({"op": "select", "css": "#f-kind", "text": "any"}));
    b.type_in("#f-text", "pwned");
    assert!(b.must(json!({"op": "count", "css": "#events tbody tr"})).as_u64().unwrap() >= 1);
    b.shot("events-filtered");
}

#[test]
fn over_tls_the_cookies_are_secure_and_a_revoked_token_ends_its_sessions() {
    let dir = TempDir::new();
    let yaml = format!(
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
    match: {{ path: {{ prefix: / }} }}
    upstream: app
    auth: none
logging:
  level: info
admin:
  address: 127.0.0.1:0
  tls:
    certificates:
      - self_signed: [localhost]
"#,
        state = path_str(&dir.path("state.db"))
    );
    let cfg = dir.write("portcullis.yaml", &yaml);
    let (ops, ops_id) = common::admin::token(&cfg, "operator");
    let (admin, _) = common::admin::token(&cfg, "admin");
    let gw = Gateway::start_in(dir, &yaml);
    let port = gw.addr("admin").port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let tls = |extra: &[&str], path: &str| {
        let mut args = vec!["-k", "--resolve", resolve.as_str()];
        args.extend(extra);
        let u = url(path);
        args.push(&u);
        curl(&args)
    };
    let (code, headers, _) = tls(&[], "/admin/ui/login");
    assert_eq!(code, 200);
    let login = set_cookie(&headers, "portcullis_login").unwrap();
    assert!(login.ends_with("; Path=/admin/ui; HttpOnly; SameSite=Strict; Secure"), "{login}");
    let value = login.split(';').next().unwrap();
    let form = format!("csrf={value}&token={ops}");
    let cookie = format!("portcullis_login={value}");
    let (code, headers, body) = tls(&["-X", "POST", "--data-raw", &form, "-b", &cookie], "/admin/ui/login");
    assert_eq!(code, 303, "{body}");
    let session = set_cookie(&headers, "portcullis_admin").unwrap();
    let (id, flags) = session.split_once(';').unwrap();
    assert_eq!(flags.trim(), "Path=/admin; HttpOnly; SameSite=Strict; Secure");
    let cookie = format!("portcullis_admin={id}");
    let (code, _, me) = tls(&["-b", &cookie], "/admin/v1/whoami");
    assert_eq!(code, 200, "{me}");
    assert!(me.contains("\"operator\""), "{me}");
    // The token behind the session is revoked: the session ends with it (tokens are re-read each second).
    let auth = format!("Authorization: Bearer {admin}");
    let (code, _, body) = tls(&["-X", "DELETE", "-H", &auth], &format!("/admin/v1/tokens/{ops_id}"));
    assert!(code == 200 || code == 204, "{code} {body}");
    assert!(poll(5, || tls(&["-b", &cookie], "/admin/v1/whoami").0 == 401), "the session outlived its token");
    let (code, headers, _) = tls(&["-b", &cookie], "/admin/ui/");
    assert_eq!((code, header(&headers, "location").as_deref()), (303, Some("/admin/ui/login")));
}

#[test]
fn browser_anomaly_alerts_explained_and_a_ban_lifted() {
    let yaml = |up, dir: &TempDir| {
        store_config(up, dir) + "anomaly:\n  mode: enforce\n  detectors:\n    credential_stuffing: { duration: 10m }\n"
    };
    let Setup { up, gw, admin, .. } = launch(Upstream::start("app"), TempDir::new(), yaml, String::new());
    // Credential stuffing from one address: distinct key ids refused until the address is banned.
    let attacker = "203.0.113.66";
    let mut banned = false;
    for i in 0..200 {
        let key = format!("pcs_{i:08x}_{}abcdefg", "A".repeat(32));
        let (code, body) = through(&gw, "/private/a", attacker, Some(&key));
        if code == 403 {
            assert_eq!(problem_type(&body), problem("banned"));
            banned = true;
            break;
        }
        assert_eq!(code, 401, "{body}");
    }
    assert!(banned, "the stuffing address was never banned");
    assert_eq!(up.hits(), 0);
    let mut b = Browser::start("anomaly");
    b.log_in(&gw, &admin);
    b.get(&admin_url(&gw, "/admin/ui/anomalies"));
    // The alert with its explanation, and the ban in force.
    let alerts = b.wait_text("#anomaly-alerts tbody", "credential_stuffing");
    assert!(alerts.contains(attacker) && alerts.contains("distinct_failing_identities"), "{alerts}");
    assert!(alerts.contains("against"), "the explanation is shown: {alerts}");
    b.wait_text("#anomaly-actions tbody", "203\\.0\\.113\\.66");
    b.shot("anomaly-alert-and-ban");
    // Lift it in the UI: the address is answered again (401 for its bogus key, not 403).
    b.click("#anomaly-actions tbody tr[data-target='203.0.113.66'] button.lift");
    b.wait_text("#status", "Lifted");
    let key = format!("pcs_ffffffff_{}abcdefg", "A".repeat(32));
    assert!(poll(5, || through(&gw, "/private/a", attacker, Some(&key)).0 == 401), "the ban was never lifted");
    b.shot("anomaly-ban-lifted");
}
