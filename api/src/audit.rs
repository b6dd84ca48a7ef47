//! The JSONL audit log, hash-chained: each record carries `seq` and `prev` (hex SHA-256 of the
//! previous line's bytes), is written in one `write` on an `O_APPEND` file and synced before it
//! counts. The chain continues across restarts and rotations; a broken tail found at start is
//! moved aside (never deleted) and the new chain links to the last whole record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use protocol::sign::sha256_hex;
use serde_json::{Map, Value};

use crate::events::AuditRecord;

/// Default audit log.
pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl";
/// `prev` of the very first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How much of the old log's end is read at start to find the chain head.
const TAIL: u64 = 256 * 1024;

/// The last record of the chain: its `seq` and the SHA-256 of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last record (0: empty chain).
    pub seq: u64,
    /// Hex SHA-256 of the last record's line, or [`GENESIS`].
    pub hash: String,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Length of the file after our last write: shorter on disk means it was truncated.
    end: u64,
    head: Head,
    /// The last baseline adoption recorded (`adopted`): carried into every record that opens
    /// a file, so the current file always holds it.
    adopted: Option<crate::adopted::Adopted>,
    /// What was remembered at open: the memory record, this log and its rotations.
    memory: crate::adopted::Memory,
    /// Set when a broken tail was moved aside at start: (snapshot path, why).
    pub recovered: Option<(PathBuf, String)>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Locks the audit log for this process: `PATH.lock` beside it holds an exclusive `flock` and
/// the holder's pid. A second monitor on the same log is refused, naming the first.
pub fn lock(path: &Path) -> Result<(), InUse> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    imsys::lockfile::acquire(&lock_path, std::time::Duration::from_secs(2)).map_err(|why| InUse {
        path: path.to_owned(),
        why,
    })
}

/// The audit log is locked by another monitor (or its lock file is unusable).
#[derive(Debug, thiserror::Error)]
#[error("{} is in use by another integrity-monitor: {why}", path.display())]
pub struct InUse {
    /// The audit log.
    pub path: PathBuf,
    /// Who holds it.
    pub why: imsys::lockfile::LockError,
}

/// Reads the end of an existing log: the head of its chain, or why its tail is broken (with
/// the head of the last whole, parsable record).
fn read_head(path: &Path) -> std::io::Result<Result<Head, (Head, String)>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Ok(Head {
                seq: 0,
                hash: GENESIS.into(),
            }))
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail)?;
    if tail.is_empty() {
        return Ok(Ok(Head {
            seq: 0,
            hash: GENESIS.into(),
        }));
    }
    let complete = tail.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = tail.split(|b| *b == b'\n').collect();
    lines.pop(); // after the last '\n' (empty if the file ends cleanly, a torn record if not)
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // may start mid-line
    }
    let parse = |line: &[u8]| -> Option<Head> {
        let v: Value = serde_json::from_slice(line).ok()?;
        Some(Head {
            seq: v.get("seq")?.as_u64()?,
            hash: sha256_hex(line),
        })
    };
    let good = lines.iter().rev().find_map(|l| parse(l));
    let last_ok = lines.last().and_then(|l| parse(l));
    match (complete, last_ok, good) {
        (true, Some(h), _) => Ok(Ok(h)),
        (_, _, good) => {
            let head = good.unwrap_or(Head {
                seq: 0,
                hash: GENESIS.into(),
            });
            let why = if complete {
                "last record is not a chained JSON record"
            } else {
                "last record is torn (no newline)"
            };
            Ok(Err((head, why.into())))
        }
    }
}

