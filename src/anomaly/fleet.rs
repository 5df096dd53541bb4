//! The anomaly detector's responses shared by a fleet (with `redis:` and `redis.share_bans: true`).
//!
//! Each node detects on the traffic it sees, so a thief spread over the fleet's nodes by the load
//! balancer is found by one of them; the response must then hold on all of them, or the thief's next
//! request simply lands on another node. Address bans and API-key principal bans already go to the
//! guard's ban list, which the fleet shares. The rest goes here: throttles (of a principal or an
//! address), challenges, and bans of the principals the ban list cannot name exactly (a token's
//! subject is only one person together with its issuer).
//!
//! - **What is written.** Each action a node puts in force, as JSON in the hash
//!   `portcullis:anomaly:actions`, under the field `<node>:<action id>`; every write bumps
//!   `portcullis:anomaly:actions:version`. A principal is written as its login method, issuer (a
//!   token's `iss`, or "") and whole id: each node keys it with its own engine's seed, so no secret
//!   crosses the fleet and no node's entity keys can be aimed at. An action raised where the alert
//!   knows only the engine's key (a window that closed on a tick, not on the principal's own request)
//!   holds on its node only, and says so (`shared: false`).
//! - **What is read.** A thread per process polls the version every half second (as the ban list
//!   does) and, when it moved, reads the hash whole; the other nodes' actions are held beside this
//!   node's own, listed with the node they came from, and enforced by the same stages.
//! - **Lifting** an action lifts it on the fleet: every node's action of that kind on that target.
//!   Expired entries are dropped from the hash by whichever node reads them first.
//! - **Redis down**: writes wait (bounded) and are retried every poll; the actions read last stay in
//!   force until they expire. Writes never happen on a request's path.

use crate::exchange::PrincipalKind;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The hash of shared actions: field `<node>:<action id>`, value [`Shared`] as JSON.
pub(crate) const HASH: &str = "portcullis:anomaly:actions";
/// Bumped by every write.
pub(crate) const VERSION: &str = "portcullis:anomaly:actions:version";
/// Actions lifted (by any node, the raising one included): field to the action's expiry, as the
/// lifting node knew it, or later (a read that finds a marked field written again makes the mark
/// last as long as that write). Every reader drops a marked field; the raising node reads the marks
/// to tell a lift from a Redis that lost its data (then it writes its actions again), and a node
/// that adopted a previous process's actions to tell whether to write them back.
pub(crate) const LIFTED: &str = "portcullis:anomaly:actions:lifted";
/// Every this many polls the hash is read whole whatever the version says (a Redis restarted between
/// two polls can come back with the version a node last saw).
pub(crate) const FULL_READ_EVERY: u32 = 20;
/// Above this many shared actions the hash is read every five seconds instead of every poll.
pub(crate) const LARGE: usize = 10_000;
/// Shared actions read at most (an attacker with many networks raises many): the rest are skipped.
pub(crate) const MAX_READ: usize = 200_000;

/// One shared action, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Shared {
    /// `throttle`, `ban` or `challenge`.
    pub(crate) kind: String,
    pub(crate) target: SharedTarget,
    /// The target as the raising node lists it (`jwt:alice`, `203.0.113.7`, `2001:db8::/64`).
    pub(crate) label: String,
    pub(crate) detector: String,
    pub(crate) alert: u64,
    pub(crate) since_ms: u64,
    pub(crate) expires_ms: u64,
    /// A throttle's rate: nanoseconds between requests, and the burst.
    #[serde(default)]
    pub(crate) interval_ns: Option<u64>,
    #[serde(default)]
    pub(crate) burst: Option<u32>,
    /// A throttle's rate as listed (`1/s`).
    #[serde(default)]
    pub(crate) rate: Option<String>,
    /// The node that raised it.
    pub(crate) node: String,
    /// Its id, the same on every node (the admin API lifts it by this id on any node).
    #[serde(default)]
    pub(crate) id: u64,
}

/// What a read found.
pub(crate) struct Read {
    pub(crate) version: i64,
    /// The shared actions, by field.
    pub(crate) actions: Vec<(String, Shared)>,
    /// The fields lifted by a node other than the one that raised them.
    pub(crate) lifted: std::collections::HashSet<String>,
    /// Every field in the hash, including those past [`MAX_READ`] (present, only not held here).
    pub(crate) present: std::collections::HashSet<String>,
}

