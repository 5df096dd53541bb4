//! Introspection authentication (being implemented; refuses to compile a config until then).

use super::{AuthRequest, Verdict};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {}

pub struct IntrospectionAuth {}

impl IntrospectionAuth {
    pub fn new(name: &str, _c: &IntrospectionConfig) -> Result<IntrospectionAuth, String> {
        Err(format!("authenticator `{name}`: introspection is not available yet"))
    }

    pub async fn check(&self, _req: &AuthRequest<'_>) -> Verdict {
        Verdict::Invalid("unavailable")
    }

    pub fn challenge(&self, _invalid: bool) -> String {
        "Introspection".into()
    }

    pub fn start(&self) {}
}
