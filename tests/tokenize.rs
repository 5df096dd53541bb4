//! Field tokenization through the real gateway: what the upstream receives (never the card number,
//! national id or IBAN), deterministic tokens (across requests and a restart), format-preserving tokens
//! (same length, digits, Luhn-valid, the mark), detokenization of answers for one role and not another,
//! data-loss masking beside it, and hostile bodies refused with nothing reaching the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[allow(unreachable_pub)]
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "tokenize-test-api-key-secret-0123456789abcdef";
const KEY: &str = "tokenization-test-master-key-0123456789abcdef";
const CARD: &str = "4111111111111111";
const SSN: &str = "123-45-6789";
const IBAN: &str = "GB82WEST12345698765432";

/// One request the echo upstream received.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: String,
    body: String,
}

/// An upstream that keeps what it is sent: a POST or PUT is stored and echoed back; `GET .../stored`
/// answers the last stored body; `GET .../leak` answers a record holding originals (an upstream that
/// leaks); `GET .../leak-nested` holds them in an array and an object at the fields' pointers.
struct Echo {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stored = Arc::new(Mutex::new(String::from("{}")));
        let got2 = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let got = got2.clone();
                let stored = stored.clone();
                std::thread::spawn(move || serve(stream, &got, &stored));
            }
        });
        Echo { addr, got }
    }

    fn hits(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn last(&self) -> Got {
        self.got.lock().unwrap().last().cloned().unwrap()
    }
}

