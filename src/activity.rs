//! What the gateway tells the behaviour detector about each finished request: the [`Record`], its
//! automation [`Signals`], and the [`Sink`] records are offered to. A leaf module (it names only
//! `exchange`), so the request's completion (`observe`) can carry a record without naming the detector
//! (`anomaly`), which itself uses the limiter and the guard: no import circle.

use std::net::IpAddr;
use std::sync::Arc;

/// Where finished requests' records go (the anomaly detector's bounded queue). `offer` must not block.
pub trait Sink: Send + Sync {
    fn offer(&self, record: Record);
}

/// `Record::route` when no route matched.
pub const NO_ROUTE: u16 = u16::MAX;

/// One finished request, as the detectors see it. Built on the data path: no allocation beyond the
/// reference counts it takes.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request finished: milliseconds since the Unix epoch (or of simulated time, under the
    /// `sim-clock` feature with `anomaly.clock: simulated`).
    pub at_ms: u64,
    /// The client address (after `trusted_proxies`). IPv6 entities are grouped by prefix by the engine.
    pub ip: IpAddr,
    /// The authenticated principal (its `id`, `kind`, `roles`), when authentication succeeded.
    pub principal: Option<Arc<crate::exchange::Principal>>,
    /// The identity a refused credential claimed, when it names one without being verified: the public id
    /// of an API key (`pcs_<id>_...`) whose secret did not match, or a malformed/unknown key's id part.
    /// `None` when nothing was presented or the request was authenticated.
    pub claimed: Option<Arc<str>>,
    /// Index of the matched route in the route table, or [`NO_ROUTE`].
    pub route: u16,
    /// The status sent.
    pub status: u16,
    pub bytes_in: u32,
    pub bytes_out: u32,
    /// The value of the last templated path parameter (`/users/{id}`) when it is a decimal integer.
    pub id_param: Option<u64>,
    /// A hash of all path parameter values (0 when the route has none): distinct objects touched.
    pub params_hash: u64,
    /// A hash of the `User-Agent` value (0 when absent).
    pub user_agent: u64,
    /// Automation signals taken from the request head.
    pub signals: Signals,
    /// Refused by an anomaly action in force (a ban, a throttle, a challenge): the stage's own answer,
    /// not evidence of a failed credential. A challenged owner whose app keeps polling with its old
    /// token must not turn the challenge into a stuffing ban of its address.
    pub in_force: bool,
}

/// What the request head says about automation, computed on the data path by [`signals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// A hash of the request's header names, lower-cased, in the order sent.
    pub header_order: u32,
    /// `Signals::*` flag bits.
    pub flags: u16,
}

impl Signals {
    pub const HAS_ACCEPT: u16 = 1;
    pub const HAS_ACCEPT_LANGUAGE: u16 = 1 << 1;
    pub const HAS_ACCEPT_ENCODING: u16 = 1 << 2;
    /// `Sec-Fetch-*` or `Sec-CH-UA*` present.
    pub const HAS_FETCH_METADATA: u16 = 1 << 3;
    /// The user agent claims to be a browser (Mozilla/..., Chrome, Safari, Firefox, Edge).
    pub const CLAIMS_BROWSER: u16 = 1 << 4;
    /// The user agent or a header names a known scanner (sqlmap, nikto, nuclei, zgrab, masscan, ...).
    pub const SCANNER: u16 = 1 << 5;
    /// No `User-Agent` at all.
    pub const NO_USER_AGENT: u16 = 1 << 6;
}
