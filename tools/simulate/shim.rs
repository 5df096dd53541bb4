//! TEMPORARY: stands in for the engine until helper C's branch is merged.
#![allow(dead_code)]
use portcullis::anomaly::{Alert, Detector, Record, Signals};

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) sensitivity: f64,
    pub(crate) max_entities: usize,
    pub(crate) ipv6_prefix: u8,
    pub(crate) cooldown_ms: u64,
    pub(crate) enabled: Vec<Detector>,
}
impl Default for Settings {
    fn default() -> Self {
        Settings { sensitivity: 1.0, max_entities: 1_000_000, ipv6_prefix: 64, cooldown_ms: 600_000, enabled: Detector::ALL.to_vec() }
    }
}
pub(crate) struct Engine;
impl Engine {
    pub(crate) fn new(_: Settings) -> Engine {
        Engine
    }
    pub(crate) fn observe(&mut self, _: &Record, _: &mut Vec<Alert>) {}
    pub(crate) fn tick(&mut self, _: u64, _: &mut Vec<Alert>) {}
}
pub(crate) fn signals(_: &http::HeaderMap) -> Signals {
    Signals::default()
}
