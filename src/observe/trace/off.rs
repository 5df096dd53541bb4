//! Without the `otel` feature: types that cannot be made, so every tracing call in the pipeline is
//! dead code, and a `traces:` section is refused.

use super::TracesConfig;
use crate::exchange::{Exchange, Place};
use crate::observe::metrics::Metrics;
use crate::observe::privacy::Privacy;
use http::HeaderMap;
use std::sync::Arc;
use std::time::Instant;

pub enum Tracer {}

impl Tracer {
    pub fn start(self: &Arc<Self>, _: bool, _: &http::request::Parts, _: Instant) -> Box<Trace> {
        match **self {}
    }
}

pub enum Trace {}

impl Trace {
    pub fn recording(&self) -> bool {
        match *self {}
    }
    pub fn stage(&mut self, _: Place, _: Instant, _: bool) {
        match *self {}
    }
    pub fn upstream_start(&mut self, _: &mut HeaderMap) {
        match *self {}
    }
    pub fn upstream_end(
        &mut self,
        _: &crate::proxy::Upstream,
        _: &Result<(http::Response<crate::proxy::UpstreamBody>, std::time::Duration), crate::exchange::Reject>,
    ) {
        match *self {}
    }
    // The same signature as the real one (which moves the trace out of its box).
    #[allow(clippy::boxed_local)]
    pub fn finish(self: Box<Self>, _: &Exchange<'_>, _: u16, _: Option<&'static str>) {
        match *self {}
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
