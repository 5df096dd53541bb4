//! A route's compiled chain: its per-route request stages in [`Place`] order, and what they need of
//! the request body.
//!
//! A stage is a module with its own config section and compile step, and one entry point that takes
//! `&mut Exchange`; [`Stage`] is the list of them (an enum, so running a chain costs no allocation and
//! no dynamic call). Stages never call each other: [`Chain::run`] calls them in order and records
//! where a refusal came from. A public route with nothing to check has an empty chain.
//!
//! How to add a stage (see `docs/pipeline.md`): write its module (config section, `compile`, entry
//! point returning `Result<(), Reject>`), add one variant here with its [`Place`], and one line in
//! `config::compile::route` that pushes it.

use crate::authn::Authn;
use crate::authz::Authz;
use crate::exchange::Reject;
use crate::exchange::{Exchange, Place, RequestBody};
use crate::guard::{bans::Bans, filter::IpFilter};
use crate::limit::Limits;
use std::sync::Arc;

/// One per-route request stage.
pub enum Stage {
    /// Credentials to a principal (401); removes the credentials it read before the request leaves.
    Authentication(Authn),
    /// Roles and scopes of the principal against the route's `authorize` (403).
    /// Boxed: larger than the other stages, and a route has one.
    Authorization(Box<Authz>),
    /// Rate limits before authentication (by client IP, route, header) or after authorization (by
    /// principal, claim, tier) (429).
    Limits(Limits),
    /// At most N requests in flight (429).
    Concurrency(crate::limit::concurrency::Concurrency),
    /// Requests per calendar day or month (429).
    Quotas(crate::limit::quota::Quotas),
    /// The route's own IP allow and deny lists (403 `ip-denied`), before anything else of the route.
    IpFilter(Arc<IpFilter>),
    /// Banned principals, right after authentication (403 `banned`).
    PrincipalBans(Arc<Bans>),
    /// The route's `validate:`: shape limits, content types, OpenAPI (400/413/415/431, 404/405 strict).
    Validation(Box<crate::validate::shape::Validate>),
    /// Threat inspection of the head and body (403 `request-blocked`).
    Inspection(Box<crate::inspect::Inspection>),
    /// The route's `tokenize:` fields replaced before the request leaves (400/415/503).
    Tokenization(Arc<crate::tokenize::Tokenizer>),
    /// Anomaly responses in force on principals (`anomaly.mode: enforce`): bans (403), throttles
    /// (429) and challenges (401 `reauthenticate`), right after authentication.
    Anomaly(crate::anomaly::runtime::Slot),
    /// Anomaly throttles in force on client addresses (429), before credentials are checked: a
    /// throttled address does not get to try credentials at full speed.
    AnomalyAddresses(crate::anomaly::runtime::Slot),
    /// The route's `bot:`: a client address whose bot score is at least this is refused (403 `bot`),
    /// before credentials are checked; in `monitor` mode, noted only.
    Bot(crate::anomaly::runtime::Slot, f32),
}

impl Stage {
    pub fn place(&self) -> Place {
        match self {
            Stage::Authentication(_) => Place::Authentication,
            Stage::Authorization(_) => Place::Authorization,
            Stage::Limits(l) => l.place(),
            Stage::Concurrency(c) => c.place(),
            Stage::Quotas(q) => q.place(),
            Stage::IpFilter(_) => Place::ConnectionGuards,
            Stage::PrincipalBans(_) => Place::Authentication,
            Stage::Anomaly(_) => Place::Authentication,
            Stage::AnomalyAddresses(_) | Stage::Bot(..) => Place::PreAuthLimits,
            Stage::Validation(_) => Place::Validation,
            Stage::Inspection(_) => Place::Inspection,
            Stage::Tokenization(_) => Place::RequestTransforms,
        }
    }

