//! `max_age` of stored API keys: a key older than this (since its `created_at`) is refused (`too_old`),
//! and for `warn_before` ahead of that it is "nearing": the gateway emits a `key.lifecycle` event
//! (reason `nearing_max_age`) for it once a day per key (and once after each process start), counts
//! such keys in `portcullis_api_keys_nearing_max_age{authenticator}`, and `portcullis keys list` flags it.

use super::KeyMap;
use crate::events::{Emitter, Event, Kind, Severity};
use crate::units::Dur;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The longest default warning period.
const DEFAULT_WARN: i64 = 14 * 86_400;
/// A key nearing `max_age` is warned about at most this often.
const WARN_EVERY: i64 = 86_400;

/// `max_age` and `warn_before`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    pub max_age: i64,
    pub warn_before: i64,
}

impl Aging {
    /// `None` without `max_age`; an error for a zero `max_age`, or a `warn_before` not below it.
    pub fn new(max_age: Option<Dur>, warn_before: Option<Dur>) -> Result<Option<Aging>, String> {
        let secs = |d: Dur| d.0.as_secs().min(i64::MAX as u64 / 2) as i64;
        let Some(max_age) = max_age.map(secs) else {
            return match warn_before {
                Some(_) => Err("warn_before needs max_age".into()),
                None => Ok(None),
            };
        };
        if max_age == 0 {
            return Err("max_age must be at least 1s".into());
        }
        let warn_before = warn_before.map_or((max_age / 10).min(DEFAULT_WARN), secs);
        if warn_before >= max_age {
            return Err("warn_before must be shorter than max_age".into());
        }
        Ok(Some(Aging { max_age, warn_before }))
    }

    /// When a key made at `created` reaches `max_age`.
    pub fn end(&self, created: i64) -> i64 {
        created.saturating_add(self.max_age)
    }

    pub fn too_old(&self, created: i64, now: i64) -> bool {
        now >= self.end(created)
    }

    /// Within `warn_before` of `max_age`, and not past it.
    pub fn nearing(&self, created: i64, now: i64) -> bool {
        let end = self.end(created);
        now < end && now >= end.saturating_sub(self.warn_before)
    }
}

