#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS end to end: the real gateway binary driven by the real `openssl s_client` and `curl`.
//!
//! Certificates are made per test with the `openssl` CLI (a small CA that signs server and client
//! certificates, keys in PKCS#8, PKCS#1 and SEC1) in the test's temporary directory. `openssl` runs
//! with `OPENSSL_CONF=/dev/null`, so the machine's openssl.cnf cannot change what is offered.
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Processes with a deadline

/// What a finished command printed. `code` is `None` when it was killed by a signal.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` with stdin from /dev/null; kills it and fails the test after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Out {
    let dir = TempDir::new();
    let (o, e) = (dir.path("stdout"), dir.path("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Out { code, stdout: read(&o), stderr: read(&e) }
}

fn openssl(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir).env("OPENSSL_CONF", "/dev/null");
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn openssl_ok(dir: &Path, args: &[&str]) {
    let out = openssl(dir, args);
    assert!(out.ok(), "openssl {args:?} failed:\n{}", out.all());
}

// ---------------------------------------------------------------------------------------------
// Certificates

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    /// `BEGIN EC PRIVATE KEY` (P-256), preceded by an `EC PARAMETERS` block as `openssl ecparam` writes it.
    EcSec1,
    /// `BEGIN EC PRIVATE KEY` on P-384.
    EcSec1P384,
    /// `BEGIN PRIVATE KEY` (P-256).
    EcPkcs8,
    /// `BEGIN RSA PRIVATE KEY` (2048 bits).
    RsaPkcs1,
    /// `BEGIN PRIVATE KEY` (RSA 2048 bits).
    RsaPkcs8,
    /// `BEGIN PRIVATE KEY` (Ed25519).
    Ed25519,
}

fn gen_key(dir: &Path, file: &str, kind: KeyKind) -> PathBuf {
    let args: &[&str] = match kind {
        KeyKind::EcSec1 => &["ecparam", "-name", "prime256v1", "-genkey", "-out", file],
        KeyKind::EcSec1P384 => &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", file],
        KeyKind::EcPkcs8 => &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file],
        KeyKind::RsaPkcs1 => &["genrsa", "-traditional", "-out", file, "2048"],
        KeyKind::RsaPkcs8 => &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", file],
        KeyKind::Ed25519 => &["genpkey", "-algorithm", "ED25519", "-out", file],
    };
    openssl_ok(dir, args);
    let path = dir.join(file);
    let pem = std::fs::read_to_string(&path).unwrap();
    let expected = match kind {
        KeyKind::EcSec1 | KeyKind::EcSec1P384 => "-----BEGIN EC PRIVATE KEY-----",
        KeyKind::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        KeyKind::EcPkcs8 | KeyKind::RsaPkcs8 | KeyKind::Ed25519 => "-----BEGIN PRIVATE KEY-----",
    };
    assert!(pem.contains(expected), "{kind:?} key is not in the expected format:\n{pem}");
    path
}

