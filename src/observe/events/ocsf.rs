//! OCSF-shaped JSON (schema 1.1.0). An event about one request (it has a method) is an **HTTP Activity**
//! (class 4002, category 4 Network Activity; the activity is the request's method); any other event
//! (reloads, bans, keys, admin actions, upstream health, handshakes) is an **API Activity** (class 6003,
//! category 6 Application Activity) whose `api.operation` is the event type. What OCSF has no place for
//! (route, rule, attributes, the schema's own type) goes under `unmapped`. Mappings: `docs/events.md`.

use crate::events::{Event, Kind, SCHEMA_VERSION};
use serde_json::{json, Map, Value};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

const HTTP_ACTIVITY: u32 = 4002;
const API_ACTIVITY: u32 = 6003;

/// The event as one OCSF JSON object.
pub fn to_json(e: &Event) -> String {
    to_value(e).to_string()
}

pub fn to_value(e: &Event) -> Value {
    let mut o = Map::new();
    let (class_uid, class_name, category_uid, category_name, (activity_id, activity_name)) = match &e.method {
        Some(m) => (HTTP_ACTIVITY, "HTTP Activity", 4, "Network Activity", http_activity(m)),
        None => (API_ACTIVITY, "API Activity", 6, "Application Activity", api_activity(e)),
    };
    o.insert("class_uid".into(), json!(class_uid));
    o.insert("class_name".into(), json!(class_name));
    o.insert("category_uid".into(), json!(category_uid));
    o.insert("category_name".into(), json!(category_name));
    o.insert("activity_id".into(), json!(activity_id));
    o.insert("activity_name".into(), json!(activity_name));
    o.insert("type_uid".into(), json!(class_uid * 100 + activity_id));
    o.insert("type_name".into(), json!(format!("{class_name}: {activity_name}")));
    o.insert("time".into(), json!(e.time_ms()));
    o.insert("severity_id".into(), json!(e.severity.ocsf()));
    o.insert("severity".into(), json!(severity_caption(e.severity.ocsf())));
    let (status_id, status) = match e.status {
        Some(s) if s >= 400 => (2, "Failure"),
        Some(_) => (1, "Success"),
        None if failure_kind(e.kind) => (2, "Failure"),
        None => (1, "Success"),
    };
    o.insert("status_id".into(), json!(status_id));
    o.insert("status".into(), json!(status));
    o.insert("status_code".into(), json!(e.reason));
    o.insert("status_detail".into(), json!(e.reason));
    o.insert("message".into(), json!(format!("{}: {}", super::format::title(e.kind), e.reason)));
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": { "name": "Portcullis", "vendor_name": "Portcullis", "version": env!("CARGO_PKG_VERSION") },
        "log_name": "security_events",
        "event_code": e.kind.as_str(),
    });
    if let Some(id) = &e.request_id {
        metadata["correlation_uid"] = json!(id);
    }
    o.insert("metadata".into(), metadata);
    let mut src = Map::new();
    if let Some(ip) = &e.client_ip {
        src.insert("ip".into(), json!(ip.to_string()));
    }
    o.insert("src_endpoint".into(), Value::Object(src));
    if let Some(p) = &e.principal {
        o.insert("actor".into(), json!({ "user": { "name": p, "uid": p } }));
    }
    if class_uid == HTTP_ACTIVITY {
        let mut req = json!({
            "http_method": e.method.as_deref().unwrap_or(""),
            "url": { "path": e.path.as_deref().unwrap_or("") },
        });
        if let Some(id) = &e.request_id {
            req["uid"] = json!(id);
        }
        o.insert("http_request".into(), req);
        if let Some(s) = e.status {
            o.insert("http_response".into(), json!({ "code": s }));
        }
    } else {
        let mut api = json!({ "operation": e.kind.as_str(), "service": { "name": "portcullis" } });
        if let Some(id) = &e.request_id {
            api["request"] = json!({ "uid": id });
        }
        o.insert("api".into(), api);
    }
    o.insert("unmapped".into(), unmapped(e));
    Value::Object(o)
}

