//! The scheduler: a scan every interval, and at once when the hasher announces a change that
//! no scan has covered yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Monitor};

impl Monitor {
    /// Runs scheduled scans until the hasher is lost.
    pub async fn schedule(self: Arc<Self>) {
        loop {
            let (interval, last, down) = {
                let s = lock(&self.snap);
                (
                    Duration::from_millis(s.policy.scan_interval_ms),
                    s.last_scan,
                    s.hasher_down.is_some(),
                )
            };
            if !self.started.load(std::sync::atomic::Ordering::SeqCst) {
                // Start-up runs the first scan; the schedule begins after it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if down {
                // Fail closed meanwhile; the supervisor reconnects (or the process exits).
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let due = last.map_or_else(Instant::now, |l| l + interval);
            let notified = tokio::select! {
                () = tokio::time::sleep_until(due.into()) => false,
                () = self.changes.notify.notified() => true,
            };
            if !notified && lock(&self.snap).last_scan != last {
                continue; // a forced scan ran meanwhile; the next one is due an interval after it
            }
            let op = self.op.lock().await;
            if notified && self.changes.count() <= lock(&self.snap).verified_changes {
                // The notice came with a scan already under way, which covered it (the hasher
                // announces every change before it scans): scanning again would defeat the
                // hasher's coalescing of a file written without pause.
                continue;
            }
            // The tick, like a notice, asks for what changed: the hasher keeps its sweep spread
            // over the interval and sweeps everything itself whenever that is not enough.
            let scanned = self.scan_locked(super::ops::Scan::Changes).await;
            drop(op);
            if let Err(e) = scanned {
                tracing::warn!(error = %e, "scheduled scan failed");
                tokio::time::sleep(interval).await;
            }
        }
    }
}
