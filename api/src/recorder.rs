//! The audit writer: one thread owns the log and is the only one that waits for the disk;
//! everyone else hands it records through a bounded queue and never blocks. `/health` and
//! `/verify` therefore answer at once on a stalled disk, and a flood of refused requests costs
//! a queue slot each, never a `fsync` on the runtime.

use crate::events::AuditRecord;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::audit::{AuditLog, Head};

/// Records accepted but not yet handed to the writer; a full queue drops (and counts) records.
pub const QUEUE: usize = 4096;
/// Records the writer keeps while the log cannot be written; beyond this, new ones are dropped.
pub const MAX_PENDING: usize = 1000;
/// Records written with one `fsync`, at most.
const BATCH: usize = 256;
/// How often the writer retries a log it cannot write.
const RETRY: Duration = Duration::from_secs(1);

enum Command {
    Record(AuditRecord, SystemTime),
    /// Reopen the path (SIGHUP, after rotation).
    Reopen,
    /// Follow a log deleted, renamed, replaced or truncated under us.
    Follow,
    /// Answer once everything queued before is written (or has failed): whether it all is.
    Flush(oneshot::Sender<bool>),
    /// Answer with the chain head after everything queued before.
    Head(oneshot::Sender<Head>),
    /// Stand for a disk that stalls: the writer sleeps.
    #[cfg(test)]
    Stall(Duration),
}

/// What the writer tells everyone else.
#[derive(Debug, Default)]
struct Shared {
    /// Records the writer holds or dropped that are not on disk (the log cannot be written).
    stored: AtomicUsize,
    /// Records dropped because the queue was full; the writer records how many when it can.
    dropped: AtomicU64,
    /// Every record ever dropped, by a full queue or a full backlog (never goes down).
    dropped_total: AtomicU64,
}

/// The handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<Command>,
    shared: Arc<Shared>,
}

impl Recorder {
    /// Starts the writer thread, which owns `log` from now on.
    pub fn start(log: AuditLog) -> std::io::Result<Recorder> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            log,
            pending: std::collections::VecDeque::new(),
            shared: shared.clone(),
            unrecorded_drops: 0,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Recorder { tx, shared })
    }

    /// Queues a record; never waits. A full queue drops it, counted and recorded later.
    pub fn record(&self, record: AuditRecord) {
        let command = Command::Record(record, SystemTime::now());
        if let Err(TrySendError::Full(Command::Record(record, _))) = self.tx.try_send(command) {
            let dropped = self.shared.dropped.fetch_add(1, Ordering::SeqCst) + 1;
            self.shared.dropped_total.fetch_add(1, Ordering::SeqCst);
            tracing::error!(
                event = record.name(),
                dropped,
                "audit queue full; record dropped"
            );
        }
    }

    /// Records that are not on disk because the log is unwritable or the queue overflowed.
    pub fn backlog(&self) -> usize {
        let overflowed = self.shared.dropped.load(Ordering::SeqCst);
        self.shared
            .stored
            .load(Ordering::SeqCst)
            .saturating_add(usize::try_from(overflowed).unwrap_or(usize::MAX))
    }

    /// Every record dropped since start (a full queue or a full backlog).
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::SeqCst)
    }

    /// Asks the writer to reopen the log (after rotation).
    pub fn reopen(&self) {
        self.send(Command::Reopen);
    }

    /// Asks the writer to follow a log replaced under the api.
    pub fn follow(&self) {
        self.send(Command::Follow);
    }

    /// Waits, at most `limit`, until every record queued before is written; true if all are.
    /// Mutating endpoints answer after this, so their records are on disk when they do.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx));
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(true)))
    }

    /// The chain head once every record queued before is written.
    pub async fn head(&self) -> Option<Head> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Head(tx));
        rx.await.ok()
    }

    fn send(&self, command: Command) {
        // Control commands wait for a slot: they are rare and carry no record to drop.
        if self.tx.send(command).is_err() {
            tracing::error!("audit writer is gone");
        }
    }
}