fn serve(stream: std::net::TcpStream, got: &Mutex<Vec<Got>>, stored: &Mutex<String>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("/").to_owned();
        let mut headers = String::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
            headers.push_str(&h.to_ascii_lowercase());
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        got.lock().unwrap().push(Got { path: path.clone(), headers, body: body.clone() });
        let answer = if method == "POST" || method == "PUT" {
            if !body.starts_with('{') {
                // A form: stored as it came, answered with an empty object.
                "{}".to_owned()
            } else {
                *stored.lock().unwrap() = body.clone();
                body
            }
        } else if path.ends_with("/leak-nested") {
            format!(r#"{{"card":{{"number":["{CARD}"]}},"ssn":{{"value":"{SSN}","pan":"{CARD}"}}}}"#)
        } else if path.ends_with("/leak") {
            format!(r#"{{"card":{{"number":"{CARD}"}},"ssn":"{SSN}","note":"paid with {CARD}"}}"#)
        } else {
            stored.lock().unwrap().clone()
        };
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", answer.len());
        if out.write_all(head.as_bytes()).and_then(|()| out.write_all(answer.as_bytes())).is_err() {
            return;
        }
    }
}

/// A real API key and its keyed hash (hex).
fn key() -> (String, String, String) {
    let (id, key) = portcullis::authn::api_key::generate().unwrap();
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&k, key.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (id, key, hex)
}

struct Setup {
    echo: Echo,
    gw: Gateway,
    keys: std::collections::HashMap<&'static str, String>,
    yaml: String,
}

/// The format-preserving fields' mark, `59`, lies where data-loss masking looks for cards (2 to 6): the
/// tests prove masking leaves tokens alone because they are tokens, not because they do not look like
/// cards.
fn config(
    echo: std::net::SocketAddr,
    state: &std::path::Path,
) -> (String, std::collections::HashMap<&'static str, String>) {
    let mut keys = std::collections::HashMap::new();
    let mut entries = String::new();
    for (who, roles) in [("clerk", "[support]"), ("auditor", "[payments]"), ("boss", "[manager]")] {
        let (id, key, hash) = key();
        entries.push_str(&format!(
            "        - id: {id}\n          hash: {hash}\n          principal: {who}\n          roles: {roles}\n"
        ));
        keys.insert(who, key);
    }
    let yaml = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  app:
    targets:
      - address: {echo}
store:
  sqlite: {state}
tokenization:
  key: {KEY}
authenticators:
  keys:
    api_key:
      hmac_secret: {SECRET}
      keys:
{entries}roles:
  support: {{}}
  payments: {{}}
  manager: {{ includes: [payments] }}
routes:
  - name: pay
    match:
      path: {{ prefix: /pay }}
    upstream: app
    auth: keys
    authorize: authenticated
    max_body_bytes: 64KiB
    respond: {{ json: true, mask: {{ cards: true }} }}
    tokenize:
      - {{ pointer: /card/number, name: /card/number, mode: format_preserving, mark: "59", detokenize_roles: [payments] }}
      - {{ pointer: /ssn, name: /ssn, mode: tokenize, detokenize_roles: [payments], mask: "***-**-****" }}
      - {{ pointer: /items/*/iban, mode: encrypt, detokenize_roles: [payments] }}
      - {{ form: card_number, name: /card/number, mode: format_preserving, mark: "59" }}
      - {{ form: ssn, name: /ssn, mode: tokenize }}
logging:
  level: info
"#,
        state = path_str(state)
    );
    (yaml, keys)
}

fn setup(state: &TempDir) -> Setup {
    let echo = Echo::start();
    let (yaml, keys) = config(echo.addr, &state.path("state.db"));
    let gw = Gateway::start(&yaml);
    Setup { echo, gw, keys, yaml }
}

fn send(s: &Setup, who: &str, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let url = format!("http://{}{path}", s.gw.addr("main"));
    let key = format!("X-API-Key: {}", s.keys[who]);
    let mut args: Vec<&str> = vec!["-X", method, "-H", &key];
    for h in headers {
        args.extend(["-H", h]);
    }
    if !body.is_empty() {
        args.extend(["--data-binary", body]);
    }
    args.push(&url);
    let (code, _, body) = curl(&args);
    (code, body)
}

const JSON: &str = "Content-Type: application/json";
const FORM: &str = "Content-Type: application/x-www-form-urlencoded";

fn post_json(s: &Setup, who: &str, body: &str) -> (u16, String) {
    send(s, who, "POST", "/pay", &[JSON], body)
}

fn record() -> String {
    format!(
        r#"{{"card":{{"number":"{CARD}","exp":"12/30"}},"ssn":"{SSN}","items":[{{"iban":"{IBAN}"}},{{"iban":"{IBAN}"}}],"amount":10}}"#
    )
}

fn luhn(d: &str) -> bool {
    let sum: u32 = d
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let v = u32::from(b - b'0');
            if i % 2 == 1 {
                if v * 2 > 9 {
                    v * 2 - 9
                } else {
                    v * 2
                }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The upstream never sees the originals; each field carries its kind of token; the body's length is
/// what the upstream was told.
#[test]
fn the_upstream_never_sees_the_originals() {
    let state = TempDir::new();
    let s = setup(&state);
    let (code, _) = post_json(&s, "clerk", &record());
    assert_eq!(code, 200);
    let got = s.echo.last();
    for secret in [CARD, SSN, IBAN] {
        assert!(!got.body.contains(secret), "{secret} reached the upstream: {}", got.body);
    }
    assert!(got.headers.contains(&format!("content-length: {}\r\n", got.body.len())), "{}", got.headers);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    let card = v["card"]["number"].as_str().unwrap();
    assert_eq!(card.len(), 16);
    assert!(card.bytes().all(|b| b.is_ascii_digit()), "{card}");
    assert!(card.starts_with("59") && card.ends_with("1111") && luhn(card), "{card}");
    assert_ne!(card, CARD);
    assert_eq!(v["card"]["exp"], "12/30");
    assert_eq!(v["amount"], 10);
    assert!(v["ssn"].as_str().unwrap().starts_with("tok_"));
    let (a, b) = (v["items"][0]["iban"].as_str().unwrap(), v["items"][1]["iban"].as_str().unwrap());
    assert!(a.starts_with("enc_") && b.starts_with("enc_") && a != b, "encryption is randomised: {a} {b}");
    // A form: the same card gets the same token as in JSON (the fields share their name).
    let (code, _) =
        send(&s, "clerk", "POST", "/pay/form", &[FORM], &format!("amount=10&card_number={CARD}&ssn=123-45-6789"));
    assert_eq!(code, 200);
    let form = s.echo.last().body;
    assert!(!form.contains(CARD) && !form.contains(SSN), "{form}");
    assert!(form.contains(&format!("card_number={card}&")), "{form} vs {card}");
    assert!(form.contains(&format!("ssn={}", v["ssn"].as_str().unwrap())), "{form}");
}

/// Same card, same token: across requests, and across a restart (the vault is in the store).
#[test]
fn tokens_are_deterministic_across_requests_and_a_restart() {
    let state = TempDir::new();
    let mut s = setup(&state);
    post_json(&s, "clerk", &record());
    let first: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    post_json(&s, "clerk", &record());
    let second: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    assert_eq!(first["card"], second["card"]);
    assert_eq!(first["ssn"], second["ssn"]);
    // Another card with the same last four: another token.
    let (code, _) = post_json(&s, "clerk", r#"{"card":{"number":"4000000000061111"}}"#);
    assert_eq!(code, 200);
    let other: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    assert_ne!(other["card"]["number"], first["card"]["number"]);
    // The vault rows are written off the request path: wait for them, then restart.
    let db = state.path("state.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM token_vault", [], |r| r.get(0)).unwrap_or(0);
        if n >= 2 {
            // The file holds sealed originals only.
            let raw = std::fs::read(&db).unwrap();
            assert!(!raw.windows(CARD.len()).any(|w| w == CARD.as_bytes()), "the card is in the store in clear");
            break;
        }
        assert!(Instant::now() < deadline, "vault rows never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.gw.terminate(Duration::from_secs(10));
    let gw = Gateway::start(&s.yaml);
    s.gw = gw;
    post_json(&s, "clerk", &record());
    let after: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    assert_eq!(after["card"], first["card"]);
    assert_eq!(after["ssn"], first["ssn"]);
    // And the new process can still turn the stored token back for the role allowed to see it.
    let (code, body) = send(&s, "auditor", "GET", "/pay/stored", &[], "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], CARD, "{body}");
}

/// Answers: originals for a principal holding `payments` (or a role including it), tokens (or the
/// mask) for the others; data-loss masking leaves tokens and detokenized fields alone and still masks
/// a card elsewhere in the answer.
#[test]
fn answers_are_detokenized_for_the_allowed_role_only() {
    let state = TempDir::new();
    let s = setup(&state);
    post_json(&s, "clerk", &record());
    let stored: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    let token = stored["card"]["number"].as_str().unwrap().to_owned();

    for who in ["auditor", "boss"] {
        let (code, body) = send(&s, who, "GET", "/pay/stored", &[], "");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["card"]["number"], CARD, "{who}: {body}");
        assert_eq!(v["ssn"], SSN, "{who}");
        assert_eq!(v["items"][0]["iban"], IBAN, "{who}");
        assert_eq!(v["items"][1]["iban"], IBAN, "{who}");
    }
    let (code, body) = send(&s, "clerk", "GET", "/pay/stored", &[], "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], token.as_str(), "the token stays, unmasked by DLP: {body}");
    assert_eq!(v["ssn"], "***-**-****");
    assert_eq!(v["items"], stored["items"]);
    assert!(!body.contains(CARD) && !body.contains(SSN) && !body.contains(IBAN));

    // An upstream that answers originals: withheld at the fields from the others, the card in the note
    // masked by DLP for everyone.
    let (_, body) = send(&s, "clerk", "GET", "/pay/leak", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], "[withheld]", "{body}");
    assert_eq!(v["ssn"], "***-**-****");
    assert!(!body.contains(CARD), "{body}");
    let (_, body) = send(&s, "auditor", "GET", "/pay/leak", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], CARD, "{body}");
    assert!(!v["note"].as_str().unwrap().contains(CARD), "DLP masks the card elsewhere: {body}");
}

/// Originals in an array or object at a field's pointer: withheld whole (or masked) from a principal
/// without the role; for one with it, data-loss masking still judges what is under the pointer.
#[test]
fn arrays_and_objects_at_a_field_are_withheld() {
    let state = TempDir::new();
    let s = setup(&state);
    let (code, body) = send(&s, "clerk", "GET", "/pay/leak-nested", &[], "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], "[withheld]", "{body}");
    assert_eq!(v["ssn"], "***-**-****", "{body}");
    assert!(!body.contains(CARD) && !body.contains(SSN) && !body.contains("1111"), "{body}");
    let (code, body) = send(&s, "auditor", "GET", "/pay/leak-nested", &[], "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], serde_json::json!(["************1111"]), "{body}");
    assert!(!body.contains(CARD), "{body}");
}

fn errors(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    (
        v["errors"][0]["pointer"].as_str().unwrap_or("").to_owned(),
        v["errors"][0]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Malformed values and hostile spellings: the exact status, the pointer named, nothing upstream.
#[test]
fn hostile_bodies_are_refused_before_the_upstream() {
    let state = TempDir::new();
    let s = setup(&state);
    let huge = format!(r#"{{"card":{{"number":"{}"}}}}"#, "4".repeat(5000));
    /// A case: its name, body, header lines, the status, and the error's pointer and code.
    type Case<'a> = (&'a str, String, &'a [&'a str], u16, Option<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("luhn", r#"{"card":{"number":"4111111111111112"}}"#.into(), &[JSON], 400, Some(("/card/number", "luhn"))),
        (
            "spaces",
            r#"{"card":{"number":"4111 1111 1111 1111"}}"#.into(),
            &[JSON],
            400,
            Some(("/card/number", "digits")),
        ),
        ("short", r#"{"card":{"number":"41111111"}}"#.into(), &[JSON], 400, Some(("/card/number", "length"))),
        ("number", r#"{"card":{"number":4111111111111111}}"#.into(), &[JSON], 400, Some(("/card/number", "type"))),
        ("object", r#"{"ssn":{"v":"123-45-6789"}}"#.into(), &[JSON], 400, Some(("/ssn", "type"))),
        ("huge", huge, &[JSON], 400, Some(("/card/number", "too-long"))),
        (
            "forged token",
            r#"{"ssn":"tok_AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.into(),
            &[JSON],
            400,
            Some(("/ssn", "invalid-token")),
        ),
        ("duplicate", format!(r#"{{"ssn":"x","ssn":"{SSN}"}}"#), &[JSON], 400, None),
        ("duplicate nested", format!(r#"{{"card":{{"number":"{CARD}","number":"1"}}}}"#), &[JSON], 400, None),
        ("case", format!(r#"{{"SSN":"{SSN}"}}"#), &[JSON], 400, Some(("/SSN", "case-variant"))),
        ("case nested", format!(r#"{{"Card":{{"number":"{CARD}"}}}}"#), &[JSON], 400, Some(("/Card", "case-variant"))),
        (
            "case leaf",
            format!(r#"{{"card":{{"Number":"{CARD}"}}}}"#),
            &[JSON],
            400,
            Some(("/card/Number", "case-variant")),
        ),
        (
            "items",
            format!(r#"{{"items":[{{"IBAN":"{IBAN}"}}]}}"#),
            &[JSON],
            400,
            Some(("/items/0/IBAN", "case-variant")),
        ),
        ("not json", format!(r#"{{'ssn': '{SSN}'}}"#), &[JSON], 400, None),
        ("trailing", format!(r#"{{"a":1}} {{"ssn":"{SSN}"}}"#), &[JSON], 400, None),
        (
            "form repeated",
            format!("card_number={CARD}&card_number=5555555555554444"),
            &[FORM],
            400,
            Some(("card_number", "repeated")),
        ),
        ("form case", format!("Card_Number={CARD}"), &[FORM], 400, Some(("card_number", "case-variant"))),
        ("form php array", format!("card_number[]={CARD}"), &[FORM], 400, Some(("card_number", "case-variant"))),
        ("form plus", format!("+card_number={CARD}"), &[FORM], 400, Some(("card_number", "renamed"))),
        ("form space", format!("%20card_number={CARD}"), &[FORM], 400, Some(("card_number", "renamed"))),
        ("form dot", format!("card.number={CARD}"), &[FORM], 400, Some(("card_number", "renamed"))),
        ("form inner plus", format!("card+number={CARD}"), &[FORM], 400, Some(("card_number", "renamed"))),
        ("form bracket", format!("card[number={CARD}"), &[FORM], 400, Some(("card_number", "renamed"))),
        ("form nul name", format!("card_number%00x={CARD}"), &[FORM], 400, Some(("", "nul"))),
        ("form control name", format!("card_number%0D={CARD}"), &[FORM], 400, Some(("", "control-character"))),
        (
            "form utf-16be",
            "%00c%00a%00r%00d%00_%00n%00u%00m%00b%00e%00r=4111111111111111".into(),
            &["Content-Type: application/x-www-form-urlencoded; charset=utf-16be"],
            415,
            None,
        ),
        (
            "form nul",
            "%00c%00a%00r%00d%00_%00n%00u%00m%00b%00e%00r=4111111111111111".into(),
            &[FORM],
            400,
            Some(("", "nul")),
        ),
        ("json utf-16", record(), &["Content-Type: application/json; charset=\"UTF-16\""], 415, None),
        ("json latin1", record(), &["Content-Type: application/json; charset=iso-8859-1"], 415, None),
        ("form semicolon", format!("a=1;card_number={CARD}"), &[FORM], 400, Some(("", "separator"))),
        ("form luhn", "card_number=4111111111111112".into(), &[FORM], 400, Some(("card_number", "luhn"))),
        ("text", format!("card_number={CARD}"), &["Content-Type: text/plain"], 415, None),
        ("no type", format!("card_number={CARD}"), &["Content-Type:"], 415, None),
        (
            "multipart",
            format!("--b\r\nContent-Disposition: form-data; name=\"card_number\"\r\n\r\n{CARD}\r\n--b--\r\n"),
            &["Content-Type: multipart/form-data; boundary=b"],
            415,
            None,
        ),
        ("gzip", record(), &[JSON, "Content-Encoding: gzip"], 415, None),
    ];
    for (name, body, headers, status, want) in cases {
        let before = s.echo.hits();
        let (code, answer) = send(&s, "clerk", "POST", "/pay", headers, &body);
        assert_eq!(code, status, "{name}: {answer}");
        assert_eq!(s.echo.hits(), before, "{name} reached the upstream");
        assert!(!answer.contains(CARD) && !answer.contains(SSN), "{name}: the answer echoes the value: {answer}");
        if let Some((pointer, code)) = want {
            assert_eq!(errors(&answer), (pointer.to_owned(), code.to_owned()), "{name}: {answer}");
        }
    }
}

/// Other spellings that must still be tokenized: escaped keys, percent-encoded form names, a value
/// that already is a token (left alone), escapes in the value.
#[test]
fn other_spellings_are_tokenized_too() {
    let state = TempDir::new();
    let s = setup(&state);
    post_json(&s, "clerk", &record());
    let stored: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    let (card_token, ssn_token) =
        (stored["card"]["number"].as_str().unwrap().to_owned(), stored["ssn"].as_str().unwrap().to_owned());

    let (code, _) = post_json(&s, "clerk", &format!(r#"{{"\u0073sn":"{SSN}","card":{{"num\u0062er":"{CARD}"}}}}"#));
    assert_eq!(code, 200);
    let got = s.echo.last();
    assert!(!got.body.contains(SSN) && !got.body.contains(CARD), "{}", got.body);
    assert!(got.body.contains(&ssn_token) && got.body.contains(&card_token), "{}", got.body);

    // Escapes inside the value are decoded first: the same card, the same token.
    let (code, _) = post_json(&s, "clerk", r#"{"card":{"number":"411111111111111\u0031"}}"#);
    assert_eq!(code, 200);
    assert!(s.echo.last().body.contains(&card_token));

    let (code, _) = send(&s, "clerk", "POST", "/pay", &[FORM], &format!("card%5Fnumber={CARD}&%73sn=123%2D45-6789"));
    assert_eq!(code, 200);
    let got = s.echo.last();
    assert!(!got.body.contains(CARD) && !got.body.contains("6789"), "{}", got.body);
    assert!(got.body.contains(&card_token) && got.body.contains(&ssn_token), "{}", got.body);

    // The charsets the stage reads: UTF-8 and US-ASCII, however spelled.
    for ct in [
        "Content-Type: application/x-www-form-urlencoded; charset=\"UTF-8\"",
        "Content-Type: application/x-www-form-urlencoded; charset=us-ascii",
    ] {
        let (code, _) = send(&s, "clerk", "POST", "/pay", &[ct], &format!("card_number={CARD}"));
        assert_eq!(code, 200, "{ct}");
        assert!(s.echo.last().body.contains(&card_token), "{ct}: {}", s.echo.last().body);
    }
    let (code, _) = send(&s, "clerk", "POST", "/pay", &["Content-Type: application/json; Charset=UTF-8"], &record());
    assert_eq!(code, 200);
    assert!(!s.echo.last().body.contains(CARD));

    // A number that only carries the mark is not one of the gateway's tokens: protected all the same.
    let (code, _) = post_json(&s, "clerk", r#"{"card":{"number":"5900000000000000"}}"#);
    assert_eq!(code, 200);
    assert!(!s.echo.last().body.contains("5900000000000000"), "{}", s.echo.last().body);

    // Already tokens: forwarded as they are.
    let body = format!(r#"{{"card":{{"number":"{card_token}"}},"ssn":"{ssn_token}"}}"#);
    let (code, _) = post_json(&s, "clerk", &body);
    assert_eq!(code, 200);
    assert_eq!(s.echo.last().body, body);

    // Unrelated members with the same names elsewhere are not fields.
    let body = format!(r#"{{"other":{{"ssn":"x","number":"{CARD}"}}}}"#);
    let (code, _) = post_json(&s, "clerk", &body);
    assert_eq!(code, 200);
    assert_eq!(s.echo.last().body, body);
    assert_eq!(s.echo.last().path, "/pay");

    // A chunked body: read whole, rewritten, sent with its own length.
    let (code, _) = send(&s, "clerk", "POST", "/pay", &[JSON, "Transfer-Encoding: chunked"], &record());
    assert_eq!(code, 200);
    let got = s.echo.last();
    assert!(!got.body.contains(CARD) && got.body.contains(&card_token), "{}", got.body);
    assert!(got.headers.contains(&format!("content-length: {}\r\n", got.body.len())), "{}", got.headers);
    assert!(!got.headers.contains("transfer-encoding"), "{}", got.headers);

    // A request without a body passes.
    let (code, _) = send(&s, "clerk", "GET", "/pay/stored", &[], "");
    assert_eq!(code, 200);
}

/// `check` prints the stages; config mistakes are refused with the route named.
#[test]
fn check_shows_the_stages_and_refuses_mistakes() {
    let state = TempDir::new();
    let (yaml, _) = config(common::closed_port(), &state.path("state.db"));
    let dir = TempDir::new();
    let path = dir.write("ok.yaml", &yaml);
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("request-transforms[/card/number format_preserving, /ssn tokenize"), "{out}");
    assert!(out.contains("detokenization[/card/number, /ssn, /items/*/iban]"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    // Warnings: an answer that is not JSON would pass; a vault in memory only.
    let store = format!("store:\n  sqlite: {}\n", path_str(&state.path("state.db")));
    assert!(yaml.contains(&store));
    let lax = yaml.replace(&store, "").replace("json: true, ", "");
    let path = dir.write("lax.yaml", &lax);
    let (code, out, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route `pay` tokenizes JSON fields but does not say `respond: { json: true }`"), "{out}");
    assert!(out.contains("no `store:`: the token vault of format-preserving fields is kept in memory only"), "{out}");
    for (bad, want) in [
        (yaml.replace(&format!("key: {KEY}"), "key: too-short"), "at least 32 bytes"),
        (yaml.replace("detokenize_roles: [payments] }", "detokenize_roles: [nobody] }"), "`nobody` is not declared"),
        (yaml.replace("mark: \"59\", detokenize", "detokenize"), "needs a `mark`"),
        (yaml.replace("mode: tokenize, detokenize", "mode: hash, detokenize"), "unknown variant"),
        (yaml.replace("form: ssn, name", "form: ssn, nme"), "unknown field"),
        (
            yaml.replace("pointer: /ssn, name: /ssn,", "pointer: /ssn, name: /card/number,"),
            "different detokenize_roles or mask",
        ),
    ] {
        let path = dir.write("bad.yaml", &bad);
        let (code, _, err) = portcullis(&["check", "--config", &path_str(&path)], &[]);
        assert_ne!(code, 0, "{want}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// A reload keeps the vault (and its tokens) of the running config.
#[test]
fn a_reload_keeps_the_vault() {
    let state = TempDir::new();
    let echo = Echo::start();
    let (yaml, keys) = config(echo.addr, &state.path("state.db"));
    // In memory only: what survives is what the reload kept.
    let store = format!("store:\n  sqlite: {}\n", path_str(&state.path("state.db")));
    let yaml = yaml.replace(&store, "");
    let gw = Gateway::start(&yaml);
    let s = Setup { echo, gw, keys, yaml: yaml.clone() };
    assert_eq!(post_json(&s, "clerk", &record()).0, 200);
    let before: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    s.gw.rewrite_config(&yaml.replace("mask: \"***-**-****\"", "mask: \"[ssn]\""));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = send(&s, "clerk", "GET", "/pay/stored", &[], "");
        if body.contains("[ssn]") {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = send(&s, "auditor", "GET", "/pay/stored", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["card"]["number"], CARD, "{body}");
    assert_eq!(post_json(&s, "clerk", &record()).0, 200);
    let after: serde_json::Value = serde_json::from_str(&s.echo.last().body).unwrap();
    assert_eq!(after["card"], before["card"]);
}