/// A certificate and its private key on disk.
#[derive(Clone, Debug)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA (P-256) that issues certificates.
struct Ca {
    pair: Pair,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let (cert, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
        gen_key(dir, &key, KeyKind::EcPkcs8);
        openssl_ok(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca { pair: Pair { cert: dir.join(cert), key: dir.join(key) }, dir: dir.to_owned() }
    }

    fn cert(&self) -> String {
        path_str(&self.pair.cert)
    }

    /// Issues a certificate for `cn` with subjectAltNames `sans` (`DNS:x`, `IP:y`) and the extended key
    /// usage `eku` (`serverAuth` or `clientAuth`), valid for `days` (negative: already expired).
    fn issue_days(&self, file: &str, cn: &str, sans: &[&str], kind: KeyKind, eku: &str, days: i32) -> Pair {
        let dir = &self.dir;
        let key = gen_key(dir, &format!("{file}.key"), kind);
        let (csr, ext, cert) = (format!("{file}.csr"), format!("{file}.ext"), format!("{file}.pem"));
        openssl_ok(dir, &["req", "-new", "-key", &path_str(&key), "-subj", &format!("/CN={cn}"), "-out", &csr]);
        let mut extensions =
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n");
        if !sans.is_empty() {
            extensions.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        std::fs::write(dir.join(&ext), extensions).unwrap();
        openssl_ok(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &path_str(&self.pair.cert),
                "-CAkey",
                &path_str(&self.pair.key),
                "-CAcreateserial",
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        Pair { cert: dir.join(cert), key }
    }

    fn server(&self, file: &str, names: &[&str], kind: KeyKind) -> Pair {
        let sans = names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>();
        let sans = sans.iter().map(String::as_str).collect::<Vec<_>>();
        self.issue_days(file, names[0], &sans, kind, "serverAuth", 2)
    }

    fn client(&self, file: &str, cn: &str) -> Pair {
        self.issue_days(file, cn, &[], KeyKind::EcSec1, "clientAuth", 2)
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> Ca {
        let dir = &self.dir;
        let (cert, key, csr, ext) =
            (format!("{name}-ca.pem"), format!("{name}-ca.key"), format!("{name}-ca.csr"), format!("{name}-ca.ext"));
        gen_key(dir, &key, KeyKind::EcPkcs8);
        openssl_ok(dir, &["req", "-new", "-key", &key, "-subj", &format!("/CN={name} test CA"), "-out", &csr]);
        std::fs::write(dir.join(&ext), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
            .unwrap();
        let (parent_cert, parent_key) = (path_str(&self.pair.cert), path_str(&self.pair.key));
        openssl_ok(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &parent_cert,
                "-CAkey",
                &parent_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        Ca { pair: Pair { cert: dir.join(cert), key: dir.join(key) }, dir: dir.to_owned() }
    }

    /// `leaf` with this (intermediate) CA's certificate appended: the chain a server or client sends.
    fn chain(&self, leaf: &Pair, file: &str) -> Pair {
        let pem = std::fs::read_to_string(&leaf.cert).unwrap() + &std::fs::read_to_string(&self.pair.cert).unwrap();
        let path = self.dir.join(file);
        std::fs::write(&path, pem).unwrap();
        Pair { cert: path, key: leaf.key.clone() }
    }
}

/// A self-signed certificate that no test CA issued.
fn self_signed(dir: &Path, file: &str, cn: &str, eku: &str) -> Pair {
    let key = gen_key(dir, &format!("{file}.key"), KeyKind::EcPkcs8);
    let cert = format!("{file}.pem");
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &path_str(&key),
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName=DNS:{cn}"),
            "-addext",
            &format!("extendedKeyUsage={eku}"),
        ],
    );
    Pair { cert: dir.join(cert), key }
}

// ---------------------------------------------------------------------------------------------
// Config

/// A TLS listener item. `tls_extra` goes inside `tls:` (6 spaces), `listener_extra` beside it (4 spaces).
fn tls_listener(name: &str, certs: &[&Pair], tls_extra: &str, listener_extra: &str) -> String {
    let mut y = format!("  - name: {name}\n    address: 127.0.0.1:0\n{listener_extra}    tls:\n      certificates:\n");
    for c in certs {
        y.push_str(&format!("        - cert: {}\n          key: {}\n", path_str(&c.cert), path_str(&c.key)));
    }
    y.push_str(tls_extra);
    y
}

fn plain_listener(name: &str) -> String {
    format!("  - name: {name}\n    address: 127.0.0.1:0\n")
}

/// A config with `listeners` and one catch-all route to `upstream`; `extra` is more top-level YAML.
fn config(listeners: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listeners:\n{listeners}upstreams:\n  app:\n    targets:\n      - address: {upstream}\nroutes:\n  - name: app\n    match:\n      path: {{ prefix: / }}\n    upstream: app\n    auth: none\n{extra}logging:\n  level: portcullis=debug\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Clients

/// `openssl s_client` against `addr` with `args`, stdin at EOF (it closes right after the handshake).
fn s_client(addr: SocketAddr, args: &[&str]) -> Out {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]).args(args).env("OPENSSL_CONF", "/dev/null");
    run_bounded(&mut cmd, Duration::from_secs(20))
}

/// The `(protocol, cipher)` s_client reports as negotiated, or `None` when the handshake failed.
fn negotiated(out: &Out) -> Option<(String, String)> {
    let line = out.stdout.lines().find(|l| l.starts_with("New, "))?;
    let rest = line.strip_prefix("New, ")?;
    let (proto, cipher) = rest.split_once(", Cipher is ")?;
    (proto != "(NONE)" && cipher != "(NONE)" && out.ok()).then(|| (proto.to_owned(), cipher.to_owned()))
}

/// The leaf certificate's subject line as s_client prints it, e.g. `CN = a.test`.
fn served_subject(out: &Out) -> String {
    out.stdout.lines().find_map(|l| l.strip_prefix("subject=")).unwrap_or("").trim().to_owned()
}

/// Asserts that s_client with `args` sent a ClientHello and the gateway refused the handshake.
fn assert_refused(addr: SocketAddr, args: &[&str]) {
    let mut all = vec!["-msg"];
    all.extend_from_slice(args);
    let out = s_client(addr, &all);
    let text = out.all();
    assert!(text.contains(", ClientHello"), "openssl did not even offer {args:?}:\n{text}");
    assert_eq!(negotiated(&out), None, "{args:?} was accepted:\n{text}");
    assert_eq!(out.code, Some(1), "{text}");
    assert!(
        text.contains("<<< ") && text.contains("Alert") && text.contains("fatal"),
        "no fatal alert for {args:?}:\n{text}"
    );
    assert!(text.contains("Cipher is (NONE)"), "{text}");
}

fn assert_negotiates(addr: SocketAddr, args: &[&str], proto: &str, cipher: &str) {
    let out = s_client(addr, args);
    assert_eq!(
        negotiated(&out),
        Some((proto.to_owned(), cipher.to_owned())),
        "s_client {args:?} on {addr}:\n{}",
        out.all()
    );
}

/// One curl exchange: exit code, status (0 without a response), HTTP version, headers and body.
struct Resp {
    exit: Option<i32>,
    status: u16,
    version: String,
    headers: String,
    body: String,
    stderr: String,
}

impl Resp {
    /// The values of header `name` (case-insensitive), in order.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .collect()
    }
    fn describe(&self) -> String {
        format!(
            "exit {:?}, status {}, http {}\n{}{}\n{}",
            self.exit, self.status, self.version, self.headers, self.body, self.stderr
        )
    }
}

fn curl_tls(args: &[&str]) -> Resp {
    let dir = TempDir::new();
    let (headers, body) = (dir.path("headers"), dir.path("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args);
    let out = run_bounded(&mut cmd, Duration::from_secs(20));
    let (status, version) = out.stdout.trim().split_once(' ').unwrap_or(("0", ""));
    Resp {
        exit: out.code,
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        stderr: out.stderr,
    }
}

/// curl to `https://{host}:{port}{path}` with `host` resolved to the gateway and the CA trusted.
fn curl_name(gw: &SocketAddr, host: &str, path: &str, ca: &Ca, extra: &[&str]) -> Resp {
    let resolve = format!("{host}:{}:127.0.0.1", gw.port());
    let url = format!("https://{host}:{}{path}", gw.port());
    let cacert = ca.cert();
    let mut args = vec!["--resolve", &resolve, "--cacert", &cacert];
    args.extend_from_slice(extra);
    args.push(&url);
    curl_tls(&args)
}

fn assert_no_response(r: &Resp, what: &str) {
    assert_ne!(r.exit, Some(0), "{what}: curl succeeded: {}", r.describe());
    assert_eq!(r.status, 0, "{what}: got an HTTP response: {}", r.describe());
}

// ---------------------------------------------------------------------------------------------
// 1, 2: protocol versions, suites and groups

/// A gateway with an ECDSA (`ec`) and an RSA (`rsa`) listener, both for a.test.
fn ec_and_rsa_gateway(up: &Upstream) -> (Gateway, Ca) {
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let ec = ca.server("ec", &["a.test"], KeyKind::EcPkcs8);
    let rsa = ca.server("rsa", &["a.test"], KeyKind::RsaPkcs1);
    let listeners = tls_listener("ec", &[&ec], "", "") + &tls_listener("rsa", &[&rsa], "", "");
    let gw = Gateway::start_in(dir, &config(&listeners, up.addr, ""));
    (gw, ca)
}

#[test]
fn modern_versions_suites_and_groups_negotiate() {
    let up = Upstream::start("a");
    let (gw, ca) = ec_and_rsa_gateway(&up);
    let (ec, rsa) = (gw.addr("ec"), gw.addr("rsa"));

    // TLS 1.3: every AEAD suite, on both key types; the server prefers AES-128-GCM.
    for addr in [ec, rsa] {
        assert_negotiates(addr, &["-tls1_3"], "TLSv1.3", "TLS_AES_128_GCM_SHA256");
        for suite in ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"] {
            assert_negotiates(addr, &["-tls1_3", "-ciphersuites", suite], "TLSv1.3", suite);
        }
    }
    // TLS 1.2: ECDHE with AEAD only, matching the certificate's key type.
    for suite in ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"] {
        assert_negotiates(ec, &["-tls1_2", "-cipher", suite], "TLSv1.2", suite);
    }
    for suite in ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"] {
        assert_negotiates(rsa, &["-tls1_2", "-cipher", suite], "TLSv1.2", suite);
    }

    // Key exchange: X25519 and P-256, in both versions. (In TLS 1.2 openssl also applies `-groups` to
    // the curve of an ECDSA certificate, so that case uses the RSA listener.)
    for (groups, temp_key) in [("X25519", "Server Temp Key: X25519"), ("P-256", "Server Temp Key: ECDH, prime256v1")] {
        for (version, addr) in [("-tls1_3", ec), ("-tls1_3", rsa), ("-tls1_2", rsa)] {
            let out = s_client(addr, &[version, "-groups", groups]);
            assert!(negotiated(&out).is_some(), "{version} {groups}:\n{}", out.all());
            assert!(out.stdout.contains(temp_key), "{version} {groups}:\n{}", out.all());
        }
    }

    // The chain verifies against the CA for the name, like a real client checks it.
    let out = s_client(
        ec,
        &["-servername", "a.test", "-verify_hostname", "a.test", "-CAfile", &ca.cert(), "-verify_return_error"],
    );
    assert!(out.ok() && out.stdout.contains("Verify return code: 0 (ok)"), "{}", out.all());
    assert_eq!(up.hits(), 0, "handshakes alone reach no upstream");
}

#[test]
fn legacy_versions_weak_suites_and_groups_are_refused() {
    let up = Upstream::start("a");
    let (gw, _ca) = ec_and_rsa_gateway(&up);
    let (ec, rsa) = (gw.addr("ec"), gw.addr("rsa"));
    for addr in [ec, rsa] {
        // SECLEVEL=0 so that openssl itself is willing to offer the old versions and suites.
        assert_refused(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert_refused(addr, &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]);
        // TLS 1.3 suites rustls does not implement or we leave out.
        assert_refused(addr, &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"]);
        // Groups outside X25519 / P-256.
        assert_refused(addr, &["-tls1_3", "-groups", "P-384"]);
        assert_refused(addr, &["-tls1_3", "-groups", "ffdhe2048"]);
    }
    // CBC, static RSA, DHE and SHA-1 MAC suites, each offered alone with a key type it would fit.
    for suite in [
        "AES128-SHA",
        "AES256-SHA256",
        "AES128-GCM-SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA384",
    ] {
        assert_refused(rsa, &["-tls1_2", "-cipher", &format!("{suite}@SECLEVEL=0")]);
    }
    for suite in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"] {
        assert_refused(ec, &["-tls1_2", "-cipher", &format!("{suite}@SECLEVEL=0")]);
    }
    assert_refused(rsa, &["-tls1_2", "-groups", "P-384", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
    // The gateway is still fine afterwards.
    assert_negotiates(
        rsa,
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        "TLSv1.2",
        "ECDHE-RSA-AES128-GCM-SHA256",
    );
    assert_eq!(up.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// 3: ALPN

#[test]
fn alpn_negotiates_http2_unless_disabled() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let a = ca.server("a", &["a.test"], KeyKind::EcSec1);
    let listeners = tls_listener("h2", &[&a], "", "") + &tls_listener("h1", &[&a], "", "    http2: false\n");
    let gw = Gateway::start_in(dir, &config(&listeners, up.addr, ""));

    let h2 = format!("https://127.0.0.1:{}/x", gw.addr("h2").port());
    let h1 = format!("https://127.0.0.1:{}/x", gw.addr("h1").port());
    let r = curl_tls(&["-k", "--http2", &h2]);
    assert_eq!((r.status, r.version.as_str()), (200, "2"), "{}", r.describe());
    let r = curl_tls(&["-k", "--http1.1", &h2]);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{}", r.describe());
    let r = curl_tls(&["-k", "--http2", &h1]);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{}", r.describe());
    assert_eq!(up.hits(), 3);

    // What the server selects, as openssl sees it.
    let out = s_client(gw.addr("h2"), &["-alpn", "h2,http/1.1"]);
    assert!(out.stdout.contains("ALPN protocol: h2"), "{}", out.all());
    let out = s_client(gw.addr("h1"), &["-alpn", "h2,http/1.1"]);
    assert!(out.stdout.contains("ALPN protocol: http/1.1"), "{}", out.all());
    // No ALPN offered: the connection is HTTP/1.1.
    let r = curl_tls(&["-k", "--no-alpn", "--http1.1", &h2]);
    assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{}", r.describe());
}

// ---------------------------------------------------------------------------------------------
// 4: SNI

#[test]
fn sni_selects_the_certificate_and_falls_back_to_the_first() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let a = ca.server("a", &["a.test"], KeyKind::EcPkcs8);
    let b = ca.server("b", &["b.test"], KeyKind::RsaPkcs1);
    let wild = ca.server("wild", &["*.wild.test"], KeyKind::EcSec1);
    let gw = Gateway::start_in(dir, &config(&tls_listener("main", &[&a, &b, &wild], "", ""), up.addr, ""));
    let addr = gw.addr("main");

    // curl checks the served certificate against the name and the CA: each name gets its own.
    for host in ["a.test", "b.test", "x.wild.test"] {
        let r = curl_name(&addr, host, "/", &ca, &[]);
        assert_eq!(r.status, 200, "{host}: {}", r.describe());
    }
    // The same over TLS 1.2.
    for host in ["a.test", "b.test", "x.wild.test"] {
        let r = curl_name(&addr, host, "/", &ca, &["--tls-max", "1.2"]);
        assert_eq!(r.status, 200, "{host} (TLS 1.2): {}", r.describe());
    }

    let subject = |args: &[&str]| {
        let out = s_client(addr, args);
        assert!(negotiated(&out).is_some(), "{args:?}:\n{}", out.all());
        served_subject(&out)
    };
    assert_eq!(subject(&["-servername", "b.test"]), "CN = b.test");
    assert_eq!(subject(&["-servername", "B.TEST"]), "CN = b.test", "names are case-insensitive");
    assert_eq!(subject(&["-servername", "deep.x.wild.test"]), "CN = a.test", "a wildcard covers one label");
    assert_eq!(subject(&["-servername", "unknown.test"]), "CN = a.test");
    assert_eq!(subject(&["-noservername"]), "CN = a.test");

    // An unknown name gets the default certificate, which a verifying client refuses (exit 60).
    let r = curl_name(&addr, "c.test", "/", &ca, &[]);
    assert_eq!(r.exit, Some(60), "{}", r.describe());
    assert_eq!(up.hits(), 6);
}

/// One name with an ECDSA and an RSA certificate (a common setup for old clients): a client that can
/// only use RSA must get the RSA one, whatever the order.
#[test]
fn sni_picks_a_certificate_the_client_can_use() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let ec = ca.server("ec", &["a.test"], KeyKind::EcPkcs8);
    let rsa = ca.server("rsa", &["a.test"], KeyKind::RsaPkcs8);
    let listeners = tls_listener("ec_first", &[&ec, &rsa], "", "") + &tls_listener("rsa_first", &[&rsa, &ec], "", "");
    let gw = Gateway::start_in(dir, &config(&listeners, up.addr, ""));
    for listener in ["ec_first", "rsa_first"] {
        let addr = gw.addr(listener);
        for sni in [&["-servername", "a.test"][..], &["-noservername"][..]] {
            let mut args = sni.to_vec();
            args.extend(["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
            assert_negotiates(addr, &args, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256");
            let mut args = sni.to_vec();
            args.extend(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
            assert_negotiates(addr, &args, "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256");
            let mut args = sni.to_vec();
            args.extend(["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"]);
            let out = s_client(addr, &args);
            assert!(negotiated(&out).is_some(), "{listener} {args:?}:\n{}", out.all());
            assert!(out.stdout.contains("Peer signature type: RSA-PSS"), "{listener} {args:?}:\n{}", out.all());
            let mut args = sni.to_vec();
            args.extend(["-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"]);
            let out = s_client(addr, &args);
            assert!(negotiated(&out).is_some(), "{listener} {args:?}:\n{}", out.all());
            assert!(out.stdout.contains("Peer signature type: ECDSA"), "{listener} {args:?}:\n{}", out.all());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5: key formats and bad keys

#[test]
fn every_supported_key_format_serves() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let kinds = [
        ("rsa_pkcs1", KeyKind::RsaPkcs1),
        ("rsa_pkcs8", KeyKind::RsaPkcs8),
        ("ec_sec1", KeyKind::EcSec1),
        ("ec_sec1_p384", KeyKind::EcSec1P384),
        ("ec_pkcs8", KeyKind::EcPkcs8),
        ("ed25519", KeyKind::Ed25519),
    ];
    let mut listeners = String::new();
    for (name, kind) in kinds {
        let pair = ca.server(name, &["a.test"], kind);
        listeners.push_str(&tls_listener(name, &[&pair], "", ""));
    }
    // One file holding the certificate and then the key (as HAProxy wants them), for both settings.
    let pair = ca.server("combined", &["a.test"], KeyKind::EcSec1);
    let combined = dir.write(
        "combined.pem",
        &(std::fs::read_to_string(&pair.cert).unwrap() + &std::fs::read_to_string(&pair.key).unwrap()),
    );
    listeners.push_str(&tls_listener("combined", &[&Pair { cert: combined.clone(), key: combined }], "", ""));
    let gw = Gateway::start_in(dir, &config(&listeners, up.addr, ""));
    let r = curl_name(&gw.addr("combined"), "a.test", "/", &ca, &[]);
    assert_eq!(r.status, 200, "combined: {}", r.describe());
    for (name, _) in kinds {
        let r = curl_name(&gw.addr(name), "a.test", "/", &ca, &[]);
        assert_eq!(r.status, 200, "{name}: {}", r.describe());
    }
    // TLS 1.2 signs with the same keys (Ed25519 included: rustls offers it in 1.2 as well).
    for (name, _) in kinds {
        let r = curl_name(&gw.addr(name), "a.test", "/", &ca, &["--tls-max", "1.2"]);
        assert_eq!(r.status, 200, "{name} (TLS 1.2): {}", r.describe());
    }
    assert_eq!(up.hits(), 2 * kinds.len() + 1);
}

/// Every 24-character window of the key's base64 body: none may appear in any output.
fn key_fragments(key: &Path) -> Vec<String> {
    let pem = std::fs::read_to_string(key).unwrap();
    // Leave out the armour and the legacy encryption headers (`Proc-Type:`, `DEK-Info:`).
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----") && !l.contains(':')).collect();
    assert!(b64.len() > 100);
    (0..b64.len() - 24).step_by(4).map(|i| b64[i..i + 24].to_owned()).collect()
}

fn assert_no_key_material(output: &str, keys: &[&Path]) {
    for key in keys {
        for f in key_fragments(key) {
            assert!(!output.contains(&f), "key material of {} in the output:\n{output}", key.display());
        }
    }
}

fn check(config_path: &Path) -> Out {
    let mut cmd = Command::new(bin());
    cmd.args(["check", "-c"]).arg(config_path);
    run_bounded(&mut cmd, Duration::from_secs(20))
}

/// A YAML double-quoted scalar holding `text` (a PEM pasted where a path belongs).
fn yaml_quoted(text: &str) -> PathBuf {
    PathBuf::from(format!("\"{}\"", text.replace('\n', "\\n")))
}

/// Runs `check` on `yaml`: expects exit 1, `message` on stderr after the file name, and no key material.
fn assert_check_refuses(dir: &TempDir, name: &str, yaml: &str, message: &str, keys: &[&Path]) {
    let file = dir.write(&format!("{name}.yaml"), yaml);
    let out = check(&file);
    assert_eq!(out.code, Some(1), "{name}: {}", out.all());
    assert!(out.stderr.contains(message), "{name}: expected `{message}`:\n{}", out.all());
    assert!(
        out.stderr.starts_with(&format!("{}:", path_str(&file))),
        "{name}: the error names the file: {}",
        out.all()
    );
    assert!(!out.stdout.contains("configuration is valid"), "{name}");
    assert_no_key_material(&out.all(), keys);
}

#[test]
fn bad_keys_fail_check_without_leaking_key_material() {
    let up_addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let a = ca.server("a", &["a.test"], KeyKind::EcPkcs8);
    let b = ca.server("b", &["b.test"], KeyKind::RsaPkcs1);
    let sec1 = ca.server("c", &["c.test"], KeyKind::EcSec1);
    // A key whose PEM is fine but whose DER is damaged.
    let pem = std::fs::read_to_string(&b.key).unwrap();
    let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
    lines[5] = lines[5].chars().rev().collect();
    lines[6] = "A".repeat(lines[6].len());
    let broken = dir.write("broken.key", &(lines.join("\n") + "\n"));
    // Password-protected keys: PKCS#8 and the legacy OpenSSL form.
    let (a_key, sec1_key) = (path_str(&a.key), path_str(&sec1.key));
    openssl_ok(&dir.0, &["pkey", "-in", &a_key, "-aes256", "-passout", "pass:secret", "-out", "enc8.key"]);
    openssl_ok(&dir.0, &["ec", "-in", &sec1_key, "-aes256", "-passout", "pass:secret", "-out", "enc1.key"]);
    let (enc8, enc1) = (dir.path("enc8.key"), dir.path("enc1.key"));
    let pasted = std::fs::read_to_string(&a.key).unwrap();
    let pasted_b64: String = pasted.lines().filter(|l| !l.starts_with("-----")).collect();
    let keys = [a.key.as_path(), b.key.as_path(), sec1.key.as_path(), broken.as_path(), &enc8, &enc1];

    let mismatch = "the private key does not match the certificate";
    let cases: Vec<(&str, Pair, &str)> = vec![
        ("mismatch", Pair { cert: a.cert.clone(), key: b.key.clone() }, mismatch),
        ("mismatch_ec", Pair { cert: a.cert.clone(), key: sec1.key.clone() }, mismatch),
        (
            "cert_as_key",
            Pair { cert: a.cert.clone(), key: a.cert.clone() },
            "no private key (PKCS#8, RSA or EC) found in",
        ),
        ("key_as_cert", Pair { cert: b.key.clone(), key: b.key.clone() }, "no certificate found in"),
        ("damaged", Pair { cert: b.cert.clone(), key: broken.clone() }, "unusable private key"),
        ("missing", Pair { cert: a.cert.clone(), key: dir.path("nope.key") }, "cannot read private key"),
        ("encrypted_pkcs8", Pair { cert: a.cert.clone(), key: enc8.clone() }, "is encrypted"),
        ("encrypted_legacy", Pair { cert: sec1.cert.clone(), key: enc1.clone() }, "is encrypted"),
        // The key itself pasted where its path belongs: as PEM, and as bare base64.
        ("pasted_pem", Pair { cert: a.cert.clone(), key: yaml_quoted(&pasted) }, "holds text, not a file path"),
        (
            "pasted_base64",
            Pair { cert: a.cert.clone(), key: PathBuf::from(&pasted_b64) },
            "holds text, not a file path",
        ),
    ];
    for (name, pair, message) in cases {
        let yaml = config(&tls_listener("main", &[&pair], "", ""), up_addr, "");
        assert_check_refuses(&dir, name, &yaml, message, &keys);
        let out = check(&dir.path(&format!("{name}.yaml")));
        assert!(out.stderr.contains("listener `main`"), "{name}: {}", out.all());
    }

    // Client CA and upstream client keys go through the same loaders.
    let client_auth =
        format!("      client_auth:\n        ca: {}\n        mode: required\n", path_str(&dir.path("no-ca.pem")));
    let yaml = config(&tls_listener("main", &[&a], &client_auth, ""), up_addr, "");
    assert_check_refuses(&dir, "client_ca_missing", &yaml, "cannot read certificates from", &keys);
    let upstream = |name: &str, cert: &Path, key: &Path| {
        let tls = format!(
            "      ca: {}\n      client_cert: {}\n      client_key: {}\n",
            ca.cert(),
            path_str(cert),
            path_str(key)
        );
        upstreams_config(&[tls_upstream_yaml(name, "127.0.0.1:9", &tls, false)])
    };
    assert_check_refuses(
        &dir,
        "up_mismatch",
        &upstream("up", &a.cert, &b.key),
        "upstream `up` tls: client certificate",
        &keys,
    );
    assert_check_refuses(
        &dir,
        "up_pasted",
        &upstream("up", &a.cert, &yaml_quoted(&pasted)),
        "holds text, not a file path",
        &keys,
    );
    assert_check_refuses(&dir, "up_encrypted", &upstream("up", &a.cert, &enc8), "is encrypted", &keys);

    // `run` refuses a bad key with EX_USAGE and does not leak either.
    let file = dir.write(
        "run.yaml",
        &config(
            &tls_listener("main", &[&Pair { cert: a.cert.clone(), key: yaml_quoted(&pasted) }], "", ""),
            up_addr,
            "",
        ),
    );
    let mut cmd = Command::new(bin());
    cmd.args(["run", "-c"]).arg(&file);
    let out = run_bounded(&mut cmd, Duration::from_secs(20));
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(out.stderr.contains("holds text, not a file path"), "{}", out.all());
    assert_no_key_material(&out.all(), &keys);
}

// ---------------------------------------------------------------------------------------------
// 6: client certificates

struct ClientCerts {
    valid: Pair,
    self_signed: Pair,
    other_ca: Pair,
    expired: Pair,
    server_only: Pair,
}

fn client_certs(dir: &Path, ca: &Ca) -> ClientCerts {
    let rogue = Ca::new(dir, "rogue");
    ClientCerts {
        valid: ca.client("alice", "alice"),
        self_signed: self_signed(dir, "mallory", "alice", "clientAuth"),
        other_ca: rogue.client("rogue-alice", "alice"),
        expired: ca.issue_days("expired", "alice", &[], KeyKind::EcPkcs8, "clientAuth", -1),
        server_only: ca.issue_days("serveronly", "alice", &["DNS:alice"], KeyKind::EcPkcs8, "serverAuth", 2),
    }
}

fn with_cert(p: &Pair) -> [String; 4] {
    ["--cert".into(), path_str(&p.cert), "--key".into(), path_str(&p.key)]
}

/// A gateway whose listener `main` asks for client certificates in `mode`.
fn client_auth_gateway(mode: &str) -> (Gateway, Upstream, Ca, ClientCerts) {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let server_ca = Ca::new(&dir.0, "server");
    let client_ca = Ca::new(&dir.0, "client");
    let a = server_ca.server("a", &["a.test"], KeyKind::EcPkcs8);
    let certs = client_certs(&dir.0, &client_ca);
    let tls = format!("      client_auth:\n        ca: {}\n        mode: {mode}\n", client_ca.cert());
    let gw = Gateway::start_in(dir, &config(&tls_listener("main", &[&a], &tls, ""), up.addr, ""));
    (gw, up, server_ca, certs)
}

fn curl_with(gw: &Gateway, ca: &Ca, cert: Option<&Pair>, tls_max: &str) -> Resp {
    let mut extra: Vec<String> = vec!["--tls-max".into(), tls_max.into()];
    if let Some(c) = cert {
        extra.extend(with_cert(c));
    }
    let extra = extra.iter().map(String::as_str).collect::<Vec<_>>();
    curl_name(&gw.addr("main"), "a.test", "/", ca, &extra)
}

#[test]
fn required_client_certificates() {
    let (gw, up, ca, certs) = client_auth_gateway("required");
    for tls_max in ["1.3", "1.2"] {
        let r = curl_with(&gw, &ca, Some(&certs.valid), tls_max);
        assert_eq!(r.status, 200, "TLS {tls_max}, valid certificate: {}", r.describe());
        let hits = up.hits();
        for (what, cert) in [
            ("no certificate", None),
            ("self-signed", Some(&certs.self_signed)),
            ("other CA", Some(&certs.other_ca)),
            ("expired", Some(&certs.expired)),
            ("server-only EKU", Some(&certs.server_only)),
        ] {
            let r = curl_with(&gw, &ca, cert, tls_max);
            assert_no_response(&r, &format!("TLS {tls_max}, {what}"));
        }
        assert_eq!(up.hits(), hits, "TLS {tls_max}: a refused client reached the upstream");
    }
    // The server asks for a certificate from the configured CA.
    let out = s_client(gw.addr("main"), &["-servername", "a.test", "-tls1_2"]);
    assert!(out.stdout.contains("Acceptable client certificate CA names"), "{}", out.all());
    assert!(out.stdout.contains("CN = client test CA"), "{}", out.all());
    assert_eq!(up.hits(), 2);
}

#[test]
fn optional_client_certificates() {
    let (gw, up, ca, certs) = client_auth_gateway("optional");
    for tls_max in ["1.3", "1.2"] {
        let r = curl_with(&gw, &ca, None, tls_max);
        assert_eq!(r.status, 200, "TLS {tls_max}, no certificate: {}", r.describe());
        let r = curl_with(&gw, &ca, Some(&certs.valid), tls_max);
        assert_eq!(r.status, 200, "TLS {tls_max}, valid certificate: {}", r.describe());
        let hits = up.hits();
        for (what, cert) in [
            ("self-signed", &certs.self_signed),
            ("other CA", &certs.other_ca),
            ("expired", &certs.expired),
            ("server-only EKU", &certs.server_only),
        ] {
            let r = curl_with(&gw, &ca, Some(cert), tls_max);
            assert_no_response(&r, &format!("TLS {tls_max}, {what}"));
        }
        assert_eq!(up.hits(), hits, "TLS {tls_max}: a client with a bad certificate reached the upstream");
    }
    assert_eq!(up.hits(), 4);
}

// ---------------------------------------------------------------------------------------------
// 7: HSTS

#[test]
fn hsts_on_tls_listeners_only() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let a = ca.server("a", &["a.test"], KeyKind::EcPkcs8);
    let listeners = tls_listener("tls", &[&a], "", "")
        + &tls_listener("nohsts", &[&a], "      hsts: false\n", "")
        + &tls_listener("short", &[&a], "      hsts_max_age: 1h\n", "")
        + &plain_listener("plain");
    // A second route to a closed port: error responses carry HSTS too.
    let extra = "  - name: dead\n    match:\n      path: { prefix: /dead }\n    upstream: dead\n    auth: none\n";
    let yaml = config(&listeners, up.addr, "")
        .replace("routes:\n", &format!("routes:\n{extra}"))
        .replace("routes:", "  dead:\n    targets:\n      - address: 127.0.0.1:9\n    retries: 0\nroutes:");
    let gw = Gateway::start_in(dir, &yaml);

    let hsts = |listener: &str, path: &str, extra: &[&str]| {
        let r = curl_name(&gw.addr(listener), "a.test", path, &ca, extra);
        assert_ne!(r.status, 0, "{listener}: {}", r.describe());
        (r.status, r.header_values("strict-transport-security"))
    };
    let year = vec!["max-age=31536000".to_owned()];
    assert_eq!(hsts("tls", "/", &[]), (200, year.clone()));
    assert_eq!(hsts("tls", "/", &["--http2"]), (200, year.clone()));
    assert_eq!(hsts("tls", "/dead/x", &[]), (502, year.clone()));
    assert_eq!(hsts("nohsts", "/", &[]), (200, vec![]));
    assert_eq!(hsts("short", "/", &[]), (200, vec!["max-age=3600".to_owned()]));

    let r = curl_tls(&[&format!("http://{}/", gw.addr("plain"))]);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header_values("strict-transport-security"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// 8: TLS to upstreams

/// An HTTPS upstream on loopback (rustls, HTTP/1.1), optionally requiring client certificates from
/// `client_ca`. Answers 200 `{"upstream":"tls","client_cert":BOOL}`.
struct TlsUpstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    client_cns: Arc<Mutex<Vec<bool>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsUpstream {
    fn start(server: &Pair, client_ca: Option<&Path>) -> TlsUpstream {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&server.cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = Arc::new(builder.with_single_cert(certs, key).unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(config);

        let (hits, failed, cns) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (h, f, c) = (hits.clone(), failed.clone(), cns.clone());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let stream = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    let (acceptor, h, f, c) = (acceptor.clone(), h.clone(), f.clone(), c.clone());
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => tls,
                            _ => {
                                f.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        };
                        let had_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                            h.fetch_add(1, Ordering::SeqCst);
                            c.lock().unwrap().push(had_cert);
                            let body = format!("{{\"upstream\":\"tls\",\"client_cert\":{had_cert}}}");
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        });
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                    });
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        TlsUpstream {
            addr,
            hits,
            failed_handshakes: failed,
            client_cns: cns,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An upstream section named `name` to `target` with `tls` lines (6 spaces), no retries and no
/// passive ejection (so every request tries the handshake again), and its catch-all route `/{name}`.
fn tls_upstream_yaml(name: &str, target: &str, tls: &str, retries: bool) -> (String, String) {
    let retries = if retries { "" } else { "    retries: 0\n" };
    let up = format!(
        "  {name}:\n    targets:\n      - address: {target}\n{retries}    passive: {{ consecutive_failures: 0 }}\n    tls:\n{tls}"
    );
    let route = format!(
        "  - name: {name}\n    match:\n      path: {{ prefix: /{name} }}\n    upstream: {name}\n    auth: none\n"
    );
    (up, route)
}

fn upstreams_config(sections: &[(String, String)]) -> String {
    let ups: String = sections.iter().map(|(u, _)| u.as_str()).collect();
    let routes: String = sections.iter().map(|(_, r)| r.as_str()).collect();
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n{ups}routes:\n{routes}logging:\n  level: portcullis=debug\n"
    )
}

fn assert_bad_gateway(r: &Resp, what: &str) {
    assert_eq!(r.status, 502, "{what}: {}", r.describe());
    assert_eq!(r.header_values("content-type"), vec!["application/problem+json".to_owned()], "{what}");
    assert!(r.body.contains("\"type\":\"urn:portcullis:problem:bad-gateway\""), "{what}: {}", r.body);
    assert!(r.body.contains("\"status\":502"), "{what}: {}", r.body);
}

/// The upstream's count of refused handshakes once it reaches `n` (or after a generous deadline). The
/// upstream counts its side of a refused handshake on its own thread, possibly after the gateway has
/// answered: poll, never assume it has run.
fn failed_handshakes_reach(up: &TlsUpstream, n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while up.failed_handshakes.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    up.failed_handshakes.load(Ordering::SeqCst)
}

#[test]
fn upstream_tls_pins_the_configured_ca_and_checks_the_name() {
    let dir = TempDir::new();
    let up_ca = Ca::new(&dir.0, "upstream");
    let other_ca = Ca::new(&dir.0, "other");
    let server = up_ca.issue_days(
        "up",
        "upstream.test",
        &["DNS:upstream.test", "DNS:localhost", "IP:127.0.0.1"],
        KeyKind::EcSec1,
        "serverAuth",
        2,
    );
    let up = TlsUpstream::start(&server, None);
    let target = up.addr.to_string();
    let ca = format!("      ca: {}\n", up_ca.cert());
    let sections = vec![
        tls_upstream_yaml("pinned", &target, &format!("{ca}      server_name: upstream.test\n"), false),
        // No server_name: the target's IP is checked against the certificate's IP SAN.
        tls_upstream_yaml("byip", &target, &ca, false),
        // No server_name: the target's host name.
        tls_upstream_yaml("byhost", &format!("localhost:{}", up.addr.port()), &ca, false),
        tls_upstream_yaml(
            "wrongca",
            &target,
            &format!("      ca: {}\n      server_name: upstream.test\n", other_ca.cert()),
            false,
        ),
        tls_upstream_yaml("wrongname", &target, &format!("{ca}      server_name: other.test\n"), false),
    ];
    let gw = Gateway::start_in(dir, &upstreams_config(&sections));
    let base = format!("http://{}", gw.addr("main"));

    for path in ["/pinned/x", "/byip/x", "/byhost/x"] {
        let r = curl_tls(&[&format!("{base}{path}")]);
        assert_eq!(r.status, 200, "{path}: {}", r.describe());
        assert_eq!(r.body, "{\"upstream\":\"tls\",\"client_cert\":false}", "{path}");
    }
    assert_eq!(up.hits(), 3);
    for path in ["/wrongca/x", "/wrongname/x"] {
        let failed = up.failed_handshakes.load(Ordering::SeqCst);
        let r = curl_tls(&[&format!("{base}{path}")]);
        assert_bad_gateway(&r, path);
        assert_eq!(failed_handshakes_reach(&up, failed + 1), failed + 1, "{path}: one refused handshake");
    }
    assert_eq!(up.hits(), 3, "nothing was sent over an unverified connection");
    assert!(gw.wait_log("upstream TLS handshake failed", Duration::from_secs(5)));
}

/// With the default `retries: 1`, a single target whose handshake fails is excluded for the retry,
/// no target is left, and the client gets 503 no-healthy-upstream instead of the 502 the failure is.
#[test]
fn upstream_tls_failure_with_retries_is_bad_gateway() {
    let dir = TempDir::new();
    let up_ca = Ca::new(&dir.0, "upstream");
    let other_ca = Ca::new(&dir.0, "other");
    let server = up_ca.server("up", &["upstream.test"], KeyKind::EcPkcs8);
    let up = TlsUpstream::start(&server, None);
    let tls = format!("      ca: {}\n      server_name: upstream.test\n", other_ca.cert());
    let gw =
        Gateway::start_in(dir, &upstreams_config(&[tls_upstream_yaml("wrongca", &up.addr.to_string(), &tls, true)]));
    let r = curl_tls(&[&format!("http://{}/wrongca/x", gw.addr("main"))]);
    assert_bad_gateway(&r, "wrong CA with retries");
}

#[test]
fn upstream_mutual_tls() {
    let dir = TempDir::new();
    let up_ca = Ca::new(&dir.0, "upstream");
    let gw_client_ca = Ca::new(&dir.0, "gwclient");
    let rogue_ca = Ca::new(&dir.0, "rogue");
    let server = up_ca.server("up", &["upstream.test"], KeyKind::RsaPkcs1);
    let up = TlsUpstream::start(&server, Some(&gw_client_ca.pair.cert));
    // The gateway's client key in SEC1 (Ca::client), the rogue's in PKCS#8.
    let good = gw_client_ca.client("gateway", "gateway");
    let rogue = rogue_ca.issue_days("rogue-gateway", "gateway", &[], KeyKind::EcPkcs8, "clientAuth", 2);
    let target = up.addr.to_string();
    let base_tls = format!("      ca: {}\n      server_name: upstream.test\n", up_ca.cert());
    let with = |p: &Pair| {
        format!("{base_tls}      client_cert: {}\n      client_key: {}\n", path_str(&p.cert), path_str(&p.key))
    };
    let sections = vec![
        tls_upstream_yaml("mtls", &target, &with(&good), false),
        tls_upstream_yaml("nocert", &target, &base_tls, false),
        tls_upstream_yaml("roguecert", &target, &with(&rogue), false),
    ];
    let gw = Gateway::start_in(dir, &upstreams_config(&sections));
    let base = format!("http://{}", gw.addr("main"));

    for _ in 0..2 {
        let r = curl_tls(&[&format!("{base}/mtls/x")]);
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.body, "{\"upstream\":\"tls\",\"client_cert\":true}");
    }
    for path in ["/nocert/x", "/roguecert/x"] {
        let failed = up.failed_handshakes.load(Ordering::SeqCst);
        let r = curl_tls(&[&format!("{base}{path}")]);
        assert_bad_gateway(&r, path);
        assert_eq!(failed_handshakes_reach(&up, failed + 1), failed + 1, "{path}");
    }
    assert_eq!(up.hits(), 2);
    assert_eq!(*up.client_cns.lock().unwrap(), vec![true, true]);
}

// ---------------------------------------------------------------------------------------------
// 9: handshake garbage

/// Sends `bytes` on a new connection, then reads until the server closes or `timeout`.
/// Returns what was read, and how long until the close (`None`: still open at the deadline).
fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool, timeout: Duration) -> (Vec<u8>, Option<Duration>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < timeout {
        s.set_read_timeout(Some((timeout - started.elapsed()).max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, Some(started.elapsed())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, Some(started.elapsed())),
            Err(_) => break,
        }
    }
    (out, None)
}

/// A real ClientHello record from a rustls client.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("a.test").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a handshake record");
    out
}

/// A fatal TLS alert record and nothing else.
fn assert_fatal_alert(bytes: &[u8], what: &str) {
    assert_eq!(bytes.len(), 7, "{what}: {bytes:02x?}");
    assert_eq!((bytes[0], bytes[5]), (0x15, 2), "{what}: not a fatal alert: {bytes:02x?}");
}

#[test]
fn handshake_garbage_does_not_hurt_the_gateway() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let a = ca.server("a", &["a.test"], KeyKind::EcPkcs8);
    let extra = "limits:\n  header_read_timeout: 1s\n  max_connections_per_ip: 8\n";
    let gw = Gateway::start_in(dir, &config(&tls_listener("main", &[&a], "", ""), up.addr, extra));
    let addr = gw.addr("main");
    let ok = |what: &str| {
        let r = curl_name(&addr, "a.test", "/", &ca, &[]);
        assert_eq!(r.status, 200, "after {what}: {}", r.describe());
    };
    // Long enough for a loaded machine; the idle timeout (60s) is far longer, so a connection that is
    // closed within it was closed by the handshake or header timeout.
    let wait = Duration::from_secs(15);

    // Plain HTTP on the TLS port: one fatal alert, then the connection is closed; no HTTP answer.
    let (got, closed) = exchange(addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", false, wait);
    assert_fatal_alert(&got, "plain HTTP");
    assert!(closed.is_some(), "plain HTTP: the connection stays open");
    ok("plain HTTP");

    // An SSLv2-style hello, an oversized record, and random bytes.
    let sslv2 = [0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00, 0x80];
    let oversized = [0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0x00];
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (what, bytes) in
        [("SSLv2 hello", &sslv2[..]), ("oversized record", &oversized[..]), ("random bytes", &random[..])]
    {
        let (got, closed) = exchange(addr, bytes, false, wait);
        assert!(closed.is_some(), "{what}: the connection stays open");
        assert!(!got.starts_with(b"HTTP/"), "{what}");
        if !got.is_empty() {
            assert_fatal_alert(&got, what);
        }
        ok(what);
    }

    // A truncated ClientHello held open: others are served meanwhile, and the handshake times out
    // after header_read_timeout (1s) without an answer.
    let hello = client_hello();
    let half = &hello[..hello.len() / 2];
    let pending = std::thread::scope(|s| {
        let held = s.spawn(|| exchange(addr, half, false, wait));
        std::thread::sleep(Duration::from_millis(200));
        ok("a pending truncated ClientHello");
        held.join().unwrap()
    });
    assert_eq!(pending.0, Vec::<u8>::new(), "an answer to half a ClientHello");
    let closed = pending.1.expect("a truncated handshake was never closed");
    // Closed by the timeout, not before it; how late on a loaded machine is not the point (`wait`
    // bounds it, and without the timeout the connection would stay open far longer).
    assert!(closed >= Duration::from_millis(900), "closed after {closed:?}");

    // A truncated ClientHello and then EOF; a silent connection.
    let (got, closed) = exchange(addr, half, true, wait);
    assert!(closed.is_some() && !got.starts_with(b"HTTP/"), "truncated + EOF: {got:02x?}");
    let (got, closed) = exchange(addr, b"", false, wait);
    assert_eq!(got, Vec::<u8>::new());
    closed.expect("a silent connection was never closed");

    // Many failed handshakes give back their connection slots (the per-IP limit is 8).
    for i in 0..30 {
        let bytes: &[u8] = if i % 2 == 0 { b"\x16\x03\x01\x00\x05hello" } else { b"GET / HTTP/1.0\r\n\r\n" };
        let (_, closed) = exchange(addr, bytes, false, wait);
        assert!(closed.is_some(), "garbage connection {i} stays open");
    }
    ok("30 failed handshakes");

    assert!(gw.wait_log("TLS handshake failed", wait), "no handshake failure logged");
    assert!(gw.wait_log("TLS handshake timed out", wait), "no handshake timeout logged");
    assert_eq!(up.hits(), 6);
}

// ---------------------------------------------------------------------------------------------
// Chains, generated certificates, rotation

#[test]
fn chains_through_an_intermediate_ca() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let root = Ca::new(&dir.0, "root");
    let inter = root.intermediate("inter");
    let leaf = inter.server("a", &["a.test"], KeyKind::EcPkcs8);
    let server = inter.chain(&leaf, "a-chain.pem");
    let client_leaf = inter.client("alice", "alice");
    let client = inter.chain(&client_leaf, "alice-chain.pem");
    // Client certificates are checked against the root only; the client sends the intermediate.
    let tls = format!("      client_auth:\n        ca: {}\n        mode: required\n", root.cert());
    let gw = Gateway::start_in(dir, &config(&tls_listener("main", &[&server], &tls, ""), up.addr, ""));
    let addr = gw.addr("main");

    // The server sends leaf and intermediate: a client trusting only the root verifies it.
    let r = curl_name(&addr, "a.test", "/", &root, &with_cert(&client).each_ref().map(String::as_str));
    assert_eq!(r.status, 200, "{}", r.describe());
    let chain = path_str(&client.cert);
    let out = s_client(
        addr,
        &[
            "-servername",
            "a.test",
            "-showcerts",
            "-cert",
            &chain,
            "-cert_chain",
            &chain,
            "-key",
            &path_str(&client.key),
        ],
    );
    assert!(negotiated(&out).is_some(), "{}", out.all());
    assert!(out.stdout.contains(" 0 s:CN = a.test") && out.stdout.contains(" 1 s:CN = inter test CA"), "{}", out.all());
    // A client that sends its leaf without the intermediate cannot be verified.
    let r = curl_name(&addr, "a.test", "/", &root, &with_cert(&client_leaf).each_ref().map(String::as_str));
    assert_no_response(&r, "client leaf without its intermediate");
    assert_eq!(up.hits(), 1);
}

#[test]
fn self_signed_listener_serves_its_names() {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let listener = "  - name: main\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - self_signed: [gw.test, 127.0.0.1]\n";
    let gw = Gateway::start_in(dir, &config(listener, up.addr, ""));
    let addr = gw.addr("main");
    let out = s_client(addr, &["-servername", "gw.test"]);
    assert!(negotiated(&out).is_some(), "{}", out.all());
    // Save the served certificate and trust exactly it: curl then checks the names for real.
    let begin = out.stdout.find("-----BEGIN CERTIFICATE-----").expect("no certificate shown");
    let end = out.stdout.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let served = gw.dir.write("served.pem", &format!("{}\n", &out.stdout[begin..end]));
    let sans = openssl(&gw.dir.0, &["x509", "-in", &path_str(&served), "-noout", "-ext", "subjectAltName"]);
    assert!(sans.stdout.contains("DNS:gw.test") && sans.stdout.contains("IP Address:127.0.0.1"), "{}", sans.all());
    let served = path_str(&served);
    let by_name = format!("https://gw.test:{}/", addr.port());
    let resolve = format!("gw.test:{}:127.0.0.1", addr.port());
    let r = curl_tls(&["--cacert", &served, "--resolve", &resolve, &by_name]);
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = curl_tls(&["--cacert", &served, &format!("https://127.0.0.1:{}/", addr.port())]);
    assert_eq!(r.status, 200, "{}", r.describe());
    let other = format!("https://other.test:{}/", addr.port());
    let resolve = format!("other.test:{}:127.0.0.1", addr.port());
    let r = curl_tls(&["--cacert", &served, "--resolve", &resolve, &other]);
    assert_eq!(r.exit, Some(60), "a name the certificate does not cover: {}", r.describe());
}

/// How many log lines contain `needle`.
fn log_count(gw: &Gateway, needle: &str) -> usize {
    gw.logs().iter().filter(|l| l.contains(needle)).count()
}

fn wait_log_count(gw: &Gateway, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if log_count(gw, needle) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Replaces `to` with `from` atomically (write beside, rename over), as certificate tools do.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A gateway serving `live.pem` / `live.key`, with certificates `old` and `new` for rot.test (CNs
/// old.rot.test and new.rot.test) and a key that fits neither.
fn rotation_gateway() -> (Gateway, Upstream, Pair, Pair, PathBuf, Pair) {
    let up = Upstream::start("a");
    let dir = TempDir::new();
    let ca = Ca::new(&dir.0, "main");
    let old = ca.issue_days("old", "old.rot.test", &["DNS:rot.test"], KeyKind::EcPkcs8, "serverAuth", 2);
    let new = ca.issue_days("new", "new.rot.test", &["DNS:rot.test"], KeyKind::RsaPkcs1, "serverAuth", 2);
    let stray = gen_key(&dir.0, "stray.key", KeyKind::EcPkcs8);
    let live = Pair { cert: dir.path("live.pem"), key: dir.path("live.key") };
    std::fs::copy(&old.cert, &live.cert).unwrap();
    std::fs::copy(&old.key, &live.key).unwrap();
    let gw = Gateway::start_in(dir, &config(&tls_listener("main", &[&live], "", ""), up.addr, ""));
    (gw, up, old, new, stray, live)
}

fn subject_of(gw: &Gateway) -> String {
    let out = s_client(gw.addr("main"), &["-servername", "rot.test"]);
    assert!(negotiated(&out).is_some(), "{}", out.all());
    served_subject(&out)
}

#[test]
fn certificates_rotate_on_reload() {
    let (gw, _up, _old, new, stray, live) = rotation_gateway();
    assert_eq!(subject_of(&gw), "CN = old.rot.test");

    // New files, and a config change (a comment) with SIGHUP, as a deploy would do.
    replace_file(&new.cert, &live.cert);
    replace_file(&new.key, &live.key);
    std::fs::write(&gw.config, std::fs::read_to_string(&gw.config).unwrap() + "# rotated\n").unwrap();
    gw.signal("HUP");
    assert!(wait_log_count(&gw, "configuration reloaded", 1, Duration::from_secs(10)), "{}", gw.logs().join("\n"));
    assert_eq!(subject_of(&gw), "CN = new.rot.test");

    // A key that does not fit: the reload is refused, the loaded certificate keeps serving, and the
    // refusal does not log the key.
    replace_file(&stray, &live.key);
    std::fs::write(&gw.config, std::fs::read_to_string(&gw.config).unwrap() + "# broken\n").unwrap();
    gw.signal("HUP");
    assert!(
        wait_log_count(&gw, "configuration reload refused", 1, Duration::from_secs(10)),
        "{}",
        gw.logs().join("\n")
    );
    assert!(gw.logs().iter().any(|l| l.contains("the private key does not match the certificate")));
    assert_eq!(subject_of(&gw), "CN = new.rot.test");
    assert_no_key_material(&gw.logs().join("\n"), &[&stray, &new.key]);
}

/// `certbot renew --deploy-hook 'kill -HUP ...'` and the like replace only the certificate files and
/// send SIGHUP; the config file is unchanged.
#[test]
fn sighup_alone_reloads_rotated_certificates() {
    let (gw, _up, _old, new, _stray, live) = rotation_gateway();
    assert_eq!(subject_of(&gw), "CN = old.rot.test");
    replace_file(&new.cert, &live.cert);
    replace_file(&new.key, &live.key);
    gw.signal("HUP");
    assert!(wait_log_count(&gw, "SIGHUP received", 1, Duration::from_secs(5)));
    assert!(
        wait_log_count(&gw, "configuration reloaded", 1, Duration::from_secs(5)),
        "SIGHUP did not reload:\n{}",
        gw.logs().join("\n")
    );
    assert_eq!(subject_of(&gw), "CN = new.rot.test");
}
