//! `/admin/v1/keys`: the managed API keys of the config's `api_key` authenticators. A key is shown
//! once, in the answer that made it (create, rotate); never listed, logged or audited.

use super::{audit, json, page, Body, Operator, PageParams, Path, Problem, Query, St, Viewer};
use crate::authn::api_key::backend::{Backend, Update};
use crate::authn::api_key::store::{expected_of, KeyChange, KeyInfo};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// A stored API key's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Key {
    pub id: String,
    pub authenticator: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Networks the key is accepted from (empty: anywhere).
    pub cidrs: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub grace_until: Option<String>,
    pub rotated_to: Option<String>,
    /// `active`, `grace`, `rotated`, `revoked`, `expired` or `too_old`.
    pub status: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyPage {
    pub items: Vec<Key>,
    pub next_cursor: Option<String>,
}

/// A key just made: the key itself is in `secret`, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Made {
    pub key: Key,
    pub secret: String,
    /// The key this one replaces (rotate only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated: Option<Key>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The `api_key` authenticator (needed when the config has several with a store).
    pub authenticator: Option<String>,
    pub principal: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// A lifetime such as `90d`.
    pub expires_in: Option<String>,
}

/// What `PATCH` changes; an absent field stays as it is. `expires_at: null` removes the expiry.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub cidrs: Option<Vec<String>>,
    /// RFC 3339, or null for no expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old key stays valid, e.g. `24h` (default).
    pub grace: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Which {
    /// The `api_key` authenticator (needed when several have a store).
    pub authenticator: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    pub authenticator: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// Only keys of this principal.
    pub principal: Option<String>,
}

/// The authenticator a request names (or the only one with a store): its name, store, secret and aging.
struct Target {
    name: String,
    backend: Backend,
    secret: aws_lc_rs::hmac::Key,
    aging: Option<crate::authn::api_key::lifecycle::Aging>,
}

fn target(state: &St, name: Option<&str>) -> Result<Target, Problem> {
    let rt = state.shared.runtime.load();
    let all: Vec<_> = rt
        .authenticators
        .api_key_authenticators()
        .into_iter()
        .filter_map(|(n, a)| a.backend().map(|b| (n.to_owned(), b, a.secret().clone(), a.aging())))
        .collect();
    let found = match name {
        Some(n) => all
            .into_iter()
            .find(|(a, ..)| a == n)
            .ok_or_else(|| Problem::not_found(format!("no api_key authenticator `{n}` with a store")))?,
        None if all.len() == 1 => all.into_iter().next().ok_or_else(|| Problem::not_found("no key store"))?,
        None if all.is_empty() => return Err(Problem::not_found("no api_key authenticator has a store")),
        None => {
            return Err(Problem::bad_request(
                "several api_key authenticators have a store: name one with `authenticator`",
            ))
        }
    };
    Ok(Target { name: found.0, backend: found.1, secret: found.2, aging: found.3 })
}

/// Makes the running authenticator read its store now: the change is in force on this node when the
/// answer is sent (other nodes follow within their poll or notification).
async fn kick(state: &St, name: &str) {
    let rt = state.shared.runtime.load_full();
    if let Some((_, a)) = rt.authenticators.api_key_authenticators().into_iter().find(|(n, _)| *n == name) {
        if let Err(e) = a.reload().await {
            tracing::warn!(authenticator = name, error = %e, "API keys not reloaded after an admin change; the poll will");
            a.refresh_now();
        }
    }
}

fn time(t: Option<i64>) -> Option<String> {
    t.map(secs)
}

/// Unix seconds as RFC 3339.
pub fn secs(t: i64) -> String {
    crate::units::utc(t.saturating_mul(1000))
}

fn view(t: &Target, k: &KeyInfo) -> Key {
    let now = crate::authn::api_key::now();
    Key {
        id: k.id.clone(),
        authenticator: t.name.clone(),
        principal: k.principal.clone(),
        roles: k.roles.clone(),
        scopes: k.scopes.clone(),
        cidrs: k.allowed_cidrs.clone(),
        created_at: secs(k.created_at),
        expires_at: time(k.expires_at),
        revoked_at: time(k.revoked_at),
        grace_until: time(k.grace_until),
        rotated_to: k.rotated_to.clone(),
        status: crate::authn::api_key::lifecycle::status(k, t.aging.as_ref(), now).to_owned(),
    }
}

/// The ETag of a key's current state.
pub fn etag(k: &Key) -> String {
    let bytes = serde_json::to_vec(k).unwrap_or_default();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    format!("\"{}\"", crate::fleet::hex(&d.as_ref()[..12]))
}

