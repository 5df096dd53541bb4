//! Connection guards (issue 12): IP allow and deny lists, bans and automatic bans. They judge the
//! client address the trusted-proxy rules decided (`Exchange::client_ip`), before anything else of
//! the request is looked at, and never see credentials.
//!
//! - [`filter`]: `ip_filter:` lists (global, and per route after the route is known); 403 `ip-denied`.
//! - [`bans`]: temporary bans of an address, a prefix or a principal (`portcullis bans`), kept in the
//!   `store:` file; 403 `banned` (addresses before authentication, principals right after it).
//! - [`auto`]: `auto_ban:`, N answers of the given statuses to one address within a window ban it.
//! - [`prefix`]: the prefix structure they all match with.
//!
//! This module imports no other stage, the server, the proxy or the pipeline.

pub mod auto;
pub mod bans;
pub mod cli;
pub mod filter;
pub mod prefix;

use crate::exchange::{Exchange, Reject};
use auto::{AutoBanConfig, Tracker};
use bans::{Bans, Target};
use filter::IpFilter;
use prefix::IpSet;
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often list files are checked for changes.
const LIST_POLL: Duration = Duration::from_secs(1);

/// What outlives a reload: the bans (by store path) and the automatic-ban counts.
#[derive(Default)]
pub struct Kept {
    bans: crate::exchange::Registry<Bans>,
    tracker: crate::exchange::Registry<Tracker>,
}

impl Kept {
    /// The node's bans for this `store:` (in memory without one), opened once and kept across reloads.
    pub fn bans(
        &self,
        store: Option<&crate::store::StoreConfig>,
        fleet: Option<&Arc<crate::fleet::Fleet>>,
    ) -> Result<Arc<Bans>, String> {
        if let Some(fleet) = fleet {
            let key = format!("redis:{:p}", Arc::as_ptr(fleet));
            return Ok(self.bans.get_or_insert(&key, |_| {}, || Bans::redis(fleet)));
        }
        let key = store.map_or_else(|| "memory".to_owned(), |s| format!("sqlite:{}", s.sqlite.display()));
        let mut failed = None;
        let bans = self.bans.get_or_insert(
            &key,
            |_| {},
            || match Bans::open(store.map(|s| s.sqlite.as_path())) {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e);
                    // Dropped with the error below (the registry holds it weakly).
                    Bans::empty(None)
                }
            },
        );
        match failed {
            Some(e) => Err(format!("store: {e}")),
            None => Ok(bans),
        }
    }
}

/// What routes' guard stages share while a config compiles: the node's bans, and the route filters
/// whose list files the global guard watches.
pub struct RouteGuards {
    pub bans: Arc<Bans>,
    pub watched: Vec<Arc<IpFilter>>,
}

/// Compiled `auto_ban:`.
struct AutoBan {
    after: u32,
    statuses: Vec<u16>,
    within_ms: u64,
    ban_for: Duration,
    ipv6_prefix: u8,
    ignore: IpSet<()>,
    tracker: Arc<Tracker>,
    counted: Counter,
}

/// The global guard: the global `ip_filter`, the node's bans and `auto_ban`; it also watches every
/// filter's list files (per-route ones too) while its runtime is in use.
pub struct Guard {
    filter: Option<Arc<IpFilter>>,
    bans: Arc<Bans>,
    auto: Option<AutoBan>,
    watched: Vec<Arc<IpFilter>>,
    list_failures: Counter,
}

impl Guard {
    /// Compiles the global guard. `watched` are the per-route filters with list files.
    pub fn compile(
        filter: Option<&filter::IpFilterConfig>,
        auto_ban: Option<&AutoBanConfig>,
        routes: RouteGuards,
        kept: &Kept,
        counters: (Counter, Counter),
    ) -> Result<Guard, String> {
        let RouteGuards { bans, mut watched } = routes;
        let filter = filter.map(|f| IpFilter::compile("ip_filter", f).map(Arc::new)).transpose()?;
        if let Some(f) = filter.as_ref().filter(|f| f.has_files()) {
            watched.push(f.clone());
        }
        let auto = auto_ban.map(|a| compile_auto(a, kept, counters.0)).transpose()?;
        Ok(Guard { filter, bans, auto, watched, list_failures: counters.1 })
    }

    /// Before anything else: the global lists, then address bans (403).
    #[inline]
    pub fn check(&self, ip: IpAddr) -> Result<(), Reject> {
        if let Some(f) = &self.filter {
            f.check(ip)?;
        }
        if self.bans.ip_banned(ip).is_some() {
            return Err(Reject::Banned);
        }
        Ok(())
    }

    /// After the answer is known: counts it towards an automatic ban of the client's address.
    #[inline]
    pub fn observe(&self, ip: IpAddr, status: u16) {
        let Some(a) = &self.auto else { return };
        if !a.statuses.contains(&status) {
            return;
        }
        a.observe(ip, status, &self.bans);
    }

    pub fn bans(&self) -> &Arc<Bans> {
        &self.bans
    }

