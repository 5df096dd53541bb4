//! Unit tests of the outbound client: URL rules, Cache-Control, form encoding, and real exchanges
//! with loopback servers (HTTPS with a configured CA, size limit, timeout, no redirects).

use super::*;

#[test]
fn urls() {
    let u = Url::parse("https://idp.example.com/realms/a/protocol?x=1").unwrap();
    assert!(u.https);
    assert_eq!((u.host.as_str(), u.port), ("idp.example.com", 443));
    assert_eq!(u.path(), "/realms/a/protocol");
    assert_eq!(u.redacted(), "https://idp.example.com/realms/a/protocol");
    let l = Url::parse("http://127.0.0.1:8080/jwks").unwrap();
    assert_eq!((l.host.as_str(), l.port, l.https), ("127.0.0.1", 8080, false));
    assert!(Url::parse("http://[::1]:9/x").is_ok());
    assert!(Url::parse("http://idp.example.com/jwks").is_err(), "clear text off loopback");
    assert!(Url::parse("https://user:pw@idp.example.com/").is_err());
    assert!(Url::parse("ftp://idp.example.com/").is_err());
    assert!(Url::parse("/relative").is_err());
    assert_eq!(l.with_path("/.well-known/openid-configuration").path(), "/.well-known/openid-configuration");
}

#[test]
fn cache_control() {
    let resp = |v: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        Response { status: StatusCode::OK, headers, body: Bytes::new() }
    };
    assert_eq!(resp("public, max-age=300").max_age(), Some(Duration::from_secs(300)));
    assert_eq!(resp("max-age=300, s-maxage=60").max_age(), Some(Duration::from_secs(60)));
    assert_eq!(resp("no-store").max_age(), Some(Duration::ZERO));
    assert_eq!(resp("public").max_age(), None);
}

#[test]
fn form_encoding() {
    assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    assert_eq!(form_encode("abc-._*"), "abc-._*");
}

/// A loopback HTTP/1.1 server (TLS when `tls` is given) answering every request with `answer(path)`;
/// counts accepted connections.
async fn serve(
    tls: Option<rustls::ServerConfig>,
    answer: fn(&str) -> http::Response<Full<Bytes>>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(answer(req.uri().path()))
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn answer(path: &str) -> http::Response<Full<Bytes>> {
    let b = http::Response::builder();
    match path {
        "/big" => b.body(Full::new(Bytes::from(vec![b'x'; 4096]))),
        "/moved" => b.status(302).header("location", "http://127.0.0.1:1/elsewhere").body(Full::new(Bytes::new())),
        _ => b.header(CACHE_CONTROL, "max-age=120").body(Full::new(Bytes::from_static(b"{\"keys\":[]}"))),
    }
    .unwrap()
}

/// A self-signed certificate for 127.0.0.1: (server config, CA PEM file).
fn tls_server(tag: &str) -> (rustls::ServerConfig, std::path::PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let path = std::env::temp_dir().join(format!("portcullis-client-{}-{tag}.pem", std::process::id()));
    std::fs::write(&path, generated.cert.pem()).unwrap();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key.into())
        .unwrap();
    (config, path)
}

#[tokio::test]
async fn https_with_the_configured_ca_only() {
    let (server, ca) = tls_server("ok");
    let (_, other_ca) = tls_server("other");
    let (addr, accepted) = serve(Some(server), answer).await;
    let url = Url::parse(&format!("https://127.0.0.1:{}/jwks", addr.port())).unwrap();
    let client = Client::new(ca.to_str(), true, Duration::from_secs(5), 1024).unwrap();
    let resp = client.get(&url).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(&resp.body[..], b"{\"keys\":[]}");
    assert_eq!(resp.max_age(), Some(Duration::from_secs(120)));
    client.get(&url).await.unwrap();
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 1, "the connection is kept alive and reused");
    let stranger = Client::new(other_ca.to_str(), true, Duration::from_secs(5), 1024).unwrap();
    assert!(matches!(stranger.get(&url).await, Err(FetchError::Tls(_))), "a certificate from another CA");
    let plain_url = Url::parse(&format!("http://127.0.0.1:{}/jwks", addr.port())).unwrap();
    assert!(client.get(&plain_url).await.is_err(), "plain HTTP to a TLS port");
    let _ = std::fs::remove_file(ca);
    let _ = std::fs::remove_file(other_ca);
}

#[tokio::test]
async fn bounded_body_no_redirects_and_timeouts() {
    let (addr, _) = serve(None, answer).await;
    let client = Client::new(None, false, Duration::from_millis(500), 1024).unwrap();
    let at = |p: &str| Url::parse(&format!("http://127.0.0.1:{}{p}", addr.port())).unwrap();
    assert!(matches!(client.get(&at("/big")).await, Err(FetchError::TooLarge(1024))));
    let moved = client.get(&at("/moved")).await.unwrap();
    assert_eq!(moved.status.as_u16(), 302, "redirects are returned, never followed");
    let form = client.post_form(&at("/jwks"), HeaderMap::new(), "a=b".into()).await.unwrap();
    assert_eq!(form.status, StatusCode::OK);
    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = Url::parse(&format!("http://{}/jwks", silent.local_addr().unwrap())).unwrap();
    let started = Instant::now();
    assert!(matches!(client.get(&silent_url).await, Err(FetchError::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(silent);
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let closed_url = Url::parse(&format!("http://{closed}/jwks")).unwrap();
    assert!(client.get(&closed_url).await.is_err());
}