/// Who a shared action is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum SharedTarget {
    /// An address, or an IPv6 prefix (`2001:db8:1:2::/64`).
    Ip { address: String },
    /// A principal by its login method, issuer ("" when its credential names none) and whole id.
    Principal { method: String, iss: String, id: String },
}

impl SharedTarget {
    /// The login method of a principal target, when it is one this build knows.
    pub(crate) fn method(method: &str) -> Option<PrincipalKind> {
        super::engine::METHODS.into_iter().find(|m| m.as_str() == method)
    }
}

/// A change for the fleet's hash.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Put(String, String),
    /// This node's own action, gone (expired or lifted here).
    Del(String),
    /// Another node's action, lifted here: deleted, and marked lifted until its expiry.
    Lift(String, u64),
}

impl Op {
    pub(crate) fn field(&self) -> &str {
        match self {
            Op::Put(f, _) | Op::Del(f) | Op::Lift(f, _) => f,
        }
    }
}

/// The changes waiting for the fleet's hash: the latest per field (an action re-raised a thousand
/// times while Redis is down is one write), so nothing this node holds is dropped to bound it.
#[derive(Debug, Default)]
pub(crate) struct Outbox(HashMap<String, Op>);

impl Outbox {
    pub(crate) fn push(&mut self, op: Op) {
        self.0.insert(op.field().to_owned(), op);
    }

    /// Everything waiting, in no order (each field is written once).
    #[cfg(test)]
    pub(crate) fn take(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.0).into_values().collect()
    }

    /// A copy of everything waiting, to write: it stays here until written ([`Outbox::written`]), so
    /// that the store's row, which carries the lifts not yet written, never misses one in flight.
    pub(crate) fn pending(&self) -> Vec<Op> {
        self.0.values().cloned().collect()
    }

    /// `ops` are in Redis: each leaves, unless a later change of its field came meanwhile.
    pub(crate) fn written(&mut self, ops: &[Op]) {
        for op in ops {
            if self.0.get(op.field()) == Some(op) {
                self.0.remove(op.field());
            }
        }
    }

    /// The fields lifted here and not yet written.
    pub(crate) fn lifting(&self) -> impl Iterator<Item = &str> {
        self.lifts().map(|(field, _)| field)
    }

    /// The lifts not yet written, with the expiry each is marked until.
    pub(crate) fn lifts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.values().filter_map(|op| match op {
            Op::Lift(field, until) => Some((field.as_str(), *until)),
            _ => None,
        })
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// This node's name in the fleet's hash: the host name and a random suffix (two gateways on one host
/// are two nodes).
pub(crate) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    // 64 random bits: two nodes never share a name (they would take each other's actions for their own).
    let suffix = format!("{:016x}", super::engine::random_seed());
    // The tail of a long name is what tells pods apart.
    let host: Vec<char> = host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')).collect();
    let host: String = host[host.len().saturating_sub(48)..].iter().collect();
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

/// Deletes a lifted field and marks it lifted until ARGV[2] (ms), or later if it is marked later
/// already: a mark only ever moves later (a lift replayed from an old row, or written late, must not
/// shorten one a reader extended).
const LIFT: &str = "redis.call('HDEL', KEYS[1], ARGV[1]) \
    local was = tonumber(redis.call('HGET', KEYS[2], ARGV[1])) \
    if not was or was < tonumber(ARGV[2]) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end";

/// Marks `field` lifted until `until`, or at least a minute past `now` (when known): a lift written
/// late (Redis was down) after the action's expiry as the lifter knew it is still seen by every
/// node before it is collected, the raising node included (which may have extended the action).
fn lift(pipe: &mut redis::Pipeline, field: &str, until: u64, now: u64) {
    let until = until.max(now.saturating_add(60_000));
    pipe.cmd("EVAL").arg(LIFT).arg(2).arg(HASH).arg(LIFTED).arg(field).arg(until).ignore();
}

/// Writes `ops` (in order) and bumps the version once. All or none: an error leaves them to retry.
/// `now`: wall time (ms), 0 under the simulated clock.
pub(crate) fn write(conn: &mut crate::fleet::Blocking, ops: &[Op], now: u64) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    conn.with(|c| {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in ops {
            match op {
                Op::Put(field, value) => {
                    pipe.hset(HASH, field, value).ignore();
                }
                Op::Del(field) => {
                    pipe.hdel(HASH, field).ignore();
                }
                Op::Lift(field, until) => lift(&mut pipe, field, *until, now),
            }
        }
        pipe.incr(VERSION, 1).ignore().query::<()>(c)
    })
}

