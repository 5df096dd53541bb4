//! Signature authentication (being implemented; refuses to compile a config until then).

use super::{AuthRequest, Verdict};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {}

pub struct SignatureAuth {}

impl SignatureAuth {
    pub fn new(name: &str, _c: &SignatureConfig) -> Result<SignatureAuth, String> {
        Err(format!("authenticator `{name}`: signature is not available yet"))
    }

    pub async fn check(&self, _req: &AuthRequest<'_>) -> Verdict {
        Verdict::Invalid("unavailable")
    }

    pub fn challenge(&self, _invalid: bool) -> String {
        "Signature".into()
    }

    pub fn start(&self) {}
}