fn with_etag(status: StatusCode, k: &Key) -> Response {
    let mut resp = json(status, k);
    if let Ok(v) = HeaderValue::from_str(&etag(k)) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

/// `If-Match` against the key's current state: `required` answers 428 without one; `*` matches any.
fn precondition(headers: &HeaderMap, current: &Key, required: bool) -> Result<(), Problem> {
    let Some(v) = headers.get(http::header::IF_MATCH) else {
        return if required {
            Err(Problem::new(StatusCode::PRECONDITION_REQUIRED, "precondition-required", "Precondition Required")
                .detail("send If-Match with the key's ETag (from GET)"))
        } else {
            Ok(())
        };
    };
    let want = etag(current);
    let v = v.to_str().unwrap_or("");
    if v.trim() == "*" || v.split(',').any(|t| t.trim() == want) {
        return Ok(());
    }
    Err(stale())
}

fn canonical_cidrs(list: &[String]) -> Result<Vec<String>, Problem> {
    list.iter()
        .map(|c| {
            crate::authn::api_key::parse_cidr(c)
                .map(|n| n.to_string())
                .ok_or_else(|| Problem::invalid(format!("`{c}` is not a CIDR or an address")))
        })
        .collect()
}

fn names(list: &[String], what: &str) -> Result<(), Problem> {
    for n in list {
        if n.is_empty() || n.len() > 128 || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Problem::invalid(format!("a {what} must be 1 to 128 characters without spaces or controls")));
        }
    }
    Ok(())
}

async fn current(t: &Target, id: &str) -> Result<Key, Problem> {
    stored(t, id).await.map(|k| view(t, &k))
}

async fn stored(t: &Target, id: &str) -> Result<KeyInfo, Problem> {
    match t.backend.get(id).await.map_err(|e| Problem::store(&e))? {
        Some(k) => Ok(k),
        None => Err(Problem::not_found(format!("no key `{id}`"))),
    }
}

fn stale() -> Problem {
    Problem::new(StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition Failed")
        .detail("the key changed since that ETag; GET it again")
}

/// List the keys (attributes only).
#[utoipa::path(get, path = "/admin/v1/keys", tag = "keys", params(ListParams),
    responses((status = 200, body = KeyPage), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn list(State(state): State<St>, _: Viewer, Query(q): Query<ListParams>) -> Result<Response, Problem> {
    let t = target(&state, q.authenticator.as_deref())?;
    let all = t.backend.list().await.map_err(|e| Problem::store(&e))?;
    let keys: Vec<Key> =
        all.iter().filter(|k| q.principal.as_ref().is_none_or(|p| *p == k.principal)).map(|k| view(&t, k)).collect();
    let (items, next_cursor) = page(keys, |k| k.id.clone(), &PageParams { limit: q.limit, cursor: q.cursor })?;
    Ok(json(StatusCode::OK, &KeyPage { items, next_cursor }))
}

/// Create a key: the answer carries it once.
#[utoipa::path(post, path = "/admin/v1/keys", tag = "keys", request_body = NewKey,
    responses((status = 201, body = Made), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<St>,
    Operator(caller): Operator,
    Body(b): Body<NewKey>,
) -> Result<Response, Problem> {
    let t = target(&state, b.authenticator.as_deref())?;
    if b.principal.is_empty() || b.principal.len() > 256 || b.principal.chars().any(char::is_control) {
        return Err(Problem::invalid("`principal` must be 1 to 256 characters without control characters"));
    }
    names(&b.roles, "role")?;
    names(&b.scopes, "scope")?;
    let cidrs = canonical_cidrs(&b.cidrs)?;
    let expires_at = match &b.expires_in {
        None => None,
        Some(e) => {
            let d = crate::units::parse_duration(e).map_err(Problem::invalid)?;
            Some(crate::authn::api_key::now().saturating_add(d.as_secs() as i64))
        }
    };
    let info = KeyInfo {
        id: String::new(),
        principal: b.principal.clone(),
        roles: b.roles.clone(),
        scopes: b.scopes.clone(),
        allowed_cidrs: cidrs,
        created_at: 0,
        expires_at,
        revoked_at: None,
        grace_until: None,
        rotated_to: None,
    };
    let made = t.backend.create(&t.secret, info).await.map_err(|e| Problem::store(&e))?;
    kick(&state, &t.name).await;
    let key = view(&t, &made.info);
    audit(
        &state,
        &caller,
        "key.created",
        format!("key:{}", key.id),
        serde_json::json!({
            "authenticator": t.name, "principal": key.principal, "roles": key.roles, "scopes": key.scopes,
            "cidrs": key.cidrs, "expires_at": key.expires_at,
        }),
    );
    let mut resp = json(StatusCode::CREATED, &Made { key: key.clone(), secret: made.key, rotated: None });
    if let Ok(v) = HeaderValue::from_str(&format!("/admin/v1/keys/{}?authenticator={}", key.id, t.name)) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

/// One key, with its ETag.
#[utoipa::path(get, path = "/admin/v1/keys/{id}", tag = "keys", params(("id" = String, Path), Which),
    responses((status = 200, body = Key), (status = 404, body = Problem)))]
pub async fn show(
    State(state): State<St>,
    _: Viewer,
    Path(id): Path<String>,
    Query(w): Query<Which>,
) -> Result<Response, Problem> {
    let t = target(&state, w.authenticator.as_deref())?;
    Ok(with_etag(StatusCode::OK, &current(&t, &id).await?))
}

/// Change a key's roles, scopes, networks or expiry (needs `If-Match`).
#[utoipa::path(patch, path = "/admin/v1/keys/{id}", tag = "keys", params(("id" = String, Path), Which), request_body = KeyPatch,
    responses((status = 200, body = Key), (status = 412, body = Problem), (status = 428, body = Problem)))]
