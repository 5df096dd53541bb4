//! The one TLS policy shared by listeners and upstream connections: aws-lc-rs, TLS 1.2 and 1.3 only,
//! AEAD suites only (rustls implements no CBC or static-RSA suites), ECDHE over X25519 (also in its
//! post-quantum hybrid X25519MLKEM768) or P-256; plus PEM loading helpers.

pub mod server;

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider with our suite and group choices.
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as cs;
    use aws_lc_rs::kx_group as kx;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx::X25519MLKEM768, kx::X25519, kx::SECP256R1],
        ..aws_lc_rs::default_provider()
    })
}

/// True when a configured path is really text: PEM (or other key material) pasted where a file path
/// belongs. Such a value is never echoed in messages, since it may be a private key.
fn holds_text(path: &str) -> bool {
    let base64ish = path.len() >= 64
        && !path.contains('.')
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    path.contains("-----") || path.contains('\n') || path.contains('\r') || path.len() > 4096 || base64ish
}

fn check_path(path: &str, what: &str) -> Result<(), String> {
    if holds_text(path) {
        return Err(format!(
            "the {what} setting holds text, not a file path (its value is not shown); put the PEM in a file and give its path"
        ));
    }
    Ok(())
}

pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    check_path(path, "certificate")?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from `{path}`: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM certificate in `{path}`: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in `{path}`"));
    }
    Ok(certs)
}

/// True when the file holds a password-protected key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or the legacy
/// OpenSSL `Proc-Type: 4,ENCRYPTED` header), which rustls cannot use.
fn encrypted_key(path: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED")
    })
}

pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    // Never include key material in the message: not the file's content, nor a key pasted as the path.
    check_path(path, "private key")?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read private key `{path}`: {}", io.kind()),
        _ if encrypted_key(path) => {
            format!("the private key in `{path}` is encrypted; give an unencrypted key (readable only by the gateway)")
        }
        rustls_pki_types::pem::Error::NoItemsFound => format!("no private key (PKCS#8, RSA or EC) found in `{path}`"),
        _ => format!("bad PEM private key in `{path}`"),
    })
}

pub fn load_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    check_path(path, "CA")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| format!("bad CA certificate in `{path}`: {e}"))?;
    }
    Ok(roots)
}

/// The name rustls reports for a negotiated version, as logged.
pub fn version_name(v: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    match v? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("other"),
    }
}