    /// What `check` prints for this stage.
    pub fn describe(&self) -> String {
        match self {
            Stage::Authentication(a) => a.describe(),
            Stage::Authorization(a) => a.describe(),
            Stage::Limits(l) => l.describe(),
            Stage::Concurrency(c) => c.describe(),
            Stage::Quotas(q) => q.describe(),
            Stage::IpFilter(f) => f.describe(),
            Stage::PrincipalBans(_) => "banned principals".into(),
            Stage::Anomaly(_) => "anomaly responses (principals)".into(),
            Stage::AnomalyAddresses(_) => "anomaly responses (addresses)".into(),
            Stage::Bot(_, at) => format!("bot score: refused at {at}"),
            Stage::Validation(v) => v.describe(),
            Stage::Inspection(i) => i.describe(),
            Stage::Tokenization(t) => t.describe(),
        }
    }

    /// True if this stage may read the whole request body (within the route's body limit).
    pub fn may_read_body(&self) -> bool {
        match self {
            Stage::Authentication(a) => a.may_read_body(),
            Stage::Authorization(a) => a.may_read_body(),
            Stage::Limits(l) => l.needs_body(),
            Stage::Concurrency(_)
            | Stage::Quotas(_)
            | Stage::IpFilter(_)
            | Stage::PrincipalBans(_)
            | Stage::Anomaly(_)
            | Stage::AnomalyAddresses(_)
            | Stage::Bot(..) => false,
            Stage::Validation(_) => true,
            Stage::Inspection(_) => true,
            Stage::Tokenization(_) => true,
        }
    }

    async fn run(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        match self {
            Stage::Authentication(a) => {
                // Judged on the head alone; the body is read only when an accepted signature still has
                // to be checked against it.
                let accepted = a.authenticate(ex).await?;
                if accepted.needs_body() {
                    let body = read_body(ex).await?;
                    a.check_body(ex, &accepted, &body).await?;
                }
                a.strip_credentials(&mut ex.parts.headers, &accepted);
                if let Some(kept) = ex.parts.uri.query().and_then(|q| a.strip_query(q)) {
                    replace_query(&mut ex.parts.uri, &kept)?;
                }
                Ok(())
            }
            Stage::Authorization(a) => {
                if !a.decides_on_body() {
                    // Decided on the head: a refused request is refused before any body byte is read.
                    a.authorize(ex)?;
                }
                if a.needs_body(&ex.parts.method) {
                    let body = read_body(ex).await?;
                    a.judge_body(ex, &body)?;
                }
                Ok(())
            }
            Stage::Limits(l) => {
                let fields = if l.needs_body() {
                    // Read under a small bound (a login form), whatever the route allows.
                    let route_limit = ex.body_limit;
                    ex.body_limit = route_limit.min(crate::limit::body::MAX_BYTES);
                    let body = read_body(ex).await;
                    ex.body_limit = route_limit;
                    Some(l.body_fields(ex, &body?)?)
                } else {
                    None
                };
                l.check(ex, fields.as_ref()).await
            }
            Stage::Concurrency(c) => c.enter(ex),
            Stage::Quotas(q) => q.check(ex).await,
            Stage::IpFilter(f) => crate::guard::check_route(f, ex),
            Stage::PrincipalBans(b) => crate::guard::check_principal(b, ex),
            Stage::Anomaly(slot) => match slot.load().as_ref() {
                Some(a) => a.check(ex),
                None => Ok(()),
            },
            Stage::AnomalyAddresses(slot) => match slot.load().as_ref() {
                Some(a) => a.check_address(ex),
                None => Ok(()),
            },
            Stage::Bot(slot, refuse_at) => match slot.load().as_ref() {
                Some(a) => a.check_bot(ex, *refuse_at),
                None => Ok(()),
            },
            Stage::Validation(v) => {
                // The head first: a request refused on it is refused before any body byte is read.
                let operation = v.check_head(ex)?;
                let body = read_body(ex).await?;
                v.check_body(ex, &body, operation)?;
                ex.operation = operation;
                Ok(())
            }
            Stage::Inspection(i) => {
                let body = if has_body(ex) { Some(read_body(ex).await?) } else { None };
                i.check(ex, body.as_deref())
            }
            Stage::Tokenization(t) => {
                if !has_body(ex) {
                    return Ok(());
                }
                // The head first: a body that cannot be read is refused before any byte of it is read.
                let kind = t.check_head(&ex.parts.headers)?;
                let body = read_body(ex).await?;
                if let Some(new) = t.rewrite(kind, &body)? {
                    ex.parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(new.len()));
                    ex.body = RequestBody::Buffered(new.into());
                }
                Ok(())
            }
        }
    }
}

