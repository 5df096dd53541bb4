//! The `traces:` section (always parsed, so a build without the `otel` feature can name it in its
//! error).

use crate::units::Dur;
use serde::Deserialize;

/// The top-level `traces:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The OTLP/HTTP collector's base URL (`http://HOST:PORT`); spans are POSTed to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// The share of new traces recorded and exported, 0 to 1. A trusted proxy's `traceparent` decides
    /// for the traces it continues (parent-based).
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the exported resource.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// At most this many spans wait for export; more are dropped and counted.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// At most this many spans per export request.
    #[serde(default = "defaults::batch")]
    pub batch: usize,
    /// A partial batch is sent after this long.
    #[serde(default = "defaults::flush_interval")]
    pub flush_interval: Dur,
    /// One export request (connect, send, answer) may take this long.
    #[serde(default = "defaults::timeout")]
    pub timeout: Dur,
}

mod defaults {
    use crate::units::Dur;
    pub(super) fn sample_ratio() -> f64 {
        1.0
    }
    pub(super) fn service_name() -> String {
        "portcullis".into()
    }
    pub(super) fn queue() -> usize {
        2048
    }
    pub(super) fn batch() -> usize {
        512
    }
    pub(super) fn flush_interval() -> Dur {
        Dur::secs(1)
    }
    pub(super) fn timeout() -> Dur {
        Dur::secs(10)
    }
}

impl TracesConfig {
    /// The values no request could make sense of, with what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!("traces.sample_ratio is {}; it must be between 0 and 1", self.sample_ratio));
        }
        if self.service_name.trim().is_empty() {
            return Err("traces.service_name must not be empty".into());
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(format!("traces.queue is {}; it must be between 1 and 1000000 spans", self.queue));
        }
        if self.batch == 0 || self.batch > self.queue {
            return Err(format!(
                "traces.batch is {}; it must be between 1 and traces.queue ({})",
                self.batch, self.queue
            ));
        }
        if self.flush_interval.0.is_zero() || self.timeout.0.is_zero() {
            return Err("traces.flush_interval and traces.timeout must be longer than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TracesConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c = parse("endpoint: http://127.0.0.1:4318").unwrap();
        assert_eq!((c.sample_ratio, c.queue, c.batch), (1.0, 2048, 512));
        assert_eq!(c.service_name, "portcullis");
        assert!(c.validate().is_ok());
        assert!(parse("endpoint: http://x\nsampling: 1").unwrap_err().contains("unknown field"));
        assert!(parse("sample_ratio: 1").unwrap_err().contains("endpoint"));
    }

    #[test]
    fn impossible_values() {
        for bad in [
            "sample_ratio: 1.5",
            "sample_ratio: -0.1",
            "sample_ratio: .nan",
            "queue: 0",
            "batch: 0",
            "queue: 4\nbatch: 8",
            "service_name: ' '",
            "flush_interval: 0s",
        ] {
            let c = parse(&format!("endpoint: http://127.0.0.1:4318\n{bad}")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
