//! The sweep spread over its interval: instead of one pass over the whole tree every
//! `scan_interval`, the hasher checks a slice of it every [`SLICE_PERIOD`] between requests
//! (each listed file, and each top-level entry of each model dir, is a unit), so that a whole
//! cycle takes the interval and no moment pays for the whole tree. This is what catches
//! what inotify cannot see (a write through `mmap`, a change in a directory the kernel would
//! not watch); what it finds is announced like any change, so the api asks for it at once.
//!
//! A cycle takes `scan_interval`, or longer for a tree larger than `sweep_files_per_second`
//! checks in it: the idle cost of a million files stays a fraction of a core, while every
//! change the kernel names is still checked at once. Units are handed out by the files they
//! hold, and a directory holding more than [`UNIT_FILES`] is opened when its turn comes and
//! handed out as its entries: one slice never checks a whole large directory at once.

use std::time::{Duration, Instant};

use crate::verifying::cycle::{cycle_interval, thread_cpu, Cycle, SLICE_PERIOD};
use crate::verifying::paths::governed;
use crate::verifying::verifier::Verifier;

/// A digest of the findings that changes when any is added, cleared or changed.
fn fingerprint(findings: &[protocol::report::Violation]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in findings {
        (&v.path, &v.expected_hash, &v.actual_hash).hash(&mut h);
    }
    h.finish()
}

