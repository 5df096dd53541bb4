//! `Idempotency-Key` on the admin API's writes (POST, PATCH, DELETE), as the IETF httpapi draft
//! describes it: the first answer to a key is kept for 24 hours and replayed to a retry of the same
//! request (marked `Idempotent-Replayed: true`), so a client that lost an answer can retry without
//! making a second key or ban. Keys are scoped by caller; a key reused for another request (method,
//! path or body) is 422, and a retry while the first is still running is 409. Answers of 5xx are not
//! kept (the write may not have happened). Kept in memory, bounded, per node.

use super::{Problem, St, MAX_BODY};
use crate::admin::auth::Authn;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEEP: Duration = Duration::from_secs(24 * 3600);
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum Entry {
    Running { fingerprint: [u8; 32] },
    Done { fingerprint: [u8; 32], answer: Answer, at: Instant },
}

/// (caller id, Idempotency-Key).
type Scope = (String, String);

/// The kept answers, by scope, and the scopes in arrival order (for expiry and the bound).
#[derive(Default)]
pub struct Cache {
    inner: Mutex<(HashMap<Scope, Entry>, VecDeque<Scope>)>,
}

enum Begin {
    Fresh,
    Replay(Answer),
    Running,
    Mismatch,
}

impl Cache {
    fn begin(&self, scope: Scope, fingerprint: [u8; 32]) -> Begin {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *g;
        let now = Instant::now();
        // Expired answers go first, then the oldest while full.
        while let Some(front) = order.front() {
            let stale = match map.get(front) {
                Some(Entry::Done { at, .. }) => now.duration_since(*at) > KEEP,
                Some(Entry::Running { .. }) => false,
                None => true,
            };
            if !(stale || map.len() >= MAX_ENTRIES) {
                break;
            }
            if let Some(k) = order.pop_front() {
                map.remove(&k);
            }
        }
        match map.get(&scope) {
            Some(Entry::Running { fingerprint: f }) | Some(Entry::Done { fingerprint: f, .. }) if *f != fingerprint => {
                Begin::Mismatch
            }
            Some(Entry::Running { .. }) => Begin::Running,
            Some(Entry::Done { answer, .. }) => Begin::Replay(answer.clone()),
            None => {
                map.insert(scope.clone(), Entry::Running { fingerprint });
                order.push_back(scope);
                Begin::Fresh
            }
        }
    }

    fn finish(&self, scope: &Scope, fingerprint: [u8; 32], answer: Option<Answer>) {
        let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match answer {
            Some(answer) => {
                g.0.insert(scope.clone(), Entry::Done { fingerprint, answer, at: Instant::now() });
            }
            None => {
                g.0.remove(scope);
            }
        }
    }
}

fn valid_key(k: &HeaderValue) -> Option<String> {
    let s = k.to_str().ok()?;
    // The draft's key is an sf-string; we accept it quoted or bare, 1 to 255 visible characters.
    let s = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s);
    (!s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_owned())
}

/// The middleware.
pub async fn layer(State(state): State<St>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::PATCH | Method::DELETE | Method::PUT) {
        return next.run(req).await;
    }
    let mut values = req.headers().get_all("idempotency-key").iter();
    let Some(first) = values.next() else { return next.run(req).await };
    if values.next().is_some() {
        return Problem::bad_request("one Idempotency-Key header only").into_response();
    }
    let Some(key) = valid_key(first) else {
        return Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters").into_response();
    };
    // Without a caller the handler refuses anyway: nothing to remember.
    let caller = match req.extensions().get::<Authn>() {
        Some(Authn::Caller(c)) => c.id.clone(),
        _ => return next.run(req).await,
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Content Too Large").into_response();
    };
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(parts.method.as_str().as_bytes());
    ctx.update(b"\0");
    ctx.update(parts.uri.to_string().as_bytes());
    ctx.update(b"\0");
    ctx.update(&bytes);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(ctx.finish().as_ref());
    let scope = (caller, key);
    match state.idempotency.begin(scope.clone(), fingerprint) {
        Begin::Replay(a) => {
            let mut resp = (a.status, a.body).into_response();
            *resp.headers_mut() = a.headers;
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return resp;
        }
        Begin::Running => {
            return Problem::conflict("a request with this Idempotency-Key is still being processed").into_response()
        }
        Begin::Mismatch => {
            return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Unprocessable Content")
                .detail("this Idempotency-Key was used for a different request")
                .into_response()
        }
        Begin::Fresh => {}
    }
    let resp = next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    if resp.status().is_server_error() {
        state.idempotency.finish(&scope, fingerprint, None);
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let Ok(rbytes) = axum::body::to_bytes(rbody, 1 << 20).await else {
        state.idempotency.finish(&scope, fingerprint, None);
        return Problem::unavailable("the answer could not be read").into_response();
    };
    let answer = Answer { status: rparts.status, headers: rparts.headers.clone(), body: rbytes.clone() };
    state.idempotency.finish(&scope, fingerprint, Some(answer));
    Response::from_parts(rparts, axum::body::Body::from(rbytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_and_fingerprinted() {
        let c = Cache::default();
        let a = ("token:a".to_string(), "k1".to_string());
        assert!(matches!(c.begin(a.clone(), [1; 32]), Begin::Fresh));
        assert!(matches!(c.begin(a.clone(), [1; 32]), Begin::Running));
        assert!(matches!(c.begin(a.clone(), [2; 32]), Begin::Mismatch));
        let answer = Answer { status: StatusCode::CREATED, headers: HeaderMap::new(), body: Bytes::from_static(b"x") };
        c.finish(&a, [1; 32], Some(answer));
        assert!(matches!(c.begin(a.clone(), [1; 32]), Begin::Replay(r) if r.status == StatusCode::CREATED));
        // Another caller's same key is another key.
        assert!(matches!(c.begin(("token:b".into(), "k1".into()), [1; 32]), Begin::Fresh));
        // A failed first attempt is forgotten.
        let f = ("token:a".to_string(), "k2".to_string());
        assert!(matches!(c.begin(f.clone(), [3; 32]), Begin::Fresh));
        c.finish(&f, [3; 32], None);
        assert!(matches!(c.begin(f, [3; 32]), Begin::Fresh));
    }

    #[test]
    fn key_syntax() {
        let v = |s: &str| valid_key(&HeaderValue::from_str(s).unwrap_or_else(|_| unreachable!()));
        assert_eq!(v("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(v("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(v(""), None);
        assert_eq!(v("a b"), None);
        assert_eq!(v(&"x".repeat(256)), None);
    }
}
