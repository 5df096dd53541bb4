use super::*;

fn caller() -> Caller {
    Caller { id: "token:ops<1>".into(), role: Role::Operator }
}

/// One good token, `good`, until revoked.
#[derive(Default)]
struct Auth {
    revoked: std::sync::atomic::AtomicBool,
}

impl TokenCheck for Auth {
    fn token(&self, token: &str) -> Option<Caller> {
        self.digest(&crate::admin::tokens::digest_of(token))
    }
    fn digest(&self, digest: &[u8; 32]) -> Option<Caller> {
        let good = *digest == crate::admin::tokens::digest_of("good");
        (good && !self.revoked.load(std::sync::atomic::Ordering::Relaxed)).then(caller)
    }
}

static AUTH: std::sync::LazyLock<Auth> = std::sync::LazyLock::new(Auth::default);

fn req<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> UiRequest<'a> {
    UiRequest { method, path, headers, body, client_ip: "192.0.2.1".parse().unwrap(), tls: false }
}

fn set_cookies(r: &Response<Bytes>) -> Vec<String> {
    r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn text(r: &Response<Bytes>) -> String {
    String::from_utf8(r.body().to_vec()).unwrap()
}

/// Logs in through the form: returns the session cookie value.
fn log_in(ui: &Ui) -> String {
    let get = respond(ui, &req(&Method::GET, "/admin/ui/login", &HeaderMap::new(), b""), &*AUTH);
    let login = set_cookies(&get)[0].split(';').next().unwrap().to_owned();
    let token = login.split_once('=').unwrap().1.to_owned();
    assert!(text(&get).contains(&format!("name=\"csrf\" value=\"{token}\"")));
    let mut h = HeaderMap::new();
    h.insert(http::header::COOKIE, HeaderValue::from_str(&login).unwrap());
    h.insert(HOST, HeaderValue::from_static("127.0.0.1:9901"));
    h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:9901"));
    let body = format!("csrf={token}&token=good");
    let r = respond(ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = set_cookies(&r);
    assert!(c[0].ends_with("; Path=/admin; HttpOnly; SameSite=Strict"), "{c:?}");
    c[0].split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

#[test]
fn pages_need_a_session_and_carry_the_policy() {
    let ui = Ui::default();
    let none = HeaderMap::new();
    for path in ["/admin/ui/", "/admin/ui/keys", "/admin/ui/nope", "/admin/ui/events"] {
        let r = respond(&ui, &req(&Method::GET, path, &none, b""), &*AUTH);
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/admin/ui/login");
    }
    let r = respond(&ui, &req(&Method::GET, "/admin/ui/app.js", &none, b""), &*AUTH);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    assert_eq!(r.headers()[REFERRER_POLICY], "no-referrer");
    assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
    // The script never writes HTML.
    assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML") && !APP_JS.contains("insertAdjacentHTML"));
    assert!(!APP_JS.contains("eval("));

    let id = log_in(&ui);
    let mut h = HeaderMap::new();
    h.insert(http::header::COOKIE, HeaderValue::from_str(&format!("{COOKIE_NAME}={id}")).unwrap());
    let r = respond(&ui, &req(&Method::GET, "/admin/ui/", &h, b""), &*AUTH);
    assert_eq!(r.status(), StatusCode::OK);
    let page = text(&r);
    // The caller's id is escaped; the page has no inline script or style.
    assert!(page.contains("session:ops&lt;1&gt; (operator)"), "{page}");
    assert!(page.contains("<meta name=\"csrf-token\""));
    assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains(" on"), "{page}");
    let r = respond(&ui, &req(&Method::GET, "/admin/ui/nope", &h, b""), &*AUTH);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = respond(&ui, &req(&Method::DELETE, "/admin/ui/", &h, b""), &*AUTH);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn login_needs_the_forms_token_and_same_origin() {
    let ui = Ui::default();
    let get = respond(&ui, &req(&Method::GET, "/admin/ui/login", &HeaderMap::new(), b""), &*AUTH);
    let login = set_cookies(&get)[0].split(';').next().unwrap().to_owned();
    let token = login.split_once('=').unwrap().1.to_owned();
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_static("127.0.0.1:9901"));
    // No double-submit cookie.
    let body = format!("csrf={token}&token=good");
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    h.insert(http::header::COOKIE, HeaderValue::from_str(&login).unwrap());
    // Another origin.
    h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:9901"));
    h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // `Origin: null` (a sandboxed frame, or our own no-referrer page) only with same-origin.
    h.insert(ORIGIN, HeaderValue::from_static("null"));
    h.remove("sec-fetch-site");
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    // A wrong token: the form again, the token never echoed, counted.
    let bad = format!("csrf={token}&token=%3Cscript%3Esecret-guess");
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, bad.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!text(&r).contains("secret-guess") && text(&r).contains("Login failed."));
    for _ in 1..session::MAX_FAILED_LOGINS {
        respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, bad.as_bytes()), &*AUTH);
    }
    // Now even the right token waits.
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(ui.sessions.is_empty());
}

#[test]
fn logout_needs_the_sessions_token() {
    let ui = Ui::default();
    let id = log_in(&ui);
    let mut h = HeaderMap::new();
    h.insert(http::header::COOKIE, HeaderValue::from_str(&format!("{COOKIE_NAME}={id}")).unwrap());
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/logout", &h, b"csrf=wrong"), &*AUTH);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = ui.sessions.get(&id, Instant::now()).unwrap().csrf;
    let body = format!("csrf={csrf}");
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/logout", &h, body.as_bytes()), &*AUTH);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookies(&r)[0].contains("Max-Age=0"));
    let r = respond(&ui, &req(&Method::GET, "/admin/ui/", &h, b""), &*AUTH);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[test]
fn forms_and_escaping() {
    assert_eq!(
        parse_form(b"a=1+2&b=%3C%3E&c&=x&d=%zz"),
        [("a", "1 2"), ("b", "<>"), ("c", ""), ("", "x"), ("d", "%zz")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec()
    );
    assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}

#[test]
fn a_session_ends_with_its_token() {
    let ui = Ui::default();
    let auth = Auth::default();
    let get = respond(&ui, &req(&Method::GET, "/admin/ui/login", &HeaderMap::new(), b""), &auth);
    let login = set_cookies(&get)[0].split(';').next().unwrap().to_owned();
    let token = login.split_once('=').unwrap().1.to_owned();
    let mut h = HeaderMap::new();
    h.insert(http::header::COOKIE, HeaderValue::from_str(&login).unwrap());
    let body = format!("csrf={token}&token=good");
    let r = respond(&ui, &req(&Method::POST, "/admin/ui/login", &h, body.as_bytes()), &auth);
    let id = set_cookies(&r)[0].split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let mut h = HeaderMap::new();
    h.insert(http::header::COOKIE, HeaderValue::from_str(&format!("{COOKIE_NAME}={id}")).unwrap());
    let c = session_caller(&ui, &h, &Method::GET, &auth).unwrap().unwrap();
    assert_eq!((c.id.as_str(), c.role), ("session:ops<1>", Role::Operator));
    assert_eq!(session_caller(&ui, &h, &Method::POST, &auth), Err(CsrfError::Missing));
    auth.revoked.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(session_caller(&ui, &h, &Method::GET, &auth), Ok(None));
    assert!(ui.sessions.is_empty(), "the session ended with its token");
    let r = respond(&ui, &req(&Method::GET, "/admin/ui/", &h, b""), &auth);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}
