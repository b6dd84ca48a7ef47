//! The integrity state machine. Pure: it takes an input and returns the next machine and the
//! events to record, so every transition is tested without sockets or clocks.

use protocol::report::{ScanReport, Violation};
use serde::Serialize;

/// The appliance's integrity state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Every watched file matches the baseline, as of the last scan.
    Trusted,
    /// Some files differ (or there is no fresh evidence): below the threshold.
    Degraded,
    /// Violations reached the threshold, or the baseline itself is not to be trusted.
    RecoveryRequired,
}

impl State {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Trusted => "trusted",
            State::Degraded => "degraded",
            State::RecoveryRequired => "recovery_required",
        }
    }
}

/// Why the machine is in its state: written into transitions and `/api/v1/status` as the
/// strings the log has always carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing scanned yet (the start).
    AwaitingFirstScan,
    /// The first baseline of an empty store, scanned clean.
    Initialized,
    /// A new baseline, scanned clean.
    Rebaseline,
    /// A scan found every file as the baseline says.
    AllFilesMatch,
    /// A scan found violations.
    Violations {
        /// How many.
        count: u32,
        /// The policy's degradation_threshold.
        threshold: u32,
    },
    /// The stored baseline is not to be trusted.
    BaselineRejected,
    /// No baseline could be made.
    NoBaseline,
    /// The hasher is gone.
    HasherUnavailable,
    /// A scan did not complete.
    ScanFailed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::AwaitingFirstScan => f.write_str("awaiting_first_scan"),
            Reason::Initialized => f.write_str("initialized"),
            Reason::Rebaseline => f.write_str("rebaseline"),
            Reason::AllFilesMatch => f.write_str("all_files_match"),
            Reason::Violations { count, threshold } => {
                write!(f, "{count} violation(s), threshold {threshold}")
            }
            Reason::BaselineRejected => f.write_str("baseline_rejected"),
            Reason::NoBaseline => f.write_str("no_baseline"),
            Reason::HasherUnavailable => f.write_str("hasher_unavailable"),
            Reason::ScanFailed => f.write_str("scan_failed"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What happened, as the api learned it.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A scan report against the current baseline.
    Scan(&'a ScanReport),
    /// The first scan against a baseline made just now (clears the latch).
    Rebaselined(&'a ScanReport),
    /// A scan against a reference while the stored baseline is rejected: it shows what
    /// differs, and never leaves `recovery_required`.
    Reference(&'a ScanReport),
    /// No evidence can be had (hasher lost, scan failed): never trusted.
    Unverifiable(Reason),
    /// The baseline itself cannot be trusted (tampered, unsigned with a key, absent).
    Compromised(Reason),
}

/// Something to record in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A violation not seen in the previous scan.
    Violation(Violation),
    /// The state changed.
    Transition(Transition),
}

/// A change of state, as the `transition` record says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// Violations at the time.
    pub violation_count: u32,
}

/// State, counters and the active violations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Current state.
    pub state: State,
    /// Why the machine is in this state.
    pub reason: Reason,
    /// Violations in the last scan (all, not only those listed).
    pub violation_count: u32,
    /// Listed violations of the last scan.
    pub active: Vec<Violation>,
    /// Completed scans.
    pub scan_count: u64,
    /// Entries into `degraded` (transitions).
    pub degraded_entries: u64,
    /// Entries into `recovery_required` (transitions).
    pub recovery_entries: u64,
    /// Scans that found at least one violation: the Go service's `degraded_count`.
    pub degraded_scans: u64,
    /// Scans that found at least `degradation_threshold` violations: the Go service's
    /// `recovery_count`.
    pub recovery_scans: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

impl Machine {
    /// The start: not trusted until a scan proves it.
    pub fn new() -> Machine {
        Machine {
            state: State::Degraded,
            reason: Reason::AwaitingFirstScan,
            violation_count: 0,
            active: Vec::new(),
            scan_count: 0,
            degraded_entries: 0,
            recovery_entries: 0,
            degraded_scans: 0,
            recovery_scans: 0,
        }
    }

    /// Takes in a scan report (`input` says against what): records the violations not seen
    /// before, counts, and returns the state it calls for and why.
    fn scanned(
        &self,
        next: &mut Machine,
        events: &mut Vec<Event>,
        input: Input<'_>,
        report: &ScanReport,
        threshold: u32,
    ) -> (State, Reason) {
        let fresh = matches!(input, Input::Rebaselined(_));
        let previous: &[Violation] = if fresh { &[] } else { &self.active };
        for v in &report.violations {
            if !previous
                .iter()
                .any(|p| p.path == v.path && p.actual_hash == v.actual_hash)
            {
                events.push(Event::Violation(v.clone()));
            }
        }
        let n = report.violation_count;
        next.scan_count += 1;
        if n > 0 {
            next.degraded_scans += 1;
        }
        if n >= threshold.max(1) {
            next.recovery_scans += 1;
        }
        next.violation_count = n;
        next.active = report.violations.clone();
        if let Input::Reference(_) = input {
            // No scan clears a rejected baseline: only an authorised new one does.
            return (State::RecoveryRequired, Reason::BaselineRejected);
        }
        let mut target = if n == 0 {
            State::Trusted
        } else if n >= threshold.max(1) {
            State::RecoveryRequired
        } else {
            State::Degraded
        };
        // recovery_required is a latch: partial restoration does not clear it.
        if !fresh && self.state == State::RecoveryRequired && target == State::Degraded {
            target = State::RecoveryRequired;
        }
        let reason = match (fresh, n) {
            // The very first baseline of an empty store is no "rebaseline".
            (true, 0) if self.scan_count == 0 && self.reason == Reason::AwaitingFirstScan => {
                Reason::Initialized
            }
            (true, 0) => Reason::Rebaseline,
            (false, 0) => Reason::AllFilesMatch,
            (_, count) => Reason::Violations { count, threshold },
        };
        (target, reason)
    }

    /// Applies one input; `threshold` is the policy's degradation_threshold (>= 1).
    pub fn step(&self, input: Input<'_>, threshold: u32) -> (Machine, Vec<Event>) {
        let mut next = self.clone();
        let mut events = Vec::new();
        let (target, reason) = match input {
            Input::Scan(report) | Input::Rebaselined(report) | Input::Reference(report) => {
                self.scanned(&mut next, &mut events, input, report, threshold)
            }
            Input::Unverifiable(why) => {
                let target = if self.state == State::RecoveryRequired {
                    State::RecoveryRequired
                } else {
                    State::Degraded
                };
                (target, why)
            }
            Input::Compromised(why) => (State::RecoveryRequired, why),
        };
        if target != self.state {
            match target {
                State::Degraded => next.degraded_entries += 1,
                State::RecoveryRequired => next.recovery_entries += 1,
                State::Trusted => {}
            }
            events.push(Event::Transition(Transition {
                from: self.state,
                to: target,
                reason,
                violation_count: next.violation_count,
            }));
        }
        next.state = target;
        next.reason = reason;
        (next, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Action, Category};

    fn v(path: &str) -> Violation {
        Violation {
            detected_at: "t".into(),
            category: Category::ServiceBinary,
            path: path.into(),
            expected_hash: "a".repeat(64),
            actual_hash: protocol::Actual::Digest(protocol::hexfmt::Sha256Digest([0xbb; 32])),
            action: Action::DegradeAppliance,
        }
    }

    fn report(paths: &[&str]) -> ScanReport {
        ScanReport {
            seq: 1,
            completed_at: "t".into(),
            baseline_digest: "0".repeat(64),
            watched_files: 5,
            bytes_hashed: 0,
            duration_ms: 0,
            violation_count: u32::try_from(paths.len()).unwrap_or(u32::MAX),
            violations: paths.iter().map(|p| v(p)).collect(),
            unsettled: 0,
            sealed_files: 0,
        }
    }

    fn transitions(events: &[Event]) -> Vec<(State, State)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Transition(t) => Some((t.from, t.to)),
                Event::Violation(_) => None,
            })
            .collect()
    }

    #[test]
    fn starts_untrusted_and_first_clean_scan_trusts() {
        let m = Machine::new();
        assert_eq!(m.state, State::Degraded);
        let (m, ev) = m.step(Input::Scan(&report(&[])), 3);
        assert_eq!(m.state, State::Trusted);
        assert_eq!(transitions(&ev), vec![(State::Degraded, State::Trusted)]);
        assert_eq!(
            (m.scan_count, m.degraded_entries, m.recovery_entries),
            (1, 0, 0)
        );
    }

    #[test]
    fn degrade_escalate_latch_and_restore() {
        let (m, _) = Machine::new().step(Input::Scan(&report(&[])), 3);
        let (m, ev) = m.step(Input::Scan(&report(&["/a"])), 3);
        assert_eq!(m.state, State::Degraded);
        assert_eq!(ev.len(), 2, "one violation, one transition: {ev:?}");
        let (m, ev) = m.step(Input::Scan(&report(&["/a"])), 3);
        assert!(
            ev.is_empty(),
            "a known violation is not re-recorded: {ev:?}"
        );
        // Entries into degraded, beside the Go service's count of scans that found any.
        assert_eq!((m.degraded_entries, m.degraded_scans), (1, 2));
        let (m, ev) = m.step(Input::Scan(&report(&["/a", "/b", "/c"])), 3);
        assert_eq!(m.state, State::RecoveryRequired);
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Violation(_)))
                .count(),
            2
        );
        let (m, _) = m.step(Input::Scan(&report(&["/a"])), 3);
        assert_eq!(m.state, State::RecoveryRequired, "latched");
        let (m, ev) = m.step(Input::Scan(&report(&[])), 3);
        assert_eq!(m.state, State::Trusted);
        assert_eq!(
            transitions(&ev),
            vec![(State::RecoveryRequired, State::Trusted)]
        );
        assert_eq!(
            (m.scan_count, m.degraded_entries, m.recovery_entries),
            (6, 1, 1)
        );
        // The Go service's counters: every scan with a violation, every one at the threshold.
        assert_eq!((m.degraded_scans, m.recovery_scans), (4, 1));
    }

    #[test]
    fn trusted_straight_to_recovery_and_rebaseline_clears() {
        let (m, _) = Machine::new().step(Input::Scan(&report(&[])), 2);
        let (m, ev) = m.step(Input::Scan(&report(&["/a", "/b"])), 2);
        assert_eq!(
            transitions(&ev),
            vec![(State::Trusted, State::RecoveryRequired)]
        );
        let (m, ev) = m.step(Input::Rebaselined(&report(&[])), 2);
        assert_eq!(m.state, State::Trusted);
        assert_eq!(m.reason, Reason::Rebaseline);
        assert_eq!(
            transitions(&ev),
            vec![(State::RecoveryRequired, State::Trusted)]
        );
    }

    #[test]
    fn lost_evidence_is_never_trusted_and_compromise_is_recovery() {
        let (m, _) = Machine::new().step(Input::Scan(&report(&[])), 3);
        let (m, ev) = m.step(Input::Unverifiable(Reason::HasherUnavailable), 3);
        assert_eq!(m.state, State::Degraded);
        assert_eq!(transitions(&ev), vec![(State::Trusted, State::Degraded)]);
        let (m, _) = m.step(Input::Compromised(Reason::BaselineRejected), 3);
        assert_eq!(m.state, State::RecoveryRequired);
        let (m, _) = m.step(Input::Unverifiable(Reason::ScanFailed), 3);
        assert_eq!(m.state, State::RecoveryRequired);
    }

    #[test]
    fn a_scan_against_a_reference_shows_what_differs_and_never_trusts() {
        let (m, _) = Machine::new().step(Input::Compromised(Reason::BaselineRejected), 3);
        assert_eq!(m.state, State::RecoveryRequired);
        let (m, ev) = m.step(Input::Reference(&report(&[])), 3);
        assert_eq!(
            m.state,
            State::RecoveryRequired,
            "a clean reference scan is no verdict"
        );
        assert_eq!(m.reason, Reason::BaselineRejected);
        assert!(transitions(&ev).is_empty());
        let (m, ev) = m.step(Input::Reference(&report(&["/a"])), 3);
        assert_eq!(
            (m.state, m.violation_count, m.scan_count),
            (State::RecoveryRequired, 1, 2)
        );
        assert_eq!(ev.len(), 1, "the new difference is recorded: {ev:?}");
        // From a fresh machine too (a reference scan before anything else is not trusted).
        let (m, ev) = Machine::new().step(Input::Reference(&report(&[])), 3);
        assert_eq!(m.state, State::RecoveryRequired);
        assert_eq!(
            transitions(&ev),
            vec![(State::Degraded, State::RecoveryRequired)]
        );
        let (m, _) = m.step(Input::Rebaselined(&report(&[])), 3);
        assert_eq!(m.state, State::Trusted, "the ceremony's baseline clears it");
    }

    /// The strings the log and `/api/v1/status` have always carried.
    #[test]
    fn each_reason_is_written_as_before() {
        let written: Vec<String> = [
            Reason::AwaitingFirstScan,
            Reason::Initialized,
            Reason::Rebaseline,
            Reason::AllFilesMatch,
            Reason::Violations {
                count: 2,
                threshold: 3,
            },
            Reason::BaselineRejected,
            Reason::NoBaseline,
            Reason::HasherUnavailable,
            Reason::ScanFailed,
        ]
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
        assert_eq!(
            written,
            [
                "\"awaiting_first_scan\"",
                "\"initialized\"",
                "\"rebaseline\"",
                "\"all_files_match\"",
                "\"2 violation(s), threshold 3\"",
                "\"baseline_rejected\"",
                "\"no_baseline\"",
                "\"hasher_unavailable\"",
                "\"scan_failed\"",
            ]
        );
    }

    #[test]
    fn threshold_one_means_any_violation_is_recovery() {
        let (m, _) = Machine::new().step(Input::Scan(&report(&["/a"])), 1);
        assert_eq!(m.state, State::RecoveryRequired);
    }
}
