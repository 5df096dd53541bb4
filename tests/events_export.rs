#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SIEM export end to end: the real gateway sends `authn.failure` events (requests without a key to a
//! route that needs one) to a real rsyslogd (UDP, TCP and TLS inputs on free loopback ports, a test CA
//! made with openssl) and to an HTTP collector (a hyper server in the test) in every format and
//! protocol; an unreachable exporter under a bounded load keeps its queue bounded and counts its drops.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HMAC_ENV: &str = "PORTCULLIS_TEST_EXPORT_HMAC";
const HMAC: &str = "export-test-server-secret-5b8e1f0a";
const HEC_ENV: &str = "PORTCULLIS_TEST_HEC_TOKEN";
const HEC_TOKEN: &str = "hec-token-0f9e8d7c";

/// A gateway whose only route needs an API key, with `events` as the events section.
fn config(up: SocketAddr, store: &Path, events: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
authenticators:
  keys:
    api_key:
      hmac_secret: ${{env:{HMAC_ENV}}}
      store: {store}
routes:
  - name: app
    match:
      path: {{ prefix: / }}
    upstream: app
    auth: keys
    authorize: authenticated
events:
{events}
logging:
  level: info
admin:
  address: 127.0.0.1:0
"#,
        store = path_str(store)
    )
}

/// Sends one request without a credential (401, so one `authn.failure` event).
fn refused(gw: &Gateway, path: &str) {
    let (code, _, _) = curl(&[&format!("http://{}{path}", gw.addr("main"))]);
    assert_eq!(code, 401);
}

fn openssl(dir: &TempDir, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(&dir.0).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 / localhost (`server.pem`, `server.key`).
fn certificates(dir: &TempDir) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca"]]
            .concat(),
    );
    dir.write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    openssl(
        dir,
        &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ],
    );
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An rsyslogd with UDP, TCP and TLS inputs on loopback, each writing the raw messages it receives to
/// its own file. Killed by PID on drop.
struct Rsyslog {
    child: Child,
    dir: TempDir,
    udp: u16,
    tcp: u16,
    tls: u16,
}

impl Rsyslog {
    /// Starts rsyslogd on three free ports, and makes sure it is rsyslogd that listens there: a port
    /// found free can be taken by another test's server before rsyslogd binds it (rsyslogd then runs
    /// on without that input, and the probe connects to the other server). Then it starts again on
    /// other ports.
    fn start() -> Rsyslog {
        for _ in 0..5 {
            let r = Rsyslog::start_once();
            let pid = r.child.id();
            if owns(pid, "tcp", r.tcp) && owns(pid, "tcp", r.tls) && owns(pid, "udp", r.udp) {
                return r;
            }
        }
        panic!("rsyslogd never got its own three ports in five tries");
    }

    fn start_once() -> Rsyslog {
        let dir = TempDir::new();
        certificates(&dir);
        std::fs::create_dir_all(dir.path("work")).unwrap();
        let (udp, tcp, tls) = (free_udp_port(), free_tcp_port(), free_tcp_port());
        let d = path_str(&dir.0);
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"#
        );
        let conf_path = dir.write("rsyslog.conf", &conf);
        let bin = if Path::new("/usr/sbin/rsyslogd").exists() { "/usr/sbin/rsyslogd" } else { "rsyslogd" };
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rsyslogd (scripts/test.sh installs rsyslog and rsyslog-gnutls)");
        let mut r = Rsyslog { child, dir, udp, tcp, tls };
        let deadline = Instant::now() + Duration::from_secs(15);
        while [r.tcp, r.tls].iter().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err()) {
            if let Ok(Some(status)) = r.child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(r.child.stderr.as_mut().unwrap(), &mut err);
                panic!("rsyslogd exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "rsyslogd did not open its ports");
            std::thread::sleep(Duration::from_millis(25));
        }
        r
    }

    /// The raw messages received on one input so far.
    fn lines(&self, input: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path(&format!("{input}.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when process `pid` holds the socket listening on 127.0.0.1:`port` (`/proc/net/tcp` or
/// `/proc/net/udp`, matched by inode against the process's descriptors).
fn owns(pid: u32, proto: &str, port: u16) -> bool {
    let table = std::fs::read_to_string(format!("/proc/net/{proto}")).unwrap_or_default();
    // Listening TCP sockets are in state 0A; an unconnected UDP socket is in state 07.
    let state = if proto == "tcp" { "0A" } else { "07" };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && f.get(3) == Some(&state)).then(|| f.get(9).map(|i| (*i).to_owned()))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).filter_map(|e| std::fs::read_link(e.path()).ok()).any(|link| {
        let link = link.to_string_lossy().into_owned();
        inodes.iter().any(|i| link == format!("socket:[{i}]"))
    })
}

/// RFC 5424 fields of one message: (pri, version, app-name, msgid, msg).
fn rfc5424(line: &str) -> (u16, String, String, String, String) {
    let f: Vec<&str> = line.splitn(8, ' ').collect();
    assert_eq!(f.len(), 8, "not RFC 5424: {line}");
    let (pri, version) = f[0].trim_start_matches('<').split_once('>').unwrap();
    assert_eq!(f[6], "-", "no structured data: {line}");
    assert!(f[1].ends_with('Z') && f[1].contains('T'), "RFC 3339 time: {line}");
    (pri.parse().unwrap(), version.to_owned(), f[3].to_owned(), f[5].to_owned(), f[7].to_owned())
}

#[test]
fn the_harness_tells_whose_port_it_is() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tp, up) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    let me = std::process::id();
    assert!(owns(me, "tcp", tp) && owns(me, "udp", up));
    // Another process (pid 1) does not hold them; a port nobody listens on is nobody's.
    assert!(!owns(1, "tcp", tp) && !owns(1, "udp", up));
    drop(tcp);
    assert!(!owns(me, "tcp", tp));
}

