//! What the HTTP handlers, the verdict and the metrics read of the monitor: one consistent copy.

use std::time::Instant;

use protocol::message::{BaselineSummary, KeyStatus, PolicySummary};
use protocol::report::SignedReport;

use crate::state::Machine;

/// Everything the HTTP handlers read; cloned out under a short lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// State and counters.
    pub machine: Machine,
    /// The hasher's policy settings.
    pub policy: PolicySummary,
    /// Whether artifacts are signed.
    pub key: KeyStatus,
    /// The baseline the hasher adopted, if any (the hasher holds the bytes).
    pub baseline: Option<BaselineSummary>,
    /// Why there is no trusted baseline, if there is none.
    pub baseline_problem: Option<String>,
    /// What the hasher compares the files with while its stored baseline is rejected.
    pub reference: Option<protocol::standing::Reference>,
    /// The OS image's release as the hasher found it at its start.
    pub release: protocol::standing::ReleaseNews,
    /// The last accepted report.
    pub last_report: Option<SignedReport>,
    /// When the api accepted the last report (monotonic).
    pub last_scan: Option<Instant>,
    /// Why the hasher is unavailable, if it is.
    pub hasher_down: Option<String>,
    /// Audit records not on disk because the log cannot be written (or the queue overflowed).
    pub audit_backlog: usize,
    /// Audit records dropped since start (a full queue or backlog).
    pub audit_dropped_total: u64,
    /// Sequence number of the last report from the current hasher connection (must grow).
    pub link_seq: u64,
    /// Bytes the hasher reported hashed, over all accepted scans.
    pub bytes_hashed_total: u64,
    /// False until the first handshake: the policy (and whether reads need the token) is unknown.
    pub policy_known: bool,
    /// Change notices the last accepted scan started after (all of them were verified by it).
    pub verified_changes: u64,
    /// True when a change notice arrived that no accepted scan has verified yet: any write to
    /// a watched path makes `/verify` 503 at once, whatever the file's size, until it is read.
    pub unverified_change: bool,
    /// Change notices the hasher has sent since the api started (shown in `/api/v1/status`).
    pub change_notices: u64,
}
