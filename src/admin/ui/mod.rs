//! The dashboard at `/admin/ui/`: a login form that exchanges an admin token for a session cookie, and
//! server-rendered pages (live view, events, keys, bans, health) that a small script (`app.js`) fills
//! from the admin API and its Server-Sent Events streams, with DOM APIs only (never `innerHTML`: event
//! fields are attacker-controlled). No inline script or style: the content security policy allows only
//! the dashboard's own `app.js` and `app.css`.
//!
//! [`respond`] takes a request whose body the listener already read (the login and logout forms are
//! small) and answers with the whole response; it needs nothing of the listener but a way to check a
//! token. The admin API accepts the session cookie through [`session_caller`].

pub mod session;

use crate::admin::auth::{Caller, Role};
use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, LOCATION, ORIGIN, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, Method, Response, StatusCode};
use session::{cookie, same, CsrfError, LoginLimiter, Sessions, COOKIE_NAME, LOGIN_COOKIE};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The dashboard's content security policy: its own script and style only, nothing inline, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest login or logout form read.
pub const MAX_FORM: usize = 16 * 1024;

/// What the dashboard keeps across requests (and reloads): sessions and failed logins.
#[derive(Default)]
pub struct Ui {
    pub sessions: Sessions,
    pub logins: LoginLimiter,
}

/// One request to `/admin/ui/...`, its body read.
pub struct UiRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub client_ip: IpAddr,
    /// The admin listener serves TLS (the cookie gets `Secure`).
    pub tls: bool,
}

/// How the dashboard checks admin tokens: implemented by the admin API's [`Tokens`].
///
/// [`Tokens`]: crate::admin::tokens::Tokens
pub trait TokenCheck {
    /// The caller a presented token stands for, if it is usable.
    fn token(&self, token: &str) -> Option<Caller>;
    /// The caller the token of this digest (`tokens::digest_of`) stands for now: a session checks its
    /// token on every use, so it ends when the token is revoked or expires, and follows its role.
    fn digest(&self, digest: &[u8; 32]) -> Option<Caller>;
}

impl TokenCheck for crate::admin::tokens::Tokens {
    fn token(&self, token: &str) -> Option<Caller> {
        self.authenticate(token)
    }
    fn digest(&self, digest: &[u8; 32]) -> Option<Caller> {
        self.by_digest(digest)
    }
}

/// A session's caller: `session:<token id>`, with the token's role now.
fn session_of(token: Caller) -> Caller {
    let id = token.id.strip_prefix("token:").unwrap_or(&token.id);
    Caller { id: format!("session:{id}"), role: token.role }
}

/// The live session a request's cookie names and its caller now, or `None` (no cookie, an unknown or
/// ended session, or its token revoked: then the session ends too).
fn live_session(ui: &Ui, headers: &HeaderMap, tokens: &dyn TokenCheck, now: Instant) -> Option<(Caller, String)> {
    let id = cookie(headers, COOKIE_NAME)?;
    let active = ui.sessions.get(id, now)?;
    match tokens.digest(&active.token) {
        Some(c) => Some((session_of(c), active.csrf)),
        None => {
            ui.sessions.remove(id);
            None
        }
    }
}

/// The session a request's cookie names, for `/admin/v1`: `Ok(None)` without one (the caller then
/// needs a bearer token), `Err` on an unsafe method without the session's `X-CSRF-Token` (answer 403
/// and change nothing).
pub fn session_caller(
    ui: &Ui,
    headers: &HeaderMap,
    method: &Method,
    tokens: &dyn TokenCheck,
) -> Result<Option<Caller>, CsrfError> {
    let now = Instant::now();
    let Some(active) = ui.sessions.caller(headers, method, now)? else { return Ok(None) };
    match tokens.digest(&active.token) {
        Some(c) => Ok(Some(session_of(c))),
        None => {
            if let Some(id) = cookie(headers, COOKIE_NAME) {
                ui.sessions.remove(id);
            }
            Ok(None)
        }
    }
}

/// The pages, by path under `/admin/ui/`, and their titles.
const PAGES: [(&str, &str, &str); 6] = [
    ("", "live", "Live"),
    ("events", "events", "Events"),
    ("keys", "keys", "Keys"),
    ("bans", "bans", "Bans"),
    ("anomalies", "anomalies", "Anomalies"),
    ("health", "health", "Health"),
];

