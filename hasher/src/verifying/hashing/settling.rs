//! The changed files awaiting their settle read, and the kernel's writeback window they wait
//! out (see the `settle` module for why): part of the file memory, so its checks can note a
//! change and say what is still unproven.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Linux's defaults: 30 s until dirty data expires, the flusher every 5 s.
const DEFAULT_WINDOW: Duration = Duration::from_millis(35_000);
/// Past the window, for the flusher's own scheduling.
const MARGIN: Duration = Duration::from_secs(2);
/// Most changed files awaiting their settle read by name; past it (or when inotify lost
/// events, so which files changed is not known) every file is read again a window later.
const MAX_PENDING: usize = 4096;

/// Reads the kernel's writeback window (before the sandbox: `/proc/sys` is out of it after;
/// the start hands it to the verifier). Unreadable (a unit with `ProcSubset=pid`), Linux's
/// defaults stand.
pub fn read_kernel_window() -> Duration {
    {
        let centisecs = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let window = match (
            centisecs("dirty_expire_centisecs"),
            centisecs("dirty_writeback_centisecs"),
        ) {
            (Some(e), Some(w)) => Duration::from_millis((e + w).saturating_mul(10)),
            _ => DEFAULT_WINDOW,
        };
        let window = window.min(Duration::from_secs(3600)) + MARGIN;
        tracing::info!(
            ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            "kernel writeback window: a changed file is read once more after it, unless the policy sets settle_window"
        );
        window
    }
}

/// The changed files awaiting their settle read.
#[derive(Debug)]
pub struct Settling {
    window: Duration,
    /// The kernel's writeback window, as read at start: the window when the policy sets none.
    kernel: Duration,
    due: HashMap<PathBuf, Instant>,
    /// When every file is to be read again: more changes than are tracked by name, or
    /// changes inotify lost.
    everything: Option<Instant>,
}

impl Default for Settling {
    fn default() -> Self {
        Settling {
            window: DEFAULT_WINDOW + MARGIN,
            kernel: DEFAULT_WINDOW + MARGIN,
            due: HashMap::new(),
            everything: None,
        }
    }
}

/// What is due for its settle read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// These files, each read once more.
    pub paths: Vec<PathBuf>,
    /// Every file: the tracked names no longer tell all that changed.
    pub everything: bool,
}

impl Settling {
    /// The kernel's writeback window read at start (`read_kernel_window`).
    pub fn kernel_window(&self) -> Duration {
        self.kernel
    }

    /// Takes the kernel's writeback window read at start.
    pub fn set_kernel_window(&mut self, kernel: Duration) {
        self.kernel = kernel;
    }

    /// Uses `window` from now on (zero: no settle reads).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
        if window.is_zero() {
            self.due.clear();
            self.everything = None;
        }
    }

    /// `path` changed now: it is read once more a window from now (a later change moves that).
    pub fn note(&mut self, path: &Path) {
        if self.window.is_zero()
            || !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
        {
            return;
        }
        if self.due.len() >= MAX_PENDING && !self.due.contains_key(path) {
            // Bounded: not one change forgotten, nor one read before its window: every file
            // is read again a window after the latest.
            self.note_everything();
            return;
        }
        self.due
            .insert(path.to_owned(), Instant::now() + self.window);
    }

    /// Which files changed is not known (inotify lost events, or too many to track): every
    /// file is read once more a window from now.
    pub fn note_everything(&mut self) {
        if !self.window.is_zero() {
            self.everything = Some(Instant::now() + self.window);
        }
    }

    /// What is due for its settle read at `now`; it is no longer pending (the caller reads it
    /// before its next report). Every file, when that is due: it covers each name too.
    pub fn take_due(&mut self, now: Instant) -> Due {
        if self.everything.is_some_and(|at| at <= now) {
            self.everything = None;
            self.due.clear();
            return Due {
                paths: Vec::new(),
                everything: true,
            };
        }
        let paths: Vec<PathBuf> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &paths {
            self.due.remove(p);
        }
        Due {
            paths,
            everything: false,
        }
    }

    /// When the next settle read falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due
            .values()
            .min()
            .copied()
            .into_iter()
            .chain(self.everything)
            .min()
    }

    /// Files not proven yet (every file awaiting its read counts as one more).
    pub fn pending(&self) -> usize {
        self.due.len() + usize::from(self.everything.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_due_a_window_later_and_a_later_change_moves_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, "x").expect("write");
        let mut s = Settling::default();
        s.set_window(Duration::from_millis(200));
        s.note(&f);
        s.note(dir.path()); // a directory is never pending
        assert_eq!(s.pending(), 1);
        assert_eq!(s.take_due(Instant::now()), Due::default(), "not yet");
        std::thread::sleep(Duration::from_millis(120));
        s.note(&f);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            s.take_due(Instant::now()),
            Due::default(),
            "moved by the later change"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.take_due(Instant::now()).paths, vec![f.clone()]);
        assert_eq!(s.pending(), 0);
        s.set_window(Duration::ZERO);
        s.note(&f);
        assert_eq!(s.pending(), 0, "off");
    }

    #[test]
    fn a_settle_read_costs_one_read_of_the_changed_file_and_none_of_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<PathBuf> = (0..20).map(|i| dir.path().join(format!("f{i}"))).collect();
        for f in &files {
            std::fs::write(f, vec![b'a'; 1000]).expect("write");
        }
        let mut h = crate::verifying::hashing::FileHasher::default();
        h.settling.set_window(Duration::from_millis(50));
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        let read = |h: &crate::verifying::hashing::FileHasher| h.bytes_hashed;
        let after_first = read(&h);
        assert_eq!(after_first, 20_000);
        // One file changes (same size, new content): its check reads it and notes it.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&files[3], vec![b'b'; 1000]).expect("write");
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        assert_eq!(read(&h) - after_first, 1000, "only the changed file");
        assert_eq!(h.settling.pending(), 1);
        std::thread::sleep(Duration::from_millis(60));
        let due = h.settling.take_due(Instant::now()).paths;
        assert_eq!(due, vec![files[3].clone()]);
        for p in &due {
            h.forget(p);
        }
        let before_settle = read(&h);
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        assert_eq!(
            read(&h) - before_settle,
            1000,
            "the settle read: that file, once more"
        );
        assert_eq!(h.settling.pending(), 0);
        let before_idle = read(&h);
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        assert_eq!(read(&h), before_idle, "unchanged files cost nothing");
    }

    #[test]
    fn past_the_bound_every_file_is_read_again_and_nothing_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<PathBuf> = (0..=MAX_PENDING)
            .map(|i| {
                let f = dir.path().join(format!("f{i}"));
                std::fs::write(&f, "x").expect("write");
                f
            })
            .collect();
        let mut s = Settling::default();
        s.set_window(Duration::from_millis(400));
        for f in &files {
            s.note(f);
        }
        assert_eq!(
            s.pending(),
            MAX_PENDING + 1,
            "the one past the bound counts too"
        );
        let early = s.take_due(Instant::now());
        assert!(
            early.paths.is_empty() && !early.everything,
            "none read early"
        );
        std::thread::sleep(Duration::from_millis(450));
        let due = s.take_due(Instant::now());
        assert!(due.everything, "{} named", due.paths.len());
        assert_eq!(s.pending(), 0);
        // Lost events: every file, a window later.
        s.note_everything();
        assert_eq!(s.pending(), 1);
        assert!(s.next_due().is_some());
    }
}
