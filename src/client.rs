//! The gateway's own outbound HTTP/1.1 client, for the few calls it makes to identity providers: OpenID
//! Connect discovery, JWKS and token introspection. Built on hyper's client connection and tokio-rustls
//! with the one TLS policy of [`crate::tls`]; no redirects are followed, every exchange (connect, TLS,
//! request and whole body) is bounded by one timeout, and bodies are bounded in size.
//!
//! Trust for `https://`: the CA file of the `ca:` setting when given, and then only that file (pinning
//! an identity provider to its own CA); otherwise the system's trust store (rustls-native-certs).
//! `http://` is accepted only for loopback hosts: a JWKS or an introspection answer read in clear text
//! from the network could be forged, and introspection sends tokens and client secrets.
//!
//! It never logs URLs' query strings, request bodies or credentials.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What went wrong with an outbound call. The messages name no secret and no query string.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    #[error("unexpected status {0}")]
    Status(u16),
}

/// A parsed `http://` or `https://` URL. Userinfo and fragments are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    path_and_query: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{text}` must start with https:// (or http:// for a loopback host)")),
        };
        let authority = uri.authority().ok_or_else(|| format!("`{text}` has no host"))?;
        if authority.as_str().contains('@') || text.contains('#') {
            return Err(format!("`{text}`: user information and fragments are not allowed"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        let url = Url {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: authority.as_str().to_owned(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        };
        if !https && !url.is_loopback() {
            return Err(format!("`{text}`: plain http:// is only allowed to a loopback host; use https://"));
        }
        Ok(url)
    }

    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The same origin with another path (e.g. `/.well-known/openid-configuration`).
    pub fn with_path(&self, path: &str) -> Url {
        Url { path_and_query: path.to_owned(), ..self.clone() }
    }

    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("/")
    }

    /// `scheme://authority/path` without the query string, for logs.
    pub fn redacted(&self) -> String {
        format!("{}://{}{}", if self.https { "https" } else { "http" }, self.authority, self.path())
    }

    fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority)
    }
}

