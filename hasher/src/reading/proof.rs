//! Clean pages before the one read. A write into a page of a `MAP_SHARED` mapping that is
//! already dirty raises no page fault: no timestamp moves and inotify says nothing. So before a
//! changed file is read, its dirty pages are written back on the hasher's own read-only
//! descriptor ([`crate::sys::write_back`]): writeback write-protects every shared mapping of
//! the pages it cleans, so any later write through a mapping faults and moves the file's ctime.
//! The read is then proof of the content when the ctime the file had at the first look is its
//! ctime still after the read (the reader checks that of every read) and that ctime was taken
//! in an earlier clock tick than the writeback began in: timestamps are coarse (one tick before
//! Linux 6.13), and a write in the same tick would leave the ctime as it was (the racy-git rule).
//!
//! A file whose ctime is older than twice the kernel's writeback window has no page left dirty
//! by its last change (the flusher wrote it back long ago): it is read as it is, so a sweep of
//! a million unchanged files syncs none of them.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// How long a read waits for the clock to leave the tick its file's ctime was taken in (one
/// tick is 1-10 ms; past this the clock is not moving and the read stays unproven).
const TICK_WAIT: Duration = Duration::from_millis(50);

/// When a read proves its file's content first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proving {
    /// Files whose ctime is younger than this (or in the future) are proven.
    pub recent: Duration,
    /// Prove this read whatever the ctime says (a file seen to change).
    pub force: bool,
}

impl Default for Proving {
    fn default() -> Self {
        Proving {
            // Linux's default window (30 s + 5 s), twice: see the module's note.
            recent: Duration::from_secs(70),
            force: false,
        }
    }
}

/// What a read established beyond its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Not asked: the file's last change is long written back.
    Unasked,
    /// Its pages were clean and write-protected before the read, and its ctime was old enough
    /// to move on any later write: the digest is the content, and a later write is seen.
    Proven,
    /// Asked and not established (the writeback failed, or the clock did not leave the ctime's
    /// tick): the digest is what the page cache held; the file is read again soon.
    Unproven(&'static str),
}

/// Readies `file` (opened at version `opened`) for a read that proves its content, when
/// `proving` asks for one: waits out the ctime's clock tick, then writes its pages back.
pub(crate) fn prepare(file: &File, opened: &Metadata, proving: Proving) -> Proof {
    if !asked(opened, proving) {
        return Proof::Unasked;
    }
    let ctime = (opened.ctime(), opened.ctime_nsec());
    if !wait_for_later_tick(ctime) {
        return Proof::Unproven("the clock did not leave the tick of the file's ctime");
    }
    match crate::sys::write_back(file) {
        Ok(()) => Proof::Proven,
        Err(e) => {
            tracing::warn!(error = %e, "writeback before a proving read failed");
            Proof::Unproven("its pages could not be written back")
        }
    }
}

/// Whether a read of a file at version `m` must prove it: asked to, or changed recently.
pub(crate) fn asked(m: &Metadata, proving: Proving) -> bool {
    proving.force || recent((m.ctime(), m.ctime_nsec()), proving.recent)
}

/// Whether `ctime` is younger than `recent`, or in the future (a clock set back).
fn recent(ctime: (i64, i64), recent: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    let limit = i128::try_from(recent.as_nanos()).unwrap_or(i128::MAX);
    now.saturating_sub(nanos(ctime)) < limit
}

fn nanos((secs, nsec): (i64, i64)) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Waits (at most [`TICK_WAIT`]) until the coarse clock the kernel stamps ctime from is no
/// longer in the tick `ctime` was taken in; false if it still is.
fn wait_for_later_tick(ctime: (i64, i64)) -> bool {
    use nix::time::{clock_getres, clock_gettime, ClockId};
    let clock = ClockId::CLOCK_REALTIME_COARSE;
    let as_nanos = |t: nix::sys::time::TimeSpec| nanos((t.tv_sec(), t.tv_nsec()));
    let tick = clock_getres(clock).map_or(10_000_000, as_nanos).max(1);
    let started = std::time::Instant::now();
    loop {
        let Ok(now) = clock_gettime(clock).map(as_nanos) else {
            return false;
        };
        if !same_tick(nanos(ctime), now, tick) {
            return true;
        }
        if started.elapsed() >= TICK_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether a stamp taken at `now` on a clock of resolution `tick` could equal `ctime`: the
/// coarse clock reads `now` for the whole tick that begins there.
fn same_tick(ctime: i128, now: i128, tick: i128) -> bool {
    (now..now + tick).contains(&ctime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ctime_in_the_current_tick_waits_and_an_older_one_does_not() {
        let tick = 4_000_000;
        assert!(same_tick(1_000, 1_000, tick), "stamped in this very tick");
        assert!(
            same_tick(1_000 + tick - 1, 1_000, tick),
            "a fine-grained stamp of it"
        );
        assert!(!same_tick(999, 1_000, tick), "an earlier tick");
        assert!(
            !same_tick(1_000 + tick, 1_000, tick),
            "ahead of the clock (set back): no later stamp can equal it in this tick"
        );
    }

    #[test]
    fn only_a_recent_or_named_file_is_synced_and_a_just_written_one_is_proven() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m");
        std::fs::write(&p, b"weights").expect("write");
        let f = File::open(&p).expect("open");
        let m = f.metadata().expect("stat");
        let proving = Proving::default();
        assert_eq!(prepare(&f, &m, proving), Proof::Proven, "just written");
        let old = Proving {
            recent: Duration::ZERO,
            force: false,
        };
        assert_eq!(prepare(&f, &m, old), Proof::Unasked, "long written back");
        let named = Proving { force: true, ..old };
        assert_eq!(prepare(&f, &m, named), Proof::Proven, "seen to change");
    }
}
