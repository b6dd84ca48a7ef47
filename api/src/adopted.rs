//! The api's memory of the baselines it adopted: the second store a rollback must also roll
//! back. The hasher's store alone cannot tell an old baseline put back (with `generation.json`
//! deleted, or the whole store restored) from the real one; this memory, written by another
//! user, can. The hasher is told it at hello and holds its store to it.
//!
//! It is kept twice. A small record beside the audit log (`<log>.adopted.json`, a name no
//! logrotate rule of the appliance lists), replaced atomically at each adoption, survives
//! rotation by rename, `copytruncate` and a deleted log. And every adoption is recorded in the
//! hash-chained log with `adopted_generation` and `adopted_digest`; the records that open a
//! file (`start`, `audit_reopened`, `audit_log_replaced`) carry the last one forward. At start
//! the higher of the two is recalled. Where neither recalls an adoption, a rotated or
//! broken-aside log beside the current one is still a trace of an earlier life: an empty
//! store is then not a first start.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use protocol::message::BaselineSummary;
use protocol::standing::Prior;
use serde_json::{Map, Value};

/// Field of a record naming an adopted baseline's generation.
pub const GENERATION: &str = "adopted_generation";
/// Field of a record naming an adopted baseline's digest.
pub const DIGEST: &str = "adopted_digest";
/// Longest record line looked at when recalling (records are far shorter).
const MAX_LINE: usize = 1 << 20;
/// Longest memory record read (it is under 200 bytes).
const MAX_RECORD: u64 = 4096;
/// The memory record's format version.
const RECORD_VERSION: u64 = 1;

/// The last baseline adopted: its store generation and manifest digest (as a record names
/// them: the fields [`GENERATION`] and [`DIGEST`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adopted {
    /// Store generation (0: a Go-format or pre-generation baseline).
    #[serde(rename = "adopted_generation")]
    pub generation: u64,
    /// SHA-256 (hex) of the manifest.
    #[serde(rename = "adopted_digest")]
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

/// What the api remembers at start: the last adoption, and any other trace of an earlier life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The last baseline adopted, from the record or the log, whichever is newer.
    pub adopted: Option<Adopted>,
    /// A trace of an earlier life that recalls no adoption, described for the operator.
    pub trace: Option<String>,
}

impl Memory {
    /// Recalls what the memory record beside `log`, the log itself and the files rotated
    /// from it say; read before anything is written at this start.
    pub fn recall(log: &Path) -> Memory {
        let from_record = read_record(&record_path(log));
        let from_log = recall(log);
        let adopted = match (from_record, from_log) {
            (Some(r), Some(l)) if l.generation > r.generation => Some(l),
            (Some(r), _) => Some(r),
            (None, l) => l,
        };
        let trace = match &adopted {
            Some(_) => None,
            None => rotated_sibling(log).map(|p| {
                format!(
                    "{} is left from an earlier life of the audit log",
                    p.display()
                )
            }),
        };
        Memory { adopted, trace }
    }

    /// What the hasher is told at hello.
    pub fn prior(&self) -> Prior {
        match (&self.adopted, &self.trace) {
            (Some(a), _) => Prior::Adopted {
                generation: a.generation,
                digest: a.digest.clone(),
            },
            (None, Some(what)) => Prior::Trace {
                what: what
                    .chars()
                    .take(protocol::standing::MAX_TRACE_LEN / 4)
                    .collect(),
            },
            (None, None) => Prior::Nothing,
        }
    }
}

/// The memory record kept beside the audit log at `log`: `X.jsonl` → `X.adopted.json`.
pub fn record_path(log: &Path) -> PathBuf {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    log.with_file_name(format!("{stem}.adopted.json"))
}

/// A file beside `log` that logrotate (numbered or dated, compressed or not) or the audit
/// log's own repair (`.broken-…`) made from it.
fn rotated_sibling(log: &Path) -> Option<PathBuf> {
    let name = log.file_name()?.to_str()?;
    let dir = log.parent()?;
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(name))
            .is_some_and(rotated_suffix)
    })
}

