#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;

#[test]
fn proxies_a_request_and_cleans_headers() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&basic_config(up.addr, ""));
    let url = format!("http://{}/hello?x=1", gw.addr("main"));
    let (code, headers, body) =
        curl(&[&url, "-H", "X-Forwarded-For: 6.6.6.6", "-H", "Connection: x-drop", "-H", "x-drop: 1"]);
    assert_eq!(code, 200, "{headers}{body}");
    assert!(body.contains("\"upstream\":\"a\""));
    let seen = up.last().unwrap();
    assert_eq!(seen.path_and_query, "/hello?x=1");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(seen.header("x-drop").is_none());
    assert!(seen.header("x-request-id").is_some());
    let lower = headers.to_ascii_lowercase();
    assert!(!lower.contains("server:"), "{headers}");
    assert!(!lower.contains("x-powered-by"), "{headers}");
    assert!(lower.contains("x-request-id:"));
}
