//! `GET /metrics` content negotiation: OpenMetrics 1.0 text (what `prometheus-client` encodes) for a
//! scraper whose `Accept` asks for it, the Prometheus text format 0.0.4 otherwise (curl, older scrapers,
//! anything that sends no `Accept`).

/// The media types served.
pub(super) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(super) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether `accept` (the request's `Accept` value) prefers OpenMetrics 1.0 to the plain text format:
/// `application/openmetrics-text` without a version or with `version=1.0.0`, with a non-zero quality
/// at least that of `text/plain` (Prometheus asks for both, OpenMetrics first).
pub(super) fn wants_openmetrics(accept: &str) -> bool {
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let (mut q, mut version_ok) = (1.0f32, true);
        for p in params {
            let Some((k, v)) = p.split_once('=') else { continue };
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "version" => version_ok = v.trim().trim_matches('"') == "1.0.0",
                _ => {}
            }
        }
        match media.as_str() {
            "application/openmetrics-text" if version_ok => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// The Prometheus text format (version 0.0.4) of an OpenMetrics text from
/// [`crate::observe::metrics::Metrics::encode`], for scrapers that do not ask for OpenMetrics. The
/// samples are the same; what differs is metadata: a counter's `# HELP`/`# TYPE` name its `_total`
/// series, an info metric is a gauge named `_info`, there is no `# UNIT`, `# EOF` or exemplar.
pub(super) fn to_prometheus_text(openmetrics: &str) -> String {
    let types: std::collections::HashMap<&str, &str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' ')).collect();
    let mut out = String::with_capacity(openmetrics.len() + openmetrics.len() / 16);
    for line in openmetrics.lines() {
        let meta =
            line.strip_prefix("# HELP ").map(|r| ("HELP", r)).or(line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        if let Some((what, rest)) = meta {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, text) = match (types.get(name).copied(), what) {
                (Some("counter"), "TYPE") => (format!("{name}_total"), "counter"),
                (Some("counter"), _) => (format!("{name}_total"), text),
                (Some("info"), "TYPE") => (format!("{name}_info"), "gauge"),
                (Some("info"), _) => (format!("{name}_info"), text),
                (Some("gauge" | "histogram" | "summary"), _) | (_, "HELP") => (name.to_owned(), text),
                _ => (name.to_owned(), "untyped"),
            };
            out.push_str(&format!("# {what} {name} {text}\n"));
        } else if line.starts_with('#') {
            // `# UNIT`, `# EOF` and other comments: OpenMetrics only.
        } else {
            // An exemplar follows ` # ` on a sample line.
            out.push_str(line.split_once(" # ").map_or(line, |(sample, _)| sample));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;

    #[test]
    fn negotiation_follows_the_scrapers_accept() {
        // Prometheus 2.x and 3.x.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("application/openmetrics-text;version=0.0.1"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0.2, text/plain"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=nonsense"));
    }

    #[test]
    fn prometheus_text_names_counters_by_their_series() {
        let m = Metrics::new();
        m.route("app").observe(200, 0.01, None);
        m.reloads.inc();
        let om = m.encode();
        assert!(om.contains("# TYPE portcullis_reloads counter\n") && om.ends_with("# EOF\n"), "{om}");
        let text = to_prometheus_text(&om);
        assert!(text.contains("# HELP portcullis_reloads_total Successful configuration reloads.\n"), "{text}");
        assert!(text.contains("# TYPE portcullis_reloads_total counter\nportcullis_reloads_total 1\n"), "{text}");
        assert!(text.contains("# TYPE portcullis_request_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("portcullis_requests_total{route=\"app\",status=\"2xx\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE portcullis_active_connections gauge\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        // Every sample line is kept as it was.
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(samples(&om), samples(&text));
    }

    #[test]
    fn info_unknown_and_exemplars_are_converted() {
        let om = "# HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n# TYPE u unknown\nu 3\n\
                  # TYPE c counter\n# UNIT c seconds\nc_total 1 # {trace=\"x\"} 1.0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n# TYPE u untyped\nu 3\n\
             # TYPE c_total counter\nc_total 1\n"
        );
    }
}
