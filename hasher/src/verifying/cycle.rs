//! One cycle of the spread sweep (see the `spread` module): the units of the watched set, each
//! a listed file or a top-level entry of a model dir, handed out a slice at a time so that the
//! cycle takes the interval.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use protocol::baseline::Manifest;

use crate::policy::Policy;
use crate::verifying::paths::{governed, path_str, scoped};

/// How often a slice runs while the hasher waits for requests.
pub(in crate::verifying) const SLICE_PERIOD: Duration = Duration::from_millis(100);
/// A directory with more baselined files beneath it than this is handed out as its entries
/// (at 5 µs a file checked, a unit then costs at most ~1 ms of CPU).
pub(in crate::verifying) const UNIT_FILES: usize = 200;

/// A path to check and the baselined files at or beneath it (its share of the cycle).
#[derive(Debug)]
struct Unit {
    path: PathBuf,
    files: usize,
}

/// One pass over every unit of the watched set.
#[derive(Debug)]
pub(in crate::verifying) struct Cycle {
    /// Units not handed out yet, the next one last.
    pending: Vec<Unit>,
    /// Files handed out so far, and in all.
    handed: usize,
    total: usize,
    /// Units handed out so far.
    units: usize,
    interval: Duration,
    /// When the cycle began: a completed cycle examined everything since then.
    pub(crate) started: Instant,
    /// The most CPU time one slice took so far (reported when the cycle completes).
    pub(in crate::verifying) slowest: Duration,
}

impl Cycle {
    /// A cycle over the policy's units, paced to complete in `scan_interval`; `None`
    /// where a unit cannot be checked on its own (a registry governs a model dir: its check is
    /// one piece), so full sweeps remain.
    pub(in crate::verifying) fn new(policy: &Policy, baseline: &Manifest) -> Option<Cycle> {
        if governed(policy).is_some() {
            return None;
        }
        let mut units: BTreeMap<Vec<u8>, usize> = policy
            .files
            .iter()
            .map(|(p, _)| (p.as_os_str().as_bytes().to_vec(), 1))
            .collect();
        for dir in &policy.model_dirs {
            let Some(inside) = children(dir, baseline) else {
                // Checking the model dir itself widens to a full sweep, which reports it.
                let files = scoped(&baseline.entries, &path_str(dir)).len();
                units.insert(dir.as_os_str().as_bytes().to_vec(), files);
                continue;
            };
            for (unit, files) in inside {
                let n = units.entry(unit).or_default();
                *n = (*n).max(files);
            }
        }
        let mut pending: Vec<Unit> = units
            .into_iter()
            .map(|(b, files)| Unit {
                path: PathBuf::from(std::ffi::OsStr::from_bytes(&b)),
                files: files.max(1),
            })
            .collect();
        pending.reverse();
        Some(Cycle {
            total: pending.iter().map(|u| u.files).sum(),
            pending,
            handed: 0,
            units: 0,
            interval: cycle_interval(policy, baseline.entries.len()),
            started: Instant::now(),
            slowest: Duration::ZERO,
        })
    }

