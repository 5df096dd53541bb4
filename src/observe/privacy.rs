//! Client addresses in logs, events and the audit trail: kept whole, truncated to a network, or
//! replaced by a keyed hash (`logging.client_ip`), for deployments that must minimise personal data.
//! The same key hashes request bodies for the access log's payload summary.

use aws_lc_rs::hmac;
use std::net::IpAddr;

/// `logging.client_ip`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpMode {
    /// The address as the trusted-proxy rules decided.
    #[default]
    Full,
    /// IPv4 to its /24, IPv6 to its /48: the network, not the host.
    Truncate,
    /// HMAC-SHA-256 of the address under the log key (first 16 hex digits): joins across lines, but
    /// cannot be reversed without the key.
    Hash,
}

/// A random log key for this process, used when `logging.hash_key` is not set (hashes then join
/// within one run, across reloads).
pub struct ProcessKey(pub [u8; 32]);

impl Default for ProcessKey {
    fn default() -> Self {
        let mut k = [0u8; 32];
        // The system RNG does not fail on Linux; a zero key would only weaken joins, not leak.
        let _ = aws_lc_rs::rand::fill(&mut k);
        ProcessKey(k)
    }
}

/// How client addresses and bodies are written: the mode and the log key.
#[derive(Clone)]
pub struct Privacy {
    pub mode: ClientIpMode,
    key: hmac::Key,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl Privacy {
    /// `key`: the configured `logging.hash_key` bytes, or the process's random key.
    pub fn new(mode: ClientIpMode, key: &[u8]) -> Privacy {
        Privacy { mode, key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The address to write, and the hash to write instead when the mode is `hash`.
    pub fn client_ip(&self, ip: IpAddr) -> (Option<IpAddr>, Option<Box<str>>) {
        match self.mode {
            ClientIpMode::Full => (Some(ip), None),
            ClientIpMode::Truncate => (Some(truncate(ip)), None),
            ClientIpMode::Hash => (None, Some(self.hash_ip(ip))),
        }
    }

    /// The address as one string: `203.0.113.7`, `203.0.113.0`, or `h:9f86d081884c7d65`.
    pub fn client_ip_str(&self, ip: IpAddr) -> String {
        match self.client_ip(ip) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(h)) => h.into(),
            (None, None) => String::new(),
        }
    }

    fn hash_ip(&self, ip: IpAddr) -> Box<str> {
        let tag = match ip {
            IpAddr::V4(v4) => hmac::sign(&self.key, &v4.octets()),
            IpAddr::V6(v6) => hmac::sign(&self.key, &v6.octets()),
        };
        format!("h:{}", hex(&tag.as_ref()[..8])).into()
    }

    /// A keyed hash of a body (HMAC-SHA-256, first 16 bytes, hex): equal bodies match across lines,
    /// but a guessed body cannot be confirmed without the key.
    pub fn body_context(&self) -> hmac::Context {
        hmac::Context::with_key(&self.key)
    }
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy::new(ClientIpMode::Full, &ProcessKey::default().0)
    }
}

/// The network of `ip`: IPv4 /24, IPv6 /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

pub use crate::fleet::hex;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn truncates_to_the_network() {
        assert_eq!(truncate("203.0.113.77".parse().unwrap()), "203.0.113.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("2001:db8:1:2:3::9".parse().unwrap()), "2001:db8:1::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = Privacy::new(ClientIpMode::Hash, b"k1");
        let b = Privacy::new(ClientIpMode::Hash, b"k2");
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(a.client_ip_str(ip), a.client_ip_str(ip));
        assert_ne!(a.client_ip_str(ip), b.client_ip_str(ip));
        assert!(!a.client_ip_str(ip).contains("192.0.2"));
        assert!(a.client_ip_str(ip).starts_with("h:"));
    }
}
