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
        s.audit_dropped_total as f64,
        last_scan_unix(s),
        s.policy.scan_interval_ms as f64 / 1000.0,
    ];
    for ((name, kind, help), value) in SINGLE.into_iter().zip(values) {
        metric(name, kind, help, &[("", value)]);
    }
    out
}

/// The metrics with one sample each (name, type, help), in the order `render` computes them.
const SINGLE: [(&str, &str, &str); 14] = [
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
    (
        "audit_records_dropped_total",
        "counter",
        "Audit records dropped (queue or backlog full) since start.",
    ),
    (
        "last_scan_timestamp_seconds",
        "gauge",
        "Unix time the last accepted scan completed (0: none yet).",
    ),
    (
        "scan_interval_seconds",
        "gauge",
        "The policy's scan_interval.",
    ),
];

/// When the last accepted scan completed, in Unix seconds (0 before the first).
fn last_scan_unix(s: &Snapshot) -> f64 {
    s.last_scan
        .and_then(|at| std::time::SystemTime::now().checked_sub(at.elapsed()))
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}
