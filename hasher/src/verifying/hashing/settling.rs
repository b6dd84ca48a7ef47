//! The changed files whose content is not proven yet, and the kernel's writeback window.
//!
//! A changed file is proven by one read made after its pages were written back (see
//! [`crate::reading::Proof`]); until that read is in, it is pending here and the reports say
//! so (`unsettled`). A read that could not prove it (the file written meanwhile, a writeback
//! error) leaves it pending, read again [`RETRY`] later. The policy may add a settle window
//! (`settle_window`, at least the kernel's writeback window): each proven change is then read
//! once more that long after, as before proving reads existed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Linux's defaults: 30 s until dirty data expires, the flusher every 5 s.
const DEFAULT_WINDOW: Duration = Duration::from_millis(35_000);
/// Past the window, for the flusher's own scheduling.
const MARGIN: Duration = Duration::from_secs(2);
/// Most changed files pending by name; past it (or when inotify lost events, so which files
/// changed is not known) every file is read again, each proven by its ctime.
const MAX_PENDING: usize = 4096;
/// When a pending file is read again on the verifier's own, if no scan read it first.
pub(in crate::verifying) const RETRY: Duration = Duration::from_secs(1);

/// Reads the kernel's writeback window (before the sandbox: `/proc/sys` is out of it after;
/// the start hands it to the verifier). Unreadable (a unit with `ProcSubset=pid`), Linux's
/// defaults stand.
pub(crate) fn read_kernel_window() -> Duration {
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
        "kernel writeback window: a settle_window shorter than this is refused"
    );
    window
}

/// What a read (or a check that did not read) established of a file, for [`Settling::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::verifying) enum Settled {
    /// Its content is proven by the read.
    Proven,
    /// Read, not proven: it stays pending.
    Unproven,
    /// Nothing to prove: gone, not a regular file, or a finding stands for it.
    Moot,
}

/// What a pending file awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its proving read.
    Proof,
    /// The settle window's read once more, after its proof.
    Again,
}

/// One pending file.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: Instant,
    stage: Stage,
    taken: bool,
}

impl Pending {
    fn new(at: Instant, stage: Stage) -> Pending {
        Pending {
            at,
            stage,
            taken: false,
        }
    }
}

/// The changed files awaiting their proving read (or their settle window's read).
#[derive(Debug)]
pub(in crate::verifying) struct Settling {
    /// The policy's settle window: a proven change is read once more this long after (zero:
    /// never).
    window: Duration,
    /// The kernel's writeback window, as read at start.
    kernel: Duration,
    /// Each pending file: when it is read on the verifier's own, what it awaits, and whether
    /// it was handed out for that read since a check last spoke of it.
    due: HashMap<PathBuf, Pending>,
    /// When every file is to be read again for the settle window: more changes than are
    /// tracked by name, or changes inotify lost.
    everything: Option<Instant>,
}

impl Default for Settling {
    fn default() -> Self {
        Settling {
            window: Duration::ZERO,
            kernel: DEFAULT_WINDOW + MARGIN,
            due: HashMap::new(),
            everything: None,
        }
    }
}

/// What is due for a read on the verifier's own.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::verifying) struct Due {
    /// These files, each read again.
    pub(crate) paths: Vec<PathBuf>,
    /// Every file: the tracked names no longer tell all that changed.
    pub(crate) everything: bool,
}

impl Settling {
    /// The kernel's writeback window read at start (`read_kernel_window`).
    pub(crate) fn kernel_window(&self) -> Duration {
        self.kernel
    }

    /// Takes the kernel's writeback window read at start.
    pub(crate) fn set_kernel_window(&mut self, kernel: Duration) {
        self.kernel = kernel;
    }

    /// Reads each proven change once more `window` after it (zero: never).
    pub(in crate::verifying) fn set_window(&mut self, window: Duration) {
        self.window = window;
        if window.is_zero() {
            self.due.retain(|_, p| p.stage == Stage::Proof);
            self.everything = None;
        }
    }

