//! `/admin/v1/tokens`: admin tokens (the `admin` role only). A token is shown once, when made.

use super::{audit, json, page, AdminRole, Body, PageParams, Path, Problem, Query, St};
use crate::admin::auth::Role;
use crate::admin::tokens::TokenInfo;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPage {
    pub items: Vec<TokenInfo>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    /// A lifetime such as `30d` (none: no expiry).
    pub expires_in: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MadeToken {
    pub token: TokenInfo,
    /// The token itself, shown this once.
    pub secret: String,
}

fn store(state: &St) -> Result<crate::admin::tokens::TokenStore, Problem> {
    state.token_store().ok_or_else(|| Problem::not_found("admin tokens need a `store:` in the config"))
}

/// The stored admin tokens (never the tokens themselves).
#[utoipa::path(get, path = "/admin/v1/tokens", tag = "tokens", params(PageParams),
    responses((status = 200, body = TokenPage), (status = 403, body = Problem)))]
pub async fn list(State(state): State<St>, _: AdminRole, Query(p): Query<PageParams>) -> Result<Response, Problem> {
    let all = store(&state)?.load().await.map_err(|e| Problem::store(&e))?;
    let (items, next_cursor) = page(all.into_iter().map(|(_, t)| t).collect(), |t| t.id.clone(), &p)?;
    Ok(json(StatusCode::OK, &TokenPage { items, next_cursor }))
}

/// Make an admin token.
#[utoipa::path(post, path = "/admin/v1/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = MadeToken), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<St>,
    AdminRole(caller): AdminRole,
    Body(b): Body<NewToken>,
) -> Result<Response, Problem> {
    if b.name.is_empty() || b.name.len() > 128 || b.name.chars().any(char::is_control) {
        return Err(Problem::invalid("`name` must be 1 to 128 characters without control characters"));
    }
    let expires_at = match &b.expires_in {
        None => None,
        Some(e) => Some(
            crate::authn::api_key::now()
                .saturating_add(crate::units::parse_duration(e).map_err(Problem::invalid)?.as_secs() as i64),
        ),
    };
    let s = store(&state)?;
    let (info, secret) = s.create(&b.name, b.role, expires_at, &caller.id).await.map_err(|e| Problem::store(&e))?;
    let _ = state.tokens.refresh(Some(&s)).await;
    audit(
        &state,
        &caller,
        "admin_token.created",
        format!("admin_token:{}", info.id),
        serde_json::json!({
            "name": info.name, "role": info.role.as_str(), "expires_at": info.expires_at,
        }),
    );
    Ok(json(StatusCode::CREATED, &MadeToken { token: info, secret }))
}

/// Revoke an admin token at once.
#[utoipa::path(delete, path = "/admin/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 404, body = Problem)))]
pub async fn revoke(
    State(state): State<St>,
    AdminRole(caller): AdminRole,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let s = store(&state)?;
    let info = s
        .revoke(&id)
        .await
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| Problem::not_found(format!("no admin token `{id}`")))?;
    let _ = state.tokens.refresh(Some(&s)).await;
    audit(&state, &caller, "admin_token.revoked", format!("admin_token:{id}"), serde_json::json!({"name": info.name}));
    Ok(json(StatusCode::OK, &info))
}
