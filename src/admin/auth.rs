//! Who is calling the admin API, and may they. Three roles, each including the one below:
//! `viewer` reads; `operator` also manages API keys, bans and quotas; `admin` also reloads, validates
//! configs and manages admin tokens. A caller is an admin token (`Authorization: Bearer pca_...`), a
//! dashboard session (its cookie, with the CSRF token on writes), or a client certificate verified by
//! the admin listener's `client_ca` and mapped to a role by `admin.tls.client_roles`.
//!
//! `/healthz` and `/metrics` keep their own rule (`admin.token`); nothing under `/admin/v1` or
//! `/admin/ui` answers without a caller.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s).ok_or_else(|| format!("`{s}` is not a role: viewer, operator or admin"))
    }
}

/// An authenticated admin caller: `token:<id>`, `session:<token id>` or `mtls:<subject>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub role: Role,
}

/// What the admin listener decided about a request's credentials, handed to the handlers in the
/// request's extensions.
#[derive(Debug, Clone)]
pub enum Authn {
    Caller(Caller),
    /// No credential, or one that is not valid (401).
    Missing,
    /// A session cookie on a write without the right CSRF token (403).
    Csrf,
}

/// The token the dashboard's login form and the API's bearer header carry, checked against the
/// running gateway's tokens.
pub fn authenticate_bearer(state: &super::State, token: &str) -> Option<Caller> {
    state.tokens.authenticate(token)
}

/// The bearer token of an `Authorization` header (`Bearer` in any case, one space), if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn one_bearer_header_only() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "bearer abc".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(bearer(&h), Some("abc"));
        h.append(http::header::AUTHORIZATION, "Bearer def".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(bearer(&h), None, "two Authorization headers are no credential");
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(bearer(&h), None);
    }
}
