//! A step of the wall clock. A write fault stamps the file's ctime from the wall clock: set back
//! to the ctime the hasher remembers, the clock lets a write through a mapping leave the file
//! with exactly the version remembered for it, and the metadata fast path would answer for the
//! old content. So a step of the clock (`settimeofday`, `clock_settime`, `adjtimex` with
//! `ADJ_SETOFFSET`; a slew cannot go back) makes everything remembered suspect: the server
//! forgets it all, and the next sweep reads every file, proving each (`reading::proof`).

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// When the watch's timer would fire (2255): never, in practice. Only a step makes it readable.
const FAR: i64 = 9_000_000_000;

/// A timer on the wall clock that a step of the clock cancels: readable then.
pub(crate) struct ClockWatch {
    timer: TimerFd,
}

impl ClockWatch {
    /// Arms the watch (before the sandbox: the seccomp filter allows no timer calls).
    pub(crate) fn new() -> nix::Result<ClockWatch> {
        let timer = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        timer.set(
            Expiration::OneShot(TimeSpec::new(FAR, 0)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )?;
        Ok(ClockWatch { timer })
    }

    /// The fd to poll.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.timer.as_fd()
    }

    /// Whether the clock was stepped since the last call (the timer's read is cancelled; the
    /// read rearms the watch for the next step).
    pub(crate) fn stepped(&self) -> bool {
        let mut ticks = [0u8; 8];
        nix::unistd::read(&self.timer, &mut ticks) == Err(Errno::ECANCELED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unstepped_clock_is_not_a_step() {
        let watch = ClockWatch::new().expect("timerfd");
        assert!(!watch.stepped(), "nothing happened");
        assert!(!watch.stepped());
    }
}
