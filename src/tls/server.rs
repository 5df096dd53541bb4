//! Listener TLS: rustls `ServerConfig` from the config file, with certificates chosen by SNI and
//! optional or required client certificates verified against a CA.

use crate::tls::{load_certs, load_key, load_roots, provider, VERSIONS};
use crate::units::Dur;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

// The `tls:` section of a listener in the config file.

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    #[serde(default = "default_true")]
    pub hsts: bool,
    #[serde(default = "default_hsts_max_age")]
    pub hsts_max_age: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM chain, leaf first.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[serde(default)]
    pub key: Option<String>,
    /// Generate a self-signed certificate for these names at start (quickstart, tests).
    #[serde(default)]
    pub self_signed: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM file of the CA certificates that client certificates must chain to.
    pub ca: String,
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    Required,
    Optional,
}

fn default_true() -> bool {
    true
}
fn default_hsts_max_age() -> Dur {
    Dur::secs(365 * 86_400)
}

/// Chooses a certificate for the client's SNI name: among the certificates valid for the name (all of
/// them when none is, or without SNI), the first one whose key can sign with a scheme the client
/// offers, else the first. So one name can have an ECDSA and an RSA certificate, in any order, and a
/// client that only does RSA (a TLS 1.2 client offering only ECDHE-RSA suites) still gets the RSA one.
#[derive(Debug)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.end_entity_cert()
        .ok()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut candidates: Vec<&Arc<CertifiedKey>> =
            match hello.server_name().and_then(|n| ServerName::try_from(n).ok()) {
                Some(name) => self.keys.iter().filter(|k| valid_for(k, &name)).collect(),
                None => Vec::new(),
            };
        if candidates.is_empty() {
            candidates = self.keys.iter().collect();
        }
        let schemes = hello.signature_schemes();
        candidates.iter().find(|k| k.key.choose_scheme(schemes).is_some()).or(candidates.first()).map(|k| (*k).clone())
    }
}

/// Generated self-signed certificates by their names: (certificate, PKCS#8 key). Kept on the process's
/// lasting state, so a reload serves the same certificate.
#[derive(Default)]
pub struct SelfSignedCache(Mutex<HashMap<Vec<String>, Generated>>);

/// A generated certificate and its PKCS#8 key.
type Generated = (CertificateDer<'static>, Vec<u8>);

/// Self-signed certificates are generated once per set of names and kept across reloads.
fn self_signed(
    names: &[String],
    cache: &SelfSignedCache,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let mut cache = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cert, key)) = cache.get(names) {
        return Ok((vec![cert.clone()], PrivatePkcs8KeyDer::from(key.clone()).into()));
    }
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    let cert = generated.cert.der().clone();
    let key = generated.signing_key.serialize_der();
    cache.insert(names.to_vec(), (cert.clone(), key.clone()));
    Ok((vec![cert], PrivatePkcs8KeyDer::from(key).into()))
}

fn certified_key(c: &Certificate, cache: &SelfSignedCache) -> Result<Arc<CertifiedKey>, String> {
    let (chain, key) = match (&c.cert, &c.key, &c.self_signed) {
        (Some(cert), Some(key), None) => (load_certs(cert)?, load_key(key)?),
        (None, None, Some(names)) if !names.is_empty() => self_signed(names, cache)?,
        _ => return Err("a certificate needs either `cert` and `key`, or `self_signed: [names]`".into()),
    };
    let signing = provider().key_provider.load_private_key(key).map_err(|e| format!("unusable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| "the private key does not match the certificate".to_string())?;
    Ok(Arc::new(ck))
}

/// `cache`: self-signed certificates generated earlier (reloads keep serving the same one).
pub fn server_config(tls: &ListenerTls, http2: bool, cache: &SelfSignedCache) -> Result<Arc<ServerConfig>, String> {
    if tls.certificates.is_empty() {
        return Err("tls needs at least one certificate".into());
    }
    let keys = tls.certificates.iter().map(|c| certified_key(c, cache)).collect::<Result<Vec<_>, _>>()?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS).map_err(|e| e.to_string())?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(&ca.ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match ca.mode {
                ClientAuthMode::Required => verifier,
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("client_auth: {e}"))?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { keys }));
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
