//! Authentication: turns a request's credentials into a [`Principal`].
//!
//! Every route must say how callers authenticate (deny by default); `auth: none` marks a public route.
//! The methods themselves (API keys, JWT, introspection, mutual TLS, signed requests) plug in here as
//! further variants of [`AuthConfig`] and [`Authn`].

use serde::Deserialize;

/// The `auth:` section of a route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// A public route: no credentials asked for, the principal is anonymous.
    None,
}

/// Who made the request, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Anonymous,
}

/// The compiled authentication stage of a route.
#[derive(Debug)]
pub enum Authn {
    None,
}

impl Authn {
    pub fn compile(config: &AuthConfig) -> Authn {
        match config {
            AuthConfig::None => Authn::None,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Authn::None => "none",
        }
    }
}

impl Authn {
    /// Establishes the principal, or refuses with 401.
    pub async fn authenticate(
        &self,
        ex: &mut crate::pipeline::Exchange<'_>,
        _parts: &http::request::Parts,
    ) -> Result<(), crate::respond::problem::Reject> {
        match self {
            // Public route: the principal stays `None` (anonymous); nothing to allocate.
            Authn::None => {
                ex.principal = None;
                Ok(())
            }
        }
    }
}