    /// `path` changed now: pending until a read proves it (the scan the change brings, or
    /// the verifier's own [`RETRY`] from now).
    pub(crate) fn note(&mut self, path: &Path) {
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
            return;
        }
        if self.due.len() >= MAX_PENDING && !self.due.contains_key(path) {
            // Bounded: the caller forgot it, so its next read proves it; it is just not
            // counted.
            self.note_everything();
            return;
        }
        self.due.insert(
            path.to_owned(),
            Pending::new(Instant::now() + RETRY, Stage::Proof),
        );
    }

    /// Which files changed is not known (inotify lost events, or too many to track): the
    /// sweep that follows reads every file forgotten, proving each (nothing is remembered of
    /// it); with a settle window, every file is read once more a window from now.
    pub(in crate::verifying) fn note_everything(&mut self) {
        if !self.window.is_zero() {
            self.everything = Some(Instant::now() + self.window);
        }
    }

    /// Whether `path` awaits a read: its check reads it (no answer from memory), proving it.
    pub(in crate::verifying) fn awaits(&self, path: &Path) -> bool {
        !self.due.is_empty() && self.due.contains_key(path)
    }

    /// What a check of `path` established.
    pub(crate) fn after(&mut self, path: &Path, settled: Settled) {
        if self.due.is_empty() && settled != Settled::Unproven {
            return;
        }
        let stage = self.due.get(path).map(|p| p.stage);
        match (settled, stage) {
            (Settled::Unproven, _) => {
                if self.due.len() < MAX_PENDING || stage.is_some() {
                    let again = Pending::new(Instant::now() + RETRY, Stage::Proof);
                    self.due.insert(path.to_owned(), again);
                } else {
                    self.note_everything();
                }
            }
            (Settled::Proven, Some(Stage::Proof)) if !self.window.is_zero() => {
                let again = Pending::new(Instant::now() + self.window, Stage::Again);
                self.due.insert(path.to_owned(), again);
            }
            (_, Some(_)) => {
                self.due.remove(path);
            }
            (_, None) => {}
        }
    }

    /// Keeps only the pending files `watched` still says are watched (a reload).
    pub(crate) fn retain(&mut self, mut watched: impl FnMut(&Path) -> bool) {
        self.due.retain(|p, _| watched(p));
    }

    /// What is due for a read at `now`: each stays pending until a check settles it, and is
    /// due again [`RETRY`] later if none does. Every file, when that is due.
    pub(in crate::verifying) fn take_due(&mut self, now: Instant) -> Due {
        if self.everything.is_some_and(|at| at <= now) {
            self.everything = None;
            self.due.retain(|_, p| p.stage == Stage::Proof);
            return Due {
                paths: Vec::new(),
                everything: true,
            };
        }
        let mut paths = Vec::new();
        for (path, p) in &mut self.due {
            if p.at <= now {
                p.at = now + RETRY;
                p.taken = true;
                paths.push(path.clone());
            }
        }
        Due {
            paths,
            everything: false,
        }
    }

    /// Drops those of `paths` (handed out by [`Settling::take_due`]) that no check spoke of
    /// since: nothing reads them as a watched file (a registry manifest, a path gone from the
    /// watch set), so nothing could ever prove them.
    pub(in crate::verifying) fn drop_unread(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if self.due.get(path).is_some_and(|p| p.taken) {
                tracing::debug!(path = %path.display(), "pending file no check reads: dropped");
                self.due.remove(path);
            }
        }
    }

    /// As [`Settling::drop_unread`] for every pending file handed out: after a full sweep,
    /// which checks every watched file, any left untouched is none.
    pub(in crate::verifying) fn drop_unread_all(&mut self) {
        self.due.retain(|path, p| {
            if p.taken {
                tracing::debug!(path = %path.display(), "pending file no sweep reads: dropped");
            }
            !p.taken
        });
    }

    /// When the next read on the verifier's own falls due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due
            .values()
            .map(|p| p.at)
            .min()
            .into_iter()
            .chain(self.everything)
            .min()
    }

    /// Files not proven yet (every file awaiting its settle window's read counts as one more).
    pub(crate) fn pending(&self) -> usize {
        self.due.len() + usize::from(self.everything.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str) -> PathBuf {
        let f = dir.join(name);
        std::fs::write(&f, "x").expect("write");
        f
    }

    #[test]
    fn a_change_is_pending_until_a_read_proves_it_and_a_window_adds_one_more_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = file(dir.path(), "m.gguf");
        let mut s = Settling::default();
        s.note(&f);
        s.note(dir.path()); // a directory is never pending
        assert_eq!(s.pending(), 1);
        assert!(s.awaits(&f));
        assert_eq!(
            s.take_due(Instant::now()),
            Due::default(),
            "the scan reads it first"
        );
        s.after(&f, Settled::Proven);
        assert_eq!(s.pending(), 0, "proven by one read");
        assert!(!s.awaits(&f));
        // A settle window: one more read that long after the proof, then done.
        s.set_window(Duration::from_millis(100));
        s.note(&f);
        s.after(&f, Settled::Proven);
        assert_eq!(s.pending(), 1, "awaiting the window's read");
        assert!(s.take_due(Instant::now()).paths.is_empty(), "not yet");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.take_due(Instant::now()).paths, vec![f.clone()]);
        s.after(&f, Settled::Proven);
        assert_eq!(s.pending(), 0, "read once more, no further");
    }

    #[test]
    fn an_unproven_read_stays_pending_and_falls_due_again_until_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = file(dir.path(), "m.gguf");
        let mut s = Settling::default();
        s.note(&f);
        s.after(&f, Settled::Unproven);
        assert_eq!(s.pending(), 1);
        let later = Instant::now() + RETRY;
        assert_eq!(s.take_due(later).paths, vec![f.clone()]);
        assert!(s.take_due(later).paths.is_empty(), "not again at once");
        assert_eq!(s.pending(), 1, "still pending until a check settles it");
        s.after(&f, Settled::Moot);
        assert_eq!(s.pending(), 0, "a finding stands for it");
        // Unproven without being noted (a read the ctime asked to prove): pending too.
        s.after(&f, Settled::Unproven);
        assert_eq!(s.pending(), 1);
        s.retain(|_| false);
        assert_eq!(s.pending(), 0, "no longer watched");
        // Handed out for a read: dropped only when no check spoke of it meanwhile.
        s.note(&f);
        let taken = s.take_due(Instant::now() + RETRY).paths;
        s.after(&f, Settled::Unproven);
        s.drop_unread(&taken);
        assert_eq!(s.pending(), 1, "a check read it, unproven: kept");
        let taken = s.take_due(Instant::now() + 2 * RETRY).paths;
        s.drop_unread(&taken);
        assert_eq!(s.pending(), 0, "nothing reads it: dropped");
    }

    #[test]
    fn a_proving_read_costs_one_read_of_the_changed_file_and_none_of_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<PathBuf> = (0..20).map(|i| dir.path().join(format!("f{i}"))).collect();
        for f in &files {
            std::fs::write(f, vec![b'a'; 1000]).expect("write");
        }
        let mut h = crate::verifying::hashing::FileHasher::default();
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        let read = |h: &crate::verifying::hashing::FileHasher| h.bytes_hashed;
        let after_first = read(&h);
        assert_eq!(after_first, 20_000);
        // One file changes (same size, new content): its check reads it, proving it.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&files[3], vec![b'b'; 1000]).expect("write");
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        assert_eq!(read(&h) - after_first, 1000, "only the changed file, once");
        assert_eq!(h.settling.pending(), 0, "proven by that read");
        assert!(h.settling.next_due().is_none(), "nothing left to read");
        let before_idle = read(&h);
        for f in &files {
            h.check(f, crate::verifying::hashing::Given::NOTHING);
        }
        assert_eq!(read(&h), before_idle, "unchanged files cost nothing");
        // Named by inotify: pending, and its check reads and proves it.
        h.forget(&files[5]);
        h.settling.note(&files[5]);
        assert_eq!(h.settling.pending(), 1);
        h.check(&files[5], crate::verifying::hashing::Given::NOTHING);
        assert_eq!(h.settling.pending(), 0);
        assert_eq!(read(&h) - before_idle, 1000);
    }

    #[test]
    fn past_the_bound_every_file_is_read_again_for_the_window_and_nothing_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<PathBuf> = (0..=MAX_PENDING)
            .map(|i| file(dir.path(), &format!("f{i}")))
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
        assert_eq!(
            s.pending(),
            MAX_PENDING,
            "each named one still awaits its proof"
        );
        // Lost events with no window: the sweep that follows proves each file by its ctime.
        let mut plain = Settling::default();
        plain.note_everything();
        assert_eq!(plain.pending(), 0);
    }
}
