//! The sweep spread over its interval: instead of one pass over the whole tree every
//! `scan_interval`, the hasher checks a slice of it every [`SLICE_PERIOD`] between requests
//! (each listed file, and each top-level entry of each model dir, is a unit), so that a whole
//! cycle takes the interval and no moment pays for the whole tree. This is what catches
//! what inotify cannot see (a write through `mmap`, a change in a directory the kernel would
//! not watch); what it finds is announced like any change, so the api asks for it at once.
//!
//! A cycle takes `scan_interval`, or longer for a tree larger than `sweep_files_per_second`
//! checks in it: the idle cost of a million files stays a fraction of a core, while every
//! change the kernel names is still checked at once.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use protocol::baseline::Manifest;

use crate::policy::Policy;
use crate::scan::governed;

/// How often a slice runs while the hasher waits for requests.
pub const SLICE_PERIOD: Duration = Duration::from_millis(100);

/// One pass over every unit of the watched set.
#[derive(Debug)]
pub struct Cycle {
    units: Vec<PathBuf>,
    next: usize,
    interval: Duration,
    /// When the cycle began: a completed cycle examined everything since then.
    pub started: Instant,
    /// The longest slice so far (reported when the cycle completes).
    pub slowest: Duration,
}

impl Cycle {
    /// A cycle over the policy's units, paced to complete in `scan_interval`; `None`
    /// where a unit cannot be checked on its own (a registry governs a model dir: its check is
    /// one piece), so full sweeps remain.
    pub fn new(policy: &Policy, baseline: &Manifest) -> Option<Cycle> {
        if governed(policy).is_some() {
            return None;
        }
        let mut units: BTreeSet<Vec<u8>> = policy
            .files
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes().to_vec())
            .collect();
        for dir in &policy.model_dirs {
            units.extend(top_level(dir, baseline));
        }
        let units: Vec<PathBuf> = units
            .into_iter()
            .map(|b| PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&b))))
            .collect();
        Some(Cycle {
            units,
            next: 0,
            interval: cycle_interval(policy, baseline.entries.len()),
            started: Instant::now(),
            slowest: Duration::ZERO,
        })
    }

    /// The units due by `now` and not yet handed out: the cycle hands its units out evenly
    /// over the interval (one slice ahead), so it costs the same at every moment of it.
    pub fn slice_at(&mut self, now: Instant) -> &[PathBuf] {
        let ahead = now.saturating_duration_since(self.started) + SLICE_PERIOD;
        let share = ahead.as_secs_f64() / self.interval.as_secs_f64().max(f64::EPSILON);
        let due = (self.units.len() as f64 * share).ceil() as usize;
        let start = self.next;
        self.next = due.clamp(start, self.units.len());
        &self.units[start..self.next]
    }

    /// When the next unit falls due (the end of the interval once all are handed out): no
    /// wake-up before it has work.
    pub fn next_due(&self) -> Instant {
        if self.complete() {
            return self.started + self.interval;
        }
        let share = self.next as f64 / self.units.len().max(1) as f64;
        (self.started + self.interval.mul_f64(share)).max(self.started + SLICE_PERIOD)
            - SLICE_PERIOD
    }

    /// How long the cycle takes.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many units the cycle covers.
    pub fn units(&self) -> usize {
        self.units.len()
    }

    /// Whether every unit has been handed out.
    pub fn complete(&self) -> bool {
        self.next >= self.units.len()
    }
}

/// How long a cycle over `files` baselined files takes: the scan interval, or as long as
/// checking them at the policy's `sweep_files_per_second` takes.
pub fn cycle_interval(policy: &Policy, files: usize) -> Duration {
    let rate = policy.sweep_files_per_second.max(1) as f64;
    policy
        .scan_interval
        .max(Duration::from_secs_f64(files as f64 / rate))
}

/// The entries directly in `dir` now, and those the baseline has there (so a unit that
/// vanished is still checked, and found missing). A dir that cannot be listed is its own unit:
/// checking it widens to a full sweep, which reports it.
fn top_level(dir: &Path, baseline: &Manifest) -> Vec<Vec<u8>> {
    let prefix = dir.as_os_str().as_bytes();
    // Sorted entries name each top-level entry in one run: one unit per run, not one
    // allocation per baselined file.
    let mut out: Vec<Vec<u8>> = Vec::new();
    for e in baseline.entries.iter() {
        let Some(rest) = e.path.as_bytes().strip_prefix(prefix) else {
            continue;
        };
        let Some(first) = rest
            .strip_prefix(b"/")
            .and_then(|r| r.split(|b| *b == b'/').next())
        else {
            continue;
        };
        let unit = [prefix, b"/", first].concat();
        if out.last() != Some(&unit) {
            out.push(unit);
        }
    }
    let listed = crate::resolve::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .ok()
        .and_then(|fd| nix::dir::Dir::from_fd(fd).ok());
    let Some(mut handle) = listed else {
        out.push(prefix.to_vec());
        return out;
    };
    for entry in handle.iter().filter_map(Result::ok) {
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push([prefix, b"/", name].concat());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::FileHasher;
    use crate::scan::{create_baseline, sweep};

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
    /// announced (as a write through `mmap` would be), a deleted dir and a new one.
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
        let yaml = format!(
            "scan_interval: 1s\nservice_binaries: [{r}/bin]\nmodel_dirs: [{r}/models]\n",
            r = r.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        let digest = "0".repeat(64);
        let base = create_baseline(&policy, &mut FileHasher::default(), None, 1).expect("base");
        let mut hasher = FileHasher::default();
        let (_, mut kept) = sweep(&policy, &base, &digest, &mut hasher, 1);
        // Unannounced: same size, new content (the metadata fast path sees the new ctime).
        std::fs::write(r.join("models/d1/f2"), "y").expect("write");
        std::fs::remove_dir_all(r.join("models/d3")).expect("rm");
        std::fs::create_dir_all(r.join("models/new/deep")).expect("mkdir");
        std::fs::write(r.join("models/new/deep/n"), "n").expect("write");
        std::fs::write(r.join("bin"), "B").expect("write");
        let mut cycle = Cycle::new(&policy, &base).expect("no registry");
        let mut sizes = Vec::new();
        for k in 0..10u32 {
            let units = cycle.slice_at(cycle.started + SLICE_PERIOD * k).to_vec();
            crate::rescan::update(&policy, &base, &mut hasher, &mut kept, &units)
                .expect("every unit checks on its own");
            sizes.push(units.len());
        }
        assert!(cycle.complete());
        // 8 units (bin, top.bin, d0-d4 with the vanished d3, new) handed out evenly over the
        // ten 100 ms slices of a 1 s interval.
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|n| *n <= 2), "{sizes:?}");
        let spread = kept.report(2, 0, Instant::now());
        let full = sweep(&policy, &base, &digest, &mut FileHasher::default(), 2).0;
        let essence = |r: &protocol::report::ScanReport| {
            let v: Vec<_> = r
                .violations
                .iter()
                .map(|v| (v.path.clone(), v.actual_hash.clone()))
                .collect();
            (r.watched_files, r.violation_count, v)
        };
        assert_eq!(essence(&spread), essence(&full));
        assert_eq!(
            full.violation_count, 7,
            "1 edited, 4 missing, 1 new, the binary: {full:?}"
        );
    }
}
