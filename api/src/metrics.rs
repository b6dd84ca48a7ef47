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
    let one = |b: bool| if b { 1.0 } else { 0.0 };
    let is = |state: State| one(s.machine.state == state);
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
    let report = s.last_report.as_ref().map(|r| &r.report);
    let values = [
        one(verdict(s).is_ok()),
        one(s.hasher_down.is_none()),
        f64::from(s.machine.violation_count),
        s.machine.scan_count as f64,
        s.machine.degraded_entries as f64,
        s.machine.recovery_entries as f64,
        s.bytes_hashed_total as f64,
        report.map_or(0.0, |r| r.duration_ms as f64 / 1000.0),
        report.map_or(0.0, |r| f64::from(r.watched_files)),
        report.map_or(0.0, |r| f64::from(r.sealed_files)),
        s.audit_backlog as f64,
    ];
    for ((name, kind, help), value) in SINGLE.into_iter().zip(values) {
        metric(name, kind, help, &[("", value)]);
    }
    out
}

/// The metrics with one sample each (name, type, help), in the order `render` computes them.
const SINGLE: [(&str, &str, &str); 11] = [
    ("trusted", "gauge", "1 when /api/v1/verify answers 200."),
    ("hasher_up", "gauge", "1 while the hasher is connected."),
    ("violations", "gauge", "Violations found by the last scan."),
    ("scans_total", "counter", "Scans completed."),
    ("degraded_total", "counter", "Entries into degraded."),
    (
        "recovery_required_total",
        "counter",
        "Entries into recovery_required.",
    ),
    (
        "bytes_hashed_total",
        "counter",
        "Bytes read and hashed by accepted scans.",
    ),
    (
        "last_scan_duration_seconds",
        "gauge",
        "Wall time of the last scan.",
    ),
    ("watched_files", "gauge", "Files examined by the last scan."),
    (
        "sealed_files",
        "gauge",
        "Watched files proven by their fs-verity seal (no read) at their last check.",
    ),
    (
        "audit_backlog",
        "gauge",
        "Audit records waiting for a writable log.",
    ),
];
