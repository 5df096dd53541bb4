//! `--compliance`: maps the config's controls and the audit's findings to PCI DSS 4.0 (requirements 4,
//! 6.4, 8 and 10), GDPR article 32 and HIPAA 164.312. Each control is met, unmet or not applicable,
//! with the config line that shows it. This is evidence for an assessor, not a certification: the
//! gateway is one control among those the frameworks ask for.

use super::position::Positions;
use super::rules::transport_loopback;
use crate::authn::AuthConfig;
use crate::config::file::FileConfig;
use crate::scan::finding::Finding;
use crate::scan_path;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Met,
    Unmet,
    NotApplicable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Unmet => "unmet",
            Status::NotApplicable => "not applicable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Control {
    pub framework: &'static str,
    pub control: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// `file:line:column` of the setting that shows it, and why.
    pub evidence: Vec<String>,
}

/// A control: the rules whose unsuppressed findings break it, and how the config itself meets it.
struct Spec {
    framework: &'static str,
    control: &'static str,
    title: &'static str,
    rules: &'static [&'static str],
    area: Area,
}

#[derive(Clone, Copy)]
enum Area {
    Transport,
    Protection,
    Authentication,
    AccessControl,
    Logging,
    Integrity,
    Overall,
}

const TRANSPORT: &[&str] = &["PC-TLS-001", "PC-HTTP-001", "PC-HTTP-002", "PC-UPSTREAM-001", "PC-CORS-001"];
const AUTHN: &[&str] = &[
    "PC-JWT-001",
    "PC-JWT-002",
    "PC-INTRO-001",
    "PC-KEY-001",
    "PC-KEY-002",
    "PC-SECRET-001",
    "PC-AUTHZ-003",
    "PC-LIMIT-001",
];
const ACCESS: &[&str] = &["PC-AUTHZ-001", "PC-AUTHZ-002", "PC-AUTHZ-003", "PC-ROUTE-001", "PC-NET-001"];
const PROTECTION: &[&str] = &["PC-INSPECT-001", "PC-HDR-001", "PC-ROUTE-001", "PC-LIMIT-001"];

const SPECS: &[Spec] = &[
    Spec {
        framework: "PCI DSS 4.0",
        control: "Req. 4",
        title: "Strong cryptography protects data in transmission",
        rules: TRANSPORT,
        area: Area::Transport,
    },
    Spec {
        framework: "PCI DSS 4.0",
        control: "Req. 6.4",
        title: "Public-facing web applications are protected against attacks",
        rules: PROTECTION,
        area: Area::Protection,
    },
    Spec {
        framework: "PCI DSS 4.0",
        control: "Req. 8",
        title: "Users and systems are identified and authenticated",
        rules: AUTHN,
        area: Area::Authentication,
    },
    Spec {
        framework: "PCI DSS 4.0",
        control: "Req. 10",
        title: "Access to system components and data is logged and monitored",
        rules: &[],
        area: Area::Logging,
    },
    Spec {
        framework: "GDPR",
        control: "Art. 32",
        title: "Security of processing (confidentiality, integrity, access control)",
        rules: &[],
        area: Area::Overall,
    },
    Spec {
        framework: "HIPAA",
        control: "164.312(a)(1)",
        title: "Access control",
        rules: ACCESS,
        area: Area::AccessControl,
    },
    Spec { framework: "HIPAA", control: "164.312(b)", title: "Audit controls", rules: &[], area: Area::Logging },
    Spec { framework: "HIPAA", control: "164.312(c)(1)", title: "Integrity", rules: PROTECTION, area: Area::Integrity },
    Spec {
        framework: "HIPAA",
        control: "164.312(d)",
        title: "Person or entity authentication",
        rules: AUTHN,
        area: Area::Authentication,
    },
    Spec {
        framework: "HIPAA",
        control: "164.312(e)(1)",
        title: "Transmission security",
        rules: TRANSPORT,
        area: Area::Transport,
    },
];

pub fn controls(cfg: &FileConfig, positions: &Positions, file: &str, findings: &[Finding]) -> Vec<Control> {
    let at = |path: Vec<String>, why: &str| {
        let (line, column) = positions.locate(&path);
        format!("{file}:{line}:{column}: {why}")
    };
    let open: Vec<&Finding> = findings.iter().filter(|f| f.suppressed.is_none()).collect();
    SPECS
        .iter()
        .map(|spec| {
            let (mut status, mut evidence) = baseline(cfg, spec.area, &at, &open);
            for f in open.iter().filter(|f| spec.rules.contains(&f.rule.as_ref())) {
                status = Status::Unmet;
                let place = f.location.as_ref().map_or_else(String::new, ToString::to_string);
                evidence.push(format!("{place}: {} ({})", f.title, f.rule));
            }
            if status == Status::NotApplicable {
                evidence.retain(|e| !e.contains("(PC-"));
            }
            Control { framework: spec.framework, control: spec.control, title: spec.title, status, evidence }
        })
        .collect()
}

