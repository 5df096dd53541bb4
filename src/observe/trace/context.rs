//! W3C Trace Context (`traceparent`, `tracestate`): strict parsing of what a trusted proxy sent, the
//! identifiers the gateway makes, and the `traceparent` it sends upstream.

use http::{HeaderMap, HeaderValue};

pub(super) const TRACEPARENT: &str = "traceparent";
pub(super) const TRACESTATE: &str = "tracestate";

pub(super) type TraceId = [u8; 16];
pub(super) type SpanId = [u8; 8];

/// A `traceparent` received from a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parent {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    pub(super) sampled: bool,
    /// Its `tracestate`, forwarded unchanged (only when it is one well-formed line).
    pub(super) state: Option<HeaderValue>,
}

/// The trace context in `headers`, or `None` when there is none or it is malformed (one line, version
/// `00`, lowercase hex of the right lengths, neither id all zeros). A malformed one is ignored: the
/// request starts a new trace and is never refused for it.
pub(super) fn incoming(headers: &HeaderMap) -> Option<Parent> {
    let mut lines = headers.get_all(TRACEPARENT).iter();
    let (value, None) = (lines.next()?, lines.next()) else { return None };
    let (trace_id, span_id, sampled) = parse_traceparent(value.as_bytes())?;
    let mut states = headers.get_all(TRACESTATE).iter();
    let state = match (states.next(), states.next()) {
        (Some(v), None) if valid_tracestate(v.as_bytes()) => Some(v.clone()),
        _ => None,
    };
    Some(Parent { trace_id, span_id, sampled, state })
}

/// `00-{32 hex}-{16 hex}-{2 hex}`.
pub(super) fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    unhex(&v[3..35], &mut trace_id)?;
    unhex(&v[36..52], &mut span_id)?;
    unhex(&v[53..55], &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags[0] & 1 == 1))
}

/// Lowercase hex only (the spec's `HEXDIGLC`).
fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (i, pair) in text.chunks_exact(2).enumerate() {
        *out.get_mut(i)? = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

/// A `tracestate` worth forwarding: at most 512 bytes (the spec's bound) of visible ASCII, spaces and
/// tabs. Its members are not interpreted.
fn valid_tracestate(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 512 && v.iter().all(|&c| c == b' ' || c == b'\t' || (0x21..0x7f).contains(&c))
}

/// The `traceparent` naming `span_id` as the parent of what the upstream does.
pub(super) fn traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    hex(trace_id, &mut out);
    out.push(b'-');
    hex(span_id, &mut out);
    out.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// A new trace id: 16 random bytes, never all zeros. Trace and span ids only need to be unique, not
/// secret (they travel in clear to every upstream), so the fast thread-local generator serves.
pub(super) fn new_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

pub(super) fn new_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The sampling decision for a new trace: its id's last 8 bytes against the ratio (as OpenTelemetry's
/// `TraceIdRatioBased` does), so every node that sees the id decides the same.
pub(super) fn sampled_by_ratio(trace_id: &TraceId, threshold: u64) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    threshold == u64::MAX || u64::from_be_bytes(low) < threshold
}

/// The threshold for `ratio` (0 samples nothing, 1 everything).
pub(super) fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio > 0.0 {
        // Below 2^64: the cast saturates correctly.
        (ratio * 18_446_744_073_709_551_616.0) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_the_spec_example_and_writes_it_back() {
        let (t, s, sampled) = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert!(sampled);
        assert_eq!(traceparent(&t, &s, true), GOOD);
        let p = incoming(&headers(&[("traceparent", GOOD), ("tracestate", "congo=t61rcWkgMzE")])).unwrap();
        assert_eq!(p.state.unwrap(), "congo=t61rcWkgMzE");
        assert!(!parse_traceparent(&GOOD.replace("-01", "-00").into_bytes()).unwrap().2);
    }

    #[test]
    fn refuses_anything_else() {
        let bad = [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
            "",
        ];
        for b in bad {
            assert!(parse_traceparent(b.as_bytes()).is_none(), "{b}");
        }
        assert!(incoming(&headers(&[("traceparent", GOOD), ("traceparent", GOOD)])).is_none());
        let two_states = headers(&[("traceparent", GOOD), ("tracestate", "a=1"), ("tracestate", "b=2")]);
        assert_eq!(incoming(&two_states).unwrap().state, None);
    }

    #[test]
    fn sampling_thresholds() {
        let id = new_trace_id();
        assert!(!sampled_by_ratio(&id, threshold(0.0)));
        assert!(sampled_by_ratio(&[0xff; 16], threshold(1.0)));
        let hits = (0..10_000).filter(|_| sampled_by_ratio(&new_trace_id(), threshold(0.25))).count();
        assert!((2000..3000).contains(&hits), "{hits}");
        assert_ne!(new_span_id(), [0; 8]);
    }
}
