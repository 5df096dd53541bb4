//! TEMPORARY: stands in for the engine until it lands (coordinator's compile check only).
#![allow(dead_code, unused_variables, clippy::unused_self, clippy::ptr_arg, missing_docs)]
use super::{Alert, Detector, Record, Signals};

#[derive(Debug, Clone)]
pub struct Settings {
    pub sensitivity: f64,
    pub max_entities: usize,
    pub ipv6_prefix: u8,
    pub cooldown_ms: u64,
    pub enabled: Vec<Detector>,
}
pub struct Engine;
pub struct Suggestion {
    pub route: u16,
    pub principals: usize,
    pub samples: u64,
    pub per_minute: f64,
    pub per_second: f64,
    pub rate: String,
    pub burst: u32,
}
impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine
    }
    pub fn observe(&mut self, record: &Record, alerts: &mut Vec<Alert>) {}
    pub fn tick(&mut self, now_ms: u64, alerts: &mut Vec<Alert>) {}
    pub fn entities(&self) -> usize {
        0
    }
    pub fn memory_bytes(&self) -> usize {
        0
    }
    pub fn suggest(&self, quantile: f64, margin: f64) -> Vec<Suggestion> {
        Vec::new()
    }
    pub fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    pub fn restore(settings: Settings, bytes: &[u8]) -> Result<Engine, String> {
        Ok(Engine)
    }
}
pub fn signals(headers: &http::HeaderMap) -> Signals {
    Signals::default()
}
