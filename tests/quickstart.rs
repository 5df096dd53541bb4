//! The quickstart config (examples/quickstart.yaml, also built into `portcullis quickstart`) works as
//! documented: run here on free ports instead of its fixed ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;

const DEMO_KEY: &str = "pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn quickstart_config_serves_what_the_readme_shows() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")).unwrap();
    let echo = free_port();
    let yaml = text
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:9080", &format!("127.0.0.1:{echo}"));
    let gw = Gateway::start(&yaml);
    let https = gw.addr("https");
    let (code, headers, body) = curl(&["-k", &format!("https://{https}/echo/hello")]);
    assert_eq!(code, 200, "{headers}{body}");
    assert!(body.contains("portcullis-demo-echo"), "{body}");
    assert!(headers.to_ascii_lowercase().contains("strict-transport-security"));

    let (code, _, _) = curl(&["-k", "--http2", &format!("https://{https}/users/42")]);
    assert_eq!(code, 200);

    let (code, headers, body) = curl(&["-k", &format!("https://{https}/private/data")]);
    assert_eq!(code, 401, "{body}");
    assert!(headers.to_ascii_lowercase().contains("www-authenticate: apikey"), "{headers}");
    let (code, _, body) =
        curl(&["-k", "-H", &format!("X-API-Key: {DEMO_KEY}"), &format!("https://{https}/private/data")]);
    assert_eq!(code, 200, "{body}");

    let (code, _, body) = curl(&["-k", &format!("https://{https}/nowhere")]);
    assert_eq!(code, 404);
    assert!(body.contains("urn:portcullis:problem:not-found"));

    let (code, headers, _) = curl(&[&format!("http://{}/echo/hello?x=1", gw.addr("http"))]);
    assert_eq!(code, 308);
    assert!(headers.contains("location: https://127.0.0.1:8443/echo/hello?x=1"), "{headers}");

    let (code, _, metrics) = curl(&[&format!("http://{}/metrics", gw.addr("admin"))]);
    assert_eq!(code, 200);
    assert!(metrics.contains("portcullis_requests_total{route=\"public-echo\",status=\"2xx\"} 1"), "{metrics}");
}

#[test]
fn quickstart_config_passes_check() {
    let out = std::process::Command::new(bin())
        .args(["check", "-c", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("private-echo") && table.contains("demo-keys"), "{table}");
}
