//! Active health checks: one task per upstream probes every target at its interval and flips the
//! target in or out of rotation after the configured number of consecutive results. The task holds only
//! a weak reference, so it ends when a reload drops the upstream.

use super::section::HealthCheck;
use super::upstream::Upstream;
use crate::events::{Emitter, Event, Kind, Severity};
use std::sync::{Arc, Weak};

pub fn spawn(upstream: &Arc<Upstream>, check: HealthCheck, events: Emitter) {
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    let n = upstream.targets.len();
    tokio::spawn(async move {
        let mut ok_streak = vec![0u32; n];
        let mut bad_streak = vec![0u32; n];
        let mut tick = tokio::time::interval(check.interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(up) = weak.upgrade() else { return };
            for (i, target) in up.targets.iter().enumerate() {
                let healthy = super::probe(&up, target, &check.path, check.timeout.0).await;
                if healthy {
                    ok_streak[i] += 1;
                    bad_streak[i] = 0;
                    if !target.is_healthy() && ok_streak[i] >= check.healthy_threshold {
                        target.set_healthy(true);
                        tracing::info!(upstream = &*up.name, address = %target.address, "upstream target healthy");
                        events.emit(health_event(&up, &target.address.to_string(), true));
                    }
                } else {
                    bad_streak[i] += 1;
                    ok_streak[i] = 0;
                    if target.is_healthy() && bad_streak[i] >= check.unhealthy_threshold {
                        target.set_healthy(false);
                        tracing::warn!(upstream = &*up.name, address = %target.address, "upstream target unhealthy");
                        events.emit(health_event(&up, &target.address.to_string(), false));
                    }
                }
            }
        }
    });
}

/// `upstream.health`: a target went in (`healthy`, info) or out (`unhealthy`, medium) of rotation.
fn health_event(up: &Upstream, target: &str, healthy: bool) -> Event {
    let e = Event::new(Kind::UpstreamHealth, if healthy { "healthy" } else { "unhealthy" })
        .attr("upstream", &up.name)
        .attr("target", target.to_owned())
        .attr("healthy", healthy);
    if healthy {
        e.severity(Severity::Info)
    } else {
        e
    }
}
