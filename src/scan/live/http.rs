//! The scanner's HTTP client: hyper's HTTP/1.1 client connection over TCP or tokio-rustls (aws-lc-rs),
//! one connection per request. It sends to one origin only (the base URL's scheme, host and port),
//! never follows a redirect, paces requests (`--rate`, a token bucket of one token refilled `rate`
//! times a second) and stops at a hard total (`--max-requests`). In dry-run mode it sends nothing and
//! lists what it would have sent.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The one origin the scan may talk to.
#[derive(Debug, Clone)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    authority: String,
    /// The base URL's path without a trailing slash (`""` or `/v1`).
    pub base_path: String,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let uri: Uri = text.parse().map_err(|_| format!("--base-url `{text}` is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("--base-url `{text}` must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| format!("--base-url `{text}` has no host"))?;
        if authority.as_str().contains('@') || uri.query().is_some() || text.contains('#') {
            return Err(format!("--base-url `{text}`: no user information, query or fragment"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(format!("--base-url `{text}` has no host"));
        }
        Ok(Target {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    pub fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority)
    }

    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// One request to send: a path (with query) relative to the base URL.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// What the request is for (dry-run listing, progress).
    pub probe: &'static str,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>, probe: &'static str) -> Req {
        Req { method, path: path.into(), headers: Vec::new(), body: None, probe }
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn headers(mut self, h: &[(String, String)]) -> Req {
        self.headers.extend(h.iter().cloned());
        self
    }

    pub fn json(mut self, v: &serde_json::Value) -> Req {
        self.headers.push(("content-type".into(), "application/json".into()));
        self.body = Some(Bytes::from(v.to_string()));
        self
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// Dry run: listed, not sent.
    DryRun,
    /// `--max-requests` reached.
    Budget,
    /// Network or protocol failure (message without secrets).
    Failed(String),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub struct Client {
    pub target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    interval: Duration,
    next: Instant,
    pub max: u64,
    pub sent: u64,
    pub dry_run: bool,
    /// Requests listed by a dry run: `METHOD URL (probe)`.
    pub listed: Vec<String>,
    pub exhausted: bool,
    progress: bool,
    timeout: Duration,
}

const MAX_BODY: usize = 1 << 20;

impl Client {
    pub fn new(target: Target, tls: Option<Arc<rustls::ClientConfig>>, rate: f64, max: u64, dry_run: bool) -> Client {
        Client {
            target,
            tls: tls.map(tokio_rustls::TlsConnector::from),
            interval: Duration::from_secs_f64(1.0 / rate.max(0.01)),
            next: Instant::now(),
            max,
            sent: 0,
            dry_run,
            listed: Vec::new(),
            exhausted: false,
            progress: !dry_run && std::io::stderr().is_terminal(),
            timeout: Duration::from_secs(10),
        }
    }

    /// The URL text of a request (for listings and evidence).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.target.origin(), self.target.base_path, path)
    }

    /// Counts, paces and sends one request; never to any origin but the target's.
    pub async fn send(&mut self, req: &Req) -> Result<Resp, Miss> {
        if self.sent >= self.max {
            self.exhausted = true;
            return Err(Miss::Budget);
        }
        self.sent += 1;
        if self.dry_run {
            self.listed.push(format!("{} {} ({})", req.method, self.url(&req.path), req.probe));
            return Err(Miss::DryRun);
        }
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep(self.next - now).await;
        }
        self.next = Instant::now().max(self.next) + self.interval;
        if self.progress {
            let filled = ((self.sent * 30) / self.max.max(1)) as usize;
            eprint!(
                "\r[{}{}] {} requests ({})        ",
                "#".repeat(filled),
                " ".repeat(30 - filled.min(30)),
                self.sent,
                req.probe
            );
        }
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(Miss::Failed("timed out".into())),
        }
    }

    pub fn finish_progress(&self) {
        if self.progress {
            eprintln!();
        }
    }

    async fn exchange(&self, req: &Req) -> Result<Resp, Miss> {
        let fail = |e: &dyn std::fmt::Display| Miss::Failed(e.to_string());
        let tcp =
            TcpStream::connect((self.target.host.as_str(), self.target.port)).await.map_err(|e| fail(&e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match (&self.tls, self.target.https) {
            (Some(tls), true) => {
                let name = ServerName::try_from(self.target.host.clone()).map_err(|e| fail(&e))?;
                Box::new(tls.connect(name, tcp).await.map_err(|e| fail(&e))?)
            }
            (None, true) => return Err(Miss::Failed("no TLS configuration".into())),
            _ => Box::new(tcp),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = req.body.clone().unwrap_or_default();
        let uri = format!("{}{}", self.target.base_path, req.path);
        let mut request = Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .body(Full::new(body.clone()))
            .map_err(|e| fail(&e))?;
        let h = request.headers_mut();
        h.insert(HOST, HeaderValue::from_str(&self.target.authority).map_err(|e| fail(&e))?);
        h.insert(USER_AGENT, HeaderValue::from_static("portcullis-scan"));
        if !body.is_empty() || matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
            h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        for (k, v) in &req.headers {
            let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                return Err(Miss::Failed(format!("header `{k}` cannot be sent")));
            };
            h.append(k, v);
        }
        sender.ready().await.map_err(|e| fail(&e))?;
        let resp = sender.send_request(request).await.map_err(|e| fail(&e))?;
        let (parts, incoming) = resp.into_parts();
        let body = match Limited::new(incoming, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        Ok(Resp { status: parts.status, headers: parts.headers, body })
    }
}

/// TLS for the scan: `--ca` (only those CAs), `--insecure-skip-verify` (no verification: a
/// self-signed test deployment), else the system's trust store. TLS 1.2 and 1.3 on aws-lc-rs.
pub fn tls_config(ca: Option<&str>, insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| format!("TLS client configuration: {e}"))?;
    if insecure {
        return Ok(Arc::new(
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify)).with_no_client_auth(),
        ));
    }
    match ca {
        Some(_) => crate::client::tls_config(ca),
        None => crate::client::tls_config(None),
    }
}

/// `--insecure-skip-verify`: accepts any certificate (signatures are still checked).
#[derive(Debug)]
pub struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider().signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.base_path.as_str(), t.https), ("127.0.0.1", 8080, "/v1", false));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://u:p@x/").is_err());
        assert!(Target::parse("https://api.example.com?x=1").is_err());
        assert_eq!(Target::parse("https://api.example.com").unwrap().port, 443);
    }

    #[tokio::test]
    async fn budget_and_dry_run() {
        let mut c = Client::new(Target::parse("http://127.0.0.1:9").unwrap(), None, 1000.0, 2, true);
        let r = Req::new(Method::GET, "/a", "test");
        assert_eq!(c.send(&r).await.unwrap_err(), Miss::DryRun);
        assert_eq!(c.send(&r).await.unwrap_err(), Miss::DryRun);
        assert_eq!(c.send(&r).await.unwrap_err(), Miss::Budget);
        assert!(c.exhausted);
        assert_eq!(
            c.listed,
            vec!["GET http://127.0.0.1:9/a (test)".to_owned(), "GET http://127.0.0.1:9/a (test)".to_owned()]
        );
    }
}