impl AuditLog {
    /// Opens (creating) the log and finds the chain head. A broken tail is moved aside to
    /// `PATH.broken-UNIXTIME` and the chain continues from the last whole record.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        // Before anything is created or moved aside: a first start is one with no trace.
        let memory = crate::adopted::Memory::recall(path);
        let adopted = memory.adopted.clone();
        let (head, recovered) = match read_head(path)? {
            Ok(head) => (head, None),
            Err((head, why)) => {
                let stamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.broken-{stamp}", path.display()));
                std::fs::rename(path, &aside)?;
                (head, Some((aside, why)))
            }
        };
        let file = open(path)?;
        if let Err(e) = imsys::paths::give_to_dir_owner(&file, path) {
            tracing::warn!(path = %path.display(), error = %e, "the audit log stays root's: the service may not open it");
        }
        let end = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            end,
            head,
            adopted,
            memory,
            recovered,
        })
    }

    /// The last baseline adoption this log records.
    pub fn adopted(&self) -> Option<&crate::adopted::Adopted> {
        self.adopted.as_ref()
    }

    /// What the api remembered when it opened the log (see [`crate::adopted::Memory`]).
    pub fn memory(&self) -> &crate::adopted::Memory {
        &self.memory
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chain head: the last record written.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Reopens the path, for log rotation without copytruncate; the chain continues.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = open(&self.path)?;
        self.end = self.file.metadata()?.len();
        Ok(())
    }

    /// Whether the file at the path is still the one being written, and if not what happened
    /// to it: deleted, renamed or replaced, or truncated (logrotate's `copytruncate`).
    pub fn replaced(&self) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        let ours = self.file.metadata().ok()?;
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("deleted or renamed"),
            // Cannot look (a directory of another user's, run without capabilities): the file
            // this process holds open is still written; nothing says it was replaced.
            Err(_) => None,
            Ok(now) if now.dev() != ours.dev() || now.ino() != ours.ino() => Some("replaced"),
            Ok(now) if now.len() < self.end => Some("truncated"),
            Ok(_) => None,
        }
    }

    /// When the log was deleted, renamed, replaced or truncated under us, reopens the path and
    /// records `audit_log_replaced` there first, chained to the last record written, so the
    /// chain over (old file or copy, new file) still verifies. Returns what happened.
    pub fn follow(&mut self) -> std::io::Result<Option<&'static str>> {
        let Some(what) = self.replaced() else {
            return Ok(None);
        };
        let before = self.head.clone();
        self.reopen()?;
        self.append(&AuditRecord::AuditLogReplaced {
            reason: what,
            path: self.path.display().to_string(),
            last_seq: before.seq,
            last_hash: before.hash,
        })?;
        Ok(Some(what))
    }

    /// Appends one record `{"seq","prev","time","event",…fields}` in a single write and syncs
    /// it, after following a log that was rotated or removed under us (see [`AuditLog::follow`]).
    pub fn record(&mut self, record: &AuditRecord) -> std::io::Result<()> {
        self.follow()?;
        self.append(record)
    }

    /// Appends records stamped with the time each was made in order, then syncs once: all of
    /// them are on disk, or none is (the file is cut back and the head restored). Follows a log
    /// rotated or removed under us first. Returns how many were written.
    pub fn record_batch<'a>(
        &mut self,
        records: impl Iterator<Item = (&'a AuditRecord, SystemTime)>,
    ) -> (usize, Option<std::io::Error>) {
        if let Err(e) = self.follow() {
            return (0, Some(e));
        }
        let (end, head) = (self.end, self.head.clone());
        let mut written = 0;
        let mut failed = None;
        for (record, at) in records {
            if let Err(e) = self.write_line(record, at) {
                failed = Some(e);
                break;
            }
            written += 1;
        }
        if written > 0 {
            if let Err(e) = self.file.sync_data() {
                // Not known to be durable: none of it counts, and the retry writes it again.
                let _ = self.file.set_len(end);
                (self.end, self.head) = (end, head);
                return (0, Some(e));
            }
        }
        (written, failed)
    }

    fn append(&mut self, record: &AuditRecord) -> std::io::Result<()> {
        let (end, head) = (self.end, self.head.clone());
        self.write_line(record, SystemTime::now())?;
        if let Err(e) = self.file.sync_data() {
            let _ = self.file.set_len(end);
            (self.end, self.head) = (end, head);
            return Err(e);
        }
        Ok(())
    }

    fn write_line(&mut self, written: &AuditRecord, at: SystemTime) -> std::io::Result<()> {
        let fields = written.to_fields().map_err(std::io::Error::other)?;
        let mut record = Map::new();
        record.insert("seq".into(), (self.head.seq + 1).into());
        record.insert("prev".into(), self.head.hash.clone().into());
        record.insert(
            "time".into(),
            humantime::format_rfc3339_millis(at).to_string().into(),
        );
        for (k, v) in fields {
            if !matches!(k.as_str(), "seq" | "prev" | "time") {
                record.insert(k, v);
            }
        }
        let carried = written.opens_a_file();
        let adopted = crate::adopted::Adopted::from_record(&record);
        if let (None, Some(known), true) = (&adopted, &self.adopted, carried) {
            record.extend(known.fields());
        }
        let mut line = serde_json::to_vec(&Value::Object(record)).map_err(std::io::Error::other)?;
        let hash = sha256_hex(&line);
        line.push(b'\n');
        // One write of the whole line: O_APPEND keeps concurrent records from interleaving.
        // A write cut short (full disk, file size limit) would leave half a record that breaks
        // the chain: cut the file back to where it was, so the retry appends a whole record.
        let before = self.file.metadata()?.len();
        if let Err(e) = self.file.write_all(&line) {
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.head = Head {
            seq: self.head.seq + 1,
            hash,
        };
        if adopted.is_some() {
            self.adopted = adopted;
        }
        self.end = before + line.len() as u64;
        Ok(())
    }
}

