//! Without the `otel` feature: a tracer that cannot be made, so no request has a trace, and a
//! `traces:` section is refused.

use super::TracesConfig;
use crate::exchange::Trace;
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use std::sync::Arc;
use std::time::Instant;

pub enum Tracer {}

impl Tracer {
    pub fn start(self: &Arc<Self>, _: bool, _: &http::request::Parts, _: Instant) -> Box<dyn Trace> {
        match **self {}
    }
}

#[derive(Default)]
pub struct Kept {}

impl Kept {
    pub fn tracer(&self, cfg: Option<&TracesConfig>, _: &Privacy, _: &Metrics) -> Result<Option<Arc<Tracer>>, String> {
        match cfg {
            None => Ok(None),
            Some(_) => Err("traces: this portcullis was built without OpenTelemetry support (the cargo feature \
                            `otel`); remove the `traces:` section or use a build with the feature"
                .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traces_section_is_refused() {
        let cfg: TracesConfig = serde_yaml_ng::from_str("endpoint: http://127.0.0.1:4318").unwrap();
        let privacy = Privacy::new(Default::default(), b"test key");
        let err = Kept::default().tracer(Some(&cfg), &privacy, &Metrics::new()).err().unwrap();
        assert!(err.contains("cargo feature `otel`"), "{err}");
        assert!(Kept::default().tracer(None, &privacy, &Metrics::new()).unwrap().is_none());
    }
}
