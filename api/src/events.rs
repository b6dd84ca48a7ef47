//! The audit log's vocabulary: every record the api writes, one enum whose arm is the
//! `event` name (as the log has always carried it) and whose fields are that record's fields.
//! A new kind of record is one arm here; a record with a field missing does not compile.
//! The log sorts every record's keys, so field order here changes no byte.

use protocol::report::Violation;
use protocol::standing::{FromStore, Moved};
use serde::Serialize;
use serde_json::Value;

use crate::adopted::Adopted;
use crate::state::{State, Transition};

/// What an audit record says happened, with what it says about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// The monitor started (carries the last adopted baseline forward).
    Start {
        /// This build's version.
        version: &'static str,
        /// This process.
        pid: u32,
    },
    /// The monitor stopped cleanly.
    Stop {
        /// Why it stopped.
        reason: StopReason,
    },
    /// A violation seen for the first time.
    Violation(Violation),
    /// A state transition.
    Transition(Transition),
    /// A request refused for its token (rate-limited).
    AuthRefused {
        /// Its HTTP method.
        method: String,
        /// Its path.
        path: String,
        /// `missing_token` or `invalid_token`.
        reason: &'static str,
    },
    /// How many refusals the rate limit left out.
    AuthRefusedSuppressed {
        /// Refusals not recorded one by one.
        count: u64,
    },
    /// A baseline adopted: its generation and digest, which later starts hold the store to.
    BaselineAdopted(Adopted),
    /// A new hasher instance holds another baseline.
    BaselineChanged {
        /// The digest adopted before, if any.
        from: Option<String>,
        /// The digest it holds.
        to: String,
        /// Its generation.
        generation: u64,
    },
    /// The store's baseline adopted at start.
    BaselineLoaded {
        /// Its digest.
        digest: String,
        /// Its generation.
        generation: u64,
        /// Its entries.
        entries: u32,
        /// Whether it is signed.
        signed: bool,
    },
    /// A Go-format baseline verified and adopted.
    BaselineMigrated {
        /// The format it came in: `go`.
        from: &'static str,
        /// Its digest.
        digest: String,
        /// Its entries.
        entries: u32,
    },
    /// The store's baseline refused (tampered, unsigned, rolled back).
    BaselineRejected {
        /// Why.
        reason: String,
    },
    /// A commit's record was rolled forward.
    BaselineRolledForward {
        /// The generation the record named.
        from: u64,
        /// The generation the store holds.
        to: u64,
        /// Its digest.
        digest: String,
    },
    /// The adopted baseline is unsigned.
    BaselineUnsigned {
        /// Its digest.
        digest: String,
    },
    /// The hasher went away.
    HasherLost {
        /// Why.
        reason: String,
    },
    /// The first hasher did not complete its start-up (its key, say).
    HasherStartFailed {
        /// Why.
        reason: String,
    },
    /// A new hasher instance took over.
    HasherReconnected {
        /// Why the one before went away, if known.
        after: Option<String>,
    },
    /// No HMAC key: everything is unsigned.
    HmacKeyAbsent {
        /// What signs records now: `unsigned`.
        signing: &'static str,
    },
    /// An incident could not be queued.
    IncidentDropped {
        /// The state it reported.
        state: State,
        /// Why it was dropped.
        reason: &'static str,
    },
    /// An incident was not accepted after every attempt.
    IncidentReportFailed {
        /// The state it reported.
        state: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
    /// An incident was accepted by the recorder.
    IncidentReported {
        /// The state it reported.
        state: String,
        /// The recorder's HTTP status.
        status: u16,
        /// Which attempt it was.
        attempt: u32,
    },
    /// The first baseline of an empty store.
    Initialized(Made),
    /// An authorised rebaseline.
    Rebaseline(Made),
    /// A rebaseline refused.
    RebaselineRefused(Refused),
    /// The hasher made and holds a rebaseline plan for the operator to approve.
    RebaselinePlanned {
        /// The plan's digest.
        plan: String,
        /// The plan's counts as the hasher signed them, relayed whatever they are (null where
        /// the signed payload does not say).
        generation: Value,
        /// Paths it adds.
        added: Value,
        /// Paths it removes.
        removed: Value,
        /// Paths whose digest it changes.
        changed: Value,
    },
    /// The policy reloaded.
    Reload {
        /// The new scan interval.
        scan_interval_ms: u64,
        /// The new degradation threshold.
        degradation_threshold: u32,
        /// How many paths it watches.
        watched_paths: u32,
    },
    /// A reload refused; the old policy stays.
    ReloadRefused {
        /// Why.
        reason: String,
    },
    /// The stored baseline is rejected: scans compare with this reference meanwhile.
    ReferenceInUse {
        /// The reference's digest.
        digest: String,
        /// Its entries.
        entries: u32,
        /// The release baseline that contributed, if one did.
        release: Option<String>,
        /// What the rejected store contributed.
        store: FromStore,
    },
    /// The hasher made a new generation following the booted image's release.
    ReleaseTransition {
        /// The release before.
        from: String,
        /// The release now.
        to: String,
        /// Back to the release before it.
        downgrade: bool,
        /// The new generation.
        generation: u64,
        /// How many paths moved.
        moved_count: u32,
        /// The first paths that moved.
        moved: Vec<Moved>,
        /// Paths the old release listed and the new one does not.
        dropped: Vec<String>,
    },
    /// The booted image ships another release that could not be believed: no transition.
    ReleaseRefused {
        /// Why.
        reason: String,
    },
    /// The memory record beside the audit log could not be replaced.
    MemoryRecordFailed {
        /// The memory record.
        path: String,
        /// Why.
        error: String,
    },
    /// The log reopened on request (rotation by rename).
    AuditReopened,
    /// The log was deleted, renamed, replaced or truncated under the monitor.
    AuditLogReplaced {
        /// What happened to it.
        reason: &'static str,
        /// The log.
        path: String,
        /// The last record written before.
        last_seq: u64,
        /// That record's hash.
        last_hash: String,
    },
    /// A broken tail found at start was moved aside.
    AuditTailRecovered {
        /// Where it was moved.
        snapshot: std::path::PathBuf,
        /// What was broken.
        reason: String,
    },
    /// The log could not be reopened.
    AuditLogReopenFailed {
        /// Why.
        reason: String,
    },
    /// Records dropped because the queue was full.
    AuditRecordsDropped {
        /// How many.
        count: u64,
    },
}