/// A complete response: the body is read to its end (within the size limit) before it is returned.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// `Cache-Control` freshness: `max-age` (`s-maxage` preferred), zero for `no-store` / `no-cache`.
    pub fn max_age(&self) -> Option<Duration> {
        let mut max_age = None;
        for v in self.headers.get_all(CACHE_CONTROL) {
            for directive in v.to_str().unwrap_or("").split(',') {
                let d = directive.trim().to_ascii_lowercase();
                if d == "no-store" || d == "no-cache" {
                    return Some(Duration::ZERO);
                }
                let (name, value) = d.split_once('=').unwrap_or((d.as_str(), ""));
                let secs = value.trim_matches('"').parse::<u64>().ok();
                match (name, secs) {
                    ("s-maxage", Some(s)) => return Some(Duration::from_secs(s)),
                    ("max-age", Some(s)) => max_age = Some(Duration::from_secs(s)),
                    _ => {}
                }
            }
        }
        max_age
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Sender = SendRequest<Full<Bytes>>;

const MAX_IDLE: usize = 4;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An outbound client with its trust, timeout, body limit and a few idle keep-alive connections.
pub struct Client {
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    max_body: usize,
    idle: Mutex<Vec<(String, Sender, Instant)>>,
}

impl Client {
    /// `https` says whether TLS trust is needed at all (any configured URL is https://); `ca` is a PEM
    /// file of trusted CAs, used instead of the system's trust store.
    pub fn new(ca: Option<&str>, https: bool, timeout: Duration, max_body: usize) -> Result<Client, String> {
        let tls = if https || ca.is_some() { Some(tokio_rustls::TlsConnector::from(tls_config(ca)?)) } else { None };
        Ok(Client { tls, timeout, max_body, idle: Mutex::new(Vec::new()) })
    }

    pub async fn get(&self, url: &Url) -> Result<Response, FetchError> {
        self.send(Method::GET, url, HeaderMap::new(), Bytes::new()).await
    }

    /// POSTs an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&self, url: &Url, mut headers: HeaderMap, form: String) -> Result<Response, FetchError> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        self.send(Method::POST, url, headers, Bytes::from(form)).await
    }

    /// POSTs `body` with the given headers (`Content-Type` among them).
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: Bytes) -> Result<Response, FetchError> {
        self.send(Method::POST, url, headers, body).await
    }

    /// Any method, with the given headers and body; the answer whatever its status.
    pub async fn request(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, FetchError> {
        self.send(method, url, headers, body).await
    }

    async fn send(&self, method: Method, url: &Url, headers: HeaderMap, body: Bytes) -> Result<Response, FetchError> {
        tokio::time::timeout(self.timeout, self.exchange(method, url, headers, body))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn exchange(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, FetchError> {
        let origin = url.origin();
        let build = || {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(url.path_and_query.as_str())
                .body(Full::new(body.clone()))
                .map_err(|e| FetchError::Http(e.to_string()))?;
            let h = req.headers_mut();
            h.extend(headers.clone());
            h.insert(HOST, HeaderValue::from_str(&url.authority).map_err(|e| FetchError::Http(e.to_string()))?);
            h.insert(USER_AGENT, HeaderValue::from_static("portcullis"));
            h.entry(ACCEPT).or_insert(HeaderValue::from_static("application/json"));
            h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            Ok::<_, FetchError>(req)
        };
        let (sender, resp) = match self.checkout(&origin) {
            Some(mut pooled) => match pooled.ready().await {
                Ok(()) => match pooled.try_send_request(build()?).await {
                    Ok(resp) => (pooled, resp),
                    // Closed by the server before it read the request: safe to send again.
                    Err(e) if e.message().is_some() => self.fresh(url, build()?).await?,
                    Err(e) => return Err(FetchError::Http(e.into_error().to_string())),
                },
                Err(_) => self.fresh(url, build()?).await?,
            },
            None => self.fresh(url, build()?).await?,
        };
        let (parts, incoming) = resp.into_parts();
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(FetchError::TooLarge(self.max_body));
        }
        let body = Limited::new(incoming, self.max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => FetchError::TooLarge(self.max_body),
                None => FetchError::Http(e.to_string()),
            })?
            .to_bytes();
        self.checkin(origin, sender);
        Ok(Response { status: parts.status, headers: parts.headers, body })
    }

    /// Sends on a new connection.
    async fn fresh(
        &self,
        url: &Url,
        req: Request<Full<Bytes>>,
    ) -> Result<(Sender, http::Response<hyper::body::Incoming>), FetchError> {
        let mut sender = self.connect(url).await?;
        sender.ready().await.map_err(|e| FetchError::Http(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| FetchError::Http(e.to_string()))?;
        Ok((sender, resp))
    }

    async fn connect(&self, url: &Url) -> Result<Sender, FetchError> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| FetchError::Connect(e.kind().to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.https {
            let connector = self.tls.as_ref().ok_or_else(|| FetchError::Tls("no TLS trust configured".into()))?;
            let name = ServerName::try_from(url.host.clone()).map_err(|e| FetchError::Tls(e.to_string()))?;
            Box::new(connector.connect(name, tcp).await.map_err(|e| FetchError::Tls(e.to_string()))?)
        } else {
            Box::new(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn checkout(&self, origin: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, s, since)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        let i = idle.iter().position(|(o, _, _)| o == origin)?;
        Some(idle.swap_remove(i).1)
    }

    fn checkin(&self, origin: String, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !sender.is_closed() && idle.len() < MAX_IDLE {
            idle.push((origin, sender, Instant::now()));
        }
    }
}

/// The gateway's TLS client policy: the CAs of the PEM file `ca` when given (and only those), else the
/// system's trust store; TLS 1.2 and 1.3 on aws-lc-rs.
pub fn tls_config(ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(path) => Arc::new(crate::tls::load_roots(path)?),
        None => system_roots()?,
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system trust store, loaded once per process.
fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system CA certificates found; set `ca:` to a PEM file of trusted CAs".into());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    const FORM: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');
    percent_encoding::utf8_percent_encode(value, FORM).to_string()
}

#[cfg(test)]
mod tests;