#[test]
fn syslog_in_every_format_over_udp_tcp_and_tls() {
    let rs = Rsyslog::start();
    let ca = path_str(&rs.dir.path("ca.pem"));
    let mut events = String::from("  exporters:\n");
    for (transport, port) in [("udp", rs.udp), ("tcp", rs.tcp), ("tls", rs.tls)] {
        for format in ["json", "cef", "ocsf"] {
            let tls = if transport == "tls" { format!(", ca: {ca}, server_name: localhost") } else { String::new() };
            events.push_str(&format!(
                "    - name: {transport}-{format}\n      syslog: {{ address: \"127.0.0.1:{port}\", transport: {transport}, \
                 format: {format}, app_name: pc-{format}, facility: local4{tls} }}\n      types: [authn.failure]\n"
            ));
        }
    }
    let store = TempDir::new();
    let up = Upstream::start("app");
    let gw = Gateway::start_with_env(&config(up.addr, &store.path("keys.db"), &events), &[(HMAC_ENV, HMAC)]);
    // Poll to a deadline; each round sends one more refused request (UDP may lose the first datagrams
    // while rsyslogd settles).
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |rs: &Rsyslog| {
        ["udp", "tcp", "tls"].iter().all(|t| {
            let lines = rs.lines(t);
            ["pc-json", "pc-cef", "pc-ocsf"].iter().all(|app| lines.iter().any(|l| l.contains(&format!(" {app} "))))
        })
    };
    while !complete(&rs) {
        assert!(
            Instant::now() < deadline,
            "events did not arrive: udp {:?} tcp {:?} tls {:?}\n{}",
            rs.lines("udp"),
            rs.lines("tcp"),
            rs.lines("tls"),
            gw.logs().join("\n")
        );
        refused(&gw, "/private?api_key=not-logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    for transport in ["udp", "tcp", "tls"] {
        for line in rs.lines(transport) {
            let (pri, version, app, msgid, msg) = rfc5424(&line);
            // local4 (20) * 8 + notice (5): authn.failure is `low`
            assert_eq!((pri, version.as_str(), msgid.as_str()), (165, "1", "authn.failure"), "{line}");
            assert!(!line.contains("not-logged"), "no query string: {line}");
            match app.as_str() {
                "pc-json" => {
                    let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
                    assert_eq!((v["v"].as_u64(), v["type"].as_str()), (Some(1), Some("authn.failure")), "{msg}");
                    assert_eq!((v["status"].as_u64(), v["route"].as_str()), (Some(401), Some("app")));
                    assert_eq!(v["path"], "/private");
                    assert_eq!(v["client_ip"], "127.0.0.1");
                }
                "pc-cef" => {
                    assert!(msg.starts_with("CEF:0|Portcullis|Portcullis|"), "{msg}");
                    assert!(msg.contains("|authn.failure|Authentication failure|3|rt="), "{msg}");
                    assert!(msg.contains(" src=127.0.0.1 ") && msg.contains(" requestMethod=GET "), "{msg}");
                    assert!(msg.contains(" request=/private ") && msg.contains("cs1=app cs1Label=route"), "{msg}");
                }
                "pc-ocsf" => {
                    let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
                    assert_eq!((v["class_uid"].as_u64(), v["activity_id"].as_u64()), (Some(4002), Some(3)), "{msg}");
                    assert_eq!(v["type_uid"], 400203);
                    assert_eq!(v["http_response"]["code"], 401);
                    assert_eq!(v["src_endpoint"]["ip"], "127.0.0.1");
                    assert_eq!(v["metadata"]["product"]["name"], "Portcullis");
                }
                other => panic!("unexpected app-name {other}: {line}"),
            }
        }
    }
    let m = gw.metrics();
    for name in ["tcp-json", "tls-cef", "udp-ocsf"] {
        let sent = metric(&m, &format!("portcullis_exporter_events_total{{exporter=\"{name}\",result=\"sent\"}}"));
        assert!(sent.unwrap_or(0.0) >= 1.0, "{name}: {m}");
    }
}

/// Serves one collector connection (see [`Collector`] for the answers).
async fn serve<I>(io: I, seen: Arc<Mutex<Vec<Received>>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let body = String::from_utf8_lossy(&req.into_body().collect().await.unwrap().to_bytes()).into_owned();
            let n_before = seen.lock().unwrap().iter().filter(|r: &&Received| r.path == path).count();
            let lines = body.lines().count() / 2;
            seen.lock().unwrap().push(Received { path: path.clone(), headers, body });
            let (status, answer) = match path.as_str() {
                "/fail400" => (400, r#"{"error":"bad"}"#.to_owned()),
                "/flaky" if n_before == 0 => (503, String::new()),
                "/_bulk" => {
                    let items: Vec<String> = (0..lines)
                        .map(|i| {
                            let status = if n_before == 0 && i == 0 { 429 } else { 201 };
                            format!(r#"{{"create":{{"status":{status}}}}}"#)
                        })
                        .collect();
                    (200, format!(r#"{{"errors":{},"items":[{}]}}"#, n_before == 0, items.join(",")))
                }
                _ => (200, r#"{"text":"Success","code":0}"#.to_owned()),
            };
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(answer)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(io), svc).await;
}

/// One request the collector received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP collector on a free loopback port: records every request; `/fail400` answers 400, `/flaky`
/// answers 503 to its first request, `/_bulk` answers like Elasticsearch (the first item of the first
/// bulk refused with 429), everything else 200.
struct Collector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        Self::start_with(None)
    }

    /// The collector over HTTPS with `dir`'s `server.pem` / `server.key` (see [`certificates`]).
    fn start_tls(dir: &TempDir) -> Collector {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(dir.path("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.path("server.key")).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Collector {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen2 = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (seen, tls) = (seen2.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, seen).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(stream, seen).await;
                            }
                        }
                    }
                });
            }
        });
        Collector { addr, seen, _rt: rt }
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.seen.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

