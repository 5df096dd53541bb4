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
use crate::exchange::Reject;
use crate::exchange::{Exchange, Place};

/// One per-route request stage.
pub enum Stage {
    /// Credentials to a principal (401); removes the credentials it read before the request leaves.
    Authentication(Authn),
}

impl Stage {
    pub fn place(&self) -> Place {
        match self {
            Stage::Authentication(_) => Place::Authentication,
        }
    }

    /// What `check` prints for this stage.
    pub fn describe(&self) -> String {
        match self {
            Stage::Authentication(a) => a.describe(),
        }
    }

    /// True if this stage must see the whole request body (read within the route's body limit).
    fn needs_body(&self) -> bool {
        match self {
            Stage::Authentication(a) => a.needs_body(),
        }
    }

    async fn run(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        match self {
            Stage::Authentication(a) => {
                a.authenticate(ex).await?;
                a.strip_credentials(&mut ex.parts.headers);
                if let Some(kept) = ex.parts.uri.query().and_then(|q| a.strip_query(q)) {
                    replace_query(&mut ex.parts.uri, &kept)?;
                }
                Ok(())
            }
        }
    }
}

/// The ordered per-route stages of one route.
pub struct Chain {
    stages: Box<[Stage]>,
    needs_body: bool,
}

impl Chain {
    /// Orders the stages by their fixed place (a stable sort: stages sharing a place keep the order
    /// config gave them).
    pub fn new(mut stages: Vec<Stage>) -> Chain {
        stages.sort_by_key(Stage::place);
        let needs_body = stages.iter().any(Stage::needs_body);
        Chain { stages: stages.into_boxed_slice(), needs_body }
    }

    /// True if the body must be read (within the route's limit) before the stages run.
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Runs the stages in order; the first refusal ends the request (and is recorded on the exchange).
    pub async fn run(&self, ex: &mut Exchange<'_>) -> Result<(), Reject> {
        for stage in self.stages.iter() {
            if let Err(reject) = stage.run(ex).await {
                ex.refused_at = Some(stage.place());
                return Err(reject);
            }
        }
        Ok(())
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
