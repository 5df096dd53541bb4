//! Mutual TLS: the verified client certificate of the connection becomes a [`Principal`].
//!
//! The listener's `tls.client_auth` (rustls) has already verified the chain against the configured CA,
//! its validity period and its `clientAuth` usage; this method only reads an identity out of the leaf
//! certificate and maps it to roles:
//!
//! ```yaml
//! authenticators:
//!   workloads:
//!     mtls:
//!       principal_from: san_uri          # subject_cn | san_uri | san_dns
//!       roles:
//!         "spiffe://example.org/ns/prod/sa/billing": [billing]
//!       default_roles: []                # for identities not listed under `roles`
//!       allowed_ids: [...]               # optional allowlist; omit to accept every verified identity
//! ```
//!
//! No client certificate on the connection is [`Verdict::Absent`]; a certificate without the wanted
//! field, or whose identity is not allowed, is [`Verdict::Invalid`]. When a certificate carries several
//! names of the wanted kind, the first one in `allowed_ids` is taken (or the first one, without an
//! allowlist). DNS names are compared case-insensitively (and reported in lowercase); CNs and URIs
//! exactly. The certificate is parsed with `x509-parser`; this module never decodes DER itself.

use super::{AuthRequest, Principal, PrincipalKind, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Which certificate field names the principal.
    pub principal_from: PrincipalFrom,
    /// Roles per identity.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Roles of an identity not listed under `roles`.
    #[serde(default)]
    pub default_roles: Vec<String>,
    /// When set, only these identities are accepted.
    #[serde(default)]
    pub allowed_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalFrom {
    /// The subject's common name (the first one, if several).
    SubjectCn,
    /// A `uniformResourceIdentifier` subject alternative name, such as a SPIFFE ID.
    SanUri,
    /// A `dNSName` subject alternative name.
    SanDns,
}

/// Identities longer than this are refused rather than carried into logs and metrics.
const MAX_ID_LEN: usize = 1024;

pub struct MtlsAuth {
    from: PrincipalFrom,
    roles: BTreeMap<String, Vec<String>>,
    default_roles: Vec<String>,
    allowed: Option<Vec<String>>,
}

impl MtlsAuth {
    pub fn new(name: &str, c: &MtlsConfig) -> Result<MtlsAuth, String> {
        let normalize = |id: &str| match c.principal_from {
            PrincipalFrom::SanDns => id.to_ascii_lowercase(),
            _ => id.to_owned(),
        };
        if let Some(ids) = &c.allowed_ids {
            if ids.is_empty() {
                return Err(format!(
                    "authenticator `{name}`: mtls.allowed_ids is empty; omit it to accept every verified certificate"
                ));
            }
        }
        if let Some(bad) = c.roles.keys().chain(c.allowed_ids.iter().flatten()).find(|id| !usable(id)) {
            return Err(format!("authenticator `{name}`: `{bad}` is not a usable certificate identity"));
        }
        Ok(MtlsAuth {
            from: c.principal_from,
            roles: c.roles.iter().map(|(k, v)| (normalize(k), v.clone())).collect(),
            default_roles: c.default_roles.clone(),
            allowed: c.allowed_ids.as_ref().map(|ids| ids.iter().map(|id| normalize(id)).collect()),
        })
    }

    pub async fn check(&self, req: &AuthRequest<'_>) -> Verdict {
        let Some(leaf) = req.conn.tls.as_ref().and_then(|t| t.client_chain.as_ref()).and_then(|c| c.first()) else {
            return Verdict::Absent;
        };
        match self.identify(leaf.as_ref()) {
            Ok(id) => {
                let roles = self.roles.get(&id).unwrap_or(&self.default_roles).clone();
                Verdict::Valid(Arc::new(Principal {
                    id,
                    kind: PrincipalKind::ClientCertificate,
                    roles,
                    scopes: Vec::new(),
                    claims: None,
                    tenant: None,
                    identity: Default::default(),
                }))
            }
            Err(reason) => Verdict::Invalid(reason),
        }
    }

    /// The identity a verified leaf certificate (DER) names, or why it names none (the admin
    /// listener's client certificates).
    pub fn identity(&self, der: &[u8]) -> Result<String, &'static str> {
        self.identify(der)
    }

    /// The principal id named by the leaf certificate (DER), or the reason code for refusing it.
    fn identify(&self, der: &[u8]) -> Result<String, &'static str> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "unparsable_certificate")?;
        let candidates = names(&cert, self.from)?;
        if candidates.is_empty() {
            return Err("identity_missing");
        }
        let chosen = match &self.allowed {
            None => candidates.into_iter().next(),
            Some(allowed) => candidates.into_iter().find(|c| allowed.contains(c)),
        };
        let id = chosen.ok_or("identity_not_allowed")?;
        if !usable(&id) {
            return Err("identity_unusable");
        }
        Ok(id)
    }

    /// There is no registered HTTP authentication scheme for TLS client certificates. `Mutual` is
    /// taken (RFC 8120, a password-based scheme), so we name ours `ClientCertificate`: a client that
    /// sees it knows to present a certificate, and no standard client mistakes it for another scheme.
    pub fn challenge(&self, _invalid: bool) -> String {
        "ClientCertificate realm=\"portcullis\"".into()
    }

    pub fn start(&self) {}
}

/// The names of the wanted kind, in certificate order (DNS names in lowercase).
fn names(cert: &X509Certificate<'_>, from: PrincipalFrom) -> Result<Vec<String>, &'static str> {
    if from == PrincipalFrom::SubjectCn {
        // A CN in a string type that is not text (e.g. BMPString) is refused, not guessed at.
        return match cert.subject().iter_common_name().next() {
            None => Ok(Vec::new()),
            Some(cn) => cn.as_str().map(|s| vec![s.to_owned()]).map_err(|_| "identity_unusable"),
        };
    }
    // A certificate with two SAN extensions is malformed (RFC 5280 §4.2): refuse it.
    let san = cert.subject_alternative_name().map_err(|_| "unparsable_certificate")?;
    let Some(san) = san else { return Ok(Vec::new()) };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match (from, n) {
            (PrincipalFrom::SanUri, GeneralName::URI(u)) => Some((*u).to_owned()),
            (PrincipalFrom::SanDns, GeneralName::DNSName(d)) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect())
}

/// Non-empty, bounded, printable: safe to log and to compare.
fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
