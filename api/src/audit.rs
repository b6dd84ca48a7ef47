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

use crate::events::AuditEvent;

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
        let mut fields = Map::new();
        fields.insert("reason".into(), what.into());
        fields.insert("path".into(), self.path.display().to_string().into());
        fields.insert("last_seq".into(), before.seq.into());
        fields.insert("last_hash".into(), before.hash.into());
        self.append(AuditEvent::AuditLogReplaced, fields)?;
        Ok(Some(what))
    }

    /// Appends one record `{"seq","prev","time","event",…fields}` in a single write and syncs
    /// it, after following a log that was rotated or removed under us (see [`AuditLog::follow`]).
    pub fn record(&mut self, event: AuditEvent, fields: Map<String, Value>) -> std::io::Result<()> {
        self.follow()?;
        self.append(event, fields)
    }

    /// Appends records stamped with the time each was made in order, then syncs once: all of
    /// them are on disk, or none is (the file is cut back and the head restored). Follows a log
    /// rotated or removed under us first. Returns how many were written.
    pub fn record_batch<'a>(
        &mut self,
        records: impl Iterator<Item = (AuditEvent, &'a Map<String, Value>, SystemTime)>,
    ) -> (usize, Option<std::io::Error>) {
        if let Err(e) = self.follow() {
            return (0, Some(e));
        }
        let (end, head) = (self.end, self.head.clone());
        let mut written = 0;
        let mut failed = None;
        for (event, fields, at) in records {
            if let Err(e) = self.write_line(event, fields.clone(), at) {
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

    fn append(&mut self, event: AuditEvent, fields: Map<String, Value>) -> std::io::Result<()> {
        let (end, head) = (self.end, self.head.clone());
        self.write_line(event, fields, SystemTime::now())?;
        if let Err(e) = self.file.sync_data() {
            let _ = self.file.set_len(end);
            (self.end, self.head) = (end, head);
            return Err(e);
        }
        Ok(())
    }

    fn write_line(
        &mut self,
        event: AuditEvent,
        fields: Map<String, Value>,
        at: SystemTime,
    ) -> std::io::Result<()> {
        let mut record = Map::new();
        record.insert("seq".into(), (self.head.seq + 1).into());
        record.insert("prev".into(), self.head.hash.clone().into());
        record.insert(
            "time".into(),
            humantime::format_rfc3339_millis(at).to_string().into(),
        );
        record.insert("event".into(), event.as_str().into());
        for (k, v) in fields {
            if !matches!(k.as_str(), "seq" | "prev" | "time" | "event") {
                record.insert(k, v);
            }
        }
        let carried = crate::adopted::CARRIERS.contains(&event);
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

    fn rec(log: &mut AuditLog, event: AuditEvent) {
        let mut f = Map::new();
        f.insert("path".into(), "/x".into());
        log.record(event, f).expect("record");
    }

    #[test]
    fn chain_holds_across_restart_and_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        rec(&mut log, AuditEvent::Violation);
        rec(&mut log, AuditEvent::Violation);
        std::fs::rename(&p, dir.path().join("audit.jsonl.1")).expect("rotate");
        log.reopen().expect("reopen");
        rec(&mut log, AuditEvent::Violation);
        drop(log);
        let mut log = AuditLog::open(&p).expect("restart");
        assert_eq!(log.head().seq, 3);
        rec(&mut log, AuditEvent::Violation);
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
        for e in [
            AuditEvent::Violation,
            AuditEvent::Transition,
            AuditEvent::Reload,
        ] {
            rec(&mut log, e);
        }
        drop(log);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(
            &p,
            text.replacen("\"event\":\"transition\"", "\"event\":\"reload\"", 1),
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
        rec(&mut log, AuditEvent::Violation);
        rec(&mut log, AuditEvent::Violation);
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
        rec(&mut log, AuditEvent::Violation);
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
