//! HTTP export: batches POSTed with the gateway's outbound client (hyper, tokio-rustls, the one TLS
//! policy; `http://` only to loopback hosts). Three protocols:
//! - `webhook`: a JSON array of events, `Authorization: Bearer <token>` when a token is set;
//! - `splunk_hec`: concatenated HEC event objects, `Authorization: Splunk <token>` (token required);
//! - `elasticsearch_bulk`: `_bulk` NDJSON (`create` action + source per event),
//!   `Authorization: ApiKey <token>` when set; per-item results are read (see [`bulk_outcome`]).
//!
//! 2xx = sent; 408, 429, 5xx and transport failures = retry; any other status = dropped.

use super::format::Format;
use super::queue::Outcome;
use crate::client::{Client, Url};
use crate::events::Event;
use crate::secret::Secret;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Bulk responses list every item; a batch of 10,000 stays well under this.
const MAX_RESPONSE: usize = 8 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Webhook,
    SplunkHec,
    ElasticsearchBulk,
}

/// `exporters[].http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub token: Option<Secret>,
    /// PEM file of the CAs trusted for `https://` (default: the system's trust store).
    #[serde(default)]
    pub ca: Option<String>,
    /// Splunk index (`splunk_hec`) or Elasticsearch index / data stream (`elasticsearch_bulk`).
    #[serde(default)]
    pub index: Option<String>,
}

/// A compiled HTTP exporter.
pub struct HttpExport {
    client: Client,
    url: Url,
    protocol: Protocol,
    format: Format,
    headers: HeaderMap,
    index: Option<String>,
}

impl HttpExport {
    /// Checks and prepares everything (URL, trust, headers) without touching the network.
    pub fn compile(c: &HttpConfig) -> Result<HttpExport, String> {
        if c.format == Format::Cef {
            return Err("format `cef` is for syslog; HTTP exporters send `json` or `ocsf`".into());
        }
        let url = Url::parse(&c.url)?;
        if c.protocol == Protocol::SplunkHec && c.token.is_none() {
            return Err("splunk_hec needs a `token` (the HEC token, as ${env:NAME} or ${file:/path})".into());
        }
        if c.index.is_some() && c.protocol == Protocol::Webhook {
            return Err("`index` applies only to splunk_hec and elasticsearch_bulk".into());
        }
        if c.ca.is_some() && !url.https {
            return Err("`ca` applies only to https:// URLs".into());
        }
        let client = Client::new(c.ca.as_deref(), url.https, TIMEOUT, MAX_RESPONSE)?;
        let mut headers = HeaderMap::new();
        let content_type = match c.protocol {
            Protocol::ElasticsearchBulk => "application/x-ndjson",
            _ => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(token) = &c.token {
            let scheme = match c.protocol {
                Protocol::Webhook => "Bearer",
                Protocol::SplunkHec => "Splunk",
                Protocol::ElasticsearchBulk => "ApiKey",
            };
            let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose()))
                .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(HttpExport { client, url, protocol: c.protocol, format: c.format, headers, index: c.index.clone() })
    }

    pub async fn send(&mut self, batch: &[Arc<Event>]) -> Outcome {
        let body = self.body(batch);
        match self.client.post(&self.url, self.headers.clone(), Bytes::from(body)).await {
            Err(e) => Outcome::Retry(e.to_string()),
            Ok(resp) => {
                let status = resp.status.as_u16();
                if resp.status.is_success() {
                    if self.protocol == Protocol::ElasticsearchBulk {
                        return bulk_outcome(&resp.body);
                    }
                    Outcome::Sent
                } else if status == 408 || status == 429 || resp.status.is_server_error() {
                    Outcome::Retry(format!("status {status}"))
                } else {
                    Outcome::Drop(format!("status {status}"))
                }
            }
        }
    }

