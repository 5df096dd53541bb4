//! The wire formats of exported events: `json` (the schema of record, [`Event::to_json`]), `cef`
//! (ArcSight Common Event Format) and `ocsf` (see [`super::ocsf`]). Formatting runs on the exporters'
//! thread, never on the proxy's.

use crate::events::{Event, Kind};
use serde::Deserialize;
use std::fmt::Write;

/// How each event is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Cef,
    Ocsf,
}

impl Format {
    /// One event as text (JSON objects carry no trailing newline).
    pub fn render(self, e: &Event) -> String {
        match self {
            Format::Json => e.to_json(),
            Format::Cef => cef(e),
            Format::Ocsf => super::ocsf::to_json(e),
        }
    }
}

/// A short human name per kind (the CEF header's `Name`).
pub fn title(kind: Kind) -> &'static str {
    match kind {
        Kind::AuthnFailure => "Authentication failure",
        Kind::AuthzDenied => "Authorization denied",
        Kind::RateLimited => "Rate limit exceeded",
        Kind::QuotaExceeded => "Quota exceeded",
        Kind::InspectDetection => "Attack pattern detected",
        Kind::ValidationFailed => "Request validation failed",
        Kind::GuardBlocked => "Client address blocked",
        Kind::BanSet => "Ban set",
        Kind::BanExpired => "Ban expired",
        Kind::ConfigReload => "Configuration reloaded",
        Kind::ConfigReloadFailed => "Configuration reload failed",
        Kind::KeyLifecycle => "API key lifecycle",
        Kind::AdminAction => "Administrative action",
        Kind::UpstreamHealth => "Upstream health changed",
        Kind::TlsHandshakeFailure => "TLS handshake failure",
        Kind::AnomalyAlert => "Anomalous behaviour detected",
        Kind::AnomalyAction => "Anomaly response",
    }
}

/// `CEF:0|Portcullis|Portcullis|<version>|<type>|<name>|<severity>|<extensions>`.
pub fn cef(e: &Event) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("CEF:0|Portcullis|Portcullis|");
    header(&mut out, env!("CARGO_PKG_VERSION"));
    out.push('|');
    header(&mut out, e.kind.as_str());
    out.push('|');
    header(&mut out, title(e.kind));
    let _ = write!(out, "|{}|", e.severity.cef());
    let mut ext = Ext(&mut out, true);
    ext.pair("rt", &e.time_ms().to_string());
    if let Some(ip) = &e.client_ip {
        ext.pair("src", &ip.to_string());
    }
    if let Some(p) = &e.principal {
        ext.pair("suser", p);
    }
    if let Some(m) = &e.method {
        ext.pair("requestMethod", m);
    }
    if let Some(p) = &e.path {
        ext.pair("request", p);
    }
    if let Some(s) = e.status {
        ext.pair("cn1", &s.to_string());
        ext.pair("cn1Label", "status");
    }
    let custom: [(&str, Option<&str>); 5] = [
        ("route", e.route.as_deref()),
        ("rule", e.rule.as_deref()),
        ("reason", Some(&e.reason)),
        ("requestId", e.request_id.as_deref()),
        ("clientIpHash", e.client_ip_hash.as_deref()),
    ];
    for (i, (label, value)) in custom.iter().enumerate() {
        if let Some(v) = value {
            ext.pair(&format!("cs{}", i + 1), v);
            ext.pair(&format!("cs{}Label", i + 1), label);
        }
    }
    if !e.attrs.is_empty() {
        let attrs: serde_json::Map<String, serde_json::Value> = e
            .attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null)))
            .collect();
        ext.pair("cs6", &serde_json::Value::Object(attrs).to_string());
        ext.pair("cs6Label", "attrs");
    }
    out
}

/// A header field: `\` and `|` escaped; line breaks (not allowed in headers) become spaces.
fn header(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Extension `key=value` pairs separated by spaces; values escape `\`, `=` and line breaks.
struct Ext<'a>(&'a mut String, bool);

impl Ext<'_> {
    fn pair(&mut self, key: &str, value: &str) {
        if !self.1 {
            self.0.push(' ');
        }
        self.1 = false;
        self.0.push_str(key);
        self.0.push('=');
        for c in value.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '=' => self.0.push_str("\\="),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c => self.0.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::Severity;
    use std::time::{Duration, UNIX_EPOCH};

    fn sample() -> Event {
        let mut e = Event::new(Kind::AuthnFailure, "missing").rule("a|b\\c").attr("method", "api_key");
        e.time = UNIX_EPOCH + Duration::from_millis(1_795_979_116_123);
        e.request_id = Some("r-1".into());
        e.client_ip = Some("192.0.2.7".parse().unwrap());
        e.principal = Some("al=ice\nx".into());
        e.route = Some("app".into());
        e.method = Some("GET".into());
        e.path = Some("/private".into());
        e.status = Some(401);
        e
    }

    #[test]
    fn cef_header_and_extensions() {
        let line = cef(&sample());
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            line.starts_with(&format!("CEF:0|Portcullis|Portcullis|{version}|authn.failure|Authentication failure|3|")),
            "{line}"
        );
        assert!(line.contains("rt=1795979116123 src=192.0.2.7 suser=al\\=ice\\nx requestMethod=GET request=/private"));
        assert!(line.contains("cn1=401 cn1Label=status cs1=app cs1Label=route cs2=a|b\\\\c cs2Label=rule"));
        assert!(line.contains("cs3=missing cs3Label=reason cs4=r-1 cs4Label=requestId"));
        assert!(line.contains(r#"cs6={"method":"api_key"} cs6Label=attrs"#), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn cef_header_escapes_pipes_and_backslashes() {
        let mut s = String::new();
        header(&mut s, "a|b\\c\nd");
        assert_eq!(s, "a\\|b\\\\c d");
    }

    #[test]
    fn severities_map() {
        let e = Event::new(Kind::InspectDetection, "sqli").severity(Severity::Critical);
        assert!(cef(&e).contains("|Attack pattern detected|10|"));
    }

    #[test]
    fn json_is_the_schema() {
        let e = sample();
        assert_eq!(Format::Json.render(&e), e.to_json());
    }
}
