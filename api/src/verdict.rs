//! Whether `/verify` may answer 200: a pure function of the snapshot and the clock.

use std::time::{Duration, Instant};

use crate::snapshot::Snapshot;
use crate::state::State;

/// Whether `/verify` may answer 200 now, and if not, why.
pub fn verdict(s: &Snapshot) -> Result<(), String> {
    verdict_at(s, Instant::now())
}

/// Whether `/verify` may answer 200 at `now`, and if not, why. The first reason found wins,
/// most fundamental first.
pub fn verdict_at(s: &Snapshot, now: Instant) -> Result<(), String> {
    if let Some(why) = &s.hasher_down {
        return Err(format!("hasher unavailable: {why}"));
    }
    if s.machine.state != State::Trusted {
        return Err(format!("state is {}", s.machine.state.as_str()));
    }
    if let Some(why) = &s.baseline_problem {
        return Err(why.clone());
    }
    if s.audit_backlog > 0 {
        return Err("audit log is not writable".into());
    }
    if s.unverified_change {
        return Err("a watched path changed and is being verified".into());
    }
    // A change is not proven until a read made after its pages were written back (a write
    // through a shared mapping may still be in a dirty page): see the hasher's `reading::proof`.
    if let Some(n) = s
        .last_report
        .as_ref()
        .map(|r| r.report.unsettled)
        .filter(|n| *n > 0)
    {
        return Err(format!(
            "{n} changed file(s) await the read that proves them"
        ));
    }
    // Three missed intervals (and 10 s for a slow scan) before evidence counts as stale.
    let interval = Duration::from_millis(s.policy.scan_interval_ms);
    let allowance = interval
        .saturating_mul(3)
        .saturating_add(Duration::from_secs(10));
    match s.last_scan {
        Some(t) if now.saturating_duration_since(t) <= allowance => Ok(()),
        Some(_) => Err("last scan is stale".into()),
        None => Err("no scan yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Input, Machine};
    use protocol::message::{KeyStatus, PolicySummary};

    /// A report of a scan that found nothing, with `unsettled` files awaiting a settle read.
    fn clean_report(unsettled: u32) -> protocol::report::ScanReport {
        protocol::report::ScanReport {
            seq: 1,
            completed_at: "t".into(),
            baseline_digest: "0".repeat(64),
            watched_files: 1,
            bytes_hashed: 0,
            duration_ms: 0,
            violation_count: 0,
            violations: Vec::new(),
            unsettled,
            sealed_files: 0,
        }
    }

    fn trusted(at: Instant) -> Snapshot {
        let report = clean_report(0);
        let (machine, _) = Machine::new().step(Input::Scan(&report), 3);
        Snapshot {
            machine,
            policy: PolicySummary {
                scan_interval_ms: 30_000,
                degradation_threshold: 3,
                require_token_for_reads: false,
                watched_paths: 1,
            },
            key: KeyStatus::Present,
            baseline: None,
            baseline_problem: None,
            reference: None,
            release: protocol::standing::ReleaseNews::default(),
            last_report: None,
            last_scan: Some(at),
            hasher_down: None,
            audit_backlog: 0,
            audit_dropped_total: 0,
            link_seq: 1,
            bytes_hashed_total: 0,
            policy_known: true,
            verified_changes: 0,
            unverified_change: false,
            change_notices: 0,
        }
    }

    #[test]
    fn trusted_and_fresh_is_200_and_every_doubt_is_503_with_its_reason() {
        let t0 = Instant::now();
        let s = trusted(t0);
        assert_eq!(verdict_at(&s, t0), Ok(()));
        // 3 × 30 s + 10 s after the last scan: still fresh; a millisecond more is stale.
        assert_eq!(verdict_at(&s, t0 + Duration::from_secs(100)), Ok(()));
        assert_eq!(
            verdict_at(&s, t0 + Duration::from_millis(100_001)),
            Err("last scan is stale".into())
        );
        type Spoil = fn(&mut Snapshot);
        let cases: [(&str, Spoil); 7] = [
            ("hasher unavailable: gone", |s| {
                s.hasher_down = Some("gone".into())
            }),
            ("state is degraded", |s| s.machine.state = State::Degraded),
            ("rejected", |s| s.baseline_problem = Some("rejected".into())),
            ("audit log is not writable", |s| s.audit_backlog = 1),
            ("a watched path changed and is being verified", |s| {
                s.unverified_change = true
            }),
            ("no scan yet", |s| s.last_scan = None),
            ("2 changed file(s) await the read that proves them", |s| {
                s.last_report = Some(protocol::report::SignedReport {
                    report: clean_report(2),
                    hmac: "unsigned".into(),
                    ed25519: String::new(),
                })
            }),
        ];
        for (why, spoil) in cases {
            let mut s = trusted(t0);
            spoil(&mut s);
            assert_eq!(verdict_at(&s, t0), Err(why.to_owned()));
        }
    }

    #[test]
    fn a_huge_interval_does_not_overflow_into_trust() {
        let t0 = Instant::now();
        let mut s = trusted(t0);
        s.policy.scan_interval_ms = u64::MAX;
        assert_eq!(verdict_at(&s, t0 + Duration::from_secs(3600)), Ok(()));
    }
}