/// The ordered per-route stages of one route.
pub struct Chain {
    stages: Box<[Stage]>,
    may_read_body: bool,
}

impl Chain {
    /// Orders the stages by their fixed place (a stable sort: stages sharing a place keep the order
    /// config gave them).
    pub fn new(mut stages: Vec<Stage>) -> Chain {
        stages.sort_by_key(Stage::place);
        let may_read_body = stages.iter().any(Stage::may_read_body);
        Chain { stages: stages.into_boxed_slice(), may_read_body }
    }

    /// True if a stage may read the body whole (within the route's limit); otherwise it is always
    /// streamed to the upstream, never buffered.
    pub fn may_read_body(&self) -> bool {
        self.may_read_body
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The route's validation stage, if it has one (its OpenAPI document filters responses).
    pub fn validation(&self) -> Option<&crate::validate::shape::Validate> {
        self.stages.iter().find_map(|s| match s {
            Stage::Validation(v) => Some(&**v),
            _ => None,
        })
    }

    /// The route's authorization stage, if it has one.
    pub fn authz(&self) -> Option<&Authz> {
        self.stages.iter().find_map(|s| match s {
            Stage::Authorization(a) => Some(&**a),
            _ => None,
        })
    }

    /// Runs the stages in order; the first refusal ends the request (and is recorded on the exchange).
    pub async fn run(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        for stage in self.stages.iter() {
            // The clock is read for a stage's span only when the request's trace is recorded.
            let began = ex.trace.as_ref().filter(|t| t.recording()).map(|_| std::time::Instant::now());
            let result = stage.run(ex).await;
            if let (Some(began), Some(trace)) = (began, ex.trace.as_deref_mut()) {
                trace.stage(stage.place(), began, result.is_err());
            }
            if let Err(reject) = result {
                ex.refused_at = Some(stage.place());
                // These stages refuse only for a response in force against the principal.
                ex.refused_in_force = matches!(stage, Stage::PrincipalBans(_) | Stage::Anomaly(_));
                return Err(reject);
            }
        }
        Ok(())
    }
}

/// The body, read whole within the route's limit (once; later callers get the same bytes), for a stage
/// that must see it. Read on demand, so a request refused on its head is refused before any body byte
/// is read.
async fn read_body(ex: &mut Exchange<'_>) -> Result<bytes::Bytes, Reject> {
    let bytes = match std::mem::replace(&mut ex.body, RequestBody::Buffered(bytes::Bytes::new())) {
        RequestBody::Buffered(bytes) => bytes,
        RequestBody::Streaming(body) => {
            let seen = ex.bytes_in.get_or_insert_with(Default::default);
            crate::validate::body::read_all(body, ex.body_limit, seen, ex.body_timeout).await?
        }
    };
    ex.body = RequestBody::Buffered(bytes.clone());
    Ok(bytes)
}

/// True if the request carries a body (one already read, or a stream not at its end).
fn has_body(ex: &Exchange<'_>) -> bool {
    match &ex.body {
        RequestBody::Buffered(b) => !b.is_empty(),
        RequestBody::Streaming(b) => !http_body::Body::is_end_stream(b),
    }
}

/// The target with its query replaced (an empty one removed). Only for the rare request that carries a
/// credential in its query.
fn replace_query(uri: &mut http::Uri, query: &str) -> Result<(), Reject> {
    let target = if query.is_empty() { uri.path().to_owned() } else { format!("{}?{query}", uri.path()) };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| Reject::BadRequest("unparseable target"))?);
    *uri = http::Uri::from_parts(parts).map_err(|_| Reject::BadRequest("unparseable target"))?;
    Ok(())
}