/// The version, and the shared actions when it is not `seen` (unreadable entries are skipped and
/// logged). Entries whose expiry is over a minute before `now` (when known) are dropped from the hash.
pub(crate) fn read(conn: &mut crate::fleet::Blocking, seen: Option<i64>, now: u64) -> Result<Option<Read>, String> {
    let version = conn.with(|c| redis::cmd("GET").arg(VERSION).query::<Option<i64>>(c))?.unwrap_or(0);
    if seen == Some(version) {
        return Ok(None);
    }
    let all: HashMap<String, String> = conn.with(|c| redis::cmd("HGETALL").arg(HASH).query(c))?;
    let mut out = Vec::with_capacity(all.len().min(MAX_READ));
    let mut stale = Vec::new();
    let mut present = std::collections::HashSet::with_capacity(all.len());
    for (field, value) in all {
        match serde_json::from_str::<Shared>(&value) {
            Ok(s) if now > 0 && s.expires_ms.saturating_add(60_000) < now => stale.push(field),
            Ok(s) => {
                present.insert(field.clone());
                out.push((field, s));
            }
            Err(e) => {
                present.insert(field.clone());
                tracing::warn!(field = %field, error = %e, "anomaly: unreadable shared action in redis skipped");
            }
        }
    }
    if out.len() > MAX_READ {
        // Principals first (a challenge or ban of a stolen credential), then the addresses that
        // expire last: an attacker with many networks must not push those out.
        out.sort_by_key(|(_, s)| (matches!(s.target, SharedTarget::Ip { .. }), std::cmp::Reverse(s.expires_ms)));
        tracing::warn!(skipped = out.len() - MAX_READ, "anomaly: more shared actions than a node holds; some skipped");
        out.truncate(MAX_READ);
    }
    if !stale.is_empty() {
        conn.with(|c| redis::cmd("HDEL").arg(HASH).arg(&stale).query::<()>(c))?;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let marks: HashMap<String, String> = conn.with(|c| redis::cmd("HGETALL").arg(LIFTED).query(c))?;
    // An unreadable mark still marks its field lifted (until it is removed by hand).
    let mut marks: HashMap<String, u64> =
        marks.into_iter().map(|(f, until)| (f, until.parse::<u64>().unwrap_or(u64::MAX))).collect();
    // A field in the hash and marked was written again after its lift, by a node that had not seen
    // the lift yet (or wrote from an outbox Redis was down for): lifted. It is deleted, and its mark
    // kept as long as that write would have held, so that the write does not outlive the mark and
    // come back in force once the mark is collected.
    let mut relift = Vec::new();
    out.retain(|(field, s)| {
        let Some(until) = marks.get_mut(field) else { return true };
        *until = (*until).max(s.expires_ms);
        relift.push((field.clone(), *until));
        false
    });
    if !relift.is_empty() {
        conn.with(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (field, until) in &relift {
                lift(&mut pipe, field, *until, 0);
            }
            pipe.query::<()>(c)
        })?;
        for (field, _) in &relift {
            present.remove(field);
        }
    }
    let (old, lifted): (Vec<_>, Vec<_>) =
        marks.into_iter().partition(|(_, until)| now > 0 && until.saturating_add(60_000) < now);
    if !old.is_empty() {
        let old: Vec<String> = old.into_iter().map(|(f, _)| f).collect();
        conn.with(|c| redis::cmd("HDEL").arg(LIFTED).arg(&old).query::<()>(c))?;
    }
    Ok(Some(Read { version, actions: out, lifted: lifted.into_iter().map(|(f, _)| f).collect(), present }))
}

