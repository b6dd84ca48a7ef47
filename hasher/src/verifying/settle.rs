//! Settle reads. A write into a page of a `MAP_SHARED` mapping that is already dirty raises no
//! page fault: no timestamp moves, inotify says nothing, and writeback later stores the bytes
//! with the old times. So a read made just after a change proves only what the page cache held
//! then. Each changed file is read once more when the kernel's writeback window has passed
//! (`vm.dirty_expire_centisecs` + `vm.dirty_writeback_centisecs`, read at start): by then the
//! pages dirtied by that change are written back, and a later write through the mapping faults
//! again, moving the file's times. Until its settle read is in, the file is not proven, and the
//! reports say so (`unsettled`). Unchanged files cost nothing; a changed one, one more read.

use std::time::Instant;

use crate::verifying::verifier::Verifier;

/// Most named paths a scan of the changes checks one by one; past it, it sweeps everything.
pub(crate) const MAX_NAMED: usize = 4096;

impl Verifier {
    /// Takes in what the watcher drained: each named path is read again even if its metadata
    /// looks the same (a clock stepped back, coarse timestamps) and settled later; lost or
    /// unnamed events, or too many names, leave only a full sweep sure.
    pub(crate) fn absorb(&mut self, changes: &crate::live::watch::Changes) {
        if changes.overflow {
            // Events were lost: nothing remembered can be trusted; the next scan reads all,
            // and which files changed is not known, so each is settled a window later too.
            tracing::warn!("inotify queue overflowed: next scan re-reads every file");
            self.hasher.forget_all();
            self.hasher.settling.note_everything();
        }
        for path in &changes.paths {
            self.hasher.forget(path);
            self.hasher.settling.note(path);
        }
        if changes.overflow || changes.unnamed || self.named.len() + changes.paths.len() > MAX_NAMED
        {
            self.named_complete = false;
            self.named.clear();
        } else if self.named_complete {
            self.named.extend(changes.paths.iter().cloned());
        }
    }

    /// Reads again the changed files whose writeback window has passed (`settle`), bringing
    /// the last sweep up to date; true when it read any.
    pub(crate) fn settle(&mut self) -> bool {
        let due = self.hasher.settling.take_due(Instant::now());
        if due.everything {
            // The next request sweeps everything, reading every file (all forgotten).
            tracing::warn!(
                "settle read of every file: more changes than are tracked by name, or lost events"
            );
            self.hasher.forget_all();
            self.sweep = None;
            self.cycle = None;
            return true;
        }
        let due = due.paths;
        if due.is_empty() {
            return false;
        }
        for path in &due {
            self.hasher.forget(path);
        }
        tracing::info!(
            files = due.len(),
            "settle read: changed files read again after the writeback window"
        );
        if self.sweep.is_some() && self.baseline.is_some() && self.update(&due).is_none() {
            // Only a full sweep can say (a registry's dir): the next request makes one,
            // reading them (their digests are forgotten).
            self.sweep = None;
            self.cycle = None;
        }
        true
    }
}