/// HTTP Activity's `activity_id` from the method (PATCH has no id before OCSF 1.4: Other).
fn http_activity(method: &str) -> (u32, &'static str) {
    match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        _ => (99, "Other"),
    }
}

/// API Activity's `activity_id`: key and ban lifecycle as create/update/delete, the rest Other.
fn api_activity(e: &Event) -> (u32, &'static str) {
    match e.kind {
        Kind::BanSet => (1, "Create"),
        Kind::BanExpired => (4, "Delete"),
        Kind::ConfigReload => (3, "Update"),
        Kind::KeyLifecycle => match e.attr_str("action").unwrap_or(&e.reason) {
            "created" | "create" => (1, "Create"),
            "rotated" | "rotate" | "changed" | "updated" => (3, "Update"),
            "revoked" | "revoke" | "deleted" => (4, "Delete"),
            _ => (99, "Other"),
        },
        _ => (99, "Other"),
    }
}

/// Kinds that report something refused or broken even without a status.
fn failure_kind(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::BanSet
            | Kind::BanExpired
            | Kind::ConfigReload
            | Kind::KeyLifecycle
            | Kind::AdminAction
            | Kind::UpstreamHealth
            | Kind::InspectDetection
    )
}

fn severity_caption(id: u8) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    }
}

fn unmapped(e: &Event) -> Value {
    let mut u = Map::new();
    u.insert("schema".into(), json!(SCHEMA_VERSION));
    u.insert("type".into(), json!(e.kind.as_str()));
    if let Some(v) = &e.route {
        u.insert("route".into(), json!(&**v));
    }
    if let Some(v) = &e.rule {
        u.insert("rule".into(), json!(v));
    }
    if let Some(v) = &e.client_ip_hash {
        u.insert("client_ip_hash".into(), json!(v));
    }
    if !e.attrs.is_empty() {
        let attrs: Map<String, Value> =
            e.attrs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::to_value(v).unwrap_or(Value::Null))).collect();
        u.insert("attrs".into(), Value::Object(attrs));
    }
    Value::Object(u)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::Severity;

    #[test]
    fn a_refused_request_is_http_activity() {
        let mut e = Event::new(Kind::AuthnFailure, "missing").rule("keys").attr("method", "api_key");
        e.request_id = Some("r-9".into());
        e.client_ip = Some("192.0.2.7".parse().unwrap());
        e.principal = Some("alice".into());
        e.route = Some("app".into());
        e.method = Some("POST".into());
        e.path = Some("/orders".into());
        e.status = Some(401);
        let v = to_value(&e);
        assert_eq!(v["class_uid"], 4002);
        assert_eq!(v["category_uid"], 4);
        assert_eq!(v["activity_id"], 6);
        assert_eq!(v["type_uid"], 400206);
        assert_eq!(v["severity_id"], 2);
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_code"], "missing");
        assert_eq!(v["time"], e.time_ms());
        assert_eq!(v["metadata"]["product"]["name"], "Portcullis");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(v["actor"]["user"]["name"], "alice");
        assert_eq!(v["http_request"]["http_method"], "POST");
        assert_eq!(v["http_request"]["url"]["path"], "/orders");
        assert_eq!(v["http_request"]["uid"], "r-9");
        assert_eq!(v["http_response"]["code"], 401);
        assert_eq!(v["unmapped"]["route"], "app");
        assert_eq!(v["unmapped"]["rule"], "keys");
        assert_eq!(v["unmapped"]["attrs"]["method"], "api_key");
        assert!(v.get("api").is_none());
    }

    #[test]
    fn other_events_are_api_activity() {
        let e = Event::new(Kind::BanSet, "auto_ban").severity(Severity::High);
        let v = to_value(&e);
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["category_uid"], 6);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["type_uid"], 600301);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["api"]["operation"], "ban.set");
        assert!(v.get("http_request").is_none());
        let failed = to_value(&Event::new(Kind::ConfigReloadFailed, "invalid"));
        assert_eq!((failed["activity_id"].as_u64(), failed["status_id"].as_u64()), (Some(99), Some(2)));
    }
}