struct Writer {
    log: AuditLog,
    pending: std::collections::VecDeque<(AuditRecord, SystemTime)>,
    shared: Arc<Shared>,
    /// Drops already counted in `pending`'s place whose `audit_records_dropped` is not written.
    unrecorded_drops: u64,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Command>) {
        if let Some((aside, why)) = self.log.recovered.take() {
            tracing::warn!(snapshot = %aside.display(), why, "audit log tail was broken: kept aside, chain continues");
            self.keep(AuditRecord::AuditTailRecovered {
                snapshot: aside,
                reason: why,
            });
            self.write_pending();
        }
        loop {
            let wait = if self.pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                RETRY
            };
            match rx.recv_timeout(wait) {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_pending();
                    return;
                }
            }
            // What is already queued is taken before writing, then written in batches.
            while let Ok(command) = rx.try_recv() {
                self.handle(command);
                if self.pending.len() >= BATCH {
                    self.write_pending();
                }
            }
            self.write_pending();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Record(record, at) => {
                if self.pending.len() >= MAX_PENDING {
                    self.unrecorded_drops += 1;
                    self.shared.dropped_total.fetch_add(1, Ordering::SeqCst);
                    tracing::error!(
                        event = record.name(),
                        dropped = self.unrecorded_drops,
                        "audit backlog full; record dropped"
                    );
                } else {
                    self.pending.push_back((record, at));
                }
                // Not published yet: a record on its way to the disk is not a backlog; one
                // the disk refused is (see `write_pending`).
            }
            Command::Reopen => match self.log.reopen() {
                Ok(()) => self.keep(AuditRecord::AuditReopened),
                Err(e) => {
                    tracing::error!(error = %e, "audit log reopen failed; still writing to the old file")
                }
            },
            Command::Follow => self.follow(),
            Command::Flush(reply) => {
                self.write_pending();
                let _ = reply.send(self.pending.is_empty() && self.unrecorded_drops == 0);
            }
            Command::Head(reply) => {
                self.write_pending();
                let _ = reply.send(self.log.head().clone());
            }
            #[cfg(test)]
            Command::Stall(d) => std::thread::sleep(d),
        }
    }

    fn keep(&mut self, record: AuditRecord) {
        self.handle(Command::Record(record, SystemTime::now()));
    }

    fn follow(&mut self) {
        if !self.pending.is_empty() || self.log.replaced().is_none() {
            return;
        }
        match self.log.follow() {
            Ok(Some(what)) => tracing::warn!(
                what,
                "audit log was rotated or removed under the api: reopened, chain continues"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "audit log replaced and cannot be reopened; /verify answers 503 until it can");
                self.keep(AuditRecord::AuditLogReopenFailed {
                    reason: e.to_string(),
                });
            }
        }
    }

    fn write_pending(&mut self) {
        // Queue overflows are folded into one record, written in order with the rest. Counted
        // here before they are taken from `dropped`, so the backlog never reads low meanwhile.
        let overflowed = self.shared.dropped.load(Ordering::SeqCst);
        if overflowed > 0 {
            self.unrecorded_drops += overflowed;
            self.publish();
            self.shared.dropped.fetch_sub(overflowed, Ordering::SeqCst);
        }
        if self.unrecorded_drops > 0 && self.pending.len() < MAX_PENDING {
            let count = std::mem::take(&mut self.unrecorded_drops);
            self.pending.push_back((
                AuditRecord::AuditRecordsDropped { count },
                SystemTime::now(),
            ));
        }
        if !self.pending.is_empty() {
            let records = self.pending.iter().map(|(r, at)| (r, *at));
            let (written, failed) = self.log.record_batch(records);
            self.pending.drain(..written);
            if let Some(e) = failed {
                tracing::error!(error = %e, backlog = self.pending.len(), "audit log write failed; /verify answers 503 until it succeeds");
            }
        }
        self.publish();
    }

    /// Publishes the backlog: records kept or dropped here, plus overflows not taken yet.
    fn publish(&self) {
        let kept = self
            .pending
            .len()
            .saturating_add(usize::try_from(self.unrecorded_drops).unwrap_or(usize::MAX));
        self.shared.stored.store(kept, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A record of no consequence, numbered.
    fn numbered(i: u64) -> AuditRecord {
        AuditRecord::AuthRefusedSuppressed { count: i }
    }

    fn log(dir: &std::path::Path) -> AuditLog {
        AuditLog::open(&dir.join("audit.jsonl")).expect("open")
    }

    fn events(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                v["event"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn records_are_written_in_order_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("dir");
        let r = Recorder::start(log(dir.path())).expect("start");
        for i in 0..50 {
            r.record(numbered(i));
        }
        assert!(r.flush(Duration::from_secs(10)).await);
        let got = events(dir.path());
        assert_eq!(got.len(), 50);
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("read");
        let order: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("json")["count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(
            order,
            (0..50).collect::<Vec<u64>>(),
            "in the order recorded"
        );
        assert_eq!(r.head().await.map(|h| h.seq), Some(50));
        assert_eq!(r.backlog(), 0);
        let files = [dir.path().join("audit.jsonl")];
        assert_eq!(crate::audit::verify(&files).ok(), Some(50));
    }

    #[tokio::test]
    async fn an_unwritable_log_is_a_backlog_that_drains_when_it_is_writable_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.jsonl");
        let r = Recorder::start(log(dir.path())).expect("start");
        r.record(numbered(0));
        assert!(r.flush(Duration::from_secs(10)).await);
        // A directory where the log was, and the log deleted: every reopen fails.
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("mkdir");
        r.record(AuditRecord::ReloadRefused { reason: "x".into() });
        r.follow();
        assert!(!r.flush(Duration::from_secs(10)).await);
        assert!(r.backlog() > 0, "not on disk: counted");
        std::fs::remove_dir(&path).expect("rmdir");
        // The writer retries on its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.backlog() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(r.backlog(), 0);
        assert!(r.flush(Duration::from_secs(10)).await);
        let got = events(dir.path());
        // The new file starts by saying what happened to the old one, chained to it.
        assert_eq!(got, ["audit_log_replaced", "reload_refused"]);
    }

    #[tokio::test]
    async fn a_stalled_disk_never_holds_up_a_caller_and_overflow_is_counted_then_recorded() {
        let dir = tempfile::tempdir().expect("dir");
        let r = Recorder::start(log(dir.path())).expect("start");
        let stall = Duration::from_secs(3);
        r.send(Command::Stall(stall));
        let total = QUEUE * 4;
        let started = std::time::Instant::now();
        for _ in 0..total {
            r.record(numbered(0));
        }
        let took = started.elapsed();
        assert!(
            took < stall,
            "{total} records took {took:?}: callers waited for the disk"
        );
        // Records were lost while the disk stalled: that is a backlog (/verify 503) at once.
        assert!(r.backlog() >= total - QUEUE, "backlog {}", r.backlog());
        let flushed = r.flush(Duration::from_secs(120)).await;
        let got = events(dir.path());
        assert!(flushed, "{} records, backlog {}", got.len(), r.backlog());
        let flood = got
            .iter()
            .filter(|e| *e == "auth_refused_suppressed")
            .count();
        let dropped: u64 = std::fs::read_to_string(dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "audit_records_dropped")
            .filter_map(|v| v["count"].as_u64())
            .sum();
        assert!(dropped > 0);
        assert_eq!(
            flood as u64 + dropped,
            total as u64,
            "each record is written or counted"
        );
        assert_eq!(r.backlog(), 0, "all said: no backlog left");
        let files = [dir.path().join("audit.jsonl")];
        assert!(crate::audit::verify(&files).is_ok(), "the chain is whole");
    }
}
