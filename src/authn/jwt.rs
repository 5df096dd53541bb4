//! Jwt authentication (being implemented; refuses to compile a config until then).

use super::{AuthRequest, Verdict};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {}

pub struct JwtAuth {}

impl JwtAuth {
    pub fn new(name: &str, _c: &JwtConfig) -> Result<JwtAuth, String> {
        Err(format!("authenticator `{name}`: jwt is not available yet"))
    }

    pub async fn check(&self, _req: &AuthRequest<'_>) -> Verdict {
        Verdict::Invalid("unavailable")
    }

    pub fn challenge(&self, _invalid: bool) -> String {
        "Jwt".into()
    }

    pub fn start(&self) {}
}
