//! The audit log's vocabulary: every record's `event`, one enum, written as the strings the
//! log has always carried. A new kind of record is one arm here.

use serde::Serialize;

/// What an audit record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// The monitor started (carries the last adopted baseline forward).
    Start,
    /// The monitor stopped cleanly.
    Stop,
    /// A violation seen for the first time.
    Violation,
    /// A state transition.
    Transition,
    /// A request refused for its token (rate-limited).
    AuthRefused,
    /// How many refusals the rate limit left out.
    AuthRefusedSuppressed,
    /// A baseline adopted: its generation and digest, which later starts hold the store to.
    BaselineAdopted,
    /// A new hasher instance holds another baseline.
    BaselineChanged,
    /// The store's baseline adopted at start.
    BaselineLoaded,
    /// A Go-format baseline verified and adopted.
    BaselineMigrated,
    /// The store's baseline refused (tampered, unsigned, rolled back).
    BaselineRejected,
    /// A commit's record was rolled forward.
    BaselineRolledForward,
    /// The adopted baseline is unsigned.
    BaselineUnsigned,
    /// The hasher went away.
    HasherLost,
    /// The first hasher did not complete its start-up (its key, say).
    HasherStartFailed,
    /// A new hasher instance took over.
    HasherReconnected,
    /// No HMAC key: everything is unsigned.
    HmacKeyAbsent,
    /// An incident could not be queued.
    IncidentDropped,
    /// An incident was not accepted after every attempt.
    IncidentReportFailed,
    /// An incident was accepted by the recorder.
    IncidentReported,
    /// The first baseline of an empty store.
    Initialized,
    /// An authorised rebaseline.
    Rebaseline,
    /// A rebaseline refused.
    RebaselineRefused,
    /// The hasher made and holds a rebaseline plan for the operator to approve.
    RebaselinePlanned,
    /// The policy reloaded.
    Reload,
    /// A reload refused; the old policy stays.
    ReloadRefused,
    /// The stored baseline is rejected: scans compare with this reference meanwhile.
    ReferenceInUse,
    /// The hasher made a new generation following the booted image's release.
    ReleaseTransition,
    /// The booted image ships another release that could not be believed: no transition.
    ReleaseRefused,
    /// The memory record beside the audit log could not be replaced.
    MemoryRecordFailed,
    /// The log reopened on request (rotation by rename).
    AuditReopened,
    /// The log was deleted, renamed, replaced or truncated under the monitor.
    AuditLogReplaced,
    /// A broken tail found at start was moved aside.
    AuditTailRecovered,
    /// The log could not be reopened.
    AuditLogReopenFailed,
    /// Records dropped because the queue was full.
    AuditRecordsDropped,
}

impl AuditEvent {
    /// The `event` field as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Start => "start",
            AuditEvent::Stop => "stop",
            AuditEvent::Violation => "violation",
            AuditEvent::Transition => "transition",
            AuditEvent::AuthRefused => "auth_refused",
            AuditEvent::AuthRefusedSuppressed => "auth_refused_suppressed",
            AuditEvent::BaselineAdopted => "baseline_adopted",
            AuditEvent::BaselineChanged => "baseline_changed",
            AuditEvent::BaselineLoaded => "baseline_loaded",
            AuditEvent::BaselineMigrated => "baseline_migrated",
            AuditEvent::BaselineRejected => "baseline_rejected",
            AuditEvent::BaselineRolledForward => "baseline_rolled_forward",
            AuditEvent::BaselineUnsigned => "baseline_unsigned",
            AuditEvent::HasherLost => "hasher_lost",
            AuditEvent::HasherStartFailed => "hasher_start_failed",
            AuditEvent::HasherReconnected => "hasher_reconnected",
            AuditEvent::HmacKeyAbsent => "hmac_key_absent",
            AuditEvent::IncidentDropped => "incident_dropped",
            AuditEvent::IncidentReportFailed => "incident_report_failed",
            AuditEvent::IncidentReported => "incident_reported",
            AuditEvent::Initialized => "initialized",
            AuditEvent::Rebaseline => "rebaseline",
            AuditEvent::RebaselineRefused => "rebaseline_refused",
            AuditEvent::RebaselinePlanned => "rebaseline_planned",
            AuditEvent::Reload => "reload",
            AuditEvent::ReloadRefused => "reload_refused",
            AuditEvent::ReferenceInUse => "reference_in_use",
            AuditEvent::ReleaseTransition => "release_transition",
            AuditEvent::ReleaseRefused => "release_refused",
            AuditEvent::MemoryRecordFailed => "memory_record_failed",
            AuditEvent::AuditReopened => "audit_reopened",
            AuditEvent::AuditLogReplaced => "audit_log_replaced",
            AuditEvent::AuditTailRecovered => "audit_tail_recovered",
            AuditEvent::AuditLogReopenFailed => "audit_log_reopen_failed",
            AuditEvent::AuditRecordsDropped => "audit_records_dropped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_name_is_the_serde_name() {
        for e in [
            AuditEvent::Start,
            AuditEvent::AuthRefusedSuppressed,
            AuditEvent::BaselineRolledForward,
            AuditEvent::AuditLogReopenFailed,
            AuditEvent::AuditRecordsDropped,
            AuditEvent::ReferenceInUse,
            AuditEvent::MemoryRecordFailed,
            AuditEvent::ReleaseTransition,
            AuditEvent::ReleaseRefused,
        ] {
            let json = serde_json::to_string(&e).expect("serialises");
            assert_eq!(json, format!("\"{}\"", e.as_str()));
        }
    }
}
