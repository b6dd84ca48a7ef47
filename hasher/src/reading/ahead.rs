//! Reads issued ahead. A scan that must read every file (a new baseline, the first scan after a
//! start) reads them one at a time; from a cold cache each read of a small file then waits for
//! the disk. Meanwhile a helper thread opens the next files and asks the kernel to start
//! reading them (`POSIX_FADV_WILLNEED`, which returns at once), so the reads find their pages
//! in the cache. It stays a bounded number of files ahead and advises only small files (a
//! large one is read ahead by the kernel's own sequential read-ahead, and must not be pulled
//! into the cache whole).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Files advised ahead of the one being checked.
const WINDOW: usize = 128;
/// Larger files are not advised.
const MAX_ADVISED: u64 = 1024 * 1024;
/// How long the helper waits when it is a window ahead.
const PAUSE: Duration = Duration::from_micros(200);

/// A helper thread advising files a window ahead of the checks, until it is stopped or
/// dropped. The checks run on the caller's thread meanwhile; nothing calls back into them.
pub(crate) struct Ahead {
    stop: Arc<AtomicBool>,
    helper: Option<JoinHandle<usize>>,
}

impl Ahead {
    /// Starts advising `paths` in order, a window ahead of the checks `checked` counts (from
    /// what it holds now). Without a thread to spare, none: the checks read alone.
    pub(crate) fn start(paths: &[&Path], checked: Arc<AtomicUsize>) -> Ahead {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let base = checked.load(Ordering::Relaxed);
        // Unnamed: naming a thread is a prctl the seccomp filter does not allow.
        let helper = std::thread::Builder::new()
            .spawn(move || {
                let done = || checked.load(Ordering::Relaxed).saturating_sub(base);
                advise(&paths, &done, &stopped)
            })
            .ok();
        Ahead { stop, helper }
    }

    /// Stops the helper: how many files it advised (the sweeps just drop it).
    #[cfg(test)]
    fn stop(mut self) -> usize {
        self.finish()
    }

    fn finish(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.helper.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Advises `paths` a window ahead of `done()`; returns how many it advised.
fn advise(paths: &[PathBuf], done: &impl Fn() -> usize, stop: &AtomicBool) -> usize {
    let mut advised = 0;
    for (i, path) in paths.iter().enumerate() {
        loop {
            if stop.load(Ordering::Relaxed) {
                return advised;
            }
            if i < done() + WINDOW {
                break;
            }
            std::thread::sleep(PAUSE);
        }
        if i < done() {
            continue; // already checked: the helper fell behind
        }
        // Opened as the reader opens (no symlink in any component, never blocking on a fifo).
        let Ok(file) = crate::reading::resolve::open_no_symlinks(path) else {
            continue;
        };
        if file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_ADVISED)
        {
            crate::sys::advise_willneed(&file);
            advised += 1;
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_stays_a_window_ahead_and_stops_with_the_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<std::path::PathBuf> = (0..WINDOW * 3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, b"x").expect("write");
                p
            })
            .collect();
        let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        // Checks made before this work began do not count: the helper starts at the window.
        let checked = Arc::new(AtomicUsize::new(1_000_000));
        // The work checks nothing for a while: the helper must wait at the window, and
        // stopping it must end it (the test would hang otherwise).
        let ahead = Ahead::start(&refs, checked.clone());
        std::thread::sleep(Duration::from_millis(100));
        checked.fetch_add(WINDOW, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        let advised = ahead.stop();
        assert_eq!(
            advised,
            2 * WINDOW,
            "a window ahead of each check, no further"
        );
        // Files that are gone, unreadable or not regular are passed over.
        std::fs::remove_file(&paths[0]).expect("rm");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let odd = [paths[0].as_path(), fifo.as_path(), dir.path()];
        let ahead = Ahead::start(&odd, Arc::new(AtomicUsize::new(0)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ahead.stop(), 0);
    }
}
