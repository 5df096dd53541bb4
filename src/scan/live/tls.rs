//! TLS versions and suites of an `https://` target. TLS 1.2 and 1.3: one rustls (aws-lc-rs) handshake
//! per version and per cipher suite offered alone, so the answer lists exactly what the server accepts
//! among rustls' suites. TLS 1.0 and 1.1: a minimal ClientHello is written by hand and only the
//! ServerHello's version is read; this is a probe, not a TLS implementation (no key exchange, no crypto,
//! the connection is dropped after the ServerHello).

use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server accepted.
#[derive(Debug, Default, Clone)]
pub struct TlsResult {
    /// `TLSv1.3`, `TLSv1.2`.
    pub versions: Vec<&'static str>,
    /// Suite names accepted, by version.
    pub suites: Vec<String>,
    /// Legacy versions the server answered a ServerHello for (`TLSv1.0`, `TLSv1.1`).
    pub legacy: Vec<&'static str>,
    pub handshakes: u64,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// One rustls handshake with exactly these versions and suites; `true` when it completes.
async fn handshake(
    host: &str,
    port: u16,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suite: Option<rustls::SupportedCipherSuite>,
) -> bool {
    let mut provider = (*crate::tls::provider()).clone();
    if let Some(s) = suite {
        provider.cipher_suites = vec![s];
    }
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(Arc::new(provider)).with_protocol_versions(versions)
    else {
        return false;
    };
    let config =
        builder.dangerous().with_custom_certificate_verifier(Arc::new(super::http::NoVerify)).with_no_client_auth();
    let Ok(name) = ServerName::try_from(host.to_owned()) else { return false };
    let attempt = async {
        let tcp = TcpStream::connect((host, port)).await.ok()?;
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()
    };
    matches!(tokio::time::timeout(TIMEOUT, attempt).await, Ok(Some(_)))
}

/// Probes the target; `pace` is awaited before every connection (the scan's rate and bound).
pub async fn probe<F, Fut>(host: &str, port: u16, mut pace: F) -> TlsResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut out = TlsResult::default();
    let provider = crate::tls::provider();
    for (name, version) in [("TLSv1.3", &rustls::version::TLS13), ("TLSv1.2", &rustls::version::TLS12)] {
        if !pace().await {
            return out;
        }
        out.handshakes += 1;
        if !handshake(host, port, &[version], None).await {
            continue;
        }
        out.versions.push(name);
        for suite in provider.cipher_suites.iter().filter(|s| s.version() == version) {
            if !pace().await {
                return out;
            }
            out.handshakes += 1;
            if handshake(host, port, &[version], Some(*suite)).await {
                out.suites.push(format!("{name} {:?}", suite.suite()));
            }
        }
    }
    for (name, v) in [("TLSv1.0", 0x0301u16), ("TLSv1.1", 0x0302u16)] {
        if !pace().await {
            return out;
        }
        out.handshakes += 1;
        if let Ok(Some(answered)) = tokio::time::timeout(TIMEOUT, legacy_hello(host, port, v)).await {
            if answered <= 0x0302 {
                out.legacy.push(name);
            }
        }
    }
    out
}

/// A TLS 1.0/1.1 ClientHello (RFC 2246/4346 layout) with common CBC suites; returns the version of
/// the ServerHello, `None` on an alert, a close or anything else.
pub fn client_hello(version: u16, host: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    let mut random = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut random);
    body.extend_from_slice(&random);
    body.push(0); // no session id
    let suites: [u16; 8] = [0xc014, 0xc013, 0xc00a, 0xc009, 0x0035, 0x002f, 0x000a, 0x00ff];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    if host.parse::<std::net::IpAddr>().is_err() && host.len() < 256 {
        let name = host.as_bytes();
        let list_len = name.len() + 3;
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list_len as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
    }
    // supported_groups (x25519, secp256r1, secp384r1) and ec_point_formats (uncompressed)
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// The `server_version` of a ServerHello at the start of `record` (a handshake record).
pub fn server_hello_version(record: &[u8]) -> Option<u16> {
    if record.len() < 11 || record[0] != 0x16 || record[5] != 2 {
        return None;
    }
    Some(u16::from_be_bytes([record[9], record[10]]))
}

async fn legacy_hello(host: &str, port: u16, version: u16) -> Option<u16> {
    let mut tcp = TcpStream::connect((host, port)).await.ok()?;
    tcp.write_all(&client_hello(version, host)).await.ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 11 {
        let n = tcp.read(&mut buf[got..]).await.ok()?;
        if n == 0 {
            return None;
        }
        got += n;
    }
    server_hello_version(&buf[..got])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_layout() {
        let h = client_hello(0x0301, "api.example.com");
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize, h.len() - 5);
        assert_eq!(h[5], 1);
        assert_eq!(&h[9..11], &[0x03, 0x01]);
        let sh = [0x16, 0x03, 0x01, 0x00, 0x30, 0x02, 0x00, 0x00, 0x2c, 0x03, 0x02];
        assert_eq!(server_hello_version(&sh), Some(0x0302));
        assert_eq!(server_hello_version(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46, 0, 0, 0, 0]), None);
    }
}