/// A baseline made and adopted (`initialized`, `rebaseline`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Made {
    /// Its digest.
    pub digest: String,
    /// Its generation.
    pub generation: u64,
    /// Its entries.
    pub entries: u32,
    /// Whether it is signed.
    pub signed: bool,
    /// Its `created_at`.
    pub created_at: String,
}

impl Made {
    /// What the hasher said it made.
    pub fn of(summary: &protocol::message::BaselineSummary) -> Made {
        Made {
            digest: summary.digest.clone(),
            generation: summary.generation,
            entries: summary.entries,
            signed: summary.signed,
            created_at: summary.created_at.clone(),
        }
    }
}

/// Why a rebaseline was refused, in the three shapes the log has carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Refused {
    /// The hasher refused to make the baseline (or could not be asked).
    Baseline {
        /// Why.
        reason: String,
    },
    /// The hasher could not make a plan.
    Plan {
        /// Why.
        reason: String,
        /// Where: `plan`.
        at: &'static str,
    },
    /// A ceremony's proof was refused; the plans it named, as the hasher's signed outcome
    /// says them (null where it does not).
    Ceremony {
        /// Why.
        reason: String,
        /// The plan the proof approved.
        plan: Value,
        /// The plan made now, when the files changed since.
        new_plan: Value,
    },
}

/// Why the monitor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// SIGTERM or SIGINT.
    Signal,
    /// The hasher went away.
    HasherLost,
    /// The first hasher did not start.
    StartFailed,
    /// `--init`: the first baseline was made.
    Initialized,
}

impl AuditRecord {
    /// Whether this record opens a log file, and so carries the last adoption forward.
    pub fn opens_a_file(&self) -> bool {
        matches!(
            self,
            AuditRecord::Start { .. }
                | AuditRecord::AuditReopened
                | AuditRecord::AuditLogReplaced { .. }
        )
    }

    /// The record as its JSON object, `event` included.
    pub fn to_fields(&self) -> serde_json::Result<serde_json::Map<String, Value>> {
        match serde_json::to_value(self)? {
            Value::Object(m) => Ok(m),
            _ => Err(serde::ser::Error::custom("an audit record is an object")),
        }
    }

    /// The `event` name, for the journal (taken from the one spelling the log uses).
    pub fn name(&self) -> String {
        self.to_fields()
            .ok()
            .and_then(|m| m.get("event").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_event_field_and_the_fields_are_the_arm() {
        let r = AuditRecord::BaselineUnsigned {
            digest: "d".repeat(64),
        };
        assert_eq!(r.name(), "baseline_unsigned");
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            format!(
                "{{\"event\":\"baseline_unsigned\",\"digest\":\"{}\"}}",
                "d".repeat(64)
            )
        );
        assert_eq!(AuditRecord::AuditReopened.name(), "audit_reopened");
        assert!(AuditRecord::AuditReopened.opens_a_file());
        assert!(!r.opens_a_file());
    }
}
