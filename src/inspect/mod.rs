//! Threat inspection (place 9, `Place::Inspection`): normalises every target of a request and runs the
//! detectors on it; scores add up to the route's anomaly threshold; `block` answers 403
//! `request-blocked`, `detect` only logs. See `detect` for the rule contract.

pub mod detect;
