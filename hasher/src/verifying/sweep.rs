//! What the last full sweep found: kept by the verifier so that a check of only the paths the
//! kernel named can bring it up to date (the `rescan` module), and reported from.

use std::time::Instant;

use protocol::report::{ScanReport, Violation, MAX_REPORTED_VIOLATIONS};

use crate::verifying::paths::now_rfc3339;

/// What the last full sweep found, kept so that a check of only the paths the kernel named
/// can bring it up to date (the `rescan` module).
#[derive(Debug, Clone)]
pub(in crate::verifying) struct Sweep {
    /// Every finding, sorted by path, not truncated.
    pub(crate) findings: Vec<Violation>,
    /// Paths examined.
    pub(crate) watched: u32,
    /// The baseline compared against.
    pub(crate) digest: String,
    /// When the full sweep completed.
    pub(crate) at: Instant,
}

impl Sweep {
    /// The report of the findings as they now stand.
    pub(crate) fn report(&self, seq: u64, bytes_hashed: u64, started: Instant) -> ScanReport {
        let mut violations = self.findings.clone();
        violations.truncate(MAX_REPORTED_VIOLATIONS);
        ScanReport {
            seq,
            completed_at: now_rfc3339(),
            baseline_digest: self.digest.clone(),
            watched_files: self.watched,
            bytes_hashed,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            violation_count: u32::try_from(self.findings.len()).unwrap_or(u32::MAX),
            violations,
            // Filled by the server, which knows what awaits its settle read and what is sealed.
            unsettled: 0,
            sealed_files: 0,
        }
    }
}
