//! The api's memory of the baselines it adopted, kept in its own hash-chained audit log: the
//! second store a rollback must also roll back. The hasher's store alone cannot tell an old
//! baseline put back (with `generation.json` deleted, or the whole store restored) from the
//! real one; this log, written by another user, can.
//!
//! Every adoption is recorded with `adopted_generation` and `adopted_digest`; the records that
//! open a file (`start`, `audit_reopened`, `audit_log_replaced`) carry the last one, so the
//! current file always holds it, across rotations.

use std::io::BufRead;
use std::path::Path;

use protocol::message::{BaselineSummary, StoreStatus};
use serde_json::{Map, Value};

use crate::events::AuditEvent;

/// Field of a record naming an adopted baseline's generation.
pub const GENERATION: &str = "adopted_generation";
/// Field of a record naming an adopted baseline's digest.
pub const DIGEST: &str = "adopted_digest";
/// Records that open a log file and so carry the memory forward.
pub const CARRIERS: [AuditEvent; 3] = [
    AuditEvent::Start,
    AuditEvent::AuditReopened,
    AuditEvent::AuditLogReplaced,
];
/// Longest record line looked at when recalling (records are far shorter).
const MAX_LINE: usize = 1 << 20;

/// The last baseline adopted: its store generation and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Store generation (0: a Go-format or pre-generation baseline).
    pub generation: u64,
    /// SHA-256 (hex) of the manifest.
    pub digest: String,
}

impl Adopted {
    /// What the hasher said it holds.
    pub fn of(summary: &BaselineSummary) -> Adopted {
        Adopted {
            generation: summary.generation,
            digest: summary.digest.clone(),
        }
    }

    /// The record fields naming it.
    pub fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(GENERATION.into(), self.generation.into());
        m.insert(DIGEST.into(), self.digest.clone().into());
        m
    }

    /// The memory a record carries, if it carries one.
    pub fn from_record(record: &Map<String, Value>) -> Option<Adopted> {
        let generation = record.get(GENERATION)?.as_u64()?;
        let digest = record.get(DIGEST)?.as_str()?;
        protocol::hexfmt::is_sha256_hex(digest).then(|| Adopted {
            generation,
            digest: digest.to_owned(),
        })
    }
}

/// The last adoption the log at `path` records, read line by line (constant memory); `None`
/// when the log is missing, empty or never recorded one.
pub fn recall(path: &Path) -> Option<Adopted> {
    let file = std::fs::File::open(path).ok()?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        match std::io::Read::take(&mut reader, MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > MAX_LINE => {
                // Not a record of ours: skip to the end of that line.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).is_err() {
                    break;
                }
            }
            Ok(_) => {
                if let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(&line) {
                    if let Some(a) = Adopted::from_record(&record) {
                        last = Some(a);
                    }
                }
            }
        }
    }
    last
}

/// Why what the hasher's store holds is a rollback of what this log last recorded, if it is:
/// an older generation, another baseline at the same generation, or nothing at all.
pub fn rollback(memory: Option<&Adopted>, store: &StoreStatus) -> Option<String> {
    let m = memory?;
    match store {
        StoreStatus::Rejected { .. } => None,
        StoreStatus::Empty => Some(format!(
            "rollback: the hasher's store is empty, but this audit log last recorded baseline generation {} ({}): the store was emptied",
            m.generation, m.digest
        )),
        StoreStatus::Adopted(s) if s.generation < m.generation => Some(format!(
            "rollback: the hasher's store holds baseline generation {} ({}), older than generation {} ({}) this audit log last recorded",
            s.generation, s.digest, m.generation, m.digest
        )),
        StoreStatus::Adopted(s) if s.generation == m.generation && s.digest != m.digest => {
            Some(format!(
                "rollback: the hasher's store holds another baseline ({}) at generation {} than the one this audit log recorded ({})",
                s.digest, s.generation, m.digest
            ))
        }
        StoreStatus::Adopted(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(generation: u64, digest: char) -> StoreStatus {
        StoreStatus::Adopted(BaselineSummary {
            digest: digest.to_string().repeat(64),
            entries: 1,
            signed: true,
            created_at: "t".into(),
            generation,
        })
    }

    #[test]
    fn older_other_or_no_baseline_is_a_rollback_newer_is_not() {
        let m = Adopted {
            generation: 3,
            digest: "b".repeat(64),
        };
        assert_eq!(
            rollback(None, &summary(0, 'a')),
            None,
            "no memory: first start"
        );
        assert_eq!(rollback(Some(&m), &summary(3, 'b')), None, "the same");
        assert_eq!(rollback(Some(&m), &summary(4, 'c')), None, "newer");
        assert!(rollback(Some(&m), &summary(2, 'b')).is_some(), "older");
        assert!(
            rollback(Some(&m), &summary(0, 'a')).is_some(),
            "a Go baseline put back"
        );
        assert!(
            rollback(Some(&m), &summary(3, 'c')).is_some(),
            "same generation, other digest"
        );
        assert!(rollback(Some(&m), &StoreStatus::Empty).is_some(), "emptied");
    }

    #[test]
    fn recall_takes_the_last_adoption_of_a_log_and_skips_what_is_not_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        assert_eq!(recall(&p), None);
        let d = |c: char| c.to_string().repeat(64);
        let text = format!(
            "{{\"event\":\"start\"}}\nnot json\n{{\"event\":\"baseline_adopted\",\"adopted_generation\":1,\"adopted_digest\":\"{}\"}}\n{}\n{{\"event\":\"audit_reopened\",\"adopted_generation\":2,\"adopted_digest\":\"{}\"}}\n{{\"event\":\"violation\"}}\n{{\"adopted_generation\":9,\"adopted_digest\":\"not hex\"}}\n",
            d('a'),
            "x".repeat(MAX_LINE + 10),
            d('b')
        );
        std::fs::write(&p, text).expect("write");
        assert_eq!(
            recall(&p),
            Some(Adopted {
                generation: 2,
                digest: d('b')
            })
        );
    }
}