    /// Starts the ban poll loop (once per store) and the list-file watch for this runtime's filters
    /// (ends when the runtime is dropped). Needs a tokio runtime.
    pub fn start(self: &Arc<Self>) {
        // Also for bans in memory only: the poll loop is what notices expiries (`ban.expired`).
        self.bans.start();
        if self.watched.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LIST_POLL).await;
                let Some(guard) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || guard.refresh_lists()).await;
            }
        });
    }

    /// Re-reads the list files that changed; a bad one keeps the lists in force (logged, counted).
    pub fn refresh_lists(&self) {
        for f in &self.watched {
            match f.refresh() {
                Ok(true) => tracing::info!(filter = f.name(), "IP list files re-read"),
                Ok(false) => {}
                Err(e) => {
                    self.list_failures.inc();
                    tracing::error!(filter = f.name(), error = %e, "IP list file refused; the lists in force stay");
                }
            }
        }
    }

    /// What `check` prints of the global guard.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.filter {
            parts.push(f.describe());
        }
        parts.push(match self.bans.store_path() {
            _ if self.bans.shared() => "bans: redis".into(),
            Some(p) => format!("bans: {}", p.display()),
            None => "bans: in memory".into(),
        });
        if let Some(a) = &self.auto {
            parts.push(format!("auto_ban: {} x {:?} within {} ms", a.after, a.statuses, a.within_ms));
        }
        parts.join("; ")
    }
}

fn compile_auto(a: &AutoBanConfig, kept: &Kept, counted: Counter) -> Result<AutoBan, String> {
    if !(2..=1000).contains(&a.after) {
        return Err("auto_ban.after must be between 2 and 1000".into());
    }
    if a.statuses.is_empty() || a.statuses.iter().any(|s| !(100..=599).contains(s)) {
        return Err("auto_ban.statuses must list HTTP statuses (100 to 599)".into());
    }
    if a.within.0.is_zero() || a.ban_for.0.is_zero() {
        return Err("auto_ban.within and auto_ban.ban_for must be positive".into());
    }
    let ipv6_prefix = a.ipv6_prefix.unwrap_or(64);
    if !(1..=128).contains(&ipv6_prefix) {
        return Err("auto_ban.ipv6_prefix must be between 1 and 128".into());
    }
    let max = a.max_tracked.unwrap_or(100_000);
    if max == 0 {
        return Err("auto_ban.max_tracked must be at least 1".into());
    }
    let ignore = a
        .ignore
        .iter()
        .map(|e| {
            prefix::parse_entry(e)
                .map(|n| (n, ()))
                .ok_or_else(|| format!("auto_ban.ignore: `{e}` is not a CIDR or an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tracker = kept.tracker.get_or_insert("auto_ban", |_| {}, || Tracker::new(max));
    Ok(AutoBan {
        after: a.after,
        statuses: a.statuses.clone(),
        within_ms: a.within.0.as_millis() as u64,
        ban_for: a.ban_for.0,
        ipv6_prefix,
        ignore: IpSet::build(ignore, |_, _| ()),
        tracker,
        counted,
    })
}

impl AutoBan {
    fn observe(&self, ip: IpAddr, status: u16, bans: &Arc<Bans>) {
        if self.ignore.contains(ip) {
            return;
        }
        let (key, block) = auto::block_of(ip, self.ipv6_prefix);
        if !self.tracker.record(key, self.tracker.now(), self.after, self.within_ms) {
            return;
        }
        let until = bans::now_ms() + self.ban_for.as_millis() as i64;
        let target = if block.prefix_len() == block.max_prefix_len() {
            Target::Ip(block.network())
        } else {
            Target::Prefix(block)
        };
        let reason = format!("auto_ban: {} answers {:?} within {} ms", self.after, self.statuses, self.within_ms);
        if bans.add_here(target, until, reason) {
            self.counted.inc();
            tracing::warn!(
                target: "security",
                // The address is in the `ban.set` event (as `logging.client_ip` says) and `bans list`.
                event = "auto_ban",
                last_status = status,
                answers = self.after,
                within_ms = self.within_ms,
                ban_for_s = self.ban_for.as_secs(),
                "client banned automatically"
            );
        }
    }
}

/// A route's own `ip_filter` (at the connection-guards place, once the route is known).
pub fn check_route(filter: &IpFilter, ex: &Exchange<'_>) -> Result<(), Reject> {
    filter.check(ex.client_ip)
}

/// Right after authentication: a banned principal is refused (403 `banned`).
pub fn check_principal(bans: &Bans, ex: &Exchange<'_>) -> Result<(), Reject> {
    match ex.principal.as_deref() {
        Some(p) if bans.principal_banned(p.kind.as_str(), &p.id).is_some() => {
            tracing::info!(
                target: "security",
                event = "banned_principal",
                request_id = ex.request_id,
                principal = p.id.as_str(),
                method = p.kind.as_str(),
                "banned principal refused"
            );
            Err(Reject::Banned)
        }
        _ => Ok(()),
    }
}