/// For tests: `node`'s challenge of the JWT principal `alice` of `https://idp.test`.
#[cfg(test)]
impl Shared {
    pub(crate) fn alices_challenge(since_ms: u64, expires_ms: u64, node: &str) -> Shared {
        Shared {
            kind: "challenge".into(),
            target: SharedTarget::Principal {
                method: "jwt".into(),
                iss: "https://idp.test".into(),
                id: "alice".into(),
            },
            label: "jwt:alice".into(),
            detector: "token_sharing".into(),
            alert: 1,
            since_ms,
            expires_ms,
            interval_ns: None,
            burst: None,
            rate: None,
            node: node.into(),
            id: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_shared_action_reads_back_as_written_and_unknown_fields_are_refused() {
        let s = Shared { alert: 7, id: 9, ..Shared::alices_challenge(1, 2, "a-010203") };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shared>(&text).unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["target"]["extra"] = "x".into();
        assert!(serde_json::from_value::<Shared>(v).is_err());
        let ip: SharedTarget = serde_json::from_str(r#"{"kind":"ip","address":"2001:db8::/64"}"#).unwrap();
        assert_eq!(ip, SharedTarget::Ip { address: "2001:db8::/64".into() });
    }

    /// What waits stays in the outbox while it is written, and leaves once written unless its field
    /// changed meanwhile (a lift while a put was in flight is not lost).
    #[test]
    fn the_outbox_keeps_what_is_in_flight() {
        let mut o = Outbox::default();
        o.push(Op::Put("a:1".into(), "v1".into()));
        o.push(Op::Lift("b:1".into(), 5));
        let ops = o.pending();
        assert_eq!(o.lifts().collect::<Vec<_>>(), [("b:1", 5)]);
        o.push(Op::Lift("a:1".into(), 7));
        o.written(&ops);
        assert_eq!(o.take(), [Op::Lift("a:1".into(), 7)]);
    }

    /// A redis-server of this test's own on a free loopback port, killed when dropped.
    struct OwnRedis(std::process::Child, u16);

    impl OwnRedis {
        fn start() -> Option<OwnRedis> {
            let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let r = OwnRedis(child, port);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Some(r)
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A lift's mark only ever moves later: a lift written late or replayed from an old row (an
    /// earlier expiry) does not shorten a mark a reader extended; a late lift past its expiry is
    /// marked for a minute at least. A field written again after its mark is deleted by the next
    /// read, and its mark made to last as long as it. Against a real redis-server.
    #[test]
    fn a_lifts_mark_only_moves_later_and_outlasts_a_late_write() {
        let server = OwnRedis::start().expect("redis-server (scripts/test.sh installs it)");
        let cfg = crate::fleet::RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", server.1),
            username: None,
            password: None,
            command_timeout: crate::units::Dur(std::time::Duration::from_secs(2)),
            connect_timeout: crate::units::Dur(std::time::Duration::from_secs(2)),
            share_bans: true,
        };
        let fleet = crate::fleet::Fleet::new(&cfg).unwrap();
        let mut c = fleet.blocking();
        let now = 1_000_000_000_000u64;
        let mark = |c: &mut crate::fleet::Blocking, f: &str| -> Option<u64> {
            c.with(|c| redis::cmd("HGET").arg(LIFTED).arg(f).query::<Option<u64>>(c)).unwrap()
        };
        write(&mut c, &[Op::Lift("a:1".into(), now + 3_600_000)], now).unwrap();
        write(&mut c, &[Op::Lift("a:1".into(), now + 600_000)], now).unwrap();
        assert_eq!(mark(&mut c, "a:1"), Some(now + 3_600_000), "a later lift shortened the mark");
        write(&mut c, &[Op::Lift("a:2".into(), now - 600_000)], now).unwrap();
        assert_eq!(mark(&mut c, "a:2"), Some(now + 60_000));
        // The raising node's extension lands after the lift: the next read deletes it and extends
        // the mark to its expiry.
        let late = Shared::alices_challenge(now, now + 7_200_000, "a");
        write(&mut c, &[Op::Put("a:1".into(), serde_json::to_string(&late).unwrap())], now).unwrap();
        let read = read(&mut c, None, now).unwrap().unwrap();
        assert!(read.actions.is_empty() && !read.present.contains("a:1") && read.lifted.contains("a:1"));
        assert_eq!(mark(&mut c, "a:1"), Some(now + 7_200_000));
        let left: bool = c.with(|c| redis::cmd("HEXISTS").arg(HASH).arg("a:1").query(c)).unwrap();
        assert!(!left, "the late write is still in the hash");
    }

    #[test]
    fn node_names_are_distinct_and_tidy() {
        let (a, b) = (node_name(), node_name());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')), "{a}");
        assert_eq!(SharedTarget::method("jwt"), Some(PrincipalKind::Jwt));
        assert_eq!(SharedTarget::method("mtls"), Some(PrincipalKind::ClientCertificate));
        assert_eq!(SharedTarget::method("nope"), None);
    }
}