    /// The units due by `now` and not yet handed out: the cycle hands its files out evenly
    /// over the interval (one slice ahead), so it costs the same at every moment of it. A
    /// large directory whose turn it is is handed out as its entries (`baseline` says what
    /// each holds).
    pub(in crate::verifying) fn slice_at(
        &mut self,
        now: Instant,
        baseline: &Manifest,
    ) -> Vec<PathBuf> {
        let ahead = now.saturating_duration_since(self.started) + SLICE_PERIOD;
        let share = ahead.as_secs_f64() / self.interval.as_secs_f64().max(f64::EPSILON);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a float's `as` saturates (a share past the end: all; NaN: none), as wanted here"
        )]
        let due = (self.total as f64 * share).ceil() as usize;
        let mut out = Vec::new();
        while self.handed < due {
            let Some(unit) = self.pending.pop() else {
                break;
            };
            let inside = (unit.files > UNIT_FILES && is_dir(&unit.path))
                .then(|| children(&unit.path, baseline))
                .flatten();
            if let Some(inside) = inside {
                let mut inner: Vec<Unit> = inside
                    .into_iter()
                    .map(|(b, files)| Unit {
                        path: PathBuf::from(std::ffi::OsStr::from_bytes(&b)),
                        files,
                    })
                    .collect();
                // The entries share the directory's files (new ones count as nothing).
                let mut left = unit.files;
                for u in &mut inner {
                    u.files = u.files.min(left);
                    left -= u.files;
                }
                if let Some(first) = inner.first_mut() {
                    first.files += left;
                }
                self.pending.extend(inner.into_iter().rev());
                continue;
            }
            self.handed += unit.files;
            self.units += 1;
            out.push(unit.path);
        }
        out
    }

    /// When the next unit falls due (the end of the interval once all are handed out): no
    /// wake-up before it has work.
    pub(crate) fn next_due(&self) -> Instant {
        if self.complete() {
            return self.started + self.interval;
        }
        let share = self.handed as f64 / self.total.max(1) as f64;
        (self.started + self.interval.mul_f64(share)).max(self.started + SLICE_PERIOD)
            - SLICE_PERIOD
    }

    /// How long the cycle takes.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// How many units the cycle has handed out.
    pub(crate) fn units(&self) -> usize {
        self.units
    }

    /// Whether every unit has been handed out.
    pub(crate) fn complete(&self) -> bool {
        self.pending.is_empty()
    }
}

/// How long a cycle over `files` baselined files takes: the scan interval, or as long as
/// checking them at the policy's `sweep_files_per_second` takes.
pub(in crate::verifying) fn cycle_interval(policy: &Policy, files: usize) -> Duration {
    let rate = policy.sweep_files_per_second.max(1) as f64;
    policy
        .scan_interval
        .max(Duration::from_secs_f64(files as f64 / rate))
}

/// CPU time this thread has used: what a slice costs, whatever else the machine is doing
/// (zero where the clock cannot be read, which only hides a slice's cost from the log).
pub(in crate::verifying) fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// Whether `path` is a directory itself (not a link to one): only then has it entries to
/// hand out; anything else is checked as it is.
fn is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// The entries directly in `dir` now and those the baseline has there (so one that vanished
/// is still checked, and found missing), each with the baselined files at or beneath it;
/// `None` when `dir` cannot be listed (it is then checked whole, which reports it).
fn children(dir: &Path, baseline: &Manifest) -> Option<BTreeMap<Vec<u8>, usize>> {
    let prefix = dir.as_os_str().as_bytes();
    let scope = scoped(&baseline.entries, &path_str(dir));
    let mut out: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    // Sorted entries name each entry of `dir` in one run: one key per run, not one
    // allocation per baselined file.
    let mut run: Option<(Vec<u8>, usize)> = None;
    for e in scope
        .beneath_range()
        .filter_map(|i| baseline.entries.get(i))
    {
        let Some(first) = e
            .path
            .as_bytes()
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(b"/"))
            .and_then(|r| r.split(|b| *b == b'/').next())
        else {
            continue;
        };
        match &mut run {
            Some((unit, n)) if &unit[prefix.len() + 1..] == first => *n += 1,
            _ => {
                if let Some((unit, n)) = run.take() {
                    *out.entry(unit).or_default() += n;
                }
                run = Some(([prefix, b"/", first].concat(), 1));
            }
        }
    }
    if let Some((unit, n)) = run {
        *out.entry(unit).or_default() += n;
    }
    let fd = crate::reading::open_resolved(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY).ok()?;
    let mut handle = nix::dir::Dir::from_fd(fd).ok()?;
    for entry in handle.iter().filter_map(Result::ok) {
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.entry([prefix, b"/", name].concat()).or_default();
        }
    }
    Some(out)
}
