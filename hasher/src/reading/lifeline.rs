//! The hasher never outlives its api: long reads look at the channel every
//! [`CHECK_EVERY`] and the process exits once the other end is gone. `PR_SET_PDEATHSIG` is not
//! counted on (under systemd the api is not the parent; and it was seen not to fire here).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a reader looks at the channel.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A duplicate of the channel: it reports the peer's hang-up like the original.
static CHANNEL: OnceLock<OwnedFd> = OnceLock::new();

/// Registers (a duplicate of) the channel whose hang-up ends the process.
pub fn watch(fd: OwnedFd) {
    let _ = CHANNEL.set(fd);
}

/// True when the api has closed its end.
pub fn api_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let Some(fd) = CHANNEL.get() else {
        return false;
    };
    let fd = fd.as_fd();
    // No event asked for: POLLHUP (the peer closed its end of the SEQPACKET pair) and POLLERR
    // are reported anyway, and a request waiting (POLLIN) is not mistaken for a hang-up.
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => false,
    }
}

/// Called between buffers of a long read: exits the process if the api is gone. True when
/// it looked (every [`CHECK_EVERY`]), so the caller can look at its file too.
#[allow(
    clippy::exit,
    reason = "#35 item 4: a read that finds the api gone should return that and let main exit; not moved yet"
)]
pub fn check(last: &mut Instant) -> bool {
    if last.elapsed() < CHECK_EVERY {
        return false;
    }
    *last = Instant::now();
    if api_gone() {
        tracing::warn!("the api closed the channel during a read; exiting");
        std::process::exit(0);
    }
    true
}

/// Sleeps `pause` in slices, checking the channel between them.
pub fn sleep(pause: Duration) {
    let until = Instant::now() + pause;
    let mut last = Instant::now() - CHECK_EVERY;
    loop {
        let _ = check(&mut last);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(CHECK_EVERY));
    }
}