/// The effective expiry of a key: the sooner of its `expires_at` and `created_at + max_age`.
pub fn effective_expiry(expires_at: Option<i64>, created_at: Option<i64>, aging: Option<&Aging>) -> Option<i64> {
    let aged = created_at.zip(aging).map(|(c, a)| a.end(c));
    match (expires_at, aged) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A key nearing its `max_age`, as the admin API lists it (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nearing {
    pub id: String,
    pub principal: String,
    /// Unix seconds at which the key reaches `max_age`.
    pub max_age_at: i64,
    pub seconds_left: i64,
}

/// The usable keys of `keys` nearing `max_age` at `now`, soonest first.
pub fn nearing(aging: &Aging, keys: &KeyMap, now: i64) -> Vec<Nearing> {
    let mut out: Vec<Nearing> = keys
        .values()
        .filter(|k| !k.revoked && k.expires_at.is_none_or(|t| now < t) && k.grace_until.is_none_or(|t| now < t))
        .filter_map(|k| {
            let created = k.created_at?;
            aging.nearing(created, now).then(|| Nearing {
                id: k.id.clone(),
                principal: k.principal.id.clone(),
                max_age_at: aging.end(created),
                seconds_left: aging.end(created) - now,
            })
        })
        .collect();
    out.sort_by(|a, b| a.max_age_at.cmp(&b.max_age_at).then_with(|| a.id.cmp(&b.id)));
    out
}

/// The warnings of one authenticator.
pub struct Warnings {
    name: String,
    out: OnceLock<(Emitter, Gauge)>,
    /// Key id → when it was last warned about (unix seconds).
    warned: Mutex<HashMap<String, i64>>,
}

impl Warnings {
    pub fn new(name: &str) -> Warnings {
        Warnings { name: name.to_owned(), out: OnceLock::new(), warned: Mutex::new(HashMap::new()) }
    }

    /// Where warnings go (set once; the emitter is the process's, whatever config is in force).
    pub fn connect(&self, events: Emitter, gauge: Gauge) {
        let _ = self.out.set((events, gauge));
    }

    /// Looks at every stored key at `now`: counts those nearing `max_age`, and emits an event for each
    /// not warned about in the last day. Returns how many are nearing.
    pub fn scan(&self, aging: &Aging, keys: &KeyMap, now: i64) -> usize {
        let list = nearing(aging, keys, now);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for k in &list {
            if warned.get(&k.id).is_some_and(|last| now - last < WARN_EVERY) {
                continue;
            }
            warned.insert(k.id.clone(), now);
            tracing::warn!(
                target: "security",
                authenticator = self.name.as_str(),
                key = k.id.as_str(),
                max_age_at = k.max_age_at,
                "API key nearing its max_age; rotate it"
            );
            if let Some((events, _)) = self.out.get() {
                events.emit(
                    Event::new(Kind::KeyLifecycle, "nearing_max_age")
                        .rule(k.id.clone())
                        .severity(Severity::Low)
                        .attr("authenticator", self.name.clone())
                        .attr("key_principal", k.principal.clone())
                        .attr("max_age_at", k.max_age_at)
                        .attr("seconds_left", k.seconds_left),
                );
            }
        }
        // Forget keys no longer nearing (rotated, revoked, past max_age), so the map stays small.
        warned.retain(|id, _| list.iter().any(|k| k.id == *id));
        if let Some((_, gauge)) = self.out.get() {
            gauge.set(list.len() as i64);
        }
        list.len()
    }
}

/// A stored key's state at `t`: `revoked`, `expired`, `too_old` (past `max_age`), `rotated` (its grace
/// is over), `grace` (rotated, still valid) or `active`.
pub fn status(k: &super::store::KeyInfo, aging: Option<&Aging>, t: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| t >= e) {
        "expired"
    } else if aging.is_some_and(|a| a.too_old(k.created_at, t)) {
        "too_old"
    } else if k.grace_until.is_some_and(|g| t >= g) {
        "rotated"
    } else if k.grace_until.is_some() {
        "grace"
    } else {
        "active"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{principal, KeyRecord};
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn d(s: u64) -> Option<Dur> {
        Some(Dur(Duration::from_secs(s)))
    }

    #[test]
    fn aging_defaults_and_bounds() {
        assert_eq!(Aging::new(None, None).unwrap(), None);
        assert!(Aging::new(None, d(10)).is_err());
        assert!(Aging::new(d(0), None).is_err());
        assert!(Aging::new(d(100), d(100)).is_err());
        assert_eq!(Aging::new(d(90 * 86_400), None).unwrap().unwrap().warn_before, 9 * 86_400);
        assert_eq!(Aging::new(d(365 * 86_400), None).unwrap().unwrap().warn_before, 14 * 86_400);
        let a = Aging::new(d(100), d(10)).unwrap().unwrap();
        assert!(!a.nearing(0, 89) && a.nearing(0, 90) && a.nearing(0, 99) && !a.nearing(0, 100));
        assert!(!a.too_old(0, 99) && a.too_old(0, 100));
        assert_eq!(effective_expiry(Some(50), Some(0), Some(&a)), Some(50));
        assert_eq!(effective_expiry(Some(500), Some(0), Some(&a)), Some(100));
        assert_eq!(effective_expiry(None, None, Some(&a)), None);
        assert_eq!(effective_expiry(Some(7), None, None), Some(7));
    }

    #[test]
    fn warns_once_a_day_per_key() {
        let a = Aging::new(d(100 * 86_400), d(10 * 86_400)).unwrap().unwrap();
        let key = |id: &str, created: Option<i64>| {
            Arc::new(KeyRecord {
                id: id.into(),
                created_at: created,
                principal: principal("p", vec![], vec![]),
                expires_at: None,
                grace_until: None,
                revoked: false,
                allowed: vec![],
                unusable: false,
            })
        };
        let mut keys = KeyMap::new();
        keys.insert([1; 32], key("near", Some(0)));
        keys.insert([2; 32], key("young", Some(50 * 86_400)));
        keys.insert([3; 32], key("declared", None));
        let w = Warnings::new("k");
        let now = 95 * 86_400;
        assert_eq!(w.scan(&a, &keys, now), 1);
        assert_eq!(w.warned.lock().unwrap().get("near"), Some(&now));
        assert_eq!(w.scan(&a, &keys, now + 3600), 1);
        assert_eq!(w.warned.lock().unwrap().get("near"), Some(&now), "not again within the day");
        assert_eq!(w.scan(&a, &keys, now + 86_400), 1);
        assert_eq!(w.warned.lock().unwrap().get("near"), Some(&(now + 86_400)));
        assert_eq!(w.scan(&a, &keys, 100 * 86_400), 0, "past max_age: refused, no longer nearing");
        assert!(w.warned.lock().unwrap().is_empty());
    }
}
