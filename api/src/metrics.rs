//! `GET /metrics`: the snapshot in Prometheus text format, so a fleet's scraper needs no glue.

use std::fmt::Write as _;

use crate::snapshot::Snapshot;
use crate::state::State;
use crate::verdict::verdict;

/// Renders the snapshot as Prometheus exposition text.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(
            out,
            "# HELP integrity_monitor_{name} {help}\n# TYPE integrity_monitor_{name} {kind}"
        );
        for (labels, value) in samples {
            let _ = writeln!(out, "integrity_monitor_{name}{labels} {value}");
        }
    };
    let is = |state: State| if s.machine.state == state { 1.0 } else { 0.0 };
    metric(
        "state",
        "gauge",
        "1 for the current integrity state.",
        &[
            ("{state=\"trusted\"}", is(State::Trusted)),
            ("{state=\"degraded\"}", is(State::Degraded)),
            ("{state=\"recovery_required\"}", is(State::RecoveryRequired)),
        ],
    );
    let trusted = if verdict(s).is_ok() { 1.0 } else { 0.0 };
    metric(
        "trusted",
        "gauge",
        "1 when /api/v1/verify answers 200.",
        &[("", trusted)],
    );
    metric(
        "hasher_up",
        "gauge",
        "1 while the hasher is connected.",
        &[("", if s.hasher_down.is_none() { 1.0 } else { 0.0 })],
    );
    metric(
        "violations",
        "gauge",
        "Violations found by the last scan.",
        &[("", f64::from(s.machine.violation_count))],
    );
    metric(
        "scans_total",
        "counter",
        "Scans completed.",
        &[("", s.machine.scan_count as f64)],
    );
    metric(
        "degraded_total",
        "counter",
        "Entries into degraded.",
        &[("", s.machine.degraded_count as f64)],
    );
    metric(
        "recovery_required_total",
        "counter",
        "Entries into recovery_required.",
        &[("", s.machine.recovery_count as f64)],
    );
    metric(
        "bytes_hashed_total",
        "counter",
        "Bytes read and hashed by accepted scans.",
        &[("", s.bytes_hashed_total as f64)],
    );
    let report = s.last_report.as_ref().map(|r| &r.report);
    metric(
        "last_scan_duration_seconds",
        "gauge",
        "Wall time of the last scan.",
        &[("", report.map_or(0.0, |r| r.duration_ms as f64 / 1000.0))],
    );
    metric(
        "watched_files",
        "gauge",
        "Files examined by the last scan.",
        &[("", report.map_or(0.0, |r| f64::from(r.watched_files)))],
    );
    metric(
        "audit_backlog",
        "gauge",
        "Audit records waiting for a writable log.",
        &[("", s.audit_backlog as f64)],
    );
    out
}
