//! The JSONL audit log: one record per decision, appended and flushed to disk before it counts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value};

/// Default audit log.
pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/secure-ai/logs/integrity-monitor-audit.jsonl";

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        Ok(AuditLog {
            path: path.to_owned(),
            file: open(path)?,
        })
    }

    /// Reopens the path, for log rotation without copytruncate.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    /// Appends one record `{"time":…,"event":…,…fields}` in a single write and syncs it.
    pub fn record(&mut self, event: &str, fields: Map<String, Value>) -> std::io::Result<()> {
        let mut record = Map::new();
        record.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        record.insert("event".into(), event.into());
        record.extend(fields);
        let mut line = serde_json::to_vec(&Value::Object(record)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write of the whole line: O_APPEND keeps concurrent records from interleaving.
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_json_line_per_record_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&p).expect("open");
        let mut f = Map::new();
        f.insert("path".into(), "/x".into());
        log.record("violation", f).expect("record");
        std::fs::rename(&p, dir.path().join("audit.jsonl.1")).expect("rotate");
        log.reopen().expect("reopen");
        log.record("transition", Map::new()).expect("record");
        let old = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).expect("read");
        let new = std::fs::read_to_string(&p).expect("read");
        let rec: Value = serde_json::from_str(old.trim()).expect("json");
        assert_eq!(rec["event"], "violation");
        assert_eq!(rec["path"], "/x");
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains("\"event\":\"transition\""));
    }
}
