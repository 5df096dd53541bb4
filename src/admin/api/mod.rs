//! The admin API, `/admin/v1`: JSON over the admin listener, for operators and the dashboard.
//!
//! Each handler is an axum handler with a `#[utoipa::path]` annotation, registered through
//! `utoipa_axum::routes!`, so the route the router serves and the operation the OpenAPI 3.1 document
//! (`GET /admin/v1/openapi.json`) describes come from one place and cannot drift apart.
//!
//! Conventions:
//! - Errors are RFC 9457 problem+json ([`Problem`]), with a `detail` for the operator (never a secret).
//! - Bodies are JSON (`Content-Type: application/json`, at most 64 KiB, unknown fields refused):
//!   malformed JSON is 400, a wrong type or unknown field 422, another media type 415.
//! - Lists are pages: `limit` (1 to 500, default 100) and an opaque `cursor` from the last page's
//!   `next_cursor`.
//! - Writes take an `Idempotency-Key` ([`idempotency`]); a replay gets the first answer.
//! - Updates of a key are conditional: `GET` gives an `ETag`, `PATCH` needs `If-Match` (428 without,
//!   412 when stale); rotate and revoke honour `If-Match` when sent.
//! - Every write is an `admin.action` event in the audit trail: who, what, and the change (secrets never).
//! - Roles: reads need `viewer`; keys, bans and quotas `operator`; tokens, config and reload `admin`.

pub mod anomaly;
pub mod bans;
pub mod events;
pub mod idempotency;
pub mod keys;
pub mod stats;
pub mod system;
pub mod tokens;

use super::auth::{Authn, Caller, Role};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The handlers' state.
pub type St = Arc<super::State>;

/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:portcullis:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Problem {
        Problem {
            kind: format!("{}{slug}", crate::respond::problem::TYPE_PREFIX),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        let mut d: String = detail.into();
        if d.len() > 300 {
            let mut cut = 300;
            while !d.is_char_boundary(cut) {
                cut -= 1;
            }
            d.truncate(cut);
        }
        self.detail = Some(d);
        self
    }

    pub fn unauthorized() -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
    }
    pub fn forbidden(need: Role) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            .detail(format!("this needs the `{}` role", need.as_str()))
    }
    pub fn not_found(what: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not Found").detail(what)
    }
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad Request").detail(detail)
    }
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "Unprocessable Content").detail(detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "Service Unavailable").detail(detail)
    }
    /// A store error: logged in full, answered as 503 without the detail.
    pub fn store(e: &str) -> Problem {
        tracing::warn!(error = e, "admin API: the store failed");
        Problem::unavailable("the store cannot be reached or failed; nothing was changed or read")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portcullis-admin\""));
        }
        resp
    }
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The caller, when it holds at least `R`'s role (extractors [`Viewer`], [`Operator`], [`AdminRole`]).
fn caller_with(parts: &Parts, need: Role) -> Result<Caller, Problem> {
    match parts.extensions.get::<Authn>() {
        Some(Authn::Caller(c)) if c.role >= need => Ok(c.clone()),
        Some(Authn::Caller(_)) => Err(Problem::forbidden(need)),
        Some(Authn::Csrf) => Err(Problem::new(StatusCode::FORBIDDEN, "csrf", "Forbidden")
            .detail("a session's write needs its X-CSRF-Token header")),
        _ => Err(Problem::unauthorized()),
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr) => {
        /// A caller holding at least this role.
        #[derive(Debug)]
        pub struct $name(pub Caller);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Problem;
            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
                caller_with(parts, $role).map($name)
            }
        }
    };
}
role_extractor!(Viewer, Role::Viewer);
role_extractor!(Operator, Role::Operator);
role_extractor!(AdminRole, Role::Admin);

