//! Syslog export: RFC 5424 messages over UDP (RFC 5426, one message per datagram), TCP (RFC 6587
//! octet counting) or TLS (RFC 5425, the same framing) through tokio-rustls with the gateway's one TLS
//! policy. The connection is opened when the first batch is sent (never at config load) and opened again
//! after any failure.

use super::format::Format;
use super::queue::Outcome;
use crate::events::Event;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A UDP datagram carries at most this many bytes of message; longer messages are cut (at a character
/// boundary). TCP and TLS send whole messages.
pub const MAX_DATAGRAM: usize = 8192;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    #[default]
    Tcp,
    Tls,
}

/// `exporters[].syslog`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the collector (resolved when connecting).
    pub address: String,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub format: Format,
    /// PEM file of the CAs trusted for `tls` (default: the system's trust store).
    #[serde(default)]
    pub ca: Option<String>,
    /// The name the TLS certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub facility: Option<String>,
}

/// RFC 5424 facility codes by name.
fn facility_code(name: &str) -> Option<u8> {
    const NAMES: [&str; 16] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
        "audit", "alert", "clock",
    ];
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        return u8::try_from(i).ok();
    }
    let n: u8 = name.strip_prefix("local")?.parse().ok()?;
    (n <= 7).then_some(16 + n)
}

/// The header fields every message of one exporter shares.
#[derive(Debug, Clone)]
pub struct Header {
    facility: u8,
    hostname: String,
    app_name: String,
    procid: String,
}

/// RFC 5424 header fields are printable US-ASCII without spaces, bounded in length; `-` when empty.
fn field(text: &str, max: usize) -> String {
    let s: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

impl Header {
    /// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` (no structured
    /// data, no BOM).
    pub fn message(&self, e: &Event, body: &str) -> String {
        let pri = u16::from(self.facility) * 8 + u16::from(e.severity.syslog());
        let mut m = String::with_capacity(body.len() + 96);
        let _ = write!(
            m,
            "<{pri}>1 {} {} {} {} {} - ",
            e.time_rfc3339(),
            self.hostname,
            self.app_name,
            self.procid,
            e.kind.as_str()
        );
        m.push_str(body);
        m
    }
}

/// A compiled syslog exporter.
pub struct Syslog {
    host: String,
    port: u16,
    transport: Transport,
    format: Format,
    header: Header,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<Conn>,
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the collector closed the connection while it sat idle. A write to such a socket would
    /// still succeed (into the kernel's buffer) and the batch would be lost to the reset that follows;
    /// looking first finds the end. A zero timeout polls once: ready means end of stream (0 bytes) or
    /// an error; pending means the connection is open and quiet. Plain TCP is peeked (nothing is
    /// consumed); TLS is read through rustls (which also takes in session tickets; a collector sends
    /// no data of its own).
    async fn peer_closed(&mut self) -> bool {
        let mut buf = [0u8; 512];
        match self {
            Conn::Udp(_) => false,
            Conn::Tcp(t) => {
                matches!(tokio::time::timeout(Duration::ZERO, t.peek(&mut buf[..1])).await, Ok(Ok(0) | Err(_)))
            }
            Conn::Tls(t) => matches!(tokio::time::timeout(Duration::ZERO, t.read(&mut buf)).await, Ok(Ok(0) | Err(_))),
        }
    }

    fn writer(&mut self) -> Option<&mut (dyn AsyncWrite + Send + Unpin)> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(t) => Some(t),
            Conn::Tls(t) => Some(&mut **t),
        }
    }
}