/// Answers one `/admin/ui/...` request; `tokens` checks admin tokens.
pub fn respond(ui: &Ui, req: &UiRequest<'_>, tokens: &dyn TokenCheck) -> Response<Bytes> {
    let now = Instant::now();
    let Some(rest) = req.path.strip_prefix("/admin/ui/") else {
        return redirect("/admin/ui/", None);
    };
    match (req.method, rest) {
        (&Method::GET | &Method::HEAD, "app.js") => ok("text/javascript; charset=utf-8", APP_JS.into(), None),
        (&Method::GET | &Method::HEAD, "app.css") => ok("text/css; charset=utf-8", APP_CSS.into(), None),
        (&Method::GET | &Method::HEAD, "login") => login_form(req.tls, StatusCode::OK, None),
        (&Method::POST, "login") => login(ui, req, tokens, now),
        (&Method::POST, "logout") => logout(ui, req, tokens, now),
        (m, _) if *m != Method::GET && *m != Method::HEAD => {
            let mut r = page_response(StatusCode::METHOD_NOT_ALLOWED, error_page("Method not allowed"), None);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => {
            let Some((caller, csrf)) = live_session(ui, req.headers, tokens, now) else {
                return redirect("/admin/ui/login", None);
            };
            match PAGES.iter().find(|(p, _, _)| *p == rest) {
                Some((_, page, title)) => page_response(StatusCode::OK, render_page(page, title, &caller, &csrf), None),
                None => page_response(StatusCode::NOT_FOUND, error_page("No such page"), None),
            }
        }
    }
}

/// `POST /admin/ui/login`: the login form's double-submit token and (when sent) `Origin` must match,
/// then the token is checked; failures are counted per address and answered with the form again and a
/// message that says nothing of why.
fn login(ui: &Ui, req: &UiRequest<'_>, tokens: &dyn TokenCheck, now: Instant) -> Response<Bytes> {
    if !same_origin(req) {
        return login_form(req.tls, StatusCode::FORBIDDEN, Some("The login form must be sent from this page."));
    }
    let form = parse_form(req.body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let double_submit = match (field("csrf"), cookie(req.headers, LOGIN_COOKIE)) {
        (Some(a), Some(b)) => !a.is_empty() && same(a, b),
        _ => false,
    };
    if !double_submit {
        return login_form(req.tls, StatusCode::FORBIDDEN, Some("The login form expired. Please try again."));
    }
    if !ui.logins.allowed(req.client_ip, now) {
        return login_form(req.tls, StatusCode::TOO_MANY_REQUESTS, Some("Too many failed logins. Wait a minute."));
    }
    let token = field("token").unwrap_or_default().trim();
    let caller = if token.is_empty() || token.len() > 4096 { None } else { tokens.token(token) };
    let Some(caller) = caller else {
        ui.logins.failed(req.client_ip, now);
        tracing::info!(client_ip = %req.client_ip, "dashboard login refused");
        return login_form(req.tls, StatusCode::UNAUTHORIZED, Some("Login failed."));
    };
    tracing::info!(admin = caller.id, role = caller.role.as_str(), "dashboard login");
    let digest = crate::admin::tokens::digest_of(token);
    let Some((id, _csrf)) = ui.sessions.create(session_of(caller), digest, now) else {
        return page_response(StatusCode::INTERNAL_SERVER_ERROR, error_page("No randomness for a session"), None);
    };
    let secure = if req.tls { "; Secure" } else { "" };
    let mut r =
        redirect("/admin/ui/", Some(&format!("{COOKIE_NAME}={id}; Path=/admin; HttpOnly; SameSite=Strict{secure}")));
    if let Ok(v) =
        HeaderValue::from_str(&format!("{LOGIN_COOKIE}=; Path=/admin/ui; Max-Age=0; HttpOnly; SameSite=Strict{secure}"))
    {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// `POST /admin/ui/logout`, with the session's CSRF token in the form (or `X-CSRF-Token`).
fn logout(ui: &Ui, req: &UiRequest<'_>, tokens: &dyn TokenCheck, now: Instant) -> Response<Bytes> {
    let secure = if req.tls { "; Secure" } else { "" };
    let expired = format!("{COOKIE_NAME}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict{secure}");
    let Some(id) = cookie(req.headers, COOKIE_NAME) else { return redirect("/admin/ui/login", Some(&expired)) };
    let Some((caller, csrf)) = live_session(ui, req.headers, tokens, now) else {
        return redirect("/admin/ui/login", Some(&expired));
    };
    let form = parse_form(req.body);
    let given = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .or_else(|| req.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    if !given.is_some_and(|g| same(g, &csrf)) {
        return page_response(StatusCode::FORBIDDEN, error_page("The logout form is not this session's"), None);
    }
    ui.sessions.remove(id);
    tracing::info!(admin = caller.id, "dashboard logout");
    redirect("/admin/ui/login", Some(&expired))
}

/// A cross-site form post is refused: `Sec-Fetch-Site`, when sent, must say `same-origin` (or `none`:
/// typed by the user), and an `Origin`, when sent, must be this listener's (scheme and `Host`). Browsers
/// send `Origin: null` on a form post from a page with `Referrer-Policy: no-referrer` (ours): that is
/// taken only with `Sec-Fetch-Site: same-origin`. The double-submit cookie is checked besides.
fn same_origin(req: &UiRequest<'_>) -> bool {
    let h = req.headers;
    let site = h.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if site.is_some_and(|v| v != b"same-origin" && v != b"none") {
        return false;
    }
    let Some(origin) = h.get(ORIGIN) else { return true };
    if origin.as_bytes() == b"null" {
        return site == Some(b"same-origin");
    }
    let Some(host) = h.get(HOST).and_then(|v| v.to_str().ok()) else { return false };
    let scheme = if req.tls { "https" } else { "http" };
    origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

/// `application/x-www-form-urlencoded` fields (`+` is a space; bad escapes are kept as sent).
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    String::from_utf8_lossy(&body[..body.len().min(MAX_FORM)])
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str, csrf: Option<&str>, script: bool) -> String {
    let mut h = String::from("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(h, "<title>{} · Portcullis</title>", escape(title));
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(c) = csrf {
        let _ = write!(h, "<meta name=\"csrf-token\" content=\"{}\">", escape(c));
    }
    h.push_str("<link rel=\"stylesheet\" href=\"/admin/ui/app.css\">");
    if script {
        h.push_str("<script src=\"/admin/ui/app.js\" defer></script>");
    }
    h.push_str("</head>\n");
    h
}

/// The login form, with a fresh double-submit token in a cookie and a hidden field.
fn login_form(tls: bool, status: StatusCode, error: Option<&str>) -> Response<Bytes> {
    let Some(token) = session::random_token() else {
        return page_response(StatusCode::INTERNAL_SERVER_ERROR, error_page("No randomness for a form"), None);
    };
    let mut h = head("Log in", None, false);
    h.push_str("<body class=\"login\"><main><h1>Portcullis</h1>");
    if let Some(e) = error {
        let _ = write!(h, "<p class=\"error\" id=\"login-error\" role=\"alert\">{}</p>", escape(e));
    }
    let _ = write!(
        h,
        "<form method=\"post\" action=\"/admin/ui/login\" id=\"login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"token\">Admin token</label>\
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required autofocus>\
         <button type=\"submit\" id=\"login-submit\">Log in</button></form>\
         <p class=\"hint\">Create one with <code>portcullis admin token create --role viewer</code>.</p>\
         </main></body></html>",
        escape(&token)
    );
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}={token}; Path=/admin/ui; HttpOnly; SameSite=Strict{secure}");
    page_response(status, h, Some(&cookie))
}

fn error_page(message: &str) -> String {
    let mut h = head(message, None, false);
    let _ = write!(
        h,
        "<body><main><h1>{}</h1><p><a href=\"/admin/ui/\">Back to the dashboard</a></p></main></body></html>",
        escape(message)
    );
    h
}

/// A page: the navigation, who is logged in, the logout form, and the page's skeleton that `app.js`
/// fills.
fn render_page(page: &str, title: &str, caller: &Caller, csrf: &str) -> String {
    let mut h = head(title, Some(csrf), true);
    let _ = write!(h, "<body data-page=\"{page}\"><header><strong class=\"brand\">Portcullis</strong><nav>");
    for (path, p, t) in PAGES {
        let current = if p == page { " aria-current=\"page\"" } else { "" };
        let _ = write!(h, "<a href=\"/admin/ui/{path}\" id=\"nav-{p}\"{current}>{t}</a>");
    }
    let _ = write!(
        h,
        "</nav><span class=\"who\" id=\"who\">{} ({})</span>\
         <form method=\"post\" action=\"/admin/ui/logout\" id=\"logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>\
         </header><main><p id=\"status\" role=\"status\"></p>",
        escape(&caller.id),
        caller.role.as_str(),
        escape(csrf)
    );
    let operator = caller.role >= Role::Operator;
    h.push_str(match page {
        "live" => LIVE,
        "events" => EVENTS,
        "keys" if operator => KEYS_WRITE,
        "keys" => KEYS_READ,
        "bans" if operator => BANS_WRITE,
        "bans" => BANS_READ,
        "anomalies" if operator => ANOMALIES_WRITE,
        "anomalies" => ANOMALIES_READ,
        _ => HEALTH,
    });
    h.push_str("</main></body></html>\n");
    h
}

const LIVE: &str = "<section class=\"cards\">\
<div class=\"card\"><span>Requests/s</span><b id=\"rps\">–</b></div>\
<div class=\"card\"><span>Rejections/s</span><b id=\"rejps\">–</b></div>\
<div class=\"card\"><span>p50 / p90 / p99 ms</span><b id=\"latency\">–</b></div>\
<div class=\"card\"><span>Auth failures/s</span><b id=\"authn\">–</b></div>\
<div class=\"card\"><span>Rate-limit hits/s</span><b id=\"ratelimited\">–</b></div>\
<div class=\"card\"><span>Inspection hits/s</span><b id=\"inspect\">–</b></div>\
<div class=\"card\"><span>Requests (total)</span><b id=\"requests-total\">0</b></div>\
</section>\
<section class=\"charts\">\
<figure><figcaption>Requests and rejections per second (5 min)</figcaption><canvas id=\"chart-rps\" width=\"600\" height=\"180\"></canvas></figure>\
<figure><figcaption>Latency p50 / p90 / p99, ms</figcaption><canvas id=\"chart-latency\" width=\"600\" height=\"180\"></canvas></figure>\
</section>\
<section class=\"tables\">\
<div><h2>Rejections by type</h2><table id=\"by-type\"><thead><tr><th>Type</th><th>Status</th><th>/s</th><th>Total</th></tr></thead><tbody></tbody></table></div>\
<div><h2>Authentication failures by method</h2><table id=\"by-method\"><thead><tr><th>Method</th><th>/s</th><th>Total</th></tr></thead><tbody></tbody></table></div>\
<div><h2>Top principals</h2><table id=\"top-principals\"><thead><tr><th>Principal</th><th>Requests</th><th>Refusals</th></tr></thead><tbody></tbody></table></div>\
<div><h2>Top client addresses</h2><table id=\"top-ips\"><thead><tr><th>Client</th><th>Requests</th><th>Refusals</th></tr></thead><tbody></tbody></table></div>\
</section>";

const EVENTS: &str = "<section class=\"filters\">\
<label>Type <select id=\"f-kind\"><option value=\"\">any</option>\
<option>authn.failure</option><option>authz.denied</option><option>ratelimit.exceeded</option>\
<option>quota.exceeded</option><option>inspect.detection</option><option>validation.failed</option>\
<option>guard.blocked</option><option>ban.set</option><option>ban.expired</option><option>config.reload</option>\
<option>config.reload_failed</option><option>key.lifecycle</option><option>admin.action</option>\
<option>upstream.health</option><option>tls.handshake_failure</option><option>anomaly.alert</option><option>anomaly.action</option></select></label>\
<label>Severity <select id=\"f-severity\"><option value=\"\">any</option><option>info</option><option>low</option>\
<option>medium</option><option>high</option><option>critical</option></select></label>\
<label>Text <input id=\"f-text\" type=\"search\" placeholder=\"principal, path, rule…\"></label>\
<span id=\"stream-state\"></span></section>\
<section class=\"split\"><table id=\"events\"><thead><tr><th>Time</th><th>Type</th><th>Severity</th>\
<th>Principal</th><th>Client</th><th>Path</th><th>Reason</th></tr></thead><tbody></tbody></table>\
<aside id=\"event-detail\"><h2>Detail</h2><p>Click an event.</p><dl id=\"event-fields\"></dl></aside></section>";

const KEYS_WRITE: &str = "<section><h2>Create a key</h2><form id=\"key-create\" class=\"inline\">\
<label>Principal <input name=\"principal\" id=\"key-principal\" required></label>\
<label>Authenticator <input name=\"authenticator\" id=\"key-authenticator\" placeholder=\"(the only one)\"></label>\
<label>Roles <input name=\"roles\" id=\"key-roles\" placeholder=\"a, b\"></label>\
<label>Scopes <input name=\"scopes\" id=\"key-scopes\" placeholder=\"a, b\"></label>\
<label>CIDRs <input name=\"cidrs\" id=\"key-cidrs\" placeholder=\"10.0.0.0/8\"></label>\
<label>Expires in <input name=\"expires_in\" id=\"key-expires\" placeholder=\"90d\"></label>\
<button type=\"submit\" id=\"key-create-submit\">Create</button></form>\
<div id=\"key-secret\" class=\"secret\" hidden><p>The new key, shown once: copy it now.</p>\
<code id=\"key-secret-value\"></code> <button type=\"button\" id=\"key-secret-copy\">Copy</button>\
<button type=\"button\" id=\"key-secret-hide\">Done</button></div></section>\
<section><h2>Keys</h2><table id=\"keys\" data-write=\"1\"><thead><tr><th>Id</th><th>Authenticator</th><th>Principal</th>\
<th>Roles</th><th>Status</th><th>Created</th><th>Expires</th><th></th></tr></thead><tbody></tbody></table>\
<button type=\"button\" id=\"keys-more\" hidden>More</button></section>";

const KEYS_READ: &str = "<section><h2>Keys</h2><table id=\"keys\"><thead><tr><th>Id</th><th>Authenticator</th>\
<th>Principal</th><th>Roles</th><th>Status</th><th>Created</th><th>Expires</th><th></th></tr></thead><tbody></tbody></table>\
<button type=\"button\" id=\"keys-more\" hidden>More</button></section>";

const BANS_WRITE: &str = "<section><h2>Add a ban</h2><form id=\"ban-add\" class=\"inline\">\
<label>Kind <select name=\"kind\" id=\"ban-kind\"><option>ip</option><option>prefix</option><option>principal</option></select></label>\
<label>Target <input name=\"target\" id=\"ban-target\" required placeholder=\"203.0.113.7\"></label>\
<label>Duration <input name=\"duration\" id=\"ban-duration\" required value=\"1h\"></label>\
<label>Reason <input name=\"reason\" id=\"ban-reason\"></label>\
<button type=\"submit\" id=\"ban-add-submit\">Ban</button></form></section>\
<section><h2>Bans</h2><table id=\"bans\" data-write=\"1\"><thead><tr><th>Kind</th><th>Target</th><th>Until</th>\
<th>Reason</th><th>Source</th><th></th></tr></thead><tbody></tbody></table></section>";

const BANS_READ: &str =
    "<section><h2>Bans</h2><table id=\"bans\"><thead><tr><th>Kind</th><th>Target</th><th>Until</th>\
<th>Reason</th><th>Source</th><th></th></tr></thead><tbody></tbody></table></section>";

const ANOMALIES_WRITE: &str = "<section><h2>Responses in force</h2><table id=\"anomaly-actions\" data-write=\"1\">\
<thead><tr><th>Kind</th><th>Target</th><th>Detector</th><th>Alert</th><th>Expires</th><th>Rate</th><th>Holds on</th><th></th></tr>\
</thead><tbody></tbody></table></section>\
<section><h2>Alerts</h2><p id=\"anomaly-status\"></p><table id=\"anomaly-alerts\"><thead><tr><th>#</th><th>Time</th>\
<th>Detector</th><th>Entity</th><th>Feature</th><th>Observed</th><th>Baseline</th><th>Score</th><th>Window</th>\
<th>Responses</th><th>Explanation</th></tr></thead><tbody></tbody></table></section>";

const ANOMALIES_READ: &str = "<section><h2>Responses in force</h2><table id=\"anomaly-actions\">\
<thead><tr><th>Kind</th><th>Target</th><th>Detector</th><th>Alert</th><th>Expires</th><th>Rate</th><th>Holds on</th><th></th></tr>\
</thead><tbody></tbody></table></section>\
<section><h2>Alerts</h2><p id=\"anomaly-status\"></p><table id=\"anomaly-alerts\"><thead><tr><th>#</th><th>Time</th>\
<th>Detector</th><th>Entity</th><th>Feature</th><th>Observed</th><th>Baseline</th><th>Score</th><th>Window</th>\
<th>Responses</th><th>Explanation</th></tr></thead><tbody></tbody></table></section>";

const HEALTH: &str = "<section><h2>Upstream health</h2><table id=\"health\"><thead><tr><th>Upstream</th>\
<th>Target</th><th>State</th></tr></thead><tbody></tbody></table></section>";

/// The headers every dashboard answer carries.
fn protect(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

fn ok(media: &'static str, body: Bytes, cookie: Option<&str>) -> Response<Bytes> {
    let mut r = Response::new(body);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(media));
    protect(r.headers_mut());
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().append(SET_COOKIE, c);
    }
    r
}

fn page_response(status: StatusCode, html: String, cookie: Option<&str>) -> Response<Bytes> {
    let mut r = ok("text/html; charset=utf-8", html.into(), cookie);
    *r.status_mut() = status;
    r
}

/// 303 See Other to `to`.
fn redirect(to: &'static str, cookie: Option<&str>) -> Response<Bytes> {
    let mut r = ok("text/plain; charset=utf-8", Bytes::new(), cookie);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(LOCATION, HeaderValue::from_static(to));
    r
}

#[cfg(test)]
mod tests;
