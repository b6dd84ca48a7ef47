//! Changed files until a read proves them. A write into a page of a `MAP_SHARED` mapping that
//! is already dirty raises no page fault: no timestamp moves and inotify says nothing. So a
//! changed file is read once its pages are written back (`reading::proof`): from then on a
//! write through a mapping faults again and moves its ctime, which the next metadata check
//! sees. Until that read is in, the file is pending (`hashing::settling`) and the reports say
//! so (`unsettled`); the scan the change brings normally makes it, and what no scan read is
//! read here when due. Unchanged files cost nothing; a changed one, one read.

use std::time::Instant;

use crate::verifying::verifier::Verifier;

/// Most named paths a scan of the changes checks one by one; past it, it sweeps everything.
pub(crate) const MAX_NAMED: usize = 4096;

impl Verifier {
    /// Takes in what the watcher drained: each named path is read again even if its metadata
    /// looks the same (a clock stepped back, coarse timestamps), proving it; lost or unnamed
    /// events, or too many names, leave only a full sweep sure.
    pub(crate) fn absorb(&mut self, changes: &crate::live::Changes) {
        if changes.overflow {
            tracing::warn!("inotify queue overflowed: next scan re-reads every file");
            self.forget_everything();
        }
        for path in &changes.paths {
            self.hasher.forget(path);
            // The registry's manifest is read whole at every scan, never proven by a check.
            if self.policy.registry_manifest.as_ref() != Some(path) {
                self.hasher.settling.note(path);
            }
        }
        if changes.overflow || changes.unnamed || self.named.len() + changes.paths.len() > MAX_NAMED
        {
            self.named_complete = false;
            self.named.clear();
        } else if self.named_complete {
            self.named.extend(changes.paths.iter().cloned());
        }
    }

    /// Nothing remembered can be trusted (events were lost, the wall clock was stepped): the
    /// next scan sweeps and reads every file, proving each (nothing is remembered of it).
    pub(crate) fn forget_everything(&mut self) {
        self.hasher.forget_all();
        self.hasher.settling.note_everything();
        self.named_complete = false;
        self.named.clear();
    }

    /// Reads the pending files no scan has read yet (or whose settle window passed), bringing
    /// the last sweep up to date; true when it read any.
    pub(crate) fn settle(&mut self) -> bool {
        let due = self.hasher.settling.take_due(Instant::now());
        if due.everything {
            // The next request sweeps everything, reading every file (all forgotten).
            tracing::warn!(
                "settle window's read of every file: more changes than are tracked by name, or lost events"
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
            "pending files read on the verifier's own: not proven yet, or their settle window passed"
        );
        if self.sweep.is_some() && self.baseline.is_some() && self.update(&due).is_some() {
            self.hasher.settling.drop_unread(&due);
        } else {
            // Only a full sweep can say (a registry's dir): the next request makes one,
            // reading them (their digests are forgotten).
            self.sweep = None;
            self.cycle = None;
        }
        true
    }
}