/// What logrotate appends (`.1`, `.2.gz`, `-20261206`, `-20261206.gz`) or the log's repair
/// does (`.broken-UNIXTIME`); not the lock file beside it (`.lock`).
fn rotated_suffix(rest: &str) -> bool {
    if let Some(dated) = rest.strip_prefix('-') {
        return !dated.is_empty();
    }
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    let number = rest.split('.').next().unwrap_or("");
    rest.starts_with("broken-")
        || (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// The memory record at `path`, if it is there and well-formed.
fn read_record(path: &Path) -> Option<Adopted> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_RECORD {
        return None;
    }
    let serde_json::Value::Object(record) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    (record.get("version")?.as_u64()? == RECORD_VERSION)
        .then(|| Adopted::from_record(&record))
        .flatten()
}

/// Replaces the memory record at `path` with `adopted`: written to a temporary file, synced,
/// renamed over the record and the directory synced, so a crash leaves the old or the new.
pub fn write_record(path: &Path, adopted: &Adopted) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut fields = adopted.fields();
    fields.insert("version".into(), RECORD_VERSION.into());
    let mut bytes = serde_json::to_vec(&fields).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the memory record has no file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // O_DIRECTORY: the sandbox lets the api list its directories, not read them as files.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)?
            .sync_all()?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn adoption(generation: u64, c: char) -> Adopted {
        Adopted {
            generation,
            digest: c.to_string().repeat(64),
        }
    }

    #[test]
    fn memory_takes_the_newer_of_record_and_log_and_survives_every_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("integrity-monitor-audit.jsonl");
        let record = record_path(&log);
        assert_eq!(
            record,
            dir.path().join("integrity-monitor-audit.adopted.json")
        );
        assert_eq!(
            Memory::recall(&log),
            Memory::default(),
            "nothing: a first start"
        );
        assert_eq!(Memory::recall(&log).prior(), Prior::Nothing);
        // A log with records but no adoption (a first start that failed) is no trace.
        std::fs::write(&log, "{\"event\":\"start\"}\n").expect("write");
        assert_eq!(Memory::recall(&log).prior(), Prior::Nothing);
        write_record(&record, &adoption(4, 'd')).expect("record");
        std::fs::write(
            &log,
            format!(
                "{{\"event\":\"baseline_adopted\",\"adopted_generation\":3,\"adopted_digest\":\"{}\"}}\n",
                "c".repeat(64)
            ),
        )
        .expect("write");
        assert_eq!(
            Memory::recall(&log).adopted,
            Some(adoption(4, 'd')),
            "the record is newer"
        );
        // A crash after the log's record and before the record's replacement: the log wins.
        write_record(&record, &adoption(2, 'b')).expect("record");
        assert_eq!(Memory::recall(&log).adopted, Some(adoption(3, 'c')));
        // Rotation by rename (nocreate), copytruncate (empty log), a deleted log: the record.
        write_record(&record, &adoption(4, 'd')).expect("record");
        std::fs::rename(&log, dir.path().join("integrity-monitor-audit.jsonl.1")).expect("mv");
        assert_eq!(Memory::recall(&log).adopted, Some(adoption(4, 'd')));
        std::fs::write(&log, "").expect("truncate");
        assert_eq!(
            Memory::recall(&log).prior(),
            Prior::Adopted {
                generation: 4,
                digest: "d".repeat(64)
            }
        );
        // The record gone too: the rotated log is a trace, not a first start.
        std::fs::remove_file(&record).expect("rm");
        let m = Memory::recall(&log);
        assert_eq!(m.adopted, None);
        assert!(
            matches!(m.prior(), Prior::Trace { ref what } if what.contains("integrity-monitor-audit.jsonl.1")),
            "{m:?}"
        );
        // A dated, compressed rotation counts as well; an unrelated file does not.
        std::fs::remove_file(dir.path().join("integrity-monitor-audit.jsonl.1")).expect("rm");
        std::fs::write(dir.path().join("other.jsonl.1"), "x").expect("write");
        std::fs::write(dir.path().join("integrity-monitor-audit.jsonl.lock"), "").expect("write");
        assert_eq!(
            Memory::recall(&log).prior(),
            Prior::Nothing,
            "a lock is no rotation"
        );
        std::fs::write(dir.path().join("integrity-monitor-audit.jsonl.2.gz"), "x").expect("write");
        assert!(matches!(Memory::recall(&log).prior(), Prior::Trace { .. }));
        std::fs::remove_file(dir.path().join("integrity-monitor-audit.jsonl.2.gz")).expect("rm");
        std::fs::write(
            dir.path().join("integrity-monitor-audit.jsonl-20261206.gz"),
            "x",
        )
        .expect("write");
        assert!(matches!(Memory::recall(&log).prior(), Prior::Trace { .. }));
    }

    #[test]
    fn a_record_that_is_not_ours_is_not_recalled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.jsonl");
        let record = record_path(&log);
        for text in [
            "not json".to_owned(),
            format!("{{\"version\":2,\"adopted_generation\":1,\"adopted_digest\":\"{}\"}}", "a".repeat(64)),
            "{\"version\":1,\"adopted_generation\":1,\"adopted_digest\":\"short\"}".to_owned(),
            format!("{{\"version\":1,\"adopted_generation\":1,\"adopted_digest\":\"{}\",\"pad\":\"{}\"}}", "a".repeat(64), "x".repeat(5000)),
        ] {
            std::fs::write(&record, text).expect("write");
            assert_eq!(read_record(&record), None);
        }
    }
}