/// What the config itself shows for an area, before findings.
fn baseline(
    cfg: &FileConfig,
    area: Area,
    at: &dyn Fn(Vec<String>, &str) -> String,
    open: &[&Finding],
) -> (Status, Vec<String>) {
    let authenticated: Vec<usize> =
        cfg.routes.iter().enumerate().filter(|(_, r)| r.auth != AuthConfig::None).map(|(i, _)| i).collect();
    match area {
        Area::Transport => {
            let exposed: Vec<usize> = cfg
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| !transport_loopback(&l.address))
                .map(|(i, _)| i)
                .collect();
            let tls: Vec<usize> =
                cfg.listeners.iter().enumerate().filter(|(_, l)| l.tls.is_some()).map(|(i, _)| i).collect();
            if exposed.is_empty()
                && cfg.upstreams.values().all(|u| u.targets.iter().all(|t| transport_loopback(&t.address)))
            {
                return (
                    Status::NotApplicable,
                    vec![at(scan_path!["listeners"], "every listener and upstream is on loopback")],
                );
            }
            let ev = tls.iter().map(|i| at(scan_path!["listeners", i, "tls"], "TLS listener")).collect();
            (Status::Met, ev)
        }
        Area::Protection => match &cfg.inspect {
            Some(_) => (Status::Met, vec![at(scan_path!["inspect"], "threat inspection on every route")]),
            None => {
                let routes: Vec<String> = cfg
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r.inspect, Some(crate::inspect::RouteInspect::On(_))))
                    .map(|(i, _)| at(scan_path!["routes", i, "inspect"], "route inspection"))
                    .collect();
                if routes.is_empty() {
                    (Status::Unmet, vec![at(scan_path!["routes"], "no threat inspection (`inspect:`) is configured")])
                } else {
                    (Status::Met, routes)
                }
            }
        },
        Area::Authentication | Area::AccessControl => {
            if authenticated.is_empty() {
                return (Status::NotApplicable, vec![at(scan_path!["routes"], "no route authenticates its callers")]);
            }
            let what =
                if matches!(area, Area::Authentication) { "authenticated route" } else { "route with access control" };
            (Status::Met, authenticated.iter().map(|i| at(scan_path!["routes", i, "auth"], what)).collect())
        }
        Area::Logging => {
            let mut ev = Vec::new();
            if !cfg.logging.access_log {
                return (Status::Unmet, vec![at(scan_path!["logging", "access_log"], "the access log is off")]);
            }
            ev.push(at(scan_path!["logging"], "access log on"));
            if cfg.events.is_some() {
                ev.push(at(scan_path!["events"], "security events exported"));
            }
            if cfg.audit.is_some() {
                ev.push(at(scan_path!["audit"], "tamper-evident audit trail"));
            }
            let status = if cfg.events.is_some() || cfg.audit.is_some() { Status::Met } else { Status::Unmet };
            if status == Status::Unmet {
                ev.push(at(scan_path!["events"], "no `events:` or `audit:` section: security events are not recorded"));
            }
            (status, ev)
        }
        Area::Integrity => match (&cfg.audit, &cfg.inspect) {
            (Some(_), _) | (_, Some(_)) => {
                let mut ev = Vec::new();
                if cfg.audit.is_some() {
                    ev.push(at(scan_path!["audit"], "signed audit trail"));
                }
                if cfg.inspect.is_some() {
                    ev.push(at(scan_path!["inspect"], "injection payloads refused"));
                }
                (Status::Met, ev)
            }
            _ => (Status::Unmet, vec![at(scan_path!["audit"], "neither an audit trail nor inspection is configured")]),
        },
        Area::Overall => {
            let high: Vec<String> = open
                .iter()
                .filter(|f| f.severity >= crate::scan::finding::Severity::High)
                .map(|f| {
                    format!(
                        "{}: {} ({})",
                        f.location.as_ref().map_or_else(String::new, ToString::to_string),
                        f.title,
                        f.rule
                    )
                })
                .collect();
            if high.is_empty() {
                (Status::Met, vec![at(scan_path!["routes"], "no unsuppressed high or critical finding")])
            } else {
                (Status::Unmet, high)
            }
        }
    }
}