/// An emptied log proves nothing: it is a break, not an empty success.
fn empty_log(file: Option<&PathBuf>) -> Break {
    Break {
        file: file.cloned().unwrap_or_default(),
        line: 0,
        expected: "at least one record".into(),
        found: "an empty log (a log emptied by an attacker verifies nothing)".into(),
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// File of the broken record.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What was expected there.
    pub expected: String,
    /// What was found.
    pub found: String,
}

/// Walks `files` in order (oldest rotation first) and checks every link; the first break, if any.
/// The first record must be the genesis record (`seq` 1, `prev` all zeros) unless `from` says
/// where the part being checked starts; with `upto`, the chain must contain that record (an
/// attestation's `audit_seq`/`audit_head`), proving the log complete up to it.
pub fn verify(files: &[PathBuf]) -> Result<u64, Break> {
    verify_with(files, None, None)
}

/// [`verify`] with an explicit start (`seq` of the record before the first, its hash) and an
/// optional record the chain must reach.
pub fn verify_with(
    files: &[PathBuf],
    from: Option<Head>,
    upto: Option<Head>,
) -> Result<u64, Break> {
    let mut head: Option<Head> = Some(from.unwrap_or(Head {
        seq: 0,
        hash: GENESIS.into(),
    }));
    let mut reached = upto.is_none();
    let mut records = 0u64;
    for file in files {
        let text = std::fs::read(file).map_err(|e| Break {
            file: file.clone(),
            line: 0,
            expected: "a readable file".into(),
            found: e.to_string(),
        })?;
        if !text.is_empty() && !text.ends_with(b"\n") {
            let line = text.split(|b| *b == b'\n').count();
            return Err(Break {
                file: file.clone(),
                line,
                expected: "a whole record ending in a newline".into(),
                found: "a torn record".into(),
            });
        }
        for (i, line) in text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let bad = |expected: String, found: String| Break {
                file: file.clone(),
                line: i + 1,
                expected,
                found,
            };
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| bad("a JSON record".into(), e.to_string()))?;
            let seq = v
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("a seq field".into(), "none".into()))?;
            let prev = v
                .get("prev")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a prev field".into(), "none".into()))?;
            if let Some(h) = &head {
                if seq != h.seq + 1 {
                    return Err(bad(format!("seq {}", h.seq + 1), format!("seq {seq}")));
                }
                if prev != h.hash {
                    return Err(bad(format!("prev {}", h.hash), format!("prev {prev}")));
                }
            }
            let hash = sha256_hex(line);
            reached |= upto
                .as_ref()
                .is_some_and(|u| u.seq == seq && u.hash == hash);
            head = Some(Head { seq, hash });
            records += 1;
        }
    }
    if let (false, Some(u)) = (reached, &upto) {
        let last = files.last().cloned().unwrap_or_default();
        return Err(Break {
            file: last,
            line: 0,
            expected: format!("record {} with hash {}", u.seq, u.hash),
            found: format!("the chain ends at record {}", head.map_or(0, |h| h.seq)),
        });
    }
    if records == 0 {
        return Err(empty_log(files.last()));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(log: &mut AuditLog, kind: &str) {
        let record = match kind {
            "transition" => AuditRecord::Transition(crate::state::Transition {
                from: crate::state::State::Trusted,
                to: crate::state::State::Degraded,
                reason: crate::state::Reason::ScanFailed,
                violation_count: 0,
            }),
            "reload" => AuditRecord::ReloadRefused {
                reason: "/x".into(),
            },
            _ => AuditRecord::BaselineUnsigned {
                digest: "/x".into(),
            },
        };
        log.record(&record).expect("record");
    }

    /// One record of every kind the api writes, with the fields each call site gives it:
    /// what an auditor's tools read, pinned byte for byte (the chain too: `prev` hashes the
    /// line before). The adoption recorded first is carried into `start`, `audit_reopened`
    /// and `audit_log_replaced`.
    fn every_kind() -> Vec<AuditRecord> {
        use crate::events::{Made, Refused, StopReason};
        use crate::state::{Reason, State};
        use serde_json::json;
        let digest = "d".repeat(64);
        let violation = protocol::report::Violation {
            detected_at: "2026-01-01T00:00:00Z".into(),
            category: protocol::Category::ModelFile,
            path: "/var/lib/m/a.gguf".into(),
            expected_hash: "a".repeat(64),
            actual_hash: protocol::Actual::Digest(protocol::hexfmt::Sha256Digest([0xbb; 32])),
            action: protocol::Action::QuarantineModel,
        };
        let made = |generation, entries, signed, created_at: &str| Made {
            digest: digest.clone(),
            generation,
            entries,
            signed,
            created_at: created_at.into(),
        };
        vec![
            AuditRecord::BaselineAdopted(crate::adopted::Adopted {
                generation: 3,
                digest: digest.clone(),
            }),
            AuditRecord::Start {
                version: "0.1.0",
                pid: 4242,
            },
            AuditRecord::Stop {
                reason: StopReason::Signal,
            },
            AuditRecord::Violation(violation),
            AuditRecord::Transition(crate::state::Transition {
                from: State::Trusted,
                to: State::Degraded,
                reason: Reason::Violations {
                    count: 1,
                    threshold: 3,
                },
                violation_count: 1,
            }),
            AuditRecord::AuthRefused {
                method: "POST".into(),
                path: "/api/v1/scan".into(),
                reason: "invalid_token",
            },
            AuditRecord::AuthRefusedSuppressed { count: 17 },
            AuditRecord::BaselineChanged {
                from: Some("c".repeat(64)),
                to: digest.clone(),
                generation: 4,
            },
            AuditRecord::BaselineLoaded {
                digest: digest.clone(),
                generation: 3,
                entries: 12,
                signed: true,
            },
            AuditRecord::BaselineMigrated {
                from: "go",
                digest: digest.clone(),
                entries: 12,
            },
            AuditRecord::BaselineRejected {
                reason: "baseline.json: HMAC does not verify".into(),
            },
            AuditRecord::BaselineRolledForward {
                from: 2,
                to: 3,
                digest: digest.clone(),
            },
            AuditRecord::BaselineUnsigned {
                digest: digest.clone(),
            },
            AuditRecord::HasherLost {
                reason: "link closed".into(),
            },
            AuditRecord::HasherStartFailed {
                reason: "store unusable".into(),
            },
            AuditRecord::HasherReconnected {
                after: Some("link closed".into()),
            },
            AuditRecord::HmacKeyAbsent {
                signing: "unsigned",
            },
            AuditRecord::IncidentDropped {
                state: State::Degraded,
                reason: "reporter queue full",
            },
            AuditRecord::IncidentReportFailed {
                state: "degraded".into(),
                attempts: 5,
                error: "connection refused".into(),
            },
            AuditRecord::IncidentReported {
                state: "degraded".into(),
                status: 202,
                attempt: 1,
            },
            AuditRecord::Initialized(made(1, 12, true, "2026-01-01T00:00:00Z")),
            AuditRecord::Rebaseline(made(5, 13, false, "2026-01-02T00:00:00Z")),
            AuditRecord::RebaselineRefused(Refused::Baseline {
                reason: "hasher refused: unauthorized".into(),
            }),
            AuditRecord::RebaselineRefused(Refused::Plan {
                reason: "a watched file is missing".into(),
                at: "plan",
            }),
            AuditRecord::RebaselineRefused(Refused::Ceremony {
                reason: "files changed since the plan".into(),
                plan: json!("e".repeat(64)),
                new_plan: json!("f".repeat(64)),
            }),
            AuditRecord::RebaselineRefused(Refused::Ceremony {
                reason: "bad proof".into(),
                plan: Value::Null,
                new_plan: Value::Null,
            }),
            AuditRecord::RebaselinePlanned {
                plan: "e".repeat(64),
                generation: json!(6),
                added: json!(1),
                removed: json!(0),
                changed: json!(2),
            },
            AuditRecord::Reload {
                scan_interval_ms: 30_000,
                degradation_threshold: 3,
                watched_paths: 7,
            },
            AuditRecord::ReloadRefused {
                reason: "policy: line 3: unknown key".into(),
            },
            AuditRecord::ReferenceInUse {
                digest: digest.clone(),
                entries: 12,
                release: Some("c0ffee".into()),
                store: protocol::standing::FromStore::Verified,
            },
            AuditRecord::ReleaseTransition {
                from: "c0ffee".into(),
                to: "decade".into(),
                downgrade: false,
                generation: 7,
                moved_count: 1,
                moved: vec![protocol::standing::Moved {
                    path: "/usr/bin/x".into(),
                    old: None,
                    new: "a".repeat(64),
                }],
                dropped: vec!["/usr/bin/y".into()],
            },
            AuditRecord::ReleaseRefused {
                reason: "release file unsigned".into(),
            },
            AuditRecord::MemoryRecordFailed {
                path: "/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl.adopted.json".into(),
                error: "No space left on device (os error 28)".into(),
            },
            AuditRecord::AuditReopened,
            AuditRecord::AuditLogReplaced {
                reason: "truncated",
                path: DEFAULT_AUDIT_LOG.into(),
                last_seq: 35,
                last_hash: "9".repeat(64),
            },
            AuditRecord::AuditTailRecovered {
                snapshot: PathBuf::from(
                    "/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl.broken-1767225600",
                ),
                reason: "last record is torn (no newline)".into(),
            },
            AuditRecord::AuditLogReopenFailed {
                reason: "Permission denied (os error 13)".into(),
            },
            AuditRecord::AuditRecordsDropped { count: 3 },
        ]
    }

    #[test]
    fn every_record_kind_is_written_byte_for_byte_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_123);
        let records = every_kind();
        let (written, failed) = log.record_batch(records.iter().map(|r| (r, at)));
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!(written, records.len());
        let text = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, GOLDEN_LOG);
        assert_eq!(
            verify(std::slice::from_ref(&p)),
            Ok(GOLDEN_LOG.len() as u64)
        );
    }

    const GOLDEN_LOG: &[&str] = &[
        "{\"adopted_digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"adopted_generation\":3,\"event\":\"baseline_adopted\",\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"seq\":1,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"adopted_digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"adopted_generation\":3,\"event\":\"start\",\"pid\":4242,\"prev\":\"a4455f0ff781346f62b7fa8fbae728c52b1c51d5bcf14caa76ea4e80dfc07ad4\",\"seq\":2,\"time\":\"2026-01-01T00:00:00.123Z\",\"version\":\"0.1.0\"}",
        "{\"event\":\"stop\",\"prev\":\"49f140d63c5e5bdbd828ad5670f324ec9d77eee274c4476f41f20cd58e79a1c2\",\"reason\":\"signal\",\"seq\":3,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"action\":\"quarantine_model\",\"actual_hash\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"category\":\"model_file\",\"detected_at\":\"2026-01-01T00:00:00Z\",\"event\":\"violation\",\"expected_hash\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"path\":\"/var/lib/m/a.gguf\",\"prev\":\"7e2da50d0fe2a4b2a85a8a45ed7f251a10dd7c3d786562cea08d1ecf098330a3\",\"seq\":4,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"transition\",\"from\":\"trusted\",\"prev\":\"f9ea553b47f300910e10bafdb1de0941fb8bf4180206d9a6bc46f898a1429131\",\"reason\":\"1 violation(s), threshold 3\",\"seq\":5,\"time\":\"2026-01-01T00:00:00.123Z\",\"to\":\"degraded\",\"violation_count\":1}",
        "{\"event\":\"auth_refused\",\"method\":\"POST\",\"path\":\"/api/v1/scan\",\"prev\":\"5807bb2510fef15e04fc99a6503a246b43f851c40e3df78448a5ca4ad6fb3f13\",\"reason\":\"invalid_token\",\"seq\":6,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"count\":17,\"event\":\"auth_refused_suppressed\",\"prev\":\"a2a738f4eb79b35b5024ad5ecd5972013bed9f07b5ccf427124b3fce9fb057f6\",\"seq\":7,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"baseline_changed\",\"from\":\"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\",\"generation\":4,\"prev\":\"c36b07376cfeb3e0579222d4b9a6442651cf4bc0e3f76cac9830623f04331daf\",\"seq\":8,\"time\":\"2026-01-01T00:00:00.123Z\",\"to\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"}",
        "{\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"entries\":12,\"event\":\"baseline_loaded\",\"generation\":3,\"prev\":\"8ba2f6f9d84679366fd8d62daf5c612b1c404c78d608476584c382f0d7aee8cd\",\"seq\":9,\"signed\":true,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"entries\":12,\"event\":\"baseline_migrated\",\"from\":\"go\",\"prev\":\"ddbead431e0825dec0288dbda33e0948b8282b34a8ecb4ef648a59e825c75468\",\"seq\":10,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"baseline_rejected\",\"prev\":\"93627fd4d4ddb57289adb32e713ae0f4f0b99b20761d8681190abb19e7c3a5da\",\"reason\":\"baseline.json: HMAC does not verify\",\"seq\":11,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"event\":\"baseline_rolled_forward\",\"from\":2,\"prev\":\"6f08e0de63f3c5514d609798a1eba60dfb7659e173291a30e31547403d04c05b\",\"seq\":12,\"time\":\"2026-01-01T00:00:00.123Z\",\"to\":3}",
        "{\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"event\":\"baseline_unsigned\",\"prev\":\"15cdbb2c2630b01bb9787d1120fee34037bc624d120510b3b6048ee79e77038c\",\"seq\":13,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"hasher_lost\",\"prev\":\"ba132b1442fddc913b542ae2b9a3273cf75eccf7b609ceb15b18fb371382c018\",\"reason\":\"link closed\",\"seq\":14,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"hasher_start_failed\",\"prev\":\"9851a18c46745f079866cdde3ee7df0ab377f0f80f530924f698cad8e8c8078e\",\"reason\":\"store unusable\",\"seq\":15,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"after\":\"link closed\",\"event\":\"hasher_reconnected\",\"prev\":\"67f1ae3acf834100dbccdfb60861f370b446d1de1faea47ce60087ebeef2dede\",\"seq\":16,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"hmac_key_absent\",\"prev\":\"1f81ba2520dfce7fc99715c5efef3db5fc725838fc00abb9792c5f46a9d5f2ec\",\"seq\":17,\"signing\":\"unsigned\",\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"incident_dropped\",\"prev\":\"6498d2fd867d1c45ee3631bf0fa2dd5fa16f624a40c38f27623b3cbcaafde63a\",\"reason\":\"reporter queue full\",\"seq\":18,\"state\":\"degraded\",\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"attempts\":5,\"error\":\"connection refused\",\"event\":\"incident_report_failed\",\"prev\":\"c565b7a6e040a1e4f7adff554178860ca41eb4e912f0c1b9716f8908c7152c92\",\"seq\":19,\"state\":\"degraded\",\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"attempt\":1,\"event\":\"incident_reported\",\"prev\":\"b9630b952ff1e7140cbbf3b872287c4bce2c7cb29cda164ef34769d841384c3b\",\"seq\":20,\"state\":\"degraded\",\"status\":202,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"created_at\":\"2026-01-01T00:00:00Z\",\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"entries\":12,\"event\":\"initialized\",\"generation\":1,\"prev\":\"bec13ba1d4944c226dcf347e21f9d363acd0a11abbef0f4487d09a70c9b3025c\",\"seq\":21,\"signed\":true,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"created_at\":\"2026-01-02T00:00:00Z\",\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"entries\":13,\"event\":\"rebaseline\",\"generation\":5,\"prev\":\"faafe1d6a27f60b805924174305c7cd0da2f8afba5ef59f84333e8c87f621191\",\"seq\":22,\"signed\":false,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"rebaseline_refused\",\"prev\":\"8795c177f0f11668967f8376cc27f28aac8e915b0d6063dc8d8cb8fd5f546c11\",\"reason\":\"hasher refused: unauthorized\",\"seq\":23,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"at\":\"plan\",\"event\":\"rebaseline_refused\",\"prev\":\"c6c69394f88524d409b269ad99a7fb2d81ff624bca8eb95acbe1899823b5d0df\",\"reason\":\"a watched file is missing\",\"seq\":24,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"rebaseline_refused\",\"new_plan\":\"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\",\"plan\":\"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\",\"prev\":\"eb37c1d9855f18091475c4d8c9335e3159245eae93ebf8d0fadc6cb8ff0510a1\",\"reason\":\"files changed since the plan\",\"seq\":25,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"rebaseline_refused\",\"new_plan\":null,\"plan\":null,\"prev\":\"30945371d5cd981963a1b7298943b0a7cffe4fe480d4914e850022ffa4199fd7\",\"reason\":\"bad proof\",\"seq\":26,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"added\":1,\"changed\":2,\"event\":\"rebaseline_planned\",\"generation\":6,\"plan\":\"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\",\"prev\":\"3af2df449e6c5348f78fa9a29263b7912398daab7239511fbb664192e04a2867\",\"removed\":0,\"seq\":27,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"degradation_threshold\":3,\"event\":\"reload\",\"prev\":\"e2c8df4aa80410490030e0bef1c340999908f168a1192f7b8e35bdf76ece4d75\",\"scan_interval_ms\":30000,\"seq\":28,\"time\":\"2026-01-01T00:00:00.123Z\",\"watched_paths\":7}",
        "{\"event\":\"reload_refused\",\"prev\":\"6580d2f360878d592e84d9465addbad8468abc13e9693cce7899b6005a033537\",\"reason\":\"policy: line 3: unknown key\",\"seq\":29,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"entries\":12,\"event\":\"reference_in_use\",\"prev\":\"82a9ca35cca1f26c6dcedcde04b415ea8b98b58ad9d57a84e4e01742a1812905\",\"release\":\"c0ffee\",\"seq\":30,\"store\":\"verified\",\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"downgrade\":false,\"dropped\":[\"/usr/bin/y\"],\"event\":\"release_transition\",\"from\":\"c0ffee\",\"generation\":7,\"moved\":[{\"new\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"old\":null,\"path\":\"/usr/bin/x\"}],\"moved_count\":1,\"prev\":\"9014c4dccf23dccadfb9f051fe0b2baded0af26bc54f13866b9d966f8e1bbd54\",\"seq\":31,\"time\":\"2026-01-01T00:00:00.123Z\",\"to\":\"decade\"}",
        "{\"event\":\"release_refused\",\"prev\":\"416d2fb62a8d638661b074cb8c9fd59c24c5203b52c78e24b416c1a868f91d3b\",\"reason\":\"release file unsigned\",\"seq\":32,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"error\":\"No space left on device (os error 28)\",\"event\":\"memory_record_failed\",\"path\":\"/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl.adopted.json\",\"prev\":\"d7d34bfc902663515536df43636daa5de866ca278dcd3d0f1b861a4a245bceba\",\"seq\":33,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"adopted_digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"adopted_generation\":3,\"event\":\"audit_reopened\",\"prev\":\"5c7b1b034685a8efe34ecee02fabd922668356a4fa43fd8451207a11775d85ad\",\"seq\":34,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"adopted_digest\":\"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\",\"adopted_generation\":3,\"event\":\"audit_log_replaced\",\"last_hash\":\"9999999999999999999999999999999999999999999999999999999999999999\",\"last_seq\":35,\"path\":\"/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl\",\"prev\":\"878d6be4443469dfbeea4329c83be940306a51a25e583cf14001f1429ab808fb\",\"reason\":\"truncated\",\"seq\":35,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"audit_tail_recovered\",\"prev\":\"e4a18e99a96eef903f5c9db59ea2b8ed1972230007096d4fdedc43f5eb72a609\",\"reason\":\"last record is torn (no newline)\",\"seq\":36,\"snapshot\":\"/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl.broken-1767225600\",\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"event\":\"audit_log_reopen_failed\",\"prev\":\"059cbdbadb15b508845439fea0743224f9cf2f2ae7ba7bb87cea08711a2cff85\",\"reason\":\"Permission denied (os error 13)\",\"seq\":37,\"time\":\"2026-01-01T00:00:00.123Z\"}",
        "{\"count\":3,\"event\":\"audit_records_dropped\",\"prev\":\"43db7f51168ebd9ce2b730d76bbc598419ee7fcce5a1b481eb68dceea3bfff1d\",\"seq\":38,\"time\":\"2026-01-01T00:00:00.123Z\"}",
    ];

    #[test]
    fn chain_holds_across_restart_and_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        rec(&mut log, "violation");
        rec(&mut log, "violation");
        std::fs::rename(&p, dir.path().join("audit.jsonl.1")).expect("rotate");
        log.reopen().expect("reopen");
        rec(&mut log, "violation");
        drop(log);
        let mut log = AuditLog::open(&p).expect("restart");
        assert_eq!(log.head().seq, 3);
        rec(&mut log, "violation");
        let files = [dir.path().join("audit.jsonl.1"), p.clone()];
        assert_eq!(verify(&files), Ok(4));
        let old = std::fs::read_to_string(&files[0]).expect("read");
        let rec0: Value =
            serde_json::from_str(old.lines().next().unwrap_or_default()).expect("json");
        assert_eq!(
            (rec0["seq"].as_u64(), rec0["prev"].as_str()),
            (Some(1), Some(GENESIS))
        );
    }

    #[test]
    fn edits_and_deletions_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        for e in ["violation", "transition", "reload"] {
            rec(&mut log, e);
        }
        drop(log);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(
            &p,
            text.replacen(
                "\"event\":\"transition\"",
                "\"event\":\"reload_refused\"",
                1,
            ),
        )
        .expect("edit");
        let b = verify(std::slice::from_ref(&p)).expect_err("edit found");
        assert_eq!(b.line, 3, "{b:?}");
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&p, format!("{}\n{}\n", lines[0], lines[2])).expect("delete");
        let b = verify(std::slice::from_ref(&p)).expect_err("deletion found");
        assert_eq!(b.line, 2);
    }

    #[test]
    fn torn_tail_is_kept_aside_and_the_chain_continues() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        rec(&mut log, "violation");
        rec(&mut log, "violation");
        drop(log);
        // A crash mid-write leaves half a record.
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(b"{\"seq\":3,\"prev\":\"ab").expect("write");
        drop(f);
        let mut log = AuditLog::open(&p).expect("reopen");
        let (aside, why) = log.recovered.clone().expect("recovered");
        assert!(why.contains("torn"));
        assert!(aside.exists(), "nothing deleted");
        assert_eq!(log.head().seq, 2);
        rec(&mut log, "violation");
        assert!(
            verify(std::slice::from_ref(&aside)).is_err(),
            "the snapshot shows its break"
        );
        let good: String = std::fs::read_to_string(&aside)
            .expect("read")
            .lines()
            .take(2)
            .map(|l| format!("{l}\n"))
            .collect();
        let whole = dir.path().join("whole");
        std::fs::write(&whole, good).expect("write");
        assert_eq!(
            verify(&[whole, p]),
            Ok(3),
            "the new chain links to the last whole record"
        );
    }
}
