//! Clean pages before the one read. A write into a page of a `MAP_SHARED` mapping that is
//! already dirty raises no page fault: no timestamp moves and inotify says nothing. So before a
//! file not known unchanged is read, its dirty pages are written back on the hasher's own
//! read-only descriptor ([`crate::sys::write_back`]): writeback write-protects every shared
//! mapping of the pages it cleans, so any later write through a mapping faults and moves the
//! file's ctime. The read is then proof of the content when the ctime the file had at the first
//! look is its ctime still after the read (the reader checks that of every read) and that ctime
//! was taken in an earlier clock tick than the writeback began in: timestamps are coarse (one
//! tick before Linux 6.13), and a write in the same tick would leave the ctime as it was (the
//! racy-git rule).
//!
//! Which reads prove is the caller's to say: every read of a file whose version is not the one
//! remembered from a proven read (the first read after a start, a change, a forgotten file) or
//! that inotify named. A re-read of a version remembered so (the backstop) needs no writeback:
//! since that proven read every write through a mapping faulted and moved the ctime. On pages
//! that are already clean the writeback finds nothing to do: one system call.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// How long a read waits for the clock to leave the tick its file's ctime was taken in (one
/// tick is 1-10 ms; past this the clock is not moving and the read stays unproven).
const TICK_WAIT: Duration = Duration::from_millis(50);

/// What a read established beyond its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
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
/// `prove` asks for one: waits out the ctime's clock tick, then writes its pages back.
pub(crate) fn prepare(file: &File, opened: &Metadata, prove: bool) -> Proof {
    if !prove {
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
    fn a_read_asked_to_prove_writes_back_and_one_not_asked_does_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m");
        std::fs::write(&p, b"weights").expect("write");
        let f = File::open(&p).expect("open");
        let m = f.metadata().expect("stat");
        assert_eq!(prepare(&f, &m, true), Proof::Proven, "just written: proven");
        assert_eq!(prepare(&f, &m, false), Proof::Unasked);
    }
}