/// Every JSON value in `text` (concatenated objects, NDJSON or one array).
fn json_values(text: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().map(Result::unwrap).collect()
}

#[test]
fn http_collectors_receive_webhook_hec_and_bulk_batches() {
    let col = Collector::start();
    let a = col.addr;
    // A batch is sent when it holds N events (the long flush interval never runs out in this test), so
    // the batching is checked by counts, not by timing.
    let common = "      batch: 5\n      flush_interval: 60s\n      types: [authn.failure]\n";
    let events = format!(
        "  exporters:\n\
         \x20   - name: hook\n      http: {{ url: \"http://{a}/hook\", protocol: webhook, format: json, token: \"${{env:{HEC_ENV}}}\" }}\n{common}\
         \x20   - name: hook-ocsf\n      http: {{ url: \"http://{a}/hook-ocsf\", format: ocsf }}\n{common}\
         \x20   - name: hec\n      http: {{ url: \"http://{a}/services/collector/event\", protocol: splunk_hec, token: \"${{env:{HEC_ENV}}}\", index: security }}\n{common}\
         \x20   - name: es\n      http: {{ url: \"http://{a}/_bulk\", protocol: elasticsearch_bulk, index: portcullis-events }}\n{common}\
         \x20   - name: refused\n      http: {{ url: \"http://{a}/fail400\" }}\n{common}\
         \x20   - name: flaky\n      http: {{ url: \"http://{a}/flaky\" }}\n{common}"
    );
    let store = TempDir::new();
    let up = Upstream::start("app");
    let gw = Gateway::start_with_env(
        &config(up.addr, &store.path("keys.db"), &events),
        &[(HMAC_ENV, HMAC), (HEC_ENV, HEC_TOKEN)],
    );
    const N: usize = 5;
    for i in 0..N {
        refused(&gw, &format!("/r{i}"));
    }
    // Wait until every exporter has accounted for all N events (sent or dropped), by counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let total = |m: &str, name: &str, result: &str| {
        metric(m, &format!("portcullis_exporter_events_total{{exporter=\"{name}\",result=\"{result}\"}}"))
            .unwrap_or(0.0) as usize
    };
    loop {
        let m = gw.metrics();
        let done = ["hook", "hook-ocsf", "hec", "es", "flaky"].iter().all(|n| total(&m, n, "sent") == N)
            && total(&m, "refused", "dropped") == N;
        if done {
            assert!(total(&m, "flaky", "retried") >= 1, "{m}");
            assert!(total(&m, "es", "retried") >= 1, "the 429 item was sent again: {m}");
            assert_eq!(total(&m, "es", "dropped"), 0);
            assert_eq!(total(&m, "refused", "sent"), 0);
            break;
        }
        assert!(Instant::now() < deadline, "exporters did not finish: {m}\n{}", gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Webhook: JSON arrays of schema events, the token as a bearer token.
    let hook = col.at("/hook");
    let paths: Vec<String> = hook
        .iter()
        .flat_map(|r| {
            assert_eq!(r.headers["authorization"], format!("Bearer {HEC_TOKEN}"));
            assert_eq!(r.headers["content-type"], "application/json");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(sorted, (0..N).map(|i| format!("/r{i}")).collect::<Vec<_>>());
    assert_eq!(hook.len(), 1, "one batch of {N} events");
    let ocsf = col.at("/hook-ocsf");
    assert!(ocsf.iter().all(|r| !r.headers.contains_key("authorization")));
    let v: serde_json::Value = serde_json::from_str(&ocsf[0].body).unwrap();
    assert_eq!((v[0]["class_uid"].as_u64(), v[0]["category_uid"].as_u64()), (Some(4002), Some(4)));

    // Splunk HEC: concatenated event objects, `Authorization: Splunk <token>`.
    let hec = col.at("/services/collector/event");
    let objs: Vec<serde_json::Value> = hec
        .iter()
        .flat_map(|r| {
            assert_eq!(r.headers["authorization"], format!("Splunk {HEC_TOKEN}"));
            json_values(&r.body)
        })
        .collect();
    assert_eq!(objs.len(), N);
    for o in &objs {
        assert_eq!((o["source"].as_str(), o["sourcetype"].as_str()), (Some("portcullis"), Some("portcullis:event")));
        assert_eq!(o["index"], "security");
        assert!(o["time"].as_f64().unwrap() > 1.7e9);
        assert_eq!((o["event"]["type"].as_str(), o["event"]["status"].as_u64()), (Some("authn.failure"), Some(401)));
    }

    // Elasticsearch _bulk: NDJSON action and source lines.
    let bulk = col.at("/_bulk");
    let mut sources = 0;
    for r in &bulk {
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert!(r.body.ends_with('\n'));
        let lines: Vec<&str> = r.body.lines().collect();
        for pair in lines.chunks(2) {
            assert_eq!(pair[0], r#"{"create":{"_index":"portcullis-events"}}"#);
            let v: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
            assert_eq!(v["type"], "authn.failure");
            sources += 1;
        }
    }
    assert_eq!(sources, N + 1, "one item (429) sent twice");

    // No secret in any body or log.
    for r in col.seen.lock().unwrap().iter() {
        assert!(!r.body.contains(HEC_TOKEN) && !r.body.contains(HMAC));
    }
    assert!(!gw.logs().iter().any(|l| l.contains(HEC_TOKEN)));
}

#[test]
fn an_unreachable_exporter_keeps_its_queue_bounded_and_counts_drops() {
    let closed = closed_port();
    const QUEUE: usize = 10;
    const BATCH: usize = 5;
    const N: usize = 60;
    let events = format!(
        "  exporters:\n    - name: siem\n      syslog: {{ address: \"{closed}\", transport: tcp, format: cef }}\n      \
         queue: {QUEUE}\n      batch: {BATCH}\n"
    );
    let store = TempDir::new();
    let up = Upstream::start("app");
    let gw = Gateway::start_with_env(&config(up.addr, &store.path("keys.db"), &events), &[(HMAC_ENV, HMAC)]);
    for i in 0..N {
        refused(&gw, &format!("/x{i}"));
    }
    let series = |m: &str, s: &str| metric(m, s).unwrap_or(0.0) as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = gw.metrics();
        let emitted = series(&m, r#"portcullis_security_events_total{type="authn.failure"}"#);
        let dropped = series(&m, r#"portcullis_exporter_events_total{exporter="siem",result="dropped"}"#);
        let depth = series(&m, r#"portcullis_exporter_queue_depth{exporter="siem"}"#);
        let sent = series(&m, r#"portcullis_exporter_events_total{exporter="siem",result="sent"}"#);
        let retried = series(&m, r#"portcullis_exporter_events_total{exporter="siem",result="retried"}"#);
        assert!(depth <= QUEUE, "queue depth {depth} over its bound");
        assert_eq!(sent, 0);
        // Every event is either dropped, queued, or in the one batch being retried.
        if emitted == N && dropped + depth + BATCH >= N && retried >= 1 {
            assert!(dropped >= N - QUEUE - BATCH, "dropped {dropped}");
            assert!(dropped + depth <= N);
            break;
        }
        assert!(Instant::now() < deadline, "emitted {emitted} dropped {dropped} depth {depth} retried {retried}\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The proxy still answers at once.
    refused(&gw, "/after");
}

#[test]
fn check_compiles_exporters_without_sending_and_refuses_mistakes() {
    let dir = TempDir::new();
    let up = closed_port();
    let store = dir.path("keys.db");
    // The bench's shape: an unreachable syslog exporter. `check` must neither send nor hang.
    let ok = config(
        up,
        &store,
        &format!(
            "  exporters: [{{name: siem, syslog: {{address: \"{}\", transport: tcp, format: cef}}}}]",
            closed_port()
        ),
    );
    let path = dir.write("ok.yaml", &ok);
    let started = Instant::now();
    let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[(HMAC_ENV, HMAC)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let bad = [
        ("  exporters: [{name: a}]", "exactly one of `syslog` or `http`"),
        ("  exporters: [{name: a, http: {url: \"http://127.0.0.1:1/\", format: cef}}]", "cef"),
        ("  exporters: [{name: a, http: {url: \"http://siem.example/\"}}]", "loopback"),
        ("  exporters: [{name: a, syslog: {address: \"127.0.0.1:1\"}, types: [authn.nope]}]", "authn.nope"),
        (
            "  exporters: [{name: a, syslog: {address: \"127.0.0.1:1\"}}, {name: a, syslog: {address: \"127.0.0.1:2\"}}]",
            "used twice",
        ),
        ("  exporters: [{name: a, syslog: {address: \"127.0.0.1:1\", colour: red}}]", "colour"),
    ];
    for (events, expected) in bad {
        let path = dir.write("bad.yaml", &config(up, &store, events));
        let (code, out, err) = portcullis(&["check", "-c", &path_str(&path)], &[(HMAC_ENV, HMAC)]);
        assert_eq!(code, 1, "{events}: {out}{err}");
        assert!(format!("{out}{err}").contains(expected), "{events}: {out}{err}");
    }
}

/// Messages by connection number; `None` marks the connection's end.
type Seen = Arc<Mutex<Vec<(usize, Option<String>)>>>;

/// A plain TCP syslog collector (RFC 6587 octet counting) that numbers its connections: messages are
/// kept as (connection, message), and a connection's end as (connection, None).
struct TcpCollector {
    addr: SocketAddr,
    seen: Seen,
}

impl TcpCollector {
    fn start() -> TcpCollector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { return };
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    use std::io::{BufRead, BufReader, Read};
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut len = Vec::new();
                        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                            break;
                        }
                        let Ok(n_bytes) = String::from_utf8_lossy(&len).trim().parse::<usize>() else { break };
                        let mut msg = vec![0; n_bytes];
                        if r.read_exact(&mut msg).is_err() {
                            break;
                        }
                        seen.lock().unwrap().push((n, Some(String::from_utf8_lossy(&msg).into_owned())));
                    }
                    seen.lock().unwrap().push((n, None));
                });
            }
        });
        TcpCollector { addr, seen }
    }

    fn snapshot(&self) -> Vec<(usize, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn a_reload_keeps_unchanged_exporters_and_replaces_changed_ones() {
    let col = TcpCollector::start();
    let events = |app: &str| {
        format!(
            "  exporters:\n    - name: siem\n      syslog: {{ address: \"{}\", transport: tcp, format: json, app_name: {app} }}\n      \
             types: [authn.failure]\n",
            col.addr
        )
    };
    let store = TempDir::new();
    let up = Upstream::start("app");
    let yaml = config(up.addr, &store.path("keys.db"), &events("first"));
    let gw = Gateway::start_with_env(&yaml, &[(HMAC_ENV, HMAC)]);
    let count =
        |needle: &str| col.snapshot().iter().filter(|(_, m)| m.as_deref().is_some_and(|m| m.contains(needle))).count();
    refused(&gw, "/one");
    assert!(eventually(Duration::from_secs(10), || count("\"/one\"") == 1), "{:?}", col.snapshot());

    // Unchanged `events:` (another setting changed): the same exporter, on the same connection.
    gw.rewrite_config(&yaml.replace("level: info", "level: debug"));
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || gw.count_log("configuration reloaded") >= 1),
        "{}",
        gw.logs().join("\n")
    );
    refused(&gw, "/two");
    assert!(eventually(Duration::from_secs(10), || count("\"/two\"") == 1), "{:?}", col.snapshot());
    assert!(col.snapshot().iter().all(|(conn, m)| *conn == 0 && m.is_some()), "{:?}", col.snapshot());

    // A changed exporter: a new one (new connection, new app-name); the old one stops and closes.
    let before = gw.count_log("configuration reloaded");
    gw.rewrite_config(&config(up.addr, &store.path("keys.db"), &events("second")));
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || gw.count_log("configuration reloaded") > before));
    refused(&gw, "/three");
    assert!(eventually(Duration::from_secs(10), || count("\"/three\"") == 1), "{:?}", col.snapshot());
    let snap = col.snapshot();
    let three = snap.iter().find(|(_, m)| m.as_deref().is_some_and(|m| m.contains("\"/three\""))).unwrap();
    assert!(three.0 >= 1 && three.1.as_deref().unwrap().contains(" second "), "{snap:?}");
    assert!(
        eventually(Duration::from_secs(15), || col.snapshot().contains(&(0, None))),
        "the replaced exporter stopped: {:?}",
        col.snapshot()
    );
}

#[test]
fn https_collectors_need_a_trusted_certificate() {
    let dir = TempDir::new();
    certificates(&dir);
    let col = Collector::start_tls(&dir);
    let port = col.addr.port();
    let ca = path_str(&dir.path("ca.pem"));
    // `localhost` is a loopback name, so plain http:// would be allowed too; here TLS is verified.
    let events = format!(
        "  exporters:\n    - name: trusted\n      http: {{ url: \"https://localhost:{port}/trusted\", ca: {ca} }}\n      \
         flush_interval: 50ms\n    - name: untrusted\n      http: {{ url: \"https://localhost:{port}/untrusted\", ca: {ca_other} }}\n      \
         flush_interval: 50ms\n",
        ca_other = path_str(&dir.path("other-ca.pem"))
    );
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
        ],
    );
    let store = TempDir::new();
    let up = Upstream::start("app");
    let gw = Gateway::start_with_env(&config(up.addr, &store.path("keys.db"), &events), &[(HMAC_ENV, HMAC)]);
    refused(&gw, "/tls");
    let total = |m: &str, name: &str, result: &str| {
        metric(m, &format!("portcullis_exporter_events_total{{exporter=\"{name}\",result=\"{result}\"}}"))
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = gw.metrics();
        if total(&m, "trusted", "sent") >= 1.0 && total(&m, "untrusted", "retried") >= 1.0 {
            assert_eq!(total(&m, "untrusted", "sent"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "{m}\n{}", gw.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = col.at("/trusted");
    let v: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(v[0]["path"], "/tls");
    assert!(col.at("/untrusted").is_empty(), "nothing reaches a collector whose certificate is not trusted");
}
