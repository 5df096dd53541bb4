//! Admin callers and their roles. PLACEHOLDER until the admin API's own `admin::auth` lands (admin
//! tokens stored hashed, roles); until then the one `admin.token` of the config is an `admin` caller.

use crate::pipeline::Shared;

/// What an admin caller may do: `Viewer` reads, `Operator` also manages keys and bans, `Admin` also
/// reloads and manages admin tokens. Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub role: Role,
}

/// The caller a bearer token stands for, or `None`.
pub fn authenticate_bearer(shared: &Shared, token: &str) -> Option<Caller> {
    let rt = shared.runtime.load();
    let want = rt.admin.as_ref()?.token.as_ref()?;
    aws_lc_rs::constant_time::verify_slices_are_equal(want.expose().as_bytes(), token.as_bytes())
        .ok()
        .map(|()| Caller { id: "admin.token".into(), role: Role::Admin })
}