/// `host:port` or `[v6]:port`.
pub fn split_address(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{address}` is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

impl Syslog {
    /// Checks and prepares everything (TLS trust, names) without touching the network.
    pub fn compile(c: &SyslogConfig) -> Result<Syslog, String> {
        let (host, port) = split_address(&c.address)?;
        let facility = match &c.facility {
            None => 10,
            Some(f) => facility_code(f).ok_or_else(|| {
                format!("facility `{f}` is not a syslog facility (auth, authpriv, local0..local7, ...)")
            })?,
        };
        let app_name = c.app_name.as_deref().unwrap_or("portcullis");
        if app_name.is_empty() || app_name.len() > 48 || !app_name.chars().all(|ch| ch.is_ascii_graphic()) {
            return Err("app_name must be 1 to 48 printable ASCII characters without spaces".into());
        }
        let tls = match c.transport {
            Transport::Tls => {
                let name = c.server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("server_name `{name}` is not a DNS name or IP address"))?;
                Some((tokio_rustls::TlsConnector::from(crate::client::tls_config(c.ca.as_deref())?), name))
            }
            _ if c.ca.is_some() || c.server_name.is_some() => {
                return Err("`ca` and `server_name` apply only to `transport: tls`".into());
            }
            _ => None,
        };
        let header = Header {
            facility,
            hostname: field(&hostname(), 255),
            app_name: app_name.to_owned(),
            procid: std::process::id().to_string(),
        };
        Ok(Syslog { host, port, transport: c.transport, format: c.format, header, tls, conn: None })
    }

    /// Writes a batch. Any failure drops the connection and asks for the whole batch again (so a
    /// collector may see a message twice after a reconnect, never zero times while we retry).
    pub async fn send(&mut self, batch: &[Arc<Event>]) -> Outcome {
        match self.try_send(batch).await {
            Ok(()) => Outcome::Sent,
            Err(e) => {
                self.conn = None;
                Outcome::Retry(e)
            }
        }
    }

    async fn try_send(&mut self, batch: &[Arc<Event>]) -> Result<(), String> {
        if let Some(conn) = &mut self.conn {
            if conn.peer_closed().await {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn =
                Some(tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await.map_err(|_| "connect timed out")??);
        }
        let Some(conn) = self.conn.as_mut() else { return Err("not connected".into()) };
        if let Conn::Udp(sock) = conn {
            for e in batch {
                let mut m = self.header.message(e, &self.format.render(e));
                truncate(&mut m, MAX_DATAGRAM);
                sock.send(m.as_bytes()).await.map_err(|e| format!("send: {}", e.kind()))?;
            }
        }
        if let Some(w) = conn.writer() {
            let mut buf = String::new();
            for e in batch {
                let m = self.header.message(e, &self.format.render(e));
                let _ = write!(buf, "{} ", m.len());
                buf.push_str(&m);
            }
            let write = async {
                w.write_all(buf.as_bytes()).await?;
                w.flush().await
            };
            tokio::time::timeout(WRITE_TIMEOUT, write)
                .await
                .map_err(|_| "write timed out".to_owned())?
                .map_err(|e| format!("write: {}", e.kind()))?;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Conn, String> {
        let target = (self.host.as_str(), self.port);
        match self.transport {
            Transport::Udp => {
                let addr = tokio::net::lookup_host(target)
                    .await
                    .map_err(|e| format!("resolve: {}", e.kind()))?
                    .next()
                    .ok_or("resolve: no address")?;
                let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = UdpSocket::bind(local).await.map_err(|e| format!("bind: {}", e.kind()))?;
                sock.connect(addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
                Ok(Conn::Udp(sock))
            }
            Transport::Tcp | Transport::Tls => {
                let tcp = TcpStream::connect(target).await.map_err(|e| format!("connect: {}", e.kind()))?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => Ok(Conn::Tcp(tcp)),
                    Some((connector, name)) => {
                        let tls = connector.connect(name.clone(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
                        Ok(Conn::Tls(Box::new(tls)))
                    }
                }
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::Kind;
    use std::time::{Duration, UNIX_EPOCH};

    fn header() -> Header {
        Header { facility: 10, hostname: "gw1".into(), app_name: "portcullis".into(), procid: "42".into() }
    }

    #[test]
    fn rfc5424_message() {
        let mut e = Event::new(Kind::AuthnFailure, "missing");
        e.time = UNIX_EPOCH + Duration::from_millis(1_795_979_116_123);
        // authpriv (10) * 8 + notice (5) = 85
        assert_eq!(header().message(&e, "{}"), "<85>1 2026-11-29T19:05:16.123Z gw1 portcullis 42 authn.failure - {}");
    }

    #[test]
    fn facilities() {
        assert_eq!(facility_code("kern"), Some(0));
        assert_eq!(facility_code("auth"), Some(4));
        assert_eq!(facility_code("authpriv"), Some(10));
        assert_eq!(facility_code("local0"), Some(16));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(facility_code("nope"), None);
    }

    #[test]
    fn header_fields_are_printable() {
        assert_eq!(field("a b\tc", 255), "abc");
        assert_eq!(field("", 255), "-");
        assert_eq!(field("abcdef", 3), "abc");
    }

    #[test]
    fn addresses() {
        assert_eq!(split_address("127.0.0.1:514").unwrap(), ("127.0.0.1".into(), 514));
        assert_eq!(split_address("[::1]:6514").unwrap(), ("::1".into(), 6514));
        assert_eq!(split_address("siem.example:6514").unwrap(), ("siem.example".into(), 6514));
        assert!(split_address("siem.example").is_err());
        assert!(split_address(":514").is_err());
        assert!(split_address("h:0").is_err());
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut s = "aé".to_owned();
        truncate(&mut s, 2);
        assert_eq!(s, "a");
    }

    #[tokio::test]
    async fn tcp_uses_octet_counting() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = SyslogConfig {
            address: listener.local_addr().unwrap().to_string(),
            transport: Transport::Tcp,
            format: Format::Json,
            ca: None,
            server_name: None,
            app_name: None,
            facility: Some("local3".into()),
        };
        let mut s = Syslog::compile(&cfg).unwrap();
        let batch = vec![Arc::new(Event::new(Kind::BanSet, "x")), Arc::new(Event::new(Kind::BanExpired, "y"))];
        let (sent, accepted) = tokio::join!(s.send(&batch), listener.accept());
        assert!(matches!(sent, Outcome::Sent));
        drop(s);
        let mut text = String::new();
        accepted.unwrap().0.read_to_string(&mut text).await.unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        let first = &rest[..len.parse::<usize>().unwrap()];
        assert!(first.starts_with("<155>1 "), "{first}"); // local3 (19) * 8 + err (3)
        assert!(first.ends_with(&batch[0].to_json()));
        let second = &rest[first.len()..];
        let (len2, msg2) = second.split_once(' ').unwrap();
        assert_eq!(msg2.len(), len2.parse::<usize>().unwrap());
        assert!(msg2.contains(" ban.expired - "));
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_collector_is_opened_again() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = SyslogConfig {
            address: listener.local_addr().unwrap().to_string(),
            transport: Transport::Tcp,
            format: Format::Cef,
            ca: None,
            server_name: None,
            app_name: None,
            facility: None,
        };
        let mut s = Syslog::compile(&cfg).unwrap();
        let batch = vec![Arc::new(Event::new(Kind::AuthnFailure, "first"))];
        let (sent, accepted) = tokio::join!(s.send(&batch), listener.accept());
        assert!(matches!(sent, Outcome::Sent));
        let mut first = accepted.unwrap().0;
        let mut buf = vec![0u8; 4096];
        let n = first.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("cs3=first"));
        drop(first); // the collector restarts
        let closed = async {
            while !s.conn.as_mut().unwrap().peer_closed().await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed).await.unwrap();
        let batch = vec![Arc::new(Event::new(Kind::AuthnFailure, "second"))];
        let (sent, accepted) = tokio::join!(s.send(&batch), listener.accept());
        assert!(matches!(sent, Outcome::Sent));
        let n = accepted.unwrap().0.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("cs3=second"));
    }
}