impl Verifier {
    /// One slice of the spread sweep; true when it added or cleared a finding (or only a full
    /// sweep can say, which the next request makes).
    pub(crate) fn slice(&mut self) -> bool {
        let (Some(sweep), Some(b)) = (&self.sweep, &self.baseline) else {
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
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let updated = self.update(&units);
        let took = thread_cpu().saturating_sub(cpu);
        if let Some(cycle) = self.cycle.as_mut().filter(|c| took > c.slowest) {
            // Rare (a new maximum): a cycle over a large tree may take many minutes.
            tracing::debug!(
                slowest_cpu_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                wall_us = u64::try_from(wall.elapsed().as_micros()).unwrap_or(u64::MAX),
                units = units.len(),
                "spread sweep: slowest slice so far"
            );
            cycle.slowest = took;
        }
        let changed = match (updated, &self.sweep) {
            (Some(()), Some(sweep)) => fingerprint(&sweep.findings) != before,
            _ => {
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

    /// Whether a slice of the spread sweep is due now (there is a sweep to keep).
    pub(crate) fn slice_due(&self) -> bool {
        self.sweep.is_some() && Instant::now() >= self.next_slice
    }

    /// Sets when the next slice is due, after one ran: the cycle's pace, never sooner than
    /// [`SLICE_PERIOD`]; with no cycle (nothing is spread: a registry's dir), an interval later.
    pub(crate) fn schedule_slice(&mut self) {
        let soonest = Instant::now() + SLICE_PERIOD;
        self.next_slice = self
            .cycle
            .as_ref()
            .map_or(Instant::now() + self.policy.scan_interval, |c| {
                c.next_due().max(soonest)
            });
    }

    /// How long a sweep's findings stand in for a new sweep. Spread (`watching`: inotify
    /// works, no registry), a cycle examines every unit once per cycle interval and `at` is
    /// when the last complete one began: at most two cycles old while cycles keep up. Not
    /// spread, the api's tick, a scan interval after the last report, must find it stale and
    /// sweep: 0.9 of it.
    pub(crate) fn sweep_lifetime(&self, watching: bool) -> Duration {
        if watching && governed(&self.policy).is_none() {
            let files = self
                .baseline
                .as_ref()
                .map_or(0, |b| b.manifest.entries.len());
            cycle_interval(&self.policy, files).saturating_mul(2)
        } else {
            self.policy.scan_interval.mul_f64(0.9)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::verifying::cycle::UNIT_FILES;

    #[test]
    fn a_large_tree_is_swept_at_the_policy_pace_and_a_small_one_every_interval() {
        let policy =
            Policy::parse("trust_material: [/k]\nsweep_files_per_second: 1000\n").expect("policy");
        assert_eq!(cycle_interval(&policy, 10_000), Duration::from_secs(30));
        assert_eq!(
            cycle_interval(&policy, 1_000_000),
            Duration::from_secs(1000)
        );
    }

    /// One whole cycle of slices finds what a full sweep finds, including a change no event
    /// announced (as a write through `mmap` would be), a deleted dir and a new one; a large
    /// dir is handed out as its entries, never whole.
    #[test]
    fn a_cycle_of_slices_equals_a_full_sweep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for d in 0..5 {
            std::fs::create_dir_all(r.join(format!("models/d{d}"))).expect("mkdir");
            for i in 0..4 {
                std::fs::write(r.join(format!("models/d{d}/f{i}")), "x").expect("write");
            }
        }
        std::fs::write(r.join("models/top.bin"), "t").expect("write");
        std::fs::write(r.join("bin"), "b").expect("write");
        let big = r.join("models/big");
        std::fs::create_dir_all(big.join("sub")).expect("mkdir");
        for i in 0..UNIT_FILES + 50 {
            std::fs::write(big.join(format!("f{i:03}")), "x").expect("write");
        }
        for i in 0..3 {
            std::fs::write(big.join(format!("sub/s{i}")), "x").expect("write");
        }
        let yaml = format!(
            "scan_interval: 1s\nservice_binaries: [{r}/bin]\nmodel_dirs: [{r}/models]\n",
            r = r.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        let digest = "0".repeat(64);
        let base = Verifier::fresh_baseline(&policy).expect("base");
        let mut v = Verifier::bare(policy.clone());
        v.adopt_as(base.clone(), &digest);
        v.sweep_all(false).expect("swept");
        // Unannounced: same size, new content (the metadata fast path sees the new ctime).
        std::fs::write(r.join("models/d1/f2"), "y").expect("write");
        std::fs::remove_dir_all(r.join("models/d3")).expect("rm");
        std::fs::create_dir_all(r.join("models/new/deep")).expect("mkdir");
        std::fs::write(r.join("models/new/deep/n"), "n").expect("write");
        std::fs::write(r.join("bin"), "B").expect("write");
        std::fs::write(big.join("f007"), "z").expect("write");
        std::fs::remove_file(big.join("f009")).expect("rm");
        std::fs::write(big.join("sub/s1"), "z").expect("write");
        std::fs::write(big.join("late"), "l").expect("write");
        let mut cycle = Cycle::new(&policy, &base).expect("no registry");
        let mut sizes = Vec::new();
        for k in 0..10u32 {
            let units = cycle.slice_at(cycle.started + SLICE_PERIOD * k, &base);
            v.update(&units).expect("every unit checks on its own");
            assert!(
                !units.contains(&big),
                "the large dir is handed out as its entries"
            );
            sizes.push(units.len());
        }
        assert!(cycle.complete());
        // bin, top.bin, d0-d4 with the vanished d3, new; big's files with the vanished one
        // and the late one, and its sub (small: whole), handed out evenly over the ten 100 ms
        // slices of a 1 s interval.
        let big_units = UNIT_FILES + 50 + 2;
        assert_eq!(sizes.iter().sum::<usize>(), 8 + big_units);
        assert_eq!(cycle.units(), 8 + big_units);
        assert!(sizes.iter().all(|n| *n <= big_units / 5), "{sizes:?}");
        let spread = v.sweep.as_ref().expect("kept").report(2, 0, Instant::now());
        let full = Verifier::fresh_sweep(&policy, &base, &digest);
        let essence = |r: &protocol::report::ScanReport| {
            let v: Vec<_> = r
                .violations
                .iter()
                .map(|v| (v.path.clone(), v.actual_hash))
                .collect();
            (r.watched_files, r.violation_count, v)
        };
        assert_eq!(essence(&spread), essence(&full));
        assert_eq!(
            full.violation_count, 11,
            "3 edited, 5 missing, 2 new, the binary: {full:?}"
        );
    }
}