    /// The request body for one batch.
    pub fn body(&self, batch: &[Arc<Event>]) -> String {
        let mut out = String::with_capacity(batch.len() * 400);
        match self.protocol {
            Protocol::Webhook => {
                out.push('[');
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&self.format.render(e));
                }
                out.push(']');
            }
            Protocol::SplunkHec => {
                let sourcetype = match self.format {
                    Format::Ocsf => "portcullis:ocsf",
                    _ => "portcullis:event",
                };
                for e in batch {
                    let ms = e.time_ms();
                    let _ = write!(
                        out,
                        r#"{{"time":{}.{:03},"source":"portcullis","sourcetype":"{sourcetype}""#,
                        ms.div_euclid(1000),
                        ms.rem_euclid(1000)
                    );
                    if let Some(index) = &self.index {
                        let _ = write!(out, r#","index":{}"#, serde_json::Value::from(index.as_str()));
                    }
                    out.push_str(r#","event":"#);
                    out.push_str(&self.format.render(e));
                    out.push_str("}\n");
                }
            }
            Protocol::ElasticsearchBulk => {
                let action = match &self.index {
                    Some(index) => format!(r#"{{"create":{{"_index":{}}}}}"#, serde_json::Value::from(index.as_str())),
                    None => r#"{"create":{}}"#.to_owned(),
                };
                for e in batch {
                    out.push_str(&action);
                    out.push('\n');
                    out.push_str(&self.format.render(e));
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A `_bulk` answer (HTTP 200) lists each item's own status. Items refused with 429 (the cluster is
/// busy) or 5xx are sent again; items refused otherwise (mapping or parse errors: sending again cannot
/// help) are dropped and counted. An unreadable answer counts the batch as sent (the status said so).
pub fn bulk_outcome(body: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    struct Bulk {
        #[serde(default)]
        errors: bool,
        #[serde(default)]
        items: Vec<std::collections::HashMap<String, Item>>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        status: u16,
    }
    let Ok(bulk) = serde_json::from_slice::<Bulk>(body) else { return Outcome::Sent };
    if !bulk.errors {
        return Outcome::Sent;
    }
    let mut retry = Vec::new();
    let mut dropped = 0;
    for (i, item) in bulk.items.iter().enumerate() {
        let status = item.values().next().map_or(200, |it| it.status);
        if status == 429 || status >= 500 {
            retry.push(i);
        } else if status >= 300 {
            dropped += 1;
        }
    }
    Outcome::Partial { dropped, retry }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::Kind;

    fn export(protocol: Protocol, format: Format, index: Option<&str>) -> HttpExport {
        HttpExport::compile(&HttpConfig {
            url: "http://127.0.0.1:9/x".into(),
            protocol,
            format,
            token: serde_json::from_str("\"t0k\"").ok(),
            ca: None,
            index: index.map(str::to_owned),
        })
        .unwrap()
    }

    fn batch() -> Vec<Arc<Event>> {
        vec![Arc::new(Event::new(Kind::AuthnFailure, "missing")), Arc::new(Event::new(Kind::BanSet, "auto"))]
    }

    #[test]
    fn webhook_is_a_json_array() {
        let b = batch();
        let v: serde_json::Value =
            serde_json::from_str(&export(Protocol::Webhook, Format::Json, None).body(&b)).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0], serde_json::from_str::<serde_json::Value>(&b[0].to_json()).unwrap());
        let ocsf: serde_json::Value =
            serde_json::from_str(&export(Protocol::Webhook, Format::Ocsf, None).body(&b)).unwrap();
        assert_eq!(ocsf[1]["class_uid"], 6003);
    }

    #[test]
    fn hec_objects() {
        let b = batch();
        let body = export(Protocol::SplunkHec, Format::Json, Some("security")).body(&b);
        let objs: Vec<serde_json::Value> =
            serde_json::Deserializer::from_str(&body).into_iter().map(Result::unwrap).collect();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["sourcetype"], "portcullis:event");
        assert_eq!(objs[0]["index"], "security");
        assert_eq!(objs[0]["event"]["type"], "authn.failure");
        let t = objs[0]["time"].as_f64().unwrap();
        assert!((t * 1000.0 - b[0].time_ms() as f64).abs() < 2.0);
    }

    #[test]
    fn bulk_ndjson() {
        let body = export(Protocol::ElasticsearchBulk, Format::Json, Some("sec")).body(&batch());
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], r#"{"create":{"_index":"sec"}}"#);
        assert!(lines[1].contains(r#""type":"authn.failure""#));
        assert!(body.ends_with('\n'));
    }

    #[test]
    fn headers_and_refusals() {
        let e = export(Protocol::SplunkHec, Format::Json, None);
        assert_eq!(e.headers[AUTHORIZATION], "Splunk t0k");
        assert_eq!(export(Protocol::Webhook, Format::Json, None).headers[AUTHORIZATION], "Bearer t0k");
        let bulk = export(Protocol::ElasticsearchBulk, Format::Json, None);
        assert_eq!(bulk.headers[CONTENT_TYPE], "application/x-ndjson");
        let cfg = |url: &str, protocol, format, token: bool| HttpConfig {
            url: url.into(),
            protocol,
            format,
            token: if token { serde_json::from_str("\"t\"").ok() } else { None },
            ca: None,
            index: None,
        };
        let err = |c: HttpConfig| HttpExport::compile(&c).err().unwrap_or_default();
        assert!(err(cfg("http://127.0.0.1:1/", Protocol::Webhook, Format::Cef, false)).contains("cef"));
        assert!(err(cfg("http://siem.example/", Protocol::Webhook, Format::Json, true)).contains("loopback"));
        assert!(err(cfg("http://127.0.0.1:1/", Protocol::SplunkHec, Format::Json, false)).contains("token"));
    }

    #[test]
    fn bulk_items() {
        assert!(matches!(bulk_outcome(br#"{"errors":false,"items":[]}"#), Outcome::Sent));
        let body = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}},{"create":{"status":503}}]}"#;
        match bulk_outcome(body) {
            Outcome::Partial { dropped, retry } => {
                assert_eq!(dropped, 1);
                assert_eq!(retry, vec![1, 3]);
            }
            _ => panic!("expected a partial outcome"),
        }
    }
}
