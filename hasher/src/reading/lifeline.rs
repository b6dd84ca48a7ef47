//! The hasher never outlives its api: long reads look at the channel every [`CHECK_EVERY`],
//! and a read that finds the other end gone stops and says so; the server then ends its loop
//! and `start` decides the exit. `PR_SET_PDEATHSIG` is not counted on (under systemd the api
//! is not the parent; and it was seen not to fire here).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a reader looks at the channel.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(200);

/// A read stopped because the api closed its end: nobody is left to take its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiGone;

impl std::fmt::Display for ApiGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the api closed the channel during the read")
    }
}

impl std::error::Error for ApiGone {}

/// A duplicate of the channel, shared by every reading thread: it reports the peer's hang-up
/// like the original. Once one read has seen it, every read stops at once (no more bytes for
/// an answer nobody will take), and the server sees it between requests ([`Lifeline::cut`]).
#[derive(Clone, Default)]
pub(crate) struct Lifeline(Arc<Line>);

#[derive(Default)]
struct Line {
    /// `None`: no channel (a unit test, `--check-config`): never found gone.
    fd: Option<OwnedFd>,
    cut: AtomicBool,
}

impl Lifeline {
    /// The line to the api through `fd`, a duplicate of the channel.
    pub(crate) fn to(fd: OwnedFd) -> Lifeline {
        Lifeline(Arc::new(Line {
            fd: Some(fd),
            cut: AtomicBool::new(false),
        }))
    }

    /// Whether a read found the api gone (it stays so).
    pub(crate) fn cut(&self) -> bool {
        self.0.cut.load(Ordering::Relaxed)
    }

    /// Looks at the channel now: `Err` when the api has closed its end (or a read saw it).
    pub(crate) fn look(&self) -> Result<(), ApiGone> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if self.cut() {
            return Err(ApiGone);
        }
        let Some(fd) = &self.0.fd else {
            return Ok(());
        };
        // No event asked for: POLLHUP (the peer closed its end of the SEQPACKET pair) and POLLERR
        // are reported anyway, and a request waiting (POLLIN) is not mistaken for a hang-up.
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        let hung_up = match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => false,
        };
        if hung_up {
            tracing::warn!("the api closed the channel during a read; stopping");
            self.0.cut.store(true, Ordering::Relaxed);
            return Err(ApiGone);
        }
        Ok(())
    }

    /// Called between buffers of a long read: `Err` once the api is gone (at once when a read
    /// saw it; the channel itself every [`CHECK_EVERY`]). `Ok(true)` when it looked, so the
    /// caller can look at its file too.
    pub(crate) fn check(&self, last: &mut Instant) -> Result<bool, ApiGone> {
        if self.cut() {
            return Err(ApiGone);
        }
        if last.elapsed() < CHECK_EVERY {
            return Ok(false);
        }
        *last = Instant::now();
        self.look().map(|()| true)
    }

    /// Sleeps `pause` in slices, looking at the channel between them; cut short when the api
    /// is gone (the read's next check stops it).
    pub(crate) fn sleep(&self, pause: Duration) {
        let until = Instant::now() + pause;
        loop {
            if self.look().is_err() {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(CHECK_EVERY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SEQPACKET pair like the channel's: our end, and the api's.
    fn pair() -> (OwnedFd, OwnedFd) {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair")
    }

    #[test]
    fn a_line_is_cut_only_once_the_api_closes_its_end() {
        let (ours, theirs) = pair();
        let line = Lifeline::to(ours);
        assert_eq!(line.look(), Ok(()));
        assert!(!line.cut());
        drop(theirs);
        assert_eq!(line.look(), Err(ApiGone));
        assert!(line.cut(), "what one read saw, every clone sees");
        let mut last = Instant::now();
        assert_eq!(line.clone().check(&mut last), Err(ApiGone));
        assert_eq!(Lifeline::default().look(), Ok(()), "no channel: never gone");
    }

    #[test]
    fn a_pause_ends_early_once_the_api_is_gone() {
        let (ours, theirs) = pair();
        drop(theirs);
        let started = Instant::now();
        Lifeline::to(ours).sleep(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
