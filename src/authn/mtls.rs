//! Mtls authentication (being implemented; refuses to compile a config until then).

use super::{AuthRequest, Verdict};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {}

pub struct MtlsAuth {}

impl MtlsAuth {
    pub fn new(name: &str, _c: &MtlsConfig) -> Result<MtlsAuth, String> {
        Err(format!("authenticator `{name}`: mtls is not available yet"))
    }

    pub async fn check(&self, _req: &AuthRequest<'_>) -> Verdict {
        Verdict::Invalid("unavailable")
    }

    pub fn challenge(&self, _invalid: bool) -> String {
        "Mtls".into()
    }

    pub fn start(&self) {}
}
