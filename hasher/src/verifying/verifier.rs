//! The verifier: the policy in force, the adopted baseline, the file memory and the sweeps,
//! owned in one place; the server hands it requests and the time between them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::policy::Policy;
use crate::storing::store::Current;
use crate::verifying::hashing::FileHasher;
use crate::verifying::scan::Sweep;
use crate::verifying::spread::Cycle;

/// What decides whether the files are the ones the baseline names.
pub struct Verifier {
    /// The policy in force.
    pub(crate) policy: Policy,
    /// The adopted baseline, if any.
    pub(crate) baseline: Option<Current>,
    /// The file memory: what was read, and when each file falls due again.
    pub(crate) hasher: FileHasher,
    /// The last report's sequence number.
    pub(crate) seq: u64,
    /// The last full sweep's findings, brought up to date by each scan of the changes.
    pub(crate) sweep: Option<Sweep>,
    /// Paths the kernel named since the last scan, and whether they are all that changed.
    pub(crate) named: HashSet<PathBuf>,
    pub(crate) named_complete: bool,
    /// The sweep spread over the interval, and when its next slice is due.
    pub(crate) cycle: Option<Cycle>,
    pub(crate) next_slice: Instant,
}

/// A digest of the findings that changes when any is added, cleared or changed.
fn fingerprint(findings: &[protocol::report::Violation]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in findings {
        (&v.path, &v.expected_hash, &v.actual_hash).hash(&mut h);
    }
    h.finish()
}

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
        if let (Some(sweep), Some(b)) = (self.sweep.as_mut(), self.baseline.as_ref()) {
            let updated = crate::verifying::rescan::update(
                &self.policy,
                &b.manifest,
                &mut self.hasher,
                sweep,
                &due,
            );
            if updated.is_none() {
                // Only a full sweep can say (a registry's dir): the next request makes one,
                // reading them (their digests are forgotten).
                self.sweep = None;
                self.cycle = None;
            }
        }
        true
    }

    /// One slice of the spread sweep; true when it added or cleared a finding (or only a full
    /// sweep can say, which the next request makes).
    pub(crate) fn slice(&mut self) -> bool {
        let (Some(sweep), Some(b)) = (self.sweep.as_mut(), self.baseline.as_ref()) else {
            return false;
        };
        // A cycle done early (fewer units than slices) rests until its interval is over.
        if self
            .cycle
            .as_ref()
            .is_some_and(|c| c.complete() && c.started.elapsed() >= c.interval())
        {
            self.cycle = None;
        }
        if self.cycle.is_none() {
            self.cycle = Cycle::new(&self.policy, &b.manifest);
        }
        let Some(cycle) = self.cycle.as_mut() else {
            return false; // not spread (a registry's dir): the api's ticks sweep everything
        };
        if cycle.complete() {
            return false;
        }
        let units = cycle.slice_at(Instant::now(), &b.manifest);
        let before = fingerprint(&sweep.findings);
        let (wall, cpu) = (Instant::now(), crate::verifying::spread::thread_cpu());
        let updated = crate::verifying::rescan::update(
            &self.policy,
            &b.manifest,
            &mut self.hasher,
            sweep,
            &units,
        );
        let took = crate::verifying::spread::thread_cpu().saturating_sub(cpu);
        if took > cycle.slowest {
            // Rare (a new maximum): a cycle over a large tree may take many minutes.
            tracing::debug!(
                slowest_cpu_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                wall_us = u64::try_from(wall.elapsed().as_micros()).unwrap_or(u64::MAX),
                units = units.len(),
                "spread sweep: slowest slice so far"
            );
            cycle.slowest = took;
        }
        let changed = match updated {
            Some(()) => fingerprint(&sweep.findings) != before,
            None => {
                // Only a full sweep can say: the next request makes one.
                self.sweep = None;
                self.cycle = None;
                true
            }
        };
        if changed {
            tracing::info!(
                units = units.len(),
                "the spread sweep found a change no event announced"
            );
        }
        if let (Some(cycle), Some(sweep)) = (&self.cycle, self.sweep.as_mut()) {
            if cycle.complete() {
                tracing::debug!(
                    units = cycle.units(),
                    ms = u64::try_from(cycle.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    slowest_cpu_us = u64::try_from(cycle.slowest.as_micros()).unwrap_or(u64::MAX),
                    "spread sweep cycle complete"
                );
                sweep.at = cycle.started;
            }
        }
        changed
    }

    /// A full sweep against the adopted baseline (`None`: there is none). `events_complete`:
    /// every directory is watched, so the named paths can stand for all changes from now on.
    pub(crate) fn sweep_all(
        &mut self,
        events_complete: bool,
    ) -> Option<protocol::report::ScanReport> {
        let b = self.baseline.as_ref()?;
        self.seq += 1;
        // Everything named so far is covered: events drained later name later changes.
        self.named.clear();
        self.named_complete = events_complete;
        self.cycle = None;
        let (report, sweep) = crate::verifying::scan::sweep(
            &self.policy,
            &b.manifest,
            &b.digest,
            &mut self.hasher,
            self.seq,
        );
        self.sweep = Some(sweep);
        Some(report)
    }

    /// How long a sweep's findings stand in for a new sweep. Spread (`watching`: inotify
    /// works, no registry), a cycle examines every unit once per cycle interval and `at` is
    /// when the last complete one began: at most two cycles old while cycles keep up. Not
    /// spread, the api's tick, a scan interval after the last report, must find it stale and
    /// sweep: 0.9 of it.
    pub(crate) fn sweep_lifetime(&self, watching: bool) -> Duration {
        if watching && crate::verifying::scan::governed(&self.policy).is_none() {
            let files = self
                .baseline
                .as_ref()
                .map_or(0, |b| b.manifest.entries.len());
            crate::verifying::spread::cycle_interval(&self.policy, files).saturating_mul(2)
        } else {
            self.policy.scan_interval.mul_f64(0.9)
        }
    }

    /// Checks only the named paths, when they are all that changed and the sweep is current:
    /// the report and how many paths; `None` when only a full sweep can say.
    pub(crate) fn check_named(
        &mut self,
        watching: bool,
    ) -> Option<(protocol::report::ScanReport, usize)> {
        let fresh = match (&self.sweep, &self.baseline) {
            (Some(s), Some(b)) => {
                s.digest == b.digest && s.at.elapsed() < self.sweep_lifetime(watching)
            }
            _ => false,
        };
        if !(fresh && self.named_complete) {
            return None;
        }
        let (Some(mut sweep), Some(b)) = (self.sweep.take(), self.baseline.as_ref()) else {
            return None;
        };
        let paths: Vec<PathBuf> = self.named.drain().collect();
        let Some(report) = crate::verifying::rescan::rescan(
            &self.policy,
            &b.manifest,
            &mut self.hasher,
            &mut sweep,
            &paths,
            self.seq + 1,
        ) else {
            tracing::debug!(paths = paths.len(), "named changes need a full sweep");
            return None;
        };
        self.seq += 1;
        self.sweep = Some(sweep);
        Some((report, paths.len()))
    }
}
