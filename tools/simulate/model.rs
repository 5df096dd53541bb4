//! The simulated world's fixed parts: user agents with the header sets their clients really send, the
//! address pool, API keys, the routes, and the world that answers every request.
//!
//! Everything here is a pure function of its inputs (a seed, an index): the same request gets the same
//! answer whether the world runs in process or as the upstream behind a real gateway.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// SplitMix64: derives independent, reproducible seeds (one per actor) from the run's seed.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash (std's SipHash with its fixed keys): the same in every run and process.
pub(crate) fn hash64<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A standard normal sample (Box-Muller).
pub(crate) fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal sample with this median and shape.
pub(crate) fn lognormal(rng: &mut fastrand::Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// An exponential sample with this mean.
pub(crate) fn exponential(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    -mean * rng.f64().max(1e-12).ln()
}

/// Picks an index by weight.
pub(crate) fn weighted(rng: &mut fastrand::Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

// ------------------------------------------------------------------------------------------------
// User agents
// ------------------------------------------------------------------------------------------------

/// What kind of software a client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Family {
    /// A web application calling the API from a browser (fetch with the browser's own headers).
    Browser,
    /// A native mobile application.
    Mobile,
    /// A server-side integration: an SDK, curl, a script.
    Sdk,
}

/// One user agent and the header names its client sends, in its order. The request-specific headers
/// are placeholders: `host`, `x-api-key` (left out when no key is presented), `x-forwarded-for` (the
/// simulated client address, through a trusted proxy) and `portcullis-sim-time`.
pub(crate) struct Profile {
    pub(crate) family: Family,
    /// A short name, for reports.
    pub(crate) name: &'static str,
    pub(crate) user_agent: &'static str,
    pub(crate) headers: &'static [(&'static str, &'static str)],
    /// How often this profile is drawn within its family.
    pub(crate) weight: f64,
}

const UA: &str = "user-agent";

pub(crate) static PROFILES: &[Profile] = &[
    Profile {
        family: Family::Browser,
        name: "chrome-windows",
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        headers: &[
            ("host", ""),
            ("sec-ch-ua-platform", "\"Windows\""),
            (UA, ""),
            ("accept", "application/json"),
            ("sec-ch-ua", "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
            ("x-api-key", ""),
            ("sec-ch-ua-mobile", "?0"),
            ("origin", "https://shop.example"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("referer", "https://shop.example/"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "en-US,en;q=0.9"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 4.0,
    },
    Profile {
        family: Family::Browser,
        name: "chrome-mac",
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        headers: &[
            ("host", ""),
            ("sec-ch-ua-platform", "\"macOS\""),
            (UA, ""),
            ("accept", "application/json"),
            ("sec-ch-ua", "\"Chromium\";v=\"130\", \"Google Chrome\";v=\"130\", \"Not?A_Brand\";v=\"99\""),
            ("x-api-key", ""),
            ("sec-ch-ua-mobile", "?0"),
            ("origin", "https://shop.example"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("referer", "https://shop.example/"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "de-DE,de;q=0.9,en;q=0.8"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 2.0,
    },
    Profile {
        family: Family::Browser,
        name: "edge-windows",
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        headers: &[
            ("host", ""),
            ("sec-ch-ua-platform", "\"Windows\""),
            (UA, ""),
            ("accept", "application/json"),
            ("sec-ch-ua", "\"Microsoft Edge\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
            ("x-api-key", ""),
            ("sec-ch-ua-mobile", "?0"),
            ("origin", "https://shop.example"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("referer", "https://shop.example/"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("accept-language", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.0,
    },
    Profile {
        family: Family::Browser,
        name: "firefox",
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        headers: &[
            ("host", ""),
            (UA, ""),
            ("accept", "application/json"),
            ("accept-language", "en-GB,en;q=0.5"),
            ("accept-encoding", "gzip, deflate, br, zstd"),
            ("referer", "https://shop.example/"),
            ("x-api-key", ""),
            ("origin", "https://shop.example"),
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "same-site"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.5,
    },
    Profile {
        family: Family::Browser,
        name: "safari-mac",
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        headers: &[
            ("host", ""),
            ("accept", "application/json"),
            ("sec-fetch-site", "same-site"),
            ("origin", "https://shop.example"),
            ("x-api-key", ""),
            ("sec-fetch-mode", "cors"),
            (UA, ""),
            ("referer", "https://shop.example/"),
            ("sec-fetch-dest", "empty"),
            ("accept-language", "en-US,en;q=0.9"),
            ("accept-encoding", "gzip, deflate, br"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.5,
    },
    Profile {
        family: Family::Browser,
        name: "safari-ios",
        user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        headers: &[
            ("host", ""),
            ("accept", "application/json"),
            ("sec-fetch-site", "same-site"),
            ("origin", "https://shop.example"),
            ("x-api-key", ""),
            ("sec-fetch-mode", "cors"),
            (UA, ""),
            ("referer", "https://shop.example/"),
            ("sec-fetch-dest", "empty"),
            ("accept-language", "en-US,en;q=0.9"),
            ("accept-encoding", "gzip, deflate, br"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.0,
    },
    Profile {
        family: Family::Mobile,
        name: "ios-app",
        user_agent: "ShopApp/4.12.1 (com.example.shop; build:4121; iOS 18.1.0) Alamofire/5.9.1",
        headers: &[
            ("host", ""),
            ("accept", "application/json"),
            ("x-api-key", ""),
            ("accept-encoding", "br;q=1.0, gzip;q=0.9, deflate;q=0.8"),
            ("accept-language", "en-US;q=1.0"),
            (UA, ""),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.0,
    },
    Profile {
        family: Family::Mobile,
        name: "android-app",
        user_agent: "okhttp/4.12.0",
        headers: &[
            ("host", ""),
            ("x-api-key", ""),
            ("accept", "application/json"),
            ("accept-encoding", "gzip"),
            (UA, ""),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.2,
    },
    Profile {
        family: Family::Sdk,
        name: "python-requests",
        user_agent: "python-requests/2.32.3",
        headers: &[
            ("host", ""),
            (UA, ""),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("x-api-key", ""),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 2.0,
    },
    Profile {
        family: Family::Sdk,
        name: "curl",
        user_agent: "curl/8.5.0",
        headers: &[
            ("host", ""),
            (UA, ""),
            ("accept", "*/*"),
            ("x-api-key", ""),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 0.7,
    },
    Profile {
        family: Family::Sdk,
        name: "go",
        user_agent: "Go-http-client/1.1",
        headers: &[
            ("host", ""),
            (UA, ""),
            ("x-api-key", ""),
            ("accept-encoding", "gzip"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.0,
    },
    Profile {
        family: Family::Sdk,
        name: "node-axios",
        user_agent: "axios/1.7.7",
        headers: &[
            ("host", ""),
            ("accept", "application/json, text/plain, */*"),
            (UA, ""),
            ("x-api-key", ""),
            ("accept-encoding", "gzip, compress, deflate, br"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 1.0,
    },
    Profile {
        family: Family::Sdk,
        name: "java",
        user_agent: "Java-http-client/21.0.5",
        headers: &[
            ("host", ""),
            ("x-api-key", ""),
            (UA, ""),
            ("accept", "application/json"),
            ("x-forwarded-for", ""),
            ("portcullis-sim-time", ""),
        ],
        weight: 0.5,
    },
];

/// How often each family appears among clients (and attackers, who draw from the same table).
pub(crate) const FAMILY_WEIGHTS: [(Family, f64); 3] =
    [(Family::Browser, 0.55), (Family::Mobile, 0.25), (Family::Sdk, 0.20)];

/// The header set a scripted client sends whatever agent it claims: no `accept-language`, no fetch
/// metadata, its library's order (used by the headless-impersonation bot).
pub(crate) static SCRIPTED_HEADERS: &[(&str, &str)] = &[
    ("host", ""),
    (UA, ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept", "*/*"),
    ("connection", "keep-alive"),
    ("x-api-key", ""),
    ("x-forwarded-for", ""),
    ("portcullis-sim-time", ""),
];

/// User agents of well-known scanners (the scanner bot draws one).
pub(crate) static SCANNER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36 nuclei",
    "sqlmap/1.8.11#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:map_codes)",
];

/// Draws a family, then a profile within it: the one distribution clients and attackers share.
pub(crate) fn draw_profile(rng: &mut fastrand::Rng) -> u16 {
    let fam = FAMILY_WEIGHTS[weighted(rng, &FAMILY_WEIGHTS.map(|(_, w)| w))].0;
    draw_profile_in(rng, fam)
}

pub(crate) fn draw_profile_in(rng: &mut fastrand::Rng, fam: Family) -> u16 {
    let idx: Vec<usize> = (0..PROFILES.len()).filter(|i| PROFILES[*i].family == fam).collect();
    let w: Vec<f64> = idx.iter().map(|i| PROFILES[*i].weight).collect();
    idx[weighted(rng, &w)] as u16
}

/// How a request's head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HeadStyle {
    /// The profile's own header set (every legitimate client, and most attackers).
    Native,
    /// A script's header set with the profile's user agent (impersonation).
    Scripted,
    /// A scanner's agent (index into [`SCANNER_AGENTS`]) with the scripted header set.
    Scanner(u8),
}

/// The header list (name, value) for a request; placeholders filled by the caller.
pub(crate) fn head_template(profile: u16, style: HeadStyle) -> (&'static [(&'static str, &'static str)], &'static str) {
    let p = &PROFILES[profile as usize];
    match style {
        HeadStyle::Native => (p.headers, p.user_agent),
        HeadStyle::Scripted => (SCRIPTED_HEADERS, p.user_agent),
        HeadStyle::Scanner(i) => (SCRIPTED_HEADERS, SCANNER_AGENTS[i as usize % SCANNER_AGENTS.len()]),
    }
}

// ------------------------------------------------------------------------------------------------
// Addresses
// ------------------------------------------------------------------------------------------------

/// Where a device connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NetKind {
    /// A home broadband line: one IPv4 address, stable.
    Home4,
    /// A home line with IPv6: one /64, the interface id rotating daily (privacy addresses).
    Home6,
    /// A mobile network: a carrier-grade NAT address, new for every session.
    Mobile4,
    /// A mobile network with IPv6: a /64 per session.
    Mobile6,
    /// An office: one address shared by several clients behind NAT.
    Office,
    /// A cloud host (servers, integrations): one stable address.
    Cloud,
}

/// The address ranges the pool draws from (documentation-like, but spread like real providers).
const HOME4: &[(u8, u8)] = &[(81, 2), (86, 12), (92, 40), (24, 16), (73, 9), (109, 150), (151, 27), (178, 39)];
const CLOUD4: &[(u8, u8)] = &[(34, 90), (52, 14), (13, 48), (35, 180), (20, 61)];
const OFFICE4: &[(u8, u8)] = &[(198, 51), (203, 0), (192, 0), (212, 58)];
const HOME6: &[u16] = &[0x2a02, 0x2001, 0x2600, 0x2a01, 0x2003];
const MOBILE6: &[u16] = &[0x2a00, 0x2607, 0x2405];

/// The kinds a family's devices connect from, with weights (shared by clients and attackers).
pub(crate) fn net_weights(fam: Family) -> &'static [(NetKind, f64)] {
    match fam {
        Family::Browser => {
            &[(NetKind::Home4, 0.45), (NetKind::Home6, 0.2), (NetKind::Office, 0.25), (NetKind::Mobile4, 0.1)]
        }
        Family::Mobile => {
            &[(NetKind::Mobile4, 0.5), (NetKind::Mobile6, 0.25), (NetKind::Home4, 0.15), (NetKind::Home6, 0.1)]
        }
        Family::Sdk => &[(NetKind::Cloud, 0.7), (NetKind::Office, 0.2), (NetKind::Home4, 0.1)],
    }
}

pub(crate) fn draw_net(rng: &mut fastrand::Rng, fam: Family) -> NetKind {
    let w = net_weights(fam);
    w[weighted(rng, &w.iter().map(|(_, x)| *x).collect::<Vec<_>>())].0
}

/// A fresh address of this kind (offices: a fresh office address).
pub(crate) fn draw_addr(rng: &mut fastrand::Rng, kind: NetKind) -> IpAddr {
    let v4 = |rng: &mut fastrand::Rng, ranges: &[(u8, u8)]| {
        let (a, b) = ranges[rng.usize(..ranges.len())];
        IpAddr::V4(Ipv4Addr::new(a, b, rng.u8(..), rng.u8(1..255)))
    };
    let v6 = |rng: &mut fastrand::Rng, tops: &[u16]| {
        let top = tops[rng.usize(..tops.len())];
        IpAddr::V6(Ipv6Addr::new(
            top,
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(..),
            rng.u16(1..),
        ))
    };
    match kind {
        NetKind::Home4 => v4(rng, HOME4),
        NetKind::Cloud => v4(rng, CLOUD4),
        NetKind::Office => v4(rng, OFFICE4),
        NetKind::Mobile4 => IpAddr::V4(Ipv4Addr::new(100, 64 + rng.u8(..64), rng.u8(..), rng.u8(1..255))),
        NetKind::Home6 => v6(rng, HOME6),
        NetKind::Mobile6 => v6(rng, MOBILE6),
    }
}

/// The same /64 with a new interface id (privacy addresses rotate).
pub(crate) fn rotate_iid(rng: &mut fastrand::Rng, addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], rng.u16(..), rng.u16(..), rng.u16(..), rng.u16(1..)))
        }
        v4 => v4,
    }
}

/// The /64 of an IPv6 address, the address itself for IPv4: what "the same network" means in labels.
pub(crate) fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

// ------------------------------------------------------------------------------------------------
// API keys (the gateway's format: `pcs_<id>_<secret><check>`)
// ------------------------------------------------------------------------------------------------

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn b32_random(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| B32[rng.usize(..32)] as char).collect()
}

/// A well-formed key with this id and secret (its checksum computed as the gateway does: the first
/// bytes of SHA-256 of the body, in base32). The checksum is public: attackers compute it too.
pub(crate) fn key_with(id: &str, secret: &str) -> String {
    portcullis::authn::api_key::assemble(id, secret)
}

/// A random well-formed key: `(id, key)`.
pub(crate) fn random_key(rng: &mut fastrand::Rng) -> (String, String) {
    let id = b32_random(rng, 8);
    let secret = b32_random(rng, 32);
    let key = key_with(&id, &secret);
    (id, key)
}

/// A well-formed key for this id with a random (wrong) secret.
pub(crate) fn guess_for(rng: &mut fastrand::Rng, id: &str) -> String {
    key_with(id, &b32_random(rng, 32))
}

/// The key with one character of its secret mistyped (its checksum then fails).
pub(crate) fn mistype(key: &str, at: usize) -> String {
    let mut b = key.as_bytes().to_vec();
    let i = 13 + at % 32;
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap_or_default()
}

/// The id part of a key.
pub(crate) fn key_id(key: &str) -> &str {
    key.get(4..12).unwrap_or("")
}

// ------------------------------------------------------------------------------------------------
// Routes and the world
// ------------------------------------------------------------------------------------------------

/// The API's routes, in the order of the gateway's route table (the index is `Record::route`).
pub(crate) const ROUTES: &[(&str, &str, &str)] = &[
    // (name, match, method)
    ("order", "template: \"/users/{id}/orders/{oid}\"", "GET"),
    ("orders", "template: \"/users/{id}/orders\"", "GET"),
    ("user", "template: \"/users/{id}\"", "GET"),
    ("product", "template: \"/products/{pid}\"", "GET"),
    ("products", "exact: /products", "GET"),
    ("create-order", "exact: /orders", "POST"),
    ("export", "exact: /reports/export", "GET"),
];

/// One request's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `GET /users/{user}/orders/{oid}`
    Order { user: u32, oid: u32 },
    /// `GET /users/{user}/orders?limit=&page=`
    Orders { user: u32, limit: u16, page: u16 },
    /// `GET /users/{user}`
    User { user: u32 },
    /// `GET /products/{pid}`
    Product { pid: u32 },
    /// `GET /products?q=`
    Search { q: u32 },
    /// `POST /orders`
    CreateOrder,
    /// `GET /reports/export?page=`
    Export { page: u32 },
    /// A path no route matches (scanners): index into [`PROBES`].
    Probe { i: u8 },
}

/// Paths scanners try.
pub(crate) static PROBES: &[&str] = &[
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/admin",
    "/phpmyadmin/",
    "/api/v1/users",
    "/actuator/health",
    "/server-status",
    "/config.json",
    "/backup.zip",
    "/graphql",
    "/swagger.json",
    "/.aws/credentials",
    "/debug/pprof/",
    "/console",
    "/cgi-bin/luci",
];

impl Target {
    /// The route index ([`ROUTES`]) or `None` when no route matches.
    pub(crate) fn route(self) -> Option<u16> {
        Some(match self {
            Target::Order { .. } => 0,
            Target::Orders { .. } => 1,
            Target::User { .. } => 2,
            Target::Product { .. } => 3,
            Target::Search { .. } => 4,
            Target::CreateOrder => 5,
            Target::Export { .. } => 6,
            Target::Probe { .. } => return None,
        })
    }

    pub(crate) fn method(self) -> &'static str {
        if self == Target::CreateOrder {
            "POST"
        } else {
            "GET"
        }
    }

    /// Path and query.
    pub(crate) fn path(self) -> String {
        match self {
            Target::Order { user, oid } => format!("/users/{user}/orders/{oid}"),
            Target::Orders { user, limit, page } => format!("/users/{user}/orders?limit={limit}&page={page}"),
            Target::User { user } => format!("/users/{user}"),
            Target::Product { pid } => format!("/products/{pid}"),
            Target::Search { q } => format!("/products?q={q}"),
            Target::CreateOrder => "/orders".into(),
            Target::Export { page } => format!("/reports/export?page={page}"),
            Target::Probe { i } => PROBES[i as usize % PROBES.len()].into(),
        }
    }

    /// Path parameter values, as the gateway extracts them from the template.
    pub(crate) fn params(self) -> Vec<String> {
        match self {
            Target::Order { user, oid } => vec![user.to_string(), oid.to_string()],
            Target::Orders { user, .. } | Target::User { user } => vec![user.to_string()],
            Target::Product { pid } => vec![pid.to_string()],
            _ => Vec::new(),
        }
    }

    /// Request body bytes.
    pub(crate) fn body_len(self) -> u32 {
        if self == Target::CreateOrder {
            220
        } else {
            0
        }
    }

    /// Parses a path and query as the world's upstream receives it.
    pub(crate) fn parse(method: &str, pq: &str) -> Target {
        let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
        let q = |name: &str| -> u32 {
            query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
        };
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let num = |s: &str| s.parse::<u32>().ok();
        let probe = PROBES.iter().position(|p| *p == path).unwrap_or(0) as u8;
        match (method, segs.as_slice()) {
            ("GET", ["users", u, "orders", o]) => match (num(u), num(o)) {
                (Some(user), Some(oid)) => Target::Order { user, oid },
                _ => Target::Probe { i: probe },
            },
            ("GET", ["users", u, "orders"]) => match num(u) {
                Some(user) => Target::Orders { user, limit: q("limit") as u16, page: q("page") as u16 },
                None => Target::Probe { i: probe },
            },
            ("GET", ["users", u]) => num(u).map_or(Target::Probe { i: probe }, |user| Target::User { user }),
            ("GET", ["products", p]) => num(p).map_or(Target::Probe { i: probe }, |pid| Target::Product { pid }),
            ("GET", ["products"]) => Target::Search { q: q("q") },
            ("POST", ["orders"]) => Target::CreateOrder,
            ("GET", ["reports", "export"]) => Target::Export { page: q("page") },
            _ => Target::Probe { i: probe },
        }
    }
}

/// Roles, with how often clients hold them.
pub(crate) const ROLES: &[(&str, f64)] = &[("reader", 0.55), ("writer", 0.27), ("analyst", 0.12), ("admin", 0.06)];

/// Whether a role may export reports.
pub(crate) fn may_export(role: &str) -> bool {
    role == "analyst" || role == "admin"
}

/// The world behind the API: users, their orders, the catalogue. Answers like the real service would.
pub(crate) struct World {
    /// Users 1..=users exist.
    pub(crate) users: u32,
    /// `owner[oid]`: the user owning order `oid`, 0 when the order does not exist (deleted, never made).
    pub(crate) owner: Vec<u32>,
    /// Each user's orders.
    pub(crate) orders_of: Vec<Vec<u32>>,
    /// Each user's role index ([`ROLES`]).
    pub(crate) role_of: Vec<u8>,
    /// Products 1..=products exist.
    pub(crate) products: u32,
}

impl World {
    /// A world for `users` users (ids 1..=users; index 0 unused), each owning some orders.
    pub(crate) fn new(seed: u64, roles: Vec<u8>) -> World {
        let users = roles.len() as u32;
        let mut rng = fastrand::Rng::with_seed(mix(seed, 0x0dd5));
        let total = (users as usize * 16).max(64);
        let mut owner = vec![0u32; total + 1];
        let mut orders_of = vec![Vec::new(); users as usize + 1];
        for (oid, slot) in owner.iter_mut().enumerate().skip(1) {
            // About 6% of ids are deleted or never completed: those answer 404.
            if rng.f64() < 0.06 {
                continue;
            }
            let u = rng.u32(1..=users.max(1));
            *slot = u;
            orders_of[u as usize].push(oid as u32);
        }
        let mut role_of = vec![0u8];
        role_of.extend(roles);
        World { users, owner, orders_of, role_of, products: 5000 }
    }

    pub(crate) fn role(&self, user: u32) -> &'static str {
        ROLES[self.role_of.get(user as usize).copied().unwrap_or(0) as usize].0
    }

    fn other(&self, user: u32) -> u16 {
        if user >= 1 && user <= self.users {
            403
        } else {
            404
        }
    }

    /// The status and response body size for `caller` (None: no valid credential) asking for `target`.
    pub(crate) fn answer(&self, caller: Option<u32>, target: Target) -> (u16, u32) {
        if let Target::Probe { .. } = target {
            return (404, 153);
        }
        let Some(me) = caller else { return (401, 180) };
        let sized = |salt: u64, lo: u32, span: u32| lo + (hash64(&(salt, me)) % u64::from(span)) as u32;
        match target {
            Target::Order { user, oid } => {
                if user != me {
                    return (self.other(user), 160);
                }
                match self.owner.get(oid as usize).copied() {
                    Some(o) if o == me => (200, 600 + (hash64(&oid) % 1200) as u32),
                    Some(o) if o != 0 => (403, 160),
                    _ => (404, 150),
                }
            }
            Target::Orders { user, limit, page } => {
                if user != me {
                    return (self.other(user), 160);
                }
                let n = self.orders_of.get(me as usize).map_or(0, Vec::len) as u32;
                let limit = u32::from(limit.clamp(1, 1000));
                let shown = n.saturating_sub(u32::from(page) * limit).min(limit);
                (200, 120 + 380 * shown)
            }
            Target::User { user } => {
                if user != me {
                    return (self.other(user), 160);
                }
                (200, sized(1, 500, 400))
            }
            Target::Product { pid } => {
                if pid >= 1 && pid <= self.products {
                    (200, 900 + (hash64(&(pid, 7u8)) % 2200) as u32)
                } else {
                    (404, 150)
                }
            }
            Target::Search { q } => (200, 2000 + (hash64(&(q, 3u8)) % 9000) as u32),
            Target::CreateOrder => (201, 310),
            Target::Export { page } => {
                if may_export(self.role(me)) {
                    (200, 150_000 + (hash64(&(page, me)) % 350_000) as u32)
                } else {
                    (403, 160)
                }
            }
            Target::Probe { .. } => (404, 153),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_gateways_shape_and_checksum() {
        let mut rng = fastrand::Rng::with_seed(1);
        let (id, key) = random_key(&mut rng);
        assert_eq!(portcullis::authn::api_key::parse(&key), Some(id.as_str()));
        let bad = mistype(&key, 3);
        assert_ne!(bad, key);
        assert_eq!(portcullis::authn::api_key::parse(&bad), None);
        assert_eq!(key_id(&bad), id);
        let guess = guess_for(&mut rng, &id);
        assert_eq!(portcullis::authn::api_key::parse(&guess), Some(id.as_str()));
    }

    #[test]
    fn the_world_answers_own_others_and_missing() {
        let w = World::new(3, vec![0, 0, 2]);
        let mine = w.orders_of[1][0];
        assert_eq!(w.answer(Some(1), Target::Order { user: 1, oid: mine }).0, 200);
        assert_eq!(w.answer(Some(2), Target::Order { user: 1, oid: mine }).0, 403);
        assert_eq!(w.answer(Some(2), Target::Order { user: 2, oid: mine }).0, 403);
        assert_eq!(w.answer(Some(1), Target::Order { user: 99, oid: mine }).0, 404);
        assert_eq!(w.answer(None, Target::Order { user: 1, oid: mine }).0, 401);
        assert_eq!(w.answer(Some(1), Target::Product { pid: 5001 }).0, 404);
        assert_eq!(w.answer(Some(1), Target::Export { page: 1 }).0, 403);
        assert_eq!(w.answer(Some(3), Target::Export { page: 1 }).0, 200);
        assert_eq!(w.answer(Some(1), Target::Probe { i: 0 }).0, 404);
    }

    #[test]
    fn paths_parse_back_to_their_targets() {
        for t in [
            Target::Order { user: 4, oid: 17 },
            Target::Orders { user: 4, limit: 20, page: 2 },
            Target::User { user: 9 },
            Target::Product { pid: 33 },
            Target::Search { q: 5 },
            Target::CreateOrder,
            Target::Export { page: 3 },
            Target::Probe { i: 2 },
        ] {
            assert_eq!(Target::parse(t.method(), &t.path()), t);
        }
    }
}