pub async fn update(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    Query(w): Query<Which>,
    headers: HeaderMap,
    Body(b): Body<KeyPatch>,
) -> Result<Response, Problem> {
    let t = target(&state, w.authenticator.as_deref())?;
    let _one = state.writes.lock().await;
    let raw = stored(&t, &id).await?;
    let before = view(&t, &raw);
    precondition(&headers, &before, true)?;
    if let Some(r) = &b.roles {
        names(r, "role")?;
    }
    if let Some(s) = &b.scopes {
        names(s, "scope")?;
    }
    let cidrs = b.cidrs.as_deref().map(canonical_cidrs).transpose()?;
    let expires_at = match &b.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => Some(Some(crate::units::parse_rfc3339(t).map_err(Problem::invalid)?.div_euclid(1000))),
    };
    // Written only if the key is still what the ETag was made from: another node's operator may have
    // changed it after our read (the lock above covers this node only).
    let change = KeyChange {
        roles: b.roles.clone(),
        scopes: b.scopes.clone(),
        allowed_cidrs: cidrs,
        expires_at,
        expected: Some(expected_of(&raw)),
    };
    let after = match t.backend.update(&id, change).await.map_err(|e| Problem::store(&e))? {
        Update::Done(k) => view(&t, &k),
        Update::NotFound => return Err(Problem::not_found(format!("no key `{id}`"))),
        Update::Stale => return Err(stale()),
    };
    kick(&state, &t.name).await;
    audit(
        &state,
        &caller,
        "key.updated",
        format!("key:{id}"),
        serde_json::json!({
            "authenticator": t.name,
            "before": {"roles": before.roles, "scopes": before.scopes, "cidrs": before.cidrs, "expires_at": before.expires_at},
            "after": {"roles": after.roles, "scopes": after.scopes, "cidrs": after.cidrs, "expires_at": after.expires_at},
        }),
    );
    Ok(with_etag(StatusCode::OK, &after))
}

/// Issue a replacement key; the old one stays valid for the grace period.
#[utoipa::path(post, path = "/admin/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path), Which), request_body = Rotate,
    responses((status = 201, body = Made), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn rotate(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    Query(w): Query<Which>,
    headers: HeaderMap,
    Body(b): Body<Rotate>,
) -> Result<Response, Problem> {
    let t = target(&state, w.authenticator.as_deref())?;
    let grace = crate::units::parse_duration(b.grace.as_deref().unwrap_or("24h")).map_err(Problem::invalid)?;
    let _one = state.writes.lock().await;
    let before = current(&t, &id).await?;
    precondition(&headers, &before, false)?;
    if before.revoked_at.is_some() {
        return Err(Problem::conflict(format!("key `{id}` is revoked")));
    }
    let (made, old) = t
        .backend
        .rotate(&t.secret, &id, grace.as_secs() as i64)
        .await
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| Problem::not_found(format!("no key `{id}`")))?;
    kick(&state, &t.name).await;
    let (key, old) = (view(&t, &made.info), view(&t, &old));
    audit(
        &state,
        &caller,
        "key.rotated",
        format!("key:{id}"),
        serde_json::json!({
            "authenticator": t.name, "new_key_id": key.id, "grace_until": old.grace_until,
        }),
    );
    Ok(json(StatusCode::CREATED, &Made { key, secret: made.key, rotated: Some(old) }))
}

/// Revoke a key at once.
#[utoipa::path(post, path = "/admin/v1/keys/{id}/revoke", tag = "keys", params(("id" = String, Path), Which),
    responses((status = 200, body = Key), (status = 404, body = Problem), (status = 412, body = Problem)))]
pub async fn revoke(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    Query(w): Query<Which>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let t = target(&state, w.authenticator.as_deref())?;
    let _one = state.writes.lock().await;
    let before = current(&t, &id).await?;
    precondition(&headers, &before, false)?;
    let after = t.backend.revoke(&id).await.map_err(|e| Problem::store(&e))?;
    let after = after.map(|k| view(&t, &k)).ok_or_else(|| Problem::not_found(format!("no key `{id}`")))?;
    kick(&state, &t.name).await;
    if before.revoked_at.is_none() {
        audit(
            &state,
            &caller,
            "key.revoked",
            format!("key:{id}"),
            serde_json::json!({
                "authenticator": t.name, "principal": after.principal,
            }),
        );
    }
    Ok(with_etag(StatusCode::OK, &after))
}