/// A JSON body: `application/json`, at most [`MAX_BODY`], parsed strictly.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;
    async fn from_request(req: Request, _: &S) -> Result<Self, Problem> {
        if req.headers().get_all(http::header::CONTENT_TYPE).iter().count() > 1 {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            )
            .detail("one Content-Type header only"));
        }
        let media = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Content Too Large")
                .detail(format!("the body is larger than {MAX_BODY} bytes"))
        })?;
        let bytes = if bytes.is_empty() && media.is_none() { bytes::Bytes::from_static(b"{}") } else { bytes };
        if media.is_some() && media.as_deref() != Some("application/json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            )
            .detail("send application/json"));
        }
        if media.is_none() && bytes.as_ref() != b"{}" {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            )
            .detail("send application/json"));
        }
        parse(&bytes).map(Body)
    }
}

/// Parses a JSON body: syntax errors are 400, shape errors (types, unknown or missing fields) 422.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::invalid(e.to_string()),
        _ => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON").detail(format!(
            "line {} column {}",
            e.line(),
            e.column()
        )),
    })
}

/// Query parameters, refused with 400 (not axum's plain-text rejection).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from(q).map(Query)
    }
}

fn serde_urlencoded_from<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{q}").parse().map_err(|_| Problem::bad_request("bad query"))?)
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| Problem::bad_request(e.body_text()))
}

/// A path parameter, refused with 400 when it does not parse.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// `limit` and `cursor` of a list.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 500 (default 100).
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<usize, Problem> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=500).contains(&n) => Ok(n),
            Some(_) => Err(Problem::bad_request("`limit` must be between 1 and 500")),
        }
    }

    /// The decoded cursor (what the last item's sort key was).
    pub fn after(&self) -> Result<Option<String>, Problem> {
        let Some(c) = &self.cursor else { return Ok(None) };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| Problem::bad_request("`cursor` is not one this API gave"))
    }
}

pub fn cursor_of(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// One page of `items` sorted by `key`, after the cursor: the page and the next cursor.
pub fn page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    p: &PageParams,
) -> Result<(Vec<T>, Option<String>), Problem> {
    let limit = p.limit()?;
    let after = p.after()?;
    items.sort_by_key(|i| key(i));
    let mut rest: Vec<T> = items.into_iter().filter(|i| after.as_ref().is_none_or(|a| key(i) > *a)).collect();
    let next = (rest.len() > limit).then(|| cursor_of(&key(&rest[limit - 1])));
    rest.truncate(limit);
    Ok((rest, next))
}

/// An `admin.action` event: who did what to which target; `change` is what changed (never a secret).
pub fn audit(state: &super::State, caller: &Caller, action: &'static str, target: String, change: serde_json::Value) {
    let rt = state.shared.runtime.load();
    rt.events.emit(
        crate::events::Event::new(crate::events::Kind::AdminAction, action)
            .principal(caller.id.as_str())
            .rule(target)
            .attr("via", "admin_api")
            .attr("role", caller.role.as_str())
            .attr("change", change.to_string()),
    );
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis admin API", version = "1", description = "Manage a running Portcullis gateway: API keys, bans, quotas, admin tokens, the config; read routes, health, events and live statistics."),
    modifiers(&Security),
    components(schemas(Problem))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pca_ token").build()),
        );
        api.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The router and the OpenAPI document it serves.
pub fn router(state: St) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::whoami))
        .routes(routes!(system::openapi))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::show, keys::update))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::revoke))
        .routes(routes!(bans::list, bans::add))
        .routes(routes!(bans::lift))
        .routes(routes!(system::quotas))
        .routes(routes!(system::reset_quota))
        .routes(routes!(system::routes))
        .routes(routes!(system::health))
        .routes(routes!(system::validate))
        .routes(routes!(system::reload))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(stats::show))
        .routes(routes!(stats::stream))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(anomaly::alerts))
        .routes(routes!(anomaly::actions))
        .routes(routes!(anomaly::lift))
        .routes(routes!(anomaly::status))
        .routes(routes!(anomaly::suggest))
        .split_for_parts();
    // Unknown resources and methods answer 401 to a caller without a credential, like known ones: the
    // API's shape is not shown to anyone who has not authenticated.
    let router = router
        .fallback(|_: Viewer| async { Problem::not_found("no such admin API resource") })
        .method_not_allowed_fallback(|_: Viewer| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method Not Allowed")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .with_state(state);
    (router, api)
}
