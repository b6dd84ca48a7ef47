//! Reads issued ahead. A scan that must read every file (a new baseline, the first scan after a
//! start) reads them one at a time; from a cold cache each read of a small file then waits for
//! the disk. Meanwhile a helper thread opens the next files and asks the kernel to start
//! reading them (`POSIX_FADV_WILLNEED`, which returns at once), so the reads find their pages
//! in the cache. It stays a bounded number of files ahead and advises only small files (a
//! large one is read ahead by the kernel's own sequential read-ahead, and must not be pulled
//! into the cache whole).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Files advised ahead of the one being checked.
const WINDOW: usize = 128;
/// Larger files are not advised.
const MAX_ADVISED: u64 = 1024 * 1024;
/// How long the helper waits when it is a window ahead.
const PAUSE: Duration = Duration::from_micros(200);

/// Runs `work` while a helper advises `paths` in order, a window ahead of the checks `work`
/// makes (`checked` counts checks, from whatever it holds when `work` begins). Without a
/// thread to spare, `work` runs alone.
pub fn run<R>(paths: &[&Path], checked: &AtomicUsize, work: impl FnOnce() -> R) -> R {
    run_counting(paths, checked, work).0
}

/// As [`run`], with the count of files the helper advised.
fn run_counting<R>(paths: &[&Path], checked: &AtomicUsize, work: impl FnOnce() -> R) -> (R, usize) {
    let stop = AtomicBool::new(false);
    let base = checked.load(Ordering::Relaxed);
    let done = || checked.load(Ordering::Relaxed).saturating_sub(base);
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new().spawn_scoped(s, || advise(paths, &done, &stop));
        let result = work();
        stop.store(true, Ordering::Relaxed);
        let advised = helper.ok().and_then(|h| h.join().ok()).unwrap_or(0);
        (result, advised)
    })
}

/// Advises `paths` a window ahead of `done()`; returns how many it advised.
fn advise(paths: &[&Path], done: &(impl Fn() -> usize + Sync), stop: &AtomicBool) -> usize {
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
        let checked = AtomicUsize::new(1_000_000);
        // The work checks nothing for a while: the helper must wait at the window, and the
        // work's end must stop it (the test would hang otherwise).
        let (got, advised) = run_counting(&refs, &checked, || {
            std::thread::sleep(Duration::from_millis(100));
            checked.fetch_add(WINDOW, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            42
        });
        assert_eq!(got, 42);
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
        let checked = AtomicUsize::new(0);
        assert_eq!(run_counting(&odd, &checked, || 7), (7, 0));
    }
}
