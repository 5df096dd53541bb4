//! Dashboard sessions: a login exchanges an admin token for a random session id in the
//! `portcullis_admin` cookie. Sessions are kept in memory (a restart logs everyone out), looked up by
//! the SHA-256 of their id, end after [`IDLE`] without use or [`ABSOLUTE`] after login, and are at most
//! [`MAX_SESSIONS`] (a login beyond evicts the longest idle). Each carries a CSRF token that writes must
//! send back (`X-CSRF-Token`, or the `csrf` field of the logout form). Failed logins are counted per
//! client address ([`LoginLimiter`]).

use crate::admin::auth::Caller;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::COOKIE;
use http::{HeaderMap, Method};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "portcullis_admin";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "portcullis_login";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 256;
/// Failed logins allowed from one address per [`LOGIN_WINDOW`].
pub const MAX_FAILED_LOGINS: u32 = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once (beyond, the oldest windows are forgotten).
const MAX_TRACKED: usize = 4096;

/// A write without the session's CSRF token (or with another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the X-CSRF-Token header is missing")]
    Missing,
    #[error("the X-CSRF-Token header is not this session's")]
    Wrong,
}

struct Session {
    caller: Caller,
    /// The SHA-256 of the admin token the session was opened with (checked again on every use).
    token: [u8; 32],
    csrf: String,
    created: Instant,
    last: Instant,
}

/// What a live session is: its caller and CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub caller: Caller,
    pub token: [u8; 32],
    pub csrf: String,
}

/// The sessions of the admin listener.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, URL-safe base64 (256 bits).
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

fn key(id: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// Equal in constant time.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The value of cookie `name` in the request's `Cookie` headers (the first, if sent twice).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Sessions {
    /// A new session for `caller`: its id (for the cookie) and CSRF token. `None` only when the system
    /// has no randomness to give.
    pub fn create(&self, caller: Caller, token: [u8; 32], now: Instant) -> Option<(String, String)> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&id), Session { caller, token, csrf: csrf.clone(), created: now, last: now });
        Some((id, csrf))
    }

    /// The live session of cookie value `id`, touched (its idle time starts again).
    pub fn get(&self, id: &str, now: Instant) -> Option<Active> {
        let k = key(id);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.get_mut(&k)?;
        if !live(s, now) {
            map.remove(&k);
            return None;
        }
        s.last = now;
        Some(Active { caller: s.caller.clone(), token: s.token, csrf: s.csrf.clone() })
    }

    /// Ends the session of cookie value `id`.
    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).remove(&key(id));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session a request's cookie names, for the admin API: `Ok(None)` without a live session;
    /// an unsafe method (anything but GET, HEAD, OPTIONS) must carry the session's token in
    /// `X-CSRF-Token`, else `Err`.
    pub fn caller(&self, headers: &HeaderMap, method: &Method, now: Instant) -> Result<Option<Active>, CsrfError> {
        let Some(active) = cookie(headers, COOKIE_NAME).and_then(|id| self.get(id, now)) else { return Ok(None) };
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(Some(active));
        }
        let given = headers.get("x-csrf-token").ok_or(CsrfError::Missing)?;
        if same(given.to_str().unwrap_or_default(), &active.csrf) {
            Ok(Some(active))
        } else {
            Err(CsrfError::Wrong)
        }
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last) < IDLE && now.saturating_duration_since(s.created) < ABSOLUTE
}

/// Failed logins per client address, in fixed windows of [`LOGIN_WINDOW`].
#[derive(Default)]
pub struct LoginLimiter {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Whether `ip` may try to log in now.
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&ip)
            .is_none_or(|(start, n)| now.saturating_duration_since(*start) >= LOGIN_WINDOW || *n < MAX_FAILED_LOGINS)
    }

    /// One failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < LOGIN_WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let e = map.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= LOGIN_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::auth::Role;
    use http::HeaderValue;

    fn admin() -> Caller {
        Caller { id: "t1".into(), role: Role::Admin }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}={id}; x=y")).unwrap());
        h
    }

    #[test]
    fn ids_are_random_and_256_bit() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, csrf) = s.create(admin(), [7; 32], t0).unwrap();
        assert_eq!(s.get(&id, t0).unwrap(), Active { caller: admin(), token: [7; 32], csrf });
        assert!(s.get("nope", t0).is_none());
        // Used every 20 minutes: alive until 8 h.
        let mut t = t0;
        while t0 + ABSOLUTE > t + Duration::from_secs(20 * 60) {
            t += Duration::from_secs(20 * 60);
            assert!(s.get(&id, t).is_some(), "{:?}", t - t0);
        }
        assert!(s.get(&id, t0 + ABSOLUTE).is_none());
        assert!(s.is_empty());
        // Idle for 30 minutes: gone.
        let (id, _) = s.create(admin(), [7; 32], t0).unwrap();
        assert!(s.get(&id, t0 + IDLE - Duration::from_secs(1)).is_some());
        assert!(s.get(&id, t0 + IDLE * 2).is_none());
        // Logged out: gone.
        let (id, _) = s.create(admin(), [7; 32], t0).unwrap();
        s.remove(&id);
        assert!(s.get(&id, t0).is_none());
    }

    #[test]
    fn bounded_evicting_the_longest_idle() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = s.create(admin(), [7; 32], t0).unwrap();
        let mut ids = vec![];
        for i in 1..MAX_SESSIONS {
            ids.push(s.create(admin(), [7; 32], t0 + Duration::from_millis(i as u64)).unwrap().0);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        // The first one is used again; the second is now the longest idle.
        let t = t0 + Duration::from_secs(1);
        assert!(s.get(&first, t).is_some());
        s.create(admin(), [7; 32], t).unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, t).is_some());
        assert!(s.get(&ids[0], t).is_none());
        assert!(s.get(&ids[1], t).is_some());
    }

    #[test]
    fn csrf_on_unsafe_methods() {
        let s = Sessions::default();
        let now = Instant::now();
        let (id, csrf) = s.create(admin(), [7; 32], now).unwrap();
        let mut h = with_cookie(&id);
        assert_eq!(s.caller(&h, &Method::GET, now).unwrap().unwrap().caller, admin());
        assert_eq!(s.caller(&h, &Method::POST, now), Err(CsrfError::Missing));
        h.insert("x-csrf-token", HeaderValue::from_static("wrong"));
        assert_eq!(s.caller(&h, &Method::DELETE, now), Err(CsrfError::Wrong));
        // Another session's token is wrong too.
        let (_, other) = s.create(admin(), [7; 32], now).unwrap();
        h.insert("x-csrf-token", HeaderValue::from_str(&other).unwrap());
        assert_eq!(s.caller(&h, &Method::POST, now), Err(CsrfError::Wrong));
        h.insert("x-csrf-token", HeaderValue::from_str(&csrf).unwrap());
        assert!(s.caller(&h, &Method::PATCH, now).unwrap().is_some());
        // No cookie, or an unknown one: no session (the caller then needs a bearer token).
        assert_eq!(s.caller(&HeaderMap::new(), &Method::POST, now), Ok(None));
        assert_eq!(s.caller(&with_cookie("forged"), &Method::POST, now), Ok(None));
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let l = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(l.allowed(a, t0));
            l.failed(a, t0);
        }
        assert!(!l.allowed(a, t0 + Duration::from_secs(1)));
        assert!(l.allowed(b, t0));
        assert!(l.allowed(a, t0 + LOGIN_WINDOW));
        l.failed(a, t0 + LOGIN_WINDOW);
        assert!(l.allowed(a, t0 + LOGIN_WINDOW));
    }
}
