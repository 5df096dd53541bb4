//! `/admin/v1/bans`: the node's bans (or the fleet's, in Redis with `redis.share_bans`).

use super::{audit, json, page, Body, Operator, PageParams, Path, Problem, Query, St, Viewer};
use crate::guard::bans::{Ban as Stored, Target};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ban {
    pub id: i64,
    /// `ip`, `prefix` or `principal`.
    pub kind: String,
    /// An address, a CIDR prefix, or `<method>:<id>`.
    pub target: String,
    pub until: String,
    pub reason: String,
    /// `manual`, `auto` or `admin`.
    pub source: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BanPage {
    pub items: Vec<Ban>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// `ip`, `prefix` or `principal`.
    pub kind: String,
    pub target: String,
    /// How long, e.g. `1h` (at most 365 days).
    pub duration: String,
    #[serde(default)]
    pub reason: String,
}

fn view(b: &Stored) -> Ban {
    Ban {
        id: b.id,
        kind: b.target.kind().to_owned(),
        target: b.target.text(),
        until: crate::units::utc(b.expires_at),
        reason: b.reason.clone(),
        source: b.source.clone(),
    }
}

fn bans(state: &St) -> std::sync::Arc<crate::guard::bans::Bans> {
    state.shared.runtime.load().guard.bans().clone()
}

/// A ban's place in the listing: the automatic bans not yet in the store (negative ids) first, then
/// the store's, each by id. (By the id's magnitude alone, -5 and 5 had one key, and a page boundary
/// between them skipped one.)
fn cursor_key(b: &Ban) -> String {
    format!("{}{:020}", if b.id < 0 { 'p' } else { 's' }, b.id.unsigned_abs())
}

/// The bans in force.
#[utoipa::path(get, path = "/admin/v1/bans", tag = "bans", params(PageParams),
    responses((status = 200, body = BanPage), (status = 401, body = Problem)))]
pub async fn list(State(state): State<St>, _: Viewer, Query(p): Query<PageParams>) -> Result<Response, Problem> {
    let all: Vec<Ban> = bans(&state).active().iter().map(view).collect();
    let (items, next_cursor) = page(all, cursor_key, &p)?;
    Ok(json(StatusCode::OK, &BanPage { items, next_cursor }))
}

/// Ban an address, a prefix or a principal for a while.
#[utoipa::path(post, path = "/admin/v1/bans", tag = "bans", request_body = NewBan,
    responses((status = 201, body = Ban), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn add(
    State(state): State<St>,
    Operator(caller): Operator,
    Body(b): Body<NewBan>,
) -> Result<Response, Problem> {
    let target = Target::parse(&b.kind, &b.target).map_err(Problem::invalid)?;
    let d = crate::units::parse_duration(&b.duration).map_err(Problem::invalid)?;
    if d.is_zero() || d.as_secs() > 365 * 86_400 {
        return Err(Problem::invalid("`duration` must be more than 0 and at most 365d"));
    }
    if b.reason.len() > 256 || b.reason.chars().any(char::is_control) {
        return Err(Problem::invalid("`reason` must be at most 256 characters without control characters"));
    }
    let until = crate::guard::bans::now_ms().saturating_add(d.as_millis() as i64);
    let all = bans(&state);
    let reason = b.reason.clone();
    let ban = tokio::task::spawn_blocking(move || all.add_manual(target, until, &reason, "admin"))
        .await
        .map_err(|_| Problem::store("the ban task failed"))?
        .map_err(|e| Problem::store(&e))?;
    let ban = view(&ban);
    audit(
        &state,
        &caller,
        "ban.added",
        format!("ban:{}", ban.id),
        serde_json::json!({
            "kind": ban.kind, "target": ban.target, "until": ban.until, "reason": ban.reason,
        }),
    );
    Ok(json(StatusCode::CREATED, &ban))
}

/// Lift a ban now.
#[utoipa::path(delete, path = "/admin/v1/bans/{id}", tag = "bans", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn lift(
    State(state): State<St>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
) -> Result<Response, Problem> {
    let all = bans(&state);
    let lifted = tokio::task::spawn_blocking(move || all.lift(id))
        .await
        .map_err(|_| Problem::store("the ban task failed"))?
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| Problem::not_found(format!("no ban {id} in force")))?;
    let ban = view(&lifted);
    audit(
        &state,
        &caller,
        "ban.lifted",
        format!("ban:{id}"),
        serde_json::json!({"kind": ban.kind, "target": ban.target}),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_ban_and_a_stored_one_of_the_same_magnitude_have_their_own_places() {
        let ban = |id: i64| Ban {
            id,
            kind: "ip".into(),
            target: "192.0.2.1".into(),
            until: String::new(),
            reason: String::new(),
            source: String::new(),
        };
        assert_ne!(cursor_key(&ban(-5)), cursor_key(&ban(5)));
        let mut keys: Vec<String> = [7, -5, 5, -12, 40].map(|i| cursor_key(&ban(i))).to_vec();
        keys.sort();
        assert_eq!(keys, [-5, -12, 5, 7, 40].map(|i| cursor_key(&ban(i))).to_vec());
    }
}
