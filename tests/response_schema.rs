//! Response schema filtering (place 14) through the real binary: on a route validated against an
//! OpenAPI document, the properties an answer's schema does not declare never reach the client
//! (excessive data exposure, OWASP API3), nested ones and array items included; an undescribed status
//! and `filter_responses: false` leave the answer alone; filtering runs before masking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// An upstream that answers every request with the same JSON document, over-sharing: a password
/// hash, an internal note, a nested secret, extra fields in array items. `/missing` answers 404 with
/// the same body; `/chunked` sends it in two chunks.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(T)).unwrap();
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        let body = r#"{"id":"7","name":"Ada","password_hash":"$2b$12$abcdefghijklmnopqrstuv","internal_note":"vip","card":"4111 1111 1111 1111","address":{"city":"Dublin","geo_secret":"53.3,-6.2"},"orders":[{"id":1,"total":9.5,"margin":0.4},{"id":2,"total":3,"margin":0.1}]}"#;
                        let status = if target.ends_with("/missing") { "404 Not Found" } else { "200 OK" };
                        let out = if target.ends_with("/chunked") {
                            let (a, z) = body.split_at(40);
                            format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{z}\r\n0\r\n\r\n",
                                a.len(),
                                z.len()
                            )
                        } else {
                            format!(
                                "HTTP/1.1 {status}\r\ncontent-type: Application/JSON; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        };
                        if s.write_all(out.as_bytes()).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
            });
        }
    });
    addr
}

const DOC: &str = r##"openapi: 3.0.3
info: { title: users, version: "1" }
paths:
  /users/{id}:
    get:
      parameters:
        - { name: id, in: path, required: true, schema: { type: string } }
      responses:
        "200":
          description: a user
          content:
            application/json:
              schema: { $ref: "#/components/schemas/User" }
  /users/{id}/missing:
    get:
      parameters:
        - { name: id, in: path, required: true, schema: { type: string } }
      responses:
        "200":
          description: a user
          content:
            application/json:
              schema: { $ref: "#/components/schemas/User" }
  /users/{id}/chunked:
    get:
      parameters:
        - { name: id, in: path, required: true, schema: { type: string } }
      responses:
        "2XX":
          description: a user
          content:
            application/json:
              schema: { $ref: "#/components/schemas/User" }
components:
  schemas:
    User:
      type: object
      properties:
        id: { type: string }
        name: { type: string }
        card: { type: string }
        address:
          type: object
          properties:
            city: { type: string }
        orders:
          type: array
          items:
            type: object
            properties:
              id: { type: integer }
              total: { type: number }
"##;

fn gateway(up: SocketAddr, filter: bool, mask: bool) -> Gateway {
    let inline: String = DOC.lines().map(|l| format!("      {l}\n")).collect();
    let respond = if mask { "    respond: { json: true, mask: { cards: true } }\n" } else { "" };
    Gateway::start(&format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {up}
openapi:
  users:
    filter_responses: {filter}
    inline: |
{inline}routes:
  - name: users
    match: {{ path: {{ prefix: /users }} }}
    upstream: app
    auth: none
    validate: {{ openapi: users }}
{respond}logging:
  level: info
"#
    ))
}

fn get(gw: &Gateway, path: &str) -> (u16, String, serde_json::Value) {
    let url = format!("http://{}{path}", gw.addr("main"));
    let (code, headers, body) = curl(&[&url]);
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (code, headers.to_ascii_lowercase(), json)
}

#[test]
fn undeclared_properties_never_reach_the_client() {
    let up = upstream();
    let gw = gateway(up, true, false);
    for path in ["/users/7", "/USERS/7/", "/users/7/chunked"] {
        let (code, headers, body) = get(&gw, path);
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(
            body,
            serde_json::json!({"id":"7","name":"Ada","card":"4111 1111 1111 1111","address":{"city":"Dublin"},
                               "orders":[{"id":1,"total":9.5},{"id":2,"total":3}]}),
            "{path}"
        );
        // The length is that of what is sent, not of what the upstream wrote.
        let len: usize = header_of(&headers, "content-length").unwrap().trim().parse().unwrap();
        assert_eq!(len, serde_json::to_vec(&body).unwrap().len(), "{path}");
    }
    assert!(gw.wait_log("response_filtered", T), "the removal is logged");
    // A status the document does not describe (and no `default`) is left as the upstream sent it.
    let (code, _, body) = get(&gw, "/users/7/missing");
    assert_eq!(code, 404);
    assert!(body.get("password_hash").is_some(), "{body}");
}

#[test]
fn filter_responses_false_leaves_answers_alone() {
    let up = upstream();
    let gw = gateway(up, false, false);
    let (code, _, body) = get(&gw, "/users/7");
    assert_eq!(code, 200);
    assert!(body.get("password_hash").is_some() && body["orders"][0].get("margin").is_some(), "{body}");
}

#[test]
fn filtering_runs_before_masking() {
    let up = upstream();
    let gw = gateway(up, true, true);
    let (code, _, body) = get(&gw, "/users/7");
    assert_eq!(code, 200);
    assert!(body.get("password_hash").is_none() && body["address"].get("geo_secret").is_none(), "{body}");
    let card = body["card"].as_str().unwrap();
    assert!(card.ends_with("1111") && !card.contains("4111 1111"), "masked after filtering: {card}");
}
