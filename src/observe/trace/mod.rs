//! OpenTelemetry traces (`traces:`): one server span per request, a child span per stage of the route's
//! chain, a client span for the upstream call, exported over OTLP/HTTP (protobuf) in batches by one
//! background thread behind a bounded queue; and W3C Trace Context (`traceparent`, `tracestate`)
//! propagated to upstreams, continued from an incoming request only when its peer is a trusted proxy.
//!
//! Owns: the `traces:` section, sampling, trace-context parsing, the spans of a request and their
//! export. Never: blocks or slows a request on the collector (a full queue drops spans and counts them),
//! exports a query string, a header value or a body, or fails a request over a malformed `traceparent`.
//!
//! The pipeline reports to a request's trace through [`crate::exchange::Trace`]. Behind the cargo
//! feature `otel` (on by default); without it, [`Tracer`] is an empty type that cannot be made, and a
//! `traces:` section is a config error.

mod config;
pub use config::TracesConfig;

#[cfg(feature = "otel")]
mod context;
#[cfg(feature = "otel")]
mod export;
#[cfg(feature = "otel")]
mod span;
#[cfg(feature = "otel")]
pub use span::{Kept, Tracer};

#[cfg(not(feature = "otel"))]
mod off;
#[cfg(not(feature = "otel"))]
pub use off::{Kept, Tracer};
